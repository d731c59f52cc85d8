"""Ports that are wrong in exactly one deep regime of ``strategies.REGIMES``, and right
everywhere else: the CI fuzz profile must catch every one (tests/fuzz/test_fuzzing.py), which is
what "the CI profile reaches that regime with inputs that make it bind" means in practice.

    python -m conformance.fuzz --adapter conformance.fuzz.mutants:ClipTheSum --dtype float64

Three are plausible porting mistakes that only show in their regime; three scale the step
where only their regime's condition holds (a stand-in for any mistake confined there). The
weight-decay regime is covered by ``conformance.adapters.broken:WeightDecayAfterUpdate``
(the order of decay and step differs only while epsilon_2 binds).
"""

from __future__ import annotations

import numpy as np

from conformance.adapters.reference import ReferenceAdapter, ReferenceSession
from reference import schedules
from reference.optimizer import Adafactor

#: Relative size of the step error of the "scaled step" mutants (2**-20 ~ 1e-6: thousands
#: of float64 epsilons; tests run them in float64).
DELTA = 2.0 ** -20


class _ClipTheSum(Adafactor):
    """With accumulation, clips the *sum* of the micro-step gradients and divides by N
    afterwards, instead of clipping their mean: the same whenever the clip does not bind."""

    def _clip_gradients(self, grads: list) -> list:
        n = self.gradient_accumulation_steps
        if not n:
            return super()._clip_gradients(grads)
        return [None if g is None else g / g.dtype.type(n)
                for g in super()._clip_gradients([None if g is None else g * g.dtype.type(n) for g in grads])]


class _ScheduleCountsUpdates(Adafactor):
    """With accumulation, evaluates a schedule at the update count (``iterations``) instead
    of Keras's raw micro-step counter."""

    @property
    def learning_rate(self) -> float:
        if isinstance(self._learning_rate, schedules.LearningRateSchedule) and self.gradient_accumulation_steps:
            return self._learning_rate(self.iterations)
        return Adafactor.learning_rate.fget(self)


class _EmaNeverOverwrites(Adafactor):
    """Keeps the EMA but never overwrites the variables with it."""

    def _ema(self, state, values) -> bool:
        saved = self.ema_overwrite_frequency
        self.ema_overwrite_frequency = None
        try:
            super()._ema(state, values)
        finally:
            self.ema_overwrite_frequency = saved
        return False


class _ScaledStep(Adafactor):
    """The reference with the step of variable ``i`` multiplied by ``factor(...)``."""

    def factor(self, state, index: int, x: np.ndarray, trace) -> float:  # pragma: no cover - overridden
        return 1.0

    def _apply_weight_decay(self, active, values):
        super()._apply_weight_decay(active, values)
        self._stepped_from = {i: np.array(values[i], copy=True) for i in active}

    def _update(self, state, g, values, record):
        self._stepped_from = None
        before = {i: np.array(values[i], copy=True) for i in g}
        super()._update(state, g, values, record)
        base = self._stepped_from or before
        for i in g:
            f = self.factor(state, i, values[i], record.traces[i])
            if f != 1.0:
                x = np.asarray(values[i])
                values[i] = np.asarray(base[i] + (x - base[i]) * x.dtype.type(f))


class _OffAfterStep8(_ScaledStep):
    def factor(self, state, index, x, trace):
        return 1.0 + DELTA if state.iterations >= 8 else 1.0  # the 9th micro-step on


class _OffForLongLastAxis(_ScaledStep):
    def factor(self, state, index, x, trace):
        return 1.0 + DELTA if x.ndim and x.shape[-1] > 64 else 1.0


class _NoCapWithoutRelativeStep(_ScaledStep):
    """relative_step=False read as the paper's "no relative step": rho = lr, not
    min(lr, 1/sqrt(t)) (Keras caps anyway). Differs only where lr > 1/sqrt(t)."""

    def factor(self, state, index, x, trace):
        if self.relative_step or type(self._learning_rate) is not float or trace is None:
            return 1.0
        return trace.learning_rate / trace.inv_sqrt_step if trace.learning_rate > trace.inv_sqrt_step else 1.0


class _RegimeMutant(ReferenceAdapter):
    mixin = Adafactor
    regime = ""

    def __init__(self):
        super().__init__()
        self.name = f"regime-mutant:{type(self).__name__}"
        self.dialects = ("keras",)

    def create(self, vector, dtype, device):
        session = ReferenceSession(vector, dtype)
        session.opt.__class__ = type(f"{type(self).__name__}_{session.opt.__class__.__name__}",
                                     (self.mixin, session.opt.__class__), {})
        return session


def _make(name: str, mixin, regime: str, doc: str):
    return type(name, (_RegimeMutant,), {"mixin": mixin, "regime": regime, "__doc__": doc})


ClipTheSum = _make("ClipTheSum", _ClipTheSum, "accumulation_clip", _ClipTheSum.__doc__)
ScheduleCountsUpdates = _make("ScheduleCountsUpdates", _ScheduleCountsUpdates, "accumulation_schedule",
                              _ScheduleCountsUpdates.__doc__)
EmaNeverOverwrites = _make("EmaNeverOverwrites", _EmaNeverOverwrites, "ema_overwrite", _EmaNeverOverwrites.__doc__)
NoCapWithoutRelativeStep = _make("NoCapWithoutRelativeStep", _NoCapWithoutRelativeStep,
                                 "relative_step_false_high_lr", _NoCapWithoutRelativeStep.__doc__)
OffAfterStep8 = _make("OffAfterStep8", _OffAfterStep8, "long_run",
                      "the step off by a relative 2**-20 from micro-step 9 on")
OffForLongLastAxis = _make("OffForLongLastAxis", _OffForLongLastAxis, "long_axis",
                           "the step off by a relative 2**-20 on variables whose last axis is longer than 64")

#: regime -> an adapter wrong only there ("module:Class", for the fuzz CLI)
BY_REGIME = {
    "accumulation_clip": "conformance.fuzz.mutants:ClipTheSum",
    "accumulation_schedule": "conformance.fuzz.mutants:ScheduleCountsUpdates",
    "ema_overwrite": "conformance.fuzz.mutants:EmaNeverOverwrites",
    "relative_step_false_high_lr": "conformance.fuzz.mutants:NoCapWithoutRelativeStep",
    "weight_decay_epsilon_2": "conformance.adapters.broken:WeightDecayAfterUpdate",
    "long_run": "conformance.fuzz.mutants:OffAfterStep8",
    "long_axis": "conformance.fuzz.mutants:OffForLongLastAxis",
}


class SkipsEverything(ReferenceAdapter):
    """Not a mutant: the reference claiming it cannot run any vector (every example ends
    ``skip``). A fuzz run of it checks nothing and must say NOTHING CHECKED, never pass
    (tests/fuzz/test_fuzzing.py)."""

    def __init__(self):
        super().__init__()
        self.name = "skips-everything"
        self.dialects = ("keras",)

    def unsupported(self, vector, dtype, device):
        return f"{self.name} runs nothing"
