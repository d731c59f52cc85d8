"""``optax.adafactor`` (optax 0.2.8) as a dialect: the Keras stages with optax's differences.

Source read: ``optax/_src/alias.py:224-326`` (``adafactor``), ``optax/_src/factorized.py``
(``scale_by_factored_rms``), ``optax/transforms/_clipping.py:48-75`` (``clip_by_block_rms``),
``optax/_src/transform.py`` (``scale`` 495, ``scale_by_param_block_rms`` 539,
``scale_by_learning_rate`` 982), ``optax/_src/numerics.py:86-103`` (``safe_root_mean_squares``),
``optax/transforms/_accumulation.py:89-133`` (``ema``), ``optax/tree_utils/_tree_math.py:394``
(``tree_update_moment``), ``optax/transforms/_adding.py:35-80`` (``add_decayed_weights``),
``optax/_src/update.py:40-43`` (``apply_updates``).

``optax.adafactor`` is a chain (alias.py:303-326); one step on one parameter p with
gradient g, 1-based step t = count + 1 (count = iterations, int32):

    beta  = f32(1) - f32(t - decay_offset) ** f32(-decay_rate)   float32 always (factorized.py:28-32)
    q     = g*g + eps                                            (factorized.py:180, 199)
    factored (two largest axes d1 < d0 by size, size[d1] >= min_dim_size_to_factor, :35-57):
        v_row = beta*v_row + (1-beta)*mean(q, d0)   v_col = beta*v_col + (1-beta)*mean(q, d1)
        u     = g * (v_row / mean(v_row, d1))**-0.5 * v_col**-0.5      (:181-197; pow, no V)
    else:  v = beta*v + (1-beta)*q ;  u = g * v**-0.5                   (:199-202)
    u = u / max(1, RMS(u)/clipping_threshold)       if clipping_threshold is not None (_clipping.py:66-70)
    u = lr * u                                      if learning_rate is not None (transform.py:1003-1005)
    u = u * (1e-3 if RMS(p) <= 1e-3 else RMS(p))    if multiply_by_parameter_scale (numerics.py:101-103)
    u = (1-m)*u + m*mom ; mom = u.astype(dtype_momentum)   if momentum is not None (_accumulation.py:122-128)
        (JAX weak types: 1-m in u's dtype, m*mom in dtype_momentum, then the sum promotes)
    u = u + weight_decay_rate * p                   if weight_decay_rate (not 0), p not masked (_adding.py:68-76)
    p = (p + (-1 * u)).astype(p.dtype)              (alias.py:325, update.py:42)

Slot names (base.py convention): ``r`` = v_row (lacks the largest axis d0, the *column*
axis here), ``c`` = v_col (lacks d1, the *row* axis); ``v`` only for unfactored variables;
``momentum`` (in ``dtype_momentum``) when momentum is set.

Out of scope: learning-rate and weight-decay schedules (callables), a ``weight_decay_mask``
pytree or callable (use ``DialectOptimizer.build(..., decays=...)``), complex parameters,
``decay_rate``/``eps`` given as arrays (``inject_hyperparams``) and ``MultiSteps``: each is an
entry of ``UNSUPPORTED`` (reference/dialects/gaps.py) with its source lines and measured effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from reference import adafactor_step as spec
from reference import reductions
from reference.adafactor_step import Hyperparameters
from reference.dialects.base import DialectOptimizer, Stages, statistic_zeros
from reference.dialects.gaps import Gap
from reference.dialects.keras import keras_stages
from reference.state import Kind

#: optax's ``scale_by_param_block_rms`` floor (transform.py:540, min_scale=1e-3), fixed.
MIN_SCALE = 1e-3

_MOMENTUM_DTYPES = ("float32", "float64", "bfloat16", "float16")


def momentum_dtype(name: str) -> np.dtype:
    """NumPy dtype of a ``dtype_momentum`` name (optax takes a jnp dtype; our config a string)."""
    if name not in _MOMENTUM_DTYPES:
        raise TypeError(f"optax dialect: dtype_momentum={name!r} is not one of {_MOMENTUM_DTYPES}")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _c_pow(a: float, b: float) -> float:
    """C ``pow(a, b)`` for doubles (math.pow raises where C returns inf or NaN)."""
    try:
        return math.pow(a, b)
    except ValueError:  # 0 ** negative: +inf (C99 F.9.4.4); negative ** non-integer: NaN
        return math.inf if a == 0 else math.nan
    except OverflowError:
        return math.inf


_C_POW = np.frompyfunc(_c_pow, 2, 1)


def xla_pow(x, y):
    """x ** y as XLA on CPU computes it: the C library's double ``pow`` (LLVM lowers XLA's
    ``power`` to it), then rounded to x's dtype (float32 ``power`` is computed in double).
    Measured on jax/jaxlib 0.10.2 CPU: 0 mismatches in 10^5 float64 and 3000 float32
    values; NumPy's own ``np.power`` (SIMD) differs from it in ~5% of float64 values, so it
    is not used. Elementwise in Python: meant for the small arrays of the vectors."""
    x = np.asarray(x)
    out = np.asarray(_C_POW(x.astype(np.float64), float(y)), dtype=np.float64).astype(x.dtype)
    return out if out.ndim else out[()]


@dataclass(frozen=True)
class OptaxArguments:
    """What the optax stages read of ``optax.adafactor``'s arguments (alias.py:224-237)."""

    decay_rate: float = 0.8
    eps: float = 1e-30
    clipping_threshold: Optional[float] = 1.0
    weight_decay_rate: Optional[float] = None
    factored: bool = True
    min_dim_size_to_factor: int = 128
    decay_offset: int = 0
    multiply_by_parameter_scale: bool = True
    momentum: Optional[float] = None
    dtype_momentum: str = "float32"

    def keras_hyperparameters(self) -> Hyperparameters:
        """The Keras stages optax shares take optax's values: eps1 = eps, the RMS floor
        MIN_SCALE, the clip threshold."""
        return Hyperparameters(beta_2_decay=-self.decay_rate, epsilon_1=self.eps, epsilon_2=MIN_SCALE,
                               clip_threshold=self.clipping_threshold, relative_step=False)


