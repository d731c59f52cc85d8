"""``timm.optim.Adafactor`` (timm 1.0.31) as a dialect of the Keras step.

Read from timm 1.0.31 on torch 2.13.0: ``timm/optim/adafactor.py`` ("adafactor.py:N" below),
fairseq's Adafactor reworked by timm. ``step`` (adafactor.py:140-242) walks every parameter
with a gradient; one step of a parameter p with gradient g at its step t (a per-parameter
Python int, incremented before use, :170, :198):

    RMS    = ||p||_2 / sqrt(N)                   p BEFORE the decay and the update (:131-132, :199)
    rho    = min(1e-2, 1/sqrt t)                 lr=None, the DEFAULT: relative step (:64, :103-105)
           = min(1e-6 t, 1/sqrt t)               ... with warmup_init (:104)
    lr_t   = rho * max(eps_scale, RMS)           scale_parameter (DEFAULT True), Python max (:106-109)
           = lr                                  an explicit lr: used as is, no 1/sqrt t cap and NO
                                                 parameter scale whatever scale_parameter says (:103, :110)
    beta2t = 1 - t**decay_rate                   Python double, no cap (:202)
    q      = g**2 + eps                          eps 1e-30 (:53, :203)
    factored (``_get_options``, :113-128): dims (0, 1) when ndim > 2 and shape[0], shape[1] >
             min_dim_size_to_factor (16 by DEFAULT; strictly greater); else the last two when
             both > min_dim_size_to_factor; else unfactored:
        r = lerp(r, mean(q, dim_row), 1-beta2t) ; c = lerp(c, mean(q, dim_col), 1-beta2t)   (:209-210)
        U = (rsqrt(r / mean(r, dim_col)) (x) rsqrt(c)) * g                                 (:134-138, :213-214)
    else:
        v = lerp(v, q, 1-beta2t) ; U = rsqrt(v) * g                                         (:218-219)
    U = U / clamp(RMS(U) / clip_threshold, min=1) * lr_t                                    (:221-222)
    betas=(beta1, _) (None by DEFAULT: no momentum): m = lerp(m, U, 1 - beta1), U = m;
                     m kept in the gradient's dtype (:174, :224-233)
    weight_decay != 0: p += p * (-weight_decay * lr_t)   the FULL step size, after U is formed (:235-236)
    p -= U                                                                                  (:238)

Where the arithmetic is pytorch_optimizer's (reference/dialects/pytorch_optimizer.py: its
AdaFactor is the same fairseq lineage) its stage functions are reused, bound to
``PytorchOptimizerArguments`` that say what timm computes: the relative step, the parameter
scale as Python's ``max`` (its ``foreach=False`` path: a 0-d tensor of the dtype when RMS >
eps_scale, else the Python float eps_scale, a NaN RMS too), the ``||U||/sqrt(N)`` clipping and
the momentum ``lerp``; the ``lerp`` EMAs of torch, and transformers' ``second_moment`` and
``precondition`` (general over the factored axes, so dims 0, 1 too). timm's own stages are
the factored axes, beta2 without a cap and the update tail (decay after the update).

Scalars follow torch's rules: a Python double multiplying a tensor is rounded to the tensor
dtype first; ``-weight_decay * lr_t`` is a Python double, or a 0-d tensor of the dtype when
lr_t is one (relative step with a parameter scale above eps_scale).

Slots: ``r`` = exp_avg_sq_row (reduced dim_row, the column axis of base.py), ``c`` =
exp_avg_sq_col (reduced dim_col), ``v`` = exp_avg_sq, ``momentum`` = exp_avg in the dtype.

Not modelled: ``caution=True`` (refused), float16/bfloat16 parameters (timm steps them
through a float32 copy with float32 state, :156-157, :194-196, :239-240: the dialect steps
in the parameter dtype), parameters without a gradient, and torch's own summation order and
fused multiply-adds on CPU (ulp-level).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from reference.adafactor_step import Hyperparameters
from reference.dialects import pytorch_optimizer as po
from reference.dialects.base import DialectOptimizer, Stages, keras_step_only, statistic_zeros
from reference.dialects.keras import keras_stages
from reference.dialects.torch import moment_update as torch_lerp
from reference.dialects.transformers import precondition as transformers_precondition
from reference.dialects.transformers import second_moment as transformers_second_moment
from reference.state import Kind


@dataclass(frozen=True)
class TimmArguments:
    """What the stages read of ``Adafactor``'s arguments (adafactor.py:49-83)."""

    lr: Optional[float] = None
    eps: float = 1e-30
    eps_scale: float = 1e-3
    clip_threshold: float = 1.0
    decay_rate: float = -0.8
    beta1: Optional[float] = None
    weight_decay: float = 0.0
    scale_parameter: bool = True
    warmup_init: bool = False
    min_dim_size_to_factor: int = 16

    @property
    def relative_step(self) -> bool:
        """``relative_step = lr is None`` (adafactor.py:64)."""
        return self.lr is None

    def pytorch_optimizer(self) -> po.PytorchOptimizerArguments:
        """The pytorch_optimizer arguments under which its stage functions compute timm's:
        the parameter scale only with the relative step (adafactor.py:103-109), Python's
        ``max`` (``foreach=False``, :108), no cap (unused: timm has its own ``beta_2``)."""
        return po.PytorchOptimizerArguments(
            beta1=self.beta1, decay_rate=self.decay_rate, weight_decay=self.weight_decay,
            clip_threshold=self.clip_threshold, scale_parameter=self.scale_parameter and self.relative_step,
            relative_step=self.relative_step, warmup_init=self.warmup_init, eps1=self.eps, eps2=self.eps_scale,
            momentum_dtype="float64", foreach=False)

    def keras_hyperparameters(self) -> Hyperparameters:
        """The Keras stage it shares (q = g*g + eps) takes its eps (adafactor.py:203)."""
        return Hyperparameters(beta_2_decay=self.decay_rate, epsilon_1=self.eps, epsilon_2=self.eps_scale,
                               clip_threshold=self.clip_threshold, relative_step=self.relative_step)


