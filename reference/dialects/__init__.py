"""Named dialects: what other frameworks' Adafactors compute, written as the Keras step with
named stages swapped (``reference/dialects/base.py``: ``Stages``). ``keras`` is the spec's
own stages (``reference/dialects/keras.py``; the spec with every argument is
``reference.Adafactor``); every other dialect is a ``DialectOptimizer`` subclass taking its
framework's own constructor arguments and defaults.

    from reference.dialects import optimizer_class
    opt = optimizer_class("torch")(lr=0.01)      # torch.optim.Adafactor's arguments
    opt.build(variables); opt.apply(grads, variables); opt.state   # a reference.state.State

Adding a dialect: a module here with its stage functions, a ``<name>_stages`` built by
``keras_stages(...).replace(...)``, a ``DialectOptimizer`` subclass, ``DIFFERENCES`` and
``from_keras``; then one line in ``DIALECTS``.
"""

from __future__ import annotations

import importlib

from reference.dialects.base import DialectOptimizer, Stages

#: dialect name -> "module:Class" of its DialectOptimizer.
DIALECTS = {
    "keras": "reference.dialects.keras:KerasDialect",
    "torch": "reference.dialects.torch:TorchAdafactor",
    "optax": "reference.dialects.optax:OptaxAdafactor",
    "transformers": "reference.dialects.transformers:TransformersAdafactor",
    "pytorch_optimizer": "reference.dialects.pytorch_optimizer:PytorchOptimizerAdaFactor",
    "timm_bigvision": "reference.dialects.timm_bigvision:TimmBigVisionAdafactor",
    "timm": "reference.dialects.timm:TimmAdafactor",
}


def optimizer_class(dialect: str) -> type:
    """The ``DialectOptimizer`` subclass of ``dialect``."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}: use one of {sorted(DIALECTS)}")
    module, name = DIALECTS[dialect].split(":")
    return getattr(importlib.import_module(module), name)


def stages_module(dialect: str):
    """The module of ``dialect`` (its stage functions, ``DIFFERENCES``, ``from_keras``)."""
    optimizer_class(dialect)  # a clear error for an unknown name
    return importlib.import_module(f"reference.dialects.{dialect}")


__all__ = ["DIALECTS", "DialectOptimizer", "Stages", "optimizer_class", "stages_module"]
