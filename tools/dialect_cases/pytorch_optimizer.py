"""Golden vectors of the pytorch_optimizer dialect (reference/dialects/pytorch_optimizer.py):
``pytorch_optimizer.AdaFactor``'s own arguments (pytorch-optimizer 4.1.0), ids
``pytorch_optimizer/<file>/<topic>/<variant>``. Every variable has a gradient on every step.
``momentum_dtype`` is a dtype name; its default, bfloat16, quantises the update of every
lane (adafactor.py:55, :336-343)."""

from __future__ import annotations

from tools.vector_cases import SHAPES, Case, bursts, constant, normal, with_values

CASES: list[Case] = []
_MANUAL = {"lr": 0.1, "relative_step": False}  # an external lr: the other switches then show alone
_PLAIN = {**_MANUAL, "betas": [None, 0.999]}  # ... and no momentum


def case(id_, description, config=None, **kwargs) -> None:
    kwargs.setdefault("steps", 4)  # short: the whole corpus must stay small (tests/corpus/test_vectors.py)
    CASES.append(Case(f"pytorch_optimizer/{id_}", description, dict(config or {}), dialect="pytorch_optimizer",
                      **kwargs))


# --- shapes: every shape class under the defaults (relative step 1e-2, scaling, beta1 0.9 in bfloat16)
for name, shape in SHAPES.items():
    case(f"shapes/defaults/{name}", f"AdaFactor defaults on one variable of shape {shape}",
         variables=(("w", shape),), steps=5)
    if name in ("scalar", "vector", "tall", "row", "3d"):
        case(f"shapes/no_momentum/{name}", f"lr=0.1, relative_step=False, betas=(None, 0.999) on shape {shape}",
             _PLAIN, variables=(("w", shape),), steps=5)

# --- each argument at non-default values (kernel + bias)
for lr in (0.5, 1e-4):
    case(f"arguments/lr/{lr:g}", f"relative_step=False, lr={lr!r}: no 1/sqrt(t) cap",
         {"lr": lr, "relative_step": False, "betas": [None, 0.999]})
case("arguments/lr/ignored", "relative_step=True (default) ignores lr=0.5", {"lr": 0.5})
case("arguments/warmup_init/true", "warmup_init=True: rho = min(1e-6 t, 1/sqrt t)", {"warmup_init": True})
case("arguments/scale_parameter/false", "scale_parameter=False: lr_t = rho", {"scale_parameter": False})
case("arguments/scale_parameter/false_manual_lr", "scale_parameter=False with lr=0.1",
     {**_PLAIN, "scale_parameter": False})
for b1 in (0.9, 0.5, 0.0):
    case(f"arguments/beta1/{b1:g}", f"betas=({b1!r}, 0.999), momentum in float64: lerp of the scaled update",
         {**_MANUAL, "betas": [b1, 0.999], "momentum_dtype": "float64"})
case("arguments/beta1/none", "betas=(None, 0.999): no momentum", {"betas": [None, 0.999]})
for cap in (0.5, 0.7):  # 1 - t**-0.8 passes 0.5 at t = 3, 0.7 at t = 5
    case(f"arguments/beta2_cap/{cap:g}", f"betas=(None, {cap!r}): beta2t = min({cap!r}, 1 - t**-0.8) binds",
         {**_MANUAL, "betas": [None, cap]}, steps=6)
case("arguments/beta2_cap/zero", "betas=(None, 0.0): beta2t = 0, the statistics are this step's",
     {**_MANUAL, "betas": [None, 0.0]})
for md in ("float32", "float64", "float16", "bfloat16"):
    case(f"arguments/momentum_dtype/{md}", f"momentum_dtype={md}, beta1=0.9 (float16 also sets eps1 = 1e-7)",
         {**_MANUAL, "momentum_dtype": md})
for wd in (0.01, 0.5):
    case(f"arguments/weight_decay/{wd:g}", f"weight_decay={wd!r}, decoupled: p *= 1 - wd*lr_t",
         {**_PLAIN, "weight_decay": wd})
case("arguments/weight_decay/relative_step", "weight_decay=0.1 under the relative step and bfloat16 momentum",
     {"weight_decay": 0.1})
case("arguments/weight_decay/fixed_decay", "weight_decay=0.1, fixed_decay=True: p *= 1 - wd",
     {**_PLAIN, "weight_decay": 0.1, "fixed_decay": True})
case("arguments/weight_decay/coupled", "weight_decay=0.1, weight_decouple=False: g += wd*p before g*g",
     {**_PLAIN, "weight_decay": 0.1, "weight_decouple": False})
case("arguments/weight_decay/coupled_momentum", "coupled weight decay with beta1=0.9 in float64",
     {**_MANUAL, "weight_decay": 0.1, "weight_decouple": False, "momentum_dtype": "float64"})
for eps1 in (1e-3,):
    case(f"arguments/eps1/{eps1:g}", f"eps1={eps1!r} with small gradients", {**_PLAIN, "eps1": eps1},
         grads=normal(0.03))
for eps2 in (0.1, 0.0):
    case(f"arguments/eps2/{eps2:g}", f"eps2={eps2!r} with small variables", {**_PLAIN, "eps2": eps2}, init="small")
for d in (0.5, 0.1):
    case(f"arguments/clip_threshold/{d:g}", f"clip_threshold={d!r}", {**_PLAIN, "clip_threshold": d},
         grads=bursts())
