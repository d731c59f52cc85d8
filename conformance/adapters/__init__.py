"""Adapters: one per implementation under test. The registered ones are listed once, in
``conformance.adapters.registry``; ``resolve(spec)`` accepts a registered name or
``package.module:ClassName`` (a third-party port)."""

from __future__ import annotations

from conformance.adapters.base import Adapter, AdapterError, Session
from conformance.adapters.registry import ADAPTERS, AdapterEntry, entry, resolve

#: Registered adapters as name -> "module:Class" (the registry's targets).
REGISTRY = {name: e.target for name, e in ADAPTERS.items()}

__all__ = ["ADAPTERS", "Adapter", "AdapterEntry", "AdapterError", "REGISTRY", "Session", "entry", "resolve"]
