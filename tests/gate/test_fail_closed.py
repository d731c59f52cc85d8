"""Fail closed: exit 0 is a promise that something was graded and everything graded
conforms (issue 12, items 2 and 4).

* Nothing checked is never success: a run in which no vector was graded exits 3 and prints
  NOTHING CHECKED with why, in the single-adapter path, with several adapters, in ``grade``.
* ``grade`` covers the file's dialect corpus (missing vectors fail unless
  ``--allow-partial``); unknown ids, extra steps, an unknown device and values that are not
  values of the declared dtype are errors (exit 2) naming file, vector, step and field.
* A run that died is never a pass: an adapter process that exits (any code), is killed or
  hangs past ``--timeout`` is an ERROR naming the adapter and vector; SIGTERM/SIGINT stop
  every child process and remove the temporary directory.
* Reports never overwrite inputs, and a report path that cannot be written fails before
  the run.

The real CLI runs in a subprocess over a small copy of the corpus (three files), so each
run takes seconds. The dying adapters are in tests/gate/fail_closed_adapters.py.
"""

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conformance import cli
from conformance import vectorfile as vf
from conformance.adapters.reference import ReferenceAdapter
from conformance.applicability import skip_reason
from tests.gate.fail_closed_adapters import mini_corpus
from tests.helpers import REPO, gate
ADAPTERS = "tests.gate.fail_closed_adapters"
VALID = ("regression/float32-beta2-decay-cancellation", "regression/float32-ema-overwrite-cancellation",
         "regression/float32-update-envelope")


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return mini_corpus(tmp_path_factory.mktemp("vectors"))


def run(mini, *args, **kwargs):
    return gate("run", "--vectors-dir", mini, "--mode", "teacher", *args, **kwargs)


# ----------------------------------------------------------------------------- nothing checked
def test_a_dtype_the_adapter_does_not_run_is_nothing_checked(mini, tmp_path):
    out = tmp_path / "r.json"
    done = run(mini, "--adapter", f"{ADAPTERS}:Float32Only", "--dtype", "float64", "--json", out)
    assert done.returncode == cli.EXIT_NOTHING_CHECKED, done.stdout + done.stderr
    assert "NOTHING CHECKED" in done.stdout
    assert "fail-closed:Float32Only does not run float64 (it runs float32)" in done.stdout
    data = json.loads(out.read_text())
    assert data["verdict"] == "NOTHING CHECKED" and data["conforms"] is False and data["graded"] == 0
    assert data["exit_status"] == cli.EXIT_NOTHING_CHECKED
    # With a lane that graded something, the empty lane is named but does not fail the run.
    done = run(mini, "--adapter", f"{ADAPTERS}:Float32Only", "--dtype", "float64,float32", "--vectors", "regression/")
    assert done.returncode == cli.EXIT_OK, done.stdout + done.stderr
    assert "note: 1 lane graded nothing" in done.stdout
    assert "fail-closed:Float32Only float64 teacher cpu: fail-closed:Float32Only does not run float64" in done.stdout
    assert done.stdout.rstrip().endswith("CONFORMS")


def test_no_vector_of_the_adapters_dialect_is_nothing_checked(mini):
    done = run(mini, "--adapter", f"{ADAPTERS}:KerasOnly", "--dtype", "float64", "--vectors", "torch/")
    assert done.returncode == cli.EXIT_NOTHING_CHECKED, done.stdout + done.stderr
    assert "NOTHING CHECKED" in done.stdout
    assert "none of the 6 selected vectors is of fail-closed:KerasOnly's dialect(s) (keras)" in done.stdout


def test_every_vector_skipped_is_nothing_checked(mini):
    done = run(mini, "--adapter", f"{ADAPTERS}:SupportsNothing", "--dtype", "float64", "--vectors", "regression/")
    assert done.returncode == cli.EXIT_NOTHING_CHECKED, done.stdout + done.stderr
    assert "all 3 vectors skipped or xfail (3 x skip: this port supports no configuration)" in done.stdout


def test_several_adapters_nothing_checked_and_partly_checked(mini):
    """--adapter A --adapter B: NOTHING CHECKED (exit 3) when no lane of any adapter graded
    a vector; exit 0 with the empty lanes named when another adapter's lanes did."""
    done = run(mini, "--adapter", f"{ADAPTERS}:Float32Only", "--adapter", f"{ADAPTERS}:SupportsNothing",
               "--jobs", "2", "--dtype", "float64", "--vectors", "regression/")
    assert done.returncode == cli.EXIT_NOTHING_CHECKED, done.stdout + done.stderr
    assert "=== summary of every adapter" in done.stdout and "NOTHING CHECKED" in done.stdout
    done = run(mini, "--adapter", f"{ADAPTERS}:KerasOnly", "--adapter", f"{ADAPTERS}:Float32Only",
               "--jobs", "2", "--dtype", "float64", "--vectors", "regression/")
    assert done.returncode == cli.EXIT_OK, done.stdout + done.stderr
    assert "fail-closed:Float32Only float64 teacher cpu: fail-closed:Float32Only does not run float64" in done.stdout


