"""Float64 reference implementations of Keras 3's learning-rate schedules.

This module re-implements the six built-in schedules of
``keras.optimizers.schedules`` (Keras 3.15.1) with plain Python floats, so
that every intermediate value is an IEEE-754 double and every transcendental
function is the C library's scalar routine reached through :mod:`math`.

All Keras line numbers below refer to
``keras/src/optimizers/schedules/learning_rate_schedule.py`` in keras 3.15.1
unless another file is named.

How the optimizer uses a schedule
---------------------------------
``BaseOptimizer._get_current_learning_rate``
(``keras/src/optimizers/base_optimizer.py:777-781``) calls the schedule with
the raw iteration counter ``self._iterations`` (an integer variable created at
``base_optimizer.py:154-166``; int64 on TensorFlow).  The counter is only
incremented *after* the update has been applied (``base_optimizer.py:533``),
so the very first update sees ``step == 0``.  Gradient accumulation does not
change the value passed to the schedule: the schedule always gets the raw
counter, not ``iterations // gradient_accumulation_steps``.

Precision of the real thing
---------------------------
Keras starts every computation with
``ops.convert_to_tensor(self.initial_learning_rate)`` and then casts all the
other hyper-parameters *and the step* to that tensor's dtype.  With the
TensorFlow backend a Python float becomes a ``float32`` tensor
(``keras/src/backend/tensorflow/core.py:140-154`` hands it to
``tf.convert_to_tensor`` without a dtype), and that stays true even after
``keras.config.set_floatx("float64")``.  So in ordinary use Keras evaluates
schedules in float32.  When ``initial_learning_rate`` is given as a float64
value (for example ``np.float64(0.01)``) the computation runs in float64,
and when every other float argument is float64 as well (next paragraph) the
functions here follow Keras operation for operation and give the same
doubles (checked bit for bit by tests/reference/test_schedules.py).

Quirk: wrapping only ``initial_learning_rate`` in float64 is not enough.
The other float hyper-parameters reach the computation through
``ops.cast(python_float, dtype)``, which on TensorFlow is ``tf.cast`` of a
Python float, i.e. ``tf.convert_to_tensor`` (float32) followed by the cast
(``keras/src/backend/tensorflow/core.py:210-218``).  So ``decay_rate``,
``end_learning_rate``, ``power``, ``warmup_target``, ``t_mul``, ``m_mul`` and
CosineDecayRestarts's ``alpha`` are rounded to float32 unless they too are
float64 values (``np.float64``).  CosineDecay's ``alpha`` is the exception:
it is used as a raw Python number (line 702).  This module does not round
anything to float32; it matches Keras when every float argument is float64.

Domain errors
-------------
Python's :mod:`math` raises where the C/IEEE functions used by TensorFlow
return ``inf`` or ``nan`` (``math.log(0.0)``, ``math.pow(-1.0, 0.5)``,
``1.0 / 0.0``, ``math.floor(nan)`` ...).  The small ``_ieee_*`` helpers below
restore the IEEE results so that, for example, ``CosineDecayRestarts`` with
``t_mul < 1`` produces ``nan`` past the end of its finite horizon exactly as
Keras does, instead of raising.
"""

import math
import numbers
import operator

__all__ = [
    "LearningRateSchedule",
    "ExponentialDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "InverseTimeDecay",
    "CosineDecay",
    "CosineDecayRestarts",
    "ALL_SCHEDULES",
    "serialize",
    "deserialize",
]

# The public Keras module under which every built-in schedule is exported
# (``@keras_export("keras.optimizers.schedules.<Name>")``); it is what
# ``keras.optimizers.schedules.serialize`` puts in the "module" field.
KERAS_MODULE = "keras.optimizers.schedules"


# ---------------------------------------------------------------------------
# IEEE-754 scalar helpers (math.* raises where C/TensorFlow return inf/nan)
# ---------------------------------------------------------------------------


def _ieee_div(a, b):
    """``a / b`` with IEEE semantics for a zero divisor."""
    if b != 0.0:
        return a / b
    if a == 0.0 or math.isnan(a) or math.isnan(b):
        return math.nan
    # Sign of the infinity follows the signs of both operands (b may be -0.0).
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _is_odd_integer(y):
    return math.isfinite(y) and y == math.floor(y) and math.fmod(y, 2.0) != 0.0


