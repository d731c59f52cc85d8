"""Deviation models: what a real framework computes where it is not the spec, as named,
runnable emulations with derived budgets.

A known numeric deviation never excuses an error without a bound. An expectation entry

    model <name> <selectors>  # reason, with the framework's file:line

grades the selected vectors twice: against the spec (the golden vector) and, where that
fails, against the spec *with the model's operations swapped in* (this module), under the
model's own budget. The outcome is ``pass`` (the spec's budget holds), ``model`` (the
implementation is the spec plus exactly this deviation, within its budget) or ``fail``.

A model is a set of *variants*. The first is the model proper; the others are the choices
the framework's source leaves open (the order of a float32 sum, whether a mean divides by
the count or multiplies by its reciprocal, how many float32 roundings a schedule makes).
``python -m conformance.tolerance`` runs every other variant against the first over the
Keras corpus, exactly as the honest lanes are run against the spec, and stores 4 x that
envelope (never less than the spec's own float64 budget) in conformance/tolerances.json
under ``models``: the budget is the spread of the model's own unknowns, not a guess.

Each model changes only the operations it names, through the reference's swap points:
``reference.reductions.mean``, ``reference.minmax.minimum``/``maximum``, and the scalars an
optimizer subclass rounds to float32. Everything else is the spec, line for line.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from reference import minmax, reductions, schedules


# ----------------------------------------------------------------------------- operations
def _float32_sum(x32: np.ndarray, axis, keepdims: bool, order: str) -> np.ndarray:
    """A float32-accumulated sum, in NumPy's pairwise order or left to right."""
    if order == "pairwise":
        return np.sum(x32, axis=axis, keepdims=keepdims, dtype=np.float32)
    if axis is None:
        flat = x32.reshape(-1)
        total = np.cumsum(flat, dtype=np.float32)[-1] if flat.size else np.float32(0)
        return np.reshape(total, (1,) * x32.ndim) if keepdims else total
    total = np.take(np.cumsum(x32, axis=axis, dtype=np.float32), -1, axis=axis)
    return np.expand_dims(total, axis) if keepdims else total


def float32_mean(order: str, reciprocal: bool) -> Callable:
    """``mean`` computed in float32 and cast back to the input's dtype: Keras's
    ``ops.mean`` on a float64 tensor with ``result_type(float64, float32) == float32``
    (keras/src/backend/common/dtypes.py:240; jax/numpy.py:231-262 and torch/numpy.py:165-196
    cast to the compute dtype, take the mean, cast back). ``reciprocal``: the sum times
    f32(1/n), which is how XLA lowers jnp.mean's division by a constant; else sum / n."""

    def mean(x, axis=None, keepdims=False):
        x = np.asarray(x)
        x32 = x.astype(np.float32)
        count = x32.size if axis is None else x32.shape[axis]
        total = _float32_sum(x32, axis, keepdims, order)
        if reciprocal:
            value = total * (np.float32(1.0) / np.float32(count))
        else:
            value = total / np.float32(count)
        return np.asarray(value, dtype=np.float32).astype(x.dtype)[()]

    return mean


def float32_minimum(a, b):
    """``ops.minimum`` on Keras's torch backend for float64 operands: both are converted to
    result_type(...) == float32 and the result stays float32 (keras/src/backend/torch/
    numpy.py:1320-1332). Products with other float32 scalars then stay float32 (NumPy's
    promotion of two float32 scalars, as torch's); with a float64 array they widen back."""
    return np.minimum(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))[()]


def float32_maximum(a, b):
    """``ops.maximum`` likewise (keras/src/backend/torch/numpy.py:1252-1264)."""
    return np.maximum(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))[()]


def to_float32(value: float, ulps: int = 0) -> float:
    """``value`` rounded to float32 (tf.cast of a Python float: tensorflow/python/ops/
    math_ops.py:1044 makes a float32 tensor first), then moved ``ulps`` float32 ulps."""
    x = np.float32(value)
    step = np.float32(np.inf) if ulps > 0 else np.float32(-np.inf)
    for _ in range(abs(ulps)):
        x = np.nextafter(x, step)
    return float(x)