# ------------------------------------------------------------------ layout
def factored_axes(p: OptaxArguments, shape):
    """(d1, d0): the second-largest and largest axes by ``np.argsort`` (ties: the lower
    index sorts first), only if ``factored``, ndim >= 2 and size[d1] >=
    min_dim_size_to_factor (factorized.py:52-57). d0 is reduced into v_row (= r), so
    it is the column axis; d1 is the row axis."""
    if not p.factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < p.min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def initial_moments(p: OptaxArguments, stages: Stages, x: np.ndarray) -> dict:
    """Zeros in the parameter dtype (factorized.py:143-159): r (no axis d0) and c (no
    axis d1) for factored variables, v otherwise; plus the momentum in
    ``dtype_momentum`` (_accumulation.py:118-121, float32 by default)."""
    moments = statistic_zeros(stages, x)
    if p.momentum is not None:
        moments[Kind.MOMENTUM] = np.zeros(x.shape, dtype=momentum_dtype(p.dtype_momentum))
    return moments


# ------------------------------------------------------------------ second moment
def beta_2(p: OptaxArguments, dtype, t: int):
    """beta = 1.0 - t'**(-decay_rate), t' = float32(t - decay_offset), all in float32
    even for float64 parameters; ``1.0 - beta`` is a float32 subtraction too (the
    Python 1.0 is weak-typed) (factorized.py:28-32, 170, 181). t' <= 0 (decay_offset
    beyond the step) gives inf/NaN, as optax does."""
    f32 = np.float32
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = f32(1.0) - xla_pow(f32(t - p.decay_offset), f32(-p.decay_rate))
    return beta, f32(1.0) - beta


