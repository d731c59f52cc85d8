"""tools/scale.py at a small shape: the scale vector is a corpus vector like any other (it
validates through the loader and the CLI replays it), its packed form (.npy store, what the tool
grades at realistic sizes) holds the same arrays bit for bit, the reference's float32 lane
grades PASS on it, and deliberately broken ports FAIL on it: a step mistake in-process and the
local-shard mean on the sharded lane through the tool's own child processes."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.helpers import REPO, gate
from tools import scale

pytestmark = [pytest.mark.subprocess]  # the CLI and the tool start child processes

SHAPE = scale.TEST_SHAPE  # 64 x 96: both axes split over the 2x2 mesh


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return scale.write_corpus(tmp_path_factory.mktemp("scale-corpus"), [scale.make_case(SHAPE)])


@pytest.fixture(scope="module")
def loaded(corpus_dir):
    from conformance import vectorfile as vf

    documents = vf.load_corpus(corpus_dir, validate_schema=True)
    return list(vf.iter_vectors(documents))


def test_the_scale_vector_validates_through_the_loader(loaded):
    ((relative, vector),) = loaded
    assert relative == "keras/scale.json"
    assert vector.id == f"scale/{scale.shape_text(SHAPE)}" and vector.result == "valid"
    assert vector.shapes == (SHAPE,) and len(vector.steps) == scale.DEFAULT_STEPS
    assert {"FACTORED", "LONG_REDUCTION"} <= set(vector.flags)


def test_the_packed_store_holds_the_same_vector(loaded, tmp_path):
    (_, vector), = loaded
    scale.generate_store(tmp_path, [scale.make_case(SHAPE)])
    (_, packed), = scale.load_store(tmp_path)
    assert packed.id == vector.id and packed.flags == vector.flags and packed.config == vector.config
    for a, b in zip(packed.initial, vector.initial):
        assert a.dtype == b.dtype == np.float64 and a.tobytes() == b.tobytes()
    for kind, i, a in packed.initial_state.arrays():
        assert a.tobytes() == vector.initial_state.get(kind)[i].tobytes()
    for s, t in zip(packed.steps, vector.steps):
        assert all(g.tobytes() == h.tobytes() for g, h in zip(s.grads, t.grads))
        for kind, i, a in s.expected.arrays():
            assert a.tobytes() == t.expected.get(kind)[i].tobytes(), (s.index, kind)
        assert s.margins == t.margins and s.learning_rate == t.learning_rate


@pytest.mark.parametrize("mode", ["teacher", "trajectory"])
def test_reference_float32_passes_and_a_broken_port_fails(loaded, corpus_dir, mode):
    from conformance import runner
    from conformance.adapters.broken import BetaFromPreviousStep
    from conformance.adapters.reference import ReferenceAdapter
    from conformance.tolerance import Policy

    policy = Policy.load()
    honest = runner.run_lane(ReferenceAdapter(), loaded, corpus_dir, "float32", "cpu", mode, policy, [])
    assert [o.status for o in honest.outcomes] == ["pass"], honest.outcomes[0].reason
    assert honest.outcomes[0].worst_ratio < 0.5
    broken = runner.run_lane(BetaFromPreviousStep(), loaded, corpus_dir, "float32", "cpu", mode, policy, [])
    (outcome,) = broken.outcomes
    assert outcome.status == "fail" and outcome.first_bad_step == 2, outcome.reason  # t-1 = t at step 1
    assert np.isfinite(outcome.worst_ratio) and outcome.worst_ratio > 10


def test_the_cli_replays_the_scale_corpus(corpus_dir, tmp_path):
    """The path users take: python -m conformance run --vectors-dir on the written corpus."""
    out = tmp_path / "report.json"
    done = gate("run", "--adapter", "reference", "--vectors-dir", corpus_dir, "--dtype", "float32",
                "--json", out)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["verdict"] == "CONFORMS" and report["graded"] == 2  # teacher and trajectory


@pytest.mark.slow
@pytest.mark.framework  # keras-jax-sharded's program in a child process
def test_the_tool_grades_in_child_processes(tmp_path):
    """The tool end to end: the reference passes, the local-shard mean fails on the 2x2 mesh."""
    import subprocess

    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, "-m", "tools.scale", "--shape", scale.shape_text(SHAPE),
                           "--mode", "teacher", "--adapter", "reference",
                           "--expect-fail", "conformance.adapters.broken:LocalShardMean", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "GPU: none on this machine" in done.stdout or "GPU: present" in done.stdout
    rows = json.loads(out.read_text())
    verdicts = {(r["adapter"], r["vector"]): r["verdict"] for r in rows}
    tag = scale.shape_text(SHAPE)
    assert verdicts[("reference", f"scale/{tag}")] == "PASS"
    assert verdicts[("conformance.adapters.broken:LocalShardMean", f"scale/{tag}")] == "FAIL"
    assert all(r["ok"] for r in rows)
    assert all(r["peak_rss_mib"] > 0 and r["seconds"] > 0 for r in rows)


def test_the_budget_note_gives_the_scaled_budgets():
    """Beyond the corpus's reach a budget grows by sqrt(n / reach): the note the tool prints
    gives the table's budget and the factor for the scale shape."""
    from conformance.tolerance import Policy

    policy = Policy.load()
    note = scale.budget_note("float32", shape=(4096, 16384))
    reach = policy.reach_of("float32", "c")
    assert f"c {policy.teacher['float32']['c']:g} x{(4096 / reach) ** 0.5:.3g} (n 4096, reach {reach})" in note
    assert f"variables {policy.teacher['float32']['variables']:g} x" in note
    small = scale.budget_note("float32", shape=(2, 3))
    assert " x" not in small.split(": ", 1)[1]


def test_shape_parsing():
    assert scale.parse_shape("4096x16384") == (4096, 16384)
    with pytest.raises(Exception):
        scale.parse_shape("4096")


@pytest.mark.slow  # 16384 x 64: the generator and a float32 replay, about 20 s
def test_the_honest_float32_lane_stays_within_c_budget_on_16384_rows(tmp_path):
    """NumPy's float32 mean over axis -2 adds the rows one after another: 49 eps over 16384 rows
    against c's flat 25.11, derived on means of at most 640 rows. Under the length-scaled
    budget (TOLERANCES.md, "Long reductions") the honest lane passes with room to spare."""
    from conformance import runner
    from conformance.adapters.reference import ReferenceAdapter
    from conformance.tolerance import Policy

    scale.generate_store(tmp_path, [scale.make_case((16384, 64))])
    lane = runner.run_lane(ReferenceAdapter(), scale.load_store(tmp_path), tmp_path, "float32", "cpu", "teacher",
                           Policy.load(), [])
    (outcome,) = lane.outcomes
    assert outcome.status == "pass", outcome.reason
    assert max(outcome.curve["c"]) > Policy.load().teacher["float32"]["c"]  # beyond the flat budget
    assert outcome.worst_ratio < 0.5
