"""``timm.optim.AdafactorBigVision`` (timm 1.0.31) as a dialect of the Keras step.

Read from timm 1.0.31 on torch 2.13.0: ``timm/optim/adafactor_bv.py`` ("adafactor_bv.py:N"
below) and ``timm/optim/_helpers.py``. The eager CPU step is ``_single_tensor_adafactor``
(adafactor_bv.py:206-315; ``step`` calls it for every group, :180-201). One step of a
parameter p with gradient g at its step t (a per-parameter float32 0-d tensor, incremented
before use and read back as a Python float, :240-241; ``_get_value``, _helpers.py:290-294):

    beta2t = min(beta2_cap, 1 - s**(-decay_rate))       s = max(t - decay_offset, 1), or t
                                                        without an offset; Python doubles (:243-250)
    q      = g*g + eps                                  eps None: 1e-30, 1e-7 for float16 g (:237, :252)
    factored (the two largest axes dc < dr by size, stable, when size[dc] >= min_dim_size_to_factor,
              16 by default, ``_factored_dims`` :23-46):
        r = lerp(r, mean(q, dr), 1 - beta2t) ; c = lerp(c, mean(q, dc), 1 - beta2t)   keepdim (:257-258)
        U = (g * rsqrt(r / mean(r, dc))) * rsqrt(c)                                   left to right (:263-267)
    else:
        v = lerp(v, q, 1 - beta2t) ; U = g * rsqrt(v)                                 (:271-272)
    U = U / clamp(||U||/sqrt(N) / clipping_threshold, min=1)   only if clipping_threshold is set;
                                                               None, the DEFAULT, never clips (:275-277)
    momentum (0.9 by DEFAULT): m = lerp(m, U.to(momentum_dtype), 1 - momentum); U = m.to(g's dtype)
                               m is kept in momentum_dtype, bfloat16 by DEFAULT   (:280-286)
    U = U * lr                                          lr 1.0 by DEFAULT; no relative step, no
                                                        parameter scale (:295)
    weight_decay != 0: p *= 1 - lr*wd                   (:309); unscaled_wd: 1 - wd (:302);
                       corrected_weight_decay: 1 - (lr**2/max_lr)*wd, unscaled 1 - (lr/max_lr)*wd,
                       max_lr = the constructor's lr (:305, :312; _helpers.py:_max_lr_snapshot)
    p -= U                                              ``add_(U, alpha=-1)`` (:315)

Slot names (base.py convention, as the optax dialect): ``r`` = exp_avg_sq_r (the statistic
that reduced the largest axis dr, the *column* axis here), ``c`` = exp_avg_sq_c (reduced dc,
the *row* axis); timm keeps both with the reduced axis as size 1 (keepdim), the dialect
without it. ``v`` only for unfactored parameters; ``momentum`` in ``momentum_dtype``.

Scalars follow torch's rules: a Python double multiplying a tensor is rounded to the tensor
dtype first; ``lerp`` on float32 is ATen's fused ``lerp_vec`` (the pytorch_optimizer
dialect's ``lerp_fma32`` for the momentum) and on bfloat16/float16 computes in float32.

Not modelled: ``caution=True`` (refused), parameters without a gradient, the foreach or
torch.compile paths (timm 1.0.31 has none for this optimizer: always single-tensor), and
torch's own summation order and fused multiply-adds on CPU (ulp-level; the float64 residue is
``conformance/expectations/timm-bigvision.txt``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from reference import reductions
from reference.adafactor_step import Hyperparameters
from reference.dialects.base import DialectOptimizer, Stages, keras_step_only, statistic_zeros
from reference.dialects.keras import keras_stages
from reference.dialects.pytorch_optimizer import momentum_dtype as _momentum_numpy_dtype
from reference.dialects.pytorch_optimizer import momentum_lerp as _momentum_lerp
from reference.dialects.torch import moment_update as torch_lerp
from reference.dialects.transformers import torch_rms
from reference.state import Kind

#: momentum_dtype names the dialect takes (timm takes a torch.dtype or 'float16'/'bfloat16'/'float32').
MOMENTUM_DTYPES = ("bfloat16", "float16", "float32", "float64")


@dataclass(frozen=True)
class BigVisionArguments:
    """What the stages read of ``AdafactorBigVision``'s arguments (adafactor_bv.py:56-72)."""

    lr: float = 1.0
    min_dim_size_to_factor: int = 16
    decay_rate: float = 0.8
    decay_offset: int = 0
    beta2_cap: float = 0.999
    momentum: Optional[float] = 0.9
    momentum_dtype: str = "bfloat16"
    eps: Optional[float] = None
    weight_decay: float = 0.0
    clipping_threshold: Optional[float] = None
    unscaled_wd: bool = False
    corrected_weight_decay: bool = False

    @property
    def beta1(self) -> Optional[float]:
        """The momentum under the name the pytorch_optimizer dialect's ``momentum_lerp`` reads."""
        return self.momentum

    def keras_hyperparameters(self) -> Hyperparameters:
        return Hyperparameters(beta_2_decay=-self.decay_rate, epsilon_1=1e-30 if self.eps is None else self.eps,
                               epsilon_2=0.0, clip_threshold=self.clipping_threshold or 1.0, relative_step=False)


