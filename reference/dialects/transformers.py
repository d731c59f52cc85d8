"""HuggingFace ``transformers.optimization.Adafactor`` (PyTorch) as a dialect of the Keras step.

Read from transformers 5.23.0, ``transformers/optimization.py`` (class ``Adafactor``,
lines 1057-1294; "optimization.py:N" below is a line of that file). One step on a
parameter p with gradient g at its step t (a per-parameter Python int, incremented before
use, :1256):

    RMS    = ||p||_2 / sqrt(N)                              p BEFORE decay/update (:1191-1192, :1257)
    rho    = min(1e-2, 1/sqrt(t))        relative_step      (:1175-1178; lr is ignored)
           = min(1e-6 t, 1/sqrt(t))      ... and warmup_init
           = lr                          relative_step=False (no 1/sqrt(t) cap)
    lr_t   = max(eps2, RMS) * rho        scale_parameter     (:1179-1182)
           = rho                         scale_parameter=False
    beta2t = 1 - t**decay_rate           Python double       (:1260)
    q      = g**2 + eps1                                    (:1261)
    factored (ndim >= 2: last two axes, :1186):
        r <- r*beta2t + (1-beta2t)*mean(q, -1) ; c <- c*beta2t + (1-beta2t)*mean(q, -2)  (:1266-1267)
        u = (rsqrt(r / mean(r, -1))[..., None] * rsqrt(c)[..., None, :]) * g           (:1195-1200, :1270-1271)
    else:
        v <- v*beta2t + (1-beta2t)*q ; u = rsqrt(v) * g                                (:1275-1276)
    u = u / clamp(RMS(u)/d, min=1)                          (:1278)
    u = u * lr_t                                            (:1279)
    beta1:        m <- m*beta1 + (1-beta1)*u ; u = m         (:1281-1284)
    weight_decay: p <- p + p*(-wd*lr_t)                      FULL step size lr_t (:1286-1287)
    p <- p - u                                              (:1289)

No full second moment is kept for a factored parameter (state: exp_avg_sq_row/col only,
:1236-1238), and there is no per-parameter weight-decay mask. ``transformers_stages``
replaces exactly the Keras stages (reference/dialects/base.py) where this differs;
``DIFFERENCES`` names them. Scalars follow torch's rules for a float32 parameter: a Python
double multiplying a tensor is rounded to the tensor dtype first, while ``RMS`` is a 0-d
tensor of the parameter dtype, so ``lr_t`` is a tensor when ``max`` picks it (:1181).

Not modelled (ulp-level, measured by tests/reference/test_dialect_transformers.py): torch's
``add_(x, alpha=a)`` is a fused multiply-add on CPU for contiguous runs of 8 or more
(the EMAs :1266-1275, momentum :1283, weight decay :1287), and torch's ``mean``/``norm``
sum in their own order. fp16/bf16 parameters are stepped as transformers steps them: through
an fp32 copy with fp32 state, rounded back once (:1220-1221, :1237-1240, :1252-1254,
:1291-1292; ``TransformersAdafactor.apply``, ``lane_state_dtypes``, MODELLED). What the
dialect leaves out is ``UNSUPPORTED``.
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
from reference.dialects.gaps import Gap, has_exclusion
from reference.dialects.keras import keras_stages
from reference.state import Kind


def torch_rms(x: np.ndarray):
    """``tensor.norm(2) / (tensor.numel() ** 0.5)`` (optimization.py:1191-1192), in x's dtype:
    sqrt(sum x^2) (torch.norm: float16/bfloat16 summed and rooted in float32, rounded once,
    ``reference.reductions.norm``), then one division by sqrt(N) rounded to x's dtype (a 0-d
    array)."""
    x = np.asarray(x)
    f = x.dtype.type
    norm = reductions.norm(x)
    return np.asarray(norm / f(x.size ** 0.5), dtype=x.dtype)


@dataclass(frozen=True)
class TransformersArguments:
    """What the transformers stages read of ``transformers.optimization.Adafactor``'s
    arguments (optimization.py:1142-1171)."""

    lr: Optional[float] = None
    eps: tuple = (1e-30, 1e-3)
    clip_threshold: float = 1.0
    decay_rate: float = -0.8
    beta1: Optional[float] = None
    weight_decay: float = 0.0
    scale_parameter: bool = True
    relative_step: bool = True
    warmup_init: bool = False

    def keras_hyperparameters(self) -> Hyperparameters:
        """The Keras stages transformers shares (g*g + eps1 and the EMA) take its values."""
        return Hyperparameters(beta_2_decay=self.decay_rate, epsilon_1=self.eps[0], epsilon_2=self.eps[1],
                               clip_threshold=self.clip_threshold, relative_step=self.relative_step)


# ------------------------------------------------------------------ layout
def initial_moments(p: TransformersArguments, stages: Stages, x: np.ndarray) -> dict:
    """exp_avg_sq_row/col (r, c) for a factored parameter, exp_avg_sq (v) otherwise, and
    exp_avg (momentum) when beta1 is set; all zero (optimization.py:1230-1242)."""
    moments = statistic_zeros(stages, x)
    if p.beta1 is not None:
        moments[Kind.MOMENTUM] = np.zeros_like(x)
    return moments


# ------------------------------------------------------------------ step size
def relative_step(p: TransformersArguments, dtype, t: int, lr):
    """rho = min(1e-6*t if warmup_init else 1e-2, 1/sqrt(t)) when relative_step, ignoring
    lr; else lr itself, uncapped (optimization.py:1175-1178). A Python float, as in torch."""
    if p.relative_step:
        min_step = 1e-6 * t if p.warmup_init else 1e-2
        return min(min_step, 1.0 / math.sqrt(t))
    if lr is None:
        raise TypeError("transformers dialect: relative_step=False needs a float lr, got lr=None "
                        "(transformers raises TypeError at the first step, optimization.py:1182)")
    return float(lr)


def parameter_scale(p: TransformersArguments, dtype, x: np.ndarray):
    """max(eps2, ||p||/sqrt(N)) with scale_parameter, else 1.0 (optimization.py:1179-1181).
    Python's ``max(eps2, RMS)`` keeps eps2 unless RMS > eps2 (so a NaN RMS gives eps2) and
    returns either the Python float eps2 or the 0-d RMS tensor of the parameter dtype."""
    if not p.scale_parameter:
        return 1.0
    value = torch_rms(x)
    return value if value > dtype(p.eps[1]) else float(p.eps[1])


# ------------------------------------------------------------------ second moment
def beta_2(p: TransformersArguments, dtype, t: int):
    """beta2t = 1 - t**decay_rate and 1 - beta2t in Python doubles, each rounded once to
    the parameter dtype when torch multiplies by it (optimization.py:1260, :1266-1275).
    Keras computes both in the variable dtype; identical in float64."""
    beta2t = 1.0 - math.pow(t, p.decay_rate)
    return dtype(beta2t), dtype(1.0 - beta2t)


def second_moment(stages: Stages, dtype, q: np.ndarray, moments: dict, beta, axes) -> dict:
    """EMA of the row/column means of q, or of q (optimization.py:1266-1267, :1275); unlike
    Keras no full V is formed or kept for a factored parameter."""
    if axes is None:
        return {**moments, Kind.V: np.asarray(stages.moment_update(dtype, moments[Kind.V], q, beta))}
    row, col = axes
    r = stages.moment_update(dtype, moments[Kind.R], stages.axis_mean(dtype, q, col), beta)
    c = stages.moment_update(dtype, moments[Kind.C], stages.axis_mean(dtype, q, row), beta)
    return {**{k: a for k, a in moments.items() if k is not Kind.V}, Kind.R: r, Kind.C: c}


def precondition(stages: Stages, dtype, g: np.ndarray, moments: dict, axes) -> np.ndarray:
    """U = (rsqrt(r / mean(r, -1))[..., None] * rsqrt(c)[..., None, :]) * g for a factored
    parameter (``_approx_sq_grad``, optimization.py:1195-1200, :1270-1271), rsqrt(v) * g
    otherwise (:1276). rsqrt is 1/sqrt, as torch computes it on CPU."""
    one = dtype(1.0)
    if axes is None:
        return (one / np.sqrt(moments[Kind.V])) * g
    row, col = axes
    r, c = moments[Kind.R], moments[Kind.C]
    row_in_r = row if row < col else row - 1  # r lacks the column axis
    r_factor = np.expand_dims(one / np.sqrt(r / reductions.mean(r, axis=row_in_r, keepdims=True)), col)
    c_factor = np.expand_dims(one / np.sqrt(c), row)
    return (r_factor * c_factor) * g


# ------------------------------------------------------------------ update
def clip(p: TransformersArguments, dtype, u: np.ndarray):
    """den = clamp(RMS(U) / d, min=1) with RMS = ||U||/sqrt(N) (optimization.py:1278);
    clamp propagates NaN like Keras's maximum."""
    return u, np.maximum(dtype(1.0), torch_rms(u) / dtype(p.clip_threshold))


