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
import functools
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
        # TorchFloat32Ops, when composed (in either order), computes the factor its way.
        factor_of = getattr(self, "_torch_decay_factor", None)
        for i in decayed:
            x = values[i]
            if factor_of is None:
                factor = _torch_decay_factor_3_15(self, learning_rate, x.dtype.type)
            else:
                factor = factor_of(learning_rate, x.dtype.type)
            values[i] = np.asarray(x * factor)


def _torch_decay_factor_3_15(optimizer, learning_rate, dtype):
    """1 - weight_decay * lr in the variable's dtype (Keras 3.15.1's torch backend)."""
    return dtype(1) - dtype(optimizer.weight_decay) * dtype(learning_rate)


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


class TorchFloat32Ops:
    """Keras's torch backend from keras-team/keras#23225 (first in the 3.16 nightlies):
    ``ops.add``, ``subtract``, ``multiply``, ``divide`` and ``power`` convert both operands
    to ``result_type(...)`` before calling torch (``convert_to_tensors_of_same_dtype``,
    keras/src/backend/torch/ops/numpy.py:29-43; add 85-87, subtract 118-125, multiply
    187-189, divide 2206-2208, power 2221-2223), and the lattice maps float64 to float32
    (keras/src/backend/common/dtypes.py:240): on float64 operands each of them rounds both
    to float32 and returns float32. Keras 3.15.1 called torch on the operands as they were
    (keras/src/backend/torch/numpy.py:67-70, 89-97, 159-162, 2129-2134, 2153-2155), so it
    computed in float64. The variable's own ``assign_sub`` is ``variable - value`` through
    ``ops.subtract`` (keras/src/backend/common/variables.py:490-491 in the nightly), so the
    variable is rounded to float32 on every step. ``assign`` widens a float32 result back to
    the float64 slot exactly. What changes, in Keras's order:

    * the Adafactor step (keras/src/optimizers/adafactor.py:144-231 of the nightly, vs
      adafactor.py:143-214 of 3.15.1) from ``G**2 + epsilon_1`` on: the first operation
      that differs is that add (nightly adafactor.py:167-169), then beta_2's power and
      subtractions, r, c and v's updates, R / mean(R) and its product with C, G / sqrt(V),
      RMS(U) / d, U / max(1, .), alpha * U_hat and the variable's subtraction, all float32;
      the operations that stay float64 are ``ops.square``/``ops.sqrt`` of float64 tensors,
      torch's own Python operators (``1 / sqrt(t)``), and the float64 means of 3.15.1
      (``mean`` casts to float32 and back, unchanged);
    * ``clipnorm`` (base_optimizer.py:1129-1146 of the nightly): g * clipnorm in float32,
      divided by the float32 max(norm, clipnorm), so the clipped gradient is float32;
    * the EMA (base_optimizer.py:969-990 of the nightly): momentum, 1 - momentum and both
      products and their sum in float32.

    Unchanged: gradient accumulation and loss-scale unscaling (torch operators on torch
    tensors), clipvalue and global_clipnorm (their float64/float32 mix was already
    3.15.1's), weight decay (the torch backend's ``_foreach_mul_``; composes with
    ``TorchDecayOncePerApply``). The means and ``ops.maximum``/``ops.minimum`` are the
    ``keras-float32-means-torch`` swaps (this model's variants carry them)."""

    def _update(self, state, g: dict, values: list, record):
        from reference.adafactor_step import StepTrace

        active = sorted(g)
        if self.clipnorm and self.clipnorm > 0:
            clipped = [_torch32_clip_by_norm(g[i], self.clipnorm) for i in active]
        else:
            clipped = self._clip_gradients([g[i] for i in active])
        g = dict(zip(active, clipped))
        self._apply_weight_decay(active, values)
        learning_rate = self.learning_rate
        record.learning_rate = float(learning_rate)
        is_callable = not isinstance(self._learning_rate, float)
        r, c, v = state.r, state.c, state.v
        for i in active:
            values[i], (r[i], c[i], v[i]), record.traces[i] = torch32_update_step(
                values[i], g[i], (r[i], c[i], v[i]), learning_rate, self.iterations, self.hyper,
                learning_rate_is_callable=is_callable, trace_class=StepTrace, sqrt32=self._torch32_sqrt)

    @staticmethod
    def _torch32_sqrt(x):
        return sqrt32_nearest(x)

    def _torch_decay_factor(self, learning_rate, dtype):
        """``1 - self.weight_decay * self._get_current_learning_rate()``
        (keras/src/backend/torch/optimizers/torch_optimizer.py:37-45): a float learning rate
        is a float64 Keras variable, so ``weight_decay * lr`` is the variable's ``__rmul__``,
        ``ops.multiply`` (common/variables.py:499-500): float32, and ``1 - `` stays float32;
        a callable's Python float keeps Python's float64 arithmetic; a schedule's tensor is
        multiplied by torch in its own dtype."""
        lr = self._learning_rate
        if isinstance(lr, float) or (isinstance(lr, schedules.LearningRateSchedule)
                                      and np.float32(learning_rate) == learning_rate):
            f32 = np.float32
            return f32(1) - f32(f32(self.weight_decay) * f32(learning_rate))
        return _torch_decay_factor_3_15(self, learning_rate, dtype)

    def _ema(self, state, values: list) -> bool:
        f32 = np.float32
        for i, x in enumerate(values):
            # multiply(cast(iterations != 0, float64), ema_momentum): float32
            momentum = f32(f32(self.iterations != 0) * f32(self.ema_momentum))
            rest = f32(1) - momentum  # subtract(1, momentum)
            average = momentum * state.average[i].astype(f32) + rest * x.astype(f32)
            state.average[i] = np.asarray(average, dtype=np.float32).astype(x.dtype)
        if self.ema_overwrite_frequency:
            if (self.iterations + 1) % self.ema_overwrite_frequency == 0:
                for i in range(len(values)):
                    values[i] = np.array(state.average[i], copy=True)
                return True
        return False


