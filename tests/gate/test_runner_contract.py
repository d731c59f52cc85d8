"""What the runner promises an adapter, and checks of an implementation it used to skip:
it copies everything it hands over and reads back (a port that shares buffers, as
``torch.from_numpy`` and ``.numpy()`` do, is graded fairly); trajectory mode starts from
the implementation's own freshly built state and grades it; the per-step flags are graded
where an adapter reports them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conformance import applicability, grading, metrics
from conformance import vectorfile as vf
from conformance.outcomes import Failure, LaneReport
from conformance.vector import as_vector
from conformance.adapters.reference import ReferenceAdapter, ReferenceSession
from conformance.tolerance import Policy
from reference.state import Kind, State
from tests import helpers

VECTORS = helpers.VECTORS



def _pick(corpus_vectors, *prefixes, flags=()):
    chosen = [(r, v) for r, v in corpus_vectors if vf.dialect_of(v) == "keras" and v["result"] == "valid"
              and any(v["id"].startswith(p) for p in prefixes) and all(f in v["flags"] for f in flags)]
    assert chosen
    return chosen


def _statuses(adapter, vectors, mode, dtype="float64"):
    return {v.id: helpers.run_vector(adapter, r, v, dtype, mode) for r, v in vectors}


class _Adapter(ReferenceAdapter):
    session = ReferenceSession

    def create(self, vector, dtype, device):
        return self.session(vector, dtype)


class SharedBuffersSession(ReferenceSession):
    """A correct port that keeps the arrays handed to load() and steps them in place, and
    whose read() returns its live buffers."""

    def load(self, state):
        super().load(state)
        self.held = state

    def step(self, grads):
        super().step(grads)
        fresh = super().read()
        held = getattr(self, "held", None)
        if held is None:
            self.held = fresh
            return
        for kind, i, a in fresh.arrays():
            target = getattr(self.held, kind)[i]
            target[...] = a  # in place, into the caller's arrays
        self.held.iterations, self.held.learning_rate_calls = fresh.iterations, fresh.learning_rate_calls
        self.held.flags = fresh.flags

    def read(self):
        return self.held if getattr(self, "held", None) is not None else super().read()


class WrongBuildSession(ReferenceSession):
    """A port whose build() gives 3-D variables a column statistic of the wrong shape (the
    last axis only); it steps correctly once loaded."""

    def read(self):
        state = super().read()
        if state.iterations == 0:
            state.c = [None if c is None else (np.zeros(c.shape[-1:]) if c.ndim > 1 else c) for c in state.c]
        return state


class AlwaysUpdateSession(ReferenceSession):
    """A port that says every micro-step was an update step."""

    def read(self):
        state = super().read()
        if state.flags is not None:
            state.flags = dict(state.flags, is_update_step=True)
        return state


@pytest.mark.parametrize("mode", ["teacher", "trajectory"])
def test_a_port_sharing_buffers_with_the_runner_passes(corpus_vectors, mode):
    adapter = type("Shared", (_Adapter,), {"session": SharedBuffersSession})()
    vectors = _pick(corpus_vectors, "shapes/", "arguments/use_ema", "arguments/gradient_accumulation_steps")
    outcomes = _statuses(adapter, vectors, mode)
    assert {o.status for o in outcomes.values()} == {"pass"}, {k: o.reason for k, o in outcomes.items()
                                                               if o.status != "pass"}


def test_trajectory_grades_the_implementations_own_build(corpus_vectors):
    adapter = type("WrongBuild", (_Adapter,), {"session": WrongBuildSession})()
    vectors = [(r, v) for r, v in _pick(corpus_vectors, "") if any(len(x["initial"]["shape"]) >= 3 for x in v["variables"])][:4]
    assert vectors, "the corpus_vectors has no 3-D variable"
    free = _statuses(adapter, vectors, "trajectory")
    assert all(o.status == "fail" and "built" in o.reason for o in free.values()), \
        {k: o.reason for k, o in free.items()}
    assert {o.status for o in _statuses(adapter, vectors, "teacher").values()} == {"pass"}


def test_step_flags_are_graded_where_reported(corpus_vectors):
    vectors = _pick(corpus_vectors, "", flags=("ACCUMULATION",))[:4]
    wrong = type("AlwaysUpdate", (_Adapter,), {"session": AlwaysUpdateSession})()
    outcomes = _statuses(wrong, vectors, "teacher")
    assert all(o.status == "fail" and "is_update_step" in o.reason for o in outcomes.values()), \
        {k: o.reason for k, o in outcomes.items()}
    assert {o.status for o in _statuses(_Adapter(), vectors, "teacher").values()} == {"pass"}


def _state(iterations=1, x=0.0, flags=None, calls=0):
    return State(iterations, {Kind.VARIABLES: [np.full(2, x)], Kind.R: [None], Kind.C: [None], Kind.V: [np.zeros(2)]},
                 calls, flags)


def test_unreported_flags_are_not_graded():
    golden = _state(flags={"is_update_step": False, "ema_overwritten": False})
    grade = grading.Grader("float64", "teacher", Policy.load(), variable_names=("x",)).step(
        1, golden, golden, _state(flags=None), _state(flags=None))
    assert not grade.bad and grade.worst_ratio == 0
    reported = grading.Grader("float64", "teacher", Policy.load()).step(
        1, golden, golden, golden, _state(flags={"is_update_step": True}))
    assert [f.kind for f in reported.mismatches] == ["is_update_step"]


def test_a_step_grade_is_a_value_the_vector_grade_folds():
    """Grader.step returns what it found (and writes nowhere); VectorGrade keeps every exact
    mismatch, the first MAX_FAILURES_KEPT failures, the first bad step and the worst ratio."""
    grader = grading.Grader("float64", "teacher", Policy.load(), variable_names=("x",))
    before, golden = _state(0, 1.0), _state(1, 0.5)
    exact = grader.step(1, before, golden, before, _state(1, 0.5))
    assert not exact.bad and exact.curve["variables"] == 0 and exact.curve["update"] == 0
    off = grader.step(2, before, golden, before, _state(1, 0.5 + 1e-9, calls=3))
    assert [f.kind for f in off.mismatches] == ["learning_rate_calls"]
    assert {f.kind for f in off.errors} == {"variables", "update"} and off.worst_ratio > 1
    wrong_count = grader.step(3, before, golden, before, _state(2, 0.5 + 1e-9))
    assert [f.kind for f in wrong_count.mismatches] == ["iterations"] and not wrong_count.errors
    assert not wrong_count.curve  # nothing numeric is graded after an iterations mismatch

    total = grading.VectorGrade()
    for step, grade in ((1, exact), (2, off), (3, wrong_count)):
        total.add(step, grade)
    total.close()
    assert total.status == "fail" and total.first_bad_step == 2
    assert [f.kind for f in total.failures] == ["learning_rate_calls", "variables", "update", "iterations"]
    assert total.curve["variables"] == [0.0, off.curve["variables"]]
    assert total.reason.startswith("step 2: learning_rate_calls of ''")


@pytest.mark.parametrize("raised,at,step,problem", [
    (None, "construction", None, "nothing was raised"),
    (ValueError("epsilon_1 must be >= 0"), "construction", None, None),
    (TypeError("epsilon_1 must be >= 0"), "construction", None, "raised TypeError"),
    (ValueError("something else"), "construction", None, "lacks 'epsilon_1'"),
    (ValueError("epsilon_1 must be >= 0"), "step", 0, "raised at step, expected at construction"),
    # A subclass conforms (code that catches ValueError catches it); a base class does not.
    (type("ConfigError", (ValueError,), {})("epsilon_1 must be >= 0"), "construction", None, None),
    (ArithmeticError("epsilon_1 must be >= 0"), "construction", None, "raised ArithmeticError"),
    (Exception("epsilon_1 must be >= 0"), "construction", None, "raised Exception"),
])
def test_one_error_contract_checks_class_place_and_message(raised, at, step, problem):
    error = {"class": "ValueError", "message_contains": "epsilon_1", "at": "construction"}
    problems = grading.error_problems(error, raised, at, step)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_a_reported_error_class_matches_by_its_own_name_only():
    """An error a results file reported stands for that name alone: nothing derives from it."""
    reported = type("Exception", (Exception,), {"reported_only": True})("epsilon_1")
    assert grading.class_names(reported) == ["Exception"]
    error = {"class": "ValueError", "message_contains": "epsilon_1", "at": "construction"}
    assert grading.error_problems(error, reported, "construction") == [
        "raised Exception (epsilon_1), expected ValueError"]
    assert grading.error_problems({**error, "class": "Exception"}, reported, "construction") == []


def test_error_contract_checks_the_step_that_raised():
    error = {"class": "ValueError", "message_contains": "No gradients", "at": "step", "step": 1}
    assert grading.error_problems(error, ValueError("No gradients provided"), "step", 1) == []
    assert grading.error_problems(error, ValueError("No gradients provided"), "step", 0) == [
        "raised at step 0, expected at step 1"]


def test_an_invalid_vector_with_the_wrong_message_fails(corpus_vectors):
    """The runner grades invalid vectors with the one error contract, message included."""
    invalid = [(r, v) for r, v in corpus_vectors if v["result"] == "invalid" and vf.dialect_of(v) == "keras"
               and v["error"]["at"] == "construction"]
    assert invalid

    class Reworded(_Adapter):
        def create(self, vector, dtype, device):
            try:
                return super().create(vector, dtype, device)
            except Exception as exc:
                raise type(exc)("reworded") from None

    assert {o.status for o in _statuses(_Adapter(), invalid, "teacher").values()} == {"pass"}
    failed = _statuses(Reworded(), invalid, "teacher")
    assert all(o.status == "fail" and "lacks" in o.reason for o in failed.values()), \
        {k: o.reason for k, o in failed.items()}


def test_lane_report_json_round_trips(corpus_vectors):
    """LaneReport.to_json and from_json are inverses (non-finite floats included), and a
    report written before Failure.variable_name was named reads back."""
    lane = helpers.run_lane(_Adapter(), _pick(corpus_vectors, "shapes/")[:3])
    lane.outcomes[0].failures.append(Failure(step=2, kind="v", variable=0, variable_name="w", element=[1],
                                             expected=1.0, actual=float("nan"), ulp=float("inf"),
                                             normwise=float("inf"), budget=4.0, message="m: "))
    lane.outcomes[0].worst_ratio = float("inf")
    data = json.loads(json.dumps(lane.to_json()))
    assert data["outcomes"][0]["worst_ratio"] == "inf" and data["counts"]["pass"] == 3
    back = LaneReport.from_json(data)
    assert back.to_json() == data
    assert back.outcomes[0].failures[0].variable_name == "w"
    assert np.isnan(back.outcomes[0].failures[0].actual)
    old = dict(data["outcomes"][0]["failures"][0])
    old["name"] = old.pop("variable_name")
    assert Failure.from_json(old).variable_name == "w"


def test_failure_fields_are_keywords():
    with pytest.raises(TypeError):
        Failure(1, "v", 0, "w", None, 1.0, 2.0, 3.0, 4.0, 5.0, "")  # noqa: the old positional form
    assert Failure(step=1, kind="iterations").budget == 0


def test_relative_error_is_the_normwise_relative_error():
    assert metrics.relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.5])) == pytest.approx(0.2)
    # lists of arrays are taken together: one maximum over all
    assert metrics.relative_error([np.array(1.0), np.array([4.0])], [np.array(2.0), np.array([4.0])]) == 0.25
    nan, inf = float("nan"), float("inf")
    assert metrics.relative_error(np.array([nan, 1.0]), np.array([nan, 1.0])) == 0.0
    assert metrics.relative_error(np.array([inf]), np.array([inf])) == 0.0
    assert metrics.relative_error(np.array([nan]), np.array([1.0])) == inf
    assert metrics.relative_error(np.array([-inf]), np.array([inf])) == inf
    assert metrics.relative_error(np.array([1.0]), np.array([0.0])) == inf
    assert metrics.relative_error(np.zeros(2), np.zeros(3)) == inf
    # the same quantity compare() budgets, without allowance or scale floor
    a, g = np.array([1.0, 2.0 + 2 ** -40]), np.array([1.0, 2.0])
    assert metrics.relative_error(a, g) / metrics.EPSILON["float64"] == metrics.compare(a, g, "float64").normwise


def test_rms_of_x_overflowing_in_the_lane_is_not_graded():
    """sum(x*x) beyond float32's max: mean(x*x), RMS(x) and the step are inf in every
    float32 implementation of the formula, so the float32 lane skips the vector with the
    reason; float64 grades it, and so does float32 just below the limit. In float16 the
    squares are summed in float32 but the mean must fit float16."""
    big = helpers.build_vector({"relative_step": False}, [np.full(4, 1e19)], [[np.ones(4)]])
    reason = applicability.skip_reason(big, "float32")
    assert reason and "sum(x*x) of variable 0 in the initial variables" in reason, reason
    assert applicability.skip_reason(big, "float64") is None
    assert applicability.skip_reason(helpers.build_vector({"relative_step": False}, [np.full(4, 9e18)],
                                                          [[np.ones(4)]]), "float32") is None
    half = helpers.build_vector({}, [np.full(4, 300.0)], [[np.ones(4)]])
    assert "beyond float16" in applicability.skip_reason(half, "float16")
    assert applicability.skip_reason(half, "float32") is None


def test_a_read_that_is_not_a_state_is_an_adapter_error(corpus_vectors):
    """The runner speaks reference.state.State only: any other object from read() is an
    environment error naming the adapter, the vector and the step, never a grade."""
    from conformance.adapters import AdapterError

    class Untyped(ReferenceSession):
        def read(self):
            return {"iterations": 0}

    adapter = type("Untyped", (_Adapter,), {"session": Untyped})()
    rel, vector = _pick(corpus_vectors, "shapes/")[0]
    with pytest.raises(AdapterError, match=r"step 0: read\(\) returned dict, not a reference.state.State"):
        helpers.run_vector(adapter, rel, vector, mode="trajectory")


def _xfail(tmp_path, because: str, vector_id: str):
    from conformance import expectations

    path = tmp_path / "port.txt"
    path.write_text(f"xfail id={vector_id} because={because}  # what the port does\n")
    return expectations.parse(path)


def test_an_xfail_can_name_an_accepted_invalid_configuration(corpus_vectors, tmp_path):
    """``because=accepts``: the port raises nothing where the spec refuses. It excuses
    exactly that: a port that raises the wrong class still fails, and one that refuses as
    the spec says is an XPASS (a release that starts refusing shows up)."""
    (relative, vector), = [(r, v) for r, v in corpus_vectors if v.id == "invalid/clipnorm_and_clipvalue"]
    entries = _xfail(tmp_path, "accepts", vector.id)

    class Accepts(_Adapter):
        def create(self, vector, dtype, device):
            config = {k: v for k, v in vector.config.items() if k != "clipvalue"}
            return super().create(as_vector({**vector.raw, "config": config, "result": "valid", "error": None},
                                            file=vector.file, dialect=vector.dialect), dtype, device)

    class WrongClass(_Adapter):
        def create(self, vector, dtype, device):
            raise TypeError("Only one of clipnorm, clipvalue")

    assert helpers.run_vector(Accepts(), relative, vector, entries=entries).status == "xfail"
    assert helpers.run_vector(Accepts(), relative, vector).status == "fail"
    wrong = helpers.run_vector(WrongClass(), relative, vector, entries=entries)
    assert wrong.status == "fail" and "only accepts differs" in wrong.reason
    assert helpers.run_vector(_Adapter(), relative, vector, entries=entries).status == "xpass"


def test_an_xfail_can_name_another_message_and_only_that(corpus_vectors, tmp_path):
    (relative, vector), = [(r, v) for r, v in corpus_vectors if v.id == "invalid/clipnorm_and_global_clipnorm"]
    entries = _xfail(tmp_path, "message", vector.id)

    class Reworded(_Adapter):
        def create(self, vector, dtype, device):
            raise ValueError("At most one of `clipnorm` and `global_clipnorm` can be set")

    class Silent(_Adapter):
        pass

    assert helpers.run_vector(Reworded(), relative, vector, entries=entries).status == "xfail"
    assert helpers.run_vector(Reworded(), relative, vector).status == "fail"
    silent = _xfail(tmp_path, "message", vector.id)
    assert helpers.run_vector(_Adapter(), relative, vector, entries=silent).status == "xpass"
