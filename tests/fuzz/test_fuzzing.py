"""Differential fuzzing (reference against adapters, CI profile): the deep regimes it must
reach, what counts as checked, the per-adapter example databases, and the promotion of a
failing example to a regression vector."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance import applicability, replay, runner
from conformance.adapters import broken
from conformance.fuzz import differential, mutants, profiles
from conformance.fuzz.differential import fuzz
from conformance.fuzz.strategies import FREE, REGIMES
from conformance.generator import generate_vector
from conformance.tolerance import Policy
from tests.helpers import build_vector
from tools import promote
from tools.vector_cases import regression_case

REPO = Path(__file__).resolve().parents[2]


#: Each deep regime must be reached, with the branch binding, by this many checked examples
#: of every CI-profile lane (issue 12, item 8).
MIN_PER_REGIME = 3


def assert_every_regime(counts: dict, where: str) -> None:
    missing = {name: counts.get(name, 0) for name in REGIMES if counts.get(name, 0) < MIN_PER_REGIME}
    assert not missing, f"{where}: regimes reached fewer than {MIN_PER_REGIME} times: {missing} (all: {counts})"


def test_reference_float32_lane_survives_ci_profile():
    """The honest float32 lane never exceeds the budget on drawn inputs, every example is
    graded, and every deep regime is reached (binding) by at least three of them."""
    result = fuzz("reference", "float32", "ci", write_failures=False)
    print(result.summary())
    assert result.failure is None, result.failure
    assert result.examples >= 50 and result.checked == result.examples == result.passed, result.statuses
    assert result.worst_ratio <= 1
    assert_every_regime(result.regimes, "reference float32")
    # ... and by the examples built for it, not by chance: a builder that stops making its
    # regime bind fails here even when other examples still reach the regime now and then.
    assert_every_regime(result.on_target, "reference float32, examples built for the regime")
    # The counts are Hypothesis events too (`regime: NAME`), and the two tallies agree.
    assert {name: result.events.get(f"regime: {name}", 0) for name in REGIMES} == {
        name: result.regimes_run.get(name, 0) for name in REGIMES}
    assert sum(n for e, n in result.events.items() if e.startswith("status: ")) == result.examples
    # Depth: runs past step 8, a last axis past 64, few one-step examples, varied configurations.
    assert result.max_steps > 8 and result.max_last_axis > 64, result.summary()
    assert result.one_step <= result.examples // 6, result.summary()
    assert result.configurations >= result.examples * 3 // 4, result.summary()


def test_ci_profile_quotas():
    """60 CI examples: 18 drawn freely, 6 built for each deep regime (at least 3 checked are
    required; the margin absorbs discards and an example that misses its regime)."""
    quotas = profiles.quotas("ci")
    assert sum(quotas.values()) == profiles.EXAMPLES["ci"] == 60
    assert quotas[FREE] == 18 and all(quotas[name] == 6 for name in REGIMES)
    assert sum(profiles.quotas("dev", 101).values()) == 101


@pytest.mark.parametrize("regime", list(mutants.BY_REGIME), ids=list(mutants.BY_REGIME))
def test_each_regime_quota_catches_a_port_wrong_only_there(regime, tmp_path):
    """A port wrong only in one deep regime (conformance/fuzz/mutants.py) is caught by the six
    CI-profile examples built for that regime: the regime is reached and its branch binds.
    The CI profile before issue 12 missed five of the seven (it caught only the EMA and the
    weight-decay ones, and those only after 97 and 67 examples)."""
    result = fuzz(mutants.BY_REGIME[regime], "float64", "ci", regimes=[regime], write_failures=False,
                  shrink=False)
    assert result.failure is not None, f"{mutants.BY_REGIME[regime]} survived: {result.summary()}"
    assert result.quotas == {regime: profiles.quotas("ci")[regime]}


def test_nothing_checked_is_never_a_pass(capsys):
    """Every example skipped: exit 3 and NOTHING CHECKED, never exit 0."""
    code = differential.main(["--adapter", "conformance.fuzz.mutants:SkipsEverything", "--dtype", "float64",
                              "--max-examples", "10"])
    out = capsys.readouterr().out
    assert code == differential.EXIT_NOTHING_CHECKED == 3, out
    assert "NOTHING CHECKED" in out and "'skip': 10" in out, out


def test_every_draw_discarded_is_nothing_checked(monkeypatch):
    """Hypothesis gives up when every draw is discarded (Unsatisfiable): nothing checked,
    exit 3. (Four small cases stand in for the strategy: Hypothesis tries some 450 draws
    per quota before it gives up, and that is minutes with real cases.)"""
    from hypothesis import strategies as st

    from conformance.fuzz import strategies

    few = [strategies.make_case({}, (("w", (2,)),), ([np.ones(2)], [[np.full(2, float(k))]]))
           for k in range(1, 5)]
    monkeypatch.setattr(strategies, "fuzz_cases", lambda lane, depth, regime: st.sampled_from(few))
    monkeypatch.setattr(differential.applicability, "skip_reason", lambda vector, dtype: "cannot hold it")
    result = fuzz("reference", "float64", "ci", max_examples=10, regimes=[FREE], write_failures=False)
    assert result.examples == 0 and result.discarded > 0 and result.failure is None, result.summary()
    assert result.nothing_checked and result.exit_code == 3
    assert "NOTHING CHECKED" in result.summary() and "free:" in result.error, result.summary()


def test_expectations_come_from_the_adapters_expectation_file(monkeypatch):
    """An adapter that declares another adapter's expectation file (keras-jax-sharded runs
    keras-jax's) is fuzzed under that file's known deviations, as in the gate, not under a
    file named after itself."""
    from conformance import adapters, expectations
    from conformance.adapters.reference import ReferenceAdapter

    renamed = ReferenceAdapter()
    renamed.name, renamed.expectations = "renamed-reference", "keras-jax"
    asked = []
    real = expectations.for_adapter

    def for_adapter(stem, *args, **kwargs):
        asked.append(stem)
        return real(stem, *args, **kwargs)

    monkeypatch.setattr(adapters, "resolve", lambda spec: renamed)
    monkeypatch.setattr(expectations, "for_adapter", for_adapter)
    result = fuzz("renamed-reference", "float64", "ci", max_examples=4, regimes=[FREE], write_failures=False)
    assert asked == ["keras-jax"], asked
    assert result.adapter == "renamed-reference" and result.examples > 0


@pytest.mark.parametrize("statuses,checked", [(("xfail",), False), (("xpass",), False), (("xfail", "xpass"), False),
                                              (("skip", "xfail"), False), (("strange-new-status",), False),
                                              (("model",), True), (("acceptable", "xfail"), True)])
def test_only_pass_model_and_acceptable_are_passes(monkeypatch, statuses, checked):
    """xfail and xpass (and any status the runner may add) are counted and printed but are
    no pass; a run of nothing else checked nothing. ``model`` (passed under a named
    deviation model) and ``acceptable`` are passes."""
    real = differential.runner.run_vector
    calls = []

    def run_vector(*args, **kwargs):
        outcome = real(*args, **kwargs)
        outcome.status = statuses[len(calls) % len(statuses)]
        calls.append(outcome.status)
        return outcome

    monkeypatch.setattr(differential.runner, "run_vector", run_vector)
    # The long_run quota: every example is built to reach its regime, so regimes are reached.
    result = fuzz("reference", "float64", "ci", max_examples=60, regimes=["long_run"], write_failures=False)
    assert result.failure is None and result.examples == profiles.quotas("ci", 60)["long_run"] == 6
    assert result.nothing_checked is (not checked)
    assert result.exit_code == (0 if checked else 3)
    assert sum(result.not_passing.values()) == sum(1 for s in calls if s not in ("model", "acceptable"))
    if not checked:
        assert "NOTHING CHECKED" in result.summary()
        assert not result.regimes and result.regimes_run  # reached, but none of them checked


def test_ci_profile_can_draw_both_modes():
    """``--mode both`` (the default of dev and campaign) grades some examples teacher-forced
    and some free-running (trajectory)."""
    result = fuzz("reference", "float64", "ci", mode="both", max_examples=60, regimes=[FREE], write_failures=False)
    assert result.failure is None and result.checked == result.examples
    assert set(result.modes) == {"teacher", "trajectory"}, result.modes
    assert profiles.MODES == {"ci": "teacher", "dev": "both", "campaign": "both"}


def test_dev_and_campaign_reach_further_than_ci():
    ci, dev, campaign = (profiles.DEPTH[p] for p in ("ci", "dev", "campaign"))
    for deeper, shallower in ((dev, ci), (campaign, dev)):
        assert deeper.max_extent > shallower.max_extent and deeper.max_steps > shallower.max_steps
        assert deeper.long_steps[1] > shallower.long_steps[1] and deeper.long_axis[1] > shallower.long_axis[1]


def test_one_example_database_per_adapter_and_dtype(tmp_path):
    """dev and campaign keep each adapter's and dtype's examples apart, so a failure found
    on one replays on that one only; CI keeps none."""
    paths = {(a, d): profiles.database_path("dev", a, d, FREE, tmp_path)
             for a in ("reference", "keras-jax", "conformance.fuzz.mutants:ClipTheSum") for d in ("float32", "float64")}
    assert len(set(paths.values())) == len(paths)
    assert paths[("conformance.fuzz.mutants:ClipTheSum", "float64")] == (
        tmp_path / "dev" / "conformance.fuzz.mutants_ClipTheSum-float64" / FREE)
    assert profiles.database_path("ci", "reference", "float32") is None
    assert profiles.database_path("campaign", "reference", "float32", "long_run") == Path(
        ".hypothesis/campaign/reference-float32/long_run")
    # A failing dev run stores its example under its own adapter, dtype (and regime) only.
    result = fuzz("conformance.fuzz.mutants:OffForLongLastAxis", "float64", "dev", max_examples=30,
                  regimes=["long_axis"], write_failures=False, shrink=False, database_root=tmp_path)
    assert result.failure is not None, result.summary()
    stored = {p.relative_to(tmp_path).parts[:3] for p in tmp_path.rglob("*") if p.is_file()}
    assert stored == {("dev", "conformance.fuzz.mutants_OffForLongLastAxis-float64", "long_axis")}, stored


def test_ci_profile_is_deterministic():
    """Derandomized: two runs draw the same examples and reach the same verdicts."""
    a = fuzz("reference", "bfloat16", "ci", max_examples=20, write_failures=False)
    b = fuzz("reference", "bfloat16", "ci", max_examples=20, write_failures=False)
    assert (a.examples, a.discarded, a.statuses, a.worst_ratio, a.draws, a.regimes) == (
        b.examples, b.discarded, b.statuses, b.worst_ratio, b.draws, b.regimes)
    assert a.checked > 0


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
    assert (here.draws, here.examples, here.discarded, here.regimes) == (
        there["draws"], there["examples"], there["discarded"], there["regimes"])


def test_rms_of_x_underflowing_in_the_lane_is_not_graded():
    """x = 2**-126 (float32's smallest normal) with epsilon_2 = 0: RMS(x) sets the step size
    but x*x underflows in float32, so every float32 implementation of Keras's formula takes
    no step (found by the differential fuzzer). float64 still grades it."""
    vector = build_vector({"epsilon_2": 0.0}, [np.array(2.0 ** -126)], [[np.array(1.0)]])
    reason = applicability.skip_reason(vector, "float32")
    assert reason and "RMS(x) of variable 0" in reason and "float32" in reason, reason
    assert applicability.skip_reason(vector, "float64") is None
    # With the default epsilon_2 = 1e-3 the step size does not depend on RMS(x): graded.
    assert applicability.skip_reason(build_vector({}, [np.array(2.0 ** -126)], [[np.array(1.0)]]), "float32") is None


def test_second_moment_beyond_the_lane_range_is_not_graded():
    """Row statistics spanning more than float32's range: R / mean(R) underflows to 0 and
    U = G / sqrt(0) in any float32 port (found by the differential fuzzer)."""
    g = np.array([[3e14, 1.0], [3e-17, 0.0]])
    vector = build_vector({}, [np.ones((2, 2))], [[g]])
    reason = applicability.skip_reason(vector, "float32")
    assert reason and "beyond float32" in reason, reason
    assert applicability.skip_reason(vector, "float64") is None
    assert applicability.skip_reason(build_vector({}, [np.ones((2, 2))], [[np.array([[3.0, 1.0], [0.5, 0.0]])]]),
                                   "float32") is None


def test_second_moment_collapse_with_tiny_beta_2_decay_is_not_graded_in_float32():
    """beta_2_decay = -1e-5: beta_2 = 1 - t**d ~ 7e-6 cancels, its absolute rounding error
    (~eps) times the old second moment swamps the new one when v shrinks 1e5-fold (found
    by the differential fuzzer: 1e3 eps on the float32 update). float64 still grades it."""
    grads = [[np.array(1e3)], [np.array(1.0)]]
    vector = build_vector({"beta_2_decay": -1e-5}, [np.array(1.0)], grads, steps=2)
    reason = applicability.skip_reason(vector, "float32")
    assert reason and "shrinks" in reason and "v[0]" in reason, reason
    assert applicability.skip_reason(vector, "float64") is None
    # The default beta_2_decay keeps beta_2 >= 0.43: the same inputs are graded.
    assert applicability.skip_reason(build_vector({}, [np.array(1.0)], grads, steps=2), "float32") is None


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
    active; a second step): the CI profile must still find it within its budget. (Not
    shrunk here: shrinking is 95 % of the time; the promotion test below shrinks.)"""
    result = fuzz(f"conformance.adapters.broken:{port.__name__}", "float64", "ci", out=tmp_path, shrink=False)
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
def test_keras_adapters_survive_fuzzing(adapter, dtype, tmp_path):
    """Real Keras against the reference on drawn inputs, one process per backend, in the
    profile ``ADAFACTOR_HYPOTHESIS_PROFILE`` selects (``ci`` by default; ``dev`` and
    ``campaign`` grade teacher-forced and trajectory examples, with their own example
    database per adapter and dtype under .hypothesis/). Known deviations stay xfail, and are
    counted as no pass. Prints the throughput, the statuses and the regime counts; every deep
    regime is drawn (and reaches the adapter) at least three times, and something is checked."""
    for module in ("keras", NEEDS[adapter]):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: `make test` installs it")
    profile = os.environ.get("ADAFACTOR_HYPOTHESIS_PROFILE", "ci") or "ci"
    stats = tmp_path / "stats.json"
    proc = subprocess.run([sys.executable, "-m", "conformance.fuzz", "--adapter", adapter, "--dtype", dtype,
                           "--profile", profile, "--json", str(stats)],
                          cwd=REPO if profile != "ci" else tmp_path, capture_output=True, text=True,
                          timeout=900 if profile == "ci" else None,
                          env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3"))
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(stats.read_text())
    assert data["examples"] >= 50 and data["checked"] > 0 and not data["nothing_checked"]
    assert_every_regime(data["regimes_run"], f"{adapter} {dtype}")
    assert_every_regime(data["built"], f"{adapter} {dtype}, examples built for the regime")
    if profile != "ci":
        assert set(data["modes"]) == {"teacher", "trajectory"}, data["modes"]
