"""Golden vectors of the optax dialect (reference/dialects/optax.py): ``optax.adafactor``'s
own arguments (defaults filled in by ``OptaxAdafactor.get_config``). Every variable has a
gradient on every step. optax raises at construction only for a momentum dtype it cannot
canonicalize (_accumulation.py:116), which is the one invalid vector."""

from __future__ import annotations

from tools.vector_cases import SHAPES, Case, bursts, normal, signed_uniform, with_values

CASES: list[Case] = []
#: A kernel and a bias; optax factors neither at the default min_dim_size_to_factor=128
#: (the second-largest axis must reach it: see shapes/defaults/large).
VARIABLES = (("dense/kernel", (5, 3)), ("dense/bias", (3,)))


def case(id_, *args, **kwargs) -> None:
    CASES.append(Case(f"optax/{id_}", *args, dialect="optax", **kwargs))


# --- arguments: each optax argument alone, 2-3 values
for lr in (0.01, 0.5):
    case(f"arguments/learning_rate/{lr:g}", f"learning_rate={lr!r}: a plain multiplier after clipping",
         {"learning_rate": lr})
case("arguments/learning_rate/none", "learning_rate=None (default): no lr scaling, step = RMS scale * clip(u)", {})
for m in (1, 3):
    case(f"arguments/min_dim_size_to_factor/{m}", f"min_dim_size_to_factor={m}: the 5x3 kernel is factored",
         {"min_dim_size_to_factor": m}, variables=VARIABLES + (("w3d", (2, 3, 4)),))
case("arguments/factored/false", "factored=False: every variable keeps a full v",
     {"factored": False, "min_dim_size_to_factor": 1}, variables=VARIABLES)
for d in (0.5, 1.0):
    case(f"arguments/decay_rate/{d:g}", f"decay_rate={d!r}", {"decay_rate": d, "learning_rate": 0.1})
case("arguments/decay_offset/2", "decay_offset=2 from a fresh state: t - offset <= 0 gives a -inf/NaN beta "
     "on the first steps, NaN parameters for good (optax quirk)", {"decay_offset": 2}, steps=4)
case("arguments/decay_offset/0", "decay_offset=0 explicitly", {"decay_offset": 0, "learning_rate": 0.1})
case("arguments/multiply_by_parameter_scale/false", "multiply_by_parameter_scale=False: lr is the absolute step",
     {"multiply_by_parameter_scale": False, "learning_rate": 0.01})
case("arguments/multiply_by_parameter_scale/small_params", "RMS(p) below the fixed 1e-3 floor",
     {"learning_rate": 0.1}, init="small")
for d in (0.5, 2.0):
    case(f"arguments/clipping_threshold/{d:g}", f"clipping_threshold={d!r} with gradient bursts",
         {"clipping_threshold": d, "learning_rate": 0.1}, grads=bursts())
case("arguments/clipping_threshold/none", "clipping_threshold=None: no clipping at all",
     {"clipping_threshold": None, "learning_rate": 0.1}, grads=bursts())
for dtype in ("float32", "float64"):
    case(f"arguments/momentum/0.9_{dtype}", f"momentum=0.9, dtype_momentum={dtype}: EMA of the scaled update, "
         f"state in {dtype}", {"momentum": 0.9, "dtype_momentum": dtype, "learning_rate": 0.1})
# Half-precision momentum. JAX types the Python float m weakly: m * mom is computed in
# dtype_momentum with m rounded to it, (1 - m) * u in u's dtype, and only their sum promotes
# (reference/dialects/optax.py, momentum_ema). float16: m = 0.9 (0.89990234375 in float16).
# bfloat16: m = 0.501, which is 0.5 in bfloat16 (float32: 0.501, 2e-3 away, what ml_dtypes'
# promotion of python float * bfloat16 used), so m * mom is exact in bfloat16. With m = 0.9 it
# is not, and XLA on CPU does not round it either where it feeds a float32 sum (excess
# precision, xla_allow_excess_precision): the float32 lane would then grade XLA's choice, up to
# half a bfloat16 ulp of the momentum per step, not optax's semantics (TOLERANCES.md, "Half
# precision"). The float64 lane rounds it as JAX's semantics say.
case("arguments/momentum/0.9_float16", "momentum=0.9, dtype_momentum=float16: 0.9 * momentum is computed in "
     "float16 (JAX weak typing), the state is stored in float16",
     {"momentum": 0.9, "dtype_momentum": "float16", "learning_rate": 0.1})
case("arguments/momentum/0.501_bfloat16", "momentum=0.501, dtype_momentum=bfloat16: m is 0.5 in bfloat16 (JAX "
     "weak typing; a float32 m is 2e-3 off), the state is stored in bfloat16",
     {"momentum": 0.501, "dtype_momentum": "bfloat16", "learning_rate": 0.1})
