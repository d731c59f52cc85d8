"""The gate as a package: the wheel and the sdist carry every module, the corpus and the
spec, run from outside the repository with only the declared runtime dependencies, and say
which gate and corpus they are.

The wheel is built once per test session (without build isolation: the venv's setuptools, no
network) from a copy of the package sources, and installed with ``pip install --target`` into
a temporary directory; the tests run it with this venv's Python from a directory outside the
repository, ``PYTHONPATH`` pointing at the install (it comes before the editable install's
finder), and a ``sitecustomize`` that refuses to import the optional dependencies (scipy,
jsonschema, hypothesis, matplotlib, pytest's plugin aside, every framework) so that a hidden
dependency fails here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO, VECTORS

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

#: What the package is built from (pyproject.toml's packages and package-dir).
SOURCES = ("pyproject.toml", "README.md", "reference", "conformance", "vectors")
#: Top-level modules the installed gate must run without (extras and frameworks).
OPTIONAL = ("scipy", "jsonschema", "hypothesis", "matplotlib", "mpmath", "torch", "jax", "jaxlib", "tensorflow",
            "keras", "optax", "transformers", "tools", "tests")

BLOCKER = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is an optional dependency, blocked by test_packaging", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def _build(kind: str, out: Path, sources: Path) -> Path:
    code = (f"import sys; from setuptools import build_meta as b; "
            f"print(b.build_{kind}({str(out)!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=sources, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel, sdist, install dir, a run function for the installed gate)."""
    root = tmp_path_factory.mktemp("package")
    sources = root / "src"
    sources.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = REPO / name
        (shutil.copytree(path, sources / name, ignore=ignore) if path.is_dir() else shutil.copy2(path, sources / name))
    dist = root / "dist"
    dist.mkdir()
    wheel = _build("wheel", dist, sources)
    sdist = _build("sdist", dist, sources)
    target = root / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    custom = root / "custom"
    custom.mkdir()
    (custom / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(OPTIONAL)))
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()

    def run(*args, timeout=300):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = os.pathsep.join([str(target), str(custom)])
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=timeout)

    return wheel, sdist, target, run


def test_the_wheel_carries_every_module_the_corpus_and_the_spec(built):
    wheel, _, _, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in REPO.joinpath("conformance").rglob("*.py"):
        assert f"conformance/{path.relative_to(REPO / 'conformance').as_posix()}" in names, path
    for path in REPO.joinpath("reference").rglob("*.py"):
        assert f"reference/{path.relative_to(REPO / 'reference').as_posix()}" in names, path
    corpus = [p for p in VECTORS.rglob("*.json")]
    assert corpus
    for path in corpus:
        assert f"conformance/vectors/{path.relative_to(VECTORS).as_posix()}" in names, path
    for doc in ("reference/SPEC.md", "conformance/README.md", "conformance/TOLERANCES.md", "conformance/tolerances.json"):
        assert doc in names, doc
    assert not any(n.startswith(("tools/", "tests/")) for n in names), "repository tooling is not installed"


def test_the_sdist_carries_the_corpus_and_the_spec(built):
    _, sdist, _, _ = built
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert "vectors/MANIFEST.json" in names and "reference/SPEC.md" in names
    assert {f"vectors/{p.relative_to(VECTORS).as_posix()}" for p in VECTORS.rglob("*.json")} <= names


def test_runtime_dependencies_are_only_what_the_gate_needs(built):
    wheel, _, _, _ = built
    with zipfile.ZipFile(wheel) as z:
        metadata = next(z.read(n).decode() for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    required = sorted(re.split(r"[<>=!~ ;\[]", line.split(":", 1)[1].strip())[0]
                      for line in metadata.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert required == ["ml_dtypes", "numpy", "tabulate"]
    assert "Version: 1.2.0" in metadata or re.search(r"^Version: \d", metadata, re.M)


def test_the_installed_gate_runs_the_reference_from_anywhere(built, tmp_path):
    _, _, target, run = built
    where = run("-c", "import conformance, reference; print(conformance.__file__); print(reference.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(target)) for line in where.stdout.split()), where.stdout
    report = tmp_path / "report.json"
    done = run("-m", "conformance", "run", "--adapter", "reference", "--dtype", "float64,float32",
               "--json", str(report))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "CONFORMS" in done.stdout
    data = json.loads(report.read_text())
    assert data["conforms"] and len(data["lanes"]) == 4 and data["graded"] > 1000
    assert data["run"]["corpus"]["path"] == str(target / "conformance" / "vectors")
    listing = run("-m", "conformance", "list", "--vectors", "arguments/clipnorm")
    assert listing.returncode == 0 and "arguments/clipnorm" in listing.stdout, listing.stderr


def test_version_names_the_gate_and_the_corpus_it_carries(built):
    _, _, target, run = built
    done = run("-m", "conformance", "--version")
    assert done.returncode == 0, done.stderr
    import conformance

    manifest = target / "conformance" / "vectors" / "MANIFEST.json"
    sha = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert done.stdout.startswith(f"adafactor-conformance {conformance.__version__}\n")
    assert sha in done.stdout and str(manifest.parent) in done.stdout
    assert sha == hashlib.sha256((VECTORS / "MANIFEST.json").read_bytes()).hexdigest()


def test_the_installed_gate_without_its_corpus_says_where_it_looked(built, tmp_path):
    _, _, target, run = built
    moved = tmp_path / "moved"
    shutil.move(target / "conformance" / "vectors", moved)
    try:
        done = run("-m", "conformance", "list")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "no golden-vector corpus found" in done.stderr and "--vectors-dir" in done.stderr
        given = run("-m", "conformance", "list", "--vectors-dir", str(moved), "--vectors", "defaults")
        assert given.returncode == 0, given.stderr
    finally:
        shutil.move(moved, target / "conformance" / "vectors")
