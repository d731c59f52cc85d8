"""Golden vectors of the timm_bigvision dialect (reference/dialects/timm_bigvision.py):
``timm.optim.AdafactorBigVision``'s own arguments (timm 1.0.31), ids
``timm_bigvision/<file>/<topic>/<variant>``. Every variable has a gradient on every step.
Few steps and small shapes: the whole corpus must stay small (tests/corpus/test_vectors.py).
``momentum_dtype`` is a dtype name; its default, bfloat16, quantises the update of every lane
(adafactor_bv.py:65, :280-283)."""

from __future__ import annotations

from tools.vector_cases import Case, bursts, normal

CASES: list[Case] = []
_SMALL = (("w", (2, 2)), ("b", (2,)))
#: min_dim_size_to_factor=2: (3, 1, 2) factors its two largest axes, 2 (the row axis, size 2) and 0
#: (the column axis, size 3: r reduces it), not the last two; the bias is never factored.
_FACTORED = (("w", (3, 1, 2)), ("b", (2,)))


def case(id_, description, config=None, **kwargs) -> None:
    kwargs.setdefault("steps", 3)
    kwargs.setdefault("variables", _SMALL)
    CASES.append(Case(f"timm_bigvision/{id_}", description, dict(config or {}), dialect="timm_bigvision", **kwargs))


# AdafactorBigVision(params): lr 1.0, no clipping, momentum 0.9 in bfloat16, decay 0.8 capped at 0.999,
# eps 1e-30, min_dim_size_to_factor 16 (nothing here factors); the config is empty (given_only), so a
# replay passes nothing and a port with a wrong default fails.
case("arguments/defaults/given_only", "AdafactorBigVision(params): every default", given_only=True)
case("arguments/factoring/largest_axes", "min_dim_size_to_factor=2: the two largest axes are factored, not the "
     "last two; clipping_threshold=1.0 with bursts; decay_offset=1 (beta2t = 0 at steps 1 and 2); no momentum",
     {"lr": 0.1, "min_dim_size_to_factor": 2, "momentum": None, "clipping_threshold": 1.0, "decay_offset": 1},
     variables=_FACTORED, grads=bursts(every=2))
case("arguments/momentum/float32_cap", "momentum 0.5 in float32, beta2_cap=0.3 binds from step 2 "
     "(1 - 2**-0.8 = 0.43), weight_decay=0.1 scaled by lr",
     {"lr": 0.05, "momentum": 0.5, "momentum_dtype": "float32", "beta2_cap": 0.3,
      "weight_decay": 0.1})
case("arguments/weight_decay/unscaled_corrected", "unscaled_wd=True, corrected_weight_decay=True: p *= "
     "1 - (lr/max_lr)*wd; factored with min_dim_size_to_factor=2, momentum 0.9 in float64",
     {"lr": 0.2, "weight_decay": 0.05, "unscaled_wd": True, "corrected_weight_decay": True,
      "min_dim_size_to_factor": 2, "momentum_dtype": "float64", "clipping_threshold": 0.5}, grads=bursts(every=2))
case("arguments/eps/small_gradients", "eps=1e-3 against gradients of 0.03, decay_rate=0.5, no momentum",
     {"lr": 0.1, "eps": 1e-3, "decay_rate": 0.5, "momentum": None}, grads=normal(0.03), variables=(("w", (2, 2)),))

# --- invalid configurations (adafactor_bv.py:82-83, _helpers.py _validate_scalar)
INVALID = {
    "negative_lr": ({"lr": -0.1}, "ValueError", "Invalid learning rate"),
    "negative_weight_decay": ({"weight_decay": -0.1}, "ValueError", "Invalid weight_decay"),
}
for name, (config, cls, text) in INVALID.items():
    case(f"invalid/{name}", f"rejected at construction: {config}", config, steps=0,
         error={"class": cls, "message_contains": text, "at": "construction"})
