"""Real ``keras.optimizers.Adafactor`` on the jax, torch and tensorflow backends.

Each adapter runs Keras exactly as a user would: ``Adafactor(**config)`` with Python
floats as given, a serialized schedule through ``keras.optimizers.schedules.deserialize``,
variables made with ``keras.Variable`` in the lane dtype (``keras.config.set_floatx`` set
to the same dtype), ``optimizer.build`` on them, then one ``optimizer.apply`` per step
(keras-jax: the jitted ``stateless_apply`` Keras's JAX trainer runs). Teacher forcing
(``Session.load``) writes Keras's own state variables directly; ``read`` hands back a
``reference.state.State`` of NumPy arrays in the dtype the backend really holds (the runner
checks them against the lane: a silent demotion, JAX without x64, is an error there).

One process runs one Keras backend: Keras reads ``KERAS_BACKEND`` once, at import. The
adapter's constructor sets it and imports Keras lazily; if Keras is already imported with
another backend it raises ``AdapterError`` (the runner starts one process per adapter).

Sessions are reused across vectors of one structure (``structure_key``: lane dtype, device,
configuration, variable names and shapes, weight-decay exclusions): the optimizer, its
variables and keras-jax's compiled step are built once per structure, and a later vector
of that structure gets the session its predecessor closed, with the freshly built state
restored (``KerasSession.reset``): the same program on the same state, so the same result bits as a
new session (tests/frameworks/test_keras_adapters.py checks it bit for bit). A recorded callable
learning rate is per vector, so those vectors always get a new session.

Known places where real Keras is not the float64 spec are listed in reference/SPEC.md
section 7 and measured by tests/frameworks/test_keras_adapters.py. Dtypes: float64 and float32 on
every backend; float16 and bfloat16 too (Keras's Adafactor casts every scalar to the
variable dtype, update_step at adafactor.py:143-150, so it runs in half precision on all
three backends; epsilon_1 = 1e-30 underflows to 0 in float16, and the rank < 2 r/c
placeholders stay int and are not reported). Devices: "cpu" always, "gpu" when the backend
sees one (``device_available`` says why not otherwise).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import OrderedDict
from typing import Optional

import numpy as np

from conformance import replay
from conformance.adapters.base import Adapter, AdapterError, Session, jax_gpu_problem, numpy_dtype, torch_gpu_problem
from conformance.vector import as_vector
from reference.state import Kind, State

_NONE_GRADIENT_WARNING = "Gradients do not exist for variables"
#: Sessions kept per adapter for reuse (least recently used dropped first).
POOL_SIZE = 32


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


def is_recorded_callable(config: dict) -> bool:
    lr = config.get("learning_rate")
    return isinstance(lr, dict) and lr.get("callable") == "recorded"


def structure_key(vector, dtype: str, device: str) -> Optional[str]:
    """What a Keras session is built from, apart from the initial values: two vectors with
    the same key run the same optimizer on variables of the same names and shapes. None for
    a vector whose session cannot be shared (a recorded callable learning rate)."""
    vector = as_vector(vector)
    if is_recorded_callable(vector.config):
        return None
    return json.dumps([dtype, device, vector.config, vector.names, vector.shapes, vector.exclude_from_weight_decay],
                      sort_keys=True)


class KerasSession(Session):
    """One real Keras Adafactor with its variables, for one structure (``structure_key``),
    lane dtype and device; ``reset`` readies it for another vector of that structure."""

    def __init__(self, adapter: "KerasAdapter", vector, dtype: str, device: str):
        vector = as_vector(vector)
        self.adapter = adapter
        self.key: Optional[str] = None  # the structure_key it is pooled under (None: never pooled)
        self.vector_id = vector.id
        self.dtype_name = dtype
        self.dtype = numpy_dtype(dtype)
        self.device = device
        self.keras = adapter._keras()
        keras = self.keras
        self._activate()
        self.callable = None

        config = dict(vector.config)
        if "learning_rate" in config:
            lr = config["learning_rate"]
            if is_recorded_callable(config):
                self.callable = replay.RecordedCallable(vector.learning_rate_calls, vector.id)
                config["learning_rate"] = self.callable
            elif isinstance(lr, dict):
                config["learning_rate"] = keras.optimizers.schedules.deserialize(lr)
        with self._scope():
            # Invalid configurations raise Keras's own error here, uncaught.
            self.opt = keras.optimizers.Adafactor(**config)
            self.variables = []
            for full_name, initial in zip(vector.names, vector.initial):
                # A vector name "dense/kernel" is what a Dense layer's kernel looks like in
                # Keras: variable.name "kernel" under name scope "dense" (path
                # "dense/kernel"); Keras forbids "/" in a variable name itself.
                scope, _, name = full_name.rpartition("/")
                value = initial.astype(self.dtype)
                if scope:
                    with keras.name_scope(scope):
                        variable = keras.Variable(value, dtype=dtype, name=name)
                else:
                    variable = keras.Variable(value, dtype=dtype, name=name)
                self.variables.append(variable)
            # Exclusion before build: Keras documents it so, and 3.16 refuses it after
            # (base_optimizer.py:883-902 of 3.15.1 has the check, on an attribute 3.15.1
            # never sets; the nightly sets it). Every version accepts this order.
            exclude = vector.exclude_from_weight_decay
            if exclude:
                self.opt.exclude_from_weight_decay(
                    var_list=[self.variables[i] for i in exclude.get("var_index", [])] or None,
                    var_names=exclude.get("var_names") or None,
                )
            self.opt.build(self.variables)
        self.factored = [len(v.shape) >= 2 for v in self.variables]
        # The optimizer's variables as built (iterations, learning rate, slots, EMA,
        # accumulators): what ``reset`` restores.
        self._built = [self._to_numpy(v.value) for v in self.opt.variables]
        # A compiled step (keras-jax: jax.jit of optimizer.stateless_apply), or None for
        # one eager optimizer.apply per step.
        self._compiled = adapter._compile_step(self)

    def reset(self, vector) -> None:
        """Ready this session for ``vector`` (of the same ``structure_key``): the optimizer's
        variables as built, the model variables at ``vector``'s initial values."""
        vector = as_vector(vector)
        self._activate()
        self.vector_id = vector.id
        with self._scope():
            for v, value in zip(self.opt.variables, self._built):
                v.assign(value)
            for x, initial in zip(self.variables, vector.initial):
                x.assign(initial.astype(self.dtype))

    # ------------------------------------------------------------------ plumbing
    def _activate(self) -> None:
        """Process-wide settings for this lane (cheap when already set)."""
        keras = self.keras
        if keras.config.floatx() != self.dtype_name:
            keras.config.set_floatx(self.dtype_name)
        self.adapter._activate_lane(self.dtype_name)

    def _scope(self):
        return self.keras.device(f"{self.device}:0")

    def _slot_variables(self) -> dict:
        """{Kind: [Keras variable or None per model variable]} of every float state kind
        Keras holds (r and c only for factored variables: Keras's rank < 2 r/c are unused
        int placeholders)."""
        opt = self.opt
        out = {Kind.R: [r if f else None for r, f in zip(opt._r, self.factored)],
               Kind.C: [c if f else None for c, f in zip(opt._c, self.factored)],
               Kind.V: list(opt._v)}
        if opt.use_ema:
            out[Kind.AVERAGE] = list(opt._model_variables_moving_average)
        if opt.gradient_accumulation_steps:
            out[Kind.ACCUMULATOR] = list(opt._accumulated_gradients)
        return out

    def _counter(self):
        """The optimizer's own count of applies: ``_iterations`` (Keras >= 3.1; its public
        ``iterations`` divides by ``gradient_accumulation_steps``), the plain Variable
        ``iterations`` in Keras 3.0 (keras/src/optimizers/base_optimizer.py:103-107 there)."""
        counter = getattr(self.opt, "_iterations", None)
        return counter if counter is not None else self.opt.iterations

    def _to_numpy(self, tensor) -> np.ndarray:
        array = self.keras.ops.convert_to_numpy(tensor)
        # convert_to_numpy keeps the dtype (bfloat16 as ml_dtypes.bfloat16 on every
        # backend); copy so the caller owns the buffer.
        return np.array(array, copy=True)

    # ------------------------------------------------------------------ protocol
    def load(self, state: State) -> None:
        self._activate()
        with self._scope():
            for x, value in zip(self.variables, state.variables):
                x.assign(np.asarray(value, dtype=self.dtype))
            self._counter().assign(int(state.iterations))
            for kind, variables in self._slot_variables().items():
                values = state.get(kind)
                if values is None:  # a kind the state does not carry: left as it is
                    continue
                for variable, value in zip(variables, values):
                    if variable is not None:
                        variable.assign(np.asarray(value, dtype=self.dtype))
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

    def close(self) -> None:
        """Done with this vector: the session goes back to its adapter's pool."""
        self.adapter._release(self)

    def read(self) -> State:
        values = {Kind.VARIABLES: [self._to_numpy(x.value) for x in self.variables]}
        for kind, variables in self._slot_variables().items():
            values[kind] = [None if v is None else self._to_numpy(v.value) for v in variables]
        return State(int(self._to_numpy(self._counter().value)), values,
                     0 if self.callable is None else self.callable.position)


