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

The step t is torch's float32 ``step`` counter (``step_counter``: it stops at 2**24) and
complex parameters raise torch's error (``MODELLED``); tensor learning rates, parameters
without a gradient, parameter groups and LR schedulers are left out (``UNSUPPORTED``,
reference/dialects/gaps.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from reference import reductions
from reference.dialects.base import DialectOptimizer, Stages, statistic_zeros
from reference.dialects.gaps import Gap, has_exclusion
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
        # A tensor lr: torch checks its size first (_adafactor.py:36-37); the dialect takes
        # none (UNSUPPORTED["tensor_lr"]), refused by name before any comparison with it.
        if np.ndim(lr) and np.size(lr) != 1:
            raise ValueError("Tensor lr must be 1-element")
        _check_lr_type(lr)
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

    def apply(self, grads, variables) -> None:
        """One step, as torch takes it: complex parameters raise torch's RuntimeError
        (_adafactor.py:84-85, MODELLED["complex_parameters"]), and the step counter is
        torch's float32 ``step`` tensor (MODELLED["step_float32_freeze"]): the step t is
        ``step_counter(iterations)`` and the state's iterations become t, so from 2**24 on
        the counter stops where float32 rounding holds it, as torch's does."""
        for x in variables:
            if np.iscomplexobj(x):
                raise RuntimeError("Adafactor does not support complex parameters")
        if self.state is None:
            self.build(variables)
        before = self.state.iterations
        t = step_counter(before)
        self.state.iterations = t - 1  # DialectOptimizer.apply steps at iterations + 1
        try:
            super().apply(grads, variables)
        except BaseException:
            self.state.iterations = before
            raise


def step_counter(iterations: int) -> int:
    """torch's step after ``step_t += 1`` (_adafactor.py:376-377) from a state whose step is
    ``iterations``: ``step`` is a 0-d tensor of ``_get_scalar_dtype()``, float32 unless the
    default dtype is float64 (_adafactor.py:98, optimizer.py:210-215), so it holds
    float32(iterations) and the increment rounds to float32: exact below 2**24, and from
    2**24 on it stops growing (2**24 + 1 rounds back to 2**24, ties to even)."""
    f32 = np.float32
    return int(f32(f32(iterations) + f32(1)))


def _check_lr_type(lr) -> None:
    """The dialect's lr is a Python number: a NumPy scalar or array of another dtype stands
    for torch's tensor lr, which changes the scalar arithmetic (UNSUPPORTED["tensor_lr"])."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"torch dialect: lr={lr!r} ({type(lr).__name__}) is not a Python number; "
                        "a tensor lr is unsupported (reference/dialects/torch.py UNSUPPORTED['tensor_lr'])")



_A = "torch/optim/_adafactor.py"

#: torch.optim.Adafactor's features this dialect does not model (reference/dialects/gaps.py;
#: rendered in conformance/DIVERGENCE.md; checked by tests/reference/test_unsupported_peers.py).
UNSUPPORTED = {
    "tensor_lr": Gap(
        feature="lr as a 1-element Tensor (float32 or float64)",
        framework="keeps the tensor (_to_scalar only squeezes it), so rho = min(lr, 1/t**0.5), alpha and the "
                  "decay factor 1 - lr*wd become 0-d tensors of lr's dtype: float32 for a float32 lr, even "
                  "for float64 parameters; a float64 tensor lr gives the float result exactly",
        how="the dialect's scalars are Python doubles; TorchAdafactor refuses an lr that is not a Python "
            "number (TypeError naming this entry) and, as torch, an lr array of more than one element "
            "(ValueError 'Tensor lr must be 1-element', where the dialect used to fail by accident on "
            "comparing an array)",
        evidence=((f"{_A}:27", "lr: float | Tensor"), (f"{_A}:36-37", "Tensor lr must be 1-element"),
                  (f"{_A}:364", "lr = _to_scalar(lr)"), (f"{_A}:380-381", "rho_t = min(lr"),
                  (f"{_A}:385", "param.mul_(1 - lr * weight_decay)"),
                  ("torch/optim/optimizer.py:241-242", "return x.squeeze()")),
        effect="float32 tensor lr against the float lr, float64 parameters, 8 steps on (5, 3) + (3,): "
               "8.7e-10 (lr 1e-2) to 1.3e-7 (lr 1e-3, weight_decay 0.1) relative; float64 tensor lr: 0",
        vectors="not expressible: config.lr is a JSON number (conformance/vectorfile.py DIALECT_ARGUMENTS)"),
    "missing_gradients": Gap(
        feature="a parameter without a gradient on some steps (p.grad is None)",
        framework="skips the parameter: its state, and its own step counter, stay as they are, so parameters "
                  "of one optimizer count different steps",
        how="the dialect keeps one iteration count for all variables and needs every gradient "
            "(DialectOptimizer.apply raises ValueError on None)",
        evidence=((f"{_A}:82-83", "if p.grad is None"), (f"{_A}:98", 'state["step"] = torch.tensor(0.0'),
                  (f"{_A}:118", 'state_steps.append(state["step"])')),
        effect="not measured: each parameter's t is its own count of applied steps",
        vectors="not expressible: a dialect vector gives every variable a gradient on every step (the loader "
                "allows None only in Keras vectors flagged NONE_GRADIENT; conformance/vectorfile.py) and "
                "records one iterations count"),
    "param_groups": Gap(
        feature="parameter groups (different lr, eps, d, weight_decay per group), add_param_group",
        framework="runs the step once per group with that group's hyperparameters",
        how="a vector has one configuration; the gate's one per-variable option, exclude_from_weight_decay, "
            "would need a weight_decay=0 group in torch, which the torch adapter does not build: it skips such "
            "a vector with this entry (the dialect itself decays by ``build(decays=...)``)",
        evidence=((f"{_A}:50-59", "super().__init__(params, defaults)"),
                  (f"{_A}:136", "for group in self.param_groups"),
                  ("torch/optim/optimizer.py:1103", "def add_param_group")),
        effect="per group: the group's own arguments (any size)",
        vectors="not expressible (one config per vector), except exclude_from_weight_decay, which is detected "
                "and skipped",
        detect=has_exclusion),
    "lr_scheduler": Gap(
        feature="torch.optim.lr_scheduler schedulers (LambdaLR, StepLR, ...)",
        framework="the scheduler writes each group's lr between steps",
        how="the dialect's lr is one constant (TorchAdafactor.learning_rate); the vectors record none per step "
            "for torch",
        evidence=(("torch/optim/lr_scheduler.py:296-297", '_update_param_group_val(param_group, "lr", lr)'),),
        effect="the schedule's own values (any size)",
        vectors="not expressible: config.lr is one JSON number"),
}

#: Gaps once outside the dialect that it now models (same rendering and checks).
MODELLED = {
    "step_float32_freeze": Gap(
        feature="step counts past 2**24",
        framework="keeps step as a float32 0-d tensor (default dtype float32) and adds 1 each step: from 2**24 "
                  "on the sum rounds back (ties to even) and the counter stops, so rho, alpha and the lerp "
                  "weight stop changing",
        how="TorchAdafactor.apply steps at step_counter(iterations), the float32 increment, and stores it as "
            "the state's iterations; the torch adapter loads step as float32(iterations) and reads torch's step "
            "back as iterations. Matches real torch in float64 from 2**24 - 3 and 2**24 + 2 "
            "(tests/reference/test_unsupported_frameworks.py). Not modelled: a float64 default dtype (float64 step)",
        evidence=((f"{_A}:98", "dtype=_get_scalar_dtype()"), (f"{_A}:376-377", "step_t += 1"),
                  ("torch/optim/optimizer.py:210-215", "torch.float64 if torch.get_default_dtype() == torch.float64")),
        effect="t stays 2**24 instead of 2**24 + k: rho = t**-0.5 and the lerp weight t**-0.8 are off by k*3.0e-8 "
               "and k*4.8e-8 relative after k frozen steps",
        vectors="torch/special_values/step_counter_freeze: resumed at 2**24 - 2 (Case.start_iterations, "
                "recorded as initial_state.iterations; trajectory mode starts a resumed vector from its "
                "initial state, conformance/runner.py replay_states), 3 steps, the third at t = 2**24 again"),
    "complex_parameters": Gap(
        feature="complex parameters",
        framework="raises RuntimeError('Adafactor does not support complex parameters') at the step",
        how="TorchAdafactor.apply raises the same error (it used to compute them silently)",
        evidence=((f"{_A}:84-85", "Adafactor does not support complex parameters"),),
        effect="an error in both",
        vectors="not expressible: vector arrays are float64 bit patterns"),
}


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
