"""Differential fuzzing (reference against adapters, CI profile) and the promotion of a
failing example to a regression vector."""

import json
import os
import subprocess
import sys
from pathlib import Path

import importlib.util

import numpy as np

import pytest

from conformance import replay, runner
from conformance.adapters import broken
from conformance.fuzz.differential import fuzz
from conformance.tolerance import Policy
from tools import promote
from tools.generate_vectors import generate_vector
from tools.vector_cases import regression_case

REPO = Path(__file__).resolve().parent.parent


def test_reference_float32_lane_survives_ci_profile():
    """The honest float32 lane never exceeds the budget on drawn inputs."""
    result = fuzz("reference", "float32", "ci", write_failures=False)
    assert result.failure is None, result.failure
    assert result.examples >= 50
    assert result.worst_ratio <= 1


def test_ci_profile_is_deterministic():
    """Derandomized: two runs draw the same examples and reach the same verdicts."""
    a = fuzz("reference", "bfloat16", "ci", max_examples=20, write_failures=False)
    b = fuzz("reference", "bfloat16", "ci", max_examples=20, write_failures=False)
    assert (a.examples, a.discarded, a.statuses, a.worst_ratio) == (b.examples, b.discarded, b.statuses, b.worst_ratio)


def test_ci_profile_draws_do_not_depend_on_what_the_adapter_measures():
    """The CI profile must draw the same examples on every machine, although a correct
    port's last bits differ between machines. A one-ulp perturbation of the reference
    changes every measured error but not the drawn sequence (with hypothesis.target in the
    CI profile it did: target observations steer generation)."""
    a = fuzz("reference", "float32", "ci", max_examples=100, write_failures=False)
    b = fuzz("conformance.adapters.broken:OneUlpNoise", "float32", "ci", max_examples=100, write_failures=False)
    assert a.failure is None and b.failure is None, (a.failure, b.failure)
    assert a.measured != b.measured  # the adapters really measure differently
    assert (a.draws, a.discarded, a.examples) == (b.draws, b.discarded, b.examples)