@functools.lru_cache(maxsize=None)
def _libm_powf():
    """The C library's powf, loaded on first use (not at import: ``find_library`` may start
    ``ldconfig``); the usual soname first, which needs no child process."""
    import ctypes
    import ctypes.util

    for name in ("libm.so.6", "libm.dylib", None):
        try:
            library = ctypes.CDLL(name if name is not None else ctypes.util.find_library("m"))
            function = library.powf
            break
        except (OSError, AttributeError, TypeError):
            continue
    else:
        return None
    function.restype, function.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    return function


def powf(base, exponent) -> np.float32:
    """torch.pow of two float32 0-d CPU tensors: the C library's ``powf`` (torch's scalar
    loop calls std::pow(float, float)); checked equal to torch 2.13 for t = 1..3000 and eight
    exponents. NumPy's float32 ``np.power`` is not it (its SIMD loop is 1 float32 ulp off at
    t = 3, 4, 7, ... for -0.8), nor, rarely, is the float64 pow rounded once (t = 1058 for -0.5).
    Without a loadable libm, the float64 pow rounded once."""
    base, exponent = np.float32(base), np.float32(exponent)
    function = _libm_powf()
    if function is None:
        return np.float32(float(base) ** float(exponent))
    return np.float32(function(float(base), float(exponent)))


class TorchSqrt32Down:
    """An open choice of TorchFloat32Ops: torch's float32 sqrt of RMS(U) taken one float32
    ulp below the correctly rounded value (what torch 2.13's CPU kernel does for ~0.7% of
    inputs)."""

    @staticmethod
    def _torch32_sqrt(x):
        return sqrt32_down(x)


def _torch32_clip_by_norm(g: np.ndarray, clipnorm: float) -> np.ndarray:
    """BaseOptimizer._clip_by_norm on the nightly's torch backend: the sum of squares and
    its square root in float64 (ops.sum and ops.sqrt keep the dtype), then
    ``multiply(values, clipnorm)`` and ``maximum(l2norm, clipnorm)`` in float32 and torch's
    float32 division; the clipped gradient is float32."""
    l2sum = reductions.total(np.square(g), keepdims=True)
    l2norm = np.where(l2sum > 0, np.sqrt(np.where(l2sum > 0, l2sum, 1)), l2sum)
    numerator = g.astype(np.float32) * np.float32(clipnorm)
    return numerator / minmax.maximum(l2norm, np.float32(clipnorm)).astype(np.float32)


