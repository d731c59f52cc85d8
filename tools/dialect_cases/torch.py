"""Golden vectors of the torch dialect (reference/dialects/torch.py): ``torch.optim.Adafactor``'s
own arguments (``config`` is torch's constructor keywords), every variable stepped every step.

Files: ``arguments`` (each argument at two or three values), ``shapes`` (every shape class of
tools/vector_cases.SHAPES), ``special_values`` and ``invalid`` (torch's constructor errors,
torch/optim/_adafactor.py:38-49)."""

from __future__ import annotations

from tools.vector_cases import SHAPES, Case, bursts, constant, normal, signed_uniform, with_values

CASES: list[Case] = []

#: eps1=None is finfo(variable dtype).eps (torch/optim/_adafactor.py:372-373): 2.2e-16 in the
#: float64 golden, 1.2e-7 in a float32 lane. Where the floors max(mean r, eps1) or
#: max(V, eps1^2) bind, a lower-precision lane legitimately computes another function.
EPS1_FLAG = "EPS1_DTYPE_DEFAULT_BINDS"
NOTES = {EPS1_FLAG: "eps1=None (finfo(dtype).eps) and an eps1 floor binds at float32's eps, not at "
                    "float64's: the float64 golden does not describe lower-precision lanes"}


def case(id_: str, description: str, config: dict | None = None, **kwargs) -> None:
    kwargs.setdefault("steps", 8)
    CASES.append(Case(f"torch/{id_}", description, dict(config or {}), dialect="torch", **kwargs))


# --- arguments: each one alone, on a (5, 3) kernel and a (3,) bias
case("arguments/defaults/all", "torch defaults: lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1")
for lr in (1e-3, 0.5):
    case(f"arguments/lr/{lr:g}", f"lr={lr!r}" + (": 1/sqrt(t) caps rho from t=5" if lr == 0.5 else ""),
         {"lr": lr}, steps=9)
for decay in (-0.5, -1.0):
    case(f"arguments/beta2_decay/{decay:g}", f"beta2_decay={decay!r}: lerp weight t**{decay!r}",
         {"lr": 0.1, "beta2_decay": decay})
case("arguments/eps1/explicit_binding", "eps1=1.0: the floors max(mean r, eps1) and max(V, eps1^2) bind "
     "for gradients of 0.03", {"lr": 0.1, "eps": [1.0, 1e-3]}, grads=normal(0.03))
case("arguments/eps1/explicit_small", "eps1=1e-10: set explicitly, never binds",
     {"lr": 0.1, "eps": [1e-10, 1e-3]}, grads=normal(0.03))
case("arguments/eps1/none_tiny_gradients", "eps1=None (finfo(float64).eps) with gradients of 1e-9: "
     "eps1^2 ~ 4.9e-32 against V ~ 1e-18", {"lr": 0.1, "eps": [None, 1e-3]}, grads=normal(1e-9),
     flags=(EPS1_FLAG,))
for eps2 in (0.1, 0.0):
    case(f"arguments/eps2/{eps2:g}", f"eps2={eps2!r} with small variables (RMS(x) ~ 0.01)",
         {"lr": 0.1, "eps": [None, eps2]}, init="small")
for d in (2.0, 1.0):
    case(f"arguments/d/{d:g}", f"d={d!r} with gradient bursts: clipping switches on and off",
         {"lr": 0.1, "d": d}, grads=bursts(), steps=9)
for wd in (0.01, 0.1):
    case(f"arguments/weight_decay/{wd:g}", f"weight_decay={wd!r}: p *= 1 - lr*wd, alpha from p before",
         {"lr": 0.5, "weight_decay": wd})
case("arguments/weight_decay/eps2_binds", "weight decay with RMS(x) < eps2: alpha = eps2*rho",
     {"lr": 0.5, "weight_decay": 0.1}, init="tiny")
case("arguments/maximize/true", "maximize=True: the gradient is negated", {"lr": 0.1, "maximize": True})
case("arguments/foreach/true", "foreach=True: the same numbers as the single-tensor loop",
     {"lr": 0.1, "foreach": True})
case("arguments/foreach/true_weight_decay", "foreach=True with weight decay",
     {"lr": 0.5, "weight_decay": 0.05, "foreach": True})

