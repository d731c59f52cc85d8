"""``pytorch_optimizer.AdaFactor`` (pytorch-optimizer 4.1.0) as a dialect of the Keras step.

Read from pytorch-optimizer 4.1.0 on torch 2.13.0: ``pytorch_optimizer/optimizer/adafactor.py``
("adafactor.py:N" below) and the helpers of ``pytorch_optimizer/base/optimizer.py``
("base/optimizer.py:N"). One step of a parameter group at its step t (a per-group Python
int, incremented before use, adafactor.py:361):

    g      = -g                                  maximize (:198-199, :292; base/optimizer.py:710-713)
    RMS    = ||p||_2 / sqrt(N)                   p BEFORE decay/update (:201, :298; base/optimizer.py:379-388)
    rho    = min(1e-2, 1/sqrt t)                 relative_step=True, the DEFAULT; lr is ignored (:143-148)
           = min(1e-6 t, 1/sqrt t)               ... with warmup_init
           = lr                                  relative_step=False: no 1/sqrt(t) cap (:144-145)
    lr_t   = max(eps2, RMS) * rho                scale_parameter (:150-166); = rho without
    decay  : p *= 1 - wd*lr_t                    decoupled (DEFAULT): the FULL step size lr_t (:204-211, :302-309;
                                                 base/optimizer.py:203-209, 567-582); fixed_decay: p *= 1 - wd;
             g += wd*p                           weight_decouple=False (coupled, before g is squared)
    beta2t = min(beta2_cap, 1 - t**decay_rate)   betas[1] caps it, 0.999 by DEFAULT (:363)
    q      = g*g + eps1                          eps1 1e-30; 1e-7 whenever momentum_dtype is float16 (:68, :312)
    factored (ndim >= 2, last two axes, :169-171):
        r = lerp(r, mean(q, -1), 1-beta2t) ; c = lerp(c, mean(q, -2), 1-beta2t)      (:317-318, :238-239)
        U = (rsqrt(r / mean(r, -1))[..., None] * rsqrt(c)[..., None, :]) * g         (:320, :331; base/optimizer.py:404-409)
    else:
        v = lerp(v, q, 1-beta2t) ; U = rsqrt(v) * g                                   (:323-324, :331)
    U = U / clamp_min(RMS(U) / clip_threshold, 1) * lr_t                              (:333-334, :266-271)
    beta1 (0.9 by DEFAULT): m = lerp(m, U.to(momentum_dtype), 1-beta1); U = m.to(p's dtype)
                            m is kept in momentum_dtype, bfloat16 by DEFAULT           (:129, :336-343, :273-280)
    p -= U                                                                             (:348, :282)

``pytorch_optimizer_stages`` replaces the Keras stages (reference/dialects/base.py) where
this differs; ``DIFFERENCES`` names them. The gradient's own preprocessing (maximize, coupled
weight decay) comes before every stage and is done by ``PytorchOptimizerAdaFactor.apply``.

Paths: with ``foreach=None`` (the default) the CPU step is ``_step_foreach`` (``can_use_foreach``
is true for any dense real group, base/optimizer.py:467-506; adafactor.py:372); ``foreach=False``
is ``_step_per_param``. They compute the same formulas; they differ in the parameter scale
only: ``torch._foreach_maximum(RMS, eps2)`` (:163) keeps a tensor of the parameter dtype and
propagates a NaN RMS, while Python's ``max(eps2, RMS)`` (:161) returns the Python float eps2
when RMS <= eps2 or is NaN (then lr_t and the decay factor are Python doubles).

Scalars follow torch's rules: a Python double multiplying a tensor is rounded to the tensor
dtype first; RMS is a 0-d tensor of the parameter dtype; ``lerp`` on bfloat16/float16 computes
in float32 and rounds once (ATen ``lerp``: |w| < 0.5: a + w*(b - a), else b - (b - a)*(1 - w)).

Not modelled: ``ams_bound=True`` (an extra state ``exp_avg_sq_hat``, :139-140, :326-329; the
dialect refuses it), ``cautious`` (a keyword argument, :343-346), parameters without a
gradient (skipped, the group's step still counts), complex/sparse parameters, and torch's
own summation order and fused multiply-adds on CPU (ulp-level; the float64 residue is
``conformance/expectations/pytorch-optimizer.txt``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from reference.adafactor_step import Hyperparameters
from reference.dialects.base import DialectOptimizer, Stages, keras_step_only, statistic_zeros
from reference.dialects.keras import keras_stages
from reference.dialects.torch import moment_update as torch_lerp
from reference.dialects.transformers import precondition as transformers_precondition
from reference.dialects.transformers import second_moment as transformers_second_moment
from reference.dialects.transformers import torch_rms
from reference.state import Kind

#: momentum_dtype names the dialect takes (pytorch_optimizer takes a torch.dtype; a vector's config a string).
MOMENTUM_DTYPES = ("bfloat16", "float16", "float32", "float64")


class NegativeLRError(Exception):
    """pytorch_optimizer.base.exception.NegativeLRError (base/exception.py:32-38): same class name, same text."""

    def __init__(self, lr, lr_type: str = ""):
        note = lr_type if lr_type else "learning rate"
        super().__init__(f"{note} must be positive. ({lr} > 0)")


def momentum_dtype(name: str) -> np.dtype:
    """NumPy dtype of a ``momentum_dtype`` name (bfloat16 through ml_dtypes)."""
    if name not in MOMENTUM_DTYPES:
        raise TypeError(f"pytorch_optimizer dialect: momentum_dtype={name!r} is not one of {MOMENTUM_DTYPES}")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


_momentum_numpy_dtype = momentum_dtype  # the constructor's argument shadows the name


def _opmath(dtype: np.dtype) -> np.dtype:
    """The dtype torch's CPU kernels compute a dtype's elementwise ops in (float32 for half types)."""
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


@dataclass(frozen=True)
class PytorchOptimizerArguments:
    """What the stages read of ``AdaFactor``'s arguments (adafactor.py:39-90)."""

    beta1: Optional[float] = 0.9
    beta2_cap: float = 0.999
    decay_rate: float = -0.8
    weight_decay: float = 0.0
    weight_decouple: bool = True
    fixed_decay: bool = False
    clip_threshold: float = 1.0
    scale_parameter: bool = True
    relative_step: bool = True
    warmup_init: bool = False
    eps1: float = 1e-30  # as the optimizer holds it: 1e-7 when momentum_dtype is float16 (:68)
    eps2: float = 1e-3
    momentum_dtype: str = "bfloat16"
    foreach: Optional[bool] = None
    maximize: bool = False

    def keras_hyperparameters(self) -> Hyperparameters:
        """The Keras stage it shares (q = g*g + eps1) takes its eps1."""
        return Hyperparameters(beta_2_decay=self.decay_rate, epsilon_1=self.eps1, epsilon_2=self.eps2,
                               clip_threshold=self.clip_threshold, relative_step=self.relative_step)


