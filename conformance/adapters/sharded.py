"""The sharded lane: Keras's Adafactor on JAX with every variable split over a 2x2 device mesh.

Nothing in the optimizer is rewritten. The adapter is ``keras-jax`` (``jax.jit`` of
``optimizer.stateless_apply``, as Keras's JAX trainer runs it) with each input placed on a
``jax.sharding.NamedSharding`` before the call, so XLA's SPMD partitioner (GSPMD) splits the
step over the devices and inserts the cross-device reductions itself:

    variable [..., n, m]   P(..., "rows", "cols")   the last two axes, where they split evenly
    gradient, v, EMA, accumulator                   the variable's own sharding
    r [..., n]             P(..., "rows")           mean over m: reduces ACROSS the column shards
    c [..., m]             P(..., "cols")           mean over n: reduces ACROSS the row shards
    1-D variable [n]       P(("rows", "cols"))      RMS(u), RMS(x): reduce across all four
    everything else        replicated

On a CPU machine the four devices are virtual host devices
(``--xla_force_host_platform_device_count=4``, set by the adapter before JAX starts its CPU
backend); on a machine with four accelerators of one platform the same mesh uses them. After
every step the adapter checks that each sharded variable really came back spread over the four
devices, so a lane cannot pass by silently running on one.

The vectors are the Keras spec's own. Only those with a variable that splits evenly run here
(``vectors/keras/sharding.json``: 8x16, 16, 4x6x8); the others are skipped with the reason,
since replicated they are the very program the keras-jax lane already checks. Known
Keras-on-JAX deviations are the ``keras-jax`` adapter's (``conformance/expectations/
keras-jax.txt``): in float64 that includes Keras's float32 means (keras-team/keras#23223), so
the float32 lane is where a sharding error shows against a derived budget.

``LocalShardMean`` (``conformance/adapters/broken.py``) is the distributed bug this lane
exists to catch: the same program, but every mean over a sharded axis of a variable-shaped
tensor is taken over the local shard only (``jax.shard_map`` with the reduced mesh axis
dropped from the output), as a port that forgets its all-reduce computes it.
"""

from __future__ import annotations

import os
from typing import Optional

from conformance.adapters.base import AdapterError
from conformance.adapters.keras_adapter import KerasJaxAdapter
from conformance.adapters.registry import registered

MESH_SHAPE = (2, 2)
MESH_AXES = ("rows", "cols")
DEVICES_NEEDED = MESH_SHAPE[0] * MESH_SHAPE[1]
_FLAG = "--xla_force_host_platform_device_count"


