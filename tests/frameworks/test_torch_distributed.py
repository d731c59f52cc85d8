"""The torch distributed lanes (conformance/adapters/torch_distributed.py): torch.optim.Adafactor on
DTensor parameters over gloo ranks that each lane starts itself.

* Replicate() is the single-device torch lane bit for bit, and the gate grades it PASS.
* Shard(0) names torch's RuntimeError with xfails (conformance/expectations/torch-dtensor-shard0.txt):
  every vector with a factored variable split along a factored axis raises it; the vectors that
  run are silently wrong (DTensor ``.item()`` of a partial norm is the local shard's norm) and
  FAIL: the lane DOES NOT CONFORM on torch 2.13.0.
* Without the expectation file, the gate sees both torch failures: that RuntimeError (with the
  torch file:line) and the silent one.
* A port that reduces over its local shard only (``LocalShardMean``) fails every vector on which
  the reduction matters; the same port with the reductions done right (``OutOfPlacePort``)
  conforms under Shard(0), so the xfails are torch's in-place ops, not DTensor.

Each gate run is its own process (it starts 2 gloo ranks), started early on the other core
(tests/background.py); this process imports no torch.distributed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile

import pytest

from conformance.adapters.torch_distributed_worker import is_split, split_dims
from tests import background
from tests.helpers import REPO

pytestmark = [pytest.mark.framework, pytest.mark.subprocess]

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
MODULE = "conformance.adapters.torch_distributed"


def _report(name: str) -> str:
    """The JSON report path of job ``name`` (per pytest process, so that runs do not clash)."""
    return os.path.join(tempfile.gettempdir(), f"adafactor-test-{os.getpid()}-{name}.json")


def _gate_job(name: str, cls: str, *args: str) -> background.Job:
    out = _report(name)
    return background.Job(name, [sys.executable, "-m", "conformance", "run", "--adapter", f"{MODULE}:{cls}",
                                 "--json", out, *args], cwd=REPO, timeout=900, fixtures=(name.replace("-", "_"),),
                          requires=("torch",))


def _outcomes(path: str) -> dict:
    """{(dtype, mode): {vector id: (status, reason)}} of a gate's JSON report."""
    report = json.loads(open(path, encoding="utf-8").read())
    return {(lane["dtype"], lane["mode"]): {o["id"]: (o["status"], o.get("reason") or "") for o in lane["outcomes"]}
            for lane in report["lanes"]}


def _ids(lane: dict, *statuses: str) -> set:
    return {i for i, (status, _) in lane.items() if status in statuses}


FLOAT64_TEACHER = ("--dtype", "float64", "--mode", "teacher", "--vectors", "torch/")
REPLICATE = _gate_job("dtensor-replicate", "TorchDTensorAdapter", "--dtype", "float64,float32", "--mode",
                      "teacher,trajectory", "--vectors", "torch/")
SHARD0 = _gate_job("dtensor-shard0", "TorchDTensorShard0Adapter", *FLOAT64_TEACHER)
BARE_SHARD0 = _gate_job("dtensor-bare-shard0", "BareShard0", "--dtype", "float64", "--mode", "teacher",
                        "--vectors", "torch/shapes/,torch/arguments/foreach/")
LOCAL_SHARD = _gate_job("dtensor-local-shard", "LocalShardMean", *FLOAT64_TEACHER)
OUT_OF_PLACE = _gate_job("dtensor-out-of-place", "OutOfPlacePort", *FLOAT64_TEACHER, "--xfail-file",
                         str(REPO / "conformance" / "expectations" / "torch-dtensor-replicate.txt"))

IDENTICAL_SCRIPT = r'''
import numpy as np
from conformance import vectorfile as vf, replay
from conformance.adapters.torch_adapter import TorchAdapter
from conformance.adapters.torch_distributed import TorchDTensorAdapter
single, dist = TorchAdapter(), TorchDTensorAdapter()
same = steps = 0
for _, v in vf.iter_vectors(vf.load_corpus("vectors")):
    from conformance.vector import as_vector
    v = as_vector(v)
    if v.dialect != "torch" or v.result == "invalid":
        continue
    for dtype in ("float64", "float32"):
        a, b = single.create(v, dtype, "cpu"), dist.create(v, dtype, "cpu")
        for step in v.steps:
            grads = [g.astype(dtype) for g in replay.decode_grads(v, step)]
            a.step(grads); b.step(grads)
            sa, sb = a.read(), b.read()
            for (ka, ia, xa), (kb, ib, xb) in zip(sa.arrays(), sb.arrays()):
                assert (ka, ia) == (kb, ib) and xa.dtype == xb.dtype, (v.id, ka, ia)
                assert np.array_equal(xa.reshape(-1).view(np.uint8), xb.reshape(-1).view(np.uint8)), (v.id, dtype, ka, ia)
            steps += 1
        same += 1
        b.close()
print("IDENTICAL", same, steps)
'''
IDENTICAL = background.Job("dtensor-replicate-identical", [sys.executable, "-c", IDENTICAL_SCRIPT], cwd=REPO,
                           timeout=600, fixtures=("dtensor_identical",), requires=("torch",))


