"""Every golden vector, declared in one place.

Each ``Case`` is one vector: a Keras configuration, named variables, how their initial
values and each step's gradients are drawn, and (for invalid vectors) the error Keras
raises. The generator (tools/generate_vectors.py) runs the reference on each case and
records everything. Randomness is seeded per case from its id, so adding or reordering
cases never changes another vector.

Ids are ``<file>/<topic>/<variant>``; the first part names the vector file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conformance.generator.case import KERNEL_BIAS, Case, GradFn, normal  # noqa: F401  (re-exported)
from reference import schedules

# ----------------------------------------------------------------------------- building blocks
# GradFn, normal and Case live in the vector-building core (conformance/generator/case.py),
# which the fuzzer shares; they are re-exported here for the case files.


def bursts(scale: float = 1.0, every: int = 4, factor: float = 30.0) -> GradFn:
    """Normal gradients, 'factor' times larger every 'every' steps: RMS(U) jumps above the
    clip threshold on those steps and falls back after (clipping switches on and off)."""
    def draw(rng, step, shape):
        g = rng.normal(size=shape) * scale
        return np.asarray(g * (factor if step % every == every - 1 else 1.0))
    return draw


def constant(value: float) -> GradFn:
    def draw(rng, step, shape):
        return np.full(shape, value, dtype=np.float64)
    return draw


def signed_uniform(low: float = 0.5, high: float = 2.0) -> GradFn:
    """Gradients of random sign and magnitude uniform in [low, high]: no element is near 0,
    so every g*g and every statistic of them stays in float16's normal range and a large
    variable runs in the half-precision lanes too (normal gradients of 1000+ elements have
    some g*g below 6.1e-5 there, and the lane skips the vector)."""
    def draw(rng, step, shape):
        return np.asarray(rng.choice((-1.0, 1.0), size=shape) * rng.uniform(low, high, size=shape))
    return draw


def with_values(base: GradFn, values: dict) -> GradFn:
    """``base`` gradients with element 0 of variable ``var`` set at ``step``:
    values = {(step, var): value}. The variable index is passed in by the generator."""
    def draw(rng, step, shape, var=None):
        g = np.array(base(rng, step, shape), dtype=np.float64)
        if (step, var) in values:
            g.reshape(-1)[0] = values[(step, var)]
        return g
    draw.needs_var = True
    return draw


class PowerOfTwoCounter:
    """A stateful zero-argument learning rate, 2**-(5 + calls % 3): its value depends on
    how many times the optimizer calls it (Keras calls it once per weight-decayed variable
    and once for the step). Exact in float32, like every callable value here, because
    Keras's TensorFlow backend casts a callable's Python float through float32."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        value = 2.0 ** -(5 + self.calls % 3)
        self.calls += 1
        return value


def constant_callable():
    return lambda: 0.125


# ----------------------------------------------------------------------------- case type
SHAPES = {
    "scalar": (),
    "vector": (7,),
    "square": (3, 3),
    "tall": (5, 3),
    "wide": (3, 5),
    "row": (1, 5),
    "column": (5, 1),
    "3d": (2, 3, 5),
    "4d": (2, 1, 3, 5),
}

ALL_SHAPES = tuple((name, shape) for name, shape in SHAPES.items())


# ----------------------------------------------------------------------------- the cases
CASES: list[Case] = []


def case(*args, **kwargs) -> None:
    CASES.append(Case(*args, **kwargs))


# --- shapes: every shape class under the defaults and under a relative-step-bound lr
for shape_name, shape in SHAPES.items():
    case(f"shapes/defaults/{shape_name}", f"Keras defaults on one variable of shape {shape}",
         variables=(("w", shape),), steps=8)
    case(f"shapes/lr_0.5/{shape_name}", f"learning_rate=0.5 on shape {shape}: 1/sqrt(t) caps the "
         "step from t=5", {"learning_rate": 0.5}, variables=(("w", shape),), steps=8)