# ------------------------------------------------------------------ layout
def factored_axes(p: BigVisionArguments, shape):
    """(dc, dr): the second-largest and the largest axis, sorting (size, index) pairs (ties:
    the lower index first), when ndim >= 2 and size[dc] >= min_dim_size_to_factor
    (``_factored_dims``, adafactor_bv.py:41-46). dr is reduced into r, so it is the column axis."""
    if len(shape) < 2:
        return None
    order = sorted((size, i) for i, size in enumerate(shape))
    if shape[order[-2][1]] < p.min_dim_size_to_factor:
        return None
    return int(order[-2][1]), int(order[-1][1])


def initial_moments(p: BigVisionArguments, stages: Stages, x: np.ndarray) -> dict:
    """r, c (factored) or v in the parameter dtype, and exp_avg in momentum_dtype when
    momentum is set; all zero (adafactor_bv.py:149-172)."""
    moments = statistic_zeros(stages, x)
    if p.momentum is not None:
        moments[Kind.MOMENTUM] = np.zeros(x.shape, dtype=_momentum_numpy_dtype(p.momentum_dtype))
    return moments


# ------------------------------------------------------------------ step size
def relative_step(p: BigVisionArguments, dtype, t: int, lr):
    """No relative step: lr itself, a Python float (adafactor_bv.py:295)."""
    return float(p.lr)


def parameter_scale(dtype, x: np.ndarray):
    """No parameter scale (adafactor_bv.py has no RMS of p)."""
    return 1.0


def weight_decay(dtype, x: np.ndarray, lr, decays: bool) -> np.ndarray:
    """No decay before the step: it comes after the update is formed (``apply``)."""
    return x


# ------------------------------------------------------------------ second moment
def gradient_square(p: BigVisionArguments, dtype, g: np.ndarray) -> np.ndarray:
    """torch.square(g) + eps, eps None: 1e-7 for float16 gradients, else 1e-30, a Python double
    rounded to the dtype (adafactor_bv.py:237, :252)."""
    eps = p.eps if p.eps is not None else (1e-7 if dtype is np.float16 else 1e-30)
    with np.errstate(all="ignore"):
        return np.square(g) + dtype(eps)