@pytest.fixture(scope="module")
def dtensor_replicate():
    return REPLICATE.result()


@pytest.fixture(scope="module")
def dtensor_shard0():
    return SHARD0.result()


@pytest.fixture(scope="module")
def dtensor_bare_shard0():
    return BARE_SHARD0.result()


@pytest.fixture(scope="module")
def dtensor_local_shard():
    return LOCAL_SHARD.result()


@pytest.fixture(scope="module")
def dtensor_out_of_place():
    return OUT_OF_PLACE.result()


@pytest.fixture(scope="module")
def dtensor_identical():
    return IDENTICAL.result()


def _tail(done) -> str:
    return done.stdout[-4000:] + done.stderr[-2000:]


def test_split_dims_split_where_every_rank_gets_an_element():
    assert split_dims((5, 3), "shard0", (2,)) == [0]          # 3 + 2 rows
    assert split_dims((5, 3), "shard-1", (2,)) == [1]         # 2 + 1 columns
    assert split_dims((1, 5), "shard0", (2,)) == [None]       # one row cannot split
    assert split_dims((2, 3, 5), "shard0", (2,)) == [0]       # the batch axis
    assert split_dims((7,), "shard-1", (2,)) == [0]
    assert split_dims((), "shard0", (2,)) == [None]
    assert split_dims((5, 3), "2d", (2, 2)) == [0, 1]
    assert split_dims((5, 1), "2d", (2, 2)) == [None, None]   # both axes or neither
    assert split_dims((7,), "2d", (2, 2)) == [None, None]
    assert split_dims((5, 3), "replicate", (2,)) == [None] and not is_split([None])


@needs_torch
@pytest.mark.slow
def test_replicate_is_the_single_device_result_bit_for_bit(dtensor_identical):
    done = dtensor_identical
    assert done.returncode == 0, _tail(done)
    # 47 valid/acceptable torch vectors x float64, float32, every step compared bit for bit.
    assert done.stdout.split()[-3:] == ["IDENTICAL", "94", "698"], _tail(done)


@needs_torch
@pytest.mark.slow
def test_replicate_lane_grades_pass(dtensor_replicate):
    done = dtensor_replicate
    assert done.returncode == 0, _tail(done)
    assert "placement=Replicate()" in done.stdout and "2 ranks (gloo, init_method=file://" in done.stdout
    lanes = _outcomes(_report("dtensor-replicate"))
    assert sorted(lanes) == [("float32", "teacher"), ("float32", "trajectory"), ("float64", "teacher"),
                             ("float64", "trajectory")]
    for lane, outcomes in lanes.items():
        # Every torch vector passes in float64; in float32, as in the single-device torch lane, the
        # gate skips 5 (EPS1_DTYPE_DEFAULT_BINDS, the float32 square overflow) and inf_gradient
        # deviates on an acceptable vector.
        assert _ids(outcomes, "fail", "xfail", "xpass", "model") == set(), (lane, outcomes)
        if lane[0] == "float64":
            assert len(_ids(outcomes, "pass")) == 53 and not _ids(outcomes, "acceptable"), lane
        else:
            assert len(_ids(outcomes, "pass")) == 47 and len(_ids(outcomes, "skip")) == 5, lane
            assert _ids(outcomes, "acceptable") == {"torch/special_values/inf_gradient"}, lane


