"""The port as the conformance gate sees it: ``adafactor_port.conformance_adapter:PortAdapter``.

The gate (``pip install adafactor-conformance``) imports this module by that import spec, in
pytest (``adafactor_adapter`` in pyproject.toml) and in the reproduce lines it prints
(``python -m conformance run --adapter adafactor_port.conformance_adapter:PortAdapter ...``),
so it must be importable where the tests run: the port installed, or its src/ on PYTHONPATH.

An adapter only translates: the vector's Keras configuration into this port's constructor,
the gate's ``State`` into the port's arrays and back. The gate compares, checks dtypes and
grades; see conformance/PORTING.md in the gate.
"""

from __future__ import annotations

import numpy as np

from conformance.adapters.base import Adapter, Session
from conformance.replay import RecordedCallable
from reference.state import Kind, State

import adafactor_port
from adafactor_port import Adafactor

#: Keras arguments this port does not implement: dropped where their value leaves the
#: feature off (None, 0, False), passed on otherwise, and the port then refuses them
#: ("Argument(s) not recognized"). The expectation file skips the vectors that use them.
NOT_IMPLEMENTED = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_overwrite_frequency",
                   "loss_scale_factor", "gradient_accumulation_steps")


def port_arguments(config: dict) -> dict:
    """The port's constructor arguments for a vector's Keras configuration."""
    args = dict(config)
    for name in NOT_IMPLEMENTED:
        if name in args and not args[name]:
            del args[name]
    if "use_ema" not in args:
        args.pop("ema_momentum", None)  # only read with use_ema
    return args


class PortSession(Session):
    """One optimizer and its variables, for one vector in one lane dtype."""

    def __init__(self, vector, dtype: str):
        # vector: conformance.vector.Vector (config, initial values, recorded learning-rate calls)
        args = port_arguments(vector.config)
        self.recorded = None
        if isinstance(args.get("learning_rate"), dict) and args["learning_rate"].get("callable") == "recorded":
            # A Python callable learning rate, recorded: it returns the values Keras saw, in
            # call order, and raises when called more often than Keras called it.
            self.recorded = RecordedCallable(vector.learning_rate_calls, vector.id)
            args["learning_rate"] = self.recorded
        self.opt = Adafactor(**args)  # an invalid configuration raises here, as Keras does
        self.variables = [np.array(x, dtype=dtype) for x in vector.initial]
        self.opt.build(self.variables)

    def load(self, state: State) -> None:
        """The variables and the whole optimizer state (teacher mode loads the golden state
        before every step)."""
        for x, value in zip(self.variables, state.variables):
            x[...] = value
        self.opt.iterations = state.iterations
        for mine, theirs in ((self.opt.r, state.r), (self.opt.c, state.c), (self.opt.v, state.v)):
            for i, value in enumerate(theirs or ()):
                if mine[i] is not None and value is not None:
                    mine[i][...] = value
        if self.recorded is not None:  # resume the callable where the golden state is
            self.recorded.position = state.learning_rate_calls or 0

    def step(self, grads: list) -> None:
        self.opt.apply(grads, self.variables)

    def read(self) -> State:
        """Copies of every array, in the dtype the port really holds."""
        def copies(arrays):
            return [None if a is None else a.copy() for a in arrays]

        return State(self.opt.iterations,
                     {Kind.VARIABLES: copies(self.variables), Kind.R: copies(self.opt.r),
                      Kind.C: copies(self.opt.c), Kind.V: copies(self.opt.v)},
                     learning_rate_calls=0 if self.recorded is None else self.recorded.position)


class PortAdapter(Adapter):
    def __init__(self):
        super().__init__(name="adafactor-port", dtypes=("float64", "float32"), devices=("cpu",))

    def environment(self, device: str) -> dict:
        return {"adafactor-port": adafactor_port.__version__, "numpy": np.__version__}

    def create(self, vector, dtype: str, device: str) -> Session:
        return PortSession(vector, dtype)
