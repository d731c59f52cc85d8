"""The golden vector of a Keras case: run the spec (``reference.Adafactor``) on the case's
inputs and record the configuration, the initial state, every step's gradients and expected
state, the margins of its min/max/clip decisions, and the flags they earn."""

from __future__ import annotations

import numpy as np

from conformance import replay
from conformance import vectorfile as vf
from conformance.generator.case import Case
from conformance.generator.encoding import encode_expected, encode_initial_state
from conformance.generator.flags import KNIFE_EDGE, SPECIAL_GRADIENT_FLAGS, special_value_flags
from reference import Adafactor, schedules


class CallRecorder:
    """Wraps a callable learning rate and logs every value it returns."""

    def __init__(self, fn):
        self.fn, self.log = fn, []

    def __call__(self):
        value = float(self.fn())
        self.log.append(value)
        return value


def expect_error(case: Case, exc: Exception, at: str) -> None:
    """Raise AssertionError unless ``exc`` is the error ``case`` declares at ``at``."""
    error = case.error
    if not error or error["at"] != at or type(exc).__name__ != error["class"] \
            or error["message_contains"] not in str(exc):
        raise AssertionError(f"case {case.id}: unexpected {type(exc).__name__} at {at}: {exc}") from exc


def keras_vector(case: Case, vector: dict, initial: list, grads: list) -> dict:
    """Complete ``vector`` (the fields every vector starts with) for the Keras ``case`` on
    the drawn ``initial`` values and ``grads``."""
    flags = set(case.flags)
    config = dict(case.config)
    recorder = None
    if case.make_learning_rate is not None:
        recorder = CallRecorder(case.make_learning_rate())
        config["learning_rate"] = recorder
    try:
        opt = Adafactor(**config)
    except Exception as exc:  # an invalid vector must fail exactly as declared
        expect_error(case, exc, "construction")
        vector.update(config=_config_json(case, None), steps=[], result="invalid",
                      flags=sorted(flags | {"INVALID_CONFIGURATION"}), initial_state=None, state_dtypes={},
                      rms_floor=None)
        return vector
    if case.error and case.error["at"] == "construction":
        raise AssertionError(f"case {case.id}: expected {case.error['class']} at construction")

    names = [name for name, _ in case.variables]
    variables = [x.copy() for x in initial]
    replay.build(opt, variables, names, case.exclude)
    vector.update(initial_state=encode_initial_state(replay.state_snapshot(opt, variables)), state_dtypes={},
                  rms_floor=vf.float_to_bits(opt.epsilon_2))
    steps = []
    calls_so_far: list = []

    def on_step(index, expected):
        calls = recorder.log[len(calls_so_far):] if recorder else []
        calls_so_far.extend(calls)
        record = opt.last_step
        step = {"grads": [vf.encode_optional(g) for g in grads[index]],
                "expected": encode_expected(expected),
                "margins": _margins(opt, record)}
        if recorder is not None:
            step["learning_rate_calls"] = [vf.float_to_bits(v) for v in calls]
        steps.append(step)
        _derive_step_flags(flags, opt, record, expected)

    try:
        replay.run_steps(opt, variables, grads, on_step)
    except Exception as exc:
        expect_error(case, exc, "step")
        failing = len(steps)
        assert failing == case.error.get("step"), f"case {case.id}: failed at step {failing}"
        steps.append({"grads": [vf.encode_optional(g) for g in grads[failing]], "expected": None,
                      "margins": None})
        flags.add("INVALID_STEP")
    else:
        if case.error:
            raise AssertionError(f"case {case.id}: expected {case.error['class']} during the steps")

    _derive_case_flags(flags, case, opt, grads)
    vector.update(config=_config_json(case, opt), steps=steps, flags=sorted(flags))
    if case.error:
        vector["result"] = "invalid"
    elif flags & SPECIAL_GRADIENT_FLAGS:
        vector["result"] = "acceptable"
    else:
        vector["result"] = "valid"
    return vector


def _config_json(case: Case, opt) -> dict:
    if opt is None:  # invalid at construction: record the arguments as given
        return vf.as_jsonable(dict(case.config))
    config = opt.get_config()
    if case.make_learning_rate is not None:
        config["learning_rate"] = {"callable": "recorded"}
    if case.given_only:  # only the arguments given: a replay leaves the others to the implementation
        config = {key: value for key, value in config.items()
                  if key in case.config or (key == "learning_rate" and case.make_learning_rate is not None)}
    return vf.as_jsonable(config)


def margin(a: float, b: float):
    """|a - b| / max(|a|, |b|) to three significant digits (None if not finite)."""
    m = abs(a - b) / max(abs(a), abs(b)) if max(abs(a), abs(b)) > 0 else 0.0
    return float(f"{m:.3g}") if np.isfinite(m) else None