def test_gpu_lanes_where_no_adapter_sees_a_gpu_are_nothing_checked(mini):
    """make check-gpu on a machine without a GPU: every adapter is skipped with its reason
    and the run exits 3, never 0."""
    done = run(mini, "--adapter", "reference", "--adapter", f"{ADAPTERS}:KerasOnly", "--device", "gpu",
               "--dtype", "float64")
    assert done.returncode == cli.EXIT_NOTHING_CHECKED, done.stdout + done.stderr
    assert "adapter reference skipped: gpu: reference has no gpu support" in done.stdout
    assert "NOTHING CHECKED" in done.stdout


# ----------------------------------------------------------------------------- grade
def _results(mini, dtype="float32", mode="trajectory", device="cpu", only=None):
    """A results file of the reference over the mini corpus's Keras vectors."""
    adapter = ReferenceAdapter()
    out = {}
    for _, vector in vf.iter_vectors(vf.load_corpus(mini)):
        if vector.dialect != "keras" or (only is not None and vector.id not in only):
            continue
        if vector.result == "invalid":
            out[vector.id] = {"error": vector.error.cls, "step": vector.error.step}
            continue
        if skip_reason(vector, dtype):
            continue
        session = adapter.create(vector, dtype, "cpu")
        steps = []
        for step in vector.steps:
            session.step([None if g is None else g.astype(np.dtype(dtype)) for g in step.grads])
            s = session.read()

            def enc(items):
                return None if items is None else [vf.encode_optional(None if a is None else a.astype(np.float64))
                                                   for a in items]

            steps.append({"iterations": s.iterations, "variables": enc(s.variables), "r": enc(s.r), "c": enc(s.c),
                          "v": enc(s.v), "average": enc(s.average), "accumulator": enc(s.accumulator)})
        out[vector.id] = {"steps": steps}
    return {"format": "adafactor-conformance-results", "schema_version": 1, "implementation": "test port",
            "dtype": dtype, "mode": mode, "device": device, "vectors": out}


def grade(mini, data, tmp_path, *args):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    return gate("grade", "--results", path, "--vectors-dir", mini, *args)


def test_grade_covers_the_whole_corpus_of_the_files_dialect(mini, tmp_path):
    full = _results(mini)
    done = grade(mini, full, tmp_path)
    assert done.returncode == cli.EXIT_OK, done.stdout + done.stderr
    assert "coverage: complete" in done.stdout
    # One valid vector only: the other Keras vectors of the corpus are failures.
    partial = _results(mini, only={VALID[2]})
    done = grade(mini, partial, tmp_path, "--json", tmp_path / "r.json")
    assert done.returncode == cli.EXIT_NONCONFORMING, done.stdout + done.stderr
    lane = json.loads((tmp_path / "r.json").read_text())["lanes"][0]
    missing = [o for o in lane["outcomes"] if o["reason"].startswith("missing from the results file")]
    assert {o["status"] for o in missing} == {"fail"}
    assert {o["id"] for o in missing} == {v for v in full["vectors"] if v != VALID[2]}
    assert f"FAIL results:results.json float32 trajectory: {VALID[1]}" in done.stdout
    # --allow-partial: the same file grades what it holds, and says so in header and report.
    done = grade(mini, partial, tmp_path, "--allow-partial", "--json", tmp_path / "r.json")
    assert done.returncode == cli.EXIT_OK, done.stdout + done.stderr
    assert "coverage: partial (--allow-partial)" in done.stdout and "allow_partial: True" in done.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["run"]["allow_partial"] is True and data["lanes"][0]["counts"]["pass"] == 1


def test_grade_of_an_empty_results_file(mini, tmp_path):
    empty = {**_results(mini, only=set()), "vectors": {}}
    done = grade(mini, empty, tmp_path)
    assert done.returncode == cli.EXIT_NONCONFORMING, done.stdout + done.stderr
    assert "missing from the results file" in done.stdout
    done = grade(mini, empty, tmp_path, "--allow-partial")
    assert done.returncode == cli.EXIT_NOTHING_CHECKED, done.stdout + done.stderr
    assert "NOTHING CHECKED" in done.stdout and "missing from the results file (--allow-partial)" in done.stdout


def _float32_values_widened(data):
    bits = data["vectors"][VALID[1]]["steps"][1]["variables"][0]["bits"]
    bits[0] = vf.float_to_bits(vf.bits_to_float(bits[0]) * (1 + 2**-40))  # no float32 holds this