@needs_torch
@pytest.mark.slow
def test_shard0_lane_names_the_runtime_error_and_fails_the_silent_error(dtensor_shard0):
    """Shard(0) on torch 2.13.0: the RuntimeError is a named xfail; the silently wrong
    vectors (each rank's local norm) are graded and FAIL, so the lane DOES NOT CONFORM: no
    skip hides them."""
    done = dtensor_shard0
    assert done.returncode == 1, _tail(done)
    assert "DOES NOT CONFORM" in done.stdout
    lane = _outcomes(_report("dtensor-shard0"))[("float64", "teacher")]
    xfail = _ids(lane, "xfail")
    assert len(xfail) == 36 and all(lane[i][1].startswith("(1)") for i in xfail), lane
    assert all("torch/optim/_adafactor.py:399" in lane[i][1] and "_ops/utils.py:670" in lane[i][1] for i in xfail)
    assert _ids(lane, "pass") == {i for i in lane if i.startswith("torch/invalid/")}
    assert _ids(lane, "fail") == {
        f"torch/shapes/{c}/{s}" for c in ("defaults", "lr_0.5") for s in ("vector", "3d", "4d")}
    assert _ids(lane, "skip") == {
        "torch/shapes/defaults/scalar", "torch/shapes/lr_0.5/scalar", "torch/shapes/defaults/row",
        "torch/shapes/lr_0.5/row", "torch/shapes/long/last_axis_1024"}


@needs_torch
@pytest.mark.slow
def test_without_the_file_both_torch_failures_show(dtensor_bare_shard0):
    """The RuntimeError the xfails name, with torch's file:line, and the silent local-norm
    error the file leaves to fail (1e12+ eps at step 1): if either changes, the file must too."""
    done = dtensor_bare_shard0
    assert done.returncode == 1, _tail(done)
    lane = _outcomes(_report("dtensor-bare-shard0"))[("float64", "teacher")]
    raised = {i for i, (s, r) in lane.items() if s == "fail" and r.startswith("raised RuntimeError")}
    assert raised == {f"torch/shapes/{c}/{s}" for c in ("defaults", "lr_0.5") for s in ("square", "tall", "wide",
                                                                                         "column")} | {
        "torch/arguments/foreach/true", "torch/arguments/foreach/true_weight_decay"}, lane
    single = lane["torch/shapes/defaults/square"][1]
    assert "aten.pow_.Scalar: in-place operations that require placement changes are not supported" in single
    assert "(_NormPartial(2),)" in single
    assert "torch/distributed/tensor/_ops/utils.py:670 <- torch/distributed/tensor/_dispatch.py:289 <- " \
           "torch/optim/_adafactor.py:399" in single
    foreach = lane["torch/arguments/foreach/true"][1]
    assert "aten.mul.Tensor" in foreach and "torch/optim/_adafactor.py:559" in foreach
    numeric = {i for i, (s, r) in lane.items() if s == "fail" and not r.startswith("raised")}
    assert numeric == {f"torch/shapes/{c}/{s}" for c in ("defaults", "lr_0.5") for s in ("vector", "3d", "4d")}
    for i in numeric:
        reason = lane[i][1]
        assert reason.startswith("step 1: variables of 'w': normwise"), reason
        assert float(reason.split("normwise ")[1].split()[0]) > 1e12, reason


@needs_torch
@pytest.mark.slow
def test_gate_fails_a_port_that_reduces_over_its_local_shard_only(dtensor_local_shard):
    done = dtensor_local_shard
    assert done.returncode == 1, _tail(done)
    assert "--adapter conformance.adapters.torch_distributed:LocalShardMean" in done.stdout  # reproducible
    lane = _outcomes(_report("dtensor-local-shard"))[("float64", "teacher")]
    ran = {i for i, (s, _) in lane.items() if s != "skip" and not i.startswith("torch/invalid/")}
    # Where no reduction can tell local from global nothing fails: zero gradients (a zero
    # update whatever the statistics) and huge gradients (inf/NaN statistics from step 1).
    blind = {"torch/special_values/zero_gradients", "torch/special_values/huge_gradients"}
    assert _ids(lane, "fail", "acceptable") == ran - blind, lane
    assert _ids(lane, "pass") == blind | {i for i in lane if i.startswith("torch/invalid/")}
    assert len(ran - blind) == 40


@needs_torch
@pytest.mark.slow
def test_the_same_port_with_global_reductions_conforms_under_shard0(dtensor_out_of_place):
    """Torch's algorithm, in-place ops on reduction results written out of place and the partial
    norms reduced before .item(): it runs on Shard(0) and conforms, so the shard lanes' xfails and
    skips are torch's code, not DTensor's arithmetic."""
    done = dtensor_out_of_place
    assert done.returncode == 0, _tail(done)
    lane = _outcomes(_report("dtensor-out-of-place"))[("float64", "teacher")]
    assert len(_ids(lane, "pass")) == 48 and _ids(lane, "fail", "acceptable", "xfail", "xpass") == set(), lane