def second_moment(stages: Stages, dtype, q: np.ndarray, moments: dict, beta, axes) -> dict:
    """The EMA of v_row/v_col (or of q), as Keras's, but optax keeps no full V for a
    factored variable (factorized.py:181-188, 200-201)."""
    # .astype(dtype) after the EMA (factorized.py:186-188, 201): with a float32 beta a
    # float16 or bfloat16 state would otherwise be promoted to float32.
    if axes is None:
        v = moments[Kind.V]
        return {**moments, Kind.V: np.asarray(stages.moment_update(dtype, v, q, beta)).astype(v.dtype, copy=False)}
    row, col = axes
    r, c = moments[Kind.R], moments[Kind.C]
    r = np.asarray(stages.moment_update(dtype, r, stages.axis_mean(dtype, q, col), beta)).astype(r.dtype, copy=False)
    c = np.asarray(stages.moment_update(dtype, c, stages.axis_mean(dtype, q, row), beta)).astype(c.dtype, copy=False)
    return {**{k: a for k, a in moments.items() if k is not Kind.V}, Kind.R: r, Kind.C: c}


def precondition(stages: Stages, dtype, g: np.ndarray, moments: dict, axes) -> np.ndarray:
    """u = g * (r / mean(r over d1))**-0.5 * c**-0.5, multiplied left to right, with
    ``pow`` (factorized.py:189-197); unfactored u = g * v**-0.5 (factorized.py:202).
    ``xla_pow`` is the pow XLA runs (not 1/sqrt, not NumPy's)."""
    half = dtype(-0.5)
    if axes is None:
        return g * xla_pow(moments[Kind.V], half)
    row, col = axes
    r, c = moments[Kind.R], moments[Kind.C]
    row_in_r = row if row < col else row - 1  # factorized.py:189 reduced_d1
    row_factor = xla_pow(r / reductions.mean(r, axis=row_in_r, keepdims=True), half)
    col_factor = xla_pow(c, half)
    return g * np.expand_dims(row_factor, col) * np.expand_dims(col_factor, row)


# ------------------------------------------------------------------ update
def clip(p: OptaxArguments, dtype, u: np.ndarray):
    """den = max(1, RMS(u)/threshold) (_clipping.py:66-70), Keras's clip; threshold None: no
    clipping at all (alias.py:310-311), den = 1 (u / 1 is u, NaNs stay where they are)."""
    if p.clipping_threshold is None:
        return u, dtype(1.0)
    return u, spec.clip_denominator(spec.rms(u), p.clipping_threshold, dtype)


def relative_step(dtype, t: int, lr):
    """No relative step: the learning rate is a plain multiplier (alias.py:312-313;
    ``learning_rate=None`` is no scaling at all, i.e. 1)."""
    return dtype(lr)


def parameter_scale(p: OptaxArguments, dtype, x: np.ndarray):
    """safe_rms(p) = 1e-3 if RMS(p) <= 1e-3 else RMS(p) (numerics.py:101-103; NaN RMS
    stays NaN); 1 when multiply_by_parameter_scale=False (alias.py:314-315)."""
    if not p.multiply_by_parameter_scale:
        return dtype(1.0)
    value = spec.rms(x)
    floor = dtype(MIN_SCALE)
    return floor if value <= floor else value


def weight_decay(dtype, x: np.ndarray, lr, decays: bool) -> np.ndarray:
    """No decay before the step: optax adds weight_decay_rate * p to the update
    (``add_decayed_weights``, in ``apply``)."""
    return x


def scaled_update(stages: Stages, dtype, u, den, lr, x_scale):
    """((u / den) * lr) * scale, in optax's order: clip, then ``scale(lr)``
    (transform.py:506-507; lr is weak-typed, so in the parameter dtype), then
    ``scale_by_param_block_rms`` (transform.py:561-565). lr is the raw learning rate (1
    for learning_rate=None, which optax does not multiply at all; 1*u is u), so there is
    no relative step; ``parameter_scale`` is 1 when optax does not scale (1*u is u)."""
    return ((u / den) * dtype(lr)) * stages.parameter_scale(dtype, x_scale)


