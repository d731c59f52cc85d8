"""Drive the reference from a golden vector: build the optimizer its config describes,
feed its gradients, and snapshot the complete state after every step.

The generator (conformance/generator) records vectors with ``run_steps`` and the snapshots
here; replaying a vector uses the same functions with the vector's recorded inputs, so what
is checked is exactly what was recorded.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Optional

import numpy as np

from conformance.vector import STEP_FLAGS, Step, Vector, as_vector
from reference import Adafactor, schedules
from reference.state import SLOT_KINDS, Kind, State


class CallsExhausted(RuntimeError):
    """An implementation called a recorded learning-rate callable more often than the
    spec did: a call-count difference (graded as ``learning_rate_calls``), not a crash."""


class RecordedCallable:
    """A zero-argument learning rate that returns recorded values in call order (how a
    vector stores a Python callable: Keras may call it several times per step)."""

    def __init__(self, values: Iterable[float], vector_id: str = "?"):
        self.values = list(values)
        self.position = 0
        self.vector_id = vector_id

    def __call__(self) -> float:
        if self.position >= len(self.values):
            raise CallsExhausted(
                f"vector {self.vector_id!r}: the learning-rate callable was called "
                f"{self.position + 1} times, but only {len(self.values)} calls were recorded")
        value = self.values[self.position]
        self.position += 1
        return value


def decode_learning_rate(vector):
    """The ``learning_rate`` argument a vector's config describes (a recorded callable is
    replayed from ``vector.learning_rate_calls``)."""
    vector = as_vector(vector)
    lr = vector.config.get("learning_rate", 0.001)
    if isinstance(lr, dict) and lr.get("callable") == "recorded":
        return RecordedCallable(vector.learning_rate_calls, vector.id)
    if isinstance(lr, dict):
        return schedules.deserialize(lr)
    return lr


def make_optimizer(vector, learning_rate=None, cls=Adafactor) -> Adafactor:
    """Construct (not build) the reference optimizer of ``vector``. Raises what the
    reference raises for an invalid configuration."""
    config = dict(as_vector(vector).config)
    if "learning_rate" in config or learning_rate is not None:
        config["learning_rate"] = decode_learning_rate(vector) if learning_rate is None else learning_rate
    return cls(**config)


def initial_variables(vector, path=None) -> list:
    """The initial variables: float64 arrays of the caller's own (copies)."""
    return [x.copy() for x in as_vector(vector).initial]


def decode_grads(vector, step, path=None) -> list:
    """One float64 array (or None) per variable of ``step`` (a ``Step``, or a step of the
    vector's JSON), copies of the caller's own. A vector built in memory has not been
    through the loader: a missing or misshapen gradient is a VectorFormatError naming it."""
    vector = as_vector(vector, path=path)
    if isinstance(step, Step):
        return [None if g is None else g.copy() for g in step.grads]
    probe = as_vector({**vector.raw, "steps": [step]}, file=vector.file, path=vector.path, dialect=vector.dialect)
    return [None if g is None else g.copy() for g in probe.steps[0].grads]


def build(opt: Adafactor, variables: list, names: list, exclude: Optional[dict]) -> None:
    """Exclusion first, then build: the order Keras documents and every Keras version
    accepts (3.16 refuses exclusion after build)."""
    if exclude:
        opt.exclude_from_weight_decay(
            var_list=[variables[i] for i in exclude.get("var_index", [])] or None,
            var_names=exclude.get("var_names") or None,
        )
    opt.build(variables, names=names)


def state_snapshot(opt: Adafactor, variables: list) -> dict:
    """The optimizer's state as plain arrays: ``iterations``, ``variables`` (copies) and
    per kind of ``SLOT_KINDS`` (``r``, ``c``, ``v``, ``average``, ...) the per-variable
    arrays, or None where the configuration keeps no such kind."""
    state = opt.get_state()
    return {"iterations": state.iterations, "variables": [x.copy() for x in variables],
            **{k.value: state.get(k) for k in SLOT_KINDS}}