def beta_2(p: BigVisionArguments, dtype, t: int):
    """The lerp weight 1 - beta2t, beta2t = min(beta2_cap, 1 - s**(-decay_rate)) with
    s = max(t - decay_offset, 1) when decay_offset is set, in Python doubles
    (adafactor_bv.py:247-250; Python's ``min`` keeps the cap when the other is NaN)."""
    step = float(t)
    s = max(step - p.decay_offset, 1) if p.decay_offset else step
    try:
        uncapped = 1.0 - s ** (-p.decay_rate)
    except (OverflowError, ZeroDivisionError):
        uncapped = -math.inf
    return 1 - min(p.beta2_cap, uncapped)


def second_moment(stages: Stages, dtype, q: np.ndarray, moments: dict, beta, axes) -> dict:
    """r = lerp(r, mean(q, dr)), c = lerp(c, mean(q, dc)) or v = lerp(v, q) (adafactor_bv.py:257-258,
    :271); no V for a factored parameter."""
    if axes is None:
        return {**moments, Kind.V: np.asarray(stages.moment_update(dtype, moments[Kind.V], q, beta))}
    row, col = axes
    r = stages.moment_update(dtype, moments[Kind.R], stages.axis_mean(dtype, q, col), beta)
    c = stages.moment_update(dtype, moments[Kind.C], stages.axis_mean(dtype, q, row), beta)
    return {**{k: a for k, a in moments.items() if k is not Kind.V}, Kind.R: np.asarray(r), Kind.C: np.asarray(c)}


def precondition(stages: Stages, dtype, g: np.ndarray, moments: dict, axes) -> np.ndarray:
    """U = (g * rsqrt(r / mean(r, dc))) * rsqrt(c), multiplied left to right (adafactor_bv.py:263-267);
    U = g * rsqrt(v) unfactored (:272). rsqrt is 1/sqrt, as torch computes it on CPU."""
    one = dtype(1.0)
    with np.errstate(all="ignore"):
        if axes is None:
            return g * (one / np.sqrt(moments[Kind.V]))
        row, col = axes
        r, c = moments[Kind.R], moments[Kind.C]
        row_in_r = row if row < col else row - 1  # r lacks the column axis dr
        row_factor = one / np.sqrt(r / reductions.mean(r, axis=row_in_r, keepdims=True))
        col_factor = one / np.sqrt(c)
        return (g * np.expand_dims(row_factor, col)) * np.expand_dims(col_factor, row)


# ------------------------------------------------------------------ update
def clip(p: BigVisionArguments, dtype, u: np.ndarray):
    """den = clamp(||U||/sqrt(N) / clipping_threshold, min=1) (adafactor_bv.py:275-277; clamp
    keeps a NaN); clipping_threshold None (the default): no clipping, den = 1."""
    if p.clipping_threshold is None:
        return u, dtype(1.0)
    with np.errstate(all="ignore"):
        return u, np.maximum(torch_rms(u) / dtype(p.clipping_threshold), dtype(1.0))


def decay_factor(p: BigVisionArguments) -> float:
    """The Python double p is multiplied by (adafactor_bv.py:298-312)."""
    lr, wd = p.lr, p.weight_decay
    max_lr = float(p.lr) if p.corrected_weight_decay else None
    if p.unscaled_wd:
        return 1. - wd if max_lr is None else 1. - (lr / max_lr) * wd
    return 1. - lr * wd if max_lr is None else 1. - (lr ** 2 / max_lr) * wd


def apply(p: BigVisionArguments, stages: Stages, dtype, x, x_scale, u, den, alpha, lr, moments: dict,
          decays: bool):
    """U / den; with momentum m = lerp(m, U in momentum_dtype, 1 - momentum), U = m in the dtype
    (adafactor_bv.py:280-286); U * lr (:295); p *= decay factor (:298-312); p - U (:315)."""
    with np.errstate(all="ignore"):
        u = u / den
        if p.momentum is not None:
            m, u = _momentum_lerp(p, dtype, moments[Kind.MOMENTUM], u)
            moments = {**moments, Kind.MOMENTUM: m}
        u = u * dtype(p.lr)
        if p.weight_decay != 0 and decays:
            x = x * dtype(decay_factor(p))
        return np.asarray(x - u), moments