def _ieee_pow(x, y):
    """C ``pow(x, y)``: nan for a negative base with a non-integer exponent,
    +-inf for a zero base with a negative exponent and for overflow."""
    try:
        return math.pow(x, y)
    except ValueError:
        if x == 0.0 and y < 0.0:
            if _is_odd_integer(y):
                return math.copysign(math.inf, x)
            return math.inf
        return math.nan
    except OverflowError:
        if x < 0.0 and _is_odd_integer(y):
            return -math.inf
        return math.inf


def _ieee_log(x):
    """C ``log(x)``: -inf at zero, nan for negative arguments."""
    if math.isnan(x):
        return math.nan
    if x == 0.0:
        return -math.inf
    if x < 0.0:
        return math.nan
    return math.log(x)


def _ieee_cos(x):
    """C ``cos(x)``: nan for infinite arguments."""
    if math.isinf(x):
        return math.nan
    return math.cos(x)


def _ieee_floor(x):
    """``floor`` that returns a float and passes inf/nan through."""
    if not math.isfinite(x):
        return x
    return float(math.floor(x))


def _ieee_ceil(x):
    """``ceil`` that returns a float and passes inf/nan through."""
    if not math.isfinite(x):
        return x
    return float(math.ceil(x))


def _step_as_float(step):
    """The optimizer step as a double (Keras: ``ops.cast(step, dtype)``)."""
    if isinstance(step, bool):
        raise TypeError(f"`step` must be an integer, not a bool. Received: step={step!r}")
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(
            f"`step` must be an integer (the optimizer iteration counter). "
            f"Received: step={step!r} of type {type(step).__name__}"
        ) from None
    if step < 0:
        raise ValueError(
            f"`step` must be >= 0 (the optimizer iteration counter starts at 0). "
            f"Received: step={step}"
        )
    return step, float(step)


# ---------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------


