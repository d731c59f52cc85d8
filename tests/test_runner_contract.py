"""What the runner promises an adapter, and checks of an implementation it used to skip:
it copies everything it hands over and reads back (a port that shares buffers, as
``torch.from_numpy`` and ``.numpy()`` do, is graded fairly); trajectory mode starts from
the implementation's own freshly built state and grades it; the per-step flags are graded
where an adapter reports them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conformance import runner
from conformance import vectorfile as vf
from conformance.adapters.base import LaneState
from conformance.adapters.reference import ReferenceAdapter, ReferenceSession
from conformance.tolerance import Policy

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


@pytest.fixture(scope="module")
def corpus():
    return list(vf.iter_vectors(vf.load_corpus(VECTORS)))


def _pick(corpus, *prefixes, flags=()):
    chosen = [(r, v) for r, v in corpus if vf.dialect_of(v) == "keras" and v["result"] == "valid"
              and any(v["id"].startswith(p) for p in prefixes) and all(f in v["flags"] for f in flags)]
    assert chosen
    return chosen


def _statuses(adapter, vectors, mode, dtype="float64"):
    policy = Policy.load()
    return {v["id"]: runner.run_vector(adapter, v, f"{VECTORS}/{r}", dtype, "cpu", mode, policy, [])
            for r, v in vectors}


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
def test_a_port_sharing_buffers_with_the_runner_passes(corpus, mode):
    adapter = type("Shared", (_Adapter,), {"session": SharedBuffersSession})()
    vectors = _pick(corpus, "shapes/", "arguments/use_ema", "arguments/gradient_accumulation_steps")
    outcomes = _statuses(adapter, vectors, mode)
    assert {o.status for o in outcomes.values()} == {"pass"}, {k: o.reason for k, o in outcomes.items()
                                                               if o.status != "pass"}


def test_trajectory_grades_the_implementations_own_build(corpus):
    adapter = type("WrongBuild", (_Adapter,), {"session": WrongBuildSession})()
    vectors = [(r, v) for r, v in _pick(corpus, "") if any(len(x["initial"]["shape"]) >= 3 for x in v["variables"])][:4]
    assert vectors, "the corpus has no 3-D variable"
    free = _statuses(adapter, vectors, "trajectory")
    assert all(o.status == "fail" and "built" in o.reason for o in free.values()), \
        {k: o.reason for k, o in free.items()}
    assert {o.status for o in _statuses(adapter, vectors, "teacher").values()} == {"pass"}


def test_step_flags_are_graded_where_reported(corpus):
    vectors = _pick(corpus, "", flags=("ACCUMULATION",))[:4]
    wrong = type("AlwaysUpdate", (_Adapter,), {"session": AlwaysUpdateSession})()
    outcomes = _statuses(wrong, vectors, "teacher")
    assert all(o.status == "fail" and "is_update_step" in o.reason for o in outcomes.values()), \
        {k: o.reason for k, o in outcomes.items()}
    assert {o.status for o in _statuses(_Adapter(), vectors, "teacher").values()} == {"pass"}


def test_unreported_flags_are_not_graded():
    golden = LaneState(1, [np.zeros(2)], [None], [None], [np.zeros(2)],
                       flags={"is_update_step": False, "ema_overwritten": False})
    actual = LaneState(1, [np.zeros(2)], [None], [None], [np.zeros(2)], flags=None)
    outcome = runner.VectorOutcome("x", "f", "valid", [], "pass")
    runner._grade_step(1, golden, golden, actual, actual, "float64", "teacher", Policy.load(), ["x"], outcome, {})
    assert not outcome.failures