def weight_decay(dtype, x: np.ndarray, lr, decays: bool) -> np.ndarray:
    """No decay before the step: transformers decays inside the update, with lr_t (``apply``)."""
    return x


def apply(p: TransformersArguments, stages: Stages, dtype, x, x_scale, u, den, alpha, lr, moments: dict,
          decays: bool):
    """u = (U/den) * lr_t; with beta1: m = m*beta1 + (1-beta1)*u, u = m; then
    p + p*(-wd*lr_t) (weight_decay != 0) and p - u (optimization.py:1278-1289)."""
    u = (u / den) * dtype(alpha)
    if p.beta1 is not None:
        m = moments[Kind.MOMENTUM] if Kind.MOMENTUM in moments else np.zeros_like(u)
        m = m * dtype(p.beta1) + dtype(1 - p.beta1) * u
        moments = {**moments, Kind.MOMENTUM: m}
        u = m
    if p.weight_decay and decays:  # transformers: `!= 0`; None is Keras's "off"
        x = x + x * dtype(-p.weight_decay * alpha)
    return np.asarray(x - u), moments


def stage_functions(p: TransformersArguments) -> dict:
    """stage name -> transformers' function for it, bound to ``p``."""
    return dict(
        relative_step=partial(relative_step, p),
        parameter_scale=partial(parameter_scale, p),
        scale_after_decay=False,  # RMS(p) is taken on p before weight decay (optimization.py:1257 vs :1287)
        beta_2=partial(beta_2, p),
        second_moment=second_moment,
        precondition=precondition,
        clip=partial(clip, p),
        initial_moments=partial(initial_moments, p),
        weight_decay=weight_decay,
        apply=partial(apply, p),
    )


