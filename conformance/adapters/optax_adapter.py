"""Real ``optax.adafactor`` (JAX) on the optax dialect's vectors (reference/dialects/optax.py).

A session builds ``optax.adafactor(**config)`` as a user would (``dtype_momentum`` name ->
``jnp.dtype``; the vector's excluded ``var_index`` -> a ``weight_decay_mask`` list), calls
``tx.init`` on the parameter list and steps with one ``jax.jit`` of
``tx.update`` + ``optax.apply_updates``, compiled once per session.

Teacher forcing (``load``) rebuilds the state pytree from ``tx.init``: the chain's state is
a tuple (alias.py:303-326) whose ``FactoredState`` (factorized.py:79-85: count, v_row,
v_col, v; the unused one of each pair a ``(1,)`` placeholder) and ``EmaState``
(_accumulation.py:82-86: count, ema) are replaced; every other entry is stateless (constant
learning rate and weight decay). Counts are int32 ``iterations``. ``read`` maps back:
factored variables r = v_row, c = v_col; unfactored v; ``momentum`` = the EMA.

float64 lanes need ``jax_enable_x64`` before arrays are made (so does a float64
``dtype_momentum``): it is switched per session. ``read`` returns every array in the dtype
JAX holds it, so JAX's silent float32 demotion is caught by the runner's dtype check (the
momentum stays in ``dtype_momentum``, which the vector declares: ``Adapter.state_dtypes``).
Devices: cpu, and gpu when JAX sees one.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from conformance.adapters.base import Adapter, AdapterError, Session, jax_gpu_problem, numpy_dtype
from conformance.adapters.registry import registered
from conformance.vector import Vector, as_vector
from reference.state import Kind, State


def _jax():
    import jax

    return jax


class OptaxSession(Session):
    def __init__(self, adapter: "OptaxAdapter", vector: Vector, dtype: str, device: str):
        jax = _jax()
        vector = as_vector(vector)
        self.vector_id = vector.id
        self.dtype_name = dtype
        self.dtype = numpy_dtype(dtype)
        config = dict(vector.config)
        want_x64 = dtype == "float64" or (config.get("momentum") is not None
                                          and config.get("dtype_momentum") == "float64")
        if bool(jax.config.jax_enable_x64) != want_x64:
            jax.config.update("jax_enable_x64", want_x64)
        import jax.numpy as jnp
        import optax
        from optax._src import factorized

        self.jnp, self.optax = jnp, optax
        self.device = jax.devices(device)[0]
        exclude = vector.exclude_from_weight_decay or {}
        if exclude.get("var_names"):
            raise AdapterError(f"vector {self.vector_id!r}: optax masks by position; exclude_from_weight_decay "
                               f"var_names={exclude['var_names']!r} is not supported (use var_index)")
        initial = vector.initial
        self.shapes = [x.shape for x in initial]
        if config.get("weight_decay_rate") is not None and exclude.get("var_index"):
            excluded = set(exclude["var_index"])
            config["weight_decay_mask"] = [i not in excluded for i in range(len(initial))]
        # Invalid configurations raise optax's own error here, uncaught (optax takes the
        # dtype_momentum name and canonicalizes it itself, _accumulation.py:116).
        optax.adafactor(**config)
        self.momentum_dtype = None
        if "dtype_momentum" in config:
            config["dtype_momentum"] = jnp.dtype(config["dtype_momentum"])
            if config.get("momentum") is not None:
                self.momentum_dtype = numpy_dtype(str(config["dtype_momentum"]))
        self.tx = optax.adafactor(**config)
        self.factored = [factorized._factored_dims(s, config.get("factored", True),
                                                   config.get("min_dim_size_to_factor", 128)) is not None
                         for s in self.shapes]
        self.params = [self._put(x, self.dtype) for x in initial]
        self.state = self.tx.init(self.params)
        self.iterations = 0
        tx = self.tx

        def step(grads, state, params):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        self._step = jax.jit(step)

    # ------------------------------------------------------------------ plumbing
    def _put(self, array, dtype):
        return _jax().device_put(self.jnp.asarray(np.asarray(array, dtype=dtype), dtype=dtype), self.device)

    def _entries(self, state):
        """(index in the chain state, FactoredState or EmaState) pairs; refuses unknown state."""
        from optax import EmaState  # the public name: optax 0.2.0 has no optax.transforms._accumulation
        from optax._src.factorized import FactoredState

        for k, entry in enumerate(state):
            if isinstance(entry, (FactoredState, EmaState)):
                yield k, entry
            elif _jax().tree_util.tree_leaves(entry):
                raise AdapterError(f"vector {self.vector_id!r}: unexpected state in optax.adafactor's chain "
                                   f"at position {k}: {type(entry).__name__} (schedules are out of scope)")

    def _numpy(self, a):
        return np.array(a, copy=True)

    # ------------------------------------------------------------------ protocol
    def load(self, state: State) -> None:
        from optax._src.factorized import FactoredState

        jnp = self.jnp
        self.params = [self._put(x, self.dtype) for x in state.variables]
        count = jnp.asarray(int(state.iterations), dtype=jnp.int32)
        new = list(self.tx.init(self.params))
        momentum = state.momentum
        for k, entry in self._entries(new):
            if isinstance(entry, FactoredState):
                v_row, v_col, v = list(entry.v_row), list(entry.v_col), list(entry.v)
                for i, factored in enumerate(self.factored):
                    if factored:
                        v_row[i], v_col[i] = self._put(state.r[i], self.dtype), self._put(state.c[i], self.dtype)
                    else:
                        v[i] = self._put(state.v[i], self.dtype)
                new[k] = FactoredState(count=count, v_row=v_row, v_col=v_col, v=v)
            else:
                if momentum is None:
                    raise AdapterError(f"vector {self.vector_id!r}: optax keeps a momentum but the state has none")
                new[k] = entry._replace(count=count, ema=[self._put(m, self.momentum_dtype) for m in momentum])
        self.state = tuple(new)  # combine.chain's state is a plain tuple
        self.iterations = int(state.iterations)

    def step(self, grads: list) -> None:
        if any(g is None for g in grads):
            raise AdapterError(f"vector {self.vector_id!r}: optax needs a gradient for every variable")
        grads = [self._put(g, self.dtype) for g in grads]
        self.params, self.state = self._step(grads, self.state, self.params)
        self.iterations += 1

    def read(self) -> State:
        from optax._src.factorized import FactoredState

        n = len(self.shapes)
        r, c, v, momentum, counted = [None] * n, [None] * n, [None] * n, None, None
        for _, entry in self._entries(self.state):
            if isinstance(entry, FactoredState):
                counted = int(entry.count)
                for i, factored in enumerate(self.factored):
                    if factored:
                        r[i], c[i] = self._numpy(entry.v_row[i]), self._numpy(entry.v_col[i])
                    else:
                        v[i] = self._numpy(entry.v[i])
            else:
                momentum = [self._numpy(m) for m in entry.ema]
        if counted != self.iterations:
            raise AdapterError(f"vector {self.vector_id!r}: optax's count is {counted}, "
                               f"expected {self.iterations} applies")
        return State(counted, {Kind.VARIABLES: [self._numpy(x) for x in self.params], Kind.R: r, Kind.C: c,
                               Kind.V: v, Kind.MOMENTUM: momentum})


class OptaxAdapter(Adapter):
    """``optax.adafactor`` replaying the optax dialect's vectors."""

    def __init__(self):
        super().__init__(name="optax", dtypes=("float64", "float32", "float16", "bfloat16"), devices=("cpu", "gpu"),
                         **registered("optax"))

    def environment(self, device: str) -> dict:
        import jax
        import jaxlib
        import optax

        try:
            d = jax.devices(device)[0]
            where = f"{device}:0 = {d.device_kind} ({d.platform})"
        except RuntimeError as exc:
            where = f"{device}: unavailable ({str(exc).splitlines()[0]})"
        return {"optax": optax.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                "numpy": np.__version__, "jax_enable_x64": "on for float64 lanes (and float64 dtype_momentum)",
                "device": where, "apply": "jax.jit(tx.update + optax.apply_updates), compiled once per vector"}

    def gpu_problem(self) -> Optional[str]:
        return jax_gpu_problem()

    def unsupported(self, vector: Vector, dtype: str, device: str) -> Optional[str]:
        """Also skips a vector that uses a feature the optax dialect names unsupported
        (reference/dialects/optax.py UNSUPPORTED, ``detect``), saying which."""
        from reference.dialects import optax as dialect
        from reference.dialects.gaps import vector_skip_reason

        return (super().unsupported(vector, dtype, device)
                or vector_skip_reason("optax", "optax.adafactor", dialect.UNSUPPORTED, as_vector(vector)))

    def create(self, vector: Vector, dtype: str, device: str) -> Session:
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(f"{self.name}: {reason}")
        return OptaxSession(self, vector, dtype, device)


__all__ = ["OptaxAdapter", "OptaxSession"]
