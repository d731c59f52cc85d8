"""Lane running: replay golden vectors against an adapter and grade them.

Two modes:

* ``teacher`` (teacher-forced): before step k the implementation is loaded with the golden
  state after step k-1, rounded to the lane dtype, so each step's error is one step's
  error and the first bad step is located exactly.
* ``trajectory``: the implementation runs free from its own freshly built state; errors
  accumulate, and budgets grow with the step (conformance/tolerance.py).

The runner hands the adapter copies and reads copies back (``reference.state.State``),
checks that every array it reads is in the lane dtype (or the dtype the adapter declares
for that kind, ``Adapter.state_dtypes``), and leaves the rest to its neighbours:
``applicability`` (vectors a lane cannot hold), ``grading`` (the grade of a replay, as a
value), ``expectations`` (skip, xfail, tolerance and deviation-model entries),
``deviations`` (the states a deviation model expects) and ``outcomes`` (the report model).
"""

from __future__ import annotations

import fnmatch
import sys
import time
import traceback
from typing import Optional

import numpy as np

from conformance import vectorfile as vf
from conformance.adapters import AdapterError
from conformance.adapters.base import Adapter, numpy_dtype
from conformance.applicability import skip_reason
from conformance.expectations import Entry, budget_factors, check_lane, lookup, lookup_models
from conformance.grading import Grader, Replay, VectorGrade, error_problems
from conformance.outcomes import MAX_FAILURES_KEPT, UNGRADED, Failure, LaneReport, VectorOutcome
from conformance.tolerance import Policy, reduction_lengths
from conformance.vector import Vector, as_vector
from reference.state import State, kind as state_kind

__all__ = ["select", "run_lane", "run_vector", "replay_states", "grader", "UNGRADED", "MAX_FAILURES_KEPT",
           "Failure", "VectorOutcome", "LaneReport", "Replay"]


# ----------------------------------------------------------------------------- a lane
def select(documents: dict, patterns=(), flags=()) -> list[tuple[str, dict]]:
    """Vectors whose id matches any pattern and that carry all flags. A pattern is an id
    prefix, an fnmatch pattern (it holds ``*``, ``?`` or ``[``), or ``=ID``: exactly that id
    (what reproduce lines use, so that ``arguments/lr/0.1`` does not also rerun
    ``arguments/lr/0.15``)."""
    chosen = []
    for relative, vector in vf.iter_vectors(documents):
        v = as_vector(vector)
        if patterns and not any(_matches(v.id, p) for p in patterns):
            continue
        if any(f not in v.flags for f in flags):
            continue
        chosen.append((relative, vector))
    return chosen


def _matches(vector_id: str, pattern: str) -> bool:
    if pattern.startswith("="):
        return vector_id == pattern[1:]
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(vector_id, pattern)
    return vector_id.startswith(pattern)


def run_lane(adapter: Adapter, vectors: list[tuple[str, dict]], directory, dtype: str, device: str,
             mode: str, policy: Policy, entries: list[Entry], corpus: Optional[list] = None) -> LaneReport:
    """Run ``vectors`` (those of the adapter's dialects) in one lane. ``corpus``: every
    vector of the corpus, against which no skip/xfail entry may match a whole lane
    (expectations.check_lane; not checked against a narrow selection, which one entry may
    rightly cover)."""
    start = time.perf_counter()
    environment = adapter.environment(device)
    dialects = getattr(adapter, "dialects", ("keras",))
    mine = [(relative, vector) for relative, vector in vectors if as_vector(vector).dialect in dialects]
    if corpus is not None:
        check_lane(entries, [v for _, v in corpus if as_vector(v).dialect in dialects], dtype, mode, device)
    outcomes = [run_vector(adapter, vector, f"{directory}/{relative}", dtype, device, mode, policy, entries)
                for relative, vector in mine]
    unused = [f"{e.source}: {e.verdict} {' '.join(f'{k}={v}' for k, v in e.selectors.items())}"
              for e in entries if e.used == 0 and _entry_applies_to_lane(e, dtype, mode, device)]
    return LaneReport(adapter.name, dtype, device, mode, environment, time.perf_counter() - start,
                      outcomes, unused)


def _entry_applies_to_lane(entry: Entry, dtype, mode, device) -> bool:
    lane = {"dtype": dtype, "mode": mode, "device": device}
    for key, value in entry.selectors.items():
        if key in lane:
            negate = value.startswith("!")
            if (lane[key] == value.lstrip("!")) == negate:
                return False
    return True