def stage_functions(p: BigVisionArguments) -> dict:
    """stage name -> AdafactorBigVision's function for it, bound to ``p``."""
    return dict(
        factored_axes=partial(factored_axes, p),
        initial_moments=partial(initial_moments, p),
        relative_step=partial(relative_step, p),
        parameter_scale=parameter_scale,
        scale_after_decay=False,
        weight_decay=weight_decay,
        gradient_square=partial(gradient_square, p),
        beta_2=partial(beta_2, p),
        moment_update=torch_lerp,
        second_moment=second_moment,
        precondition=precondition,
        clip=partial(clip, p),
        apply=partial(apply, p),
    )


def timm_bigvision_stages(p: BigVisionArguments) -> Stages:
    """``AdafactorBigVision.step`` on one parameter: the Keras stages with every difference
    (``DIFFERENCES``) swapped in."""
    return keras_stages(p.keras_hyperparameters(), None).replace(**stage_functions(p))


#: name -> (the stages that implement it, what and where). Every stage replaced is in exactly
#: one entry; Keras with all of them replaced is ``timm_bigvision_stages``.
DIFFERENCES = OrderedDict([
    ("factor_largest_axes", (("factored_axes", "initial_moments"),
                             "the two largest axes, only when the second reaches min_dim_size_to_factor (16), "
                             "momentum 0.9 in bfloat16 by default (adafactor_bv.py:23-46, :149-172); Keras: the "
                             "last two axes of every >= 2-D variable, no momentum")),
    ("plain_lr", (("relative_step", "parameter_scale", "scale_after_decay"),
                  "step size lr (1.0 by default), no relative step, no parameter scale (adafactor_bv.py:295); "
                  "Keras: max(eps2, RMS(x)) * min(lr, 1/sqrt t)")),
    ("beta2_capped_lerp", (("beta_2", "moment_update"),
                           "beta2t = min(beta2_cap, 1 - s**-decay_rate) with the decay_offset (cap 0.999, decay "
                           "0.8), EMAs as torch.lerp (adafactor_bv.py:243-258, :271); Keras: beta*old + "
                           "(1-beta)*new, uncapped")),
    ("factored_rsqrt", (("gradient_square", "second_moment", "precondition"),
                        "q = g*g + eps (eps None: 1e-30, 1e-7 for float16 gradients), U = (g * rsqrt(r/mean r)) * "
                        "rsqrt(c), no V kept (adafactor_bv.py:237, :252-272); Keras: g / sqrt((r/mean r) (x) c)")),
    ("optional_clip", (("clip",),
                       "den = clamp(||U||/sqrt(N)/d, min=1) only when clipping_threshold is set (None by default) "
                       "(adafactor_bv.py:275-277); Keras: always, max(1, sqrt(mean U^2)/d)")),
    ("update_tail", (("weight_decay", "apply"),
                     "momentum lerp of the clipped U, then U*lr, then p *= 1 - lr*wd (or 1 - wd, or corrected), "
                     "then p -= U (adafactor_bv.py:280-315); Keras: p -= p*wd*lr before the step, "
                     "p -= alpha*U")),
])


