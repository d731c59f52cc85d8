"""What a user of the CLI reads: ``--version``, the gate and corpus identity in every
report, reproduce lines that rerun exactly what failed, the progress line on a terminal,
and ``--help`` text for every option."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

import conformance
from conformance import cli, corpus, runner
from tests.helpers import REPO, VECTORS, corpus as load_corpus

SHA = hashlib.sha256((VECTORS / "MANIFEST.json").read_bytes()).hexdigest()
BROKEN = "conformance.adapters.broken:ClipThresholdIgnored"


def _cli(*args, cwd=REPO, timeout=300):
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_version_prints_the_gate_and_the_corpus(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"adafactor-conformance {conformance.__version__}\n")
    identity = corpus.corpus_identity(VECTORS)
    assert identity["sha256"] == SHA and SHA in out and str(VECTORS) in out
    manifest = json.loads((VECTORS / "MANIFEST.json").read_text())
    assert identity["corpus_version"] == manifest.get("corpus_version")
    assert identity["vectors"] == manifest["total_vectors"]


def test_the_default_corpus_is_the_checkouts_when_no_package_copy_exists():
    assert corpus.default_vectors_dir() == VECTORS


def test_no_corpus_anywhere_is_a_usage_error_naming_where_it_looked(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(corpus, "CANDIDATES", (tmp_path / "a", tmp_path / "b"))
    assert cli.main(["list"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "no golden-vector corpus found" in err and str(tmp_path / "a") in err and "--vectors-dir" in err


@pytest.mark.subprocess
def test_every_report_records_the_gate_and_corpus_version(tmp_path):
    out_json, out_junit = tmp_path / "r.json", tmp_path / "r.xml"
    done = _cli("run", "--adapter", "reference", "--dtype", "float64", "--mode", "teacher",
                "--vectors", "defaults", "--json", str(out_json), "--junit", str(out_junit))
    assert done.returncode == 0, done.stderr
    header = done.stdout.split("\n\n")[0]
    assert f"Adafactor conformance gate {conformance.__version__}" in header and SHA in header
    run = json.loads(out_json.read_text())["run"]
    assert run["gate"] == conformance.__version__
    assert run["corpus"]["sha256"] == SHA and run["corpus"]["path"] == str(VECTORS)
    suites = ET.parse(out_junit).getroot().findall("testsuite")
    assert suites
    for suite in suites:
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["gate_version"] == conformance.__version__ and props["corpus_sha256"] == SHA


def test_an_exact_id_selects_one_vector_where_a_prefix_selects_several():
    documents = load_corpus()
    ids = [v.id for _, v in runner.select(documents, ["arguments/clipnorm"])]
    assert len(ids) > 1, ids
    assert [v.id for _, v in runner.select(documents, [f"={ids[0]}"])] == [ids[0]]
    assert runner.select(documents, ["=arguments/clipnorm"]) == []


def _reproduce_lines(text: str) -> list[str]:
    return [line.split("reproduce: ", 1)[1] for line in text.splitlines() if "reproduce: " in line]


@pytest.mark.subprocess
def test_a_reproduce_line_reruns_exactly_what_failed_on_a_custom_corpus(tmp_path):
    """A port's adapter (import spec), its own corpus copy and an expectation file: the
    printed command names all three and, run as printed from another directory, fails the
    same vector and only it."""
    vectors = tmp_path / "my vectors"
    shutil.copytree(VECTORS, vectors)
    xfail = tmp_path / "port-xfail.txt"
    xfail.write_text("skip id=arguments/clip_threshold/0.1 dtype=float64  # not ported yet\n")
    done = _cli("run", "--adapter", BROKEN, "--dtype", "float64", "--mode", "teacher", "--vectors-dir",
                str(vectors), "--xfail-file", str(xfail), "--vectors", "arguments/clip_threshold")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = _reproduce_lines(done.stdout)
    assert lines, done.stdout
    failed = re.findall(r"^FAIL \S+ float64 teacher: (\S+)", done.stdout, re.M)
    assert "arguments/clip_threshold/0.1" not in failed  # the xfail file's skip applied
    command = shlex.split(lines[0])
    assert command[:3] == ["python", "-m", "conformance"]
    assert BROKEN in command and str(vectors) in command and str(xfail) in command
    assert f"={failed[0]}" in command
    again = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 1, again.stdout + again.stderr
    assert re.findall(r"^FAIL \S+ float64 teacher: (\S+)", again.stdout, re.M) == [failed[0]]
    rows = [line for line in again.stdout.splitlines() if re.match(r"broken:\S+\s+float64\s+teacher\s+cpu", line)]
    assert len(rows) == 1 and rows[0].split()[4:7] == ["0", "0", "1"], rows  # pass, model, fail


def test_a_reproduce_line_leaves_out_the_default_corpus():
    from conformance.outcomes import LaneReport
    from conformance.report import reproduce_command

    lane = LaneReport("reference", "float32", "cpu", "trajectory", {}, 0.0, [])
    line = reproduce_command(lane, "defaults/x", vectors_dir=VECTORS)
    assert "--vectors-dir" not in line and "--vectors =defaults/x" in line
    assert "--adapter mypkg.port:Port" in reproduce_command(lane, "defaults/x", adapter_spec="mypkg.port:Port")


def _option_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for path, inner in _option_actions(sub):
                    yield f"{name} {path}", inner
        elif action.help is not argparse.SUPPRESS:
            yield "/".join(action.option_strings) or action.dest, action


def test_every_option_has_help_text():
    missing = [path for path, action in _option_actions(cli._parser()) if not action.help]
    assert missing == []


def test_help_states_the_exit_statuses_and_the_default_corpus(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for code in ("0  CONFORMS", "1  DOES NOT CONFORM", "2  ERROR", "3  NOTHING CHECKED"):
        assert code in out
    for command in ("run", "grade", "list"):
        option = next(a for a in cli._parser()._subparsers._group_actions[0].choices[command]._actions
                      if "--vectors-dir" in a.option_strings)
        assert str(VECTORS) in option.help


def _run_on_a_terminal(args, seconds=120) -> tuple[int, str]:
    """Run the CLI with standard error on a pseudo-terminal (standard output a pipe);
    returns (exit status, what the terminal received)."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "conformance", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=slave, env=env)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    return proc.returncode, seen.decode(errors="replace")


@pytest.mark.subprocess
def test_a_long_run_shows_a_progress_line_on_a_terminal_only(tmp_path):
    args = ["run", "--adapter", "reference", "--dtype", "float64,float32"]
    code, terminal = _run_on_a_terminal(args)
    assert code == 0, terminal
    assert re.search(r"\[\s*\d+ s\] 0/1 adapter processes done; reference float(64|32) (teacher|trajectory): "
                     r"(vector \d+ \(|setting up)", terminal), terminal[-2000:]
    assert "\x1b[K" in terminal
    piped = _cli(*args)
    assert piped.returncode == 0 and "adapter processes done" not in piped.stderr + piped.stdout