def momentum_ema(p: OptaxArguments, u, moments: dict):
    """new = (1 - m) * u + m * mom (``optax.tree.update_moment``, _tree_math.py:394-403,
    called by ``ema`` at _accumulation.py:122-124; ``transform.ema`` is that function,
    transform.py:1859, chained by alias.py:316-319 with debias=False). The step goes on
    with ``new`` uncast; the state keeps ``new.astype(dtype_momentum)`` (_accumulation.py:128).

    m is a Python float, so JAX types both products weakly
    (https://docs.jax.dev/en/latest/type_promotion.html, "Weakly-typed values in JAX": a
    Python scalar takes the dtype of the array it meets, the table's ``f*`` row/column; jax
    0.10.2 jax/_src/dtypes.py:761, ``f_: [..., bf16, f16, ...]`` in the promotion lattice):
    ``1 - m`` is rounded to u's dtype and multiplied in it, ``m`` is rounded to the momentum
    dtype and ``m * mom`` is computed in the momentum dtype, e.g. in bfloat16 (m = 0.9 is
    0.8984375 there). Only the sum promotes (float32 + bfloat16 -> float32, float16 +
    bfloat16 -> float32, lattice lines 763-764). NumPy with ml_dtypes would promote
    ``python float * bfloat16`` to float32 instead, so the scalars are cast explicitly."""
    m = p.momentum
    if m is None:
        return u, moments
    mom = moments[Kind.MOMENTUM]
    u = np.asarray(u)
    new = u.dtype.type(1 - m) * u + mom.dtype.type(m) * mom
    return new, {**moments, Kind.MOMENTUM: np.asarray(new).astype(momentum_dtype(p.dtype_momentum))}


def add_decayed_weights(p: OptaxArguments, dtype, u, x, decays: bool):
    """u + weight_decay_rate * p on unmasked variables (_adding.py:72-76; not scaled by
    lr or the parameter scale); skipped entirely for a rate of 0 (_adding.py:68-69)."""
    wd = p.weight_decay_rate
    if wd is None or wd == 0.0 or not decays:
        return u
    return u + dtype(wd) * x


def apply(p: OptaxArguments, stages: Stages, dtype, x, x_scale, u, den, alpha, lr, moments: dict, decays: bool):
    """optax's tail after the preconditioner: clip, lr, parameter scale, momentum, weight
    decay, ``scale(-1)`` (alias.py:325) and ``apply_updates``: (p + u).astype(p.dtype)
    (update.py:42). ``alpha`` is not used: optax multiplies lr and the scale into u one
    at a time. x is x_scale here (no decay before the step)."""
    u = scaled_update(stages, dtype, u, den, lr, x_scale)
    u, moments = momentum_ema(p, u, moments)
    u = add_decayed_weights(p, dtype, u, x_scale, decays)
    return np.asarray(x + (-1 * u)).astype(x.dtype), moments


def stage_functions(p: OptaxArguments) -> dict:
    """stage name -> optax's function for it, bound to ``p``."""
    return dict(
        factored_axes=partial(factored_axes, p),
        initial_moments=partial(initial_moments, p),
        beta_2=partial(beta_2, p),
        second_moment=second_moment,
        precondition=precondition,
        clip=partial(clip, p),
        relative_step=relative_step,
        parameter_scale=partial(parameter_scale, p),
        weight_decay=weight_decay,
        apply=partial(apply, p),
        scale_after_decay=False,  # RMS(p) of the parameters passed to update, before the update
    )


def optax_stages(p: OptaxArguments) -> Stages:
    """``optax.adafactor``: the Keras stages (with optax's eps, floor and threshold) with
    every optax difference (``DIFFERENCES``) swapped in."""
    return keras_stages(p.keras_hyperparameters(), p.weight_decay_rate).replace(**stage_functions(p))


#: difference name -> (the stages implementing it, explanation). Keras's stages with every
#: entry's stages replaced are ``optax_stages`` (tests/reference/test_dialect_optax.py). Keras's ``apply`` has no place for a momentum or for a
#: weight decay added to the update, and it multiplies lr and the scale into u together
#: (alpha), so optax's whole update tail, its missing relative step included, is one entry.
DIFFERENCES = {
    "factoring": (("factored_axes",),
                  "factors the two largest axes, only if the second-largest >= min_dim_size_to_factor "
                  "(128): small matrices keep a full v (factorized.py:52-57)"),
    "beta_2_float32": (("beta_2",),
                       "beta_2 = 1 - t**-decay_rate in float32 even for float64 params, t shifted by "
                       "decay_offset (factorized.py:28-32, 170)"),
    "pow_preconditioner": (("second_moment", "precondition"),
                           "u = g*(r/mean r)**-0.5 * c**-0.5 (pow, no V) instead of g/sqrt(V) "
                           "(factorized.py:189-197, 202)"),
    "optional_clipping": (("clip",), "clipping_threshold=None disables clipping (alias.py:310-311)"),
    "parameter_scale": (("parameter_scale",),
                        "safe_rms floor 1e-3 (numerics.py:101-103), off with multiply_by_parameter_scale="
                        "False (alias.py:314-315)"),
    "update_tail": (("relative_step", "apply", "initial_moments", "weight_decay", "scale_after_decay"),
                    "no relative step: (clip(u)*lr)*RMS(p) of the pre-update p (lr None: 1), momentum EMA in dtype_momentum, "
                    "+ weight_decay_rate*p not lr-scaled and no decay before the step "
                    "(alias.py:310-325, _adding.py:72-76)"),
}


