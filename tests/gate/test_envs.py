"""tools/envs.py (cached extra environments), tools/nightly.py (what changed against the
pinned release, and whether a versioned expectation names it) and tools/history.py (the
conformance history table), without the network or a real env: a fake installer in a tmp
cache, a fake runner, and synthetic reports."""

import json

import pytest

from conformance import expectations
from tests import helpers
from tools import envs, history, nightly

PINS = {"torch": "2.13.0", "jax": "0.10.2", "jaxlib": "0.10.2", "tensorflow-cpu": "2.21.0"}
NIGHTLY = "3.16.0.dev2026102704"


class FakeInstaller(envs.Installer):
    """Records what would run; a venv is a directory with bin/python."""

    def __init__(self, torch="2.13.0+cpu", fail_on=None):
        super().__init__(log=lambda line: None)
        self.calls, self.torch, self.fail_on = [], torch, fail_on

    def create_venv(self, path):
        self.calls.append(("venv", str(path)))
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "python").write_text("")

    def pip(self, python, args):
        self.calls.append(("pip", *args))
        if self.fail_on and self.fail_on in args:
            raise envs.EnvError(f"pip {' '.join(args)} failed (1)")

    def versions(self, python):
        self.calls.append(("versions",))
        found = {"keras": "3.11.3", "numpy": "2.4.6"}
        if self.torch:
            found["torch"] = self.torch
        return found


def _spec(text):
    return envs.parse_spec(text, PINS)


# ----------------------------------------------------------------------------- specs
def test_a_keras_spec_pins_its_backend_and_puts_cpu_torch_first():
    spec = _spec("keras==3.11.3:torch")
    assert spec.name == "keras-3.11.3-torch" and spec.lanes == ("keras-torch",)
    assert spec.steps[0].requirements == ("torch==2.13.0+cpu",)
    assert spec.constraints == ("torch==2.13.0+cpu",)
    assert spec.steps[-1].requirements == ("keras==3.11.3",) and not spec.steps[-1].upgrade
    assert all(d in spec.steps[1].requirements for d in envs.GATE_DEPENDENCIES)


def test_keras_nightly_is_upgraded_and_tensorflow_loses_its_keras_first():
    spec = _spec("keras-nightly:tensorflow")
    assert spec.name == "keras-nightly-tensorflow" and spec.lanes == ("keras-tensorflow",) and spec.refreshable
    actions = [(s.action, s.requirements) for s in spec.steps]
    assert actions.index(("uninstall", ("keras", "keras-nightly"))) < actions.index(("install", ("keras-nightly",)))
    assert "tensorflow-cpu==2.21.0" in spec.steps[0].requirements


def test_native_specs_and_series():
    torch = _spec("torch==2.6.*")
    assert torch.name == "torch-2.6.x" and torch.lanes == ("torch", "torch-foreach")
    assert torch.steps[0].index == envs.TORCH_CPU_INDEX  # only CPU builds can come from there
    assert _spec("optax==0.2.4").lanes == ("optax",)
    transformers = _spec("transformers==4.40.2")
    assert transformers.steps[0].requirements == ("torch==2.13.0+cpu",) and transformers.lanes == ("transformers",)


@pytest.mark.parametrize("text,message", [
    ("keras==3.11.3", "needs a backend"), ("keras==3.11.3:mxnet", "needs a backend"),
    ("keras:jax", "pin the release"), ("torch", "pin the version"), ("torch==2.6:jax", "only Keras"),
    ("numpy==2.0:", "no lanes"), ("keras>=3.12:jax", "pin one version"), ("keras==x:jax", "not a version"),
    ("", "expected <requirement>"),
])
def test_bad_specs_are_refused(text, message):
    with pytest.raises(envs.EnvError, match=message):
        _spec(text)


def test_pins_come_from_constraints_txt():
    pins = envs.pins()
    assert pins["torch"] and pins["keras"] and pins["tensorflow-cpu"]