for rate in (-0.5, -1.0):
    case(f"arguments/decay_rate/{rate:g}", f"decay_rate={rate!r}", {**_PLAIN, "decay_rate": rate})
case("arguments/maximize/true", "maximize=True: g = -g", {**_MANUAL, "maximize": True, "momentum_dtype": "float64"})
case("arguments/foreach/false", "foreach=False: the per-parameter path", {"foreach": False})
case("arguments/foreach/false_zero_variables", "foreach=False on zero variables: Python max(eps2, RMS) "
     "returns the float eps2", {"foreach": False, "weight_decay": 0.1}, init="zeros", steps=5)

# --- AdaFactor's own defaults: the config is empty (given_only), so a replay passes nothing and a port
# with a wrong default fails: relative_step True (rho = min(1e-2, 1/sqrt t), lr ignored), scale_parameter
# True, betas (0.9, 0.999) with the momentum in bfloat16, clip_threshold 1.0 (bursts make it bind),
# decay_rate -0.8, eps1 1e-30 against gradients of 1e-15, eps2 1e-3 on zero variables, no weight decay.
case("arguments/defaults/given_only", "AdaFactor(params): every default, gradient bursts",
     grads=bursts(every=3), steps=6, given_only=True)
case("arguments/defaults/given_only_zero_variables", "AdaFactor defaults on zero variables: eps2 = 1e-3 "
     "sets the step size", init="zeros", steps=5, given_only=True)
case("arguments/defaults/given_only_tiny_gradients", "AdaFactor defaults with gradients of 1e-15: eps1 = "
     "1e-30 is comparable to g*g", grads=normal(1e-15), steps=5, given_only=True)

# --- several variables, long runs
case("multi_variable/all_shapes", "one variable of every shape class, bfloat16 momentum and weight decay",
     {**_MANUAL, "weight_decay": 0.05}, variables=tuple(SHAPES.items()), steps=4)
_SMALL = (("w", (3, 2)), ("b", (2,)))  # long runs on small variables: the corpus must stay small
case("long_runs/defaults", "defaults for 30 steps: rho stays 1e-2, lr_t follows RMS(p), bfloat16 momentum",
     variables=_SMALL, steps=30)
case("long_runs/clipping_on_and_off", "gradient bursts every 4th step switch update clipping on and off",
     {**_PLAIN, "lr": 0.05}, grads=bursts(every=4, factor=30.0), variables=_SMALL, steps=30)

# --- special values
case("special_values/zero_gradients", "all-zero gradients: v = eps1, u = 0", grads=constant(0.0), steps=4)
case("special_values/zero_variables", "zero variables: RMS(p) = 0 < eps2 decides the step size", init="zeros",
     steps=4)
case("special_values/ones_variables_constant_gradient", "ones and a constant gradient", init="ones",
     grads=constant(0.25), steps=4)
case("special_values/tiny_gradients", "gradients of 1e-15: eps1 = 1e-30 is comparable to g*g",
     {"betas": [None, 0.999]}, grads=normal(1e-15), steps=4)
case("special_values/huge_gradients", "gradients of 1e160: g*g overflows to inf", {"betas": [None, 0.999]},
     grads=normal(1e160), steps=4)
case("special_values/nan_gradient", "a NaN in one gradient element at step 3", {"betas": [None, 0.999]},
     grads=with_values(normal(), {(2, 0): float("nan")}), steps=4)
case("special_values/inf_gradient", "+inf and -inf gradient elements", {"betas": [None, 0.999]},
     grads=with_values(normal(), {(1, 1): float("inf"), (3, 0): float("-inf")}), steps=4)
case("special_values/negative_zero_gradients", "gradients of -0.0", grads=constant(-0.0), steps=3)
case("special_values/subnormal_gradients", "subnormal gradients", {"betas": [None, 0.999]},
     grads=normal(1e-310), steps=3)

# --- invalid configurations (adafactor.py:60-64; base/optimizer.py:603-618, 654-681)
INVALID = {
    "negative_lr": ({"lr": -0.1}, "NegativeLRError", "learning rate must be positive"),
    "beta1_one": ({"betas": [1.0, 0.999]}, "ValueError", "beta1 must be in the range [0.0, 1.0)"),
    "beta1_negative": ({"betas": [-0.1, 0.999]}, "ValueError", "beta1 must be in the range"),
    "beta2_one": ({"betas": [0.9, 1.0]}, "ValueError", "beta2 must be in the range [0.0, 1.0)"),
    "negative_weight_decay": ({"weight_decay": -0.1}, "ValueError", "weight_decay must be non-negative"),
    "negative_eps1": ({"eps1": -1e-30}, "ValueError", "eps1 must be non-negative"),
    "negative_eps2": ({"eps2": -1e-3}, "ValueError", "eps2 must be non-negative"),
}
for name, (config, cls, text) in INVALID.items():
    case(f"invalid/{name}", f"rejected at construction: {config}", config, steps=0,
         error={"class": cls, "message_contains": text, "at": "construction"})

# Cases whose arguments timm.optim.Adafactor computes exactly, for its lane (conformance/TIMM.md).
from tools.dialect_cases.timm import PYTORCH_OPTIMIZER_CASES as _TIMM_CASES  # noqa: E402

CASES += _TIMM_CASES