class KerasAdapter(Adapter):
    """Common part of the three backends. Subclasses set ``backend``."""

    backend = "?"

    def __init__(self):
        super().__init__(name=f"keras-{self.backend}",
                         dtypes=("float64", "float32", "float16", "bfloat16"),
                         devices=("cpu", "gpu"))
        select_backend(self.backend)
        self._keras_module = None
        self._pool: OrderedDict = OrderedDict()  # structure_key -> KerasSession, least recent first

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

    def create(self, vector, dtype: str, device: str) -> Session:
        """A session for ``vector``: the pooled one of its structure (``structure_key``),
        reset to its initial values, or a new one (pooled for the next vector)."""
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(f"{self.name}: {reason}")
        key = structure_key(vector, dtype, device)
        session = self._pool.pop(key, None) if key is not None else None
        if session is not None:
            session.reset(vector)
        else:
            session = KerasSession(self, vector, dtype, device)  # raises Keras's error on a bad config
            session.key = key
        return session

    def _release(self, session: KerasSession) -> None:
        """Keep a closed session for the next vector of its structure (a session in use is
        never in the pool, so no two vectors share one at a time)."""
        if session.key is None:
            return
        self._pool[session.key] = session
        self._pool.move_to_end(session.key)
        while len(self._pool) > POOL_SIZE:
            self._pool.popitem(last=False)