# ----------------------------------------------------------------------------- building, cached
def test_first_build_installs_in_order_then_stamps(tmp_path):
    fake = FakeInstaller()
    path = envs.ensure(_spec("keras==3.11.3:torch"), tmp_path, installer=fake)
    assert path == tmp_path / "keras-3.11.3-torch"
    pips = [c[1:] for c in fake.calls if c[0] == "pip"]
    assert fake.calls[0] == ("venv", str(path))
    assert pips[0] == ("install", "-q", "torch==2.13.0+cpu")  # alone, first
    constraint = str(path / "constraints.txt")
    assert all(p[p.index("-c") + 1] == constraint for p in pips[1:-1])  # every later step held to the CPU build
    assert pips[-1] == ("install", "-q", "--no-deps", "-e", str(envs.REPO))  # the gate, editable, no deps
    stamp = envs.read_stamp(path)
    assert stamp["steps"] == _spec("keras==3.11.3:torch").stamp()["steps"]
    assert stamp["installed"]["torch"] == "2.13.0+cpu"


def test_a_second_build_with_the_same_steps_does_nothing(tmp_path):
    envs.ensure(_spec("keras==3.11.3:torch"), tmp_path, installer=FakeInstaller())
    again = FakeInstaller()
    envs.ensure(_spec("keras==3.11.3:torch"), tmp_path, installer=again)
    assert again.calls == []


def test_other_steps_or_no_stamp_rebuild_from_scratch(tmp_path):
    spec = _spec("keras==3.11.3:torch")
    path = envs.ensure(spec, tmp_path, installer=FakeInstaller())
    (path / "leftover").write_text("x")
    other = envs.parse_spec("keras==3.11.3:torch", dict(PINS, torch="2.14.0"))
    assert other.name == spec.name
    fake = FakeInstaller(torch="2.14.0+cpu")
    envs.ensure(other, tmp_path, installer=fake)
    assert fake.calls[0][0] == "venv" and not (path / "leftover").exists()
    (path / envs.STAMP).unlink()  # an interrupted build
    fake = FakeInstaller()
    envs.ensure(spec, tmp_path, installer=fake)
    assert fake.calls[0][0] == "venv"


def test_refresh_upgrades_only_the_unpinned_requirement(tmp_path):
    spec = _spec("keras-nightly:jax")
    envs.ensure(spec, tmp_path, installer=FakeInstaller(torch=None))
    fake = FakeInstaller(torch=None)
    envs.ensure(spec, tmp_path, installer=fake, refresh=True)
    assert fake.calls == [("pip", "install", "-q", "--upgrade", "keras-nightly"), ("versions",)]  # restamped
    pinned = FakeInstaller()
    envs.ensure(_spec("keras==3.11.3:torch"), tmp_path, installer=pinned)
    envs.ensure(_spec("keras==3.11.3:torch"), tmp_path, installer=(pinned := FakeInstaller()), refresh=True)
    assert pinned.calls == []


def test_a_cuda_torch_is_refused_and_not_stamped(tmp_path):
    with pytest.raises(envs.EnvError, match="not the CPU build"):
        envs.ensure(_spec("keras==3.11.3:torch"), tmp_path, installer=FakeInstaller(torch="2.13.0"))
    assert envs.read_stamp(tmp_path / "keras-3.11.3-torch") is None


def test_a_failed_pip_leaves_no_stamp(tmp_path):
    with pytest.raises(envs.EnvError, match="failed"):
        envs.ensure(_spec("keras==3.11.3:torch"), tmp_path, installer=FakeInstaller(fail_on="keras==3.11.3"))
    assert envs.read_stamp(tmp_path / "keras-3.11.3-torch") is None


