"""The conformance gate itself: the reference conforms at 0 ulp through the same runner as
every adapter; deliberately broken ports are failed; tolerances are fresh; CLI exit codes,
reports, expectation files and the results-file protocol behave."""

import json
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conformance import applicability, cli, expectations, runner
from conformance import vectorfile as vf
from conformance.adapters import AdapterError, resolve
from conformance.adapters import broken
from conformance.adapters.reference import ReferenceAdapter
from conformance.tolerance import Policy
from tests import background, helpers

VECTORS = helpers.VECTORS
#: ``python -m conformance.tolerance --check`` (minutes of reference lanes) in a child process
#: that runs on the second core while the other tests run.
TOLERANCE_CHECK = background.Job("tolerance-check", [sys.executable, "-m", "conformance.tolerance", "--check"],
                                 timeout=1800, fixtures=("tolerance_check",))


@pytest.fixture(scope="module")
def all_vectors():
    return helpers.select()


@pytest.fixture(scope="module")
def policy():
    return Policy.load()


@pytest.mark.parametrize("mode", ["teacher", "trajectory"])
def test_reference_adapter_is_exact_in_float64(all_vectors, policy, mode):
    report = runner.run_lane(ReferenceAdapter(), all_vectors, VECTORS, "float64", "cpu", mode, policy, [])
    counts = report.counts()
    assert counts["fail"] == counts["skip"] == 0, counts
    assert all(o.worst_ratio == 0.0 for o in report.outcomes), "the reference must be 0 ulp from its vectors"
    invalid = [o for o in report.outcomes if o.result == "invalid"]
    assert invalid and all(o.status == "pass" for o in invalid)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_honest_low_precision_lanes_conform(all_vectors, policy, dtype):
    """The budgets are derived from these very lanes, times the safety factor: they pass
    with a quarter of the budget at most."""
    for mode in ("teacher", "trajectory"):
        report = runner.run_lane(ReferenceAdapter(), all_vectors, VECTORS, dtype, "cpu", mode, policy, [])
        assert report.conforms
        # acceptable vectors (non-finite gradients) may deviate; the budgets come from valid ones
        assert max(o.worst_ratio for o in report.outcomes if o.result == "valid") <= 0.25 + 1e-9


# Every broken port in float64 and float32, except MeansInFloat32 in float32: computing in
# float32 is no bug in a float32 lane (test_means_in_float32_passes_float32_lane).
PORT_LANES = [(p, d) for p in broken.ALL for d in ("float64", "float32")
              if (p, d) != (broken.MeansInFloat32, "float32")]


@pytest.mark.parametrize("port,dtype", PORT_LANES, ids=[f"{p.__name__}-{d}" for p, d in PORT_LANES])
def test_gate_fails_broken_ports(all_vectors, policy, port, dtype):
    report = runner.run_lane(port(), all_vectors, VECTORS, dtype, "cpu", "teacher", policy, [])
    assert not report.conforms, f"{port.__name__} passed the {dtype} gate"


def test_means_in_float32_passes_float32_lane(all_vectors, policy):
    report = runner.run_lane(broken.MeansInFloat32(), all_vectors, VECTORS, "float32", "cpu", "teacher", policy, [])
    assert report.conforms


@pytest.fixture(scope="module")
def tolerance_check():
    return TOLERANCE_CHECK.result()


def test_tolerance_policy_is_fresh(tolerance_check):
    """Re-deriving the budgets (every honest lane, every deviation model) gives the
    committed conformance/tolerances.json: run in a child on the second core
    (TOLERANCE_CHECK), started when the session starts."""
    assert tolerance_check.returncode == 0, (
        "run `python -m conformance.tolerance`:\n" + (tolerance_check.stdout + tolerance_check.stderr)[-3000:])


def test_budget_grows_with_step_in_trajectory_mode(policy):
    assert policy.budget("float32", "trajectory", "variables", 40) > policy.budget("float32", "teacher", "variables", 40)
    assert policy.budget("float32", "teacher", "variables", 1) == policy.budget("float32", "teacher", "variables", 40)