# ------------------------------------------------------------------ layout
def factored_axes(p: TimmArguments, shape):
    """(dim_col, dim_row) as ``_get_options`` picks them (adafactor.py:113-128): (0, 1) when
    ndim > 2 and shape[0] > m and shape[1] > m (convolutions), else the last two when ndim >= 2
    and both exceed m, else None; m = min_dim_size_to_factor, 16 by default, strictly
    exceeded. dim_row is reduced into r, so it is base.py's column axis."""
    m = p.min_dim_size_to_factor
    ndim = len(shape)
    if ndim > 2 and shape[0] > m and shape[1] > m:
        return 0, 1
    if ndim >= 2 and shape[-2] > m and shape[-1] > m:
        return ndim - 2, ndim - 1
    return None


def initial_moments(p: TimmArguments, stages: Stages, x: np.ndarray) -> dict:
    """exp_avg_sq_row/col or exp_avg_sq, and exp_avg when betas is set, all zeros in the
    gradient's dtype (adafactor.py:169-182; ``.to(grad)``)."""
    moments = statistic_zeros(stages, x)
    if p.beta1 is not None:
        moments[Kind.MOMENTUM] = np.zeros_like(x)
    return moments


# ------------------------------------------------------------------ second moment
def beta_2(p: TimmArguments, dtype, t: int):
    """The lerp weight 1 - beta2t, beta2t = 1 - t**decay_rate, Python doubles, no cap
    (adafactor.py:202, :209-210, :218). pytorch_optimizer: min(betas[1], ...)."""
    return 1.0 - (1.0 - math.pow(t, p.decay_rate))