def test_run_lanes_uses_the_env_python_and_writes_one_report_per_adapter(tmp_path):
    spec = _spec("keras==3.11.3:torch")
    env = envs.ensure(spec, tmp_path / "cache", installer=FakeInstaller())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keras-torch.json").write_text("{}")  # a previous run's
    seen = []

    def runner(command):
        seen.append(command)
        assert not (out / "keras-torch.json").exists()
        return 1

    codes = envs.run_lanes(spec, env, out, ["--dtype", "float64"], runner=runner, log=lambda line: None)
    assert codes == {"keras-torch": 1}
    assert seen == [[str(env / "bin" / "python"), "-m", "conformance", "run", "--adapter", "keras-torch",
                     "--json", str(out / "keras-torch.json"), "--dtype", "float64"]]


# ----------------------------------------------------------------------------- synthetic reports
@pytest.fixture(scope="module")
def vectors():
    from conformance.vector import as_vector

    return {as_vector(v).id: as_vector(v) for _, v in helpers.select(["shapes/defaults/"])}


def _report(adapter, statuses, environment, verdict="CONFORMS", unused=()):
    """statuses: id -> status or (status, model)."""
    outcomes = []
    for vid, status in statuses.items():
        status, model = status if isinstance(status, tuple) else (status, None)
        outcomes.append({"id": vid, "status": status, "model": model, "reason": ""})
    counts = {s: sum(o["status"] == s for o in outcomes) for s in history.STATUSES}
    lane = {"adapter": adapter, "dtype": "float64", "mode": "teacher", "device": "cpu", "environment": environment,
            "outcomes": outcomes, "counts": counts, "conforms": counts["fail"] == 0, "not_run": "",
            "unused_expectations": list(unused)}
    return {"lanes": [lane], "verdict": verdict}


def _entries(tmp_path, text):
    path = tmp_path / "keras-torch.txt"
    path.write_text(text)
    parsed = expectations.parse(path)
    return lambda adapter: parsed


def test_nightly_same_reports_exit_0(vectors):
    ids = sorted(vectors)[:3]
    before = _report("keras-torch", {i: "pass" for i in ids}, {"keras": "3.15.1"})
    after = _report("keras-torch", {i: "pass" for i in ids}, {"keras": NIGHTLY})
    lines = []
    assert nightly.report_changes(before, after, entries_of=lambda a: [], vectors=vectors, out=lines.append) == 0
    assert lines[-1].startswith("SAME")


def test_nightly_a_change_named_by_a_versioned_entry_is_expected(tmp_path, vectors):
    first, second = sorted(vectors)[:2]
    entries = _entries(tmp_path, f"model keras-float32-means-torch id={first} keras<3.16  # fixed in 3.16\n")
    before = _report("keras-torch", {first: ("model", "keras-float32-means-torch"), second: "pass"},
                     {"keras": "3.15.1"})
    after = _report("keras-torch", {first: "pass", second: "pass"}, {"keras": NIGHTLY})
    lines = []
    assert nightly.report_changes(before, after, entries_of=entries, vectors=vectors, out=lines.append) == 0
    assert any(line.startswith(f"EXPECTED: keras-torch float64 teacher cpu: {first}: model -> pass") and
               "keras<3.16" in line for line in lines), lines
    assert any(f"{first}: model -> pass" in line for line in lines if not line.startswith(("EXPECTED", "UNEXP")))


@pytest.mark.parametrize("text,after_status", [
    ("", "pass"),  # no entry at all
    ("model keras-float32-means-torch id={id}  # every version\n", "pass"),  # no range
    ("model keras-float32-means-torch id={id} keras>=3.12  # holds for both\n", "pass"),
    ("model keras-float32-means-torch id=shapes/none keras<3.16  # another vector\n", "pass"),
    ("model keras-float32-means-torch id={id} keras<3.16  # names it, but the nightly fails\n", "fail"),
])
def test_nightly_a_change_no_versioned_entry_names_exits_1(tmp_path, vectors, text, after_status):
    vid = sorted(vectors)[0]
    entries = _entries(tmp_path, "# x\n" + text.replace("{id}", vid))
    before = _report("keras-torch", {vid: ("model", "keras-float32-means-torch")}, {"keras": "3.15.1"})
    after = _report("keras-torch", {vid: after_status}, {"keras": NIGHTLY})
    lines = []
    assert nightly.report_changes(before, after, entries_of=entries, vectors=vectors, out=lines.append) == 1
    assert any(line.startswith(f"UNEXPECTED: keras-torch float64 teacher cpu: {vid}") for line in lines), lines


