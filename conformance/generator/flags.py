"""What every flag of the corpus means (each vector file's ``notes`` quotes these), and the
flags a gradient's special values give a vector."""

from __future__ import annotations

import numpy as np

#: Margins below this can flip with float64 rounding differences (flag KNIFE_EDGE).
KNIFE_EDGE = 2.0**-40

NOTES = {
    "SCALAR": "has a 0-D variable (unfactored)",
    "VECTOR": "has a 1-D variable (unfactored)",
    "FACTORED": "has a variable with >= 2 axes (factored over its last two axes)",
    "SIZE_ONE_AXIS": "has a factored variable with a size-1 axis among its last two: Keras still factors it",
    "BATCH_AXES": "has a variable with >= 3 axes: the leading axes are batch axes of the factored statistics",
    "MULTI_VARIABLE": "the optimizer holds several variables",
    "LONG_REDUCTION": "a reduction spans >= 8 elements: NumPy's pairwise summation differs from a sequential "
                      "sum there, so a correct port may differ in the last bits",
    "LONG_RUN": ">= 30 steps",
    "RELATIVE_STEP_BINDS": "at some step 1/sqrt(t) < learning_rate, so the relative step sets rho",
    "EPSILON_2_BINDS": "at some step RMS(x) <= epsilon_2, so epsilon_2 sets the step size",
    "EPSILON_1_SIGNIFICANT": "some g*g < 2**20 * epsilon_1: epsilon_1 changes the result visibly; in float16 "
                             "epsilon_1 (1e-30) rounds to 0, so float16 lanes may differ",
    "CLIPPING_ACTIVE": "at some step RMS(U) > clip_threshold, so the update is clipped",
    "KNIFE_EDGE": "some min/max/clip input pair is within 2**-40 (relative) of switching without being "
                  "exactly tied: a port may take the other arm; min, max and the clip are continuous, so "
                  "values differ only by rounding",
    "NONE_GRADIENT": "some gradient is None (Keras skips that variable)",
    "WEIGHT_DECAY": "weight_decay is not None: the decay runs (reading the learning rate), even at 0.0",
    "WEIGHT_DECAY_EXCLUSION": "exclude_from_weight_decay is used",
    "WEIGHT_DECAY_NOTHING_TO_DECAY": "weight_decay is set (not None) but at some update step every variable "
                                     "with a gradient is excluded from it: nothing decays",
    "CLIPNORM": "clipnorm is set",
    "CLIPVALUE": "clipvalue is set",
    "GLOBAL_CLIPNORM": "global_clipnorm is set",
    "EMA": "use_ema is on",
    "EMA_OVERWRITE": "ema_overwrite_frequency is set",
    "EMA_OVERWRITE_FREQUENCY_ZERO": "use_ema with ema_overwrite_frequency=0, which Keras's truthiness test "
                                    "treats as off (base_optimizer.py:600)",
    "LOSS_SCALE": "loss_scale_factor is set",
    "ACCUMULATION": "gradient_accumulation_steps is set",
    "SCHEDULE": "the learning rate is a Keras schedule (Keras on TensorFlow computes it in float32)",
    "CALLABLE_LEARNING_RATE": "the learning rate is a zero-argument callable, recorded per call",
    "NONFINITE_GRADIENT": "a gradient holds NaN or +-inf (result acceptable: a port that guards them may differ)",
    "SQUARE_OVERFLOW": "a finite gradient whose square overflows to inf (result acceptable)",
    "SUBNORMAL_GRADIENT": "gradients are subnormal; accelerators that flush them differ (result acceptable)",
    "NONFINITE_STATE": "the expected state holds NaN or inf",
    "INVALID_CONFIGURATION": "the configuration must be rejected at construction",
    "INVALID_STEP": "a step must be rejected",
    "REGRESSION": "promoted from a failing fuzz example (tools/promote.py); the description says what found it",
    "DEFAULT_ARGUMENTS": "the config lists only the arguments given: an argument it leaves out is not passed to "
                         "the constructor, so the implementation's own default is used and graded",
    "SQUARE_UNDERFLOW": "a nonzero finite gradient whose square underflows to 0 in float64 (a zero norm for "
                        "clipnorm/global_clipnorm); lanes that cannot hold the gradient skip the vector",
}

#: Flags only dialect vectors carry.
DIALECT_NOTES = {
    "UNFACTORED_MATRIX": "a variable with two or more axes that this dialect does not factor (optax: the "
                         "second-largest axis is below min_dim_size_to_factor)",
    "MOMENTUM": "the dialect keeps a first moment (optax momentum, transformers beta1): graded as `momentum`",
}

#: Special gradient values: a vector with any is ``acceptable``, never ``valid``.
SPECIAL_GRADIENT_FLAGS = frozenset({"NONFINITE_GRADIENT", "SQUARE_OVERFLOW", "SUBNORMAL_GRADIENT"})


def special_value_flags(g: np.ndarray) -> set:
    """NONFINITE_GRADIENT (a NaN or infinity), SQUARE_OVERFLOW (finite but g*g is not),
    SUBNORMAL_GRADIENT (a nonzero value below float64's smallest normal)."""
    flags = set()
    if not np.all(np.isfinite(g)):
        flags.add("NONFINITE_GRADIENT")
    with np.errstate(over="ignore"):
        if np.any(np.isfinite(g) & ~np.isfinite(g * g)):
            flags.add("SQUARE_OVERFLOW")
    finite = g[np.isfinite(g)]
    if np.any((finite != 0) & (np.abs(finite) < np.finfo(np.float64).tiny)):
        flags.add("SUBNORMAL_GRADIENT")
    return flags