@pytest.mark.parametrize("tamper,message", [
    (lambda d: d["vectors"].update({"no/such/vector": {"steps": []}}),
     "vector id 'no/such/vector' is not in the corpus: unknown vector id"),
    (lambda d: d["vectors"][VALID[2]]["steps"].append(d["vectors"][VALID[2]]["steps"][-1]),
     f"vector '{VALID[2]}' step 3: extra steps (the file holds 3, the vector has 2 steps)"),
    (lambda d: d.update(device="tpu"), "device 'tpu' is unknown"),
    (_float32_values_widened,
     f"vector '{VALID[1]}' step 2: field variables[0] element "),
    (lambda d: d["vectors"][VALID[1]]["steps"][0].pop("r"), f"vector '{VALID[1]}' step 1: field 'r' missing"),
], ids=["unknown-id", "extra-step", "device", "not-float32", "missing-field"])
def test_grade_refuses_unchecked_claims(mini, tmp_path, tamper, message):
    data = _results(mini)
    tamper(data)
    done = grade(mini, data, tmp_path)
    assert done.returncode == cli.EXIT_ERROR, done.stdout + done.stderr
    assert str(tmp_path / "results.json") in done.stderr and message in done.stderr, done.stderr
    if "variables[0]" in message:
        assert "which is not a float32 value" in done.stderr


# ----------------------------------------------------------------------------- a run that died
@pytest.mark.parametrize("adapter,how", [
    ("ExitsZero", "exited with code 0"),
    ("SysExitZero", "exited with code 0"),
    ("KilledBySignal", "was killed by SIGKILL"),
])
def test_an_adapter_that_dies_in_step_is_an_error(mini, tmp_path, adapter, how):
    out, junit = tmp_path / "r.json", tmp_path / "r.xml"
    done = run(mini, "--adapter", f"{ADAPTERS}:{adapter}", "--dtype", "float64", "--vectors", "regression/",
               "--json", out, "--junit", junit)
    assert done.returncode == cli.EXIT_ERROR, done.stdout + done.stderr
    assert "CONFORMS" not in done.stdout
    assert f"adapter {ADAPTERS}:{adapter}: its process {how}" in done.stdout, done.stdout
    assert f"on vector '{VALID[0]}' (float64 teacher)" in done.stdout
    data = json.loads(out.read_text())
    assert data["verdict"] == "ERROR" and data["conforms"] is False and data["errors"]
    # A dashboard counting JUnit cases sees an error, not an empty green suite.
    (suite,) = ET.parse(junit).getroot()
    assert suite.get("name") == "gate" and suite.get("errors") == "1"
    assert suite.find("testcase").find("error").get("message").startswith(f"ERROR: adapter {ADAPTERS}:{adapter}")


def test_an_exit_status_that_contradicts_the_report_is_an_error(mini):
    done = run(mini, "--adapter", f"{ADAPTERS}:ExitsAfterReport", "--dtype", "float64", "--vectors", "regression/")
    assert done.returncode == cli.EXIT_ERROR, done.stdout + done.stderr
    assert "exited with code 5, but its report says CONFORMS" in done.stdout


def test_a_hanging_adapter_times_out(mini):
    # The child's setup (imports, corpus load) counts as one vector: 5 s leaves it room on a
    # loaded machine, so the timeout names the vector the adapter hangs on.
    start = time.monotonic()
    done = run(mini, "--adapter", f"{ADAPTERS}:Hangs", "--dtype", "float64", "--vectors", "regression/",
               "--timeout", "5")
    assert done.returncode == cli.EXIT_ERROR, done.stdout + done.stderr
    assert (f"adapter {ADAPTERS}:Hangs: ran past the per-vector timeout of 5 s (--timeout) on vector "
            f"'{VALID[0]}' (float64 teacher)") in done.stdout
    assert time.monotonic() - start < 60