def test_nightly_a_lane_missing_from_the_nightly_is_unexpected(vectors):
    vid = sorted(vectors)[0]
    before = _report("keras-torch", {vid: "pass"}, {"keras": "3.15.1"})
    after = {"lanes": [], "verdict": "ERROR"}
    lines = []
    assert nightly.report_changes(before, after, entries_of=lambda a: [], vectors=vectors, out=lines.append) == 1
    assert any("lane only in the pinned run" in line for line in lines)


def _history_run(tmp_path, spec_text, keras, statuses, unused=()):
    spec = _spec(spec_text)
    directory = tmp_path / "out" / spec.name
    directory.mkdir(parents=True)
    (directory / "keras-torch.json").write_text(json.dumps(
        _report("keras-torch", statuses, {"keras": keras, "torch": "2.13.0+cpu"}, unused=unused)))
    stamp = {"installed": {("keras-nightly" if "nightly" in spec_text else "keras"): keras, "torch": "2.13.0+cpu"}}
    (directory / "seconds.json").write_text(json.dumps({"seconds": 12.0, "stamp": stamp}))
    return spec_text


def test_history_rows_by_version_and_first_last_per_entry(tmp_path, vectors, monkeypatch):
    a, b = sorted(vectors)[:2]
    text = (f"model keras-float32-means-torch dtype=float64 keras>=3.12  # from 3.12\n"
            f"model keras-torch-decay-once-per-apply id={b}  # always\n"
            f"xfail id=does/not/exist because=raises:RuntimeError  # never shows\n"
            f"tolerance dtype=float64 kind=r x2 keras<3.12  # applies before 3.12 only\n")
    entries = _entries(tmp_path, text)
    specs = [  # written out of order: the table sorts by version
        _history_run(tmp_path, "keras-nightly:torch", NIGHTLY,
                     {a: ("model", "keras-float32-means-torch"), b: "pass"}),
        _history_run(tmp_path, "keras==3.11.3:torch", "3.11.3", {a: "pass", b: ("model", "keras-torch-decay-once-per-apply")}),
        _history_run(tmp_path, "keras==3.12.0:torch", "3.12.0",
                     {a: ("model", "keras-float32-means-torch"),
                      b: ("model", "keras-torch-decay-once-per-apply + keras-float32-means-torch")}),
    ]
    monkeypatch.setattr(history, "_entries_of", entries)
    monkeypatch.setattr(history, "_vectors", lambda: vectors)
    document = tmp_path / "HISTORY.md"
    printed = []
    monkeypatch.setattr("builtins.print", lambda *x, **k: printed.append(" ".join(map(str, x))))
    assert history.main(["--report-only", "--out", str(tmp_path / "out"), "--write", str(document), *specs]) == 0
    text = document.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 3.")]
    assert [r.split(" | ")[0] for r in rows] == ["| 3.11.3", "| 3.12.0", f"| {NIGHTLY}"]
    assert "1 pass, 1 model" in rows[0] and "2 model" in rows[1]
    entry_rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| 1 |")
                  or line.startswith("| 2 |") or line.startswith("| 3 |")}
    means = next(v for k, v in entry_rows.items() if "keras-float32-means-torch" in k)
    assert means.endswith(f"| 3.12.0 | {NIGHTLY} | 3.11.3 |")
    decay = next(v for k, v in entry_rows.items() if "decay-once" in k)
    assert decay.endswith(f"| 3.11.3 | 3.12.0 | {NIGHTLY} |")
    entry_rows[4] = next(line for line in text.splitlines() if line.startswith("| 4 |"))
    assert entry_rows[4].endswith(f"| 3.11.3 | 3.11.3 | 3.12.0, {NIGHTLY} |")
    stale = next(v for k, v in entry_rows.items() if "does/not/exist" in k)
    assert stale.endswith(f"| - | - | 3.11.3, 3.12.0, {NIGHTLY} |")
    assert "**What ran**, and nothing else: `keras-nightly:torch`, `keras==3.11.3:torch`, `keras==3.12.0:torch` (" in text
    reproduce = "python -m tools.history keras-nightly:torch keras==3.11.3:torch keras==3.12.0:torch"
    assert f"Reproduce this table: `{reproduce}`" in text and f"reproduce: {reproduce}" in printed
    assert "--full" in text and not (tmp_path / ".HISTORY.md.tmp").exists()