class LearningRateSchedule:
    """Base class of the reference schedules.

    Mirrors ``keras.optimizers.schedules.LearningRateSchedule``
    (lines 10-76): subclasses implement ``__call__`` and ``get_config``;
    ``from_config`` feeds the config back to the constructor as keyword
    arguments (lines 66-76).
    """

    def __call__(self, step):
        raise NotImplementedError(
            f"Learning rate schedule '{type(self).__name__}' must implement "
            "`__call__(self, step)`."
        )

    def get_config(self):
        raise NotImplementedError(
            f"Learning rate schedule '{type(self).__name__}' must implement "
            "`get_config()` to be serializable."
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_positive(arg_name, value):
    # Same comparison, exception class and message as Keras (e.g. lines
    # 156-160).  A non-numeric value makes the comparison itself raise
    # TypeError, exactly as it does in Keras.
    if value <= 0:
        raise ValueError(
            f"Argument `{arg_name}` must be > 0. Received: {arg_name}={value}"
        )


# ---------------------------------------------------------------------------
# ExponentialDecay
# ---------------------------------------------------------------------------


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``.

    With ``staircase=True`` the exponent is floored, so the rate only drops
    every ``decay_steps`` steps.
    """

    # Constructor and validation: lines 141-160.
    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        decay_rate,
        staircase=False,
        name="ExponentialDecay",
    ):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name
        _check_positive("decay_steps", self.decay_steps)

    def __call__(self, step):
        # Mirrors learning_rate_schedule.py:162-175 (keras 3.15.1).
        _, global_step = _step_as_float(step)
        initial_learning_rate = float(self.initial_learning_rate)
        decay_steps = float(self.decay_steps)
        decay_rate = float(self.decay_rate)

        exponent = global_step / decay_steps
        if self.staircase:
            exponent = _ieee_floor(exponent)
        return initial_learning_rate * _ieee_pow(decay_rate, exponent)

    # get_config: lines 177-184.
    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


# ---------------------------------------------------------------------------
# PiecewiseConstantDecay
# ---------------------------------------------------------------------------


def _boundary_as_step_int(boundary):
    """A boundary converted the way Keras converts it (lines 258-266).

    Keras turns each boundary into a tensor and, because its dtype differs
    from the integer step's, casts it to the step's integer dtype.  Casting a
    float to an integer truncates toward zero, so a boundary of 10.7 behaves
    like 10 and -0.5 like 0.  (Keras first rounds a Python-float boundary to
    float32; that only matters above 2**24 and is not reproduced.)
    """
    if isinstance(boundary, numbers.Integral):
        return int(boundary)
    return math.trunc(float(boundary))


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after
    ``boundaries[-1]``.
    """

    # Constructor and validation: lines 241-254.  The length check happens
    # before any attribute is stored; only the lengths are validated (Keras
    # does not check that boundaries increase).
    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1:
            raise ValueError(
                "The length of boundaries should be 1 less than the length of "
                f"values. Received: boundaries={boundaries} of length "
                f"{len(boundaries)}, and values={values} of length {len(values)}."
            )
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step):
        # Mirrors learning_rate_schedule.py:256-294 (keras 3.15.1).
        #
        # Keras does not look the interval up; it adds up
        #   indicator(interval contains step) * value
        # over all intervals, starting from 0, in this order: the first
        # interval (step <= b[0]), the last one (step > b[-1]), then the
        # middle ones left to right.  Quirks reproduced by doing the same:
        #  * with non-increasing boundaries several indicators can be 1 and
        #    their values are summed (or none is, giving 0.0);
        #  * an inf/nan value poisons the result even when its interval is
        #    not selected, because 0 * inf = nan;
        #  * float boundaries are truncated to integers (see
        #    _boundary_as_step_int);
        #  * empty `boundaries` passes the constructor check (with one value)
        #    but indexing boundaries[0] fails at call time with IndexError.
        # Keras computes in values[0]'s dtype (float32 for Python floats; an
        # integer dtype if values[0] is an int, and TensorFlow then refuses a
        # float in a later position).  This reference always returns a float.
        step, _ = _step_as_float(step)
        boundaries = [_boundary_as_step_int(b) for b in self.boundaries]
        values = [float(v) for v in self.values]

        result = 0.0
        result += (1.0 if step <= boundaries[0] else 0.0) * values[0]
        result += (1.0 if step > boundaries[-1] else 0.0) * values[-1]
        for low, high, value in zip(boundaries[:-1], boundaries[1:], values[1:-1]):
            result += (1.0 if (low < step and step <= high) else 0.0) * value
        return result

    # get_config: lines 296-301.
    def get_config(self):
        return {
            "boundaries": self.boundaries,
            "values": self.values,
            "name": self.name,
        }


# ---------------------------------------------------------------------------
# PolynomialDecay
# ---------------------------------------------------------------------------


class PolynomialDecay(LearningRateSchedule):
    """``(init - end) * (1 - step / decay_steps) ** power + end``, with the step
    clipped at ``decay_steps`` or, when ``cycle=True``, with ``decay_steps``
    stretched to the next multiple that is >= step.
    """

    # Constructor and validation: lines 387-409.
    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        end_learning_rate=0.0001,
        power=1.0,
        cycle=False,
        name="PolynomialDecay",
    ):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.cycle = cycle
        self.name = name
        _check_positive("decay_steps", self.decay_steps)

    def __call__(self, step):
        # Mirrors learning_rate_schedule.py:411-447 (keras 3.15.1).
        _, global_step = _step_as_float(step)
        initial_learning_rate = float(self.initial_learning_rate)
        end_learning_rate = float(self.end_learning_rate)
        power = float(self.power)
        decay_steps = float(self.decay_steps)

        if self.cycle:
            # Quirk (lines 425-429): at step 0 the multiplier is forced to
            # 1.0, because ceil(0 / decay_steps) = 0 would make the divisor
            # below zero.  The ceil divides by the *uncast* Python
            # self.decay_steps (line 428), which is only equivalent to the
            # cast value when decay_steps is exactly representable.
            # Consequence of using ceil: at an exact multiple k*decay_steps
            # (k >= 1) the rate reaches end_learning_rate, and one step later
            # it jumps back up (the "cycle" restarts from a longer period,
            # (k+1)*decay_steps, not from initial_learning_rate).
            if global_step == 0.0:
                multiplier = 1.0
            else:
                multiplier = _ieee_ceil(global_step / float(self.decay_steps))
            decay_steps = decay_steps * multiplier
        else:
            # Lines 434-438: clip the step so the rate stays at the end value.
            global_step = min(global_step, decay_steps)

        fraction = global_step / decay_steps
        return (initial_learning_rate - end_learning_rate) * _ieee_pow(
            1.0 - fraction, power
        ) + end_learning_rate

    # get_config: lines 449-457.
    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
            "name": self.name,
        }