class TimmBigVisionAdafactor(DialectOptimizer):
    """``timm.optim.AdafactorBigVision`` over NumPy variables: its arguments, defaults and
    construction errors (adafactor_bv.py:56-101). ``momentum_dtype`` is a dtype name."""

    dialect = "timm_bigvision"
    framework = "timm.optim.AdafactorBigVision"
    spec = "timm 1.0.31, timm/optim/adafactor_bv.py"

    def __init__(self, lr: float = 1.0, min_dim_size_to_factor: int = 16, decay_rate: float = 0.8,
                 decay_offset: int = 0, beta2_cap: float = 0.999, momentum: Optional[float] = 0.9,
                 momentum_dtype: str = "bfloat16", eps: Optional[float] = None, weight_decay: float = 0.0,
                 clipping_threshold: Optional[float] = None, unscaled_wd: bool = False, caution: bool = False,
                 corrected_weight_decay: bool = False):
        super().__init__()
        mdtype = str(momentum_dtype)
        _momentum_numpy_dtype(mdtype)  # an unknown name fails here
        # The checks of adafactor_bv.py:82-83 and _max_lr_snapshot (:99), same classes and messages.
        if float(lr) < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if float(weight_decay) < 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        if corrected_weight_decay and float(lr) <= 0:
            raise ValueError(f"Corrected weight decay requires a positive max lr, got {float(lr)}. Construct the "
                             "optimizer with the peak lr.")
        if caution:
            raise NotImplementedError("timm_bigvision dialect: caution=True is not modelled (adafactor_bv.py:288-292)")
        self.config = dict(lr=lr, min_dim_size_to_factor=min_dim_size_to_factor, decay_rate=decay_rate,
                           decay_offset=decay_offset, beta2_cap=beta2_cap, momentum=momentum, momentum_dtype=mdtype,
                           eps=eps, weight_decay=weight_decay, clipping_threshold=clipping_threshold,
                           unscaled_wd=unscaled_wd, caution=caution, corrected_weight_decay=corrected_weight_decay)
        self.arguments = BigVisionArguments(
            lr=lr, min_dim_size_to_factor=min_dim_size_to_factor, decay_rate=decay_rate, decay_offset=decay_offset,
            beta2_cap=beta2_cap, momentum=momentum, momentum_dtype=mdtype, eps=eps, weight_decay=weight_decay,
            clipping_threshold=clipping_threshold, unscaled_wd=unscaled_wd,
            corrected_weight_decay=corrected_weight_decay)
        self.stages = timm_bigvision_stages(self.arguments)
        self.rms_floor = None
        self.has_weight_decay = bool(weight_decay)

    def learning_rate(self, t: int) -> float:
        return float(self.config["lr"])

    def get_config(self) -> dict:
        return dict(self.config)


def from_keras(config: dict) -> Optional[dict]:
    """AdafactorBigVision arguments closest to a Keras spec config, or None when it does not map.

    lr = learning_rate (BigVision's whole step size: Keras's max(eps2, RMS(x)) * min(lr, 1/sqrt t)
    has no counterpart, the ``plain_lr`` difference measures it; epsilon_2 and relative_step are
    dropped), decay_rate = -beta_2_decay, beta2_cap 0.999 (binds only after step ~5600 at 0.8),
    eps = epsilon_1, clipping_threshold = clip_threshold, weight_decay (None -> 0.0; scaled by lr
    after the update is formed), min_dim_size_to_factor=1 (every >= 2-D variable factored, as in
    Keras, over its two largest axes), no momentum. Schedules, callables, gradient clipping,
    EMA, loss scaling and accumulation do not map (None).
    """
    if not keras_step_only(config):
        return None
    lr = config.get("learning_rate", 0.001)
    wd = config.get("weight_decay")
    wd = 0.0 if wd is None else float(wd)
    if not isinstance(lr, float) or lr < 0 or wd < 0:
        return None
    return dict(lr=lr, min_dim_size_to_factor=1, decay_rate=-float(config.get("beta_2_decay", -0.8)), decay_offset=0,
                beta2_cap=0.999, momentum=None, momentum_dtype="float32",
                eps=float(config.get("epsilon_1", 1e-30)), weight_decay=wd,
                clipping_threshold=float(config.get("clip_threshold", 1.0)), unscaled_wd=False, caution=False,
                corrected_weight_decay=False)


__all__ = ["BigVisionArguments", "DIFFERENCES", "MOMENTUM_DTYPES", "TimmBigVisionAdafactor", "from_keras",
           "timm_bigvision_stages"]
