"""The template port (examples/python-port): its own test suite, run as its CI runs it (pytest
in its directory, the conformance suite collected by the gate's plugin from its pyproject's
ini keys), passes; a copy with one wrong constant fails, with a reproduce line that
reproduces the failure."""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys

import pytest

import conformance
from conformance import expectations
from tests.helpers import REPO

TEMPLATE = REPO / "examples" / "python-port"
ADAPTER = "adafactor_port.conformance_adapter:PortAdapter"
#: The wrong constant of the broken copy: beta_2's decay exponent off by 0.1.
CORRECT = "beta = one - np.power(t, dt(self.beta_2_decay))"
BROKEN = "beta = one - np.power(t, dt(self.beta_2_decay - 0.1))"



def plugin_args() -> list:
    """``-p conformance.pytest_plugin`` unless the installed gate's entry point loads it."""
    installed = any(ep.value.strip() == "conformance.pytest_plugin"
                    for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "conformance.pytest_plugin"]


def port_env(root) -> dict:
    """The port's src/ importable (no pip install needed), before whatever PYTHONPATH holds."""
    path = os.pathsep.join(p for p in (str(root / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}


def pytest_in(root, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *plugin_args(), "-p", "no:cacheprovider", *args],
                          cwd=root, env=port_env(root), capture_output=True, text=True, timeout=600)


@pytest.mark.subprocess
@pytest.mark.slow
def test_the_template_ports_suite_passes_through_the_plugin():
    result = pytest_in(TEMPLATE, "-rN")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"adapter {ADAPTER} (adafactor_adapter (ini))" in out  # collected from the pyproject's ini keys
    assert f"expectations: {TEMPLATE / 'conformance-expectations.txt'}" in out
    summary = out.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed > 200 and " skipped" in summary and "failed" not in summary, summary


def test_the_template_expectation_file_skips_only_with_reasons():
    entries = expectations.parse(TEMPLATE / "conformance-expectations.txt")
    assert entries and all(e.verdict == "skip" and e.reason for e in entries)


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_broken_copy_of_the_template_fails_with_a_reproduce_line(tmp_path):
    port = tmp_path / "port"
    shutil.copytree(TEMPLATE, port, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    source = port / "src" / "adafactor_port" / "adafactor.py"
    text = source.read_text()
    assert text.count(CORRECT) == 1
    source.write_text(text.replace(CORRECT, BROKEN))

    result = pytest_in(port, "-q", "--adafactor-vectors", "shapes/defaults/", "--adafactor-dtypes", "float64",
                       "--adafactor-modes", "teacher")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    failing = [line for line in lines if line.startswith("FAIL adafactor-port float64 teacher: shapes/defaults/")]
    assert failing, result.stdout
    first = failing[0]
    reproduce = next(line for line in lines[lines.index(first):] if line.strip().startswith("reproduce: "))
    command = shlex.split(reproduce.split("reproduce: ", 1)[1])
    assert command[:5] == ["python", "-m", "conformance", "run", "--adapter"] and command[5] == ADAPTER
    assert command[command.index("--xfail-file") + 1] == str((port / "conformance-expectations.txt").resolve())

    rerun = subprocess.run([sys.executable, *command[1:]], cwd=port, env=port_env(port), capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    assert first in rerun.stdout.splitlines(), rerun.stdout
    assert "DOES NOT CONFORM" in rerun.stdout


def test_the_ci_workflow_pins_this_release_of_the_gate_and_runs_it_through_pytest():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((TEMPLATE / ".github" / "workflows" / "conformance.yml").read_text())
    gate = workflow["env"]["GATE"]
    assert gate == ("adafactor-conformance @ git+https://<host>/<org>/adafactor-conformance"
                    f"@v{conformance.__version__}")
    jobs = workflow["jobs"]
    runs = [step.get("run", "") for step in jobs["conformance"]["steps"]]
    assert any('pip install "$GATE"' in r for r in runs) and any(r.startswith("python -m pytest") for r in runs)
    submodule = [step.get("run", "") for step in jobs["conformance-submodule"]["steps"]]
    assert any("--adafactor-vectors-dir vendor/adafactor-conformance/vectors" in r for r in submodule)
