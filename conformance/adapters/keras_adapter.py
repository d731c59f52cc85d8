"""Real ``keras.optimizers.Adafactor`` on the jax, torch and tensorflow backends.

Each adapter runs Keras exactly as a user would: ``Adafactor(**config)`` with Python
floats as given, a serialized schedule through ``keras.optimizers.schedules.deserialize``,
variables made with ``keras.Variable`` in the lane dtype (``keras.config.set_floatx`` set
to the same dtype), ``optimizer.build`` on them, then one eager ``optimizer.apply`` per
step. Teacher forcing (``Session.load``) writes Keras's own state variables directly.

One process runs one Keras backend: Keras reads ``KERAS_BACKEND`` once, at import. The
adapter's constructor sets it and imports Keras lazily; if Keras is already imported with
another backend it raises ``AdapterError`` (the runner starts one process per adapter).

What Keras really computes is what is returned: ``read`` hands back NumPy arrays in the
dtype the backend holds, and every array is checked against the lane dtype (after the
variables are created and after every read), so a silent demotion (JAX without x64) is
an error, never a quiet pass. Known places where real Keras is not the float64 spec are
listed in reference/SPEC.md section 7 and measured by tests/test_keras_adapters.py.

Dtypes: float64 and float32 on every backend; float16 and bfloat16 too (Keras's Adafactor
casts every scalar to the variable dtype, update_step at adafactor.py:143-150, so it runs
in half precision on all three backends; epsilon_1 = 1e-30 underflows to 0 in float16, and
the rank < 2 r/c placeholders stay int). Devices: "cpu" always, "gpu" when the backend
sees one (``device_available`` says why not otherwise).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Optional

import numpy as np

from conformance import replay
from conformance.adapters.base import (Adapter, LaneState, Session, jax_gpu_problem, numpy_dtype,
                                       torch_gpu_problem)

# No import cycle: conformance/adapters/__init__.py defines AdapterError and never imports
# this module (resolve() imports it by name, after the package is initialised).
from conformance.adapters import AdapterError

_NONE_GRADIENT_WARNING = "Gradients do not exist for variables"


def _imported_keras_backend() -> Optional[str]:
    """The backend of a Keras already imported in this process, or None."""
    backend_module = sys.modules.get("keras.src.backend.config")
    if backend_module is None:
        return None
    try:
        return backend_module.backend()
    except Exception:  # noqa: BLE001 - a half-imported Keras: treat as "imported, unknown"
        return "unknown"


def select_backend(backend: str) -> None:
    """Choose the Keras backend for this process, before Keras is imported."""
    current = _imported_keras_backend()
    if current is not None and current != backend:
        raise AdapterError(
            f"keras-{backend}: Keras is already imported in this process with the "
            f"{current!r} backend; a process runs one Keras backend (Keras reads "
            f"KERAS_BACKEND once, at import). Run each keras adapter in its own process.")
    os.environ["KERAS_BACKEND"] = backend
    if backend == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class KerasSession(Session):
    """One real Keras Adafactor with its variables, for one vector, lane dtype and device."""

    def __init__(self, adapter: "KerasAdapter", vector: dict, dtype: str, device: str):
        self.adapter = adapter
        self.vector_id = vector["id"]
        self.dtype_name = dtype
        self.dtype = numpy_dtype(dtype)
        self.device = device
        self.keras = adapter._keras()
        keras = self.keras
        self._activate()
        self.callable = None

        config = dict(vector["config"])
        if "learning_rate" in config:
            lr = config["learning_rate"]
            if isinstance(lr, dict) and lr.get("callable") == "recorded":
                self.callable = replay.decode_learning_rate(vector)  # a RecordedCallable
                config["learning_rate"] = self.callable
            elif isinstance(lr, dict):
                config["learning_rate"] = keras.optimizers.schedules.deserialize(lr)
        with self._scope():
            # Invalid configurations raise Keras's own error here, uncaught.
            self.opt = keras.optimizers.Adafactor(**config)
            self.variables = []
            for spec, initial in zip(vector["variables"], replay.initial_variables(vector)):
                # A vector name "dense/kernel" is what a Dense layer's kernel looks like in
                # Keras: variable.name "kernel" under name scope "dense" (path
                # "dense/kernel"); Keras forbids "/" in a variable name itself.
                scope, _, name = spec["name"].rpartition("/")
                value = initial.astype(self.dtype)
                if scope:
                    with keras.name_scope(scope):
                        variable = keras.Variable(value, dtype=dtype, name=name)
                else:
                    variable = keras.Variable(value, dtype=dtype, name=name)
                self.variables.append(variable)
            self.opt.build(self.variables)
            exclude = vector["exclude_from_weight_decay"]
            if exclude:
                self.opt.exclude_from_weight_decay(
                    var_list=[self.variables[i] for i in exclude.get("var_index", [])] or None,
                    var_names=exclude.get("var_names") or None,
                )
        self.factored = [len(v.shape) >= 2 for v in self.variables]
        self._check_dtypes(self._state_tensors(), "after creating the variables")
        # A compiled step (keras-jax: jax.jit of optimizer.stateless_apply), or None for
        # one eager optimizer.apply per step.
        self._compiled = adapter._compile_step(self)

    # ------------------------------------------------------------------ plumbing
    def _activate(self) -> None:
        """Process-wide settings for this lane (cheap when already set)."""
        keras = self.keras
        if keras.config.floatx() != self.dtype_name:
            keras.config.set_floatx(self.dtype_name)
        self.adapter._activate_lane(self.dtype_name)

    def _scope(self):
        return self.keras.device(f"{self.device}:0")

    def _state_tensors(self):
        """(kind, index, backend tensor) for every float state array Keras holds."""
        opt = self.opt
        out = [("iterations", None, opt._iterations.value)]
        for i, x in enumerate(self.variables):
            out.append(("variables", i, x.value))
            if self.factored[i]:
                out.append(("r", i, opt._r[i].value))
                out.append(("c", i, opt._c[i].value))
            out.append(("v", i, opt._v[i].value))
        if opt.use_ema:
            out += [("average", i, a.value) for i, a in enumerate(opt._model_variables_moving_average)]
        if opt.gradient_accumulation_steps:
            out += [("accumulator", i, a.value) for i, a in enumerate(opt._accumulated_gradients)]
        return out

    def _check_dtypes(self, tensors, when: str) -> None:
        standardize = self.keras.backend.standardize_dtype
        for kind, i, tensor in tensors:
            if kind == "iterations":
                continue
            actual = standardize(tensor.dtype)
            if actual != self.dtype_name:
                raise AdapterError(
                    f"vector {self.vector_id!r}: {self.adapter.name} holds {kind}[{i}] "
                    f"({self._name(i)!r}) in {actual}, not in the lane dtype "
                    f"{self.dtype_name} ({when}); the lane would silently run in {actual}"
                    + self.adapter._dtype_hint(self.dtype_name))

    def _name(self, i):
        return self.variables[i].path

    def _to_numpy(self, tensor) -> np.ndarray:
        array = self.keras.ops.convert_to_numpy(tensor)
        # convert_to_numpy keeps the dtype (bfloat16 as ml_dtypes.bfloat16 on every
        # backend); copy so the caller owns the buffer.
        return np.array(array, copy=True)

    # ------------------------------------------------------------------ protocol
    def load(self, state: LaneState) -> None:
        self._activate()
        opt = self.opt
        with self._scope():
            for x, value in zip(self.variables, state.variables):
                x.assign(np.asarray(value, dtype=self.dtype))
            opt._iterations.assign(int(state.iterations))
            for i in range(len(self.variables)):
                # Rank < 2: Keras's r and c are unused int placeholders; left alone.
                if self.factored[i]:
                    opt._r[i].assign(np.asarray(state.r[i], dtype=self.dtype))
                    opt._c[i].assign(np.asarray(state.c[i], dtype=self.dtype))
                opt._v[i].assign(np.asarray(state.v[i], dtype=self.dtype))
            if opt.use_ema and state.average is not None:
                for a, value in zip(opt._model_variables_moving_average, state.average):
                    a.assign(np.asarray(value, dtype=self.dtype))
            if opt.gradient_accumulation_steps and state.accumulator is not None:
                for a, value in zip(opt._accumulated_gradients, state.accumulator):
                    a.assign(np.asarray(value, dtype=self.dtype))
        if self.callable is not None:
            self.callable.position = state.learning_rate_calls

    def step(self, grads: list) -> None:
        self._activate()
        convert = self.keras.ops.convert_to_tensor
        with self._scope():
            tensors = [None if g is None else convert(np.asarray(g, dtype=self.dtype), dtype=self.dtype_name)
                       for g in grads]
            with warnings.catch_warnings():
                # Keras warns on every None gradient (base_optimizer.py:862-866).
                warnings.filterwarnings("ignore", message=_NONE_GRADIENT_WARNING)
                if self._compiled is None:
                    self.opt.apply(tensors, self.variables)
                else:
                    self._compiled(tensors)

    def read(self) -> LaneState:
        tensors = self._state_tensors()
        self._check_dtypes(tensors, "after a step")
        n = len(self.variables)
        out = {"variables": [None] * n, "r": [None] * n, "c": [None] * n, "v": [None] * n}
        opt = self.opt
        average = [None] * n if opt.use_ema else None
        accumulator = [None] * n if opt.gradient_accumulation_steps else None
        iterations = 0
        for kind, i, tensor in tensors:
            if kind == "iterations":
                iterations = int(self._to_numpy(tensor))
            elif kind == "average":
                average[i] = self._to_numpy(tensor)
            elif kind == "accumulator":
                accumulator[i] = self._to_numpy(tensor)
            else:
                out[kind][i] = self._to_numpy(tensor)
        return LaneState(
            iterations=iterations, variables=out["variables"], r=out["r"], c=out["c"], v=out["v"],
            average=average, accumulator=accumulator,
            learning_rate_calls=0 if self.callable is None else self.callable.position)


class KerasAdapter(Adapter):
    """Common part of the three backends. Subclasses set ``backend``."""

    backend = "?"

    def __init__(self):
        super().__init__(name=f"keras-{self.backend}",
                         dtypes=("float64", "float32", "float16", "bfloat16"),
                         devices=("cpu", "gpu"))
        select_backend(self.backend)
        self._keras_module = None

    def _keras(self):
        if self._keras_module is None:
            select_backend(self.backend)  # again: something may have imported Keras since
            import keras

            if keras.backend.backend() != self.backend:
                raise AdapterError(
                    f"{self.name}: Keras came up with the {keras.backend.backend()!r} backend "
                    f"although KERAS_BACKEND={self.backend!r}")
            self._keras_module = keras
        return self._keras_module

    # hooks ---------------------------------------------------------------------------
    def _activate_lane(self, dtype: str) -> None:
        pass

    def _dtype_hint(self, dtype: str) -> str:
        return ""

    def _framework_version(self) -> dict:
        return {}

    def _device_description(self, device: str) -> str:
        return device

    def _compile_step(self, session: "KerasSession"):
        """A callable ``step(grad_tensors)`` that replaces eager ``optimizer.apply``, or
        None (the default: eager, one ``apply`` per step)."""
        return None

    def _apply_description(self) -> str:
        return "eager optimizer.apply, one per step"

    # protocol ------------------------------------------------------------------------
    def environment(self, device: str) -> dict:
        keras = self._keras()
        env = {"keras": keras.__version__, "backend": keras.backend.backend()}
        env.update(self._framework_version())
        env["numpy"] = np.__version__
        env["floatx"] = "the lane dtype (keras.config.set_floatx per session)"
        env["device"] = self._device_description(device)
        env["apply"] = self._apply_description()
        return env

    def create(self, vector: dict, dtype: str, device: str) -> Session:
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(f"{self.name}: {reason}")
        return KerasSession(self, vector, dtype, device)


class KerasJaxAdapter(KerasAdapter):
    """Keras on JAX, stepped the way Keras's own JAX trainer steps it: ``jax.jit`` of
    ``optimizer.stateless_apply`` (keras/src/backend/jax/trainer.py:91-93 calls it inside
    the jitted train step). Eager ``apply`` on JAX re-traces the ``lax.cond`` of gradient
    accumulation on every call (keras/src/backend/jax/optimizer.py:36-66) and runs about
    an order of magnitude slower; the compiled step is built once per session and reused
    for every step of the vector. A callable learning rate would be called once, at trace
    time, under ``jit``, so those vectors (flag CALLABLE_LEARNING_RATE) run eagerly, as a
    user calling ``optimizer.apply`` runs them. ``eager=True`` runs everything eagerly."""

    backend = "jax"

    def __init__(self, x64: bool = True, eager: bool = False):
        """``x64=False`` leaves ``jax_enable_x64`` off (JAX's default) for float64 lanes:
        the dtype check then reports the silent float32 demotion (SPEC.md section 7)."""
        self.x64 = x64
        self.eager = eager
        super().__init__()

    def _apply_description(self) -> str:
        if self.eager:
            return "eager optimizer.apply, one per step"
        return ("jax.jit(optimizer.stateless_apply), compiled once per vector (as Keras's JAX "
                "trainer runs it); eager optimizer.apply for callable learning rates")

    def _compile_step(self, session: "KerasSession"):
        if self.eager or session.callable is not None:
            return None
        import jax

        opt, variables = session.opt, session.variables
        jitted = jax.jit(opt.stateless_apply)

        def step(grads):
            new_variables, new_state = jitted([v.value for v in opt.variables], grads,
                                              [x.value for x in variables])
            for x, value in zip(variables, new_variables):
                x.assign(value)
            for v, value in zip(opt.variables, new_state):
                v.assign(value)

        return step

    def _activate_lane(self, dtype: str) -> None:
        # float64 needs x64 before any array is created; other lanes run as a JAX user
        # runs them by default, without x64.
        import jax

        want = self.x64 and dtype == "float64"
        if bool(jax.config.jax_enable_x64) != want:
            jax.config.update("jax_enable_x64", want)

    def _dtype_hint(self, dtype: str) -> str:
        if dtype == "float64":
            return " (JAX without jax_enable_x64 runs float64 as float32)"
        return ""

    def _framework_version(self) -> dict:
        import jax
        import jaxlib

        # environment() is asked once per lane, without the lane's dtype, so the flag is
        # stated as the rule _activate_lane applies.
        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                "jax_enable_x64": ("on for float64 lanes, off (JAX's default) for the others"
                                   if self.x64 else "off")}

    def gpu_problem(self) -> Optional[str]:
        self._keras()
        return jax_gpu_problem()

    def _device_description(self, device: str) -> str:
        import jax

        try:
            d = jax.devices(device)[0]
        except RuntimeError as exc:
            return f"{device}: unavailable ({str(exc).splitlines()[0]})"
        return f"{device}:0 = {d.device_kind} ({d.platform})"


class KerasTorchAdapter(KerasAdapter):
    backend = "torch"

    def _framework_version(self) -> dict:
        import torch

        return {"torch": torch.__version__}

    def gpu_problem(self) -> Optional[str]:
        self._keras()
        return torch_gpu_problem()

    def _device_description(self, device: str) -> str:
        import torch

        if device == "gpu":
            if not torch.cuda.is_available():
                return "gpu: unavailable"
            return f"gpu:0 = cuda:0 {torch.cuda.get_device_name(0)}"
        return "cpu:0"


class KerasTensorFlowAdapter(KerasAdapter):
    backend = "tensorflow"

    def _framework_version(self) -> dict:
        import tensorflow as tf

        return {"tensorflow": tf.__version__}

    def gpu_problem(self) -> Optional[str]:
        self._keras()
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return (f"TensorFlow {tf.__version__} sees no GPU "
                    f"(tf.config.list_physical_devices('GPU') is empty)")
        return None

    def _device_description(self, device: str) -> str:
        import tensorflow as tf

        kind = "GPU" if device == "gpu" else "CPU"
        found = tf.config.list_logical_devices(kind)
        return found[0].name if found else f"{device}: unavailable"


__all__ = ["KerasAdapter", "KerasJaxAdapter", "KerasJaxEagerAdapter", "KerasSession", "KerasTensorFlowAdapter",
           "KerasTorchAdapter", "select_backend"]


class KerasJaxEagerAdapter(KerasJaxAdapter):
    """keras-jax with one eager ``optimizer.apply`` per step (what a user calling
    ``optimizer.apply`` outside ``jit`` runs); select it as
    ``conformance.adapters.keras_adapter:KerasJaxEagerAdapter``. Same expectations."""

    def __init__(self, x64: bool = True):
        super().__init__(x64=x64, eager=True)
