"""Golden vectors of the transformers dialect (reference/dialects/transformers.py):
``transformers.optimization.Adafactor``'s own arguments, ids
``transformers/<file>/<topic>/<variant>``. Every variable has a gradient on every step
(transformers counts steps per parameter)."""

from __future__ import annotations

from tools.vector_cases import SHAPES, Case, bursts, constant, normal, with_values

CASES: list[Case] = []
_MANUAL = {"lr": 0.1, "relative_step": False}  # an external lr: the other switches then show alone


def case(id_, description, config=None, **kwargs) -> None:
    CASES.append(Case(f"transformers/{id_}", description, dict(config or {}), dialect="transformers", **kwargs))


# --- shapes: every shape class under the defaults (relative step 1e-2, parameter scaling)
for name, shape in SHAPES.items():
    case(f"shapes/defaults/{name}", f"transformers defaults on one variable of shape {shape}",
         variables=(("w", shape),), steps=8)
    case(f"shapes/manual_lr_beta1/{name}", f"lr=0.1, relative_step=False, beta1=0.9 on shape {shape}",
         {**_MANUAL, "beta1": 0.9}, variables=(("w", shape),), steps=8)

# --- each argument at non-default values (kernel + bias)
for lr in (0.5, 0.01, 1e-4):
    case(f"arguments/lr/{lr:g}", f"relative_step=False, lr={lr!r}: no 1/sqrt(t) cap",
         {"lr": lr, "relative_step": False})
case("arguments/warmup_init/true", "warmup_init=True: rho = min(1e-6 t, 1/sqrt t)", {"warmup_init": True})
case("arguments/warmup_init/no_scale", "warmup_init=True, scale_parameter=False",
     {"warmup_init": True, "scale_parameter": False})
case("arguments/scale_parameter/false", "scale_parameter=False: lr_t = rho", {"scale_parameter": False})
case("arguments/scale_parameter/false_manual_lr", "scale_parameter=False with lr=0.1 (the T5 fine-tuning setting)",
     {**_MANUAL, "scale_parameter": False})
for b1 in (0.9, 0.5, 0.0):
    case(f"arguments/beta1/{b1:g}", f"beta1={b1!r}: EMA of the lr-scaled update", {**_MANUAL, "beta1": b1})
for wd in (0.01, 0.5):
    case(f"arguments/weight_decay/{wd:g}", f"weight_decay={wd!r}, scaled by the full step size lr_t",
         {**_MANUAL, "weight_decay": wd})
case("arguments/weight_decay/relative_step", "weight_decay=0.1 under the relative step", {"weight_decay": 0.1})
case("arguments/weight_decay/beta1", "weight_decay=0.1 with beta1=0.9", {**_MANUAL, "weight_decay": 0.1, "beta1": 0.9})
for eps in ((1e-10, 1e-3), (1e-3, 1e-3)):
    case(f"arguments/eps/eps1_{eps[0]:g}", f"eps={eps!r} with small gradients", {**_MANUAL, "eps": eps},
         grads=normal(0.03))
for eps in ((1e-30, 0.1), (1e-30, 0.0)):
    case(f"arguments/eps/eps2_{eps[1]:g}", f"eps={eps!r} with small variables", {**_MANUAL, "eps": eps},
         init="small")
case("arguments/eps/list", "eps given as a list", {**_MANUAL, "eps": [1e-30, 1e-2]})
for d in (0.5, 2.0, 0.1):
    case(f"arguments/clip_threshold/{d:g}", f"clip_threshold={d!r}", {**_MANUAL, "clip_threshold": d},
         grads=bursts())
for d in (-0.5, -1.0, -0.2):
    case(f"arguments/decay_rate/{d:g}", f"decay_rate={d!r}", {**_MANUAL, "decay_rate": d})

# --- transformers' own defaults: the config is empty (given_only), so a replay passes nothing and a port
# with a wrong default fails: relative_step True (rho = min(1e-2, 1/sqrt t)), scale_parameter True (zero
# variables make eps2 = 1e-3 the floor), clip_threshold 1.0 (bursts make it bind), decay_rate -0.8 from
# step 2, eps1 1e-30 against gradients of 1e-15, beta1 None, weight_decay 0.0, warmup_init False.
case("arguments/defaults/given_only", "Adafactor(params): every default, gradient bursts",
     grads=bursts(every=3), steps=6, given_only=True)
case("arguments/defaults/given_only_zero_variables", "transformers defaults on zero variables: eps2 = 1e-3 "
     "sets the step size", init="zeros", steps=5, given_only=True)
case("arguments/defaults/given_only_tiny_gradients", "transformers defaults with gradients of 1e-15: eps1 = "
     "1e-30 is comparable to g*g", grads=normal(1e-15), steps=5, given_only=True)

# --- several variables, long runs
case("multi_variable/all_shapes", "one variable of every shape class, beta1 and weight decay",
     {**_MANUAL, "beta1": 0.9, "weight_decay": 0.05}, variables=tuple(SHAPES.items()), steps=6)
case("long_runs/defaults", "defaults for 40 steps: rho stays 1e-2 (1/sqrt(t) < 1e-2 only after t = 1e4), "
     "lr_t follows RMS(p)", steps=40)
case("long_runs/clipping_on_and_off", "gradient bursts every 4th step switch update clipping on and off",
     {**_MANUAL, "lr": 0.05}, grads=bursts(every=4, factor=30.0), steps=40)

# --- special values
case("special_values/zero_gradients", "all-zero gradients: v = eps1, u = 0", grads=constant(0.0), steps=4)
case("special_values/zero_variables", "zero variables: RMS(p) = 0 < eps2 decides the step size", init="zeros",
     steps=6)
case("special_values/zero_variables_weight_decay", "zero variables with weight decay and beta1",
     {**_MANUAL, "weight_decay": 0.1, "beta1": 0.9}, init="zeros", steps=6)
case("special_values/ones_variables_constant_gradient", "ones and a constant gradient", init="ones",
     grads=constant(0.25), steps=6)
case("special_values/tiny_gradients", "gradients of 1e-15: eps1 = 1e-30 is comparable to g*g",
     grads=normal(1e-15), steps=6)
case("special_values/huge_gradients", "gradients of 1e160: g*g overflows to inf", grads=normal(1e160), steps=4)
case("special_values/nan_gradient", "a NaN in one gradient element at step 3",
     grads=with_values(normal(), {(2, 0): float("nan")}), steps=5)
case("special_values/inf_gradient", "+inf and -inf gradient elements",
     grads=with_values(normal(), {(1, 1): float("inf"), (3, 0): float("-inf")}), steps=5)
case("special_values/negative_zero_gradients", "gradients of -0.0", grads=constant(-0.0), steps=3)
case("special_values/subnormal_gradients", "subnormal gradients", grads=normal(1e-310), steps=3)

# --- invalid configurations (optimization.py:1155-1158)
INVALID = {
    "lr_with_relative_step": ({"lr": 0.01}, "ValueError", "Cannot combine manual `lr`"),
    "lr_with_explicit_relative_step": ({"lr": 0.01, "relative_step": True}, "ValueError",
                                       "Cannot combine manual `lr`"),
    "warmup_init_without_relative_step": ({"lr": 0.01, "relative_step": False, "warmup_init": True},
                                          "ValueError", "`warmup_init=True` requires `relative_step=True`"),
}
for name, (config, cls, text) in INVALID.items():
    case(f"invalid/{name}", f"rejected at construction: {config}", config, steps=0,
         error={"class": cls, "message_contains": text, "at": "construction"})