def test_a_dying_adapter_among_several_is_an_error(mini):
    done = run(mini, "--adapter", "reference", "--adapter", f"{ADAPTERS}:ExitsZero", "--jobs", "2",
               "--dtype", "float64", "--vectors", "regression/")
    assert done.returncode == cli.EXIT_ERROR, done.stdout + done.stderr
    assert f"adapter {ADAPTERS}:ExitsZero: its process exited with code 0 on vector '{VALID[0]}'" in done.stdout
    summary = done.stdout.split("=== summary of every adapter")[1]
    assert "reference" in summary and "CONFORMS" not in summary


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie waiting for a reaper is gone


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_child_and_removes_the_temporary_directory(mini, tmp_path, signum):
    pids_file, scratch = tmp_path / "pids", tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "FAIL_CLOSED_PIDS": str(pids_file), "TMPDIR": str(scratch)}
    gate_proc = subprocess.Popen(
        [sys.executable, "-m", "conformance", "run", "--vectors-dir", str(mini), "--adapter",
         f"{ADAPTERS}:HangsWithChild", "--dtype", "float64", "--mode", "teacher", "--vectors", "regression/",
         "--timeout", "600"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not pids_file.exists():
            assert gate_proc.poll() is None, gate_proc.communicate()
            assert time.monotonic() < deadline, "the adapter never started hanging"
            time.sleep(0.1)
        worker, grandchild = map(int, pids_file.read_text().split())
        assert _alive(worker) and _alive(grandchild)
        assert [p.name for p in scratch.iterdir()], "the gate keeps its temporary directory in TMPDIR"
        gate_proc.send_signal(signum)
        out, err = gate_proc.communicate(timeout=30)
    finally:
        if gate_proc.poll() is None:
            gate_proc.kill()
    assert gate_proc.returncode == 128 + signum, out + err
    assert f"INTERRUPTED by {signal.Signals(signum).name}: stopped 1 adapter process" in err
    deadline = time.monotonic() + 10
    while (_alive(worker) or _alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker) and not _alive(grandchild)
    assert list(scratch.iterdir()) == []


# ----------------------------------------------------------------------------- outputs
def _refused(capsys, *args):
    """``python -m conformance ARGS`` in this process, for arguments the gate refuses before
    any adapter process starts: (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_no_report_overwrites_an_input(mini, tmp_path, capsys):
    data = _results(mini)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(data))
    before = results.read_bytes()
    code, _, err = _refused(capsys, "grade", "--results", results, "--vectors-dir", mini, "--json", results)
    assert code == cli.EXIT_ERROR
    assert f"--json {results} is the results file ({results})" in err
    assert results.read_bytes() == before
    link = tmp_path / "link.xml"
    link.symlink_to(results)
    code, _, err = _refused(capsys, "grade", "--results", results, "--vectors-dir", mini, "--junit", link)
    assert code == cli.EXIT_ERROR and "is the results file" in err
    golden = mini / "keras" / "regression.json"
    manifest = mini / vf.MANIFEST_NAME
    xfail = tmp_path / "x.txt"
    xfail.write_text("# nothing\n")
    expectation = next(p for p in (REPO / "conformance" / "expectations").iterdir() if p.suffix == ".txt")
    for flag, path, what in [("--json", golden, "a file of the vectors directory"),
                             ("--junit", manifest, "the vectors' manifest"),
                             ("--plot", xfail, "an expectation file (--xfail-file)"),
                             ("--json", expectation, "an expectation file")]:
        stamp = path.read_bytes()
        code, out, err = _refused(capsys, "run", "--vectors-dir", mini, "--mode", "teacher", "--adapter", "reference",
                                  "--xfail-file", xfail, flag, path)
        assert code == cli.EXIT_ERROR, (flag, path, out, err)
        assert f"{flag} {path} is {what} ({path})" in err, err
        assert path.read_bytes() == stamp


def test_a_report_path_that_cannot_be_written_fails_before_the_run(mini, tmp_path, capsys):
    for flag, path, message in [("--json", tmp_path / "no" / "dir" / "r.json", "does not exist"),
                                ("--junit", tmp_path, "is a directory"),
                                ("--plot", tmp_path / "p.txt", "unknown image format")]:
        code, out, err = _refused(capsys, "run", "--vectors-dir", mini, "--mode", "teacher", "--adapter",
                                  f"{ADAPTERS}:Hangs", "--timeout", "5", flag, path)
        assert code == cli.EXIT_ERROR, out + err
        assert f"{flag} {path}" in err and message in err, err
        assert "per-vector timeout" not in out  # refused before the (hanging) adapter started
    code, _, err = _refused(capsys, "run", "--vectors-dir", mini, "--mode", "teacher", "--adapter", "reference",
                            "--json", tmp_path / "same", "--junit", tmp_path / "same")
    assert code == cli.EXIT_ERROR and "are the same file" in err
    assert not (tmp_path / "same").exists() and not (tmp_path / "no").exists()


def test_reports_are_written_whole_and_leave_no_temporary_files(mini, tmp_path):
    outputs = tmp_path / "out"
    outputs.mkdir()
    done = run(mini, "--adapter", "reference", "--dtype", "float64", "--json", outputs / "r.json",
               "--junit", outputs / "r.xml")
    assert done.returncode == cli.EXIT_OK, done.stdout + done.stderr
    assert sorted(p.name for p in outputs.iterdir()) == ["r.json", "r.xml"]
    data = json.loads((outputs / "r.json").read_text())
    assert data["verdict"] == "CONFORMS" and data["exit_status"] == 0 and data["graded"] > 0