# ----------------------------------------------------------------------------- CLI
def test_cli_reference_conforms_with_reports(tmp_path, capsys):
    code = cli.main(["run", "--adapter", "reference", "--dtype", "float64", "--mode", "teacher",
                     "--vectors", "arguments/clip", "--json", str(tmp_path / "r.json"),
                     "--junit", str(tmp_path / "r.xml"), "--plot", str(tmp_path / "r.png")])
    out = capsys.readouterr().out
    assert code == 0 and "CONFORMS" in out and "numpy" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["conforms"] and report["lanes"][0]["counts"]["pass"] >= 3
    assert report["lanes"][0]["outcomes"][0]["curve"]["variables"]
    suite = ET.parse(tmp_path / "r.xml").getroot()[0]
    assert int(suite.get("tests")) == report["lanes"][0]["counts"]["pass"]
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_cli_broken_port_exits_1_with_reproduction(capsys):
    code = cli.main(["run", "--adapter", "conformance.adapters.broken:ClipThresholdIgnored",
                     "--dtype", "float64", "--mode", "teacher", "--vectors", "arguments/clip_threshold"])
    out = capsys.readouterr().out
    assert code == 1 and "DOES NOT CONFORM" in out
    assert "FAIL broken:ClipThresholdIgnored float64 teacher: arguments/clip_threshold/" in out
    assert "reproduce: python -m conformance run --adapter" in out
    assert "expected " in out and "ulp in float64" in out


@pytest.mark.parametrize("argv,message", [
    (["run", "--adapter", "no-such-adapter"], "unknown adapter"),
    (["run", "--adapter", "nosuchmodule.x:Y"], "cannot import"),
    (["run", "--dtype", "float128"], "unknown dtype"),
    (["run", "--vectors", "no/such/vector"], "no vector matches"),
    (["run", "--device", "gpu"], "not available"),
    (["run", "--vectors-dir", "/nonexistent"], "cannot read"),
])
def test_cli_usage_errors_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_dtype_check_catches_silent_downcast(all_vectors, policy):
    class Downcasting(ReferenceAdapter):
        def create(self, vector, dtype, device):
            session = super().create(vector, dtype, device)
            honest_read = session.read
            session.read = lambda: honest_read().cast("float32")  # silently holds float32
            return session

    with pytest.raises(AdapterError, match="did not run in the requested dtype"):
        runner.run_lane(Downcasting(), all_vectors[:3], VECTORS, "float64", "cpu", "teacher", policy, [])


# ----------------------------------------------------------------------------- expectations
class _RaisesOnClipThreshold(ReferenceAdapter):
    """The reference, except that it raises FloatingPointError in step on the clip_threshold
    vectors: a non-numeric failure, the kind an ``xfail because=raises:...`` entry names."""

    def __init__(self):
        super().__init__()
        self.name = "raises-on-clip-threshold"

    def create(self, vector, dtype, device):
        session = super().create(vector, dtype, device)
        if vector["id"].startswith("arguments/clip_threshold/") or vector["id"] == "sharding/clipping":
            def step(grads):
                raise FloatingPointError("simulated trap")
            session.step = step
        return session


def test_expectation_file_xfail_xpass_and_unused(tmp_path, all_vectors, policy):
    path = tmp_path / "x.txt"
    path.write_text(
        "# known deviations\n"
        "xfail id=arguments/clip_threshold/ because=raises:FloatingPointError  # traps (example link)\n"
        "xfail id=sharding/clipping because=raises:FloatingPointError  # clip_threshold=0.5 there too\n"
        "xfail id=shapes/defaults/scalar dtype=float64 because=raises:FloatingPointError  # passes: XPASS\n"
        "skip flag=LONG_RUN  # too slow here\n"
        "xfail id=does/not/exist because=raises:FloatingPointError  # stale entry\n")
    entries = expectations.parse(path)
    report = runner.run_lane(_RaisesOnClipThreshold(), all_vectors, VECTORS, "float64", "cpu",
                             "teacher", policy, entries)
    counts = report.counts()
    assert counts["fail"] == 0 and counts["xfail"] == 4 and counts["xpass"] == 1
    skipped_by_entry = [o for o in report.outcomes if o.status == "skip" and "too slow here" in o.reason]
    assert len(skipped_by_entry) == sum("LONG_RUN" in v["flags"] for _, v in all_vectors)  # every dialect
    assert any("does/not/exist" in u for u in report.unused_expectations)
    assert report.conforms  # xfail and xpass keep the lane conforming


@pytest.mark.parametrize("text,message", [
    ("xfail id=a\n", "needs a reason"),
    ("maybe id=a  # r\n", "must start with"),
    ("xfail color=red  # r\n", "bad selector"),
    ("xfail  # r\n", "no selector"),
])
def test_expectation_file_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text("# header\n" + text)
    with pytest.raises(expectations.ExpectationError, match=rf"bad\.txt:2: .*{message}"):
        expectations.parse(path)


