"""The pytorch-optimizer lane (conformance/adapters/pytorch_optimizer_adapter.py: real
``pytorch_optimizer.AdaFactor`` 4.1.0 on torch) through the gate's CLI on the
pytorch_optimizer dialect's vectors (vectors/pytorch_optimizer/), with the committed
conformance/expectations/pytorch-optimizer.txt:

* every float64 and float32 lane, teacher-forced and free-running, CONFORMS, each lane graded;
* with one injected bug (tests/frameworks/pytorch_optimizer_injected.py: ``decay_rate`` scaled
  by 1.001; the beta2 cap of adafactor.py:363 ignored) the same lanes are DOES NOT CONFORM.

The adapter is named by its import spec, which works with or without its registry entry.
The gate runs are child processes started early (tests/background.py)."""

from __future__ import annotations

import sys

import pytest

from tests import background
from tests.helpers import (GATE_WITH_REPORT, REPO, assert_every_lane_conforms, gate_report as _report,
                           installed_or_skip, lane_outcomes as _outcomes)

pytestmark = [pytest.mark.framework, pytest.mark.subprocess]

REQUIRES = ("pytorch_optimizer", "torch")
ADAPTER = "conformance.adapters.pytorch_optimizer_adapter:PytorchOptimizerAdapter"
LANES = {(d, m) for d in ("float64", "float32") for m in ("teacher", "trajectory")}

def _gate(name: str, fixture: str, *args: str) -> background.Job:
    return background.Job(name, [sys.executable, "-c", GATE_WITH_REPORT, *args, "--dtype", "float64,float32",
                                 "--mode", "teacher,trajectory"],
                          cwd=REPO, timeout=900, env=background.environment(PYTHONPATH=str(REPO)),
                          fixtures=(fixture,), requires=REQUIRES)


LANE = _gate("pytorch-optimizer-lane", "lane_run", "--adapter", ADAPTER)
INJECTED_DECAY = _gate("pytorch-optimizer-injected-decay", "injected_decay_run",
                       "--adapter", "tests.frameworks.pytorch_optimizer_injected:DecayRateScaled",
                       "--vectors", "pytorch_optimizer/shapes/")
INJECTED_CAP = _gate("pytorch-optimizer-injected-cap", "injected_cap_run",
                     "--adapter", "tests.frameworks.pytorch_optimizer_injected:Beta2CapIgnored",
                     "--vectors", "pytorch_optimizer/arguments/beta2_cap/")


def _result(job: background.Job):
    installed_or_skip(REQUIRES, "pip install --no-deps pytorch_optimizer==4.1.0")
    return job.result()


@pytest.fixture
def lane_run():
    return _result(LANE)


@pytest.fixture
def injected_decay_run():
    return _result(INJECTED_DECAY)


@pytest.fixture
def injected_cap_run():
    return _result(INJECTED_CAP)


@pytest.mark.slow
def test_every_float64_and_float32_lane_conforms(lane_run):
    report = assert_every_lane_conforms(lane_run, LANES, at_least=60)
    for lane in report["lanes"]:
        assert lane["environment"]["pytorch_optimizer"] == "4.1.0"
    for dtype, mode in LANES:
        outcomes = _outcomes(report, dtype, mode)
        assert all(vid.startswith("pytorch_optimizer/") for vid in outcomes), "only its own dialect's vectors"
        # AdaFactor's own errors, class and message (adafactor.py:60-64)
        assert outcomes["pytorch_optimizer/invalid/negative_lr"]["status"] == "pass"
        # the defaults, not passed: relative step, bfloat16 momentum, the beta2 cap
        assert outcomes["pytorch_optimizer/arguments/defaults/given_only"]["status"] == "pass"


@pytest.mark.slow
def test_decay_rate_scaled_does_not_conform_in_any_lane(injected_decay_run):
    proc = injected_decay_run
    assert proc.returncode == 1 and "DOES NOT CONFORM" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = _report(proc)
    for dtype, mode in LANES:
        graded = [o for o in _outcomes(report, dtype, mode).values() if o["status"] != "skip"]
        failed = [o for o in graded if o["status"] == "fail"]
        assert graded and len(failed) >= 0.9 * len(graded), (dtype, mode, {o["id"]: o["status"] for o in graded})


@pytest.mark.slow
def test_beta2_cap_ignored_does_not_conform(injected_cap_run):
    proc = injected_cap_run
    assert proc.returncode == 1 and "DOES NOT CONFORM" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = _report(proc)
    for dtype, mode in LANES:
        outcomes = _outcomes(report, dtype, mode)
        for vid in ("pytorch_optimizer/arguments/beta2_cap/0.5", "pytorch_optimizer/arguments/beta2_cap/zero"):
            assert outcomes[vid]["status"] == "fail", (dtype, mode, vid, outcomes[vid]["status"])
