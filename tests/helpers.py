"""What several test modules share, so that none keeps its own copy: the repository's
paths, the corpus loaded once per test process, the normwise error, running one vector or
one lane of the gate in-process, the gate's CLI in a subprocess, building a vector from
explicit inputs, and bit-level array assertions.

The corpus objects are shared by every test of the process and read-only
(``conformance.vector.Vector``, its decoded arrays cached); to damage a vector, re-wrap a
copy of its JSON: ``as_vector(copy.deepcopy(v.raw), file=v.file, dialect=v.dialect)``. The ``corpus`` and ``corpus_vectors``
fixtures of tests/conftest.py return the same objects as ``corpus()`` and
``corpus_vectors()``; use the functions where a parametrisation needs the corpus at
collection time.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "vectors"


# ----------------------------------------------------------------------------- the corpus
@functools.lru_cache(maxsize=None)
def corpus() -> dict:
    """``vectorfile.load_corpus(vectors/)``: ``{relative path: document}``, loaded (and
    validated) once per process."""
    from conformance import vectorfile as vf

    return vf.load_corpus(VECTORS)


@functools.lru_cache(maxsize=None)
def corpus_vectors() -> tuple:
    """Every vector of the corpus as ``(relative path, vector)``, in file order."""
    from conformance import vectorfile as vf

    return tuple(vf.iter_vectors(corpus()))


def vector(vector_id: str):
    """``(relative path, vector)`` of the corpus vector ``vector_id``; a ``KeyError``
    naming the id when the corpus has none."""
    for relative, candidate in corpus_vectors():
        if candidate["id"] == vector_id:
            return relative, candidate
    raise KeyError(f"no vector {vector_id!r} in {VECTORS}")


def select(patterns=(), flags=()) -> list:
    """``runner.select`` on the shared corpus: ``(relative path, vector)`` of the vectors
    whose id matches one of ``patterns`` (prefix or fnmatch; all when empty) and that carry
    every flag of ``flags``."""
    from conformance import runner

    return runner.select(corpus(), patterns, flags)


# ----------------------------------------------------------------------------- comparison
def normwise(actual, golden, dtype: str = "float64") -> float:
    """``metrics.relative_error(actual, golden)`` (max|a - g| / max|g|, arrays or
    equal-length lists of arrays; special values as the gate compares them) in epsilons of
    ``dtype``."""
    from conformance import metrics

    return metrics.relative_error(actual, golden) / metrics.EPSILON[dtype]


def f64(values) -> np.ndarray:
    """``values`` as a float64 array."""
    return np.array(values, dtype=np.float64)


def assert_bitwise(a, b) -> None:
    """Same dtype, same shape, same bytes (NaN payloads and the sign of zero included)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), f"\n{a!r}\n{b!r}"


# ----------------------------------------------------------------------------- the gate in-process
def run_vector(adapter, relative: str, vector, dtype: str = "float64", mode: str = "teacher",
               policy=None, entries=(), device: str = "cpu", directory: Path = VECTORS):
    """``runner.run_vector`` on one vector of file ``relative`` (under ``directory``), with
    the derived tolerance policy unless ``policy`` is given; returns its VectorOutcome."""
    from conformance import runner
    from conformance.tolerance import Policy

    policy = Policy.load() if policy is None else policy
    return runner.run_vector(adapter, vector, f"{directory}/{relative}", dtype, device, mode, policy,
                             list(entries))


def run_lane(adapter, vectors, dtype: str = "float64", mode: str = "teacher", policy=None, entries=(),
             device: str = "cpu", directory: Path = VECTORS):
    """``runner.run_lane`` over ``vectors`` (``(relative path, vector)`` pairs of files
    under ``directory``); returns the LaneReport."""
    from conformance import runner
    from conformance.tolerance import Policy

    policy = Policy.load() if policy is None else policy
    return runner.run_lane(adapter, list(vectors), directory, dtype, device, mode, policy, list(entries))