def sqrt32_nearest(x) -> np.float32:
    """A float32 square root, correctly rounded."""
    return np.float32(np.sqrt(np.float32(x)))


def sqrt32_down(x) -> np.float32:
    """A float32 square root one float32 ulp below the correctly rounded one (toward zero)."""
    root = sqrt32_nearest(x)
    return np.nextafter(root, np.float32(0)) if np.isfinite(root) and root > 0 else root


def torch32_update_step(x, g, moments, learning_rate, iterations, hyper,
                        learning_rate_is_callable=False, trace_class=None, sqrt32=sqrt32_nearest):
    """Adafactor.update_step of the 3.16 nightlies on the torch backend for a float64
    variable (keras/src/optimizers/adafactor.py:144-231 there), op by op: a Keras binary op
    (add, subtract, multiply, divide, power) rounds both operands to float32 and returns
    float32; ``ops.square``/``ops.sqrt`` keep their operand's dtype; ``reductions.mean`` and
    ``minmax`` are the swap points (float32 means cast back to the input's dtype, float32
    min/max). Slots are float64 holding float32 values (``assign`` widens). ``sqrt32`` is
    torch's float32 square root, of RMS(U) only (every other sqrt here is of a float64
    tensor): torch 2.13's CPU kernel is not correctly rounded, it lands 1 float32 ulp below
    for about 0.7% of inputs (never above; measured over 600,000 values), so which inputs is
    an open choice of the model (``sqrt32_nearest``, ``sqrt32_down``)."""
    f32 = np.float32
    dtype = x.dtype.type
    r, c, v = moments
    lr = dtype(learning_rate)  # cast(learning_rate, variable.dtype)
    g = g.astype(x.dtype, copy=False)  # cast(gradient, variable.dtype)
    epsilon_2 = dtype(hyper.epsilon_2)
    one = dtype(1.0)
    local_step = dtype(iterations + 1)
    inv_sqrt_step = one / np.sqrt(local_step)  # torch's 1 / tensor: float64
    if not learning_rate_is_callable and hyper.relative_step:
        lr = minmax.minimum(lr, inv_sqrt_step)
    rho_t = minmax.minimum(lr, inv_sqrt_step)
    rms_x = np.sqrt(reductions.mean(np.square(x)))  # float64 (the mean casts back)
    alpha_t = minmax.maximum(epsilon_2, rms_x) * rho_t  # torch's *: float32 x float32
    # add(square(gradient), epsilon_1): the first operation that differs from 3.15.1
    regulated = np.square(g).astype(f32) + f32(hyper.epsilon_1)
    power = powf(f32(local_step), f32(hyper.beta_2_decay))  # torch.pow of two float32 0-d tensors
    beta_2_t = f32(1) - power
    one_minus = f32(1) - beta_2_t
    if len(x.shape) >= 2:
        row, col = len(x.shape) - 2, len(x.shape) - 1
        r = (beta_2_t * r.astype(f32) + one_minus * reductions.mean(regulated, axis=col)).astype(x.dtype)
        c = (beta_2_t * c.astype(f32) + one_minus * reductions.mean(regulated, axis=row)).astype(x.dtype)
        ratio = r.astype(f32) / np.asarray(reductions.mean(r, axis=row, keepdims=True)).astype(f32)
        v = np.asarray(np.expand_dims(ratio, col) * np.expand_dims(c.astype(f32), row)).astype(x.dtype)
    else:
        v = np.asarray(beta_2_t * v.astype(f32) + one_minus * regulated).astype(x.dtype)
    u_t = g.astype(f32) / np.sqrt(v).astype(f32)  # divide(gradient, sqrt(v))
    rms_u = sqrt32(reductions.mean(np.square(u_t)))  # float32 throughout: torch's float32 sqrt
    denominator = minmax.maximum(one, rms_u / f32(hyper.clip_threshold))
    u_t_hat = u_t / f32(denominator)
    step = f32(alpha_t) * u_t_hat  # multiply(alpha_t, u_t_hat)
    new_x = np.asarray(x.astype(f32) - step).astype(x.dtype)  # assign_sub: ops.subtract
    trace = None
    if trace_class is not None:
        trace = trace_class(local_step=float(local_step), learning_rate=float(dtype(learning_rate)),
                            inv_sqrt_step=float(inv_sqrt_step), rho=float(rho_t), rms_x=float(rms_x),
                            alpha=float(alpha_t), beta_2=float(beta_2_t), rms_u=float(rms_u),
                            clip_denominator=float(denominator))
    return new_x, (r, c, np.asarray(v)), trace


