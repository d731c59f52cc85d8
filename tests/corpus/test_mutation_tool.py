"""tools/mutation.py (`make mutation`): cosmic-ray's mutants, tested on a private copy of the
tree; the tree is never modified, also when the run is interrupted; the report is written
atomically and every survivor must be explained. The real run (every mutant through the gate)
takes half an hour or more and is not part of the test suite; these tests stand a shell command
in for the gate."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("cosmic_ray", reason="the `mutation` extra (cosmic-ray) is not installed")

from tools import mutation  # noqa: E402
from tools.mutation_equivalents import ACCEPTABLE_ONLY, EQUIVALENT, PENDING, Explanation  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SMALL = "reference/reductions.py"


@pytest.fixture()
def tree(tmp_path):
    """A copy of what the gate needs, standing in for the repository."""
    root = tmp_path / "tree"
    for name in mutation.COPIED:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def _digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run(tree, tmp_path, command, *extra):
    return mutation.main(["--tree", str(tree), "--sources", SMALL, "--test-command", command,
                          "--report", str(tmp_path / "MUTATION.md"), "--out", str(tmp_path / "out"), *extra])


def test_every_mutant_killed(tree, tmp_path):
    before = _digest(tree)
    assert _run(tree, tmp_path, "false") == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["mutants"] and all(m["outcome"] == "killed" for m in results["mutants"])
    report = (tmp_path / "MUTATION.md").read_text()
    assert "| mutants | killed |" in report and "100.0 %" in report
    assert _digest(tree) == before, "the tree was modified"
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"


def test_resume_carries_kills_and_retests_the_rest(tree, tmp_path):
    assert _run(tree, tmp_path, "false") == 0
    first = tmp_path / "first.json"
    (tmp_path / "out" / "results.json").rename(first)
    # a resumed run re-tests nothing that was killed: the command would let every mutant survive
    assert _run(tree, tmp_path, "true", "--resume", str(first)) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["meta"]["carried"] == len(results["mutants"]) > 0
    assert "carried over from a complete run" in (tmp_path / "MUTATION.md").read_text()


def test_unexplained_survivor_fails_and_is_listed(tree, tmp_path):
    assert _run(tree, tmp_path, "true") == 1
    report = (tmp_path / "MUTATION.md").read_text()
    section = report.split("## Survivors without an explanation")[1].split("## ")[0]
    assert "`reference/reductions.py:" in section and "**unexplained**" in section


def test_mutants_are_real_and_applied_to_the_copy_only(tree, tmp_path):
    """The test command sees the mutated file in the copy (it differs from the tree's)."""
    original = (tree / SMALL).read_bytes()
    marker = tmp_path / "seen"
    command = f"cmp -s {SMALL} {tree / SMALL} || echo differs >> {marker}; true"
    _run(tree, tmp_path, command, "--limit", "3")
    assert marker.read_text().count("differs") == 3
    assert (tree / SMALL).read_bytes() == original


def test_interrupted_run_leaves_the_tree_alone(tree, tmp_path):
    before = _digest(tree)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.mutation", "--tree", str(tree), "--sources", SMALL,
         "--test-command", "sleep 60", "--report", str(tmp_path / "MUTATION.md"), "--out", str(tmp_path / "out")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workspace = None
    deadline = time.time() + 120
    for line in proc.stdout:
        if line.startswith("working on a copy in "):
            workspace = Path(line.split(" in ", 1)[1].strip())
        if "mutants of" in line:
            break
        assert time.time() < deadline
    time.sleep(2)  # a mutant is in place in the copy, its test running
    assert workspace is not None and (workspace / SMALL).read_bytes() != (tree / SMALL).read_bytes()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    assert _digest(tree) == before
    assert not workspace.exists(), "the copy was not removed"
    assert not (tmp_path / "MUTATION.md").exists() and not (tmp_path / "out").exists()


def test_classification_by_scope_and_text(monkeypatch):
    code = "def f(x):\n    return x + 1\n\n\ndef g(x):\n    return x + 1\n"
    scopes = mutation._scopes(code)
    assert mutation._scope_of(scopes, 2) == "f" and mutation._scope_of(scopes, 6) == "g"
    assert mutation._changed_lines(code, code.replace("x + 1\n\n", "x - 1\n\n")) == (2, "return x + 1",
                                                                                     "return x - 1")
    survived = [mutation.Mutant("a.py", "core/X", 0, 2, "f", "return x + 1", "return x - 1", outcome="survived"),
                mutation.Mutant("a.py", "core/X", 1, 6, "g", "return x + 1", "return x - 1", outcome="survived"),
                mutation.Mutant("a.py", "core/X", 2, 6, "g", "return x + 1", "return x * 1", outcome="killed")]
    import tools.mutation_equivalents as table

    monkeypatch.setattr(table, "EQUIVALENT", [Explanation("a.py", "f", "return  x + 1", "return x - 1", "why")])
    monkeypatch.setattr(table, "PENDING", [Explanation("a.py", "h", "y", "z", "gone")])
    monkeypatch.setattr(table, "ACCEPTABLE_ONLY", [])
    groups = mutation.classify(survived)
    assert [m.scope for m, _ in groups["equivalent"]] == ["f"]
    assert [m.scope for m, _ in groups["unexplained"]] == ["g"]
    assert groups["stale"] == [("a.py", "h", "y", "z", 0)]


def test_explanations_are_unique_and_justified():
    keys = [(e.file, e.scope, mutation._norm(e.original), mutation._norm(e.mutated), e.nth)
            for e in EQUIVALENT + PENDING]
    assert len(keys) == len(set(keys))
    assert all(e.why.strip() and e.file in mutation.SOURCES for e in EQUIVALENT + PENDING + ACCEPTABLE_ONLY)


def test_committed_report_matches_the_explanations():
    """reference/MUTATION.md is the output of a complete run; every survivor in it is explained
    and no non-equivalent mutant is left unexplained."""
    report = (REPO / "reference" / "MUTATION.md").read_text()
    assert "## Survivors without an explanation" in report
    section = report.split("## Survivors without an explanation")[1].split("\n## ")[0]
    assert "None." in section, "reference/MUTATION.md lists unexplained survivors"
