"""The one state type: what an Adafactor carries between steps, in every implementation.

The spec (``reference.Adafactor``), the dialects, the generator, the gate's runner and every
adapter speak ``State``. A state is

    iterations            Keras's raw apply counter ``_iterations`` (micro-steps included)
    learning_rate_calls   how often a recorded callable learning rate has been called
                          (None: not reported, so not graded)
    values                {Kind: [array or None per variable, in build order]}
    flags                 what the last step was, where reported: ``is_update_step``,
                          ``ema_overwritten`` (None or a missing key: not reported)

A kind that the configuration does not have (no EMA, no accumulation, no first moment) is
absent from ``values``; a kind that a variable does not have (``r``/``c`` of a 0-D or 1-D
variable) is ``None`` at its index. Adding a state kind is one ``Kind`` member.

This module imports nothing of ours: it is the bottom of the house.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np


class Kind(str, enum.Enum):
    """Every per-variable array an Adafactor may carry. The value is the name used in vector
    files, reports and expectation selectors; the order is the order of reports."""

    VARIABLES = "variables"
    R = "r"  # row statistic: the mean over the last axis, shape x.shape[:-1] (adafactor.py:100-108)
    C = "c"  # column statistic: the mean over axis -2, shape x.shape[:-2] + x.shape[-1:]
    V = "v"  # the full second moment (Keras keeps it even when it factors, adafactor.py:131-138)
    AVERAGE = "average"  # the EMA of the variables (use_ema, base_optimizer.py:560-570)
    ACCUMULATOR = "accumulator"  # summed micro-step gradients (gradient_accumulation_steps)
    MOMENTUM = "momentum"  # a first moment, in dialects that have one (optax, transformers)

    def __str__(self) -> str:
        return self.value


#: The optimizer's own state, that is every kind but the variables.
SLOT_KINDS = tuple(k for k in Kind if k is not Kind.VARIABLES)


def kind(name) -> Kind:
    """``Kind`` from its name (``"v"``) or itself; a clear error for anything else."""
    if type(name) is Kind:  # the common case, without the Enum lookup
        return name
    try:
        return Kind(name)
    except ValueError:
        raise ValueError(f"unknown state kind {name!r}; known: {', '.join(k.value for k in Kind)}") from None


def _kind_property(k: Kind) -> property:
    """``state.<kind>``: the kind's list or None; assigning a list sets it, None removes it."""

    def fset(self, value):
        if value is None:
            self.values.pop(k, None)
        else:
            self.values[k] = list(value)

    return property(lambda self: self.values.get(k), fset, doc=f"the {k.value!r} arrays per variable, or None")


@dataclass
class State:
    iterations: int
    values: dict = field(default_factory=dict)  # {Kind: list[Optional[np.ndarray]]}
    learning_rate_calls: Optional[int] = 0
    flags: Optional[dict] = None

    def __post_init__(self):
        self.values = {kind(k): v for k, v in self.values.items() if v is not None}

    # reading -----------------------------------------------------------------------
    def get(self, k) -> Optional[list]:
        """The arrays of kind ``k`` per variable, or None when the state has no such kind."""
        return self.values.get(kind(k))

    def __getitem__(self, k) -> list:
        k = kind(k)
        if k not in self.values:
            raise KeyError(f"state has no {k.value!r} (it has {', '.join(x.value for x in self.kinds())})")
        return self.values[k]

    def __contains__(self, k) -> bool:
        return kind(k) in self.values

    def kinds(self) -> list:
        """The kinds present, in ``Kind`` order."""
        return [k for k in Kind if k in self.values]

    def arrays(self) -> Iterator[tuple]:
        """(kind, index, array) for every array present, in ``Kind`` then variable order."""
        for k in self.kinds():
            for i, a in enumerate(self.values[k]):
                if a is not None:
                    yield k, i, a

    # the common kinds by name, for readable code: state.v[i], state.variables; assigning
    # sets the kind's list in place (state.v = [...]), assigning None removes the kind
    variables = _kind_property(Kind.VARIABLES)
    r = _kind_property(Kind.R)
    c = _kind_property(Kind.C)
    v = _kind_property(Kind.V)
    average = _kind_property(Kind.AVERAGE)
    accumulator = _kind_property(Kind.ACCUMULATOR)
    momentum = _kind_property(Kind.MOMENTUM)

    # making new states -------------------------------------------------------------
    def replace(self, **changes) -> "State":
        """A shallow copy with ``iterations``/``learning_rate_calls``/``flags`` or whole
        kinds (by name: ``v=[...]``, ``None`` removes the kind) replaced."""
        values = dict(self.values)
        scalars = {"iterations": self.iterations, "learning_rate_calls": self.learning_rate_calls,
                   "flags": self.flags}
        for name, value in changes.items():
            if name in scalars:
                scalars[name] = value
            elif value is None:
                values.pop(kind(name), None)
            else:
                values[kind(name)] = list(value)
        return State(values=values, **scalars)

    def map(self, fn) -> "State":
        """A new state with ``fn(array)`` applied to every array (None stays None)."""
        return State(self.iterations,
                     {k: [None if a is None else fn(a) for a in v] for k, v in self.values.items()},
                     self.learning_rate_calls, None if self.flags is None else dict(self.flags))

    def copy(self) -> "State":
        """A deep copy: no array is shared with this state."""
        return self.map(lambda a: np.array(a, copy=True))

    def cast(self, dtype) -> "State":
        """A copy with every array rounded to ``dtype`` (round to nearest even, through
        float64 so that a bfloat16 target rounds once)."""
        dtype = np.dtype(dtype)
        return self.map(lambda a: np.asarray(a, dtype=np.float64).astype(dtype))

    def without(self, *kinds) -> "State":
        """A copy (sharing arrays) without the given kinds."""
        drop = {kind(k) for k in kinds}
        return State(self.iterations, {k: v for k, v in self.values.items() if k not in drop},
                     self.learning_rate_calls, self.flags)