def test_history_a_missing_report_is_a_row_not_a_crash(tmp_path, vectors, monkeypatch):
    spec = _spec("keras==3.12.0:torch")
    (tmp_path / "out" / spec.name).mkdir(parents=True)
    monkeypatch.setattr(history, "_entries_of", lambda a: [])
    monkeypatch.setattr(history, "_vectors", lambda: vectors)
    document = tmp_path / "H.md"
    assert history.main(["--report-only", "--out", str(tmp_path / "out"), "--write", str(document),
                         "keras==3.12.0:torch"]) == 0
    assert "no report" in document.read_text()


_UNREACHABLE = (
    "pip install -q --index-url https://download.pytorch.org/whl/cpu torch==2.5.* failed (1):\n"
    "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection "
    "broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: Failed to "
    "establish a new connection: [Errno -2] Name or service not known')': /whl/cpu/torch/\n"
    "ERROR: Cannot install torch==2.5.* because these package versions have conflicting dependencies.\n")


@pytest.mark.parametrize("message,reason", [
    (_UNREACHABLE, "failed (1): index unreachable ([Errno -2] Name or service not known) at /whl/cpu/torch/"),
    ("pip install -q keras==9.9.9 failed (1):\nsome output\nERROR: Could not find a version that satisfies the "
     "requirement keras==9.9.9 (from versions: 3.0.5)\nERROR: No matching distribution found for keras==9.9.9\n",
     "failed (1): Could not find a version that satisfies the requirement keras==9.9.9 (from versions: 3.0.5); "
     "No matching distribution found for keras==9.9.9"),
    ("torch-2.14.x: torch 2.14.1 is not the CPU build; remove x", "torch 2.14.1 is not the CPU build; remove x"),
], ids=["unreachable-index", "no-such-version", "cuda-torch"])
def test_history_an_env_that_does_not_build_says_why(message, reason):
    text = history.not_built(envs.EnvError(message))
    assert text.startswith("env not built: ") and text.endswith(reason), text
    assert "conflicting dependencies" not in text  # pip's resolver blames the find-links wheel, not the index