def transformers_stages(p: TransformersArguments) -> Stages:
    """``transformers.optimization.Adafactor.step``: the Keras stages (with its eps and decay
    rate) with every transformers difference (``DIFFERENCES``) swapped in."""
    return keras_stages(p.keras_hyperparameters(), p.weight_decay).replace(**stage_functions(p))


#: name -> (the stages that implement it, what and where). Every stage transformers replaces
#: is in exactly one entry; Keras with all of them replaced is ``transformers_stages``.
DIFFERENCES = OrderedDict([
    ("relative_step", (("relative_step",),
                       "rho = min(1e-2 or 1e-6*t, 1/sqrt t) ignoring lr, or lr uncapped with relative_step=False "
                       "(optimization.py:1175-1178); Keras: min(lr, 1/sqrt t)")),
    ("parameter_scale", (("parameter_scale",),
                         "max(eps2, ||p||/sqrt N), or 1 with scale_parameter=False (optimization.py:1179-1181, "
                         ":1191-1192); Keras: max(eps2, sqrt(mean p^2))")),
    ("scale_before_decay", (("scale_after_decay",),
                            "RMS(p) taken before weight decay (optimization.py:1257 vs :1287); Keras: after")),
    ("beta_2_in_double", (("beta_2",),
                          "beta2t = 1 - t**decay_rate and 1 - beta2t in Python doubles, rounded to the dtype "
                          "(optimization.py:1260); Keras: in the variable dtype (same in float64)")),
    ("factored_rsqrt", (("second_moment", "precondition"),
                        "U = rsqrt(r/mean r) (x) rsqrt(c) * g, no V kept (optimization.py:1195-1200, :1270-1276); "
                        "Keras: g / sqrt((r/mean r) (x) c)")),
    ("clip_rms_as_norm", (("clip",),
                          "den = clamp(||U||/sqrt(N)/d, min=1) (optimization.py:1278); Keras: RMS as "
                          "sqrt(mean U^2)")),
    ("update_tail", (("initial_moments", "weight_decay", "apply"),
                     "u*lr_t, then beta1 EMA of it, then p += p*(-wd*lr_t) with the FULL step size lr_t, then "
                     "p -= u (optimization.py:1279-1289); Keras: p -= p*wd*lr (raw lr) before the step")),
])