def _margins(opt, record) -> dict | None:
    traces = record.traces
    live = [t for t in traces if t is not None]
    if not live:
        return None
    t0 = live[0]
    return {
        "relative_step": margin(t0.learning_rate, t0.inv_sqrt_step),
        "epsilon_2": [None if t is None else margin(t.rms_x, opt.epsilon_2) for t in traces],
        "clip_threshold": [None if t is None else margin(t.rms_u / opt.clip_threshold, 1.0)
                           for t in traces],
    }


def _derive_step_flags(flags: set, opt, record, expected) -> None:
    active = [i for i, t in enumerate(record.traces) if t is not None]
    if opt.weight_decay is not None and active and not any(opt._use_weight_decay(i) for i in active):
        flags.add("WEIGHT_DECAY_NOTHING_TO_DECAY")
    for t in record.traces:
        if t is None:
            continue
        if t.inv_sqrt_step < t.learning_rate:
            flags.add("RELATIVE_STEP_BINDS")
        if t.rms_x <= opt.epsilon_2:  # a tie counts: epsilon_2 is then (one of) the max's arms
            flags.add("EPSILON_2_BINDS")
        if t.clip_denominator > 1.0:
            flags.add("CLIPPING_ACTIVE")
        pairs = [(t.learning_rate, t.inv_sqrt_step), (t.rms_x, opt.epsilon_2),
                 (t.rms_u / opt.clip_threshold, 1.0)]
        for a, b in pairs:
            m = margin(a, b)
            if m is not None and m < KNIFE_EDGE and a != b:
                flags.add("KNIFE_EDGE")
    if "NONFINITE_STATE" not in flags:
        arrays = [a.ravel() for key in ("variables", "v", "r", "c", "average", "accumulator")
                  for a in expected[key] or [] if a is not None]
        if arrays and not np.isfinite(np.concatenate(arrays)).all():
            flags.add("NONFINITE_STATE")


def _derive_case_flags(flags: set, case: Case, opt, grads) -> None:
    shapes = [shape for _, shape in case.variables]
    for shape in shapes:
        if len(shape) == 0:
            flags.add("SCALAR")
        elif len(shape) == 1:
            flags.add("VECTOR")
        else:
            flags.add("FACTORED")
            if 1 in shape[-2:]:
                flags.add("SIZE_ONE_AXIS")
            if len(shape) >= 3:
                flags.add("BATCH_AXES")
        size = int(np.prod(shape, dtype=np.int64))
        if size >= 8 or (len(shape) >= 1 and shape[-1] >= 8):
            flags.add("LONG_REDUCTION")
    if len(shapes) > 1:
        flags.add("MULTI_VARIABLE")
        if sum(int(np.prod(s, dtype=np.int64)) for s in shapes) >= 8 and opt.global_clipnorm:
            flags.add("LONG_REDUCTION")
    if case.steps >= 30:
        flags.add("LONG_RUN")
    if case.none_at or any(g is None for row in grads for g in row):
        # none_at for generated inputs; explicit inputs (fuzzed and regression cases) carry
        # their None gradients in the arrays themselves.
        flags.add("NONE_GRADIENT")
    given = [g.ravel() for row in grads for g in row if g is not None]
    if given:  # every rule is "some gradient value ...": checked on all values at once
        g = np.concatenate(given)
        flags |= special_value_flags(g)
        with np.errstate(under="ignore", over="ignore", invalid="ignore"):
            square = g * g
            if np.any(np.isfinite(g) & (g != 0) & (square == 0)):
                flags.add("SQUARE_UNDERFLOW")
            if np.any(np.isfinite(g) & (square < 2.0**20 * opt.epsilon_1)):
                flags.add("EPSILON_1_SIGNIFICANT")
    config_flags = {
        "weight_decay": "WEIGHT_DECAY", "clipnorm": "CLIPNORM", "clipvalue": "CLIPVALUE",
        "global_clipnorm": "GLOBAL_CLIPNORM", "use_ema": "EMA", "ema_overwrite_frequency": "EMA_OVERWRITE",
        "loss_scale_factor": "LOSS_SCALE", "gradient_accumulation_steps": "ACCUMULATION",
    }
    config = opt.get_config()
    for key, flag in config_flags.items():
        if config.get(key):
            flags.add(flag)
    if opt.weight_decay is not None:
        # Keras tests `weight_decay is None` (base_optimizer.py:952), not truthiness: 0.0
        # runs the decay, and reads the learning rate (a callable is called).
        flags.add("WEIGHT_DECAY")
    if case.exclude:
        flags.add("WEIGHT_DECAY_EXCLUSION")
    if opt.use_ema and opt.ema_overwrite_frequency == 0:
        flags.add("EMA_OVERWRITE_FREQUENCY_ZERO")
    if isinstance(opt._learning_rate, schedules.LearningRateSchedule):
        flags.add("SCHEDULE")
    if case.make_learning_rate is not None:
        flags.add("CALLABLE_LEARNING_RATE")
    if case.given_only:
        flags.add("DEFAULT_ARGUMENTS")