# ----------------------------------------------------------------------------- results file
def _results_from_reference(all_vectors, dtype="float32", tamper=None):
    adapter = ReferenceAdapter()
    out = {}
    for _, vector in all_vectors:
        if vector["result"] == "invalid":
            out[vector["id"]] = {"error": vector["error"]["class"], "step": vector["error"].get("step")}
            continue
        if applicability.skip_reason(vector, dtype):
            continue
        session = adapter.create(vector, dtype, "cpu")
        steps = []
        for step in vector["steps"]:
            grads = [None if g is None else vf.decode_array(g).astype(np.dtype(dtype)) for g in step["grads"]]
            session.step(grads)
            s = session.read()
            enc = lambda items: None if items is None else [vf.encode_optional(None if a is None else a.astype(np.float64)) for a in items]
            steps.append({"iterations": s.iterations, "variables": enc(s.variables), "r": enc(s.r),
                          "c": enc(s.c), "v": enc(s.v), "average": enc(s.average),
                          "accumulator": enc(s.accumulator)})
        out[vector["id"]] = {"steps": steps}
    if tamper:
        tamper(out)
    return {"format": "adafactor-conformance-results", "schema_version": 1, "implementation": "test port",
            "dtype": dtype, "mode": "trajectory", "device": "cpu", "vectors": out}


def test_results_file_protocol(tmp_path, all_vectors, capsys):
    some = [(r, v) for r, v in all_vectors if v["id"].startswith(("arguments/clipnorm", "invalid/"))]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results_from_reference(some)))
    selection = ["--vectors", "arguments/clipnorm", "--vectors", "invalid/"]  # the file covers exactly these
    assert cli.main(["grade", "--results", str(path), *selection]) == 0
    assert "test port" in capsys.readouterr().out

    def tamper(out):
        bits = out["arguments/clipnorm/0.5"]["steps"][2]["variables"][0]["bits"]
        wrong = np.float32(vf.bits_to_float(bits[0])) * np.float32(1 + 2**-10)  # still a float32 value
        bits[0] = vf.float_to_bits(float(wrong))
        out["invalid/clipnorm_and_clipvalue"] = {"error": "TypeError"}

    path.write_text(json.dumps(_results_from_reference(some, tamper=tamper)))
    assert cli.main(["grade", "--results", str(path), *selection]) == 1
    out = capsys.readouterr().out
    assert "arguments/clipnorm/0.5" in out and "step 3" in out
    assert "raised TypeError" in out