class TransformersAdafactor(DialectOptimizer):
    """``transformers.optimization.Adafactor`` over float64 NumPy variables: its arguments,
    defaults and construction errors (optimization.py:1142-1171)."""

    dialect = "transformers"
    framework = "transformers.optimization.Adafactor"
    spec = "transformers 5.23.0, transformers/optimization.py:1057-1294"

    def __init__(self, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                 weight_decay=0.0, scale_parameter=True, relative_step=True, warmup_init=False):
        super().__init__()
        # The two checks of optimization.py:1155-1158, same classes and messages.
        if lr is not None and relative_step:
            raise ValueError("Cannot combine manual `lr` and `relative_step=True` options")
        if warmup_init and not relative_step:
            raise ValueError("`warmup_init=True` requires `relative_step=True`")
        eps = tuple(eps)
        self.config = dict(lr=lr, eps=eps, clip_threshold=clip_threshold, decay_rate=decay_rate, beta1=beta1,
                           weight_decay=weight_decay, scale_parameter=scale_parameter,
                           relative_step=relative_step, warmup_init=warmup_init)
        self.arguments = TransformersArguments(lr=lr, eps=eps, clip_threshold=clip_threshold,
                                               decay_rate=decay_rate, beta1=beta1, weight_decay=weight_decay,
                                               scale_parameter=scale_parameter, relative_step=relative_step,
                                               warmup_init=warmup_init)
        self.stages = transformers_stages(self.arguments)
        self.rms_floor = eps[1]
        self.has_weight_decay = bool(weight_decay)

    def learning_rate(self, t: int) -> float:
        """rho_t: the relative step, or lr (``_get_lr`` before the parameter scale, :1175-1178)."""
        return relative_step(self.arguments, np.float64, t, self.config["lr"])

    def get_config(self) -> dict:
        return {**self.config, "eps": list(self.config["eps"])}

    def zero_state(self, variables):
        """Zero state in the dtype transformers keeps it: float32 for float16/bfloat16
        parameters (optimization.py:1235-1240: zeros ``.to(grad)``, the float32 gradient)."""
        return super().zero_state([np.asarray(x).astype(compute_dtype(np.asarray(x).dtype), copy=False)
                                   for x in variables])

    def apply(self, grads, variables) -> None:
        """One step; a float16/bfloat16 parameter is stepped through a float32 copy (its
        gradient widened exactly, ``grad.float()``), with float32 state, and the result is
        rounded back to its dtype once (``p.copy_(p_data_fp32)``): optimization.py:1220-1221,
        :1252-1254, :1291-1292 (MODELLED["half_precision_fp32_copy"])."""
        arrays = [np.asarray(x) for x in variables]
        work = [x.astype(np.float32) if compute_dtype(x.dtype) != x.dtype else x for x in arrays]
        if all(w is x for w, x in zip(work, arrays)):
            return super().apply(grads, variables)
        super().apply(grads, work)
        for x, w in zip(variables, work):
            if w is not x:
                x[...] = w  # round to nearest even, as the copy_ does


HALF_DTYPES = ("float16", "bfloat16")