def test_ci_profile_draws_do_not_depend_on_loaded_modules(tmp_path):
    """Hypothesis mixes constants from the source of loaded local modules into its draws;
    the CI profile switches that off, so this process (pytest, every test module loaded)
    and a bare CLI process draw the same examples."""
    here = fuzz("reference", "float32", "ci", max_examples=40, write_failures=False)
    stats = tmp_path / "s.json"
    subprocess.run([sys.executable, "-m", "conformance.fuzz", "--adapter", "reference", "--dtype", "float32",
                    "--max-examples", "40", "--json", str(stats)], cwd=tmp_path, check=True,
                   capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    there = json.loads(stats.read_text())
    assert (here.draws, here.examples, here.discarded) == (there["draws"], there["examples"], there["discarded"])


def _vector(config, initial, grads, steps=1):
    from tools.vector_cases import Case

    case = Case(id="regression/probe", description="probe", config=config,
                variables=(("dense/kernel", np.shape(initial[0])),), steps=steps,
                inputs=(initial, grads))
    return generate_vector(case)


def test_rms_of_x_underflowing_in_the_lane_is_not_graded():
    """x = 2**-126 (float32's smallest normal) with epsilon_2 = 0: RMS(x) sets the step size
    but x*x underflows in float32, so every float32 implementation of Keras's formula takes
    no step (found by the differential fuzzer). float64 still grades it."""
    vector = _vector({"epsilon_2": 0.0}, [np.array(2.0 ** -126)], [[np.array(1.0)]])
    reason = runner.representability(vector, "float32")
    assert reason and "RMS(x) of variable 0" in reason and "float32" in reason, reason
    assert runner.representability(vector, "float64") is None
    # With the default epsilon_2 = 1e-3 the step size does not depend on RMS(x): graded.
    assert runner.representability(_vector({}, [np.array(2.0 ** -126)], [[np.array(1.0)]]), "float32") is None


def test_second_moment_beyond_the_lane_range_is_not_graded():
    """Row statistics spanning more than float32's range: R / mean(R) underflows to 0 and
    U = G / sqrt(0) in any float32 port (found by the differential fuzzer)."""
    g = np.array([[3e14, 1.0], [3e-17, 0.0]])
    vector = _vector({}, [np.ones((2, 2))], [[g]])
    reason = runner.representability(vector, "float32")
    assert reason and "beyond float32" in reason, reason
    assert runner.representability(vector, "float64") is None
    assert runner.representability(_vector({}, [np.ones((2, 2))], [[np.array([[3.0, 1.0], [0.5, 0.0]])]]),
                                   "float32") is None


def test_second_moment_collapse_with_tiny_beta_2_decay_is_not_graded_in_float32():
    """beta_2_decay = -1e-5: beta_2 = 1 - t**d ~ 7e-6 cancels, its absolute rounding error
    (~eps) times the old second moment swamps the new one when v shrinks 1e5-fold (found
    by the differential fuzzer: 1e3 eps on the float32 update). float64 still grades it."""
    grads = [[np.array(1e3)], [np.array(1.0)]]
    vector = _vector({"beta_2_decay": -1e-5}, [np.array(1.0)], grads, steps=2)
    reason = runner.representability(vector, "float32")
    assert reason and "shrinks" in reason and "v[0]" in reason, reason
    assert runner.representability(vector, "float64") is None
    # The default beta_2_decay keeps beta_2 >= 0.43: the same inputs are graded.
    assert runner.representability(_vector({}, [np.array(1.0)], grads, steps=2), "float32") is None


def test_fuzzed_magnitudes_fit_the_lane():
    """Values are drawn within what the lane holds, so few float32 draws are discarded."""
    from conformance.fuzz.strategies import MAGNITUDES, lane_magnitudes

    assert lane_magnitudes("float64") == MAGNITUDES
    for lane in ("float32", "bfloat16", "float16"):
        from conformance.adapters.base import finfo

        info = finfo(lane)
        for kind, (lo, hi) in lane_magnitudes(lane).items():
            if kind != "subnormal":
                assert lo <= hi and (hi * hi * 4000 < float(info.max)) and (lo * lo > float(info.tiny)), (lane, kind)
    result = fuzz("reference", "float32", "ci", max_examples=40, write_failures=False)
    assert result.discarded < result.examples / 2, result


@pytest.mark.parametrize("port", [broken.ClipThresholdIgnored, broken.BetaFromPreviousStep],
                         ids=lambda p: p.__name__)
def test_ci_profile_finds_a_subtly_broken_port(port, tmp_path):
    """Each mistake shows only on some configurations (clip_threshold != 1 with clipping
    active; a second step): the CI profile must still find it within its budget."""
    result = fuzz(f"conformance.adapters.broken:{port.__name__}", "float64", "ci", out=tmp_path)
    assert result.failure is not None, f"{port.__name__} survived {result.examples} examples"
    assert Path(result.failure["file"]).exists()


def test_failing_example_is_promoted_to_a_regression_vector(tmp_path):
    result = fuzz("conformance.adapters.broken:ClipThresholdIgnored", "float64", "ci", out=tmp_path / "out")
    target = promote.promote(result.failure["file"], name="clip-threshold-demo", directory=tmp_path)
    case = regression_case(target)
    assert case.id == "regression/clip-threshold-demo" and case.flags == ("REGRESSION",)
    assert "python -m conformance.fuzz --adapter conformance.adapters.broken:ClipThresholdIgnored" in case.description
    vector = generate_vector(case)
    assert "REGRESSION" in vector["flags"] and vector["result"] == "valid"
    # The reference replays the promoted vector exactly; the broken port fails it; a
    # correct port (the reference in float32) passes it.
    assert replay.check_reference(vector) == []
    policy = Policy.load()
    assert runner.run_vector(broken.ClipThresholdIgnored(), vector, "x", "float64", "cpu", "teacher",
                             policy, []).status == "fail"
    from conformance.adapters.reference import ReferenceAdapter
    assert runner.run_vector(ReferenceAdapter(), vector, "x", "float32", "cpu", "teacher",
                             policy, []).status == "pass"
    with pytest.raises(promote.PromotionError, match="exists already"):
        promote.promote(result.failure["file"], name="clip-threshold-demo", directory=tmp_path)


def test_promotion_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(promote.PromotionError, match=r"bad\.json: not a version-1 fuzz case"):
        promote.promote(bad, directory=tmp_path)
    bad.write_text("{oops")
    with pytest.raises(promote.PromotionError, match="invalid JSON"):
        promote.promote(bad, directory=tmp_path)
    assert promote.main([str(tmp_path / "missing.json")]) == 2


KERAS_LANES = [("keras-tensorflow", "float64"), ("keras-tensorflow", "float32"),
               ("keras-torch", "float32"), ("keras-jax", "float32")]
NEEDS = {"keras-tensorflow": "tensorflow", "keras-torch": "torch", "keras-jax": "jax"}


@pytest.mark.parametrize("adapter,dtype", KERAS_LANES, ids=[f"{a}-{d}" for a, d in KERAS_LANES])
def test_keras_adapters_survive_ci_profile(adapter, dtype, tmp_path):
    """Real Keras against the reference on drawn inputs, one process per backend; known
    deviations (conformance/expectations) stay xfail. Prints the throughput."""
    for module in ("keras", NEEDS[adapter]):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: `make test` installs it")
    stats = tmp_path / "stats.json"
    proc = subprocess.run([sys.executable, "-m", "conformance.fuzz", "--adapter", adapter, "--dtype", dtype,
                           "--profile", "ci", "--json", str(stats)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3"))
    print(proc.stdout[-2000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(stats.read_text())
    assert data["examples"] >= 50