# ------------------------------------------------------------------ update
def apply(p: TimmArguments, stages: Stages, dtype, x, x_scale, u, den, alpha, lr, moments: dict, decays: bool):
    """U = (U / den) * lr_t (adafactor.py:221-222); with betas m = lerp(m, U, 1 - beta1) in the
    dtype, U = m (:224-233; pytorch_optimizer's ``momentum_lerp``); then the decay by the full
    step size, after the update is formed: p += p * (-wd * lr_t) (:235-236); p -= U (:238)."""
    with np.errstate(all="ignore"):
        u = (u / den) * dtype(alpha)
        if p.beta1 is not None:
            m, u = po.momentum_lerp(p, dtype, moments[Kind.MOMENTUM], u)
            moments = {**moments, Kind.MOMENTUM: m}
        if p.weight_decay != 0 and decays:
            if isinstance(alpha, np.ndarray) or isinstance(alpha, np.generic):
                factor = dtype(-p.weight_decay) * dtype(alpha)  # a 0-d tensor of the dtype
            else:
                factor = dtype(-p.weight_decay * alpha)  # a Python double
            x = x + x * factor
        return np.asarray(x - u), moments


def stage_functions(p: TimmArguments) -> dict:
    """stage name -> timm's function for it, bound to ``p`` (pytorch_optimizer's where the
    arithmetic is the same)."""
    q = p.pytorch_optimizer()
    return dict(
        factored_axes=partial(factored_axes, p),
        initial_moments=partial(initial_moments, p),
        relative_step=partial(po.relative_step, q),
        parameter_scale=partial(po.parameter_scale, q),
        scale_after_decay=False,  # RMS(p) before the decay (adafactor.py:199 vs :235-236)
        weight_decay=po.weight_decay,  # none before the step: ``apply`` decays
        beta_2=partial(beta_2, p),
        moment_update=torch_lerp,
        second_moment=transformers_second_moment,
        precondition=transformers_precondition,
        clip=partial(po.clip, q),
        apply=partial(apply, p),
    )


def timm_stages(p: TimmArguments) -> Stages:
    """``Adafactor.step`` on one parameter: the Keras stages (with its eps) with every timm
    difference (``DIFFERENCES``) swapped in."""
    return keras_stages(p.keras_hyperparameters(), None).replace(**stage_functions(p))


#: name -> (the stages that implement it, what and where). Every stage replaced is in exactly
#: one entry; Keras with all of them replaced is ``timm_stages``.
DIFFERENCES = OrderedDict([
    ("factor_dims", (("factored_axes", "initial_moments"),
                     "dims 0, 1 of a > 2-D parameter whose dims 0 and 1 exceed min_dim_size_to_factor (16), else "
                     "the last two when both exceed it, else unfactored; exp_avg (betas) in the gradient's dtype "
                     "(adafactor.py:113-128, :169-182); Keras: the last two axes of every >= 2-D variable, "
                     "no momentum")),
    ("relative_step", (("relative_step",),
                       "lr=None: rho = min(1e-2 or 1e-6*t, 1/sqrt t); an explicit lr as is, no 1/sqrt t cap "
                       "(adafactor.py:103-110); Keras: min(lr, 1/sqrt t)")),
    ("parameter_scale", (("parameter_scale",),
                         "Python max(eps_scale, ||p||/sqrt N) only with the relative step and scale_parameter; "
                         "never with an explicit lr (adafactor.py:106-109, :131-132); Keras: always "
                         "max(eps2, sqrt(mean p^2))")),
    ("scale_before_decay", (("scale_after_decay",),
                            "RMS(p) taken before weight decay (adafactor.py:199 vs :235-236); Keras: after")),
    ("beta2_lerp", (("beta_2", "moment_update"),
                    "beta2t = 1 - t**decay_rate in Python doubles, the EMAs as torch.lerp(old, new, 1 - beta2t) "
                    "(adafactor.py:202, :209-210, :218); Keras: beta*old + (1-beta)*new in the dtype")),
    ("factored_rsqrt", (("second_moment", "precondition"),
                        "U = rsqrt(r/mean r) (x) rsqrt(c) * g, no V kept (adafactor.py:134-138, :213-214, :219); "
                        "Keras: g / sqrt((r/mean r) (x) c), V kept")),
    ("clip_rms_as_norm", (("clip",),
                          "den = clamp(||U||/sqrt(N)/d, min=1) (adafactor.py:221, :131-132); Keras: "
                          "sqrt(mean U^2)")),
    ("update_tail", (("weight_decay", "apply"),
                     "U*lr_t, m = lerp(m, U, 1-beta1) in the dtype, then p += p*(-wd*lr_t) with the FULL step "
                     "size after the update is formed, then p -= U (adafactor.py:222-238); Keras: p -= p*wd*lr "
                     "(raw lr) before the step, no momentum")),
])