def compute_dtype(dtype) -> np.dtype:
    """The dtype transformers steps a parameter of ``dtype`` in: float32 for float16 and
    bfloat16 (optimization.py:1253-1254), the dtype itself otherwise."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.name in HALF_DTYPES else dtype


def lane_state_dtypes(dtype: str) -> dict:
    """{Kind: dtype} of the state transformers keeps in a dtype other than the lane's: float32
    statistics and momentum in the float16/bfloat16 lanes (optimization.py:1235-1240). The
    transformers adapter and the reference adapter declare it to the runner."""
    if dtype in HALF_DTYPES:
        return {kind: np.dtype(np.float32) for kind in (Kind.R, Kind.C, Kind.V, Kind.MOMENTUM)}
    return {}



_O = "transformers/optimization.py"

#: transformers.optimization.Adafactor's features this dialect does not model
#: (reference/dialects/gaps.py; rendered in conformance/DIVERGENCE.md; checked by
#: tests/reference/test_unsupported_peers.py).
UNSUPPORTED = {
    "missing_gradients": Gap(
        feature="a parameter without a gradient on some steps (p.grad is None)",
        framework="skips the parameter; its own step (a Python int in its state) does not advance",
        how="the dialect keeps one iteration count for all variables and needs every gradient "
            "(DialectOptimizer.apply raises ValueError on None)",
        evidence=((f"{_O}:1217-1218", "if p.grad is None"), (f"{_O}:1256", 'state["step"] += 1')),
        effect="not measured: each parameter's t (relative step, beta2t) is its own count of applied steps",
        vectors="not expressible: a dialect vector gives every variable a gradient on every step and records "
                "one iterations count"),
    "param_groups": Gap(
        feature="parameter groups (lr, eps, weight_decay, ... per group)",
        framework="runs the step once per group with that group's hyperparameters; there is no per-parameter "
                  "weight-decay mask, so excluding a parameter needs a weight_decay=0 group",
        how="a vector has one configuration; the transformers adapter builds no groups and skips a vector "
            "that excludes variables from weight decay with this entry (the dialect itself decays by "
            "``build(decays=...)``)",
        evidence=((f"{_O}:1215", "for group in self.param_groups"),
                  (f"{_O}:1286-1287", 'if group["weight_decay"] != 0:')),
        effect="per group: the group's own arguments (any size)",
        vectors="not expressible (one config per vector), except exclude_from_weight_decay, which is detected "
                "and skipped",
        detect=has_exclusion),
    "lr_scheduler": Gap(
        feature="torch LR schedulers on the optimizer (relative_step=False), AdafactorSchedule",
        framework="_get_lr reads the group's lr at every step, so a scheduler that writes it changes the step; "
                  "AdafactorSchedule only reports it",
        how="the dialect's lr is one constant (relative_step=False) or the relative step",
        evidence=((f"{_O}:1174-1178", 'rel_step_sz = param_group["lr"]'),
                  (f"{_O}:1297", "class AdafactorSchedule(LambdaLR)")),
        effect="the schedule's own values (any size)",
        vectors="not expressible: config.lr is one JSON number or null"),
}

#: Gaps once outside the dialect that it now models (same rendering and checks).
MODELLED = {
    "half_precision_fp32_copy": Gap(
        feature="float16 and bfloat16 parameters",
        framework="steps them through a float32 copy (gradient widened, float32 statistics and momentum) and "
                  "rounds the result back into the parameter once per step",
        how="TransformersAdafactor.apply and zero_state (float32 copy and state), lane_state_dtypes (the "
            "adapters declare the float32 state to the runner); matches real transformers in both half lanes "
            "(tests/reference/test_unsupported_frameworks.py)",
        evidence=((f"{_O}:1220-1221", "grad = grad.float()"), (f"{_O}:1237", ".to(grad)"),
                  (f"{_O}:1253-1254", "p_data_fp32 = p_data_fp32.float()"), (f"{_O}:1291-1292", "p.copy_(p_data_fp32)")),
        effect="the half lanes' statistics in float32 instead of the lane dtype (the dialect used to run them "
               "in float16/bfloat16 throughout)",
        vectors="expressible: every transformers vector in the float16 and bfloat16 lanes"),
}


def from_keras(config: dict) -> Optional[dict]:
    """transformers arguments closest to a Keras spec config, or None when it does not map.

    eps = (epsilon_1, epsilon_2), decay_rate = beta_2_decay, clip_threshold as is,
    scale_parameter=True (Keras always scales), weight_decay (None -> 0.0; transformers
    scales it by lr_t, a measured difference). Step size: Keras's rho = min(lr, 1/sqrt t)
    is transformers' relative step exactly when lr = 1e-2, so learning_rate == 0.01 maps to
    relative_step=True (lr=None); any other float maps to relative_step=False, lr=learning_rate,
    which agrees with Keras while lr <= 1/sqrt(t) (the ``relative_step`` difference measures
    the missing cap). Keras's relative_step is a no-op and is dropped. Schedules, callables,
    gradient clipping, EMA, loss scaling and accumulation do not map (None); neither does an
    argument this function does not know.
    """
    if not keras_step_only(config):
        return None
    lr = config.get("learning_rate", 0.001)
    if not isinstance(lr, float):
        return None
    wd = config.get("weight_decay")
    out = dict(eps=[float(config.get("epsilon_1", 1e-30)), float(config.get("epsilon_2", 1e-3))],
               clip_threshold=float(config.get("clip_threshold", 1.0)),
               decay_rate=float(config.get("beta_2_decay", -0.8)), beta1=None,
               weight_decay=0.0 if wd is None else float(wd), scale_parameter=True, warmup_init=False)
    if lr == 1e-2:
        out.update(lr=None, relative_step=True)
    else:
        out.update(lr=lr, relative_step=False)
    return out


__all__ = ["DIFFERENCES", "MODELLED", "UNSUPPORTED", "TransformersAdafactor", "compute_dtype", "lane_state_dtypes",
           "TransformersArguments", "from_keras", "torch_rms",
           "transformers_stages"]
