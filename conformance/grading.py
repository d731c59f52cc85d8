"""Grading: what an implementation's replay of a vector is worth, as values.

* ``error_problems`` grades an invalid vector: the one contract for an expected error.
* ``Grader.step`` grades one step of a valid vector and returns a ``StepGrade``;
  ``Grader.replay`` folds the steps (and, in trajectory mode, the implementation's freshly
  built state) into a ``VectorGrade``.

Per step and tensor (the variables, the update x_k - x_{k-1}, and every state kind the
expected state has) the normwise error (conformance/metrics.py) is checked against the
lane's budget (conformance/tolerance.py) times any expectation factor. ``iterations``,
``learning_rate_calls`` and the step flags must match exactly where the implementation
reports them. The measuring rules (which magnitudes a result is measured against, what is
forgiven of the update) are explained in conformance/TOLERANCES.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from conformance import metrics
from conformance.outcomes import MAX_FAILURES_KEPT, Failure
from conformance.tolerance import Policy
from conformance.vector import ExpectedError
from reference.state import Kind, State


# ----------------------------------------------------------------------------- errors
def error_problems(error: ExpectedError | dict, exc: Optional[BaseException], at: str = "construction",
                   step: Optional[int] = None, check_message: bool = True) -> list[str]:
    """How what an implementation raised differs from an invalid vector's ``error``; empty
    when it matches. ``error`` is the vector's ``ExpectedError`` (or its JSON object
    {"class", "message_contains", "at", "step"}): the exception class name, text the message
    must contain, "construction" or "step", and the 0-based index of the step that raises
    (when at == "step"). ``exc`` is what was
    raised (None: nothing), ``at`` where, and ``step`` the 0-based index of the step that
    raised. All four must match (the error contract, reference/SPEC.md): the class by name,
    that of the raised exception or of any class it derives from (a subclass of ValueError
    raised for "ValueError" conforms: code that catches ValueError catches it), and the
    message by substring (``check_message=False``: not the message, for implementations
    that report only the class of their errors, as a version-1 results file does)."""
    if not isinstance(error, ExpectedError):
        error = ExpectedError.from_json(error)
    if exc is None:
        return [f"expected {error.cls} at {error.at}, nothing was raised"]
    problems = []
    if at != error.at:
        problems.append(f"raised at {at}, expected at {error.at}")
    elif at == "step" and step != error.step:
        problems.append(f"raised at step {step}, expected at step {error.step}")
    if error.cls not in class_names(exc):
        problems.append(f"raised {type(exc).__name__} ({exc}), expected {error.cls}")
    elif check_message and error.message_contains not in str(exc):
        problems.append(f"message {str(exc)!r} lacks {error.message_contains!r}")
    return problems


def class_names(exc: BaseException) -> list[str]:
    """The names the error contract accepts for ``exc``: its class's and every base class's
    (an error a results file reported, results_file.PortError, carries only the name the
    port reported: nothing is derived from it)."""
    if getattr(exc, "reported_only", False):  # a name a results file reported: that name only
        return [type(exc).__name__]
    return [cls.__name__ for cls in type(exc).__mro__]


# ----------------------------------------------------------------------------- values
@dataclass
class Replay:
    """What one replay of a valid vector produced: per step, the state the implementation
    stepped from (teacher: the loaded golden; trajectory: its own previous state) and the
    state it read back, as copies; ``built`` is its state before step 1."""

    built: State
    stepped_from: list  # State per step
    actual: list  # State per step


@dataclass
class StepGrade:
    """One step's grade. ``mismatches``: exact quantities that differ (always reported);
    ``errors``: tensors beyond their budget (the first few are reported); ``worst_ratio``:
    the largest normwise error / budget; ``curve``: per kind, the largest normwise error
    (lane epsilons). After an ``iterations`` mismatch nothing numeric is graded."""

    mismatches: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    worst_ratio: float = 0.0
    curve: dict = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return bool(self.mismatches or self.errors)


@dataclass
class VectorGrade:
    """A valid vector's grade over all its steps: ``fail`` when any step (or the built
    state) is bad, with the first failure as the reason."""

    status: str = "pass"
    reason: str = ""
    first_bad_step: Optional[int] = None
    worst_ratio: float = 0.0
    curve: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def add(self, step: int, grade: StepGrade) -> None:
        if grade.bad and self.first_bad_step is None:
            self.first_bad_step = step
        self.failures.extend(grade.mismatches)
        for failure in grade.errors:
            if len(self.failures) < MAX_FAILURES_KEPT:
                self.failures.append(failure)
        self.worst_ratio = max(self.worst_ratio, grade.worst_ratio)
        for kind, value in grade.curve.items():
            self.curve.setdefault(kind, []).append(value)

    def close(self) -> "VectorGrade":
        if self.failures:
            self.status = "fail"
            f = self.failures[0]
            self.reason = (f"step {f.step}: {f.kind} of {f.variable_name!r}: {f.message or ''}"
                           f"normwise {f.normwise:.3g} eps > budget {f.budget:.3g} eps")
        return self


# ----------------------------------------------------------------------------- the grader
@dataclass(frozen=True)
class Grader:
    """Grades one vector in one lane: its dtype and mode, the budgets (policy, the vector's
    dialect, expectation factors per kind), and the vector's variable names and EMA
    momentum (the EMA's input is recovered from it)."""

    dtype: str
    mode: str
    policy: Policy
    dialect: str = "keras"
    factors: dict = field(default_factory=dict)
    variable_names: tuple = ()
    ema_momentum: float = 0.99
    #: (kind, variable index) -> the longest reduction behind that tensor
    #: (tolerance.reduction_lengths of the vector's initial state); missing: 1.
    lengths: dict = field(default_factory=dict)

    def budget(self, kind: str, step: int, variable: Optional[int] = None) -> float:
        length = self.lengths.get((kind, variable), 1)
        return (self.policy.budget(self.dtype, self.mode, kind, step, self.dialect, length)
                * self.factors.get(kind, 1.0))

    def length_note(self, kind: str, variable: int) -> str:
        """Why a budget is larger than the table's, for a failure message ('' when it is not)."""
        length = self.lengths.get((kind, variable), 1)
        reach = self.policy.reach_of(self.dtype, kind, self.dialect)
        if not reach or length <= reach:
            return ""
        return (f"budget x{math.sqrt(length / reach):.3g} for a {length}-term reduction "
                f"(derived on at most {reach}; TOLERANCES.md, 'Long reductions'): ")

    def replay(self, run: Replay, start: State, goldens: list, expected: list) -> VectorGrade:
        """Grade a replay against ``expected`` (the golden states, or a deviation model's
        from the same starting points). Teacher mode starts each expected step from the
        golden state; trajectory mode from the expected trajectory's own previous state."""
        grade = VectorGrade()
        if self.mode == "trajectory":
            built = built_state_failure(run.built, start, self.dtype)
            if built is not None:
                grade.failures.append(built)
                grade.first_bad_step, grade.worst_ratio = 0, math.inf
        carried = [0.0] * len(start.variables)  # trajectory: largest |x_j| so far, per variable
        for k, want in enumerate(expected):
            before = (goldens if self.mode == "teacher" else expected)[k - 1] if k else start
            if self.mode == "trajectory":
                carried = [max(c, metrics.largest(x)) for c, x in zip(carried, before.variables)]
            grade.add(k + 1, self.step(k + 1, before, want, run.stepped_from[k], run.actual[k],
                                       carried if self.mode == "trajectory" else None))
        return grade.close()

    def step(self, step: int, before: State, expected: State, stepped_from: State, actual: State,
             carried: Optional[list] = None) -> StepGrade:
        """Grade one step: ``before`` and ``expected`` are float64 (the state the expected
        step starts from and reaches), ``stepped_from`` and ``actual`` the implementation's.
        ``carried`` (trajectory mode): per variable, the largest magnitude the expected
        trajectory has had before this step (TOLERANCES.md)."""
        grade = StepGrade(mismatches=exact_mismatches(step, expected, actual))
        if actual.iterations != expected.iterations:
            return grade
        pairs = [(k.value, i, g, _item(actual.get(k), i)) for k, i, g in expected.arrays()]
        scales = _scales(before, expected, self.ema_momentum, carried)
        allowance = {}
        for i, (g1, g0, a1, a0) in enumerate(zip(expected.variables, before.variables,
                                                 actual.variables, stepped_from.variables)):
            with np.errstate(all="ignore"):
                pairs.append(("update", i, g1 - g0,
                              np.asarray(a1).astype(np.float64) - np.asarray(a0).astype(np.float64)))
                allowance[i] = _update_allowance(g1, g0, a0, self.dtype, trajectory=carried is not None)
        for kind, i, g, a in pairs:
            if a is None:
                err = metrics.TensorError(math.inf, math.inf, math.inf, None, None, None)
                message = "missing from the implementation's state: "
            else:
                forgiven = allowance[i] if kind == "update" else None
                err = metrics.compare(a, g, self.dtype, forgiven, scales.get((kind, i), 0.0), ulps=False)
                message = self.length_note(kind, i)
            budget = self.budget(kind, step, i)
            ratio = err.normwise / budget if budget > 0 else (0.0 if err.normwise == 0 else math.inf)
            grade.curve[kind] = max(grade.curve.get(kind, 0.0), err.normwise)
            grade.worst_ratio = max(grade.worst_ratio, ratio)
            if ratio > 1:
                if a is not None:  # the ulp metric, for the report only
                    err = metrics.compare(a, g, self.dtype, forgiven, scales.get((kind, i), 0.0))
                grade.errors.append(Failure(
                    step=step, kind=kind, variable=i, variable_name=self._name(i),
                    element=list(err.index) if err.index is not None else None, expected=err.expected,
                    actual=err.actual, ulp=err.ulp, normwise=err.normwise, budget=budget, message=message))
        return grade

    def _name(self, i: int) -> str:
        return self.variable_names[i] if i < len(self.variable_names) else f"variable {i}"


def _item(items: Optional[list], i: int):
    return None if items is None or i >= len(items) else items[i]


def exact_mismatches(step: int, expected: State, actual: State) -> list:
    """``learning_rate_calls``, the step flags and ``iterations``, where the implementation
    reports them (None: not reported), against the expected state."""
    out = []
    if actual.learning_rate_calls is not None and actual.learning_rate_calls != expected.learning_rate_calls:
        out.append(Failure(step=step, kind="learning_rate_calls", expected=expected.learning_rate_calls,
                           actual=actual.learning_rate_calls,
                           message="the callable learning rate was called a different number of times: "))
    for key, want in (expected.flags or {}).items():
        have = (actual.flags or {}).get(key)
        if have is not None and bool(have) != bool(want):
            out.append(Failure(step=step, kind=key, expected=float(want), actual=float(have),
                               message=f"{key} is {bool(have)}, the vector says {bool(want)}: "))
    if actual.iterations != expected.iterations:
        out.append(Failure(step=step, kind="iterations", expected=expected.iterations, actual=actual.iterations,
                           message="iterations differ: "))
    return out


def _scales(before: State, expected: State, ema_momentum: float, carried: Optional[list]) -> dict:
    """Per (kind, variable): the largest magnitude among the inputs of a result that can
    cancel, which its error is measured against too (TOLERANCES.md): the new variable
    (x - alpha*u, and in trajectory mode the largest |x_j| carried so far), the EMA
    (m*avg + (1-m)*x, its input x recovered as (avg_k - m*avg_{k-1}) / (1 - m)), the
    accumulator (g + acc), and the second-moment EMAs and momentum (their previous value;
    a factored V is recomputed from r and c, not an EMA of itself)."""
    def magnitude(*arrays):
        return max((metrics.largest(a) for a in arrays if a is not None), default=0.0)

    scales = {}
    for i in range(len(expected.variables)):
        scales[("variables", i)] = max(magnitude(before.variables[i]), carried[i] if carried else 0.0)
        if expected.average is not None:
            with np.errstate(all="ignore"):
                m = float(ema_momentum)
                inputs = [expected.average[i]]
                if m != 1.0:
                    inputs.append((expected.average[i] - m * before.average[i]) / (1.0 - m))
            scales[("average", i)] = magnitude(before.average[i], expected.variables[i], before.variables[i],
                                               *inputs)
            scales[("variables", i)] = max(scales[("variables", i)], magnitude(*inputs))
        if expected.accumulator is not None:
            scales[("accumulator", i)] = magnitude(before.accumulator[i])
        for kind in (Kind.R, Kind.C, Kind.V, Kind.MOMENTUM):
            e, b = _item(expected.get(kind), i), _item(before.get(kind), i)
            if e is None or b is None:
                continue
            if kind is Kind.V and _item(expected.r, i) is not None:
                continue
            scales[(kind.value, i)] = magnitude(b)
    return scales


def _update_allowance(g1, g0, a0, dtype: str, trajectory: bool):
    """What is forgiven per element of the update x_k - x_{k-1}, observed through the stored
    variables: one ulp of x_k and half an ulp of x_{k-1} in the lane dtype; in trajectory
    mode also |update| times the relative deviation of the implementation's own x_{k-1},
    which an update proportional to the parameter scale inherits."""
    allowance = metrics.ulp_of(g1, dtype) + 0.5 * metrics.ulp_of(g0, dtype)
    if trajectory:
        deviation = metrics.relative_error(a0, g0)
        if deviation > 0:
            inherited = np.abs(g1 - g0) * deviation
            allowance = allowance + np.where(np.isfinite(inherited), inherited, 0.0)
    return allowance


def built_state_failure(built: State, start: State, dtype: str) -> Optional[Failure]:
    """The implementation's own freshly built state must be the vector's initial state
    exactly: the variables as given (rounded to the lane dtype), zero statistics of the
    right shapes, iteration 0. Every kind the initial state has is checked; a kind the
    implementation holds that the vector has none of is not graded. None when it is."""
    from conformance.adapters.base import numpy_dtype

    expected = start.cast(numpy_dtype(dtype))
    problems = []
    if built.iterations != 0:
        problems.append(f"iterations {built.iterations}, expected 0")
    for kind, i, want in expected.arrays():
        have = _item(built.get(kind), i)
        if have is None:
            problems.append(f"{kind.value}[{i}] missing")
            continue
        have = np.asarray(have)
        if have.shape != want.shape:
            problems.append(f"{kind.value}[{i}] has shape {list(have.shape)}, expected {list(want.shape)}")
        elif not np.array_equal(have.astype(np.float64), want.astype(np.float64), equal_nan=True):
            problems.append(f"{kind.value}[{i}] differs from the initial state")
    if not problems:
        return None
    return Failure(step=0, kind="built state", normwise=math.inf, ulp=math.inf,
                   message=("the freshly built optimizer state is not the vector's initial "
                            f"state: {'; '.join(problems[:4])}: "))
