"""The reference as an adapter, run through the same runner as every framework (as ONNX
runs its reference evaluator through the backend test runner).

In float64 it *is* the spec and must conform at 0 ulp. In float32, float16 and bfloat16 it
is the honest lower-precision implementation: the same arithmetic with every operation
rounded to the lane dtype (NumPy float16 ufuncs, ml_dtypes bfloat16), except the reductions
of float16 and bfloat16, which accumulate in float32 and round the result once, as torch,
JAX/XLA and Keras do (reference/reductions.py; NumPy alone would sum bfloat16 one element at
a time in bfloat16). The tolerance policy (conformance/tolerance.py) is derived from how far
those lanes land from float64.
"""

from __future__ import annotations

import warnings

import numpy as np

import reference
from conformance import replay
from conformance.adapters.base import Adapter, Session, numpy_dtype
from conformance.adapters.registry import registered
from conformance.vector import Vector, as_vector
from reference.state import Kind, State


def reference_class(dtype_name: str):
    """``reference.Adafactor`` computing in ``dtype_name``."""
    return type(f"Adafactor_{dtype_name}", (reference.Adafactor,), {"dtype": numpy_dtype(dtype_name)})


class ReferenceSession(Session):
    def __init__(self, vector: Vector, dtype: str, cls=None):
        vector = as_vector(vector)
        self.dtype = numpy_dtype(dtype)
        self.callable = None
        lr = replay.decode_learning_rate(vector) if "learning_rate" in vector.config else None
        if isinstance(lr, replay.RecordedCallable):
            self.callable = lr
        self.opt = replay.make_optimizer(vector, learning_rate=lr, cls=cls or reference_class(dtype))
        self.variables = [x.astype(self.dtype) for x in vector.initial]
        replay.build(self.opt, self.variables, list(vector.names), vector.exclude_from_weight_decay)

    def load(self, state: State) -> None:
        for x, value in zip(self.variables, state.variables):
            x[...] = value
        self.opt.set_state(state)
        if self.callable is not None:
            self.callable.position = state.learning_rate_calls

    def step(self, grads: list) -> None:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.opt.apply(grads, self.variables)

    def read(self) -> State:
        s = self.opt.state
        last = self.opt.last_step
        values = {k: list(arrays) for k, arrays in s.values.items()}
        values[Kind.VARIABLES] = [x.copy() for x in self.variables]
        return State(s.iterations, values, learning_rate_calls=0 if self.callable is None else self.callable.position,
                     flags=None if last is None else {"is_update_step": last.is_update_step,
                                                      "ema_overwritten": last.ema_overwritten})


class DialectSession(Session):
    """A native dialect of the reference (reference/dialects) on one vector, in the lane
    dtype: float64 is that dialect's spec, lower dtypes its honest implementation."""

    def __init__(self, vector: Vector, dtype: str):
        from reference.dialects import optimizer_class

        vector = as_vector(vector)
        self.dtype = numpy_dtype(dtype)
        self.opt = optimizer_class(vector.dialect)(**vector.config)
        self.variables = [x.astype(self.dtype) for x in vector.initial]
        excluded = set((vector.exclude_from_weight_decay or {}).get("var_index", []))
        self.opt.build(self.variables, decays=[i not in excluded for i in range(len(self.variables))])

    def load(self, state: State) -> None:
        for x, value in zip(self.variables, state.variables):
            x[...] = value
        self.opt.set_state(state)  # casts each kind to the dtype the dialect keeps it in

    def step(self, grads: list) -> None:
        with np.errstate(all="ignore"):
            self.opt.apply(grads, self.variables)

    def read(self) -> State:
        s = self.opt.state
        none = [None] * len(self.variables)
        values = {Kind.R: none, Kind.C: none, Kind.V: none}  # always, None where a variable has none
        values.update({k: list(arrays) for k, arrays in s.values.items()})
        values[Kind.VARIABLES] = [x.copy() for x in self.variables]
        return State(s.iterations, values, learning_rate_calls=None)


class ReferenceAdapter(Adapter):
    def __init__(self):
        super().__init__(name="reference", dtypes=("float64", "float32", "float16", "bfloat16"),
                         devices=("cpu",), **registered("reference"))

    def environment(self, device: str) -> dict:
        return {"reference": reference.__version__, "spec": f"keras {reference.KERAS_VERSION}",
                "numpy": np.__version__}

    def state_dtypes(self, vector: Vector, dtype: str) -> dict:
        """The vector's fixed state dtypes, and a dialect's own lane rule where its module has
        one (``lane_state_dtypes``: transformers keeps float32 state for half parameters)."""
        fixed = super().state_dtypes(vector, dtype)
        dialect = as_vector(vector).dialect
        if dialect != "keras":
            from reference.dialects import stages_module

            rule = getattr(stages_module(dialect), "lane_state_dtypes", None)
            if rule is not None:
                fixed.update(rule(dtype))
        return fixed

    def create(self, vector: Vector, dtype: str, device: str) -> Session:
        if as_vector(vector).dialect != "keras":
            return DialectSession(vector, dtype)
        return ReferenceSession(vector, dtype)
