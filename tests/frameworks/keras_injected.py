"""Real Keras with one injected bug, for tests/frameworks/test_keras_injected.py: every Adafactor is
built with ``beta_2_decay`` scaled by 1.001 (second moments off by ~1e-4 relative from step
2). The gate, with the backend's committed expectation file and its deviation models, must
call every float64 and float32 lane of these DOES NOT CONFORM.

    python -m conformance run --adapter tests.frameworks.keras_injected:InjectedKerasTorch --dtype float64
"""

from __future__ import annotations

from conformance.adapters.keras_adapter import KerasJaxAdapter, KerasTensorFlowAdapter, KerasTorchAdapter
from conformance.adapters.registry import entry

BETA_2_DECAY_SCALE = 1.001


class _Injected:
    def _keras(self):
        keras = super()._keras()
        cls = keras.optimizers.Adafactor
        if not getattr(cls, "_injected_bug", False):
            original = cls.__init__

            def __init__(self, *args, beta_2_decay=-0.8, **kwargs):
                original(self, *args, beta_2_decay=beta_2_decay * BETA_2_DECAY_SCALE, **kwargs)

            cls.__init__ = __init__
            cls._injected_bug = True
        return keras


class InjectedKerasJax(_Injected, KerasJaxAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "keras-jax-injected", entry("keras-jax").expectations


class InjectedKerasTorch(_Injected, KerasTorchAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "keras-torch-injected", entry("keras-torch").expectations


class InjectedKerasTensorFlow(_Injected, KerasTensorFlowAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "keras-tensorflow-injected", entry("keras-tensorflow").expectations
