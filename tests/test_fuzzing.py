"""Differential fuzzing (reference against adapters, CI profile) and the promotion of a
failing example to a regression vector."""

import json
import os
import subprocess
import sys
from pathlib import Path

import importlib.util

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
                           "--profile", "ci", "--max-examples", "30", "--json", str(stats)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3"))
    print(proc.stdout[-2000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(stats.read_text())
    assert data["examples"] >= 20