def test_results_file_errors_exit_2(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text('{"format": "something else"}')
    assert cli.main(["grade", "--results", str(path)]) == 2
    assert "not a version-1 results file" in capsys.readouterr().err


def test_resolve_third_party_adapter_by_module_path():
    adapter = resolve("conformance.adapters.broken:NoRelativeStep")
    assert adapter.name == "broken:NoRelativeStep"
    with pytest.raises(AdapterError, match="is not a conformance.adapters.Adapter"):
        resolve("conformance.vectorfile:VectorFormatError")


def test_tolerance_override_entry(tmp_path, all_vectors, policy):
    """A per-adapter override multiplies the budget of the selected tensors only."""
    from conformance.adapters.reference import ReferenceAdapter as Ref

    class Perturbed(Ref):
        def create(self, vector, dtype, device):
            session = super().create(vector, dtype, device)
            honest_read = session.read

            def read():
                state = honest_read()
                # 1.5 times the float64 v budget: over it, and under twice it (the override below)
                state.v = [v * (1 + over * 2.0**-52) for v in state.v]
                return state
            session.read = read
            return session

    over = 1.5 * policy.teacher["float64"]["v"]
    some = [(r, v) for r, v in all_vectors if v["id"].startswith("shapes/defaults/tall")]
    assert not runner.run_lane(Perturbed(), some, VECTORS, "float64", "cpu", "teacher", policy, []).conforms
    path = tmp_path / "o.txt"
    path.write_text("tolerance dtype=float64 kind=v x2  # example: another summation order (link)\n")
    report = runner.run_lane(Perturbed(), some, VECTORS, "float64", "cpu", "teacher", policy,
                             expectations.parse(path))
    assert report.conforms and not report.unused_expectations
    path.write_text("tolerance dtype=float64 kind=r x2  # does not cover v\n")
    assert not runner.run_lane(Perturbed(), some, VECTORS, "float64", "cpu", "teacher", policy,
                               expectations.parse(path)).conforms
    for bad, message in [("tolerance dtype=float64 # r\n", "needs a factor"),
                         ("tolerance kind=q x2  # r\n", "unknown kind"),
                         ("xfail id=shapes/ kind=v because=iterations  # r\n", "tolerance entries only"),
                         ("tolerance kind=v x0.5  # r\n", "must be > 1")]:
        path.write_text(bad)
        with pytest.raises(expectations.ExpectationError, match=message):
            expectations.parse(path)


def test_parallel_adapters_merge_into_one_report(tmp_path):
    """--jobs 2 runs adapter processes side by side and merges every lane into one report;
    a broken port among them still makes the run non-conforming."""
    out = tmp_path / "r.json"
    code = cli.main(["run", "--adapter", "reference", "--adapter", "conformance.adapters.broken:ClipThresholdIgnored",
                     "--jobs", "2", "--dtype", "float64", "--mode", "teacher",
                     "--vectors", "arguments/clip_threshold", "--json", str(out)])
    assert code == cli.EXIT_NONCONFORMING
    lanes = json.loads(out.read_text())["lanes"]
    assert sorted(lane["adapter"] for lane in lanes) == ["broken:ClipThresholdIgnored", "reference"]
    assert cli.main(["run", "--adapter", "reference", "--adapter", "reference", "--jobs", "0"]) == cli.EXIT_ERROR



def test_split_by_dtype_merges_lanes_and_a_crash_is_an_error(tmp_path, capsys):
    """--split dtype runs one process per adapter and dtype and merges their lanes; a port
    that crashes before writing its report makes the whole run an ERROR (exit 2), never a
    pass, even when no other lane ran."""
    out = tmp_path / "r.json"
    code = cli.main(["run", "--adapter", "reference", "--adapter", "reference", "--split", "dtype", "--jobs", "2",
                     "--dtype", "float64,float32", "--mode", "teacher", "--vectors", "arguments/clip_threshold",
                     "--json", str(out)])
    assert code == cli.EXIT_OK
    lanes = json.loads(out.read_text())["lanes"]
    assert sorted(lane["dtype"] for lane in lanes) == ["float32", "float32", "float64", "float64"]
    code = cli.main(["run", "--adapter", "conformance.adapters.broken:CrashesOnStart", "--adapter", "reference",
                     "--jobs", "2", "--dtype", "float64", "--mode", "teacher", "--vectors", "arguments/clip_threshold"])
    assert code == cli.EXIT_ERROR
    assert "simulated failure" in capsys.readouterr().out


def test_gpu_lanes_skip_adapters_that_see_no_gpu(tmp_path, capsys):
    """--device gpu with --adapter all (or --if-available) skips, with the reason, each adapter
    that cannot use a GPU here; when none can, nothing was checked: exit 3, NOTHING CHECKED
    (never 0). Naming one adapter without --if-available is a usage error (exit 2) that says why."""
    out = tmp_path / "r.json"
    code = cli.main(["run", "--adapter", "reference", "--adapter", "reference", "--device", "gpu",
                     "--vectors", "arguments/clip_threshold", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == cli.EXIT_NOTHING_CHECKED
    assert "skipped adapter reference: gpu: reference has no gpu support" in text
    assert "NOTHING CHECKED" in text
    data = json.loads(out.read_text())
    assert data["lanes"] == [] and data["verdict"] == "NOTHING CHECKED" and not data["conforms"]
    assert data["exit_status"] == cli.EXIT_NOTHING_CHECKED
    assert cli.main(["run", "--adapter", "reference", "--device", "gpu"]) == cli.EXIT_ERROR
    assert "has no gpu support" in capsys.readouterr().err
    single = tmp_path / "one.json"
    assert cli.main(["run", "--adapter", "reference", "--device", "gpu", "--if-available",
                     "--json", str(single)]) == cli.EXIT_NOTHING_CHECKED
    assert "NOTHING CHECKED" in capsys.readouterr().out
    assert json.loads(single.read_text())["skipped"] == "reference: gpu: reference has no gpu support"

class _CarriedUlpSession:
    """The reference, except that every step lands ``ulps`` ulp of the *previous* variable
    away: what a unit update u = g/sqrt(v) rounded 1 ulp off does to x - |x|*u (XLA:GPU's
    float64 rsqrt on optax's scalar vector, conformance/TOLERANCES.md)."""

    def __init__(self, inner, ulps):
        self.inner, self.ulps = inner, ulps

    def load(self, state):
        self.inner.load(state)

    def step(self, grads):
        before = [x.copy() for x in self.inner.variables]
        self.inner.step(grads)
        for x, x0 in zip(self.inner.variables, before):
            x[...] = x + self.ulps * np.spacing(np.abs(x0)).astype(x.dtype)

    def read(self):
        return self.inner.read()

    def close(self):
        pass


class _CarriedUlp(ReferenceAdapter):
    def __init__(self, ulps):
        super().__init__()
        self.name, self.ulps = f"carried-{ulps}-ulp", ulps

    def create(self, vector, dtype, device):
        return _CarriedUlpSession(super().create(vector, dtype, device), self.ulps)


def test_trajectory_carries_an_earlier_absolute_error(all_vectors, policy):
    """A variable that cancels to far below its earlier magnitude keeps the absolute error of
    that magnitude: 1 ulp of x_0 = 1.86 carried into x_k ~ 1e-3 is legitimate in trajectory
    mode (grading.Grader.step, ``carried``), while a 2^12-ulp error still fails."""
    chosen = [(p, v) for p, v in all_vectors if v["id"] in ("optax/shapes/defaults/scalar", "shapes/defaults/scalar")]
    assert len(chosen) == 2
    legit = runner.run_lane(_CarriedUlp(1), chosen, VECTORS, "float64", "cpu", "trajectory", policy, [])
    assert [o.status for o in legit.outcomes] == ["pass", "pass"], [o.reason for o in legit.outcomes]
    wrong = runner.run_lane(_CarriedUlp(4096), chosen, VECTORS, "float64", "cpu", "trajectory", policy, [])
    assert all(o.status == "fail" for o in wrong.outcomes), [o.reason for o in wrong.outcomes]


def test_the_plot_draws_each_lanes_own_budgets():
    """report.budget_curves: the budget lines of a dtype panel are those the plotted
    vectors were graded with, per mode and dialect (an optax lane's are not Keras's)."""
    from conformance import report
    from conformance.outcomes import LaneReport, VectorOutcome

    def lane(adapter, mode, dialect, status="pass"):
        outcome = VectorOutcome("v", "f", "valid", [], status, curve={"variables": [1.0, 2.0]}, dialect=dialect)
        return LaneReport(adapter, "float64", "cpu", mode, {}, 0.0, [outcome])

    policy = Policy.load()
    reports = [lane("optax", "teacher", "optax"), lane("keras-jax", "trajectory", "keras"),
               lane("torch", "teacher", "torch", status="skip")]
    curves = report.budget_curves(reports, "float64", policy, 3)
    assert set(curves) == {("teacher", "optax"), ("trajectory", "keras")}  # skipped vectors draw nothing
    assert curves[("teacher", "optax")] == [policy.budget("float64", "teacher", "variables", k, "optax")
                                            for k in (1, 2, 3)]
    assert curves[("teacher", "optax")] != [policy.budget("float64", "teacher", "variables", k) for k in (1, 2, 3)]
    assert curves[("trajectory", "keras")] == [policy.budget("float64", "trajectory", "variables", k)
                                               for k in (1, 2, 3)]
    assert report.budget_curves(reports, "float32", policy, 3) == {}


def test_compare_reports_names_every_changed_verdict(tmp_path):
    """tools/compare_reports.py (before/after check of a refactoring): a changed vector
    status, a changed deviation model and a lane present on one side only are each named;
    identical reports (or directories of them) compare SAME, exit 0."""
    from tools import compare_reports

    def lane(adapter, statuses):
        outcomes = [{"id": vid, "status": status, "model": model} for vid, (status, model) in statuses.items()]
        counts = {}
        for o in outcomes:
            counts[o["status"]] = counts.get(o["status"], 0) + 1
        return {"adapter": adapter, "dtype": "float64", "mode": "teacher", "device": "cpu", "counts": counts,
                "outcomes": outcomes}

    before = {"verdict": "CONFORMS", "lanes": [lane("a", {"v1": ("pass", None), "v2": ("model", "m1")}),
                                               lane("b", {"v1": ("pass", None)})]}
    after = {"verdict": "CONFORMS", "lanes": [lane("a", {"v1": ("fail", None), "v2": ("model", "m2")})]}
    assert compare_reports.differences(before, before) == []
    found = compare_reports.differences(before, after)
    assert any("a float64 teacher cpu: v1: pass -> fail" in line for line in found), found
    assert any("v2: model, model m1 -> m2" in line for line in found), found
    assert any(line.startswith("b float64 teacher cpu: lane only in the first") for line in found), found
    for name, data in (("one", before), ("two", before)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "r.json").write_text(json.dumps(data))
    assert compare_reports.main([str(tmp_path / "one"), str(tmp_path / "two")]) == 0
    (tmp_path / "two" / "r.json").write_text(json.dumps(after))
    assert compare_reports.main([str(tmp_path / "one"), str(tmp_path / "two")]) == 1
