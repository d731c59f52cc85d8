"""Real timm optimizers with one injected bug, for tests/frameworks/test_timm.py: the gate
must call these DOES NOT CONFORM.

    python -m conformance run --adapter tests.frameworks.timm_injected:DecayRateScaled

``DecayRateScaled``: timm.optim.Adafactor with ``decay_rate`` scaled by 1.001 (the second
moments off by about 1e-4 relative from step 2, timm/optim/adafactor.py:202).
"""

from __future__ import annotations

from conformance.adapters.timm_adapter import TimmAdapter

DECAY_RATE_SCALE = 1.001


class DecayRateScaled(TimmAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "timm-decay-rate-scaled", "timm"

    def optimizer(self, adafactor, params, kwargs):
        return adafactor(params, **{**kwargs, "decay_rate": kwargs["decay_rate"] * DECAY_RATE_SCALE})