# ------------------------------------------------------------------ layout
def initial_moments(p: PytorchOptimizerArguments, stages: Stages, x: np.ndarray) -> dict:
    """exp_avg_sq_row/col (r, c) for ndim >= 2, exp_avg_sq (v) otherwise, in the parameter
    dtype, and exp_avg (momentum) in momentum_dtype when beta1 is set; all zero
    (adafactor.py:125-137). No full V for a factored parameter."""
    moments = statistic_zeros(stages, x)
    if p.beta1 is not None:
        moments[Kind.MOMENTUM] = np.zeros(x.shape, dtype=momentum_dtype(p.momentum_dtype))
    return moments


# ------------------------------------------------------------------ step size
def relative_step(p: PytorchOptimizerArguments, dtype, t: int, lr):
    """rho = min(1e-6*t if warmup_init else 1e-2, 1/math.sqrt(t)) when relative_step, lr
    ignored; else lr itself, uncapped (``get_relative_step_size``, adafactor.py:143-148).
    A Python float."""
    if p.relative_step:
        min_step = 1e-6 * t if p.warmup_init else 1e-2
        return min(min_step, 1.0 / math.sqrt(t))
    if lr is None:
        raise TypeError("pytorch_optimizer dialect: relative_step=False needs a float lr, got lr=None "
                        "(AdaFactor multiplies by it at the first step, adafactor.py:161)")
    return float(lr)


