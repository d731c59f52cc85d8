"""Real pytorch_optimizer.AdaFactor with one injected bug, for
tests/frameworks/test_pytorch_optimizer.py: the gate, with the committed
conformance/expectations/pytorch-optimizer.txt, must call these DOES NOT CONFORM.

    python -m conformance run --adapter tests.frameworks.pytorch_optimizer_injected:DecayRateScaled

``DecayRateScaled``: ``decay_rate`` scaled by 1.001 (second moments off by about 1e-4
relative from step 2). ``Beta2CapIgnored``: betas[1] raised to 0.9999999, so the cap of
adafactor.py:363 never binds (visible on the ``arguments/beta2_cap`` vectors).
"""

from __future__ import annotations

from conformance.adapters.pytorch_optimizer_adapter import PytorchOptimizerAdapter

DECAY_RATE_SCALE = 1.001


class DecayRateScaled(PytorchOptimizerAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "pytorch-optimizer-decay-rate-scaled", "pytorch-optimizer"

    def optimizer(self, adafactor, params, config):
        return adafactor(params, **{**config, "decay_rate": config.get("decay_rate", -0.8) * DECAY_RATE_SCALE})


class Beta2CapIgnored(PytorchOptimizerAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "pytorch-optimizer-beta2-cap-ignored", "pytorch-optimizer"

    def optimizer(self, adafactor, params, config):
        beta1 = (config.get("betas") or (0.9, 0.999))[0]
        return adafactor(params, **{**config, "betas": (beta1, 0.9999999)})