class OptaxAdafactor(DialectOptimizer):
    """``optax.adafactor`` with its own arguments and defaults (alias.py:224-237).

    ``learning_rate``: a float or None (None: no lr scaling, the step is
    RMS-scale * clipped u); schedules are out of scope. ``dtype_momentum`` is a dtype name.
    ``weight_decay_mask``: only None; exclude variables with ``build(..., decays=...)``."""

    dialect = "optax"
    framework = "optax.adafactor"
    spec = "optax 0.2.8, optax/_src/alias.py:224-326, optax/_src/factorized.py"

    def __init__(self, learning_rate: Optional[float] = None, min_dim_size_to_factor: int = 128,
                 decay_rate: float = 0.8, decay_offset: int = 0, multiply_by_parameter_scale: bool = True,
                 clipping_threshold: Optional[float] = 1.0, momentum: Optional[float] = None,
                 dtype_momentum: str = "float32", weight_decay_rate: Optional[float] = None,
                 eps: float = 1e-30, factored: bool = True, weight_decay_mask=None):
        super().__init__()
        if learning_rate is not None and (isinstance(learning_rate, bool)
                                          or not isinstance(learning_rate, (int, float))):
            raise ValueError(f"OptaxAdafactor: learning_rate must be a float or None, got {learning_rate!r} "
                             "(schedules are out of scope for the optax dialect: reference/dialects/optax.py "
                             "UNSUPPORTED['learning_rate_schedule'])")
        if weight_decay_rate is not None and (isinstance(weight_decay_rate, bool)
                                              or not isinstance(weight_decay_rate, (int, float))):
            raise ValueError(f"OptaxAdafactor: weight_decay_rate must be a float or None, got "
                             f"{weight_decay_rate!r} (schedules are out of scope: reference/dialects/optax.py "
                             "UNSUPPORTED['weight_decay_rate_schedule'])")
        if weight_decay_mask is not None:
            raise ValueError(f"OptaxAdafactor: weight_decay_mask={weight_decay_mask!r} is not supported; "
                             "exclude variables with build(variables, decays=[...]) (reference/dialects/optax.py "
                             "UNSUPPORTED['weight_decay_mask_tree_or_callable'])")
        if momentum is not None:
            momentum_dtype(dtype_momentum)  # optax canonicalizes the dtype at construction (_accumulation.py:116)
        self.config = dict(learning_rate=None if learning_rate is None else float(learning_rate),
                           min_dim_size_to_factor=int(min_dim_size_to_factor), decay_rate=float(decay_rate),
                           decay_offset=int(decay_offset),
                           multiply_by_parameter_scale=bool(multiply_by_parameter_scale),
                           clipping_threshold=None if clipping_threshold is None else float(clipping_threshold),
                           momentum=None if momentum is None else float(momentum), dtype_momentum=dtype_momentum,
                           weight_decay_rate=None if weight_decay_rate is None else float(weight_decay_rate),
                           eps=float(eps), factored=bool(factored), weight_decay_mask=None)
        c = self.config
        self.arguments = OptaxArguments(
            decay_rate=c["decay_rate"], eps=c["eps"], clipping_threshold=c["clipping_threshold"],
            weight_decay_rate=c["weight_decay_rate"], factored=c["factored"],
            min_dim_size_to_factor=c["min_dim_size_to_factor"], decay_offset=c["decay_offset"],
            multiply_by_parameter_scale=c["multiply_by_parameter_scale"], momentum=c["momentum"],
            dtype_momentum=dtype_momentum)
        self.stages = optax_stages(self.arguments)
        self.rms_floor = MIN_SCALE
        self.has_weight_decay = bool(c["weight_decay_rate"])

    def learning_rate(self, t: int) -> float:
        """The multiplier at step t: the constant lr, or 1 for None (no scaling)."""
        lr = self.config["learning_rate"]
        return 1.0 if lr is None else lr

    def get_config(self) -> dict:
        return dict(self.config)

    def apply(self, grads, variables) -> None:
        """One step; complex parameters are refused by name (UNSUPPORTED["complex_parameters"]):
        optax steps them with abs(g)**2 (numerics.abs_sq), the dialect's stages would give NaN."""
        for x in list(variables) + [g for g in grads if g is not None]:
            if np.iscomplexobj(x):
                raise TypeError("optax dialect: complex parameters are unsupported "
                                "(reference/dialects/optax.py UNSUPPORTED['complex_parameters'])")
        super().apply(grads, variables)