case("arguments/momentum/0.5_factored", "momentum=0.5 with a factored kernel",
     {"momentum": 0.5, "min_dim_size_to_factor": 1, "learning_rate": 0.1})
for wd in (0.01, 0.1):
    case(f"arguments/weight_decay_rate/{wd:g}", f"weight_decay_rate={wd!r}: + rate*p, not lr-scaled",
         {"weight_decay_rate": wd, "learning_rate": 0.1})
case("arguments/weight_decay_rate/exclude_bias", "weight_decay_rate with the bias masked out",
     {"weight_decay_rate": 0.1, "learning_rate": 0.1}, exclude={"var_index": [1]})
case("arguments/weight_decay_rate/0", "weight_decay_rate=0: skipped entirely", {"weight_decay_rate": 0.0})
for e in (1e-10, 1e-3):
    case(f"arguments/eps/{e:g}", f"eps={e!r} with small gradients", {"eps": e, "learning_rate": 0.1},
         grads=normal(0.03))
case("arguments/all/combined", "momentum, weight decay with an exclusion, factoring, lr and clipping together",
     {"learning_rate": 0.05, "min_dim_size_to_factor": 2, "momentum": 0.8, "weight_decay_rate": 0.05,
      "clipping_threshold": 0.5, "decay_rate": 0.6}, exclude={"var_index": [1]}, steps=12)

# --- optax's own defaults: the config is empty (given_only), so a replay passes nothing and a port with
# a wrong default fails: learning_rate None, clipping_threshold 1.0 (bursts make it bind), decay_rate 0.8
# and decay_offset 0 from step 2, the 1e-3 scale floor on zero parameters, eps 1e-30 against gradients
# of 1e-15, min_dim_size_to_factor 128 on a (5, 3) kernel and a (2, 3, 4) variable (a smaller default
# would factor them), no momentum, no weight decay. factored=True shows only at the 128 threshold
# (shapes/defaults/large).
VARIABLES_3D = VARIABLES + (("w3d", (2, 3, 4)),)
case("arguments/defaults/given_only", "optax.adafactor(): every default, gradient bursts", {},
     variables=VARIABLES_3D, grads=bursts(every=3), steps=6, given_only=True)
case("arguments/defaults/given_only_zero_params", "optax defaults on zero parameters: the 1e-3 floor of the "
     "parameter scale", {}, init="zeros", steps=5, given_only=True)
case("arguments/defaults/given_only_tiny_gradients", "optax defaults with gradients of 1e-15: eps = 1e-30 is "
     "comparable to g*g", {}, grads=normal(1e-15), steps=5, given_only=True)

# --- shapes: every shape class at the default (nothing small is factored) and factored
for name, shape in SHAPES.items():
    case(f"shapes/defaults/{name}", f"optax defaults on shape {shape}", variables=(("w", shape),), steps=8)
    case(f"shapes/factor_all/{name}", f"min_dim_size_to_factor=1 on shape {shape}: the two largest axes",
         {"min_dim_size_to_factor": 1, "learning_rate": 0.1}, variables=(("w", shape),), steps=8)
case("shapes/long/last_axis_1024", "a (1, 1024) matrix factored with min_dim_size_to_factor=1: v_row and the "
     "RMSs are means over 1024 elements (half precision: float32 accumulation)",
     {"min_dim_size_to_factor": 1, "learning_rate": 0.1}, variables=(("w", (1, 1024)),), grads=signed_uniform(),
     steps=2)
case("shapes/defaults/large", "a (129, 128) matrix: factored at the default min_dim_size_to_factor=128 "
     "(the largest axis is the row axis here: optax normalises the other factor than Keras)",
     variables=(("w", (129, 128)),), steps=2)

# --- special values
case("special_values/zero_gradients", "all-zero gradients: q = eps, u = 0", {"learning_rate": 0.1},
     grads=normal(0.0))
case("special_values/zero_params", "zero parameters: the 1e-3 floor of the scale", {}, init="zeros")
case("special_values/huge_gradient", "a 1e200 gradient element: g*g overflows to inf",
     {"min_dim_size_to_factor": 1, "learning_rate": 0.1}, grads=with_values(normal(), {(2, 0): 1e200}))
case("special_values/nan_gradient", "a NaN gradient element (no clipping): NaN stays element-wise",
     {"clipping_threshold": None, "learning_rate": 0.1}, grads=with_values(normal(), {(1, 1): float("nan")}),
     steps=4)
case("special_values/inf_gradient", "an inf gradient element with clipping: the whole update goes NaN",
     {"learning_rate": 0.1}, grads=with_values(normal(), {(1, 0): float("inf")}), steps=4)

# --- invalid: what optax.adafactor itself refuses at construction
case("invalid/dtype_momentum/unknown", "dtype_momentum that is no dtype: optax canonicalizes it at construction",
     {"momentum": 0.9, "dtype_momentum": "not_a_dtype"},
     error={"class": "TypeError", "message_contains": "not_a_dtype", "at": "construction"})
