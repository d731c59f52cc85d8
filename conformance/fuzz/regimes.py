"""Which deep regimes a fuzzed case really reaches, measured on the reference.

``conformance.fuzz.strategies.fuzz_cases`` builds most examples to reach one regime of
``strategies.REGIMES``; whether the branch then binds is a property of the numbers, so
``reached(case)`` replays the case through the float64 reference and checks each regime
on what the reference computed:

``accumulation_clip``
    gradient_accumulation_steps >= 2 and at least two real updates on which the clipper's
    statistic exceeds its threshold (clipnorm: a tensor's norm; global_clipnorm: the global
    norm; clipvalue: a magnitude), on the gradients the clipper really receives.
``accumulation_schedule``
    gradient_accumulation_steps >= 2 and a schedule, at least two real updates, the
    schedule's value not the same on all of them, and on an update after the first the
    schedule (not 1/sqrt(t)) sets rho.
``ema_overwrite``
    use_ema, ema_overwrite_frequency >= 2, and some step overwrites the variables.
``relative_step_false_high_lr``
    relative_step=False, a float learning rate, and an update where it exceeds 1/sqrt(t).
``weight_decay_epsilon_2``
    weight_decay > 0 and an update where a variable that decays has 0 < RMS(x) <= epsilon_2.
``long_run``
    a real update (some variable steps) after step 8.
``long_axis``
    a variable whose last axis is longer than 64 steps at least once.

The differential fuzzer counts these per run (``FuzzResult.regimes``), reports them as
Hypothesis events (``regime: NAME``) and prints them; tests/fuzz/test_fuzzing.py requires each
at least three times in the CI profile.
"""

from __future__ import annotations

import numpy as np

from conformance import replay
from conformance.fuzz.strategies import REGIMES, clip_statistic
from reference import Adafactor, schedules

LONG_RUN_AFTER = 8
LONG_AXIS_ABOVE = 64


class _Probe(Adafactor):
    """The reference, remembering on each real update whether the clipper clipped."""

    clipped: list

    def _clip_gradients(self, grads: list) -> list:
        clipper = next((name for name in ("clipnorm", "global_clipnorm", "clipvalue")
                        if getattr(self, name) and getattr(self, name) > 0), None)
        binds = clipper is not None and clip_statistic(clipper, [g for g in grads if g is not None]) \
            > getattr(self, clipper)
        self.clipped.append(bool(binds))
        return super()._clip_gradients(grads)


def reached(case) -> set:
    """The names of ``REGIMES`` that ``case`` (a ``conformance.generator.Case`` with explicit
    inputs) reaches on the reference. A case the reference rejects reaches none."""
    config = dict(case.config)
    if case.make_learning_rate is not None:
        config["learning_rate"] = case.make_learning_rate()
    initial, grads = case.inputs
    names = [name for name, _ in case.variables]
    try:
        opt = _Probe(**config)
    except Exception:  # noqa: BLE001 - an invalid configuration reaches nothing
        return set()
    opt.clipped = []
    variables = [np.array(x, dtype=np.float64, copy=True) for x in initial]
    replay.build(opt, variables, names, case.exclude)
    steps = []  # (1-based index, record, clipped or None) per step

    def on_step(index, _expected):
        record = opt.last_step
        clipped = None
        if record.learning_rate is not None:  # a real update: the clipper ran exactly once
            clipped = opt.clipped[-1] if opt.clipped else False
        steps.append((index + 1, record, clipped))

    try:
        replay.run_steps(opt, variables, grads, on_step)
    except Exception:  # noqa: BLE001 - an invalid step: what ran before still counts
        pass
    updates = [(k, r, c) for k, r, c in steps if r.learning_rate is not None]
    n = config.get("gradient_accumulation_steps")
    out = set()
    if n and n >= 2 and sum(1 for _, _, c in updates if c) >= 2:
        out.add("accumulation_clip")
    if n and n >= 2 and isinstance(config.get("learning_rate"), schedules.LearningRateSchedule) \
            and len(updates) >= 2 and len({r.learning_rate for _, r, _ in updates}) >= 2 \
            and any(t.learning_rate < t.inv_sqrt_step for _, r, _ in updates[1:] for t in r.traces if t):
        out.add("accumulation_schedule")
    frequency = config.get("ema_overwrite_frequency")
    if config.get("use_ema") and frequency and frequency >= 2 and any(r.ema_overwritten for _, r, _ in steps):
        out.add("ema_overwrite")
    if config.get("relative_step") is False and type(config.get("learning_rate", 0.001)) is float \
            and any(t.learning_rate > t.inv_sqrt_step for _, r, _ in updates for t in r.traces if t):
        out.add("relative_step_false_high_lr")
    decay = config.get("weight_decay")
    if decay is not None and decay > 0 and any(
            t is not None and opt._use_weight_decay(i) and 0 < t.rms_x <= opt.epsilon_2
            for _, r, _ in updates for i, t in enumerate(r.traces)):
        out.add("weight_decay_epsilon_2")
    if any(k > LONG_RUN_AFTER and any(r.traces) for k, r, _ in updates):
        out.add("long_run")
    long = [i for i, (_, shape) in enumerate(case.variables) if len(shape) and shape[-1] > LONG_AXIS_ABOVE]
    if any(r.traces[i] is not None for _, r, _ in updates for i in long):
        out.add("long_axis")
    return out


def format_counts(counts: dict, of: dict | None = None) -> str:
    """``name count[/of]`` for every regime, in ``REGIMES`` order."""
    parts = []
    for name in REGIMES:
        text = f"{name} {counts.get(name, 0)}"
        if of is not None:
            text += f"/{of.get(name, 0)}"
        parts.append(text)
    return ", ".join(parts)