def request_host_devices(count: int = DEVICES_NEEDED) -> None:
    """Ask XLA for ``count`` virtual CPU devices; effective only before JAX initialises its
    CPU backend (an explicit XLA_FLAGS setting of the user's wins)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={count}".strip()


def variable_spec(shape) -> tuple:
    """Mesh axis (or None) per dimension of a variable of ``shape`` (table in the module doc)."""
    rows, cols = MESH_SHAPE
    spec = [None] * len(shape)
    if len(shape) >= 2:
        if shape[-2] % rows == 0:
            spec[-2] = "rows"
        if shape[-1] % cols == 0:
            spec[-1] = "cols"
    elif len(shape) == 1:
        if shape[0] % (rows * cols) == 0:
            spec[0] = MESH_AXES
        elif shape[0] % cols == 0:
            spec[0] = "cols"
    return tuple(spec)


def is_sharded(spec: tuple) -> bool:
    return any(axis is not None for axis in spec)


def local_shard_mean(mesh, specs: dict):
    """For the meta-test ports (broken.LocalShardMean, keras_distribution's): a factory that
    wraps Keras's JAX ``mean`` so that a mean over a split axis of an array whose shape is in
    ``specs`` ({shape: PartitionSpec entries}) is taken per shard (``jax.shard_map`` over
    ``mesh``), as a port that forgets its all-reduce computes it; other means are untouched."""
    import jax
    from jax.sharding import PartitionSpec as P

    def factory(real):
        def mean(x, axis=None, keepdims=False):
            spec = specs.get(tuple(x.shape))
            if spec is None or not is_sharded(spec):
                return real(x, axis=axis, keepdims=keepdims)
            ndim = len(spec)
            axes = range(ndim) if axis is None else [
                a % ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))]
            if all(spec[a] is None for a in axes):
                return real(x, axis=axis, keepdims=keepdims)
            if keepdims:
                out = [None if a in axes else spec[a] for a in range(ndim)]
            else:
                out = [spec[a] for a in range(ndim) if a not in axes]
            local = jax.shard_map(lambda block: real(block, axis=axis, keepdims=keepdims), mesh=mesh,
                                  in_specs=(P(*spec),), out_specs=P(*out), check_vma=False)
            return local(x)

        return mean

    return factory


def traced_step(opt, local_mean):
    """``opt.stateless_apply`` as a function to jit; with ``local_mean`` (a
    ``local_shard_mean`` factory) Keras's JAX mean is swapped for it while tracing."""

    def traced(opt_values, grads, values):
        if local_mean is None:
            return opt.stateless_apply(opt_values, grads, values)
        import keras.src.backend.jax.numpy as jnp_backend

        real = jnp_backend.mean
        jnp_backend.mean = local_mean(real)
        try:
            return opt.stateless_apply(opt_values, grads, values)
        finally:
            jnp_backend.mean = real

    return traced


class KerasJaxShardedAdapter(KerasJaxAdapter):
    """keras-jax with its variables, gradients and optimizer state sharded over a 2x2 mesh."""

    backend = "jax"

    def __init__(self, x64: bool = True):
        request_host_devices()
        super().__init__(x64=x64, eager=False)
        self.name = "keras-jax-sharded"
        self.expectations = registered(self.name)["expectations"]  # keras-jax's: the same Keras code
        self._mesh = None

    # ------------------------------------------------------------------ the mesh
    def mesh(self, device: str):
        import jax
        import numpy as np

        if self._mesh is None:
            platform = "gpu" if device == "gpu" else "cpu"
            devices = jax.devices(platform)[:DEVICES_NEEDED]
            self._mesh = jax.sharding.Mesh(np.array(devices).reshape(MESH_SHAPE), MESH_AXES)
        return self._mesh

    def device_available(self, device: str) -> Optional[str]:
        reason = super().device_available(device)
        if reason:
            return reason
        import jax

        found = len(jax.devices("gpu" if device == "gpu" else "cpu"))
        if found < DEVICES_NEEDED:
            hint = (f"JAX started before {_FLAG}={DEVICES_NEEDED} was set (XLA_FLAGS="
                    f"{os.environ.get('XLA_FLAGS', '')!r}); run this adapter in its own process"
                    if device == "cpu" else "a machine with four GPUs is needed")
            return f"the sharded lane needs {DEVICES_NEEDED} {device} devices, JAX sees {found}: {hint}"
        return None

    def _apply_description(self) -> str:
        return (f"jax.jit(optimizer.stateless_apply) on inputs sharded over a {MESH_SHAPE[0]}x{MESH_SHAPE[1]} "
                f"mesh {MESH_AXES} (GSPMD partitions the step)")

    def environment(self, device: str) -> dict:
        env = super().environment(device)
        mesh = self.mesh(device)
        env["mesh"] = (f"{MESH_SHAPE[0]}x{MESH_SHAPE[1]} {MESH_AXES} over "
                       + ", ".join(f"{d.platform}:{d.id}" for d in mesh.devices.flat))
        env["sharding"] = ("last two axes of each variable where they split evenly, r/c/v/EMA/accumulators "
                           "alike (conformance/adapters/sharded.py)")
        env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
        return env

    def unsupported(self, vector, dtype: str, device: str) -> Optional[str]:
        from conformance.vector import as_vector

        vector = as_vector(vector)
        shapes = list(vector.shapes)
        if not any(is_sharded(variable_spec(shape)) for shape in shapes):
            return (f"no variable splits evenly over the {MESH_SHAPE[0]}x{MESH_SHAPE[1]} mesh (shapes {shapes}): "
                    "it would run replicated, the program keras-jax already checks")
        if "CALLABLE_LEARNING_RATE" in vector.flags:
            return ("a callable learning rate is called once at trace time under jax.jit; the sharded lane "
                    "runs compiled steps only (keras-jax runs these vectors eagerly)")
        return super().unsupported(vector, dtype, device)

    # ------------------------------------------------------------------ the step
    def _specs(self, session) -> tuple[list, list]:
        """PartitionSpecs for optimizer.variables and for the model variables, in order."""
        from jax.sharding import PartitionSpec as P

        opt = session.opt
        by_id = {}
        var_specs = []
        for i, x in enumerate(session.variables):
            spec = variable_spec(tuple(x.shape))
            var_specs.append(P(*spec))
            if len(x.shape) >= 2:
                by_id[id(opt._r[i])] = P(*spec[:-1])
                by_id[id(opt._c[i])] = P(*(spec[:-2] + spec[-1:]))
            by_id[id(opt._v[i])] = P(*spec)
            if opt.use_ema:
                by_id[id(opt._model_variables_moving_average[i])] = P(*spec)
            if opt.gradient_accumulation_steps:
                by_id[id(opt._accumulated_gradients[i])] = P(*spec)
        opt_specs = [by_id.get(id(v), P()) for v in opt.variables]
        return opt_specs, var_specs

    def _local_mean(self, session):
        """A replacement for the backend's mean while tracing, or None (the real one)."""
        return None

    def _compile_step(self, session):
        import jax
        from jax.sharding import NamedSharding

        opt, variables = session.opt, session.variables
        mesh = self.mesh(session.device)
        opt_specs, var_specs = self._specs(session)
        sharded = [i for i, spec in enumerate(var_specs) if is_sharded(tuple(spec))]
        jitted = jax.jit(traced_step(opt, self._local_mean(session)))

        def place(value, spec):
            return jax.device_put(value, NamedSharding(mesh, spec))

        def step(grads):
            new_variables, new_state = jitted(
                [place(v.value, s) for v, s in zip(opt.variables, opt_specs)],
                [None if g is None else place(g, s) for g, s in zip(grads, var_specs)],
                [place(x.value, s) for x, s in zip(variables, var_specs)])
            for i in sharded:
                devices = new_variables[i].sharding.device_set
                if len(devices) != DEVICES_NEEDED:
                    raise AdapterError(
                        f"vector {session.vector_id!r}: variable {i} came back on {len(devices)} device(s), "
                        f"not sharded over {DEVICES_NEEDED}: the lane would not test a sharded step")
            for x, value in zip(variables, new_variables):
                x.assign(value)
            for v, value in zip(opt.variables, new_state):
                v.assign(value)

        session.sharded_variables = sharded
        return step
