"""Two sets of vectors for timm's ``timm.optim.Adafactor`` (timm 1.0.31):

* ``CASES``: the ``timm`` dialect's own vectors (reference/dialects/timm.py), ids
  ``timm/<file>/<topic>/<variant>`` (vectors/timm/): timm's arguments as its constructor takes
  them, every variable with a gradient on every step; few steps and small shapes (the corpus
  must stay small, tests/corpus/test_vectors.py). The lane ``timm`` replays them with the
  config passed straight to the optimizer.
* ``PYTORCH_OPTIMIZER_CASES``, below: pytorch_optimizer-dialect vectors whose arguments ``timm.optim.Adafactor`` computes exactly
(conformance/TIMM.md, ``pytorch_optimizer_to_timm`` in conformance/adapters/timm_adapter.py),
ids ``pytorch_optimizer/timm/<topic>/<variant>`` (vectors/pytorch_optimizer/timm.json). The
pytorch_optimizer cases mostly use bfloat16 momentum or an external lr with
``scale_parameter=True``, which timm does not compute; these give the ``timm`` lane momentum,
clipping, decay rate, eps and a 3-D variable in its float64 lanes (one small vector:
the corpus must stay small, tests/corpus/test_vectors.py). Both lanes (``pytorch-optimizer`` and
``timm``) replay them. Appended to tools/dialect_cases/pytorch_optimizer.py's CASES."""

from __future__ import annotations

from tools.vector_cases import Case, bursts, normal

#: (1, 2, 3): timm factors its last two axes with min_dim_size_to_factor=1 (dims 0, 1 are refused:
#: 1 <= 1), as AdaFactor does.
_VARIABLES = (("w", (1, 2, 3)),)

PYTORCH_OPTIMIZER_CASES: list[Case] = [
    Case("pytorch_optimizer/timm/momentum/float64_relative", "relative step with scaling, momentum "
         "0.9 in float64, clip_threshold=0.5, decay_rate=-0.5, eps1=1e-20, eps2=0.01 (timm: lr=None, betas, "
         "eps_scale; graded by timm in float64 only)",
         {"betas": [0.9, 0.999], "momentum_dtype": "float64", "clip_threshold": 0.5,
          "decay_rate": -0.5, "eps1": 1e-20, "eps2": 0.01},
         variables=_VARIABLES, steps=3, grads=bursts(every=2), dialect="pytorch_optimizer"),
]


# ----------------------------------------------------------------------------- the timm dialect
CASES: list[Case] = []
#: Nothing here is factored at timm's default min_dim_size_to_factor=16 (strictly exceeded, adafactor.py:121-126).
_SMALL = (("w", (2, 3)), ("b", (3,)))


def case(id_, description, config=None, **kwargs) -> None:
    kwargs.setdefault("steps", 3)
    kwargs.setdefault("variables", _SMALL)
    CASES.append(Case(f"timm/{id_}", description, dict(config or {}), dialect="timm", **kwargs))


# Adafactor(params): lr=None (relative step 1e-2 capped by 1/sqrt t, scaled by max(1e-3, RMS(p))), eps 1e-30,
# clip 1.0, decay -0.8 uncapped, no momentum, no decay, min_dim_size_to_factor 16; the config is empty
# (given_only), so a replay passes nothing and a port with a wrong default fails.
case("arguments/defaults/given_only", "Adafactor(params): every default", given_only=True)
case("arguments/weight_decay/relative_step", "weight_decay=0.1 with the relative step: p += p*(-wd*lr_t), lr_t "
     "the full scaled step size (a 0-d tensor), after the update is formed (adafactor.py:235-236)",
     {"weight_decay": 0.1}, grads=bursts(every=2))
case("arguments/weight_decay/explicit_lr", "lr=0.05, weight_decay=0.2 and momentum 0.9: the decay by lr (a Python "
     "double) after the momentum", {"lr": 0.05, "weight_decay": 0.2, "betas": [0.9, 0.999]})
case("arguments/lr/explicit_small", "lr=0.003 with scale_parameter=True (the default): no parameter scale for an "
     "explicit lr (adafactor.py:103)", {"lr": 0.003}, variables=(("w", (2, 3)),))
case("arguments/lr/explicit_large", "lr=2.0: no 1/sqrt t cap (Keras would step by min(lr, 1/sqrt t)); 4 steps",
     {"lr": 2.0}, steps=4, variables=(("w", (2, 3)),))
case("arguments/warmup_init/relative", "warmup_init=True: rho = min(1e-6 t, 1/sqrt t), scaled by RMS(p)",
     {"warmup_init": True}, variables=(("w", (2, 3)),))
case("arguments/scale_parameter/false", "scale_parameter=False: the relative step unscaled",
     {"scale_parameter": False}, variables=(("w", (2, 3)),))
case("arguments/eps_scale/floor", "eps_scale=0.5 above RMS(p): the Python float floor of the parameter scale",
     {"eps_scale": 0.5}, variables=(("w", (2, 3)),), init="small")
case("arguments/momentum/beta1", "betas=(0.5, 0.999): exp_avg in the gradient's dtype, lerp by 1 - beta1; the "
     "second beta is ignored", {"betas": [0.5, 0.999], "clip_threshold": 0.5}, grads=bursts(every=2))
case("arguments/clip_threshold/bursts", "clip_threshold=0.3 with gradient bursts", {"clip_threshold": 0.3},
     grads=bursts(every=2), variables=(("w", (2, 3)),))
case("arguments/decay_rate/half", "decay_rate=-0.5, uncapped", {"decay_rate": -0.5}, variables=(("w", (2, 3)),))
case("arguments/eps/small_gradients", "eps=1e-3 against gradients of 0.03", {"eps": 1e-3},
     grads=normal(0.03), variables=(("w", (2, 3)),))
case("factoring/default_threshold", "min_dim_size_to_factor=16 (the default): (17, 17) factored over its last "
     "two axes, (2, 3) not (16 would not be: strictly greater, adafactor.py:124); 2 steps",
     {}, steps=2, variables=(("w", (17, 17)), ("b", (2, 3))))
case("factoring/conv_dims_0_1", "min_dim_size_to_factor=1: a (2, 3, 2) variable factored over dims 0 and 1 "
     "(convolution weights, adafactor.py:121-123), not the last two; (1, 2, 3) over its last two",
     {"min_dim_size_to_factor": 1, "betas": [0.9, 0.999]}, variables=(("w", (2, 3, 2)), ("v", (1, 2, 3))))
case("multi_variable/all", "four variables (2-D, 1-D, 0-D, 3-D) with momentum, weight decay, an explicit lr and "
     "min_dim_size_to_factor=1", {"lr": 0.02, "betas": [0.8, 0.0], "weight_decay": 0.05, "min_dim_size_to_factor": 1},
     variables=(("w", (2, 2)), ("b", (2,)), ("s", ()), ("k", (2, 2, 3))), grads=bursts(every=2))

# --- invalid configurations: timm checks one thing (adafactor.py:64-66)
INVALID = {
    "warmup_init_with_lr": ({"lr": 0.01, "warmup_init": True}, "ValueError", "warmup_init requires relative_step"),
    "warmup_init_with_zero_lr": ({"lr": 0.0, "warmup_init": True}, "ValueError",
                                 "warmup_init requires relative_step"),
}
for name, (config, cls, text) in INVALID.items():
    case(f"invalid/{name}", f"rejected at construction: {config}", config, steps=0,
         error={"class": cls, "message_contains": text, "at": "construction"})
