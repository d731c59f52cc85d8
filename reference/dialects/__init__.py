"""Named dialects: what other frameworks' Adafactors compute, written as differences from
the Keras step (``reference/dialects/base.py``). ``keras`` is the spec
(``reference.Adafactor``); every other dialect is a ``DialectOptimizer`` subclass taking
its framework's own constructor arguments and defaults.

    from reference.dialects import optimizer_class
    opt = optimizer_class("torch")(lr=0.01)      # torch.optim.Adafactor's arguments
    opt.build(variables); opt.apply(grads, variables)
"""

from __future__ import annotations

import importlib

from reference.dialects.base import DialectOptimizer, KerasStage

#: dialect name -> "module:Class" of its DialectOptimizer.
DIALECTS = {
    "keras": "reference.dialects.keras:KerasStages",
    "torch": "reference.dialects.torch:TorchAdafactor",
    "optax": "reference.dialects.optax:OptaxAdafactor",
    "transformers": "reference.dialects.transformers:TransformersAdafactor",
}


def optimizer_class(dialect: str) -> type:
    """The ``DialectOptimizer`` subclass of ``dialect``."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}: use one of {sorted(DIALECTS)}")
    module, name = DIALECTS[dialect].split(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["DIALECTS", "DialectOptimizer", "KerasStage", "optimizer_class"]