# ----------------------------------------------------------------------------- one vector
def run_vector(adapter: Adapter, vector: Vector, path, dtype: str, device: str, mode: str,
               policy: Policy, entries: list[Entry]) -> VectorOutcome:
    """The outcome of one vector (a ``Vector``, or its JSON object) in one lane: skipped (an
    expectation entry, the adapter, or the lane cannot hold it), or run and graded, then any
    xfail entry applied."""
    vector = as_vector(vector, path=path)
    outcome = VectorOutcome(vector.id, str(path), vector.result, list(vector.flags), "pass", dialect=vector.dialect)
    entry = lookup(entries, vector, dtype, mode, device)
    if entry is not None and entry.verdict == "skip":
        outcome.status, outcome.reason = "skip", f"{entry.reason} [{entry.source}]"
        return outcome
    reason = adapter.unsupported(vector, dtype, device) or skip_reason(vector, dtype)
    if reason:
        outcome.status, outcome.reason = "skip", reason
        return outcome

    if vector.result == "invalid":
        problems = _invalid_problems(adapter, vector, dtype, device)
        if problems:
            outcome.status, outcome.reason = "fail", "; ".join(problems)
    else:
        factors = budget_factors(entries, vector, dtype, mode, device)
        _grade_valid(adapter, vector, dtype, device, mode, policy, outcome, factors,
                     lookup_models(entries, vector, dtype, mode, device))

    if entry is not None and entry.verdict == "xfail":
        _apply_xfail(entry, outcome)
    elif outcome.status == "fail" and vector.result == "acceptable":
        outcome.status = "acceptable"
        outcome.reason = "deviates on an acceptable vector: " + outcome.reason
    return outcome


def _apply_xfail(entry: Entry, outcome: VectorOutcome) -> None:
    """An xfail entry excuses only the failure it names (``because=``): any other failure
    stays a failure, and a pass is an XPASS."""
    where = f"[{entry.source}]"
    if outcome.status == "model":
        return  # graded under a deviation model: the failure the xfail names did not occur
    if outcome.status not in ("fail", "acceptable"):
        outcome.status, outcome.reason = "xpass", f"expected to fail: {entry.reason} {where}"
        return
    problem = entry.unexplained(outcome.reason, outcome.failures)
    if problem:
        outcome.status = "fail"
        outcome.reason = f"{outcome.reason} (not the failure {entry.source} expects: {problem})"
        return
    outcome.status, outcome.reason = "xfail", f"{entry.reason} {where}"


def _invalid_problems(adapter, vector: Vector, dtype, device) -> list[str]:
    """Construct and step until the implementation raises; grade what it raised against
    the vector's ``error`` (grading.error_problems)."""
    lane = numpy_dtype(dtype)
    grads = [[None if g is None else g.astype(lane) for g in step.grads] for step in vector.steps]
    at, raised, index = "construction", None, None
    try:
        session = adapter.create(vector, dtype, device)
        at = "step"
        for index, g in enumerate(grads):
            try:
                session.step(g)
            except Exception as exc:  # noqa: BLE001
                raised = exc
                break
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001
        raised, index = exc, None
    return error_problems(vector.error, raised, at, index, check_message=getattr(adapter, "error_messages", True))


# ----------------------------------------------------------------------------- replaying
def _read(session, adapter_name: str, vector_id: str, step: int) -> State:
    """A copy of what the implementation holds (``Session.read()``, a ``State``)."""
    state = session.read()
    if not isinstance(state, State):
        raise AdapterError(f"{adapter_name}: vector {vector_id!r} step {step}: read() returned "
                           f"{type(state).__name__}, not a reference.state.State")
    return state.copy()


def _check_dtypes(state: State, lane, adapter_name, vector_id, step, fixed: dict) -> None:
    """Every array in the lane dtype, or in the dtype ``fixed`` declares for its kind."""
    for kind, i, a in state.arrays():
        have = np.asarray(a).dtype
        if kind in fixed:
            if have != fixed[kind]:
                raise AdapterError(f"{adapter_name}: vector {vector_id!r} step {step}: {kind.value}[{i}] holds "
                                   f"{have}, but the framework keeps it in {fixed[kind]}")
        elif have != lane:
            raise AdapterError(f"{adapter_name}: vector {vector_id!r} step {step}: {kind.value}[{i}] holds "
                               f"{have}, but the lane is {lane.name}: the implementation "
                               f"did not run in the requested dtype")


def _state_dtypes(adapter: Adapter, vector: dict, dtype: str) -> dict:
    """{Kind: np.dtype} of the kinds held in a dtype other than the lane's, as the adapter
    declares them (``Adapter.state_dtypes``: by default what the vector fixes)."""
    return {state_kind(k): np.dtype(v) for k, v in adapter.state_dtypes(vector, dtype).items()}