# --- each argument alone at non-default values (on a kernel and a bias)
for lr in (0.01, 0.5, 2.0, 1e-5):
    case(f"arguments/learning_rate/{lr:g}", f"learning_rate={lr!r}", {"learning_rate": lr})
for d in (-0.5, -1.0, -0.2):
    case(f"arguments/beta_2_decay/{d:g}", f"beta_2_decay={d!r}", {"learning_rate": 0.1, "beta_2_decay": d})
for e1 in (1e-10, 1e-3):
    case(f"arguments/epsilon_1/{e1:g}", f"epsilon_1={e1!r} with small gradients",
         {"learning_rate": 0.1, "epsilon_1": e1}, grads=normal(0.03))
for e2 in (0.1, 0.0):
    case(f"arguments/epsilon_2/{e2:g}", f"epsilon_2={e2!r} with small variables",
         {"learning_rate": 0.1, "epsilon_2": e2}, init="small")
for d in (0.5, 2.0, 0.1):
    case(f"arguments/clip_threshold/{d:g}", f"clip_threshold={d!r}",
         {"learning_rate": 0.1, "clip_threshold": d}, grads=bursts())
case("arguments/relative_step/false", "relative_step=False: identical to True (Keras quirk)",
     {"learning_rate": 0.5, "relative_step": False})
case("arguments/relative_step/false_schedule", "relative_step=False with a schedule",
     {"learning_rate": schedules.ExponentialDecay(0.5, 4, 0.5), "relative_step": False})
for wd in (0.01, 0.1):
    case(f"arguments/weight_decay/{wd:g}", f"weight_decay={wd!r} (raw lr, before the step)",
         {"learning_rate": 0.5, "weight_decay": wd})
case("arguments/weight_decay/epsilon_2_binds", "weight decay on variables with RMS(x) < epsilon_2: "
     "the one regime where decaying before or after the step differs (alpha_t scales with RMS(x) "
     "otherwise, so the two orders agree)", {"learning_rate": 0.5, "weight_decay": 0.1}, init="tiny")
case("arguments/weight_decay/all_excluded", "weight decay with every variable excluded: nothing decays",
     {"learning_rate": 0.5, "weight_decay": 0.05}, exclude={"var_names": ["kernel", "bias"]}, steps=4)
case("arguments/weight_decay/exclude_by_name", "weight decay, the bias excluded by name (regex search)",
     {"learning_rate": 0.5, "weight_decay": 0.05}, exclude={"var_names": ["bias"]})
case("arguments/weight_decay/exclude_by_variable", "weight decay, the kernel excluded by identity",
     {"learning_rate": 0.5, "weight_decay": 0.05}, exclude={"var_index": [0]})
for cn in (0.5, 100.0, 0.0):
    case(f"arguments/clipnorm/{cn:g}", f"clipnorm={cn!r}" + (" (0 disables it)" if cn == 0 else ""),
         {"learning_rate": 0.1, "clipnorm": cn}, grads=normal(2.0))
for key in ("clipnorm", "global_clipnorm", "clipvalue"):
    # base_optimizer.py:870-881 tests `if self.clipnorm and self.clipnorm > 0`: a negative value is accepted
    # at construction and silently disables the clipping, as 0 does
    case(f"arguments/{key}/-0.5", f"{key}=-0.5: accepted, and disables clipping (only a value > 0 clips)",
         {"learning_rate": 0.1, key: -0.5}, grads=normal(2.0), steps=3)
case("arguments/clipnorm/0.25_norms_below_1", "clipnorm=0.25 with gradient norms between 0.1 and 0.6: the norm "
     "is the square root of a sum of squares below 1 (a port that takes the sum itself, or 1, differs)",
     {"learning_rate": 0.1, "clipnorm": 0.25}, grads=normal(0.1), steps=4)
for cv in (0.1, 0.0):
    case(f"arguments/clipvalue/{cv:g}", f"clipvalue={cv!r}" + (" (0 disables it)" if cv == 0 else ""),
         {"learning_rate": 0.1, "clipvalue": cv})