def snapshot(opt: Adafactor, variables: list) -> dict:
    """The complete state after a step, as plain arrays (the ``expected`` of a step)."""
    record = opt.last_step
    return {**state_snapshot(opt, variables), "is_update_step": record.is_update_step,
            "learning_rate": record.learning_rate, "ema_overwritten": record.ema_overwritten}


def run_steps(opt: Adafactor, variables: list, grads_per_step: Iterable[list],
              on_step: Callable[[int, dict], None]) -> None:
    """Apply each step's gradients; call ``on_step(index, snapshot)`` after each."""
    for index, grads in enumerate(grads_per_step):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras's "Gradients do not exist" warning
            opt.apply(grads, variables)
        on_step(index, snapshot(opt, variables))


# ----------------------------------------------------------------------------- checking
def as_state(snapshot: dict) -> State:
    """A snapshot as a ``State`` (with its step flags, where it has them)."""
    flags = {key: snapshot[key] for key in STEP_FLAGS if key in snapshot}
    return State(snapshot["iterations"], {k: snapshot.get(k.value) for k in Kind}, None, flags or None)


def state_differences(expected: State, actual: State) -> list[str]:
    """Every place where two states differ in bits (any NaN equals any NaN): iterations,
    the step flags ``expected`` records, and every kind and array; learning-rate calls are
    not compared."""
    problems = []
    if expected.iterations != actual.iterations:
        problems.append(f"iterations: expected {expected.iterations!r}, got {actual.iterations!r}")
    for key, e in (expected.flags or {}).items():
        a = (actual.flags or {}).get(key)
        if e != a:
            problems.append(f"{key}: expected {e!r}, got {a!r}")
    for k in Kind:
        e_list, a_list = expected.get(k), actual.get(k)
        if (e_list is None) != (a_list is None):
            problems.append(f"{k}: expected {'none' if e_list is None else 'present'}")
            continue
        for i, (e, a) in enumerate(zip(e_list or [], a_list or [])):
            if (e is None) != (a is None):
                problems.append(f"{k}[{i}]: presence differs")
            elif e is not None and not _same_bits(e, a):
                problems.append(f"{k}[{i}]: differs")
    return problems


def _same_bits(e: np.ndarray, a: np.ndarray) -> bool:
    a = np.asarray(a).astype(np.float64)  # optax keeps its momentum in float32: widening is exact
    if e.shape != a.shape:
        return False
    both_nan = np.isnan(e) & np.isnan(a)
    return bool(np.all(both_nan | (e.view(np.int64) == a.view(np.int64))))


def _step_differences(step: Step, actual: dict) -> list[str]:
    problems = state_differences(step.expected, as_state(actual))
    if step.learning_rate != actual["learning_rate"]:
        problems.append(f"learning_rate: expected {step.learning_rate!r}, got {actual['learning_rate']!r}")
    return [f"step {step.index + 1}: {p}" for p in problems]


def _initial_differences(vector: Vector, built: dict) -> list[str]:
    """Where the vector's ``initial_state`` differs in bits from the state the reference
    holds right after ``build``."""
    if vector.initial_state is None:
        return ["initial_state: expected the state after build, the vector has none"]
    return [f"initial_state: {p}" for p in state_differences(vector.initial_state, as_state(built))]