def test_history_an_env_that_does_not_build_is_an_error_row_with_the_reason(tmp_path, vectors, monkeypatch):
    def ensure(spec, cache, refresh=False):
        import time

        time.sleep(0.6)  # pip's retries: the row's seconds (rounded) are not 0
        (cache / spec.name / "bin").mkdir(parents=True)  # a half-built venv
        raise envs.EnvError(_UNREACHABLE)

    monkeypatch.setattr(envs, "ensure", ensure)
    monkeypatch.setattr(envs, "run_lanes", lambda *a, **k: pytest.fail("no lanes run without an env"))
    monkeypatch.setattr(history, "_entries_of", lambda a: [])
    monkeypatch.setattr(history, "_vectors", lambda: vectors)
    document = tmp_path / "H.md"
    assert history.main(["--out", str(tmp_path / "out"), "--write", str(document), "--cache", str(tmp_path / "c"),
                         "--discard", "torch==2.5.*"]) == 0
    assert not (tmp_path / "c" / "torch-2.5.x").exists()  # --discard: the failed build's leftovers too
    report = json.loads((tmp_path / "out" / "torch-2.5.x" / "torch.json").read_text())
    assert report["verdict"] == "ERROR" and "index unreachable" in report["errors"][0]
    rows = [line for line in document.read_text().splitlines() if line.startswith("| torch-2.5.x")]
    again = tmp_path / "again.md"  # --report-only rewrites the same rows, the failed build's seconds included
    assert history.main(["--report-only", "--out", str(tmp_path / "out"), "--write", str(again), "torch==2.5.*"]) == 0
    assert [line for line in again.read_text().splitlines() if line.startswith("| torch-2.5.x")] == rows
    table = [line for line in document.read_text().splitlines() if line.startswith("|")]
    row = next(line for line in table if line.startswith("| torch-2.5.x"))
    assert "ERROR: env not built: pip install" in row and "index unreachable" in row, row
    # no lane ran: header, separator and row still have the same columns (version, frameworks,
    # verdict, seconds), so the table renders
    header, separator = table[0], table[1]
    assert header == "| version | frameworks | gate, corpus | run verdict | seconds (wall, lanes) |"
    assert separator == "|---|---|---|---|---|"
    assert row.count(" | ") == header.count(" | ")


@pytest.mark.subprocess
def test_run_logged_prints_and_keeps_the_output_and_returns_the_status(tmp_path, capsys):
    import sys

    code = "import sys; print('to stdout'); print('Traceback ...', file=sys.stderr); sys.exit(3)"
    log = tmp_path / "lane.log"
    assert envs.run_logged([sys.executable, "-c", code], log) == 3
    assert sorted(log.read_text().splitlines()) == ["Traceback ...", "to stdout"]  # both streams
    assert "to stdout" in capsys.readouterr().out