def replay_states(adapter, vector, path, dtype, device, mode, start: State, goldens: list) -> Replay:
    """Run the implementation over the vector. Teacher mode loads the golden state before
    every step. Trajectory mode starts from the implementation's own freshly built state
    (read before any load, so its build is checked too) and runs free. The implementation
    gets copies and every state read back is copied."""
    vector = as_vector(vector, path=path)
    lane = numpy_dtype(dtype)
    grads = [[None if g is None else g.astype(lane) for g in step.grads] for step in vector.steps]
    fixed = _state_dtypes(adapter, vector, dtype)
    session = adapter.create(vector, dtype, device)
    try:
        if mode == "trajectory":
            built = _read(session, adapter.name, vector.id, 0)
            _check_dtypes(built, lane, adapter.name, vector.id, 0, fixed)
            stepped_from = built
            if start.iterations:  # a resumed vector: run free from its initial state
                stepped_from = start.cast(lane)
                session.load(stepped_from.copy())
        else:
            built = start.cast(lane)
            session.load(built.copy())
            stepped_from = built
        previous, actual = [], []
        for k in range(len(goldens)):
            if mode == "teacher":
                stepped_from = (goldens[k - 1] if k else start).cast(lane)
                session.load(stepped_from.copy())
            session.step([None if g is None else g.copy() for g in grads[k]])
            read = _read(session, adapter.name, vector.id, k + 1)
            _check_dtypes(read, lane, adapter.name, vector.id, k + 1, fixed)
            previous.append(stepped_from)
            actual.append(read)
            stepped_from = read
    finally:
        session.close()
    return Replay(built, previous, actual)


# ----------------------------------------------------------------------------- grading
def grader(vector, dtype: str, mode: str, policy: Policy, factors: Optional[dict] = None) -> Grader:
    """The grader of ``vector`` in one lane (its dialect's budgets, names, EMA momentum)."""
    vector = as_vector(vector)
    return Grader(dtype, mode, policy, vector.dialect, dict(factors or {}), vector.names,
                  vector.config.get("ema_momentum", 0.99), reduction_lengths(vector.initial_state))


def _settle(outcome: VectorOutcome, grade: VectorGrade) -> None:
    outcome.status, outcome.reason = grade.status, grade.reason
    outcome.first_bad_step, outcome.worst_ratio = grade.first_bad_step, grade.worst_ratio
    outcome.curve, outcome.failures = grade.curve, grade.failures


def _grade_valid(adapter, vector: Vector, dtype, device, mode, policy, outcome, factors,
                 model_entries: list = ()) -> None:
    """Replay once; grade against the golden vector; where that fails and ``model`` entries
    apply, grade the same replay against the spec plus those deviation models."""
    goldens, start = vector.goldens, vector.initial_state
    try:
        run = replay_states(adapter, vector, vector.path, dtype, device, mode, start, goldens)
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001 - a crash of the implementation is a failure
        outcome.status, outcome.worst_ratio = "fail", np.inf
        exhausted = _exhausted(exc)
        if exhausted:  # called the recorded callable more often than the spec
            outcome.reason = f"learning_rate_calls: {exhausted}"
            outcome.failures.append(Failure(step=0, kind="learning_rate_calls", message=f"{exhausted}: "))
            return
        outcome.reason = f"raised {type(exc).__name__}: {exc}"
        outcome.failures.append(Failure(step=0, kind="exception", ulp=0.0, normwise=0.0,
                                        message=traceback.format_exc(limit=3)))
        return
    spec = grader(vector, dtype, mode, policy, factors).replay(run, start, goldens, goldens)
    _settle(outcome, spec)
    if spec.status != "fail" or not model_entries:
        return
    from conformance import deviations

    names = [e.model for e in model_entries]
    name = " + ".join(names)
    sources = ", ".join(e.source for e in model_entries)
    try:
        expected = deviations.expected_states(names, vector, vector.path, mode, start, goldens)
    except Exception as exc:  # noqa: BLE001 - the model cannot run this vector: the spec's verdict stands
        outcome.reason += f" (deviation model {name} [{sources}] could not replay it: {type(exc).__name__}: {exc})"
        return
    under = grader(vector, dtype, mode, policy.for_models(names), factors).replay(run, start, goldens, expected)
    outcome.model = name
    outcome.model_ratio = under.worst_ratio
    outcome.spec_ratio = spec.worst_ratio
    if under.status == "pass":
        outcome.status = "model"
        outcome.reason = (f"the spec plus deviation model {name} ({under.worst_ratio:.3g} of its budget; "
                          f"{spec.worst_ratio:.3g} of the spec's) [{sources}]")
        outcome.worst_ratio = under.worst_ratio
        outcome.curve = under.curve
        outcome.failures = []
        outcome.first_bad_step = None
    else:
        outcome.reason = (f"beyond the spec ({spec.worst_ratio:.3g} of its budget) and beyond the spec plus "
                          f"deviation model {name} [{sources}]: {under.reason}")
        outcome.failures = under.failures
        outcome.first_bad_step = under.first_bad_step


def _exhausted(exc: BaseException) -> Optional[str]:
    """The message of a replay.CallsExhausted in ``exc`` or its causes, else None."""
    replay = sys.modules.get("conformance.replay")  # not imported: nothing raised one
    seen = 0
    while replay is not None and exc is not None and seen < 8:
        if isinstance(exc, replay.CallsExhausted):
            return str(exc)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
