"""Real tf-keras with one injected bug, for tests/frameworks/test_tf_keras.py. The gate, with
the committed conformance/expectations/tf-keras.txt and its deviation models in force, must
call every float64 and float32 lane of these DOES NOT CONFORM: a named deviation cannot hide
a real one.

    python -m conformance run --adapter tests.frameworks.tf_keras_injected:BetaDecayScaled

``BetaDecayScaled``: every Adafactor built with ``beta_2_decay`` scaled by 1.001 (second
moments off by about 1e-4 relative from step 2). ``Epsilon1Dropped``: ``epsilon_1`` is 0
(visible where gradients are tiny or zero: EPSILON_1_SIGNIFICANT vectors).
"""

from __future__ import annotations

from conformance.adapters.tf_keras_adapter import TfKerasAdapter

BETA_2_DECAY_SCALE = 1.001


class BetaDecayScaled(TfKerasAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "tf-keras-beta-2-decay-scaled", "tf-keras"

    def optimizer_class(self, tf_keras):
        base = tf_keras.optimizers.Adafactor

        class Injected(base):
            def __init__(self, *args, beta_2_decay=-0.8, **kwargs):
                super().__init__(*args, beta_2_decay=beta_2_decay * BETA_2_DECAY_SCALE, **kwargs)

        return Injected


class Epsilon1Dropped(TfKerasAdapter):
    def __init__(self):
        super().__init__()
        self.name, self.expectations = "tf-keras-epsilon-1-dropped", "tf-keras"

    def optimizer_class(self, tf_keras):
        base = tf_keras.optimizers.Adafactor

        class Injected(base):
            def __init__(self, *args, epsilon_1=1e-30, **kwargs):
                super().__init__(*args, epsilon_1=0.0, **kwargs)

        return Injected


class EmaMomentumScaled(TfKerasAdapter):
    """``ema_momentum`` scaled by 1 - 1e-4 (the EMA off by about 1e-4 relative of 1 - m): the
    tf-keras-ema model must not absorb a bug in the EMA it models."""

    def __init__(self):
        super().__init__()
        self.name, self.expectations = "tf-keras-ema-momentum-scaled", "tf-keras"

    def optimizer_class(self, tf_keras):
        base = tf_keras.optimizers.Adafactor

        class Injected(base):
            def __init__(self, *args, ema_momentum=0.99, **kwargs):
                super().__init__(*args, ema_momentum=ema_momentum * (1 - 1e-4), **kwargs)

        return Injected