# ---------------------------------------------------------------------------
# InverseTimeDecay
# ---------------------------------------------------------------------------


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)``,
    with the quotient floored when ``staircase=True``."""

    # Constructor and validation: lines 523-543.
    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        decay_rate,
        staircase=False,
        name="InverseTimeDecay",
    ):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name
        _check_positive("decay_steps", self.decay_steps)

    def __call__(self, step):
        # Mirrors learning_rate_schedule.py:545-560 (keras 3.15.1).
        # Note the grouping: Keras forms p = step / decay_steps first and
        # then decay_rate * p, not (decay_rate * step) / decay_steps as the
        # docstring formula reads; the two can differ in the last bit.
        _, global_step = _step_as_float(step)
        initial_learning_rate = float(self.initial_learning_rate)
        decay_steps = float(self.decay_steps)
        decay_rate = float(self.decay_rate)

        p = global_step / decay_steps
        if self.staircase:
            p = _ieee_floor(p)
        denominator = 1.0 + decay_rate * p
        return _ieee_div(initial_learning_rate, denominator)

    # get_config: lines 562-569.
    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


# ---------------------------------------------------------------------------
# CosineDecay
# ---------------------------------------------------------------------------


class CosineDecay(LearningRateSchedule):
    """Optional linear warmup followed by a half-cosine decay to
    ``alpha`` times the starting rate."""

    # Constructor and validation: lines 671-693.  Note the argument order:
    # `name` comes before `warmup_target` and `warmup_steps`.  Only
    # decay_steps is validated; warmup_steps is not checked at all.
    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        alpha=0.0,
        name="CosineDecay",
        warmup_target=None,
        warmup_steps=0,
    ):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.alpha = alpha
        self.name = name
        self.warmup_steps = warmup_steps
        self.warmup_target = warmup_target
        _check_positive("decay_steps", self.decay_steps)

    def _decay(self, step, decay_steps, decay_from_lr):
        # Mirrors lines 695-703.  `alpha` enters as the raw Python number
        # (1 - self.alpha is formed in Python double precision, line 702).
        alpha = float(self.alpha)
        completed_fraction = step / decay_steps
        cosine_decayed = 0.5 * (1.0 + _ieee_cos(math.pi * completed_fraction))
        decayed = (1.0 - alpha) * cosine_decayed + alpha
        return decay_from_lr * decayed

    @staticmethod
    def _warmup(step, warmup_steps, warmup_target, initial_learning_rate):
        # Mirrors lines 705-711.  The code adds initial_learning_rate back;
        # the class docstring's warmup formula (lines 602-605) omits it.
        completed_fraction = step / warmup_steps
        total_step_delta = warmup_target - initial_learning_rate
        return total_step_delta * completed_fraction + initial_learning_rate

    def __call__(self, step):
        # Mirrors learning_rate_schedule.py:713-754 (keras 3.15.1).
        _, global_step = _step_as_float(step)
        initial_learning_rate = float(self.initial_learning_rate)
        decay_steps = float(self.decay_steps)

        if self.warmup_target is None:
            # Lines 722-731: no warmup at all; warmup_steps is ignored even
            # if it was given.
            global_step = min(global_step, decay_steps)
            return self._decay(global_step, decay_steps, initial_learning_rate)

        warmup_target = float(self.warmup_target)
        warmup_steps = float(self.warmup_steps)
        # Line 736-738: the clip is at decay_steps + warmup_steps.
        global_step = min(global_step, decay_steps + warmup_steps)

        # Warmup branch (lines 740-754).  Quirks: the test is a strict
        # `step < warmup_steps`, so step == warmup_steps is already the first
        # decay step (rate == warmup_target) and the warmup never actually
        # outputs warmup_target itself.  With warmup_target set and
        # warmup_steps == 0 (the default) the warmup branch is never taken
        # and initial_learning_rate does not influence the result at all:
        # the decay starts from warmup_target.
        if global_step < warmup_steps:
            return self._warmup(
                global_step, warmup_steps, warmup_target, initial_learning_rate
            )
        return self._decay(global_step - warmup_steps, decay_steps, warmup_target)

    # get_config: lines 756-764.
    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "name": self.name,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }


# ---------------------------------------------------------------------------
# CosineDecayRestarts
# ---------------------------------------------------------------------------


class CosineDecayRestarts(LearningRateSchedule):
    """SGDR: cosine decay over periods of length
    ``first_decay_steps * t_mul**i`` with peak ``m_mul**i`` times the initial
    rate in period ``i``."""

    # Constructor and validation: lines 821-843.  t_mul and m_mul are kept
    # in the private attributes _t_mul/_m_mul (lines 834-835) and exposed
    # under their argument names by get_config.
    def __init__(
        self,
        initial_learning_rate,
        first_decay_steps,
        t_mul=2.0,
        m_mul=1.0,
        alpha=0.0,
        name="SGDRDecay",
    ):
        self.initial_learning_rate = initial_learning_rate
        self.first_decay_steps = first_decay_steps
        self._t_mul = t_mul
        self._m_mul = m_mul
        self.alpha = alpha
        self.name = name
        _check_positive("first_decay_steps", self.first_decay_steps)

    def __call__(self, step):
        # Mirrors learning_rate_schedule.py:845-908 (keras 3.15.1).
        _, global_step = _step_as_float(step)
        initial_learning_rate = float(self.initial_learning_rate)
        first_decay_steps = float(self.first_decay_steps)
        alpha = float(self.alpha)
        t_mul = float(self._t_mul)
        m_mul = float(self._m_mul)

        completed_fraction = global_step / first_decay_steps

        # Lines 887-891: the branch is chosen by comparing the *cast* t_mul
        # with 1.0 (in float32 Keras a t_mul within half an ulp of 1 takes
        # the t_mul == 1 branch; in float64 it does not).
        if t_mul == 1.0:
            # Lines 881-883: equal-length periods.
            i_restart = _ieee_floor(completed_fraction)
            completed_fraction = completed_fraction - i_restart
        else:
            # Lines 861-879.  Quirk: the period index is recovered in closed
            # form, i = floor(log(1 - f * (1 - t_mul)) / log(t_mul)), instead
            # of by counting periods.  At an exact restart the log ratio is
            # mathematically an integer, and rounding in log or in the
            # division can land just below it: floor then picks the previous
            # period, whose completed fraction is ~1.0, so the rate is
            # ~alpha (the end of the previous period) instead of the restart
            # peak.  Which restarts are affected depends on the precision
            # (float32 Keras and this float64 code disagree on some).
            # Examples, all exact restarts: t_mul=3, first_decay_steps=1,
            # step 121 and t_mul=1.25, first_decay_steps=16, step 61 stay at
            # the end of the previous period in float64 (Keras included) but
            # restart in float32; t_mul=1.1, first_decay_steps=10, step 21
            # restarts in float64 but not in float32.  For
            # t_mul < 1 the periods sum to a finite horizon of
            # first_decay_steps / (1 - t_mul) steps; at or beyond it the log
            # argument is <= 0 and the result is nan (kept via _ieee_log).
            i_restart = _ieee_floor(
                _ieee_div(
                    _ieee_log(1.0 - completed_fraction * (1.0 - t_mul)),
                    _ieee_log(t_mul),
                )
            )
            sum_r = _ieee_div(1.0 - _ieee_pow(t_mul, i_restart), 1.0 - t_mul)
            completed_fraction = _ieee_div(
                completed_fraction - sum_r, _ieee_pow(t_mul, i_restart)
            )

        # Lines 893-908.  Grouping follows Python's left-to-right evaluation
        # of `0.5 * m_fac * (1.0 + cos(...))`.
        m_fac = _ieee_pow(m_mul, i_restart)
        cosine_decayed = 0.5 * m_fac * (1.0 + _ieee_cos(math.pi * completed_fraction))
        decayed = (1.0 - alpha) * cosine_decayed + alpha
        return initial_learning_rate * decayed

    # get_config: lines 910-918.
    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self._t_mul,
            "m_mul": self._m_mul,
            "alpha": self.alpha,
            "name": self.name,
        }


ALL_SCHEDULES = {
    cls.__name__: cls
    for cls in (
        ExponentialDecay,
        PiecewiseConstantDecay,
        PolynomialDecay,
        InverseTimeDecay,
        CosineDecay,
        CosineDecayRestarts,
    )
}


# ---------------------------------------------------------------------------
# Serialization
# ---------------------------------------------------------------------------


def _serialize_value(value):
    """Config values as ``serialize_keras_object`` leaves them.

    See ``keras/src/saving/serialization_lib.py:157-230``: None, str, int,
    float and bool pass through; lists stay lists and tuples stay tuples
    (element-wise); dicts are handled key by key; a NumPy scalar becomes the
    equivalent Python scalar (``.item()``) and a NumPy array of rank >= 1
    becomes ``{"class_name": "__numpy__", "config": {"value", "dtype"}}``.
    """
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_serialize_value(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {k: _serialize_value(v) for k, v in value.items()}
    if type(value).__module__ == "numpy":
        if getattr(value, "ndim", 0) > 0:
            return {
                "class_name": "__numpy__",
                "config": {"value": value.tolist(), "dtype": str(value.dtype)},
            }
        return value.item()
    raise TypeError(
        f"Cannot serialize config value {value!r} of type {type(value).__name__}."
    )


def serialize(schedule):
    """Keras's serialized form of a schedule.

    Same dict as ``keras.optimizers.schedules.serialize`` (lines 921-940, via
    ``serialization_lib.serialize_with_public_class``,
    ``serialization_lib.py:328-360``) for the six built-in classes:
    ``{"module": "keras.optimizers.schedules", "class_name": <name>,
    "config": <get_config()>, "registered_name": None}``.
    """
    if schedule is None:
        return None  # as serialize_keras_object does
    cls = type(schedule)
    if ALL_SCHEDULES.get(cls.__name__) is not cls:
        raise TypeError(
            "serialize() only knows the built-in schedules "
            f"{sorted(ALL_SCHEDULES)}. Received an instance of {cls.__name__}."
        )
    return {
        "module": KERAS_MODULE,
        "class_name": cls.__name__,
        "config": _serialize_value(schedule.get_config()),
        "registered_name": None,
    }


def deserialize(config):
    """Rebuild a schedule from the dict produced by :func:`serialize` (or by
    ``keras.optimizers.schedules.serialize``).

    Like Keras (lines 943-978) only ``class_name`` selects the class; the
    "module" and "registered_name" fields are not consulted, a missing or
    None "config" is treated as ``{}``, and the inner config is passed to
    ``from_config`` unchanged.  Unlike Keras, which returns the bare
    class-name string when it does not know the class, an unknown
    ``class_name`` raises ValueError.
    """
    if not isinstance(config, dict):
        raise TypeError(
            "deserialize() expects a dict with 'class_name' and 'config'. "
            f"Received: {config!r} of type {type(config).__name__}"
        )
    if "class_name" not in config:
        raise ValueError(f"Unknown `config` as a `dict`, config={config}")
    class_name = config["class_name"]
    cls = ALL_SCHEDULES.get(class_name)
    if cls is None:
        raise ValueError(
            f"Unknown learning rate schedule class_name={class_name!r}. "
            f"Known schedules: {sorted(ALL_SCHEDULES)}"
        )
    inner = config.get("config")
    if inner is None:
        inner = {}
    if not isinstance(inner, dict):
        raise TypeError(
            f"Expected 'config' to be a dict for {class_name}, "
            f"got {type(inner).__name__}: {inner!r}"
        )
    return cls.from_config(inner)