def parameter_scale(p: PytorchOptimizerArguments, dtype, x: np.ndarray):
    """max(eps2, ||p||/sqrt(N)) with scale_parameter, else 1.0 (``get_lr``, adafactor.py:150-166;
    RMS: base/optimizer.py:379-388). foreach (the default): ``torch._foreach_maximum(RMS, eps2)``
    (:163), a tensor of the parameter dtype, NaN propagated. foreach=False: Python's
    ``max(eps2, RMS)`` (:161): RMS when RMS > eps2, else the Python float eps2 (a NaN RMS too)."""
    if not p.scale_parameter:
        return 1.0
    value = torch_rms(x)
    if p.foreach is False:
        return value if value > dtype(p.eps2) else float(p.eps2)
    return np.maximum(value, dtype(p.eps2))


# ------------------------------------------------------------------ second moment
def beta_2(p: PytorchOptimizerArguments, dtype, t: int):
    """The lerp weight 1 - beta2t with beta2t = min(beta2_cap, 1 - t**decay_rate), Python
    doubles (adafactor.py:363, :285, :196). Keras: beta = 1 - t**decay, uncapped."""
    beta2t = min(p.beta2_cap, 1.0 - math.pow(t, p.decay_rate))
    return 1.0 - beta2t


def clip(p: PytorchOptimizerArguments, dtype, u: np.ndarray):
    """den = clamp_min(RMS(U) / clip_threshold, 1), RMS = ||U||/sqrt(N) a tensor of the
    dtype (adafactor.py:333, :266-268); clamp keeps a NaN. Keras: max(1, sqrt(mean U²)/d)."""
    with np.errstate(all="ignore"):
        return u, np.maximum(torch_rms(u) / dtype(p.clip_threshold), dtype(1.0))


def weight_decay(dtype, x: np.ndarray, lr, decays: bool) -> np.ndarray:
    """No decay here: AdaFactor decays with the full step size lr_t, which only ``apply``
    sees (the decayed p feeds nothing else: the scale was taken before, adafactor.py:298-309)."""
    return x


def momentum_lerp(p: PytorchOptimizerArguments, dtype, m: np.ndarray, u: np.ndarray) -> tuple:
    """exp_avg.lerp_(U.to(momentum_dtype), 1 - beta1); U = exp_avg.to(p's dtype)
    (adafactor.py:336-343, :273-280): U rounded to momentum_dtype, the lerp computed in
    torch's opmath (float32 for bfloat16/float16) with the weight a Python double rounded to
    it, rounded once back to momentum_dtype, then widened (or rounded) to the dtype."""
    mdtype = m.dtype
    op = _opmath(mdtype)
    w = 1.0 - p.beta1
    with np.errstate(all="ignore"):
        if op == np.float32:
            new = lerp_fma32(m.astype(op), u.astype(mdtype).astype(op), w)
        else:
            new = torch_lerp(op.type, m.astype(op), u.astype(mdtype).astype(op), w)
    m = np.asarray(new).astype(mdtype)
    return m, m.astype(dtype)