for gn in (1.0, 49.0, 0.0):
    note = {49.0: " (never clips; scale 49*(1/49) = 1 - 2**-53 moves gradients by an ulp)",
            0.0: " (0 disables it)"}.get(gn, "")
    case(f"arguments/global_clipnorm/{gn:g}", f"global_clipnorm={gn!r}{note}",
         {"learning_rate": 0.1, "global_clipnorm": gn})
for m in (0.99, 0.5):
    case(f"arguments/use_ema/momentum_{m:g}", f"use_ema=True, ema_momentum={m!r}: the first EMA step copies",
         {"learning_rate": 0.1, "use_ema": True, "ema_momentum": m})
for m, what in ((1.0, "the average keeps the first copy"), (0.0, "the average is the variable")):
    # the closed range [0, 1] of base_optimizer.py:111-116: both ends are valid
    case(f"arguments/use_ema/momentum_{m:g}", f"use_ema=True, ema_momentum={m!r} (an end of the valid range "
         f"[0, 1]): {what}", {"learning_rate": 0.1, "use_ema": True, "ema_momentum": m}, steps=3)
for f in (0, 1, 3):
    case(f"arguments/ema_overwrite_frequency/{f}", f"use_ema with ema_overwrite_frequency={f}",
         {"learning_rate": 0.1, "use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": f})
for s in (128.0, 0.5):
    case(f"arguments/loss_scale_factor/{s:g}", f"loss_scale_factor={s!r}, gradients of the scaled loss",
         {"learning_rate": 0.1, "loss_scale_factor": s}, grads=normal(s))
for n in (2, 3):
    case(f"arguments/gradient_accumulation_steps/{n}", f"gradient_accumulation_steps={n}: updates on "
         f"micro-steps {n}, {2 * n}, ...", {"learning_rate": 0.5, "gradient_accumulation_steps": n}, steps=12)
case("arguments/gradient_accumulation_steps/0", "gradient_accumulation_steps=0 disables accumulation",
     {"learning_rate": 0.5, "gradient_accumulation_steps": 0})
case("arguments/name/custom", "name='my_adafactor' changes nothing numerically", {"name": "my_adafactor"})

# --- learning-rate schedules and callables
SCHEDULES = {
    "exponential": schedules.ExponentialDecay(0.5, decay_steps=3, decay_rate=0.5),
    "exponential_staircase": schedules.ExponentialDecay(0.3, decay_steps=4, decay_rate=0.7, staircase=True),
    "piecewise_constant": schedules.PiecewiseConstantDecay([3, 7], [0.5, 0.1, 0.01]),
    "polynomial": schedules.PolynomialDecay(0.5, 8, end_learning_rate=0.01, power=2.0),
    "polynomial_cycle": schedules.PolynomialDecay(0.5, 5, end_learning_rate=0.01, power=1.5, cycle=True),
    "inverse_time": schedules.InverseTimeDecay(0.4, decay_steps=2, decay_rate=0.5),
    "inverse_time_staircase": schedules.InverseTimeDecay(0.4, decay_steps=3, decay_rate=1.0, staircase=True),
    "cosine": schedules.CosineDecay(0.5, decay_steps=8, alpha=0.1),
    "cosine_warmup": schedules.CosineDecay(0.1, decay_steps=8, alpha=0.1, warmup_target=0.5, warmup_steps=3),
    "cosine_restarts": schedules.CosineDecayRestarts(0.5, first_decay_steps=3, t_mul=2.0, m_mul=0.5, alpha=0.05),
}
for sched_name, sched in SCHEDULES.items():
    case(f"schedules/{sched_name}", f"learning_rate={type(sched).__name__} ({sched_name})",
         {"learning_rate": sched}, steps=12)
case("schedules/callable_counter", "a stateful callable learning rate with weight decay on both "
     "variables: it is called three times per step", {"weight_decay": 0.125},
     make_learning_rate=PowerOfTwoCounter, steps=8)