class KerasJaxAdapter(KerasAdapter):
    """Keras on JAX, stepped the way Keras's own JAX trainer steps it: ``jax.jit`` of
    ``optimizer.stateless_apply`` (keras/src/backend/jax/trainer.py:91-93 calls it inside
    the jitted train step). Eager ``apply`` on JAX re-traces the ``lax.cond`` of gradient
    accumulation on every call (keras/src/backend/jax/optimizer.py:36-66) and runs about
    an order of magnitude slower; the compiled step is built once per session, that is once
    per structure (``structure_key``: Keras bakes the configuration's Python floats into the
    traced program), and reused for every step of every vector of that structure. A
    callable learning rate would be called once, at trace time, under ``jit``, so those
    vectors (flag CALLABLE_LEARNING_RATE) run eagerly, as a user calling
    ``optimizer.apply`` runs them. ``eager=True`` runs everything eagerly."""

    backend = "jax"

    def __init__(self, x64: bool = True, eager: bool = False):
        """``x64=False`` leaves ``jax_enable_x64`` off (JAX's default) for float64 lanes:
        JAX then silently runs them in float32 (SPEC.md section 7), which the runner's dtype
        check reports."""
        self.x64 = x64
        self.eager = eager
        super().__init__()

    def _apply_description(self) -> str:
        if self.eager:
            return "eager optimizer.apply, one per step"
        return ("jax.jit(optimizer.stateless_apply), compiled once per vector structure (as Keras's JAX "
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
