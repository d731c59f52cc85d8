"""pytorch_optimizer-dialect vectors whose arguments ``timm.optim.Adafactor`` computes exactly
(conformance/TIMM.md, ``pytorch_optimizer_to_timm`` in conformance/adapters/timm_adapter.py),
ids ``pytorch_optimizer/timm/<topic>/<variant>`` (vectors/pytorch_optimizer/timm.json). The
pytorch_optimizer cases mostly use bfloat16 momentum or an external lr with
``scale_parameter=True``, which timm does not compute; these give the ``timm`` lane momentum,
clipping, decay rate, eps and a 3-D variable in its float64 lanes (one small vector:
the corpus must stay small, tests/corpus/test_vectors.py). Both lanes (``pytorch-optimizer`` and
``timm``) replay them. Appended to tools/dialect_cases/pytorch_optimizer.py's CASES."""

from __future__ import annotations

from tools.vector_cases import Case, bursts

#: (1, 2, 3): timm factors its last two axes with min_dim_size_to_factor=1 (dims 0, 1 are refused:
#: 1 <= 1), as AdaFactor does.
_VARIABLES = (("w", (1, 2, 3)),)

CASES: list[Case] = [
    Case("pytorch_optimizer/timm/momentum/float64_relative", "relative step with scaling, momentum "
         "0.9 in float64, clip_threshold=0.5, decay_rate=-0.5, eps1=1e-20, eps2=0.01 (timm: lr=None, betas, "
         "eps_scale; graded by timm in float64 only)",
         {"betas": [0.9, 0.999], "momentum_dtype": "float64", "clip_threshold": 0.5,
          "decay_rate": -0.5, "eps1": 1e-20, "eps2": 0.01},
         variables=_VARIABLES, steps=3, grads=bursts(every=2), dialect="pytorch_optimizer"),
]