case("schedules/callable_weight_decay_zero", "a callable learning rate with weight_decay=0.0: the decay "
     "still runs (Keras tests `is None`) and calls the callable once per variable, decaying by nothing "
     "(found by the differential fuzzer on keras-torch)", {"weight_decay": 0.0},
     make_learning_rate=PowerOfTwoCounter, steps=4)
case("schedules/callable_constant", "a constant zero-argument callable learning rate",
     make_learning_rate=constant_callable, steps=6)

# --- realistic combinations
case("combinations/schedule_wd_global_clip_ema", "cosine warmup schedule, weight decay, global "
     "clipnorm and EMA with overwrite",
     {"learning_rate": SCHEDULES["cosine_warmup"], "weight_decay": 0.01, "global_clipnorm": 2.0,
      "use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 4}, steps=12)
case("combinations/accumulation_ema_overwrite_wd", "accumulation N=3 with EMA overwrite every 2 "
     "(fires on three consecutive micro-steps) and weight decay",
     {"learning_rate": 0.5, "gradient_accumulation_steps": 3, "use_ema": True, "ema_momentum": 0.5,
      "ema_overwrite_frequency": 2, "weight_decay": 0.02}, steps=12)
case("combinations/accumulation_schedule", "accumulation N=2 with a schedule: the schedule sees "
     "micro-steps, Adafactor's t counts updates",
     {"learning_rate": SCHEDULES["exponential"], "gradient_accumulation_steps": 2}, steps=12)
case("combinations/accumulation_callable_learning_rate", "accumulation N=2 with a stateful callable "
     "learning rate and weight decay: the callable is called only on update micro-steps",
     {"gradient_accumulation_steps": 2, "weight_decay": 0.125}, make_learning_rate=PowerOfTwoCounter, steps=8)
case("combinations/loss_scale_clipnorm_accumulation", "loss scale 1024, clipnorm and accumulation",
     {"learning_rate": 0.2, "loss_scale_factor": 1024.0, "clipnorm": 1.0,
      "gradient_accumulation_steps": 2}, grads=normal(1024.0 * 3), steps=10)
case("combinations/none_gradients", "some gradients None: those variables neither decay nor "
     "update, their state is unchanged, the EMA still moves them",
     {"learning_rate": 0.2, "weight_decay": 0.05, "use_ema": True},
     none_at=frozenset({(1, 0), (2, 1), (5, 0)}), steps=8)
case("combinations/accumulation_none_gradients", "accumulation with a None gradient on an update "
     "micro-step: every accumulator is reset anyway",
     {"learning_rate": 0.2, "gradient_accumulation_steps": 2}, none_at=frozenset({(1, 1), (2, 0)}), steps=8)

# --- several variables in one optimizer
case("multi_variable/all_shapes", "one variable of every shape class in one optimizer",
     {"learning_rate": 0.3}, variables=ALL_SHAPES, steps=6)
case("multi_variable/global_clipnorm", "global clipnorm across every shape class",
     {"learning_rate": 0.3, "global_clipnorm": 3.0}, variables=ALL_SHAPES, steps=6)
case("multi_variable/weight_decay_exclusion", "weight decay with two names excluded",
     {"learning_rate": 0.3, "weight_decay": 0.05}, variables=ALL_SHAPES,
     exclude={"var_names": ["scalar", "col"]}, steps=6)

# --- shapes that split evenly over 2 and 4 devices, for sharded ports (conformance/adapters/
# sharded.py shards the last two axes over a 2x2 mesh): r reduces across the column shards,
# c across the row shards, RMS(u) and RMS(x) across all of them
SHARDED = (("kernel", (8, 16)), ("bias", (16,)))
case("sharding/defaults", "Keras defaults on an 8x16 kernel and a 16 bias", variables=SHARDED, steps=8)
case("sharding/clipping", "clip_threshold=0.5 with gradient bursts: RMS(u) clips across shards",
     {"learning_rate": 0.1, "clip_threshold": 0.5}, variables=SHARDED, grads=bursts(), steps=8)
case("sharding/3d", "learning_rate=0.5 on a 4x6x8 variable (rows and columns split)",
     {"learning_rate": 0.5}, variables=(("w", (4, 6, 8)),), steps=8)
case("sharding/weight_decay_ema", "weight decay, EMA with overwrite every 3 steps",
     {"learning_rate": 0.2, "weight_decay": 0.05, "use_ema": True, "ema_momentum": 0.9,
      "ema_overwrite_frequency": 3}, variables=SHARDED, steps=8)
case("sharding/accumulation_global_clipnorm", "accumulation N=2 and global_clipnorm across shards",
     {"learning_rate": 0.3, "gradient_accumulation_steps": 2, "global_clipnorm": 2.0},
     variables=SHARDED, grads=normal(2.0), steps=8)

# --- reductions well past 256 elements: a half-precision sum that does not accumulate in
# float32 (as every framework does, reference/reductions.py) stalls once the partial sum is
# 256 times a term (bfloat16) or 2048 times (float16); two steps each, to keep the corpus small
# (gradients away from 0, signed_uniform, so that the float16 lanes run them too)
case("long_reductions/last_axis_1024", "a (2, 1024) kernel: r is a mean over 1024 columns, RMS(x) and "
     "RMS(U) over 2048 elements", {"learning_rate": 0.1}, variables=(("kernel", (2, 1024)),),
     grads=signed_uniform(), steps=2)
case("long_reductions/rows_3d_clipnorm", "a (1, 640, 2) variable under clipnorm: c and the mean of r are over "
     "640 rows, the gradient norm and the RMSs over 1280 elements", {"learning_rate": 0.1, "clipnorm": 4.0},
     variables=(("w3d", (1, 640, 2)),), grads=signed_uniform(), steps=2)

# --- long runs across regime changes
case("long_runs/relative_step_crossing", "lr=0.3 for 40 steps: 1/sqrt(t) falls below lr at t=12",
     {"learning_rate": 0.3}, steps=40)
case("long_runs/clipping_on_and_off", "gradient bursts every 4th step switch update clipping on and off",
     {"learning_rate": 0.05}, grads=bursts(every=4, factor=30.0), steps=40)
case("long_runs/ema_accumulation", "accumulation N=4, EMA, schedule, 40 micro-steps",
     {"learning_rate": SCHEDULES["cosine_restarts"], "gradient_accumulation_steps": 4, "use_ema": True,
      "ema_momentum": 0.8}, steps=40)

# --- special values
case("special_values/zero_gradients", "all-zero gradients: v = epsilon_1, u = 0",
     grads=constant(0.0), steps=4)
case("special_values/zero_variables", "zero variables: RMS(x) = 0 < epsilon_2 decides the step size",
     {"learning_rate": 0.5}, init="zeros", steps=6)
case("special_values/ones_variables_constant_gradient", "ones and a constant gradient",
     {"learning_rate": 0.5}, init="ones", grads=constant(0.25), steps=6)
case("special_values/tiny_gradients", "gradients of 1e-20: epsilon_1 = 1e-30 is comparable to g*g",
     grads=normal(1e-15), steps=6)
case("special_values/tiny_gradients_default_eps1_dominates", "gradients of 1e-17: g*g < epsilon_1",
     grads=normal(1e-17), steps=4)
case("special_values/huge_gradients", "gradients of 1e160: g*g overflows to inf",
     grads=normal(1e160), steps=4)
case("special_values/nan_gradient", "a NaN in one gradient element at step 3",
     grads=with_values(normal(), {(2, 0): float("nan")}), steps=5)
case("special_values/inf_gradient", "+inf and -inf gradient elements",
     grads=with_values(normal(), {(1, 1): float("inf"), (3, 0): float("-inf")}), steps=5)
case("special_values/nan_gradient_clipnorm", "a NaN gradient under clipnorm",
     {"clipnorm": 1.0}, grads=with_values(normal(), {(2, 1): float("nan")}), steps=4)
case("special_values/inf_gradient_global_clipnorm", "an inf gradient under global_clipnorm: every "
     "gradient becomes NaN", {"global_clipnorm": 1.0},
     grads=with_values(normal(), {(1, 0): float("inf")}), steps=3)
case("special_values/negative_zero_gradients", "gradients of -0.0",
     grads=constant(-0.0), steps=3)
case("special_values/subnormal_gradients", "subnormal gradients (flushed to zero on some accelerators)",
     grads=normal(1e-310), steps=3)
# Gradients of ~1e-170 are normal float64 numbers whose squares underflow to 0: the norm is 0.
# Keras keeps a zero sum of squares as the norm itself (the "two-tap where",
# keras/src/optimizers/base_optimizer.py:1110-1114; on TensorFlow tf.clip_by_norm,
# tensorflow/python/ops/clip_ops.py:227-237, called from keras/src/backend/tensorflow/
# optimizer.py:224-227), so g * clipnorm / max(0, clipnorm) leaves g as it is; a port that
# treats a zero norm as 1 (or takes sqrt of the safe value) divides by max(1, clipnorm) and,
# with clipnorm < 1, shrinks g. global_clipnorm: 1/0 = inf, clipnorm * min(inf, 1/clipnorm)
# (base_optimizer.py:1190-1197). Zero variables, so the step (epsilon_2 * rho * g/sqrt(eps1),
# about 1e-158) is the whole variable and visible; epsilon_2 = 2**-10 is exact in float32, which
# Keras on TensorFlow casts it through (SPEC.md section 7). Lanes below float64 cannot hold these
# gradients (they underflow to 0 there) and skip the vectors (conformance/applicability.py, skip_reason).
for clip_key in ("clipnorm", "global_clipnorm"):
    case(f"special_values/{clip_key}_squares_underflow", f"{clip_key}=0.25 with gradients of ~1e-170: g*g "
         "underflows to 0 in float64, so the norm is 0 and nothing is clipped",
         {"learning_rate": 0.1, "epsilon_2": 2.0**-10, clip_key: 0.25}, init="zeros", grads=normal(1e-170),
         steps=4)

# --- the implementation's own defaults: these configs leave arguments out (given_only), so a
# replay does not pass them and a port with a wrong default fails (every other vector passes all
# 16). Inputs make each default bind: learning_rate 0.001 < 1/sqrt(t) sets rho; bursts switch
# update clipping (clip_threshold 1.0) on; variables below 1e-3 make epsilon_2 (1e-3) the step-size
# floor (from zero variables the steps of 1e-6 would be subnormal in float16); gradients of 1e-15 make epsilon_1 (1e-30) and an (absent) loss scale visible; EMA
# momentum 0.99 and no overwrite; beta_2_decay -0.8 from step 2. weight_decay, clipnorm,
# clipvalue, global_clipnorm, gradient_accumulation_steps default to off: a port that turns
# one on changes the result. relative_step (True) is a no-op in Keras (SPEC Q1) and name is
# not numeric: no vector can see their defaults.
case("defaults/empty", "Adafactor() with every default: lr 0.001 caps the step, bursts of large gradients "
     "make update clipping bind", {}, grads=bursts(every=3), steps=8, given_only=True)
case("defaults/empty_small_variables", "Adafactor() on variables of 1e-4 to 9e-4: epsilon_2 = 1e-3 sets the "
     "step size on every step", {}, init="below_epsilon_2", steps=6, given_only=True)
case("defaults/empty_tiny_gradients", "Adafactor() with gradients of 1e-15: g*g is comparable to "
     "epsilon_1 = 1e-30", {}, grads=normal(1e-15), steps=6, given_only=True)
case("defaults/use_ema_only", "Adafactor(use_ema=True): ema_momentum 0.99, no overwrite",
     {"use_ema": True}, steps=6, given_only=True)
case("defaults/learning_rate_only", "Adafactor(learning_rate=0.5) on every shape class: 1/sqrt(t) caps the "
     "step from t=5, the other arguments at their defaults", {"learning_rate": 0.5}, variables=ALL_SHAPES,
     steps=5, given_only=True)
case("defaults/accumulation_only", "Adafactor(gradient_accumulation_steps=2): accumulation with every "
     "other argument at its default", {"gradient_accumulation_steps": 2}, steps=6, given_only=True)

# --- invalid configurations
INVALID = {
    "clipnorm_and_clipvalue": ({"clipnorm": 1.0, "clipvalue": 1.0}, "ValueError", "Only one of"),
    "clipnorm_and_global_clipnorm": ({"clipnorm": 1.0, "global_clipnorm": 1.0}, "ValueError", "Only one of"),
    "clipvalue_and_global_clipnorm": ({"clipvalue": 1.0, "global_clipnorm": 1.0}, "ValueError", "Only one of"),
    "gradient_accumulation_steps_1": ({"gradient_accumulation_steps": 1}, "ValueError",
                                      "gradient_accumulation_steps"),
    "learning_rate_int": ({"learning_rate": 1}, "ValueError", "learning_rate"),
    "learning_rate_string": ({"learning_rate": "0.01"}, "ValueError", "learning_rate"),
    "ema_momentum_above_1": ({"use_ema": True, "ema_momentum": 1.5}, "ValueError", "ema_momentum"),
    "ema_momentum_negative": ({"use_ema": True, "ema_momentum": -0.1}, "ValueError", "ema_momentum"),
    "ema_overwrite_frequency_float": ({"use_ema": True, "ema_overwrite_frequency": 2.5}, "ValueError",
                                      "ema_overwrite_frequency"),
    "ema_overwrite_frequency_negative": ({"use_ema": True, "ema_overwrite_frequency": -1}, "ValueError",
                                         "ema_overwrite_frequency"),
    "unknown_argument": ({"beta_1": 0.9}, "ValueError", "not recognized"),
}
for name, (config, cls, text) in INVALID.items():
    case(f"invalid/{name}", f"rejected at construction: {config}", config, steps=0,
         error={"class": cls, "message_contains": text, "at": "construction"})
case("invalid/all_gradients_none", "every gradient None at step 2 is an error",
     none_at=frozenset({(1, 0), (1, 1)}), steps=2,
     error={"class": "ValueError", "message_contains": "No gradients provided", "at": "step", "step": 1})

# --- regressions promoted from fuzzing (python -m tools.promote; tools/regressions/*.json)
REGRESSIONS = Path(__file__).resolve().parent / "regressions"


def regression_case(path) -> Case:
    """The Case of a promoted fuzz example (format: conformance/fuzz/differential.py)."""
    from conformance import vectorfile as vf
    from conformance.replay import RecordedCallable

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    config = dict(data["config"])
    make_learning_rate = None
    lr = config.get("learning_rate")
    if isinstance(lr, dict) and lr.get("callable") == "recorded":
        values = [vf.bits_to_float(b) for b in lr["calls"]]
        make_learning_rate = lambda: RecordedCallable(values, data["id"])  # noqa: E731
        del config["learning_rate"]
    elif isinstance(lr, dict):
        config["learning_rate"] = schedules.deserialize(lr)
    initial = [vf.decode_array(a, path) for a in data["initial"]]
    grads = [[vf.decode_optional(g, path) for g in row] for row in data["grads"]]
    return Case(
        id=data["id"],
        description=f"{data.get('description', 'fuzz example')}; found by `{data['found_by']}` "
                    f"({data.get('hypothesis', '')})",
        config=config,
        variables=tuple((v["name"], tuple(v["shape"])) for v in data["variables"]),
        steps=len(grads),
        inputs=(initial, grads),
        exclude=data.get("exclude_from_weight_decay"),
        flags=("REGRESSION",),
        make_learning_rate=make_learning_rate,
    )


for _path in sorted(REGRESSIONS.glob("*.json")):
    CASES.append(regression_case(_path))
