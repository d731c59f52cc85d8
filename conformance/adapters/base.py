"""The adapter protocol: what the gate needs from an implementation under test.

An adapter is thin. It translates a golden vector (``conformance.vector.Vector``: its
Keras configuration, initial values and state) into the implementation's own optimizer,
moves state in and out as ``reference.state.State``, and says what it cannot run. It never
compares anything and checks no dtype: the runner does both. A complete adapter (here the
port is ``reference.Adafactor`` itself; tests/gate/test_adapter_registry.py runs this example
through the gate)::

    import reference
    from conformance.adapters.base import Adapter, Session
    from reference.state import Kind, State

    class MySession(Session):
        def __init__(self, vector, dtype):
            self.opt = reference.Adafactor(**vector.config)      # your framework's optimizer
            self.variables = [x.astype(dtype) for x in vector.initial]
            self.opt.build(self.variables, names=list(vector.names))

        def load(self, state):      # the variables and the whole optimizer state
            for x, value in zip(self.variables, state.variables):
                x[...] = value
            self.opt.set_state(state)

        def step(self, grads):      # one optimizer step; grads in the lane dtype, or None
            self.opt.apply(grads, self.variables)

        def read(self):             # a State: iterations and arrays, in the dtype really held
            state = self.opt.get_state()
            return State(state.iterations, {**state.values, Kind.VARIABLES: [x.copy() for x in self.variables]})

    class MyAdapter(Adapter):
        def __init__(self):
            super().__init__(name="my-port", dtypes=("float64",))

        def environment(self, device):
            return {"my-port": reference.__version__}

        def create(self, vector, dtype, device):
            return MySession(vector, dtype)

Load a third-party adapter with ``--adapter mypkg.port:MyAdapter``; register one in
``conformance/adapters/registry.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from reference.state import State

if TYPE_CHECKING:
    from conformance.vector import Vector

#: Lane dtypes the gate knows. bfloat16 arrays use ml_dtypes.bfloat16.
DTYPES = ("float64", "float32", "float16", "bfloat16")
DEVICES = ("cpu", "gpu")


def numpy_dtype(name: str):
    """The NumPy dtype of a lane dtype name (``ml_dtypes.bfloat16`` for bfloat16)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def finfo(name: str):
    """``np.finfo`` of a lane dtype (``ml_dtypes.finfo`` for bfloat16, which NumPy's
    finfo does not know)."""
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(np.dtype(name))


class AdapterError(RuntimeError):
    """An adapter cannot be loaded, its framework is missing, or the implementation did
    something the gate cannot grade (exit code 2)."""


class Session:
    """One optimizer with its variables, created for one vector, lane dtype and device."""

    def load(self, state: State) -> None:
        """Set the variables and the whole optimizer state (arrays in the lane dtype, or in
        the dtype ``Adapter.state_dtypes`` names for that kind)."""
        raise NotImplementedError

    def step(self, grads: list) -> None:
        """Apply one step. ``grads`` holds arrays in the lane dtype, or None."""
        raise NotImplementedError

    def read(self) -> State:
        """The current state, arrays in the dtype the implementation really holds (the
        runner checks them against the lane dtype and ``Adapter.state_dtypes``)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class Adapter:
    """Base class of every adapter. Subclasses set ``name``, ``dtypes``, ``devices`` and
    implement ``environment`` and ``create``."""

    name: str = "adapter"
    dtypes: tuple = ("float64",)
    devices: tuple = ("cpu",)
    #: Constructor arguments the implementation cannot take; vectors that use them
    #: at a non-default value are skipped with a reason.
    unsupported_arguments: tuple = field(default_factory=tuple)
    #: Which vectors the adapter replays: "keras" (the spec) and/or native dialects
    #: (reference/dialects). The runner gives an adapter only its dialects' vectors.
    #: Registered adapters take it from their registry entry (``registry.registered``).
    dialects: tuple = ("keras",)
    #: The stem of the conformance/expectations/<stem>.txt file to use, when not the
    #: adapter's own name; registered adapters take it from their registry entry.
    expectations: str = ""
    #: Whether the implementation's errors carry its own messages, graded against an invalid
    #: vector's ``message_contains``; False where only the error class is known (a results
    #: file records the class alone).
    error_messages: bool = True

    def environment(self, device: str) -> dict:
        """Versions and settings to print in the report header."""
        return {}

    def device_available(self, device: str) -> Optional[str]:
        """None when ``device`` can be used, else the reason it cannot."""
        if device == "cpu":
            return None
        if device not in self.devices:
            return f"{self.name} has no {device} support"
        return self.gpu_problem()

    def gpu_problem(self) -> Optional[str]:
        """Why this adapter's framework cannot use a GPU here, or None; adapters that list
        "gpu" in ``devices`` override it (``jax_gpu_problem``, ``torch_gpu_problem``)."""
        return f"{self.name} has no gpu support"

    def state_dtypes(self, vector: "Vector", dtype: str) -> dict:
        """State kinds this implementation keeps in a dtype other than the lane's ``dtype``,
        as ``{Kind: np.dtype}``; the runner checks every array against it or the lane dtype
        (the one dtype check: adapters do not check dtypes themselves). Default: what the
        vector's configuration fixes (``vector_state_dtypes``); an adapter whose framework
        keeps a kind in a dtype of its own adds that."""
        return vector_state_dtypes(vector)

    def unsupported(self, vector: "Vector", dtype: str, device: str) -> Optional[str]:
        """None when this adapter can run ``vector``, else the reason it cannot."""
        if dtype not in self.dtypes:
            return f"{self.name} does not run {dtype}"
        if device not in self.devices:
            return f"{self.name} does not run on {device}"
        from conformance.vector import as_vector

        config = as_vector(vector).config
        for argument in self.unsupported_arguments:
            value = config.get(argument)
            if value not in (None, False):
                return f"{self.name} does not support {argument}={value!r}"
        return None

    def create(self, vector: "Vector", dtype: str, device: str) -> Session:
        """Construct the optimizer and variables (initial values) for ``vector``.
        Must raise the implementation's own error for an invalid configuration."""
        raise NotImplementedError


def vector_state_dtypes(vector) -> dict:
    """State kinds a vector's configuration keeps in a dtype of its own whatever the lane,
    as the vector records them (``Vector.state_dtypes``; the optax dialect's momentum in
    ``dtype_momentum``, optax/_src/alias.py adafactor -> transforms/_accumulation.py ema
    with ``accumulator_dtype``)."""
    from conformance.vector import as_vector

    return dict(as_vector(vector).state_dtypes)


def jax_gpu_problem() -> Optional[str]:
    """Why JAX cannot use a GPU here, or None."""
    import jax

    try:
        devices = jax.devices("gpu")
    except RuntimeError as exc:
        return f"JAX sees no GPU ({jax.default_backend()} backend): {str(exc).splitlines()[0]}"
    return None if devices else "JAX sees no GPU"


def torch_gpu_problem() -> Optional[str]:
    """Why torch cannot use a CUDA device here, or None."""
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)"
    return None