_F = "optax/_src/factorized.py"

#: optax.adafactor's features this dialect does not model (reference/dialects/gaps.py;
#: rendered in conformance/DIVERGENCE.md; checked by tests/reference/test_unsupported_peers.py).
UNSUPPORTED = {
    "inject_hyperparams_x64": Gap(
        feature="optax.inject_hyperparams(optax.adafactor)(...) under jax_enable_x64",
        framework="turns every float hyperparameter into an array of the parameters' highest dtype, so "
                  "decay_rate is float64 and beta = 1 - t**-decay_rate is float64 (t stays float32)",
        how="beta_2 hard-codes float32, what optax.adafactor's Python-float decay_rate gives",
        evidence=(("optax/schedules/_inject.py:160-165", "k: jnp.asarray(_convert_floats(v, dtype))"),
                  (f"{_F}:28-32", "t = jnp.array(i + 1, jnp.float32)")),
        effect="against plain optax.adafactor, float64, 8 steps on (5, 3) + (3,): 3.1e-10 (lr 1e-2) to 3.1e-9 "
               "(lr 0.1) relative (issue 15 reports 2.7e-8 on its own run)",
        vectors="not expressible: config is optax.adafactor's own arguments; no wrapper is recorded"),
    "learning_rate_schedule": Gap(
        feature="learning_rate as a schedule (a callable of the int32 count)",
        framework="scale_by_schedule multiplies by the schedule's value at the count; optax's schedules compute "
                  "in float32 from the int32 count even under x64",
        how="OptaxAdafactor takes a float or None and raises ValueError naming this entry",
        evidence=(("optax/_src/transform.py:1003-1004", "if callable(learning_rate):"),
                  ("optax/_src/transform.py:1027-1029", "step_size = step_size_fn(state.count)"),
                  ("optax/schedules/_schedule.py:142", "frac = 1 - count / transition_steps")),
        effect="a linear_schedule holding lr constant, against the float lr, float64: 5.2e-10 (lr 1e-2) to "
               "3.5e-9 (lr 0.1) relative after 8 steps (its float32 values)",
        vectors="not expressible: config.learning_rate is a JSON number or null"),
    "weight_decay_rate_schedule": Gap(
        feature="weight_decay_rate as a schedule",
        framework="add_decayed_weights keeps a count and adds schedule(count) * p",
        how="OptaxAdafactor takes a float or None and raises ValueError naming this entry",
        evidence=(("optax/transforms/_adding.py:53-55", "if callable(weight_decay):"),
                  ("optax/transforms/_adding.py:71", "s = weight_decay(state.count) if callable(weight_decay)")),
        effect="a linear_schedule holding 0.01 constant (lr 0.1), float64: 1.8e-9 relative after 8 steps",
        vectors="not expressible: config.weight_decay_rate is a JSON number or null"),
    "weight_decay_mask_tree_or_callable": Gap(
        feature="weight_decay_mask as a pytree of the parameters or a callable returning one",
        framework="masked() applies weight decay only where the mask is True",
        how="the vectors' parameters are a flat list: exclude_from_weight_decay.var_index is modelled (the "
            "adapter passes a list mask, the dialect build(decays=...)); masks by name or callables are not, "
            "and the optax adapter skips a vector that excludes by var_names with this entry",
        evidence=(("optax/_src/alias.py:236", "weight_decay_mask: MaskOrFn = None"),
                  ("optax/transforms/_adding.py:82-85", "return wrappers.masked("),
                  ("optax/transforms/_masking.py:127", "mask_tree = mask(params) if _mask_callable(mask) else mask")),
        effect="decay on or off per parameter (any size)",
        vectors="var_index: modelled; var_names: detected and skipped; callables and nested trees: not "
                "expressible (config.weight_decay_mask is null)",
        detect=lambda vector: bool((vector.exclude_from_weight_decay or {}).get("var_names"))),
    "multi_steps": Gap(
        feature="optax.MultiSteps(optax.adafactor(...), every_k_schedule)",
        framework="accumulates k updates and applies their mean every k-th step",
        how="a wrapper around the chain: the dialect models optax.adafactor alone",
        evidence=(("optax/transforms/_accumulation.py:243", "class MultiSteps:"),),
        effect="a different step (any size)",
        vectors="not expressible: no wrapper is recorded"),
    "complex_parameters": Gap(
        feature="complex parameters",
        framework="supported: the second moment is abs(g)**2 (numerics.abs_sq), and the step is finite",
        how="the dialect's stages square g and take real RMS: they gave NaN; OptaxAdafactor.apply now raises "
            "TypeError naming this entry",
        evidence=(("optax/_src/numerics.py:31", "def abs_sq"), (f"{_F}:180", "numerics.abs_sq(grad) + epsilon"),
                  (f"{_F}:199", "numerics.abs_sq(grad) + epsilon")),
        effect="optax finite, the dialect NaN (complex128, lr 0.1, 8 steps on (5, 3))",
        vectors="not expressible: vector arrays are float64 bit patterns"),
}

