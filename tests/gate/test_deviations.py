"""Deviation models (conformance/deviations.py) and the expectation rules that keep a lane
from being hidden (conformance/expectations.py): a known deviation excuses an error only up
to its model's derived bound, and a port that is the model plus a 1e-4 error still fails."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance import deviations, expectations
from conformance import vectorfile as vf
from conformance.adapters.reference import ReferenceAdapter
from tests import background, helpers

REPO, VECTORS = helpers.REPO, helpers.VECTORS
#: Real TensorFlow's float32 schedules (tests/gate/schedule_ulps_worker.py), measured in a child
#: process on the second core while other tests run.
SCHEDULE_WORKER = background.Job(
    "schedule-ulps", [sys.executable, str(Path(__file__).resolve().parent / "schedule_ulps_worker.py")],
    env=background.environment(TF_CPP_MIN_LOG_LEVEL="3"), timeout=600,
    fixtures=("schedule_worker",), requires=("keras", "tensorflow"))
EXPECTATIONS = REPO / "conformance" / "expectations"
#: A few valid Keras vectors with factored and unfactored variables, EMA and accumulation.
SAMPLE = ("shapes/", "arguments/beta_2_decay", "arguments/use_ema", "arguments/gradient_accumulation_steps",
          "multi_variable/")



def _sample(corpus_vectors, prefixes=SAMPLE, flags=()):
    chosen = [(rel, v) for rel, v in corpus_vectors if vf.dialect_of(v) == "keras" and v["result"] == "valid"
              and any(v["id"].startswith(p) for p in prefixes) and all(f in v["flags"] for f in flags)]
    assert chosen, (prefixes, flags)
    return chosen


def _run(adapter, vectors, entries, mode="teacher", dtype="float64"):
    return {v.id: helpers.run_vector(adapter, rel, v, dtype, mode, entries=entries) for rel, v in vectors}


def _entries(tmp_path, text):
    path = tmp_path / "entries.txt"
    path.write_text(text + "\n")
    return expectations.parse(path)


class _Scaled:
    """Wraps an adapter: every read-back ``kind`` array is off by a relative 1e-4 (a port
    that computes one Adafactor statistic wrongly, carried into the next step)."""

    def __init__(self, inner, kind):
        self.inner, self.kind = inner, kind

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def create(self, vector, dtype, device):
        session, kind = self.inner.create(vector, dtype, device), self.kind
        read = session.read

        def scaled_read():
            state = read()
            arrays = getattr(state, kind)
            if arrays is not None:
                setattr(state, kind, [None if a is None else np.asarray(a) * (1 + 1e-4) for a in arrays])
            return state

        session.read = scaled_read
        return session


# ----------------------------------------------------------------------------- the emulations
def test_float32_mean_is_float32_arithmetic_cast_back():
    x = np.linspace(0.1, 3.0, 1000)
    got = deviations.float32_mean("sequential", reciprocal=True)(x)
    x32 = x.astype(np.float32)
    want = np.cumsum(x32, dtype=np.float32)[-1] * (np.float32(1) / np.float32(1000))
    assert got.dtype == np.float64 and got == np.float64(want)
    assert got != np.mean(x)  # not the float64 mean
    divided = deviations.float32_mean("pairwise", reciprocal=False)(x.reshape(10, 100), axis=-1)
    assert divided.shape == (10,) and divided.dtype == np.float64
    np.testing.assert_array_equal(divided, (np.sum(x32.reshape(10, 100), axis=-1, dtype=np.float32)
                                            / np.float32(100)).astype(np.float64))


def test_float32_minmax_round_both_operands():
    a = 1.0 + 2.0 ** -40  # not a float32 value
    assert deviations.float32_maximum(a, 0.5).dtype == np.float32
    assert deviations.float32_maximum(a, 0.5) == np.float32(1.0)
    assert float(deviations.float32_minimum(0.1, 0.2)) == float(np.float32(0.1))


def test_patched_restores_the_spec():
    from reference import minmax, reductions

    saved = reductions.mean, minmax.minimum, minmax.maximum
    variant = deviations.model("keras-float32-means-torch").variants[0]
    with variant.patched():
        assert reductions.mean is variant.mean and minmax.maximum is deviations.float32_maximum
    assert (reductions.mean, minmax.minimum, minmax.maximum) == saved


def test_float32_schedule_variants_move_by_float32_ulps():
    assert deviations.to_float32(0.1) == float(np.float32(0.1))
    up = deviations.to_float32(0.1, 2)
    assert up == float(np.nextafter(np.nextafter(np.float32(0.1), np.float32(1)), np.float32(1)))


# ----------------------------------------------------------------------------- grading
@pytest.mark.parametrize("name", ["keras-float32-means-jax", "keras-float32-means-torch"])
def test_the_model_itself_conforms_under_its_entry_and_not_without(tmp_path, corpus_vectors, name):
    """Graded MODEL only where the spec alone fails (a model is tried only then: its
    ``spec_ratio`` above 1 is the failure the run without the entry reports)."""
    vectors = _sample(corpus_vectors)
    adapter = deviations.adapter(name)
    for mode in ("teacher", "trajectory"):
        with_model = _run(adapter, vectors, _entries(tmp_path, f"model {name} dtype=float64  # test"), mode)
        statuses = {o.status for o in with_model.values()}
        assert statuses <= {"pass", "model"} and "model" in statuses, {k: o.reason for k, o in with_model.items()}
        modelled = [o for o in with_model.values() if o.status == "model"]
        assert all(o.model == name and o.spec_ratio > 1 >= o.model_ratio for o in modelled)
    # and without the entry those vectors fail (two of them checked)
    needed = {o.id for o in modelled}
    without = _run(adapter, [(r, v) for r, v in vectors if v.id in needed][:2], [], mode)
    assert without and all(o.status == "fail" for o in without.values()), without


@pytest.mark.parametrize("backend", ["jax", "torch", "tensorflow"])
@pytest.mark.parametrize("kind", ["r", "c", "v", "variables", "average", "accumulator"])
def test_a_1e4_error_in_a_statistic_fails_every_keras_float64_lane(corpus_vectors, backend, kind):
    """The committed expectation file of each Keras backend, with its models, on an
    implementation that is those models plus one statistic off by 1e-4: every vector that
    holds the statistic fails, none passes under a model."""
    entries = expectations.for_adapter(f"keras-{backend}")
    flags = {"average": ("EMA",), "accumulator": ("ACCUMULATION",)}.get(kind, ())
    live = [(rel, v) for rel, v in _sample(corpus_vectors, prefixes=("",), flags=flags)
            if any(a is not None for a in (v.initial_state.get(kind) or []))]
    vectors = live[:4]  # vectors where the statistic is live: one would do, four for safety
    names = [e.model for e in entries if e.verdict == "model" and "dtype" in e.selectors and "flag" not in e.selectors]
    adapter = _Scaled(deviations.adapter(names) if names else ReferenceAdapter(), kind)
    outcomes = _run(adapter, vectors, entries)
    graded = [o for o in outcomes.values() if o.status != "skip"]
    holds = [o for o in graded if kind in o.curve or any(f.kind == kind for f in o.failures)]
    assert holds, "no graded vector holds the statistic"
    assert all(o.status == "fail" for o in holds), {o.id: (o.status, o.reason) for o in holds if o.status != "fail"}


def test_behaviour_models_reproduce_the_quirk_and_nothing_else(tmp_path, corpus_vectors):
    stale = _sample(corpus_vectors, ("",), flags=("ACCUMULATION", "NONE_GRADIENT"))
    adapter = deviations.adapter("keras-jax-stale-accumulators")
    assert any(o.status == "fail" for o in _run(adapter, stale, []).values())
    entries = _entries(tmp_path, "model keras-jax-stale-accumulators flag=ACCUMULATION,NONE_GRADIENT  # t")
    assert {o.status for o in _run(adapter, stale, entries).values()} <= {"pass", "model"}
    # On vectors without the flags the quirk changes nothing: the spec's budget holds.
    plain = _sample(corpus_vectors, ("shapes/",))
    assert {o.status for o in _run(adapter, plain, []).values()} == {"pass"}


# ----------------------------------------------------------------------------- expectation rules
@pytest.mark.parametrize("text", [
    "xfail id=* because=iterations  # hides everything",
    "skip id=*  # hides everything",
    "skip dtype=float64  # hides a lane",
    "xfail dtype=float64 result=valid because=iterations  # hides a lane",
    "skip id=!special_values/huge  # all but one",
    "tolerance id=shapes/ x1e300  # absurd",
    "tolerance id=shapes/ xinf  # infinite",
    "tolerance id=shapes/ x65  # past MAX_FACTOR",
    "skip id=shapes/ dtype=flaot64  # misspelt",
    "skip id=shapes/ mode=teachr  # misspelt",
    "xfail id=shapes/  # names no failure",
    "xfail id=shapes/ because=variables  # numeric: needs a model",
    "model no-such-model dtype=float64  # unknown",
])
def test_entries_that_could_hide_a_lane_are_refused(tmp_path, text):
    with pytest.raises(expectations.ExpectationError):
        _entries(tmp_path, text)


def test_unknown_flags_and_whole_lane_entries_are_refused(tmp_path, corpus_vectors):
    flags = {f for _, v in corpus_vectors for f in v["flags"]}
    with pytest.raises(expectations.ExpectationError, match="NOT_A_FLAG"):
        expectations.check_flags(_entries(tmp_path, "skip flag=NOT_A_FLAG  # t"), flags)
    keras = [v for _, v in corpus_vectors if vf.dialect_of(v) == "keras"]
    some_flag = sorted(keras[0]["flags"])[0] if keras[0]["flags"] else "SHAPES"
    everything = [dict(v, flags=list(v["flags"]) + [some_flag]) for v in keras]
    entries = _entries(tmp_path, f"skip flag={some_flag}  # t")
    with pytest.raises(expectations.ExpectationError, match="hide the lane"):
        expectations.check_lane(entries, everything, "float64", "teacher", "cpu")


def test_committed_expectation_files_hide_no_lane(corpus_vectors):
    flags = {f for _, v in corpus_vectors for f in v["flags"]}
    for path in sorted(EXPECTATIONS.glob("*.txt")):
        entries = expectations.parse(path)
        expectations.check_flags(entries, flags)
        for dtype in ("float64", "float32", "float16", "bfloat16"):
            for mode in ("teacher", "trajectory"):
                expectations.check_lane(entries, [v for _, v in corpus_vectors], dtype, mode, "cpu")


def test_an_xfail_excuses_only_the_failure_it_names(tmp_path, corpus_vectors):
    """An xfail naming a raised error does not excuse a numeric failure."""
    from conformance.adapters.broken import _make

    vectors = _sample(corpus_vectors, ("shapes/",))
    adapter = _make("BetaFromPreviousStep")()
    failing = {i for i, o in _run(adapter, vectors, []).items() if o.status == "fail"}
    assert failing
    entries = _entries(tmp_path, "xfail id=shapes/ because=raises:RuntimeError  # test")
    outcomes = _run(adapter, [(r, v) for r, v in vectors if v["id"] in failing], entries)
    assert all(o.status == "fail" and "not the failure" in o.reason for o in outcomes.values())


def test_real_tensorflow_schedules_stay_within_the_models_ulps():
    """The keras-tensorflow-float32-schedules model assumes a float32 schedule lands within
    SCHEDULE_ULPS float32 ulps of the float64 value rounded once; measure it on real Keras
    (in a child process that starts early, on the second core: SCHEDULE_WORKER)."""
    for module in ("keras", "tensorflow"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (`make test` installs it)")
    proc = SCHEDULE_WORKER.result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    worst = json.loads(proc.stdout.strip().splitlines()[-1])
    assert worst and max(worst.values()) > 0, worst  # TF really computes in float32
    assert max(worst.values()) <= deviations.SCHEDULE_ULPS, worst