# --- the framework's own defaults: the config is empty (given_only), so a replay passes nothing and a
# port with a wrong default fails: lr 1e-2 caps rho, d = 1 binds on some steps, zero variables make eps2
# = 1e-3 the floor, gradients of 1e-17 make eps1 = finfo(dtype).eps floor V; beta2_decay -0.8 from step 2,
# weight_decay 0 and maximize False (a port that decays or negates changes the result). foreach only
# chooses torch's kernel.
case("arguments/defaults/given_only", "torch.optim.Adafactor(params): every default",
     steps=6, given_only=True)
case("arguments/defaults/given_only_zero_variables", "torch defaults on zero variables: eps2 = 1e-3 sets the "
     "step size", init="zeros", steps=5, given_only=True)
case("arguments/defaults/given_only_tiny_gradients", "torch defaults with gradients of 1e-17: eps1=None "
     "(finfo(float64).eps) floors V", grads=normal(1e-17), steps=5, given_only=True, flags=(EPS1_FLAG,))

# --- shapes: every shape class, defaults and a relative-step-bound lr
for name, shape in SHAPES.items():
    case(f"shapes/defaults/{name}", f"torch defaults on one variable of shape {shape}",
         variables=(("w", shape),))
    case(f"shapes/lr_0.5/{name}", f"lr=0.5 on shape {shape}: 1/sqrt(t) caps rho from t=5",
         {"lr": 0.5}, variables=(("w", shape),))

# --- a reduction well past 256 elements (torch.norm accumulates half precision in float32)
case("shapes/long/last_axis_1024", "a (1, 1024) matrix: r is ||g||^2/1024 over 1024 columns, ||p|| and ||U|| "
     "over 1024 elements", {"lr": 0.1}, variables=(("w", (1, 1024)),), grads=signed_uniform(), steps=2)

# --- special values
case("special_values/zero_gradients", "all-zero gradients: V floored at eps1^2, U = 0",
     grads=constant(0.0), steps=6)
case("special_values/zero_variables", "zero variables: RMS(x) = 0 < eps2 decides the step size",
     {"lr": 0.5}, init="zeros", steps=6)
case("special_values/tiny_gradients", "gradients of 1e-15: g*g ~ 1e-30, no eps1 in the square",
     grads=normal(1e-15), steps=6, flags=(EPS1_FLAG,))
case("special_values/tiny_gradients_eps1_floor", "gradients of 1e-17: V below eps1^2 = 4.9e-32 is floored",
     grads=normal(1e-17), steps=6, flags=(EPS1_FLAG,))
case("special_values/huge_gradients", "gradients of 1e160: the squared norm overflows to inf",
     grads=normal(1e160), steps=6)
case("special_values/inf_gradient", "+inf and -inf gradient elements",
     grads=with_values(normal(), {(1, 1): float("inf"), (3, 0): float("-inf")}), steps=6)

# --- invalid: torch's constructor checks (_adafactor.py:38-49)
INVALID = {
    "lr_negative": ({"lr": -0.1}, "Learning rate should be >= 0 but is: -0.1"),
    "beta2_decay_positive": ({"beta2_decay": 0.5}, "beta2_decay should be <= 0 but is: 0.5"),
    "eps1_negative": ({"eps": [-1e-30, 1e-3]}, "epsilon1 should be >= 0 but is: -1e-30"),
    "eps2_negative": ({"eps": [None, -1e-3]}, "epsilon2 should be >= 0 but is: -0.001"),
    "d_below_one": ({"d": 0.5}, "Clipping threshold d should be >= 1 but is: 0.5"),
    "weight_decay_negative": ({"weight_decay": -0.01}, "weight_decay should be >= 0 but is: -0.01"),
}
for name, (config, message) in INVALID.items():
    case(f"invalid/{name}/construction", f"rejected at construction: {config}", config, steps=0,
         error={"class": "ValueError", "message_contains": message, "at": "construction"})

# --- the step counter: torch keeps ``step`` as a float32 tensor (_adafactor.py:98, 376-377), which
# stops at 2**24 (reference/dialects/torch.py MODELLED["step_float32_freeze"]): resumed 2 steps
# before it, the counter goes 2**24-1, 2**24, 2**24. Zero statistics at the start; eps1 explicit, so
# no lane's finfo(dtype).eps default binds against r ~ t**-0.8 ~ 1.7e-6.
case("special_values/step_counter_freeze", "resumed at step 2**24-2: torch's float32 step counter stops at 2**24 "
     "(step 3 runs at t = 2**24 again)", {"lr": 0.1, "eps": [1e-30, 1e-3]},
     variables=(("dense/kernel", (2, 3)),), steps=3, start_iterations=2 ** 24 - 2)