# ----------------------------------------------------------------------------- the gate's CLI
def gate(*args, env: dict | None = None, timeout: float = 300, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m conformance ARGS`` in a subprocess (from the repository root unless
    ``cwd``), text output captured; ``env`` is added to this process's environment."""
    return subprocess.run([sys.executable, "-m", "conformance", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


# ----------------------------------------------------------------------------- building vectors
#: A Python script that runs the gate with the arguments it is given and a JSON report in a
#: temporary directory; it prints the gate's output, then the report on a line of its own after
#: "REPORT ", and exits as the gate did. For background jobs (tests/background.py) that need
#: both the console output and the report: read them with ``gate_report``.
GATE_WITH_REPORT = r"""
import pathlib, subprocess, sys, tempfile
with tempfile.TemporaryDirectory() as d:
    out = pathlib.Path(d) / "report.json"
    done = subprocess.run([sys.executable, "-m", "conformance", "run", *sys.argv[1:], "--json", str(out)],
                          capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    print("\nREPORT " + (" ".join(out.read_text().split()) if out.exists() else "null"))
sys.exit(done.returncode)
"""


def gate_report(proc) -> dict:
    """The JSON report a ``GATE_WITH_REPORT`` run printed (fails naming its output when none)."""
    import json

    report = json.loads(proc.stdout.rsplit("\nREPORT ", 1)[1])
    assert report is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    return report


def lane_outcomes(report: dict, dtype: str, mode: str) -> dict:
    """{vector id: outcome} of the one lane of ``report`` with that dtype and mode."""
    (lane,) = [lane for lane in report["lanes"] if (lane["dtype"], lane["mode"]) == (dtype, mode)]
    return {o["id"]: o for o in lane["outcomes"]}


def assert_every_lane_conforms(proc, lanes: set, at_least: int) -> dict:
    """A gate run that CONFORMS on exactly ``lanes`` ({(dtype, mode)}), each with no fail or
    xpass, at least ``at_least`` vectors graded pass or model and no unused expectation;
    returns its report."""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "CONFORMS" in proc.stdout and "DOES NOT CONFORM" not in proc.stdout
    report = gate_report(proc)
    assert report["verdict"] == "CONFORMS" and report["conforms"] and not report["errors"]
    assert {(lane["dtype"], lane["mode"]) for lane in report["lanes"]} == lanes
    for lane in report["lanes"]:
        counts = lane["counts"]
        assert counts["fail"] == 0 and counts["xpass"] == 0, counts
        assert counts["pass"] + counts["model"] >= at_least, (lane["dtype"], lane["mode"], counts)
        assert not lane.get("unused_expectations"), lane["unused_expectations"]
    return report


def installed_or_skip(requires, hint: str) -> None:
    """Skip, naming the module and how to install it, unless every module is importable."""
    import importlib.util

    import pytest

    for module in requires:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed ({hint})")


def build_vector(config: dict, initial, grads, steps: int | None = None, vector_id: str = "regression/probe",
                 names=None, dialect: str = "keras"):
    """The golden vector the generator writes for explicit inputs: ``initial`` (one array
    per variable) and ``grads`` (per step, one array or None per variable), Keras
    arguments ``config``; ``steps`` defaults to ``len(grads)``, variable names to
    ``dense/kernel``, ``dense/kernel_1``, ..."""
    from conformance.generator import generate_vector
    from conformance.generator.case import Case

    initial = [np.asarray(a, dtype=np.float64) for a in initial]
    names = names or ["dense/kernel" + ("" if i == 0 else f"_{i}") for i in range(len(initial))]
    if len(names) != len(initial):
        raise ValueError(f"{len(names)} names for {len(initial)} variables: {names!r}")
    case = Case(id=vector_id, description="built by tests/helpers.build_vector", config=config,
                variables=tuple((name, np.shape(a)) for name, a in zip(names, initial)),
                steps=len(grads) if steps is None else steps, inputs=(initial, grads), dialect=dialect)
    return generate_vector(case)
