"""Real timm optimizers with one injected bug, for tests/frameworks/test_timm.py: the gate
must call these DOES NOT CONFORM.

    python -m conformance run --adapter tests.frameworks.timm_injected:DecayRateScaled

``DecayRateScaled``: timm.optim.Adafactor with ``decay_rate`` scaled by 1.001 (the second
moments off by about 1e-4 relative from step 2, timm/optim/adafactor.py:202).
``WeightDecayScaled``: timm.optim.Adafactor with ``weight_decay`` scaled by 1.01 (the decay
``p += p*(-wd*lr_t)``, adafactor.py:235-236, off by 1%; visible on the timm dialect's weight-decay
vectors, vectors/timm/).
``BigVisionDecayRateScaled``: the same on timm.optim.AdafactorBigVision (adafactor_bv.py:246-249).
``BigVisionBeta2CapIgnored``: AdafactorBigVision with beta2_cap raised to 0.9999999, so the cap
never binds (visible on timm_bigvision/arguments/momentum/float32_cap).
"""

from __future__ import annotations

from conformance.adapters.timm_adapter import TimmAdapter, TimmBigVisionAdapter

DECAY_RATE_SCALE = 1.001
WEIGHT_DECAY_SCALE = 1.01


class DecayRateScaled(TimmAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "timm-decay-rate-scaled", "timm"

    def optimizer(self, adafactor, params, kwargs):
        return adafactor(params, **{**kwargs, "decay_rate": kwargs.get("decay_rate", -0.8) * DECAY_RATE_SCALE})


class WeightDecayScaled(TimmAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "timm-weight-decay-scaled", "timm"

    def optimizer(self, adafactor, params, kwargs):
        return adafactor(params, **{**kwargs, "weight_decay": kwargs.get("weight_decay", 0.0) * WEIGHT_DECAY_SCALE})


class BigVisionDecayRateScaled(TimmBigVisionAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "timm-bigvision-decay-rate-scaled", "timm-bigvision"

    def optimizer(self, bigvision, params, config):
        return bigvision(params, **{**config, "decay_rate": config.get("decay_rate", 0.8) * DECAY_RATE_SCALE})


class BigVisionBeta2CapIgnored(TimmBigVisionAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "timm-bigvision-beta2-cap-ignored", "timm-bigvision"

    def optimizer(self, bigvision, params, config):
        return bigvision(params, **{**config, "beta2_cap": 0.9999999})
