"""The torch dialect: what ``torch.optim.Adafactor`` (torch 2.13.0,
``torch/optim/_adafactor.py``) computes, as the Keras stages it does differently.

Mirrors the default single-tensor path, ``_single_tensor_adafactor`` (_adafactor.py:330-416);
the foreach path (_adafactor.py:454-599) computes the same formulas and lands within a few
ulp of it (tests/reference/test_dialect_torch.py). Line numbers below are of the installed 2.13.0 file.

Per parameter p with gradient G, step t (a per-parameter float32 tensor, _adafactor.py:98,
376-377), w = t**beta2_decay (:379), eps1 = finfo(p.dtype).eps when None (:372-373):

    rho   = min(lr, 1 / t**0.5)                                   python doubles (:380)
    alpha = max(eps2, ||p||_2 / sqrt(N)) * rho                    p BEFORE decay (:381)
    p    *= 1 - lr * wd                                           (:384-385)
    R     = lerp(R, ||G||_2^2 / m over the last axis, w)          (:393-396)
    C     = lerp(C, ||G||_2^2 / n over the row axis, w)           (:398-401)
    V     = (R outer C) / max(mean_rows(R), eps1)                 (:402-403)
    V     = lerp(V, G*G, w)                                       0-D/1-D (:407-410)
    U     = rsqrt(max(V, eps1^2)) * G                             (:413-414)
    denom = max(1, ||U||_2 / (sqrt(N) * d))                       (:415)
    p    += U * (-alpha / denom)                                  (:416)

G is the negated gradient under ``maximize`` (:367). Scalars (rho, alpha, denom, the decay
factor, w) are Python doubles, rounded to the parameter dtype only where a tensor op takes
them, as torch's ops do; every array op runs in the variable dtype (``dtype``).

What this emulation does not reproduce: CPU torch evaluates ``lerp`` and ``add_(alpha=)``
with fused multiply-adds (ATen LerpKernel.cpp, ufunc/add.h) and sums ``torch.norm`` /
``mean`` in its own vectorised order; both move float64 results by a few ulp.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from reference import reductions
from reference.dialects.base import DialectOptimizer, Stages, statistic_zeros
from reference.dialects.keras import keras_stages
from reference.state import Kind


def _norm(x: np.ndarray, axis=None, keepdims=False):
    """||x||_2 = sqrt(sum x*x), rounded to x's dtype (torch.norm, _adafactor.py:381, 394, 399,
    415): float16/bfloat16 squared, summed and rooted in float32 as ATen does
    (``reference.reductions.norm``), other dtypes in their own."""
    return reductions.norm(x, axis=axis, keepdims=keepdims)


@dataclass(frozen=True)
class TorchArguments:
    """What the torch stages read of ``torch.optim.Adafactor``'s arguments. ``eps1`` None
    means finfo(variable dtype).eps, resolved per step."""

    beta2_decay: float = -0.8
    eps1: Optional[float] = None
    eps2: float = 1e-3
    d: float = 1.0
    weight_decay: float = 0.0
    maximize: bool = False


def _eps1(p: TorchArguments, dtype) -> float:
    """eps1, or finfo(variable dtype).eps when None (_adafactor.py:372-373)."""
    if p.eps1 is None:
        try:
            return float(np.finfo(dtype).eps)
        except ValueError:  # bfloat16: NumPy's finfo does not know ml_dtypes types
            import ml_dtypes

            return float(ml_dtypes.finfo(dtype).eps)
    return float(p.eps1)


# ------------------------------------------------------------------ layout / state
def initial_moments(stages: Stages, x: np.ndarray) -> dict:
    """Zero state (_adafactor.py:95-113): r and c only for dim > 1 (torch keeps them as
    [..., n, 1] and [..., 1, m]; here squeezed), a full ``v`` only for 0-D/1-D."""
    return statistic_zeros(stages, x)


def second_moment(stages: Stages, dtype, q: np.ndarray, moments: dict, beta, axes) -> dict:
    """The EMAs of r, c (or v) only: torch builds V as a temporary each step and never
    stores it for a factored variable (_adafactor.py:402-403 vs 410)."""
    if axes is None:
        q = q.astype(moments[Kind.V].dtype, copy=False)  # grad * grad in the variable dtype (:407)
        return {**moments, Kind.V: np.asarray(stages.moment_update(dtype, moments[Kind.V], q, beta))}
    row, col = axes
    return {Kind.R: np.asarray(stages.moment_update(dtype, moments[Kind.R], stages.axis_mean(dtype, q, col), beta)),
            Kind.C: np.asarray(stages.moment_update(dtype, moments[Kind.C], stages.axis_mean(dtype, q, row), beta))}


# ------------------------------------------------------------------ step size
def relative_step(dtype, t: int, lr: float):
    """rho = min(lr, 1 / t**0.5) in Python doubles, t**0.5 via pow (_adafactor.py:380);
    Keras: min(lr, 1/sqrt(t)) in the variable dtype."""
    return min(lr, 1 / (float(t) ** 0.5))


def parameter_scale(p: TorchArguments, dtype, x: np.ndarray):
    """max(eps2, ||x||_2 / sqrt(N)) with Python's max and a double division
    (_adafactor.py:381): a NaN RMS gives eps2 (max keeps its first argument)."""
    return max(p.eps2, float(_norm(x)) / (x.size ** 0.5))


def weight_decay(p: TorchArguments, dtype, x: np.ndarray, lr: float, decays: bool) -> np.ndarray:
    """p * (1 - lr*wd), the factor a Python double (_adafactor.py:384-385);
    Keras: x - x*wd*lr."""
    if not p.weight_decay or not decays:
        return x
    return np.asarray(x * dtype(1 - lr * p.weight_decay))


# ------------------------------------------------------------------ second moment
def gradient_square(dtype, g: np.ndarray) -> np.ndarray:
    """G*G with no eps1 (_adafactor.py:407; the factored path squares inside the norm,
    :394, :399). Keras: g*g + eps1. For float16/bfloat16 the squares are returned exact,
    in float32 (a half-precision product fits float32), because that is what torch.norm
    sums on the factored path (``axis_mean``); the unfactored path rounds them to the
    variable dtype (``second_moment``), which is ``grad * grad`` in that dtype."""
    return np.square(g.astype(reductions.accumulator(g.dtype), copy=False))


def beta_2(p: TorchArguments, dtype, t: int):
    """The lerp weight w = t**beta2_decay, a Python double (_adafactor.py:379);
    Keras: beta = 1 - t**decay and 1 - beta, in the variable dtype."""
    return float(t) ** p.beta2_decay


def moment_update(dtype, old: np.ndarray, new: np.ndarray, beta):
    """torch.lerp(old, new, w) (_adafactor.py:396, 401, 408), ATen's two branches:
    |w| < 0.5: old + w*(new - old); else new - (new - old)*(1 - w). Written without FMA
    (CPU torch fuses them: a few ulp). At t = 1, w = 1 gives exactly ``new``."""
    w = dtype(beta)
    with np.errstate(all="ignore"):
        if abs(beta) < 0.5:
            return old + w * (new - old)
        return new - (new - old) * (dtype(1.0) - w)


def axis_mean(dtype, q: np.ndarray, axis: int) -> np.ndarray:
    """norm(G, dim).square_().div_(n) (_adafactor.py:394, 399): sqrt of the sum of G*G,
    rounded to the variable dtype, squared again (one more rounding), then divided by the
    count. In float16/bfloat16, q holds the exact float32 squares (``gradient_square``)
    and the sum and root are float32, as torch.norm computes them (``_norm``)."""
    norm = np.sqrt(reductions.total(q, axis=axis)).astype(dtype)
    return np.square(norm) / dtype(q.shape[axis])


def estimate(p: TorchArguments, dtype, r: np.ndarray, c: np.ndarray, axes) -> np.ndarray:
    """V = (r outer c) / max(mean_rows(r), eps1) (_adafactor.py:402-403): multiply first,
    then divide by the floored row mean. Keras: (r / mean(r)) outer c, no floor."""
    row, col = axes
    row_in_r = row if row < col else row - 1
    outer = np.expand_dims(r, col) * np.expand_dims(c, row)
    norm = np.maximum(reductions.mean(r, axis=row_in_r, keepdims=True), dtype(_eps1(p, dtype)))
    return outer / np.expand_dims(norm, col)


def precondition(p: TorchArguments, stages: Stages, dtype, g: np.ndarray, moments: dict, axes) -> np.ndarray:
    """U = rsqrt(max(V, eps1*eps1)) * G (_adafactor.py:413-414); V is rebuilt from r and
    c for a factored variable, and G is -grad under maximize (:367). rsqrt is 1/sqrt
    (ATen's CPU kernel). Keras: g / sqrt(V)."""
    v = moments[Kind.V] if axes is None else stages.estimate(dtype, moments[Kind.R], moments[Kind.C], axes)
    eps1 = _eps1(p, dtype)
    with np.errstate(all="ignore"):
        u = (dtype(1.0) / np.sqrt(np.maximum(v, dtype(eps1 * eps1))))
        return u * (-g if p.maximize else g)


# ------------------------------------------------------------------ update
def clip(p: TorchArguments, dtype, u: np.ndarray):
    """denom = max(1.0, ||U||_2 / (sqrt(N) * d)) in Python doubles (_adafactor.py:415):
    a NaN ratio gives 1.0. Keras: max(1, RMS(U)/d) in the variable dtype."""
    return u, max(1.0, float(_norm(u)) / ((u.size ** 0.5) * p.d))


def apply(stages: Stages, dtype, x, x_scale, u, den, alpha, lr, moments: dict, decays: bool):
    """p.add_(U, alpha=-alpha/denom): p + U * s with s a Python double rounded to the
    dtype (_adafactor.py:416). Keras: x - alpha * (U / den)."""
    with np.errstate(all="ignore"):
        return np.asarray(x + u * dtype(-alpha / den)), moments


def torch_stages(p: TorchArguments) -> Stages:
    """``_single_tensor_adafactor`` (_adafactor.py:330-416): the Keras stages with every
    torch difference (``DIFFERENCES``) swapped in."""
    return keras_stages().replace(**stage_functions(p))


def stage_functions(p: TorchArguments) -> dict:
    """stage name -> torch's function for it, bound to ``p``."""
    return dict(
        initial_moments=initial_moments,
        second_moment=second_moment,
        relative_step=relative_step,
        parameter_scale=partial(parameter_scale, p),
        scale_after_decay=False,  # alpha is computed from p before the weight decay (:381 before :384-385)
        weight_decay=partial(weight_decay, p),
        gradient_square=gradient_square,
        beta_2=partial(beta_2, p),
        moment_update=moment_update,
        axis_mean=axis_mean,
        estimate=partial(estimate, p),
        precondition=partial(precondition, p),
        clip=partial(clip, p),
        apply=apply,
    )


#: name -> (the stages that make the difference, what it is and where). Keras with every
#: entry's stages replaced == ``torch_stages`` (tests/reference/test_dialect_torch.py).
DIFFERENCES = {
    "eps1 is a floor, not added to g²": (
        ("gradient_square", "estimate"),
        "g*g without eps1; V = (r⊗c)/max(mean r, eps1), product first (_adafactor.py:402-403, 407)"),
    "U = rsqrt(max(V, eps1²))·g, V not stored": (
        ("precondition", "second_moment", "initial_moments"),
        "eps1² floor, rsqrt times g, V rebuilt from r, c; maximize negates g (_adafactor.py:367, 413-414)"),
    "row/col statistics as ‖g‖²/n": (
        ("axis_mean",),
        "norm(g, dim).square_().div_(n): sqrt then square (_adafactor.py:394, 399)"),
    "EMA as lerp with weight t**beta2_decay": (
        ("beta_2", "moment_update"),
        "lerp's two branches, w a python double (_adafactor.py:379, 396, 401, 408)"),
    "step size in python doubles, RMS = ‖x‖/√N": (
        ("relative_step", "parameter_scale"),
        "rho = min(lr, 1/t**0.5), alpha = max(eps2, ‖p‖/√N)·rho (_adafactor.py:380-381)"),
    "alpha from x before weight decay": (
        ("scale_after_decay",),
        "alpha is computed on p before p.mul_ (_adafactor.py:381 vs 384-385)"),
    "weight decay p *= 1 - lr·wd": (
        ("weight_decay",),
        "multiplicative, python-double factor (_adafactor.py:384-385); Keras x - x·wd·lr"),
    "update p += U·(-alpha/denom), denom = max(1, ‖U‖/(√N·d))": (
        ("clip", "apply"),
        "python-double scalars, one multiply-add (_adafactor.py:415-416)"),
}


class TorchAdafactor(DialectOptimizer):
    """``torch.optim.Adafactor``'s arguments, defaults and validation (_adafactor.py:24-49),
    stepped by ``torch_stages``. ``foreach`` is recorded, not emulated (same formulas)."""

    dialect = "torch"
    framework = "torch.optim.Adafactor"
    spec = "torch 2.13.0, torch/optim/_adafactor.py (_single_tensor_adafactor)"

    def __init__(self, lr: float = 1e-2, beta2_decay: float = -0.8, eps=(None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, foreach: Optional[bool] = None, maximize: bool = False):
        super().__init__()
        # The checks and messages of _adafactor.py:38-49, in torch's order.
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 >= beta2_decay:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not 0.0 <= eps[0]:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= eps[1]:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= d:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        eps1, eps2 = eps
        self.config = dict(lr=lr, beta2_decay=beta2_decay, eps=[eps1, eps2], d=d, weight_decay=weight_decay,
                           foreach=foreach, maximize=maximize)
        self.arguments = TorchArguments(beta2_decay=beta2_decay, eps1=eps1, eps2=eps2, d=d,
                                        weight_decay=weight_decay, maximize=maximize)
        self.stages = torch_stages(self.arguments)
        self.rms_floor = eps2
        self.has_weight_decay = bool(weight_decay)

    def learning_rate(self, t: int) -> float:
        return self.config["lr"]

    def get_config(self) -> dict:
        return {**self.config, "eps": list(self.config["eps"])}


#: Keras arguments that do not reach the step, or that torch has no counterpart for
#: (mapping them requires their default value).
_KERAS_DEFAULTS = {"clipnorm": None, "clipvalue": None, "global_clipnorm": None, "use_ema": False,
                   "loss_scale_factor": None, "gradient_accumulation_steps": None}
_KERAS_IGNORED = {"name", "relative_step", "ema_momentum", "ema_overwrite_frequency"}


def from_keras(config: dict) -> Optional[dict]:
    """torch arguments for a Keras spec configuration, or None when it does not map: a
    non-float learning rate (schedule, callable), gradient clipping, EMA, accumulation, loss
    scaling, an unknown key, or values torch rejects. epsilon_1 is not mapped: torch's eps1
    is a floor, not a term in g² (see DIFFERENCES), so torch's default (None) is used."""
    for key, value in config.items():
        if key in _KERAS_DEFAULTS:
            if value != _KERAS_DEFAULTS[key] and not (key == "use_ema" and value is None):
                return None
        elif key not in _KERAS_IGNORED and key not in (
                "learning_rate", "beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold", "weight_decay"):
            return None
    lr = config.get("learning_rate", 0.001)
    if not isinstance(lr, float) or isinstance(lr, bool):
        return None
    out = dict(lr=lr, beta2_decay=float(config.get("beta_2_decay", -0.8)),
               eps=(None, float(config.get("epsilon_2", 1e-3))), d=float(config.get("clip_threshold", 1.0)),
               weight_decay=float(config.get("weight_decay") or 0.0))
    if not (out["lr"] >= 0 and out["beta2_decay"] <= 0 and out["eps"][1] >= 0 and out["d"] >= 1
            and out["weight_decay"] >= 0):
        return None
    return out
