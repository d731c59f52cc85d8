"""The worked non-Python port (examples/node-port/): a plain-Node Adafactor written from
reference/SPEC.md and vectors/README.md alone conforms on all four Keras lanes (float64 and
float32, teacher and trajectory) through the results-file protocol, and a deliberately broken
copy of it does not.

Run time (2-core machine, CPU seconds): the four lanes about 10 (node 2.3, grading 7), the
broken copy about 3.5 (one lane). Needs ``node`` on PATH; without it the tests skip, saying so, unless ADAFACTOR_REQUIRE_NODE=1
(CI sets it), where a missing ``node`` is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.helpers import REPO, gate

pytestmark = pytest.mark.subprocess

PORT = REPO / "examples" / "node-port"
LANES = [(dtype, mode) for dtype in ("float64", "float32") for mode in ("teacher", "trajectory")]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("ADAFACTOR_REQUIRE_NODE") == "1":
            pytest.fail("node is not on PATH and ADAFACTOR_REQUIRE_NODE=1: the Node port cannot be graded")
        pytest.skip("node is not on PATH (set ADAFACTOR_REQUIRE_NODE=1 to make this a failure)")
    return node


def _run_port(node: str, out, *args) -> list:
    """``node run.js`` on the corpus; the results files it wrote."""
    done = subprocess.run([node, str(PORT / "run.js"), "--vectors", str(REPO / "vectors"), "--out", str(out), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"node run.js failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    files = [line for line in done.stdout.splitlines() if line.strip()]
    assert files, f"node run.js wrote no results file:\n{done.stdout}\n{done.stderr}"
    return files


def _grade(results: str, report) -> tuple[subprocess.CompletedProcess, dict]:
    done = gate("grade", "--results", results, "--json", report)
    assert os.path.exists(report), f"grade wrote no JSON report ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done, json.loads(open(report, encoding="utf-8").read())


@pytest.fixture(scope="module")
def node():
    return _node()


@pytest.mark.slow  # about 10 s of CPU: node 2.3 s for 133 vectors x 4 lanes, grading them 7 s
def test_the_node_port_conforms_on_all_four_keras_lanes(node, tmp_path):
    """One results file (schema version 2) with four lanes, one verdict; every error entry's
    message is graded too."""
    (results,) = _run_port(node, tmp_path / "results")
    document = json.loads(open(results, encoding="utf-8").read())
    assert document["schema_version"] == 2
    done, report = _grade(results, tmp_path / "report.json")
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert report["verdict"] == "CONFORMS" and report["conforms"], done.stdout[-3000:]
    assert not report["not_graded"] and not report["errors"], report
    graded = {}
    for lane in report["lanes"]:
        assert lane["counts"]["fail"] == 0, lane["counts"]
        assert lane["graded"] >= 128, (lane["dtype"], lane["mode"], lane["counts"])  # 133 less float32's skips
        graded[(lane["dtype"], lane["mode"])] = lane["graded"]
    assert sorted(graded) == sorted(LANES), graded


def test_a_broken_copy_of_the_node_port_does_not_conform(node, tmp_path):
    """beta_2 = 1 - t**(+0.8) instead of t**(-0.8): the second-moment decay sign flipped (one
    lane, written as a version-1 file, which the gate still grades)."""
    source = (PORT / "adafactor.js").read_text(encoding="utf-8")
    honest = "Math.pow(t, c.beta_2_decay)"
    assert source.count(honest) == 1, "the mutation site moved: update this test"
    broken = tmp_path / "adafactor.js"
    broken.write_text(source.replace(honest, "Math.pow(t, -c.beta_2_decay)"), encoding="utf-8")
    (results,) = _run_port(node, tmp_path / "results", "--adafactor", str(broken), "--dtype", "float64",
                           "--mode", "teacher", "--schema-version", "1")
    done, report = _grade(results, tmp_path / "report.json")
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert report["verdict"] == "DOES NOT CONFORM"
    (lane,) = report["lanes"]
    assert lane["graded"] > 100 and lane["counts"]["fail"] > 50, lane["counts"]