#: Gaps once outside the dialect that it now models (none for optax).
MODELLED: dict = {}


#: Keras arguments with no optax counterpart that change the step when set (non-default).
_NOT_MAPPABLE = {"clipnorm": None, "clipvalue": None, "global_clipnorm": None, "use_ema": False,
                 "gradient_accumulation_steps": None, "loss_scale_factor": None}


def from_keras(config: dict, closest: bool = False) -> Optional[dict]:
    """optax.adafactor arguments for a Keras Adafactor configuration, or None when it sets a
    Keras feature optax.adafactor cannot express (schedules, clipnorm/clipvalue/
    global_clipnorm, EMA, gradient accumulation, loss scaling, epsilon_2 != 1e-3: optax's
    floor is fixed at 1e-3).

    Mapped: learning_rate (float), decay_rate = -beta_2_decay, eps = epsilon_1,
    clipping_threshold = clip_threshold, weight_decay_rate = weight_decay * learning_rate
    (Keras decays x by x*wd*lr before the step; optax adds rate*p to the update, not
    lr-scaled: the same decay for a constant lr). relative_step has no counterpart (Keras
    ignores it too). Everything else stays at optax's defaults (min_dim_size_to_factor 128);
    ``closest=True`` also sets min_dim_size_to_factor=1 so every matrix is factored as in
    Keras (optax still factors the two largest axes, not the last two)."""
    for key, default in _NOT_MAPPABLE.items():
        value = config.get(key, default)
        if value not in (None, False, 0, 0.0):
            return None
    lr = config.get("learning_rate", 0.001)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        return None
    if config.get("epsilon_2", 1e-3) != MIN_SCALE:
        return None
    out = {"learning_rate": float(lr),
           "decay_rate": -float(config.get("beta_2_decay", -0.8)),
           "eps": float(config.get("epsilon_1", 1e-30)),
           "clipping_threshold": float(config.get("clip_threshold", 1.0))}
    wd = config.get("weight_decay")
    if wd:
        out["weight_decay_rate"] = float(wd) * float(lr)
    if closest:
        out["min_dim_size_to_factor"] = 1
    return out


__all__ = ["DIFFERENCES", "OptaxAdafactor", "OptaxArguments", "from_keras", "momentum_dtype", "optax_stages"]