def lerp_fma32(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """torch.lerp on float32 (and on bfloat16/float16 through float32) on CPU: ATen's
    ``lerp_vec`` is ``fmadd(w, b - a, a)`` for |w| < 0.5, else ``fmadd(w - 1, b - a, b)``, one
    rounding (measured: torch 2.13.0 CPU float32 lerp_ differs from the unfused formula by an
    ulp on about a quarter of the elements, which a bfloat16 momentum would turn into a whole
    bfloat16 ulp). Emulated exactly: b - a rounded to float32, the product of two float32
    values exact in float64, the sum rounded in float64 and then to float32 (a double
    rounding that differs from the fused result only on a float32 tie, about 2**-29 of
    the time)."""
    w = np.float32(weight)
    d = (b - a).astype(np.float64)
    if abs(weight) < 0.5:
        out = np.float64(w) * d + a.astype(np.float64)
    else:
        out = np.float64(w - np.float32(1.0)) * d + b.astype(np.float64)
    return out.astype(np.float32)


def apply(p: PytorchOptimizerArguments, stages: Stages, dtype, x, x_scale, u, den, alpha, lr, moments: dict,
          decays: bool):
    """p *= 1 - wd*lr_t (decoupled; fixed_decay: 1 - wd; lr_t a tensor of the dtype or a
    Python double, as ``get_lr`` returned it, base/optimizer.py:203-207, 574-582); then
    U = (U / den) * lr_t (:334, :270-271); the beta1 lerp (``momentum_lerp``); p -= U (:348)."""
    with np.errstate(all="ignore"):
        if p.weight_decay != 0.0 and p.weight_decouple and decays:
            factor = 1.0 - p.weight_decay * (1.0 if p.fixed_decay else alpha)
            x = x * dtype(factor)
        u = (u / den) * dtype(alpha)
        if p.beta1 is not None:
            m, u = momentum_lerp(p, dtype, moments[Kind.MOMENTUM], u)
            moments = {**moments, Kind.MOMENTUM: m}
        return np.asarray(x - u), moments


def stage_functions(p: PytorchOptimizerArguments) -> dict:
    """stage name -> pytorch_optimizer's function for it, bound to ``p``."""
    return dict(
        initial_moments=partial(initial_moments, p),
        relative_step=partial(relative_step, p),
        parameter_scale=partial(parameter_scale, p),
        scale_after_decay=False,  # RMS(p) before the decay (adafactor.py:298 vs :302-309)
        weight_decay=weight_decay,
        beta_2=partial(beta_2, p),
        moment_update=torch_lerp,
        second_moment=transformers_second_moment,
        precondition=transformers_precondition,
        clip=partial(clip, p),
        apply=partial(apply, p),
    )


def pytorch_optimizer_stages(p: PytorchOptimizerArguments) -> Stages:
    """``AdaFactor.step`` on one parameter: the Keras stages (with its eps1) with every
    pytorch_optimizer difference (``DIFFERENCES``) swapped in."""
    return keras_stages(p.keras_hyperparameters(), None).replace(**stage_functions(p))


#: name -> (the stages that implement it, what and where). Every stage replaced is in exactly
#: one entry; Keras with all of them replaced is ``pytorch_optimizer_stages``.
DIFFERENCES = OrderedDict([
    ("relative_step", (("relative_step",),
                       "rho = min(1e-2 or 1e-6*t, 1/sqrt t) ignoring lr (relative_step=True, the default), or lr "
                       "uncapped with relative_step=False (adafactor.py:143-148); Keras: min(lr, 1/sqrt t)")),
    ("parameter_scale", (("parameter_scale",),
                         "maximum(||p||/sqrt N, eps2) (foreach; Python max with foreach=False), or 1 with "
                         "scale_parameter=False (adafactor.py:150-166, base/optimizer.py:379-388); Keras: "
                         "max(eps2, sqrt(mean p^2))")),
    ("scale_before_decay", (("scale_after_decay",),
                            "RMS(p) taken before weight decay (adafactor.py:298 vs :302-309); Keras: after")),
    ("beta2_capped_lerp", (("beta_2", "moment_update"),
                           "beta2t = min(betas[1], 1 - t**decay_rate), cap 0.999 by default, and the EMAs as "
                           "torch.lerp(old, new, 1 - beta2t) (adafactor.py:363, :317-323); Keras: "
                           "beta*old + (1-beta)*new, uncapped")),
    ("factored_rsqrt", (("second_moment", "precondition"),
                        "U = rsqrt(r/mean r) (x) rsqrt(c) * g, no V kept (adafactor.py:320-331, "
                        "base/optimizer.py:404-409); Keras: g / sqrt((r/mean r) (x) c), V kept")),
    ("clip_rms_as_norm", (("clip",),
                          "den = clamp_min(||U||/sqrt(N)/d, 1) (adafactor.py:333); Keras: sqrt(mean U^2)")),
    ("update_tail", (("initial_moments", "weight_decay", "apply"),
                     "p *= 1 - wd*lr_t with the FULL step size lr_t (decoupled, default), U*lr_t, then "
                     "m = lerp(m, U, 1-beta1) in momentum_dtype (beta1 0.9 and bfloat16 by default), p -= m "
                     "(adafactor.py:302-309, :334-348); Keras: no momentum, p -= p*wd*lr (raw lr)")),
])


class PytorchOptimizerAdaFactor(DialectOptimizer):
    """``pytorch_optimizer.AdaFactor`` over NumPy variables: its arguments, defaults and
    construction errors (adafactor.py:39-90). ``momentum_dtype`` is a dtype name."""

    dialect = "pytorch_optimizer"
    framework = "pytorch_optimizer.AdaFactor"
    spec = "pytorch-optimizer 4.1.0, pytorch_optimizer/optimizer/adafactor.py"

    def __init__(self, lr: Optional[float] = 1e-3, betas=(0.9, 0.999), decay_rate: float = -0.8,
                 weight_decay: float = 0.0, weight_decouple: bool = True, fixed_decay: bool = False,
                 clip_threshold: float = 1.0, ams_bound: bool = False, scale_parameter: bool = True,
                 relative_step: bool = True, warmup_init: bool = False, eps1: float = 1e-30, eps2: float = 1e-3,
                 momentum_dtype: str = "bfloat16", foreach: Optional[bool] = None, maximize: bool = False):
        super().__init__()
        # The checks of adafactor.py:60-64 in order, same classes and messages
        # (base/optimizer.py:603-618, 654-681).
        if lr is not None and lr < 0.0:
            raise NegativeLRError(lr)
        betas = tuple(betas)
        if betas[0] is not None and not 0.0 <= betas[0] < 1.0:
            raise ValueError("beta1 must be in the range [0.0, 1.0)")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError("beta2 must be in the range [0.0, 1.0)")
        if len(betas) >= 3 and betas[2] is not None and not 0.0 <= betas[2] <= 1.0:
            raise ValueError("beta3 must be in the range [0.0, 1.0]")
        for value, name in ((weight_decay, "weight_decay"), (eps1, "eps1"), (eps2, "eps2")):
            if value is not None and value < 0.0:
                raise ValueError(f"{name} must be non-negative")
        if len(betas) != 2:
            raise NotImplementedError("pytorch_optimizer dialect: AdaFactor.step unpacks two betas (adafactor.py:358)")
        if ams_bound:
            raise NotImplementedError("pytorch_optimizer dialect: ams_bound=True is not modelled (adafactor.py:326-329)")
        mdtype = str(momentum_dtype)
        _momentum_numpy_dtype(mdtype)  # an unknown name fails here
        self.config = dict(lr=lr, betas=list(betas), decay_rate=decay_rate, weight_decay=weight_decay,
                           weight_decouple=weight_decouple, fixed_decay=fixed_decay, clip_threshold=clip_threshold,
                           ams_bound=ams_bound, scale_parameter=scale_parameter, relative_step=relative_step,
                           warmup_init=warmup_init, eps1=eps1, eps2=eps2, momentum_dtype=mdtype, foreach=foreach,
                           maximize=maximize)
        self.arguments = PytorchOptimizerArguments(
            beta1=betas[0], beta2_cap=betas[1], decay_rate=decay_rate, weight_decay=weight_decay,
            weight_decouple=weight_decouple, fixed_decay=fixed_decay, clip_threshold=clip_threshold,
            scale_parameter=scale_parameter, relative_step=relative_step, warmup_init=warmup_init,
            eps1=1e-7 if mdtype == "float16" else eps1, eps2=eps2, momentum_dtype=mdtype, foreach=foreach,
            maximize=maximize)
        self.stages = pytorch_optimizer_stages(self.arguments)
        self.rms_floor = eps2 if scale_parameter else None
        self.has_weight_decay = bool(weight_decay)

    def learning_rate(self, t: int) -> float:
        """rho_t: the relative step, or lr (``get_relative_step_size``, adafactor.py:143-148)."""
        return relative_step(self.arguments, np.float64, t, self.config["lr"])

    def get_config(self) -> dict:
        return {**self.config, "betas": list(self.config["betas"])}

    def apply(self, grads, variables) -> None:
        """The gradient's preprocessing, then the stages: g = -g under maximize (adafactor.py:198-199,
        :292), then with weight_decouple=False the coupled decay g += wd*p (base/optimizer.py:208-209,
        570-572), both on the parameter before this step."""
        p = self.arguments
        if p.maximize or (p.weight_decay != 0.0 and not p.weight_decouple):
            decays = self.decays if self.decays is not None else [True] * len(variables)
            out = []
            for x, g, d in zip(variables, grads, decays):
                if g is None:
                    out.append(g)
                    continue
                x = np.asarray(x)
                g = np.asarray(g).astype(x.dtype, copy=True)
                with np.errstate(all="ignore"):
                    if p.maximize:
                        g = -g
                    if p.weight_decay != 0.0 and not p.weight_decouple and p.weight_decay > 0.0 and d:
                        g = g + x * x.dtype.type(p.weight_decay)
                out.append(g)
            grads = out
        super().apply(grads, variables)


def from_keras(config: dict) -> Optional[dict]:
    """AdaFactor arguments closest to a Keras spec config, or None when it does not map.

    eps1/eps2 = epsilon_1/epsilon_2, decay_rate = beta_2_decay, clip_threshold as is,
    scale_parameter=True, betas=(None, 0.999) (no momentum; the cap binds only after step
    ~5600 at decay -0.8), momentum_dtype float32 (unused), weight_decay (None -> 0.0; scaled
    by lr_t, a measured difference). Step size: learning_rate == 0.01 maps to
    relative_step=True (rho = min(1e-2, 1/sqrt t), Keras's exactly); any other float to
    relative_step=False, lr=learning_rate (equal while lr <= 1/sqrt t). Schedules, callables,
    gradient clipping, EMA, loss scaling and accumulation do not map (None).
    """
    if not keras_step_only(config):
        return None
    lr = config.get("learning_rate", 0.001)
    if not isinstance(lr, float) or lr < 0:
        return None
    wd = config.get("weight_decay")
    out = dict(betas=[None, 0.999], decay_rate=float(config.get("beta_2_decay", -0.8)),
               weight_decay=0.0 if wd is None else float(wd), clip_threshold=float(config.get("clip_threshold", 1.0)),
               scale_parameter=True, warmup_init=False, eps1=float(config.get("epsilon_1", 1e-30)),
               eps2=float(config.get("epsilon_2", 1e-3)), momentum_dtype="float32")
    if out["weight_decay"] < 0 or out["eps1"] < 0 or out["eps2"] < 0:
        return None
    if lr == 1e-2:
        out.update(lr=1e-3, relative_step=True)
    else:
        out.update(lr=lr, relative_step=False)
    return out


__all__ = ["DIFFERENCES", "MOMENTUM_DTYPES", "NegativeLRError", "PytorchOptimizerAdaFactor",
           "PytorchOptimizerArguments", "from_keras", "momentum_dtype", "pytorch_optimizer_stages"]
