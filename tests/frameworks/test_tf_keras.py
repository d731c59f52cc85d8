"""The tf-keras lane (conformance/adapters/tf_keras_adapter.py: real
``tf_keras.optimizers.Adafactor``, Keras 2 on TensorFlow) through the gate's CLI, with the
committed conformance/expectations/tf-keras.txt and its deviation models
(conformance/deviations.py, conformance/TF_KERAS.md):

* every float64 and float32 lane, teacher-forced and free-running, CONFORMS, each lane
  graded, where each deviation is real (graded MODEL: the spec alone fails) and bounded
  (the spec plus the named model holds, under the model's budget);
* the same lanes with one injected bug (tests/frameworks/tf_keras_injected.py:
  ``beta_2_decay`` scaled by 1.001, ``epsilon_1`` dropped, ``ema_momentum`` off by 1e-4
  relative) are DOES NOT CONFORM;
* tf-keras's float32 schedules stay within the schedule model's SCHEDULE_ULPS;
* the models themselves (no TensorFlow): each changes exactly what it names.

The gate runs are child processes started early on the second core (tests/background.py);
this process imports neither TensorFlow nor tf-keras."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conformance import deviations, expectations
from conformance import vectorfile as vf
from conformance.adapters import registry
from tests import background, helpers
from tests.helpers import (GATE_WITH_REPORT, REPO, assert_every_lane_conforms, gate_report as _report,
                           installed_or_skip, lane_outcomes as _outcomes)

pytestmark = [pytest.mark.framework, pytest.mark.subprocess]

REQUIRES = ("tf_keras", "tensorflow")
LANES = {(d, m) for d in ("float64", "float32") for m in ("teacher", "trajectory")}


def _gate(name: str, fixture: str, *args: str) -> background.Job:
    return background.Job(name, [sys.executable, "-c", GATE_WITH_REPORT, *args], cwd=REPO, timeout=900,
                          env=background.environment(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO)),
                          fixtures=(fixture,), requires=REQUIRES)


#: The whole lane: every Keras vector, float64 and float32, teacher and trajectory.
LANE = _gate("tf-keras-lane", "lane_run", "--adapter", "tf-keras")
#: Vectors with several steps over every shape kind, plus EMA (its model must not absorb the bug).
INJECTED_BETA = _gate("tf-keras-injected-beta", "injected_beta_run",
                      "--adapter", "tests.frameworks.tf_keras_injected:BetaDecayScaled",
                      "--vectors", "shapes/", "--vectors", "multi_variable/", "--vectors", "arguments/use_ema")
INJECTED_EPSILON = _gate("tf-keras-injected-epsilon", "injected_epsilon_run",
                         "--adapter", "tests.frameworks.tf_keras_injected:Epsilon1Dropped",
                         "--flags", "EPSILON_1_SIGNIFICANT")
INJECTED_EMA = _gate("tf-keras-injected-ema", "injected_ema_run",
                     "--adapter", "tests.frameworks.tf_keras_injected:EmaMomentumScaled", "--flags", "EMA")
SCHEDULE_ULPS = background.Job(
    "tf-keras-schedule-ulps", [sys.executable, str(REPO / "tests" / "gate" / "schedule_ulps_worker.py"), "tf_keras"],
    env=background.environment(TF_CPP_MIN_LOG_LEVEL="3"), timeout=600, fixtures=("schedule_ulps_run",),
    requires=REQUIRES)


def _result(job: background.Job):
    installed_or_skip(REQUIRES, "pip install -e '.[tf-keras]'")
    return job.result()


@pytest.fixture
def lane_run():
    return _result(LANE)


@pytest.fixture
def injected_beta_run():
    return _result(INJECTED_BETA)


@pytest.fixture
def injected_epsilon_run():
    return _result(INJECTED_EPSILON)


@pytest.fixture
def injected_ema_run():
    return _result(INJECTED_EMA)


@pytest.fixture
def schedule_ulps_run():
    return _result(SCHEDULE_ULPS)


# ----------------------------------------------------------------------------- the lane
@pytest.mark.slow
def test_every_float64_and_float32_lane_conforms(lane_run):
    report = assert_every_lane_conforms(lane_run, LANES, at_least=100)
    for lane in report["lanes"]:
        assert lane["environment"]["tf_keras"] and lane["environment"]["floatx"].startswith("float32")


@pytest.mark.slow
def test_each_deviation_is_real_and_bounded(lane_run):
    """MODEL only where the spec alone fails, and every MODEL names the model that explains
    it; plain vectors pass the spec itself."""
    report = _report(lane_run)
    for dtype, mode in LANES:
        outcomes = _outcomes(report, dtype, mode)
        for o in outcomes.values():
            if o["status"] == "model":
                # the spec alone failed: beyond its budget, or (a callable whose value is
                # exact in float32) only in the call count
                assert o["model_ratio"] <= 1, o
                assert o["spec_ratio"] > 1 or "CALLABLE_LEARNING_RATE" in o["flags"], o
        # Where the relative step binds, the learning rate's float32 rounding cannot show:
        # the spec's budget holds with no model.
        assert outcomes["shapes/lr_0.5/3d"]["status"] == "pass"
    f64 = _outcomes(report, "float64", "teacher")
    # a float learning rate that binds: the float32 variable (optimizer.py:399-404)
    assert f64["shapes/defaults/square"]["model"] == "tf-keras-float32-scalars"
    # EMA from the first step and a callable called once: their own models, in both dtypes
    for dtype in ("float64", "float32"):
        outcomes = _outcomes(report, dtype, "trajectory")
        assert "tf-keras-ema" in outcomes["arguments/ema_overwrite_frequency/3"]["model"]
        assert "tf-keras-callable-once" in outcomes["schedules/callable_counter"]["model"]
        assert "tf-keras-ema" in outcomes["combinations/none_gradients"]["model"]
    assert "keras-tensorflow-float32-schedules" in f64["schedules/exponential"]["model"]


@pytest.mark.slow
def test_missing_arguments_are_skipped_with_the_reason(lane_run):
    outcomes = _outcomes(_report(lane_run), "float64", "teacher")
    for vid, argument in (("arguments/loss_scale_factor/128", "loss_scale_factor"),
                          ("arguments/gradient_accumulation_steps/2", "gradient_accumulation_steps"),
                          ("invalid/gradient_accumulation_steps_1", "gradient_accumulation_steps")):
        assert outcomes[vid]["status"] == "skip"
        assert argument in outcomes[vid]["reason"] and "adafactor.py:68-86" in outcomes[vid]["reason"]
    # at Keras 3's default (0: off) the argument is left out and the vector runs
    assert outcomes["arguments/gradient_accumulation_steps/0"]["status"] in ("pass", "model")
    assert outcomes["invalid/unknown_argument"]["status"] == "xfail"
    # configurations tf-keras accepts, or refuses in other words, are graded xfails, not skips
    for vid in ("invalid/clipnorm_and_clipvalue", "invalid/clipvalue_and_global_clipnorm",
                "invalid/learning_rate_int", "invalid/clipnorm_and_global_clipnorm"):
        assert outcomes[vid]["status"] == "xfail", (vid, outcomes[vid])


# ----------------------------------------------------------------------------- injected bugs
@pytest.mark.slow
def test_beta_2_decay_scaled_does_not_conform_in_any_lane(injected_beta_run):
    proc = injected_beta_run
    assert proc.returncode == 1 and "DOES NOT CONFORM" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = _report(proc)
    assert {(lane["dtype"], lane["mode"]) for lane in report["lanes"]} == LANES
    for dtype, mode in LANES:
        graded = [o for o in _outcomes(report, dtype, mode).values() if o["status"] != "skip"]
        multi_step = [o for o in graded if len(o["curve"].get("variables", [])) > 1]
        failed = [o for o in multi_step if o["status"] == "fail"]
        assert multi_step and len(failed) >= 0.9 * len(multi_step), (dtype, mode, {o["id"]: o["status"] for o in graded})
        # the EMA vectors fail too: the EMA model does not absorb a bug elsewhere
        assert all(o["status"] == "fail" for o in graded if o["id"].startswith("arguments/use_ema/momentum_0.")), dtype


@pytest.mark.slow
def test_epsilon_1_dropped_does_not_conform_in_any_lane(injected_epsilon_run):
    proc = injected_epsilon_run
    assert proc.returncode == 1 and "DOES NOT CONFORM" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = _report(proc)
    for dtype, mode in LANES:
        outcomes = _outcomes(report, dtype, mode)
        assert outcomes["special_values/zero_gradients"]["status"] == "fail", (dtype, mode)
        assert sum(o["status"] == "fail" for o in outcomes.values()) >= 5, (dtype, mode)


@pytest.mark.slow
def test_an_ema_bug_is_not_absorbed_by_the_ema_model(injected_ema_run):
    """ema_momentum off by 1e-4 relative: every float64 EMA vector with m > 0 fails, under
    the tf-keras-ema model too; in float32 such an error is below rounding on the vectors
    whose variables barely move (defaults/use_ema_only), so only most fail there."""
    proc = injected_ema_run
    assert proc.returncode == 1 and "DOES NOT CONFORM" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = _report(proc)
    for dtype, mode in LANES:
        outcomes = _outcomes(report, dtype, mode)
        # momentum 0 scaled is still 0: no bug there
        live = [o for o in outcomes.values() if o["status"] != "skip" and o["id"] != "arguments/use_ema/momentum_0"]
        failed = [o for o in live if o["status"] == "fail"]
        if dtype == "float64":
            assert live and failed == live, (mode, {o["id"]: o["status"] for o in live})
        else:
            assert len(failed) >= 0.75 * len(live), (mode, {o["id"]: o["status"] for o in live})


# ----------------------------------------------------------------------------- schedules
@pytest.mark.slow
def test_tf_keras_schedules_stay_within_the_models_ulps(schedule_ulps_run):
    proc = schedule_ulps_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    worst = json.loads(proc.stdout.strip().splitlines()[-1])
    assert worst and max(worst.values()) > 0, worst  # tf-keras really computes in float32
    assert max(worst.values()) <= deviations.SCHEDULE_ULPS, worst


# ----------------------------------------------------------------------------- no TensorFlow
def test_registry_entry_skips_with_the_reason_when_not_installed(monkeypatch):
    entry = registry.ADAPTERS["tf-keras"]
    assert entry.requires == ("tf_keras", "tensorflow") and entry.dialects == ("keras",)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf_keras" else real(name, *a))
    assert entry.missing().startswith("not installed: tf_keras (pip install --no-deps tf_keras==2.21.0")


def _keras_vectors(prefixes=("",), flags=()):
    corpus = vf.load_corpus(helpers.VECTORS)
    return [(rel, v) for rel, v in vf.iter_vectors(corpus) if v.dialect == "keras" and v.result == "valid"
            and any(v.id.startswith(p) for p in prefixes) and all(f in v.flags for f in flags)]


def _run(adapter, vectors, entries, mode="teacher", dtype="float64"):
    return {v.id: helpers.run_vector(adapter, rel, v, dtype, mode, entries=entries) for rel, v in vectors}


def test_the_ema_and_callable_models_change_only_what_they_name():
    """The reference under each tf-keras behaviour model fails the spec on the vectors that
    carry its flag (the deviation is not vacuous), is graded MODEL under the committed
    entries, and passes the spec unchanged where the flag is absent."""
    entries = expectations.for_adapter("tf-keras")
    for name, flag in (("tf-keras-ema", "EMA"), ("tf-keras-callable-once", "CALLABLE_LEARNING_RATE")):
        adapter = deviations.adapter(name)
        flagged = [(r, v) for r, v in _keras_vectors(("arguments/use_ema/momentum_0.", "arguments/ema_overwrite",
                                                      "combinations/none_gradients", "schedules/callable_counter"),
                                                     (flag,))]
        assert flagged
        for mode in ("teacher", "trajectory"):
            bare = _run(adapter, flagged, [], mode)
            assert all(o.status == "fail" for o in bare.values()), {k: o.status for k, o in bare.items()}
        plain = _keras_vectors(("shapes/defaults/square", "arguments/clipnorm/0.5"))
        assert {o.status for o in _run(adapter, plain, []).values()} == {"pass"}
    # the float32 learning rate: a float lr that does not bind moves the float64 step
    adapter = deviations.adapter("tf-keras-float32-scalars")
    square = _keras_vectors(("shapes/defaults/square",))
    assert {o.status for o in _run(adapter, square, []).values()} == {"fail"}
    assert {o.status for o in _run(adapter, square, entries).values()} == {"model"}
    assert {o.status for o in _run(adapter, _keras_vectors(("shapes/lr_0.5/square",)), []).values()} == {"pass"}