class TimmAdafactor(DialectOptimizer):
    """``timm.optim.Adafactor`` over NumPy variables: its arguments, defaults and construction
    error (adafactor.py:49-83)."""

    dialect = "timm"
    framework = "timm.optim.Adafactor"
    spec = "timm 1.0.31, timm/optim/adafactor.py"

    def __init__(self, lr: Optional[float] = None, eps: float = 1e-30, eps_scale: float = 1e-3,
                 clip_threshold: float = 1.0, decay_rate: float = -0.8, betas=None, weight_decay: float = 0.0,
                 scale_parameter: bool = True, warmup_init: bool = False, min_dim_size_to_factor: int = 16,
                 caution: bool = False):
        super().__init__()
        # The one check of adafactor.py:64-66, same class and message.
        if warmup_init and lr is not None:
            raise ValueError('warmup_init requires relative_step=True')
        beta1 = None if betas is None else betas[0]  # adafactor.py:68
        if caution:
            raise NotImplementedError("timm dialect: caution=True is not modelled (adafactor.py:227-231)")
        self.config = dict(lr=lr, eps=eps, eps_scale=eps_scale, clip_threshold=clip_threshold, decay_rate=decay_rate,
                           betas=None if betas is None else list(betas), weight_decay=weight_decay,
                           scale_parameter=scale_parameter, warmup_init=warmup_init,
                           min_dim_size_to_factor=min_dim_size_to_factor, caution=caution)
        self.arguments = TimmArguments(
            lr=lr, eps=eps, eps_scale=eps_scale, clip_threshold=clip_threshold, decay_rate=decay_rate, beta1=beta1,
            weight_decay=weight_decay, scale_parameter=scale_parameter, warmup_init=warmup_init,
            min_dim_size_to_factor=min_dim_size_to_factor)
        self.stages = timm_stages(self.arguments)
        self.rms_floor = eps_scale if scale_parameter and lr is None else None
        self.has_weight_decay = bool(weight_decay)

    def learning_rate(self, t: int) -> float:
        """rho_t: the relative step, or lr (adafactor.py:103-105, :110)."""
        return po.relative_step(self.arguments.pytorch_optimizer(), np.float64, t, self.config["lr"])

    def get_config(self) -> dict:
        return dict(self.config)


def from_keras(config: dict) -> Optional[dict]:
    """timm.optim.Adafactor arguments closest to a Keras spec config, or None when it does not map.

    eps/eps_scale = epsilon_1/epsilon_2, decay_rate = beta_2_decay, clip_threshold as is, no
    momentum, min_dim_size_to_factor=0 (every >= 2-D variable with dims > 0 factored; dims 0, 1
    of a > 2-D one), weight_decay (None -> 0.0; scaled by lr_t after the update is formed).
    learning_rate == 0.01 maps to lr=None with scale_parameter (Keras's step size exactly);
    any other float to lr=learning_rate (timm then has no parameter scale and no 1/sqrt t cap).
    Schedules, callables, gradient clipping, EMA, loss scaling and accumulation do not map.
    """
    if not keras_step_only(config):
        return None
    lr = config.get("learning_rate", 0.001)
    if not isinstance(lr, float) or lr < 0:
        return None
    wd = config.get("weight_decay")
    return dict(lr=None if lr == 1e-2 else lr, eps=float(config.get("epsilon_1", 1e-30)),
                eps_scale=float(config.get("epsilon_2", 1e-3)), clip_threshold=float(config.get("clip_threshold", 1.0)),
                decay_rate=float(config.get("beta_2_decay", -0.8)), betas=None,
                weight_decay=0.0 if wd is None else float(wd), scale_parameter=True, warmup_init=False,
                min_dim_size_to_factor=0, caution=False)


__all__ = ["DIFFERENCES", "TimmAdafactor", "TimmArguments", "from_keras", "timm_stages"]