def check_reference(vector, path=None) -> list[str]:
    """Replay ``vector`` through the reference; return the problems (empty: its initial
    state is the reference's state after build, and it conforms at 0 ulp, or raises the
    recorded error for an invalid vector)."""
    vector = as_vector(vector, path=path)
    if vector.dialect != "keras":
        return _check_dialect(vector)
    error = vector.error
    try:
        opt = make_optimizer(vector)
    except Exception as exc:  # noqa: BLE001 - any exception is graded against `error`
        return _graded_error(vector, exc, "construction")
    if error and error.at == "construction":
        return [f"expected {error.cls} at construction, nothing raised"]
    variables = initial_variables(vector)
    build(opt, variables, list(vector.names), vector.exclude_from_weight_decay)
    problems: list[str] = _initial_differences(vector, state_snapshot(opt, variables))
    done = []

    def on_step(index, actual):
        problems.extend(_step_differences(vector.steps[index], actual))
        done.append(index)

    try:
        run_steps(opt, variables, [decode_grads(vector, step) for step in vector.steps], on_step)
    except Exception as exc:  # noqa: BLE001
        return problems + _graded_error(vector, exc, "step", len(done))
    if error:
        problems.append(f"expected {error.cls} during the steps, nothing raised")
    return problems


def _check_dialect(vector: Vector) -> list[str]:
    """``check_reference`` for a native dialect's vector (reference/dialects)."""
    from reference.dialects import optimizer_class

    try:
        opt = optimizer_class(vector.dialect)(**vector.config)
    except Exception as exc:  # noqa: BLE001
        return _graded_error(vector, exc, "construction")
    if vector.error:
        return [f"expected {vector.error.cls} at construction, nothing raised"]
    variables = initial_variables(vector)
    excluded = set((vector.exclude_from_weight_decay or {}).get("var_index", []))
    opt.build(variables, decays=[i not in excluded for i in range(len(variables))])
    if vector.initial_state.iterations:  # a resumed vector (Case.start_iterations)
        opt.iterations = vector.initial_state.iterations
    problems: list[str] = _initial_differences(vector, dialect_snapshot(opt, variables))
    for step in vector.steps:
        lr = opt.learning_rate(opt.iterations + 1)
        with np.errstate(all="ignore"):
            opt.apply(decode_grads(vector, step), variables)
        problems.extend(_step_differences(step, dialect_snapshot(opt, variables, lr)))
    return problems


def _graded_error(vector: Vector, exc: Exception, at: str, step: Optional[int] = None) -> list[str]:
    """The problems of what the reference raised (conformance.grading.error_problems: the
    one contract), or "unexpected" where the vector expects no error there."""
    from conformance.grading import error_problems

    if vector.error is None or (vector.error.at != at):
        return [f"unexpected {type(exc).__name__} at {at}: {exc}"]
    return error_problems(vector.raw["error"], exc, at, step)


# ----------------------------------------------------------------------------- dialects
def dialect_snapshot(opt, variables: list, learning_rate=None) -> dict:
    """A native dialect's state as plain arrays (reference/dialects): ``r``/``c``/``v`` per
    variable (None where it keeps none, the lists kept even when every entry is None, as a
    vector records them), ``momentum`` only where some variable keeps one, no
    EMA or accumulator; after a step (``learning_rate``: the rate it used) every step is an
    update step and nothing is overwritten."""
    state, none = opt.state, [None] * len(variables)
    return {"iterations": state.iterations, "is_update_step": True,
            "learning_rate": None if learning_rate is None else float(learning_rate), "ema_overwritten": False,
            "variables": [x.copy() for x in variables], "average": None, "accumulator": None,
            "r": state.r or none, "c": state.c or none, "v": state.v or none, "momentum": state.momentum}


def dialect_has_momentum(opt) -> bool:
    """Whether a built dialect optimizer keeps a first moment for some variable."""
    return opt.state.momentum is not None


def dialect_rms_floor(opt) -> float:
    """The floor of RMS(x) in a dialect's step size (None: 0)."""
    return 0.0 if opt.rms_floor is None else float(opt.rms_floor)


def dialect_factored_axes(opt, shape: tuple):
    """The (row, column) axes a dialect factors for ``shape``, or None."""
    return opt.stages.factored_axes(shape)


def dialect_weight_decay(opt) -> bool:
    """Whether a dialect's configuration decays weights at all."""
    return opt.has_weight_decay