# ----------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One concrete emulation: which swap points it replaces, and how."""

    name: str
    mean: Optional[Callable] = None  # replaces reference.reductions.mean
    float32_minmax: bool = False  # replaces reference.minmax.minimum / maximum
    float32_scalars: tuple = ()  # of "epsilon_2", "weight_decay", "callable", "schedule", "constant"
    schedule_ulps: int = 0  # a float32 schedule value this many float32 ulps off
    behaviours: tuple = ()  # names in BEHAVIOURS: deterministic differences of control flow

    @contextlib.contextmanager
    def patched(self):
        """The reference's swap points replaced for the duration (one thread only)."""
        saved = reductions.mean, minmax.minimum, minmax.maximum
        if self.mean is not None:
            reductions.mean = self.mean
        if self.float32_minmax:
            minmax.minimum, minmax.maximum = float32_minimum, float32_maximum
        try:
            yield
        finally:
            reductions.mean, minmax.minimum, minmax.maximum = saved

    def optimizer_class(self, base: type) -> type:
        """``base`` (a reference.Adafactor class) with this variant's behaviours and float32
        scalars."""
        for behaviour in self.behaviours:
            base = type(f"{base.__name__}_{behaviour}", (BEHAVIOURS[behaviour], base), {})
        if not self.float32_scalars:
            return base
        variant = self

        class Float32Scalars(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                if "weight_decay" in variant.float32_scalars and self.weight_decay is not None:
                    self.weight_decay = to_float32(self.weight_decay)
                if "epsilon_2" in variant.float32_scalars:
                    self.hyper = dataclasses.replace(self.hyper, epsilon_2=to_float32(self.hyper.epsilon_2))

            @property
            def learning_rate(self):
                value = base.learning_rate.fget(self)
                if isinstance(self._learning_rate, float):
                    # Keras 3 keeps it in a float64 variable: exact; tf-keras in a float32
                    # one ("constant").
                    return to_float32(value) if "constant" in variant.float32_scalars else value
                from reference import schedules

                if isinstance(self._learning_rate, schedules.LearningRateSchedule):
                    if "schedule" in variant.float32_scalars:
                        return to_float32(value, variant.schedule_ulps)
                    return value
                return to_float32(value) if "callable" in variant.float32_scalars else value

        Float32Scalars.__name__ = f"{base.__name__}_{variant.name}"
        return Float32Scalars


def combine(variants: list) -> Variant:
    """One variant doing what each of ``variants`` does (several model entries can apply
    to one vector, e.g. float32 means and a backend's accumulator quirk)."""
    means = {v.mean for v in variants if v.mean is not None}
    if len(means) > 1:
        raise ValueError(f"deviation models {[v.name for v in variants]} both replace the mean")
    return Variant("+".join(v.name for v in variants), mean=means.pop() if means else None,
                   float32_minmax=any(v.float32_minmax for v in variants),
                   float32_scalars=tuple(sorted({s for v in variants for s in v.float32_scalars})),
                   schedule_ulps=0,
                   behaviours=tuple(dict.fromkeys(b for v in variants for b in v.behaviours)))


# ----------------------------------------------------------------------------- behaviours
class JaxStaleAccumulators:
    """Keras's JAX backend zeroes, on the update micro-step, only the accumulators of the
    variables that have a gradient in this apply (acc_grads is built from the filtered
    trainable_variables, keras/src/backend/jax/optimizer.py:31-38, 75-76); the spec resets
    every accumulator (base_optimizer.py:623-626). A variable without a gradient keeps its
    sum into the next cycle."""

    def _step(self, state, grads, variables):
        kept = {}
        if self.gradient_accumulation_steps and state.accumulator is not None:
            kept = {i: np.array(state.accumulator[i], copy=True) for i, g in enumerate(grads) if g is None}
        values, state, record = super()._step(state, grads, variables)
        if record.is_update_step:
            for i, stale in kept.items():
                state.accumulator[i] = stale
        return values, state, record


class JaxLearningRateOnMicrosteps:
    """Keras's JAX backend runs clipping, weight decay and the update step on every
    accumulation micro-step and keeps the result only on the update step (lax.cond,
    keras/src/backend/jax/optimizer.py:36-66): a callable learning rate is called on the
    micro-steps too, as often as on an update step (once per decayed variable with a
    gradient, once for the step)."""

    def _step(self, state, grads, variables):
        n = self.gradient_accumulation_steps
        active = [i for i, g in enumerate(grads) if g is not None]
        if n and active and (state.iterations + 1) % n != 0:
            from reference.optimizer import StepRecord

            scratch = state.copy()
            values = [np.array(x, copy=True) for x in variables]
            with np.errstate(all="ignore"):  # computed, then discarded, as under lax.cond
                self._update(scratch, {i: np.asarray(grads[i]) for i in active}, values,
                             StepRecord(is_update_step=False, learning_rate=None, traces=[None] * len(values)))
        return super()._step(state, grads, variables)


class JaxEmaOverwriteZero:
    """Keras's JAX backend tests ``ema_overwrite_frequency is not None``
    (keras/src/backend/jax/optimizer.py:91-94) where the spec tests truthiness
    (base_optimizer.py:600), so 0 is "set"; XLA:CPU evaluates (iterations + 1) % 0 as 0, so
    the variables are overwritten with their averages on every apply."""

    def _ema(self, state, values):
        overwritten = super()._ema(state, values)
        if self.ema_overwrite_frequency is not None and not self.ema_overwrite_frequency:
            for i in range(len(values)):
                values[i] = np.array(state.average[i], copy=True)
            return True
        return overwritten


class TorchDecayOncePerApply:
    """Keras's torch backend decays with one factor per apply,
    ``torch._foreach_mul_(decayed, 1 - weight_decay * lr)``, the learning rate read once
    (keras/src/backend/torch/optimizers/torch_optimizer.py:37-45); the spec computes
    x - x * wd * lr with the learning rate read once per decayed variable
    (base_optimizer.py:952-959)."""

    def _apply_weight_decay(self, active, values):
        if self.weight_decay is None:
            return
        decayed = [i for i in active if self._use_weight_decay(i)]
        if not decayed:
            return  # torch raises here (an empty tensor list): an xfail names that
        learning_rate = self.learning_rate
        for i in decayed:
            x = values[i]
            factor = x.dtype.type(1) - x.dtype.type(self.weight_decay) * x.dtype.type(learning_rate)
            values[i] = np.asarray(x * factor)


class TfKerasEma:
    """tf-keras's EMA (tf_keras/src/optimizers/optimizer.py): the average is built as a copy
    of the variable (427-429), so at iteration 0 it is the variable, not the spec's zeros
    (a state loaded at iteration 0 gets its variables as the average); every step, the first
    included, averages with ``ema_momentum`` (1402-1417: ``m * average + (1 - m) * var``,
    1 - m in Python float64), where the spec copies the variable on the first step
    (base_optimizer.py:970-1006); and only the variables with a gradient this step are
    averaged and overwritten (1435-1450 take ``var_list`` from the gradients left after
    filtering out None, 718-725), where the spec averages every variable."""

    def set_state(self, state):
        super().set_state(state)
        if self.use_ema and state.iterations == 0 and state.variables is not None:
            self.state.average = [np.array(x, dtype=a.dtype, copy=True)
                                  for x, a in zip(state.variables, self.state.average)]

    def _step(self, state, grads, variables):
        self._tf_keras_active = [i for i, g in enumerate(grads) if g is not None]
        return super()._step(state, grads, variables)

    def _ema(self, state, values):
        active = self._tf_keras_active
        for i in active:
            dtype = values[i].dtype.type
            momentum, rest = dtype(self.ema_momentum), dtype(1 - self.ema_momentum)
            state.average[i] = np.asarray(momentum * state.average[i] + rest * values[i])
        if self.ema_overwrite_frequency and (self.iterations + 1) % self.ema_overwrite_frequency == 0:
            for i in active:
                values[i] = np.array(state.average[i], copy=True)
            return True
        return False


class TfKerasCallableOnce:
    """tf-keras stores a non-schedule learning rate in a ``tf.Variable``
    (tf_keras/src/optimizers/optimizer.py:399-404); a zero-argument callable is that
    variable's initial value, which ``tf.Variable`` calls once, at construction. Every step
    and every weight decay uses that one value; the spec calls the callable on every read
    (base_optimizer.py:777-786)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        lr = self._learning_rate
        if callable(lr) and not isinstance(lr, schedules.LearningRateSchedule):
            self._tf_keras_value = float(lr())

    @property
    def learning_rate(self):
        if hasattr(self, "_tf_keras_value"):
            return self._tf_keras_value
        return super().learning_rate


BEHAVIOURS = {"jax-stale-accumulators": JaxStaleAccumulators,
              "jax-learning-rate-on-microsteps": JaxLearningRateOnMicrosteps,
              "jax-ema-overwrite-zero": JaxEmaOverwriteZero,
              "torch-decay-once-per-apply": TorchDecayOncePerApply,
              "tf-keras-ema": TfKerasEma,
              "tf-keras-callable-once": TfKerasCallableOnce}


@dataclass(frozen=True)
class Model:
    name: str
    summary: str  # one line: what the framework computes differently
    source: str  # where, in the framework's source
    variants: tuple  # the first is the model proper; the others its open choices


def _mean_variants(prefix: str, primary_reciprocal: bool, float32_minmax: bool) -> tuple:
    """The model proper first (sequential sum, the framework's division), then the other
    sum order and division as the open choices."""
    out = []
    for reciprocal in (primary_reciprocal, not primary_reciprocal):
        for order in ("sequential", "pairwise"):
            division = "reciprocal" if reciprocal else "divide"
            out.append(Variant(f"{prefix}-{order}-{division}", mean=float32_mean(order, reciprocal),
                               float32_minmax=float32_minmax))
    return tuple(out)


SCHEDULE_ULPS = 8
"""How far (float32 ulps) a float32 evaluation of a Keras schedule may land from the float64
value rounded once to float32. Measured on real Keras 3.15.1 with TensorFlow 2.21 over the
corpus's schedules (tests/gate/schedule_ulps_worker.py, checked by tests/gate/test_deviations.py): at
most 6 ulps (ExponentialDecay's float32 pow, and accumulation under it); 8 leaves room for a
libm that rounds a transcendental once more."""

MODELS = {m.name: m for m in (
    Model("keras-float32-means-jax",
          "every ops.mean of a float64 tensor runs in float32 (x cast to float32, float32 sum, "
          "times f32(1/n), cast back); every other op stays float64",
          "keras-team/keras#23223: keras/src/backend/common/dtypes.py:240 maps float64 to float32 "
          "in result_type; keras/src/backend/jax/numpy.py mean: compute_dtype = "
          "result_type(x.dtype, 'float32')",
          _mean_variants("jax", primary_reciprocal=True, float32_minmax=False)),
    Model("keras-float32-means-torch",
          "every ops.mean of a float64 tensor runs in float32 (cast, torch.mean, cast back), and "
          "ops.maximum/ops.minimum round both float64 operands to float32 and return float32",
          "keras-team/keras#23223: keras/src/backend/common/dtypes.py:240; "
          "keras/src/backend/torch/numpy.py mean (165-196), maximum (1252-1264), minimum (1320-1332)",
          _mean_variants("torch", primary_reciprocal=False, float32_minmax=True)),
    Model("keras-tensorflow-float32-scalars",
          "epsilon_2, weight_decay and a callable learning rate's value go through float32 "
          "(tf.cast of a Python float makes a float32 tensor first)",
          "keras/src/optimizers/adafactor.py:146-148 and keras/src/backend/tensorflow/optimizer.py:97 "
          "-> tensorflow/python/ops/math_ops.py:1044",
          # An exact emulation: no open choice, so its budget is the spec's float64 budget.
          (Variant("tf-scalars", float32_scalars=("epsilon_2", "weight_decay", "callable")),)),
    Model("keras-tensorflow-float32-schedules",
          "a schedule computes in float32 (initial_learning_rate becomes a float32 tensor)",
          "keras/src/optimizers/schedules/learning_rate_schedule.py:164-167 (convert_to_tensor of a "
          "Python float is float32 on TensorFlow); reference/schedules.py docstring",
          tuple(Variant(f"tf-schedule{u:+d}ulp", float32_scalars=("schedule",), schedule_ulps=u)
                for u in (0, SCHEDULE_ULPS, -SCHEDULE_ULPS))),
    Model("keras-jax-stale-accumulators",
          "on the update micro-step only the accumulators of variables with a gradient are zeroed",
          "keras/src/backend/jax/optimizer.py:31-38, 75-76 (vs keras/src/optimizers/base_optimizer.py:623-626)",
          (Variant("jax-stale-accumulators", behaviours=("jax-stale-accumulators",)),)),
    Model("keras-jax-learning-rate-on-microsteps",
          "a callable learning rate is called on accumulation micro-steps too (the update is computed, "
          "then discarded)",
          "keras/src/backend/jax/optimizer.py:36-66",
          (Variant("jax-learning-rate-on-microsteps", behaviours=("jax-learning-rate-on-microsteps",)),)),
    Model("keras-jax-ema-overwrite-zero",
          "ema_overwrite_frequency=0 counts as set, and (iterations + 1) % 0 is 0 on XLA:CPU: the "
          "variables are overwritten with their averages on every apply",
          "keras/src/backend/jax/optimizer.py:91-94 (vs keras/src/optimizers/base_optimizer.py:600)",
          (Variant("jax-ema-overwrite-zero", behaviours=("jax-ema-overwrite-zero",)),)),
    Model("keras-torch-decay-once-per-apply",
          "weight decay multiplies by 1 - wd * lr, with the learning rate read once per apply",
          "keras/src/backend/torch/optimizers/torch_optimizer.py:37-45 (vs "
          "keras/src/optimizers/base_optimizer.py:952-959)",
          (Variant("torch-decay-once-per-apply", behaviours=("torch-decay-once-per-apply",)),)),
    # tf-keras 2.x (Keras 2 on TensorFlow), graded on the Keras vectors: conformance/TF_KERAS.md.
    Model("tf-keras-float32-scalars",
          "a float learning rate is kept in a float32 variable (floatx), and epsilon_2, weight_decay "
          "and a callable's value go through float32",
          "tf_keras/src/optimizers/optimizer.py:399-404 (tf.Variable(learning_rate, dtype=floatx())), "
          "adafactor.py:158-159 and optimizer.py:744-745 (tf.cast of a Python float -> "
          "tensorflow/python/ops/math_ops.py:1044)",
          # An exact emulation: no open choice, so its budget is the spec's float64 budget.
          (Variant("tf-keras-scalars", float32_scalars=("constant", "epsilon_2", "weight_decay", "callable")),)),
    Model("tf-keras-ema",
          "the EMA average starts as a copy of the variable and is averaged with ema_momentum from the "
          "first step (no first-step copy); only variables with a gradient are averaged and overwritten",
          "tf_keras/src/optimizers/optimizer.py:427-429, 1402-1417, 1435-1450 (vs "
          "keras/src/optimizers/base_optimizer.py:596-612, 970-1006)",
          (Variant("tf-keras-ema", behaviours=("tf-keras-ema",)),)),
    Model("tf-keras-callable-once",
          "a callable learning rate is called once, when the optimizer is constructed, and that value "
          "is used for every step",
          "tf_keras/src/optimizers/optimizer.py:399-404 (tf.Variable calls a callable initial_value once; "
          "vs keras/src/optimizers/base_optimizer.py:777-786)",
          (Variant("tf-keras-callable-once", behaviours=("tf-keras-callable-once",)),)),
)}


def model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown deviation model {name!r}; known: {', '.join(MODELS)}") from None


# ----------------------------------------------------------------------------- running one
def adapter(names, variant: Optional[str] = None):
    """The reference under one model's variant (the model proper by default), or under
    several models' proper variants at once (``names`` a list), as an adapter that runs the
    Keras vectors in float64: what grading and tolerance derivation replay."""
    from conformance.adapters.base import Adapter
    from conformance.adapters.reference import ReferenceSession, reference_class

    names = [names] if isinstance(names, str) else list(names)
    if variant is not None:
        (name,) = names
        picked = next((v for v in model(name).variants if v.name == variant), None)
        if picked is None:
            raise KeyError(f"model {name!r} has no variant {variant!r}")
    else:
        picked = combine([model(n).variants[0] for n in names])
    name = "+".join(names)

    class ModelSession(ReferenceSession):
        def __init__(self, vector, dtype):
            super().__init__(vector, dtype, cls=picked.optimizer_class(reference_class(dtype)))

        def step(self, grads):
            with picked.patched():
                super().step(grads)

    class ModelAdapter(Adapter):
        def create(self, vector, dtype, device):
            return ModelSession(vector, dtype)

    return ModelAdapter(name=f"model:{name}:{picked.name}", dtypes=("float64",), devices=("cpu",))


def expected_states(names, vector: dict, path, mode: str, start, goldens: list) -> list:
    """The states (``State``, float64) the spec plus the models ``names`` (one name or a
    list) reach on ``vector``. Teacher: one model step from each golden state (the states
    the implementation is loaded with); trajectory: the model's own free run from the
    initial state."""
    from conformance.vector import as_vector

    vector = as_vector(vector, path=path)
    session = adapter(names).create(vector, "float64", "cpu")
    states = []
    session.load(start.cast(np.float64))
    for k, step in enumerate(vector.steps):
        if mode == "teacher":
            session.load((goldens[k - 1] if k else start).cast(np.float64))
        session.step([None if a is None else a.copy() for a in step.grads])
        states.append(session.read().cast(np.float64))
    return states
