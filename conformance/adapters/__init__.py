"""Adapters: one per implementation under test. ``resolve(spec)`` accepts a registered
name or ``package.module:ClassName`` (a third-party port)."""

from __future__ import annotations

import importlib

from conformance.adapters.base import Adapter, LaneState, Session

#: Registered adapters: name -> "module:Class". Keras adapters pick their backend at import.
REGISTRY = {
    "reference": "conformance.adapters.reference:ReferenceAdapter",
    "keras-jax": "conformance.adapters.keras_adapter:KerasJaxAdapter",
    "keras-torch": "conformance.adapters.keras_adapter:KerasTorchAdapter",
    "keras-tensorflow": "conformance.adapters.keras_adapter:KerasTensorFlowAdapter",
    # Native dialects (reference/dialects): each replays its own dialect's vectors.
    "torch": "conformance.adapters.torch_adapter:TorchAdapter",
    "torch-foreach": "conformance.adapters.torch_adapter:TorchForeachAdapter",
    "optax": "conformance.adapters.optax_adapter:OptaxAdapter",
    "transformers": "conformance.adapters.transformers_adapter:TransformersAdapter",
    # keras-jax with every variable sharded over a 2x2 device mesh (4 virtual CPU devices).
    "keras-jax-sharded": "conformance.adapters.sharded:KerasJaxShardedAdapter",
}


class AdapterError(RuntimeError):
    """An adapter cannot be loaded or its framework is missing (exit code 2)."""


def resolve(spec: str) -> Adapter:
    target = REGISTRY.get(spec, spec)
    if ":" not in target:
        raise AdapterError(f"unknown adapter {spec!r}: use one of {sorted(REGISTRY)} "
                           f"or 'package.module:ClassName'")
    module_name, class_name = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AdapterError(f"adapter {spec!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        raise AdapterError(f"adapter {spec!r}: {module_name!r} has no {class_name!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise AdapterError(f"adapter {spec!r}: {class_name} is not a conformance.adapters.Adapter")
    return cls()


__all__ = ["Adapter", "AdapterError", "LaneState", "REGISTRY", "Session", "resolve"]