def test_run_lanes_keeps_each_adapters_output_in_its_log(tmp_path, monkeypatch):
    spec = _spec("torch==2.6.*")
    env = envs.ensure(spec, tmp_path / "cache", installer=FakeInstaller(torch="2.6.0+cpu"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "torch.log").write_text("a previous run's")
    seen = []

    def run_logged(command, log_path):
        assert not log_path.exists()
        seen.append((command[command.index("--adapter") + 1], log_path))
        return 0

    monkeypatch.setattr(envs, "run_logged", run_logged)
    assert envs.run_lanes(spec, env, out, log=lambda line: None) == {"torch": 0, "torch-foreach": 0}
    assert seen == [("torch", out / "torch.log"), ("torch-foreach", out / "torch-foreach.log")]


def test_history_an_adapter_that_died_shows_the_exception_from_its_log(tmp_path, vectors, monkeypatch):
    spec = _spec("keras==3.0.5:jax")
    directory = tmp_path / "out" / spec.name
    directory.mkdir(parents=True)
    (directory / "keras-jax.json").write_text(json.dumps({"verdict": "ERROR", "lanes": [], "errors": [
        "adapter keras-jax: its process exited with code 1 while setting up of the float64 teacher lane"]}))
    (directory / "keras-jax.log").write_text(
        "Traceback (most recent call last):\n  File \"keras/src/utils/torch_utils.py\", line 3, in <module>\n"
        "    from packaging.version import parse\nModuleNotFoundError: No module named 'packaging'\n\n"
        "ERROR: 1 adapter process did not run to the end (nothing it did counts):\n")
    (directory / "seconds.json").write_text(json.dumps({"seconds": 9.0, "stamp": {"installed": {"keras": "3.0.5"}}}))
    monkeypatch.setattr(history, "_entries_of", lambda a: [])
    monkeypatch.setattr(history, "_vectors", lambda: vectors)
    document = tmp_path / "H.md"
    assert history.main(["--report-only", "--out", str(tmp_path / "out"), "--write", str(document),
                         "keras==3.0.5:jax"]) == 0
    row = next(line for line in document.read_text().splitlines() if line.startswith("| 3.0.5 |"))
    assert "| ERROR: `ModuleNotFoundError: No module named 'packaging'`; adapter keras-jax: its process" in row, row


def test_nightly_reports_compares_written_reports_and_runs_nothing(tmp_path, vectors, monkeypatch, capsys):
    vid = sorted(vectors)[0]
    pinned, nightly_dir = tmp_path / "keras-3.15.1-jax", tmp_path / "keras-nightly-jax"
    for directory, keras, status, spec in ((pinned, "3.15.1", "pass", "keras==3.15.1:jax"),
                                           (nightly_dir, NIGHTLY, "fail", "keras-nightly:jax")):
        directory.mkdir()
        (directory / "keras-jax.json").write_text(json.dumps(_report("keras-jax", {vid: status}, {"keras": keras})))
        (directory / "seconds.json").write_text(json.dumps({"seconds": 1.0, "stamp": {
            "spec": spec, "installed": {"keras-nightly" if "nightly" in spec else "keras": keras}}}))
    for name in ("ensure", "run_lanes"):
        monkeypatch.setattr(envs, name, lambda *a, **k: pytest.fail("--reports runs nothing"))
    monkeypatch.setattr(nightly.subprocess, "run", lambda *a, **k: pytest.fail("--reports runs nothing"))
    monkeypatch.setattr(nightly, "_vectors", lambda: vectors)
    assert nightly.main(["--backend", "jax", "--reports", str(pinned), str(nightly_dir)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"pinned: keras 3.15.1 ({pinned}; env stamp: keras==3.15.1:jax)"
    assert printed[1] == f"nightly: keras {NIGHTLY} ({nightly_dir}; env stamp: keras-nightly:jax)"
    assert f"UNEXPECTED: keras-jax float64 teacher cpu: {vid}: pass -> fail" in printed
    (nightly_dir / "keras-jax.json").unlink()  # a report missing: exit 2, nothing compared
    assert nightly.main(["--backend", "jax", "--reports", str(pinned), str(nightly_dir)]) == 2


# ----------------------------------------------------------------------------- ranges the history found
@pytest.mark.parametrize("keras,applies", [("3.6.0", False), ("3.11.3", False), ("3.12.0", True), ("3.15.1", True),
                                           (NIGHTLY, True)])
def test_keras_jax_float32_means_apply_from_3_12_only(keras, applies):
    """keras-team/keras#23223 on jax, as on torch: Keras 3.6.0 on jax 0.10.2 passes the spec on
    every float64 vector the jax-only models do not name (conformance/HISTORY.md), so the
    float32-means model applies from 3.12; the jax-only models apply everywhere."""
    entries = expectations.for_adapter("keras-jax", version_of=lambda name: {"keras": keras, "jax": "0.10.2"}.get(name))
    models = {e.model for e in entries if e.model}
    assert ("keras-float32-means-jax" in models) == applies
    assert {"keras-jax-stale-accumulators", "keras-jax-learning-rate-on-microsteps",
            "keras-jax-ema-overwrite-zero"} <= models


def test_history_compares_the_nightly_with_the_pinned_release_vector_by_vector(tmp_path, vectors, monkeypatch):
    a, b, c = sorted(vectors)[:3]
    entries = _entries(tmp_path, f"model keras-float32-ops-torch id={a} keras>=3.16.0.dev0  # the nightly\n")
    specs = [
        _history_run(tmp_path, "keras==3.12.0:torch", "3.12.0", {a: "pass", b: "pass", c: "pass"}),
        _history_run(tmp_path, "keras==3.15.1:torch", "3.15.1", {a: "pass", b: "pass", c: "pass"}),
        _history_run(tmp_path, "keras-nightly:torch", NIGHTLY,
                     {a: ("model", "keras-float32-ops-torch"), b: "fail", c: "pass"}),
    ]
    monkeypatch.setattr(envs, "pins", lambda *a: {"keras": "3.15.1"})
    monkeypatch.setattr(history, "_entries_of", entries)
    monkeypatch.setattr(history, "_vectors", lambda: vectors)
    monkeypatch.setattr("builtins.print", lambda *x, **k: None)
    document = tmp_path / "HISTORY.md"
    assert history.main(["--report-only", "--out", str(tmp_path / "out"), "--write", str(document), *specs]) == 0
    text = document.read_text()
    head = next(line for line in text.splitlines() if line.startswith("keras-nightly "))
    assert head.startswith(f"keras-nightly {NIGHTLY} against the pinned release 3.15.1 (constraints.txt)")
    assert f"--backend torch --reports {tmp_path / 'out' / 'keras-3.15.1-torch'} " in head  # not 3.12.0
    assert head.endswith("2 vectors or lanes changed, 1 not named by a versioned expectation (**UNEXPECTED**).")
    rows = [line for line in text.splitlines() if line.startswith("| keras-torch float64 teacher cpu |")]
    assert rows == ["| keras-torch float64 teacher cpu | pass -> model | 1 | "
                    "`keras-torch.txt:1: model keras-float32-ops-torch keras>=3.16.0.dev0` |",
                    "| keras-torch float64 teacher cpu | pass -> fail | 1 | **UNEXPECTED** |"], rows
    # without the pinned release's row there is nothing to compare with
    assert history.main(["--report-only", "--out", str(tmp_path / "out"), "--write", str(document), *specs[::2]]) == 0
    assert "against the pinned release" not in document.read_text()


def test_history_a_failing_run_says_what_most_failures_say(tmp_path, vectors, monkeypatch):
    ids = sorted(vectors)[:4]
    spec = _history_run(tmp_path, "keras==3.0.5:torch", "3.0.5", {i: "fail" for i in ids[:3]} | {ids[3]: "pass"})
    path = tmp_path / "out" / "keras-3.0.5-torch" / "keras-torch.json"
    report = json.loads(path.read_text())
    for o, reason in zip(report["lanes"][0]["outcomes"], ["raised AttributeError: no _iterations\n  Traceback",
                                                          "raised AttributeError: no _iterations\n  other",
                                                          "expected ValueError | at construction"]):
        o["reason"] = reason
    report["verdict"] = "DOES NOT CONFORM"
    report["run"] = {"gate": "1.1.0", "corpus": {"corpus_version": "2.3.0"}}  # what the row ran under
    path.write_text(json.dumps(report))
    monkeypatch.setattr(history, "_entries_of", lambda a: [])
    monkeypatch.setattr(history, "_vectors", lambda: vectors)
    document = tmp_path / "H.md"
    assert history.main(["--report-only", "--out", str(tmp_path / "out"), "--write", str(document), spec]) == 0
    row = next(line for line in document.read_text().splitlines() if line.startswith("| 3.0.5 |"))
    assert "| 1.1.0, 2.3.0 | DOES NOT CONFORM: 2 of the 3 failures: `raised AttributeError: no _iterations` |" in row, row
    assert history.main_failure({"lanes": [{"outcomes": [{"status": "fail", "reason": "a | b"}]}]}) == \
        "1 of the 1 failures: `a \\| b`"  # a table cell


def test_the_default_history_is_part_of_the_full_matrix_and_parses():
    assert set(history.SUBSET) <= set(history.FULL_MATRIX) and len(set(history.SUBSET)) == len(history.SUBSET)
    names = [envs.parse_spec(s, PINS).name for s in history.SUBSET]
    assert len(set(names)) == len(names)  # one env and one report directory each
    assert {f"keras-nightly:{b}" for b in envs.BACKENDS} <= set(history.SUBSET)  # the pre-release watch