BEHAVIOURS = {"jax-stale-accumulators": JaxStaleAccumulators,
              "jax-learning-rate-on-microsteps": JaxLearningRateOnMicrosteps,
              "jax-ema-overwrite-zero": JaxEmaOverwriteZero,
              "torch-decay-once-per-apply": TorchDecayOncePerApply,
              "tf-keras-ema": TfKerasEma,
              "tf-keras-callable-once": TfKerasCallableOnce,
              "torch-float32-ops": TorchFloat32Ops,
              "torch-float32-sqrt-down": TorchSqrt32Down}


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

_TORCH_MEANS = _mean_variants("torch", primary_reciprocal=False, float32_minmax=True)
"""keras-float32-means-torch's variants; keras-float32-ops-torch reuses their mean functions."""

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
          _TORCH_MEANS),
    Model("keras-float32-ops-torch",
          "keras-float32-means-torch, and every ops.add/subtract/multiply/divide/power of float64 "
          "operands rounds both to float32 and returns float32 (keras-team/keras#23225): Adafactor's step "
          "from G**2 + epsilon_1 on, the variable's assign_sub, clipnorm and the EMA run in float32",
          "keras-team/keras#23225 (issue #23704): keras/src/backend/torch/ops/numpy.py:29-43 "
          "(convert_to_tensors_of_same_dtype), add 85-87, subtract 118-125, multiply 187-189, divide "
          "2206-2208, power 2221-2223 (vs keras 3.15.1 keras/src/backend/torch/numpy.py:67-70, 89-97, "
          "159-162, 2129-2134, 2153-2155); keras/src/backend/common/dtypes.py:240; "
          "keras/src/backend/common/variables.py:490-491",
          # The float32-means model's variants (the same mean functions, so that the two models
          # compose: combine() finds one mean) with the float32 arithmetic: its budget is the
          # spread of torch's unknown float32 sum order under the new arithmetic, and of its
          # float32 sqrt (1 ulp low on some inputs). torch.pow's float32 value is libm's powf
          # (``powf``), not an open choice.
          tuple(dataclasses.replace(v, name=v.name.replace("torch-", "torch32-"), behaviours=("torch-float32-ops",))
                for v in _TORCH_MEANS)
          + (dataclasses.replace(_TORCH_MEANS[0], name="torch32-sequential-divide-sqrt-down",
                                 behaviours=("torch-float32-ops", "torch-float32-sqrt-down")),)),
    Model("keras-float32-schedules-torch",
          "a schedule's arithmetic goes through ops.multiply/divide/power etc.: float32 from "
          "keras-team/keras#23225 (its float64 tensors round to float32), so its value is float32, "
          "within SCHEDULE_ULPS of the float64 value rounded once (PiecewiseConstantDecay and "
          "CosineDecay's warmup stay float64, within half an ulp of it)",
          "keras/src/optimizers/schedules/learning_rate_schedule.py (the nightly's backend.ops.numpy "
          "calls, e.g. ExponentialDecay 174-177) -> keras/src/backend/torch/ops/numpy.py:29-43",
          tuple(Variant(f"torch-schedule{u:+d}ulp", float32_scalars=("schedule",), schedule_ulps=u)
                for u in (0, SCHEDULE_ULPS, -SCHEDULE_ULPS))),
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
