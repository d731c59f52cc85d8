"""Replay golden vectors against an adapter and grade every step.

Two modes:

* ``teacher`` (teacher-forced): before step k the implementation is loaded with the golden
  state after step k-1, rounded to the lane dtype, so each step's error is one step's
  error and the first bad step is located exactly.
* ``trajectory``: the implementation runs free from the initial state; errors accumulate,
  and budgets grow with the step (conformance/tolerance.py).

Per step and tensor (variables, the update x_k - x_{k-1}, r, c, v, EMA averages,
accumulators) the runner computes the metrics of conformance/metrics.py and checks the
normwise error against the lane's budget. ``iterations`` must match exactly.

Vector results: ``pass``; ``fail``; ``acceptable`` (an ``acceptable`` vector that deviates:
allowed, reported); ``skip`` (with a reason); ``xfail``/``xpass`` (an expectation file
entry matched, and the vector failed / passed).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from conformance import metrics, replay
from conformance import vectorfile as vf
from conformance.adapters import AdapterError
from conformance.adapters.base import Adapter, LaneState, finfo, numpy_dtype
from conformance.expectations import Entry, budget_factors, check_lane, lookup, lookup_models
from conformance.tolerance import Policy

MAX_FAILURES_KEPT = 5
#: Statuses of a vector that was not graded: skipped (never run), or xfail (its result was
#: replaced by an expectation entry). Every other status (pass, model, fail, acceptable,
#: xpass) is a vector whose own verdict stands.
UNGRADED = ("skip", "xfail")
#: Per-step booleans of the vectors, graded exactly where an adapter reports them.
STEP_FLAGS = ("is_update_step", "ema_overwritten")


@dataclass
class Failure:
    step: int  # 1-based
    kind: str
    variable: int
    name: str
    element: Optional[list]
    expected: Optional[float]
    actual: Optional[float]
    ulp: float
    normwise: float  # in lane epsilons
    budget: float
    message: str = ""


@dataclass
class VectorOutcome:
    id: str
    file: str
    result: str  # valid | acceptable | invalid (the vector's own grade)
    flags: list
    status: str  # pass | model | fail | acceptable | skip | xfail | xpass
    reason: str = ""
    first_bad_step: Optional[int] = None
    worst_ratio: float = 0.0  # max over steps and tensors of normwise / budget
    curve: dict = field(default_factory=dict)  # kind -> [max normwise per step, lane eps]
    failures: list = field(default_factory=list)
    # Graded under a deviation model (conformance/deviations.py): its name, the worst
    # error/budget against the spec plus the model, and against the spec alone.
    model: Optional[str] = None
    model_ratio: Optional[float] = None
    spec_ratio: Optional[float] = None


@dataclass
class LaneReport:
    adapter: str
    dtype: str
    device: str
    mode: str
    environment: dict
    seconds: float
    outcomes: list
    unused_expectations: list = field(default_factory=list)
    #: Why the lane ran no vector at all ("" when it ran): the adapter does not run this
    #: dtype, or no selected vector is of a dialect it replays. Such a lane graded nothing.
    not_run: str = ""

    def counts(self) -> dict:
        out = {s: 0 for s in ("pass", "model", "fail", "acceptable", "xfail", "xpass", "skip")}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out

    @property
    def graded(self) -> int:
        """Vectors run, compared, and whose verdict stands (every status but UNGRADED)."""
        return sum(o.status not in UNGRADED for o in self.outcomes)

    @property
    def conforms(self) -> bool:
        """No failure, and at least one vector graded: a lane that checked nothing never
        conforms (cli.py turns a run where no lane graded anything into NOTHING CHECKED)."""
        return self.counts()["fail"] == 0 and self.graded > 0

    def to_json(self) -> dict:
        data = asdict(self)
        data["counts"] = self.counts()
        data["graded"] = self.graded
        data["conforms"] = self.conforms
        return data


# ----------------------------------------------------------------------------- states
def initial_state(vector: dict, path="<memory>") -> LaneState:
    variables = replay.initial_variables(vector, path)
    config = vector["config"]
    if vf.dialect_of(vector) != "keras":
        return _dialect_initial_state(vector, variables)
    factored = [x.ndim >= 2 for x in variables]
    return LaneState(
        iterations=0,
        variables=variables,
        r=[np.zeros(x.shape[:-1]) if f else None for x, f in zip(variables, factored)],
        c=[np.zeros(x.shape[:-2] + x.shape[-1:]) if f else None for x, f in zip(variables, factored)],
        v=[np.zeros_like(x) for x in variables],
        average=[np.zeros_like(x) for x in variables] if config.get("use_ema") else None,
        accumulator=([np.zeros_like(x) for x in variables]
                     if config.get("gradient_accumulation_steps") else None),
    )


def _dialect_initial_state(vector: dict, variables) -> LaneState:
    """Zero state of a native dialect (its own slot shapes: reference/dialects)."""
    from reference.dialects import optimizer_class

    stage = optimizer_class(vf.dialect_of(vector))(**vector["config"]).stage
    slots = [stage.init_slots(x) for x in variables]
    has_momentum = any("momentum" in s for s in slots)
    return LaneState(iterations=0, variables=variables, r=[s.get("r") for s in slots],
                     c=[s.get("c") for s in slots], v=[s.get("v") for s in slots],
                     momentum=[s.get("momentum") for s in slots] if has_momentum else None)


def golden_states(vector: dict, path="<memory>") -> list[LaneState]:
    """The golden state after each step (float64)."""
    states, calls = [], 0
    for step in vector["steps"]:
        calls += len(step.get("learning_rate_calls", []))
        e = replay.decode_expected(vector, step["expected"], path)
        states.append(LaneState(e["iterations"], e["variables"], e["r"], e["c"], e["v"],
                                e["average"], e["accumulator"], calls, e.get("momentum"),
                                {key: e[key] for key in STEP_FLAGS if e.get(key) is not None}))
    return states


# ----------------------------------------------------------------------------- skipping
def representability(vector: dict, dtype: str) -> Optional[str]:
    """Why the vector's inputs cannot be given to a ``dtype`` implementation, if so:
    a finite value that overflows, a non-zero value that underflows to zero, or a
    gradient whose square overflows or underflows to zero in the lane dtype. Invalid
    vectors are always run: they test the error, not the arithmetic."""
    if dtype == "float64" or vector["result"] == "invalid":
        return None
    target = numpy_dtype(dtype)
    arrays = [vf.decode_array(v["initial"]) for v in vector["variables"]]
    arrays += [vf.decode_array(g) for s in vector["steps"] for g in s["grads"] if g is not None]
    for a in arrays:
        with np.errstate(all="ignore"):
            cast = a.astype(target).astype(np.float64)
        finite = np.isfinite(a)
        if np.any(finite & ~np.isfinite(cast)):
            return f"inputs overflow {dtype}"
        if np.any(finite & (a != 0) & (cast == 0)):
            return f"inputs underflow to zero in {dtype}"
    for g in arrays[len(vector["variables"]):]:
        with np.errstate(all="ignore"):
            lane_g = g.astype(target)
            square = (lane_g * lane_g).astype(np.float64)
        if np.any(np.isfinite(g) & (g != 0) & (square == 0)):
            return f"g*g underflows to zero in {dtype} (the second moment would be 0 and U = 0/0)"
        if np.any(np.isfinite(g) & ~np.isfinite(square)):
            return f"g*g overflows {dtype}"
    if "EPS1_DTYPE_DEFAULT_BINDS" in vector["flags"]:
        # torch's eps1=None is finfo(dtype).eps (torch/optim/_adafactor.py:372-373): where
        # its floor binds, a lower-precision lane computes a different function by design.
        return f"eps1 defaults to finfo({dtype}).eps and binds here: the float64 golden does not apply"
    if dtype == "float16" and "EPSILON_1_SIGNIFICANT" in vector["flags"]:
        return "epsilon_1 matters here and rounds to 0 in float16"
    return _rms_underflow(vector, target, dtype) or _moment_range(vector, dtype) or _ema_conditioning(vector)


#: Largest |old| / |new| of a second-moment EMA step that is graded (see below).
EMA_SHRINK_LIMIT = 16.0


def _ema_conditioning(vector: dict) -> Optional[str]:
    """A second-moment EMA step new = beta*old + (1-beta)*q where |old| / |new| exceeds
    EMA_SHRINK_LIMIT. beta = 1 - t**beta_2_decay carries an absolute rounding error of
    about one eps of the computing dtype (t**beta_2_decay is near 1 when |beta_2_decay| is
    small, and 1 - it cancels), so new carries eps*|old|: |old|/|new| eps relative, for
    any lower-precision implementation of the formula. float64 lanes are still graded:
    t**beta_2_decay is correctly rounded in every libm we met, so a float64 port computing
    Keras's formula lands on the spec's bits (regression/float32-beta2-decay-cancellation,
    ratio 81, checks it). With the default beta_2_decay = -0.8,
    beta >= 0.43 and the ratio stays below 2.3; it only grows when |beta_2_decay| is tiny
    (found by the differential fuzzer: beta_2_decay = -1e-5 gives 1e3 eps on the update
    in float32). Checked on the golden r, c and unfactored v of every step."""
    previous = None
    for k, step in enumerate(vector["steps"]):
        if step["expected"] is None:
            continue
        expected = replay.decode_expected(vector, step["expected"])
        if previous is not None:
            for kind in ("r", "c", "v"):
                for i, (old, new) in enumerate(zip(previous[kind], expected[kind])):
                    if old is None or new is None or not new.size:
                        continue
                    if kind == "v" and expected["r"][i] is not None:
                        continue  # factored: V is recomputed from r and c
                    with np.errstate(all="ignore"):
                        ratio = np.abs(old) / np.abs(new)
                    ratio = ratio[np.isfinite(ratio)]
                    if ratio.size and float(ratio.max()) > EMA_SHRINK_LIMIT:
                        return (f"the second-moment EMA of {kind}[{i}] shrinks {float(ratio.max()):.3g}-fold at "
                                f"step {k + 1} (beta_2 near 0): the rounding of t**beta_2_decay alone costs "
                                f"that many eps in any dtype (limit {EMA_SHRINK_LIMIT:g})")
        previous = expected
    return None


def _moment_range(vector: dict, dtype: str) -> Optional[str]:
    """A golden second-moment statistic (r, c, v or R/mean(R)) outside the lane's normal
    range [tiny, max]: the lane cannot hold V itself (subnormal or flushed, or infinite), e.g. row statistics spanning more than the lane's
    range make R / mean(R) underflow to 0 and U = G / sqrt(0) (found by the differential
    fuzzer: float32 gradients from 3e-17 to 3e14 in one factored variable)."""
    info = finfo(dtype)
    low, high = float(info.tiny), float(info.max)
    for k, step in enumerate(vector["steps"]):
        if step["expected"] is None:  # an invalid vector's failing step
            continue
        expected = replay.decode_expected(vector, step["expected"])
        # Keras's V is (R / mean(R)) (outer) C: the ratio is an intermediate of its own.
        with np.errstate(all="ignore"):
            ratios = [None if r is None or not r.size else r / np.mean(r, axis=-1, keepdims=True)
                      for r in expected["r"]]
        for kind, arrays in (("r", expected["r"]), ("c", expected["c"]), ("v", expected["v"]),
                             ("R / mean(R)", ratios)):
            for i, a in enumerate(arrays):
                if a is None or not a.size:
                    continue
                finite = a[np.isfinite(a)]
                magnitude = np.abs(finite[finite != 0])
                if magnitude.size and (magnitude.min() < low or magnitude.max() > high):
                    return (f"the golden {kind} of variable {i} at step {k + 1} spans "
                            f"[{magnitude.min():.3g}, {magnitude.max():.3g}], beyond {dtype}'s "
                            f"normal range [{low:.3g}, {high:.3g}]")
    return None


def _epsilon_2(vector: dict) -> float:
    """The floor of RMS(x) in the step size (Keras epsilon_2; a dialect's stage knows its own)."""
    if vf.dialect_of(vector) == "keras":
        return vector["config"].get("epsilon_2", 1e-3)
    from reference.dialects import optimizer_class

    value = optimizer_class(vf.dialect_of(vector))(**vector["config"]).stage.epsilon_2
    return 0.0 if value is None else float(value)


def _rms_underflow(vector: dict, target, dtype: str) -> Optional[str]:
    """RMS(x) = sqrt(mean(x*x)) (Keras's formula, SPEC.md) where it sets the step size
    (RMS(x) > epsilon_2) but mean(x*x) < tiny/eps of the lane: the squares are subnormal
    or flushed to zero in the lane, losing more than one rounding of the sum, so no
    ``dtype`` implementation of the formula can be held to the policy (found by the
    differential fuzzer: x = 2**-126, epsilon_2 = 0 gives RMS(x) = 0 in float32 and no
    step at all). Checked on the initial variables and on every golden variable state,
    which is what the lane steps from in teacher mode."""
    info = finfo(dtype)
    floor = float(info.tiny) / float(info.eps)
    epsilon_2 = _epsilon_2(vector)
    states = [replay.initial_variables(vector)]
    states += [replay.decode_expected(vector, s["expected"])["variables"] for s in vector["steps"][:-1]
               if s["expected"] is not None]
    for variables in states:
        for i, x in enumerate(variables):
            with np.errstate(all="ignore"):
                mean_square = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
            if np.isfinite(mean_square) and 0 < mean_square < floor and np.sqrt(mean_square) > epsilon_2:
                return (f"RMS(x) of variable {i} sets the step size (> epsilon_2 = {epsilon_2:g}) but "
                        f"mean(x*x) = {mean_square:.3g} < tiny/eps of {dtype}: x*x is subnormal or zero there")
    return None


# ----------------------------------------------------------------------------- one vector
def run_vector(adapter: Adapter, vector: dict, path, dtype: str, device: str, mode: str,
               policy: Policy, entries: list[Entry]) -> VectorOutcome:
    outcome = VectorOutcome(vector["id"], str(path), vector["result"], list(vector["flags"]), "pass")
    entry = lookup(entries, vector, dtype, mode, device)
    if entry is not None and entry.verdict == "skip":
        outcome.status, outcome.reason = "skip", f"{entry.reason} [{entry.source}]"
        return outcome
    reason = adapter.unsupported(vector, dtype, device) or representability(vector, dtype)
    if reason:
        outcome.status, outcome.reason = "skip", reason
        return outcome

    if vector["result"] == "invalid":
        _grade_invalid(adapter, vector, path, dtype, device, outcome)
    else:
        factors = budget_factors(entries, vector, dtype, mode, device)
        _grade_valid(adapter, vector, path, dtype, device, mode, policy, outcome, factors,
                     lookup_models(entries, vector, dtype, mode, device))

    if entry is not None and entry.verdict == "xfail":
        _apply_xfail(entry, outcome)
    elif outcome.status == "fail" and vector["result"] == "acceptable":
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


def _grade_invalid(adapter, vector, path, dtype, device, outcome: VectorOutcome) -> None:
    error = vector["error"]
    grads = [[None if g is None else g.astype(numpy_dtype(dtype)) for g in replay.decode_grads(vector, s, path)]
             for s in vector["steps"]]
    at, raised = "construction", None
    try:
        session = adapter.create(vector, dtype, device)
        at = "step"
        for index, g in enumerate(grads):
            try:
                session.step(g)
            except Exception as exc:  # noqa: BLE001
                raised = (exc, index)
                break
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001
        raised = (exc, None)
    if raised is None:
        outcome.status = "fail"
        outcome.reason = f"expected {error['class']} at {error['at']}, nothing was raised"
        return
    exc, index = raised
    problems = []
    if at != error["at"]:
        problems.append(f"raised at {at}, expected at {error['at']}")
    if error["at"] == "step" and index != error.get("step"):
        problems.append(f"raised at step {index}, expected at step {error.get('step')}")
    if type(exc).__name__ != error["class"]:
        problems.append(f"raised {type(exc).__name__} ({exc}), expected {error['class']}")
    if problems:
        outcome.status, outcome.reason = "fail", "; ".join(problems)


@dataclass
class Replay:
    """What one replay of a valid vector produced: per step, the state the implementation
    stepped from (teacher: the loaded golden; trajectory: its own previous state) and the
    state it read back, as float64-castable copies."""

    start: LaneState  # the state before step 1 as the implementation holds it
    previous: list  # LaneState per step
    actual: list  # LaneState per step


def _copy_state(state: LaneState) -> LaneState:
    """A deep copy: the runner never keeps a reference into what it hands over or reads
    back (an implementation may update the loaded arrays in place, or return live buffers)."""
    def conv(items):
        return None if items is None else [None if a is None else np.array(a, copy=True) for a in items]

    return LaneState(state.iterations, conv(state.variables), conv(state.r), conv(state.c), conv(state.v),
                     conv(state.average), conv(state.accumulator), state.learning_rate_calls,
                     conv(state.momentum), None if state.flags is None else dict(state.flags))


def replay_states(adapter, vector, path, dtype, device, mode, start: LaneState, goldens: list) -> Replay:
    """Run the implementation over the vector. Teacher mode loads the golden state before
    every step. Trajectory mode starts from the implementation's own freshly built state
    (read before any load, so its ``build()`` is checked too) and runs free."""
    lane = numpy_dtype(dtype)
    grads = [[None if g is None else g.astype(lane) for g in replay.decode_grads(vector, s, path)]
             for s in vector["steps"]]
    fixed = {**fixed_state_dtypes(vector), **adapter.state_dtypes(vector, dtype)}
    session = adapter.create(vector, dtype, device)
    try:
        if mode == "trajectory":
            built = _copy_state(session.read())
            _check_dtypes(built, lane, adapter.name, vector["id"], 0, fixed)
            previous_actual = built
        else:
            session.load(_copy_state(start.cast(dtype)))
            previous_actual = built = start.cast(dtype)
        previous, actual = [], []
        for k, golden in enumerate(goldens):
            if mode == "teacher":
                loaded = (goldens[k - 1] if k else start).cast(dtype)
                session.load(_copy_state(loaded))
                previous_actual = loaded
            session.step([None if g is None else g.copy() for g in grads[k]])
            read = _copy_state(session.read())
            _check_dtypes(read, lane, adapter.name, vector["id"], k + 1, fixed)
            previous.append(previous_actual)
            actual.append(read)
            previous_actual = read
    finally:
        session.close()
    return Replay(built, previous, actual)


def _grade_valid(adapter, vector, path, dtype, device, mode, policy, outcome, factors,
                 model_entries: list = ()) -> None:
    """Replay once; grade against the golden vector; where that fails and ``model`` entries
    apply, grade the same replay against the spec plus those deviation models."""
    goldens = golden_states(vector, path)
    start = initial_state(vector, path)
    try:
        run = replay_states(adapter, vector, path, dtype, device, mode, start, goldens)
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001 - a crash of the implementation is a failure
        outcome.status, outcome.worst_ratio = "fail", np.inf
        if _exhausted(exc):  # called the recorded callable more often than the spec
            outcome.reason = f"learning_rate_calls: {_exhausted(exc)}"
            outcome.failures.append(Failure(0, "learning_rate_calls", -1, "", None, None, None, np.inf, np.inf, 0,
                                            f"{_exhausted(exc)}: "))
            return
        outcome.reason = f"raised {type(exc).__name__}: {exc}"
        outcome.failures.append(Failure(0, "exception", -1, "", None, None, None, 0, 0, 0,
                                        traceback.format_exc(limit=3)))
        return
    grade_states(vector, run, start, goldens, goldens, dtype, mode, policy, factors, outcome)
    if outcome.status != "fail" or not model_entries:
        return
    from conformance import deviations

    names = [e.model for e in model_entries]
    name = " + ".join(names)
    sources = ", ".join(e.source for e in model_entries)
    try:
        expected = deviations.expected_states(names, vector, path, mode, start, goldens)
    except Exception as exc:  # noqa: BLE001 - the model cannot run this vector: the spec's verdict stands
        outcome.reason += f" (deviation model {name} [{sources}] could not replay it: {type(exc).__name__}: {exc})"
        return
    under = VectorOutcome(outcome.id, outcome.file, outcome.result, outcome.flags, "pass")
    grade_states(vector, run, start, goldens, expected, dtype, mode, policy.for_models(names), factors, under)
    outcome.model = name
    outcome.model_ratio = under.worst_ratio
    outcome.spec_ratio = outcome.worst_ratio
    if under.status == "pass":
        outcome.status = "model"
        outcome.reason = (f"the spec plus deviation model {name} ({under.worst_ratio:.3g} of its budget; "
                          f"{outcome.worst_ratio:.3g} of the spec's) [{sources}]")
        outcome.worst_ratio = under.worst_ratio
        outcome.curve = under.curve
        outcome.failures = []
        outcome.first_bad_step = None
    else:
        outcome.reason = (f"beyond the spec ({outcome.worst_ratio:.3g} of its budget) and beyond the spec plus "
                          f"deviation model {name} [{sources}]: {under.reason}")
        outcome.failures = under.failures
        outcome.first_bad_step = under.first_bad_step


def _exhausted(exc: BaseException) -> Optional[str]:
    """The message of a replay.CallsExhausted in ``exc`` or its causes, else None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, replay.CallsExhausted):
            return str(exc)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def grade_states(vector, run: Replay, start: LaneState, goldens: list, expected: list, dtype, mode, policy,
                  factors, outcome: VectorOutcome) -> None:
    """Grade a replay against ``expected`` (the golden states, or a model's from the same
    starting points)."""
    names = [v["name"] for v in vector["variables"]]
    if mode == "trajectory":
        _grade_built(run.start, start, dtype, outcome)
    carried = [0.0] * len(start.variables)  # trajectory: largest |x_j| seen so far, per variable
    for k, golden in enumerate(expected):
        # The float64 state the expected step starts from: teacher mode loads the golden
        # state; a free-running trajectory is compared with the expected trajectory's own.
        before = (goldens if mode == "teacher" else expected)[k - 1] if k else start
        if mode == "trajectory":
            carried = [max(c, _largest(x)) for c, x in zip(carried, before.variables)]
        _grade_step(k + 1, before, golden, run.previous[k], run.actual[k], dtype, mode, policy, names, outcome,
                    factors, ema_momentum=vector["config"].get("ema_momentum", 0.99),
                    dialect=vf.dialect_of(vector), carried=carried if mode == "trajectory" else None)
    if outcome.failures:
        outcome.status = "fail"
        f = outcome.failures[0]
        outcome.reason = (f"step {f.step}: {f.kind} of {f.name!r}: {f.message or ''}"
                          f"normwise {f.normwise:.3g} eps > budget {f.budget:.3g} eps")


def _grade_built(built: LaneState, start: LaneState, dtype: str, outcome: VectorOutcome) -> None:
    """The implementation's own freshly built state must be the vector's initial state
    exactly: the variables as given (rounded to the lane dtype), zero statistics of the
    right shapes, iteration 0. Whatever the implementation reports is checked; a state kind
    it holds that the vector has none of is not graded."""
    expected = start.cast(dtype)
    problems = []
    if built.iterations != 0:
        problems.append(f"iterations {built.iterations}, expected 0")
    for kind, i, want in expected.arrays():
        have_list = getattr(built, kind)
        have = None if have_list is None or i >= len(have_list) else have_list[i]
        if have is None:
            problems.append(f"{kind}[{i}] missing")
            continue
        have = np.asarray(have)
        if have.shape != want.shape:
            problems.append(f"{kind}[{i}] has shape {list(have.shape)}, expected {list(want.shape)}")
        elif not np.array_equal(have.astype(np.float64), want.astype(np.float64), equal_nan=True):
            problems.append(f"{kind}[{i}] differs from the initial state")
    if problems:
        outcome.first_bad_step = outcome.first_bad_step or 0
        outcome.worst_ratio = np.inf
        outcome.failures.insert(0, Failure(0, "built state", -1, "", None, None, None, np.inf, np.inf, 0,
                                           "the freshly built optimizer state is not the vector's initial "
                                           f"state: {'; '.join(problems[:4])}: "))


def _relative_deviation(actual, golden) -> float:
    """max|actual - golden| / max|golden| over the finite elements (0 when golden is 0)."""
    with np.errstate(all="ignore"):
        a = np.asarray(actual).astype(np.float64)
        g = np.asarray(golden, dtype=np.float64)
        finite = np.isfinite(a) & np.isfinite(g)
        top = _largest(np.where(finite, g, 0.0))
        return float(np.max(np.abs(np.where(finite, a - g, 0.0)))) / top if top > 0 and finite.any() else 0.0


def _largest(x) -> float:
    """Largest finite magnitude of an array (0 when it has none)."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def fixed_state_dtypes(vector: dict) -> dict:
    """State kinds a vector's configuration keeps in a dtype of its own whatever the lane:
    optax stores its momentum in ``dtype_momentum`` (float32 by default; optax/_src/alias.py
    adafactor, transform.py ema with accumulator_dtype). An adapter adds its framework's own
    rules through ``Adapter.state_dtypes``."""
    config = vector["config"]
    if vf.dialect_of(vector) == "optax" and config.get("momentum") is not None and config.get("dtype_momentum"):
        return {"momentum": np.dtype(config["dtype_momentum"])}
    return {}


def _check_dtypes(state: LaneState, lane, adapter_name, vector_id, step, fixed: Optional[dict] = None) -> None:
    fixed = fixed or {}
    for kind, i, a in state.arrays():
        if kind in fixed:
            if np.asarray(a).dtype != fixed[kind]:
                raise AdapterError(f"{adapter_name}: vector {vector_id!r} step {step}: {kind}[{i}] holds "
                                   f"{np.asarray(a).dtype}, but the framework keeps it in {fixed[kind]}")
            continue
        if np.asarray(a).dtype != lane:
            raise AdapterError(f"{adapter_name}: vector {vector_id!r} step {step}: {kind}[{i}] holds "
                               f"{np.asarray(a).dtype}, but the lane is {lane.name}: the implementation "
                               f"did not run in the requested dtype")


def _grade_step(step, before: LaneState, golden: LaneState, prev_actual: LaneState, actual: LaneState,
                dtype, mode, policy: Policy, names, outcome: VectorOutcome, factors: dict, ema_momentum: float = 0.99,
                dialect: str = "keras", carried: Optional[list] = None) -> None:
    """Grade one step. ``carried`` (trajectory mode): per variable, the largest magnitude the
    golden trajectory has had before this step. The implementation steps its own variables,
    and x_k = x_0 - sum of the updates: an absolute rounding error made at an earlier, larger
    x_j is carried unchanged into a later x_k that cancelled to a much smaller value, so the
    variables are measured against that magnitude too (found on the GPU: optax's scalar
    vector steps x_0 = 1.86 to exactly 0, XLA:GPU's rounding leaves 1 ulp of x_0 there, and
    the next steps of size 1e-3 carry it; conformance/TOLERANCES.md)."""
    if actual.learning_rate_calls is not None and actual.learning_rate_calls != golden.learning_rate_calls:
        outcome.failures.append(Failure(step, "learning_rate_calls", -1, "", None, golden.learning_rate_calls,
                                        actual.learning_rate_calls, np.inf, np.inf, 0,
                                        "the callable learning rate was called a different number of times: "))
        outcome.first_bad_step = outcome.first_bad_step or step
    for key, want in (golden.flags or {}).items():
        have = (actual.flags or {}).get(key)
        if have is not None and bool(have) != bool(want):
            outcome.failures.append(Failure(step, key, -1, "", None, float(want), float(have), np.inf, np.inf, 0,
                                            f"{key} is {bool(have)}, the vector says {bool(want)}: "))
            outcome.first_bad_step = outcome.first_bad_step or step
    if actual.iterations != golden.iterations:
        outcome.failures.append(Failure(step, "iterations", -1, "", None, golden.iterations,
                                        actual.iterations, np.inf, np.inf, 0,
                                        "iterations differ: "))
        outcome.first_bad_step = outcome.first_bad_step or step
        return
    pairs = []
    for kind in ("variables", "r", "c", "v", "average", "accumulator", "momentum"):
        g_list, a_list = getattr(golden, kind), getattr(actual, kind)
        if g_list is None:
            continue
        for i, g in enumerate(g_list):
            if g is None:
                continue
            a = None if a_list is None else a_list[i]
            pairs.append((kind, i, g, a))
    # Magnitudes of the inputs of each result, for results that can cancel: the new variable
    # (x - alpha*u), the EMA (m*avg + (1-m)*x), the accumulator (g + acc).
    def magnitude(*arrays):
        return max((_largest(a) for a in arrays if a is not None), default=0.0)

    scales = {}
    for i in range(len(golden.variables)):
        scales[("variables", i)] = max(magnitude(before.variables[i]), carried[i] if carried else 0.0)
        if golden.average is not None:
            # The EMA's input x_k (the stepped variable) is not in the state once the
            # variables are overwritten with the average; recover its magnitude from
            # avg_k = m*avg_{k-1} + (1-m)*x_k (m = 0 on the first EMA update). 1 - m cancels
            # (0.01 from 0.99), so the result carries the rounding of m relative to x_k,
            # not to the much smaller (1-m)*x_k (found by the differential fuzzer:
            # ema_overwrite_frequency=1, x = g = lr = 1).
            with np.errstate(all="ignore"):
                m = float(ema_momentum)
                inputs = [golden.average[i]]
                if m != 1.0:
                    inputs.append((golden.average[i] - m * before.average[i]) / (1.0 - m))
            scales[("average", i)] = magnitude(before.average[i], golden.variables[i], before.variables[i], *inputs)
            scales[("variables", i)] = max(scales[("variables", i)], magnitude(*inputs))
        if golden.accumulator is not None:
            scales[("accumulator", i)] = magnitude(before.accumulator[i])
        # The second-moment EMAs beta*old + (1-beta)*new: beta = 1 - t**decay cancels when
        # |decay| is small (2**-7: 92 eps relative error in beta from one rounding of
        # t**decay), but its *absolute* error stays ~eps, so the result carries
        # eps*|old - new|: measured against the magnitude of the old state too (found by
        # the differential fuzzer: beta_2_decay = -2**-7, -2**-9 on a scalar).
        for kind in ("r", "c", "v", "momentum"):
            g_list, b_list = getattr(golden, kind, None), getattr(before, kind, None)
            if g_list is None or b_list is None or g_list[i] is None or b_list[i] is None:
                continue
            if kind == "v" and golden.r is not None and golden.r[i] is not None:
                continue  # a factored V is recomputed from r and c, not an EMA of itself
            scales[(kind, i)] = magnitude(b_list[i])
    allowance = {}
    for i, (g1, g0, a1, a0) in enumerate(zip(golden.variables, before.variables,
                                             actual.variables, prev_actual.variables)):
        with np.errstate(all="ignore"):
            pairs.append(("update", i, g1 - g0, np.asarray(a1).astype(np.float64) - np.asarray(a0).astype(np.float64)))
            allowance[i] = metrics.ulp_of(g1, dtype) + 0.5 * metrics.ulp_of(g0, dtype)
            if carried is not None:
                # Trajectory: the implementation stepped from its own x_{k-1}, off the golden
                # one by a relative deviation the variables' budget already accepted; an
                # update proportional to the parameter scale (RMS(x), |x|) inherits it.
                deviation = _relative_deviation(a0, g0)
                if deviation > 0:
                    inherited = np.abs(g1 - g0) * deviation
                    allowance[i] = allowance[i] + np.where(np.isfinite(inherited), inherited, 0.0)
    worst_step = {}
    for kind, i, g, a in pairs:
        if a is None:
            err = metrics.TensorError(np.inf, np.inf, np.inf, None, None, None)
            message = "missing from the implementation's state: "
        else:
            err = metrics.compare(a, g, dtype, allowance[i] if kind == "update" else None,
                                  scales.get((kind, i), 0.0))
            message = ""
        budget = policy.budget(dtype, mode, kind, step, dialect) * factors.get(kind, 1.0)
        ratio = err.normwise / budget if budget > 0 else (0.0 if err.normwise == 0 else np.inf)
        worst_step[kind] = max(worst_step.get(kind, 0.0), err.normwise)
        outcome.worst_ratio = max(outcome.worst_ratio, ratio)
        if ratio > 1:
            outcome.first_bad_step = outcome.first_bad_step or step
            if len(outcome.failures) < MAX_FAILURES_KEPT:
                outcome.failures.append(Failure(
                    step, kind, i, names[i], list(err.index) if err.index is not None else None,
                    err.expected, err.actual, err.ulp, err.normwise, budget, message))
    for kind, value in worst_step.items():
        outcome.curve.setdefault(kind, []).append(value)


# ----------------------------------------------------------------------------- a lane
def select(documents: dict, patterns=(), flags=()) -> list[tuple[str, dict]]:
    """Vectors whose id starts with (or fnmatches) any pattern and that carry all flags."""
    import fnmatch

    chosen = []
    for relative, vector in vf.iter_vectors(documents):
        if patterns and not any(
                fnmatch.fnmatchcase(vector["id"], p) if any(c in p for c in "*?[") else vector["id"].startswith(p)
                for p in patterns):
            continue
        if any(f not in vector["flags"] for f in flags):
            continue
        chosen.append((relative, vector))
    return chosen


def run_lane(adapter: Adapter, vectors: list[tuple[str, dict]], directory, dtype: str, device: str,
             mode: str, policy: Policy, entries: list[Entry], corpus: Optional[list] = None) -> LaneReport:
    """Run ``vectors`` (those of the adapter's dialects) in one lane. ``corpus``: every
    vector of the corpus, against which no skip/xfail entry may match a whole lane
    (expectations.check_lane; not checked against a narrow selection, which one entry may
    rightly cover)."""
    start = time.perf_counter()
    environment = adapter.environment(device)
    dialects = getattr(adapter, "dialects", ("keras",))
    mine = [(relative, vector) for relative, vector in vectors if vf.dialect_of(vector) in dialects]
    if corpus is not None:
        check_lane(entries, [v for _, v in corpus if vf.dialect_of(v) in dialects], dtype, mode, device)
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


def _from_jsonable(value):
    if value == "inf":
        return float("inf")
    if value == "-inf":
        return float("-inf")
    if value == "nan":
        return float("nan")
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_jsonable(v) for k, v in value.items()}
    return value


def _lane_from_json(data: dict) -> LaneReport:
    data = _from_jsonable(data)
    outcomes = []
    for o in data["outcomes"]:
        o = dict(o)
        o["failures"] = [Failure(**f) for f in o["failures"]]
        outcomes.append(VectorOutcome(**o))
    return LaneReport(data["adapter"], data["dtype"], data["device"], data["mode"], data["environment"],
                      data["seconds"], outcomes, data.get("unused_expectations", []), data.get("not_run", ""))


LaneReport.from_json = staticmethod(_lane_from_json)
