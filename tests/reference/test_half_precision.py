"""Honest half precision: the float16/bfloat16 lanes of the reference reduce the way real
frameworks do, accumulating in float32 and rounding the result once to the lane dtype
(reference/reductions.py), and the corpus has vectors whose reductions are long enough to
tell (conformance/TOLERANCES.md, "Half precision").

NumPy alone sums ml_dtypes' bfloat16 one element at a time in bfloat16: the sum of 5000 ones
is 256 and the RMS of a (130, 3, 129) array of ones 0.287. Every test here that names a value
fails when ``reductions`` reduces in the lane dtype again (``test_*_fails_without_*`` run the
gate that way on purpose).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

from conformance import tolerance  # noqa: E402
from conformance.adapters.reference import ReferenceAdapter, reference_class  # noqa: E402
from reference import reductions  # noqa: E402
from reference.adafactor_step import rms  # noqa: E402
from tests import helpers  # noqa: E402

REPO, VECTORS = helpers.REPO, helpers.VECTORS
BF16, F16 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)
HALF = pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])

#: The vectors with a reduction well past 256 elements (tools/vector_cases.py,
#: tools/dialect_cases/{torch,optax}.py) and the longest axis each reduces over.
LONG_VECTORS = {"long_reductions/last_axis_1024": 1024, "long_reductions/rows_3d_clipnorm": 640,
                "torch/shapes/long/last_axis_1024": 1024, "optax/shapes/long/last_axis_1024": 1024}


def ulp(value: float, dtype) -> float:
    """The spacing of ``dtype`` at ``value`` (normal range)."""
    eps = float(ml_dtypes.finfo(dtype).eps)
    return eps * 2.0 ** math.floor(math.log2(abs(value)))


def in_lane_dtype():
    """The reductions as they were: NumPy in the lane dtype (no float32 accumulation)."""
    return {"total": lambda x, axis=None, keepdims=False: np.sum(x, axis=axis, keepdims=keepdims),
            "mean": lambda x, axis=None, keepdims=False: np.mean(x, axis=axis, keepdims=keepdims),
            "norm": lambda x, axis=None, keepdims=False: np.sqrt(np.sum(np.square(x), axis=axis,
                                                                         keepdims=keepdims))}


# ----------------------------------------------------------------------------- the reductions
def test_bfloat16_rms_of_5000_ones_is_one():
    value = rms(np.ones(5000, BF16))
    assert np.asarray(value).dtype == BF16
    assert abs(float(value) - 1.0) <= ulp(1.0, BF16), float(value)  # in bfloat16 alone: sqrt(256/5000)


def test_bfloat16_rms_of_the_issue_example_is_one():
    assert abs(float(rms(np.ones((130, 3, 129), BF16))) - 1.0) <= ulp(1.0, BF16)  # was 0.287


@HALF
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_long_sums_and_means_accumulate_in_float32(dtype, layout):
    """5000 ones summed along a contiguous axis and along a strided one (NumPy adds float16
    row by row there: 2048), summed and averaged, and their norm."""
    x, axis = (np.ones((3, 5000), dtype), 1) if layout == "contiguous" else (np.ones((5000, 3), dtype), 0)
    total, mean, norm = (reductions.total(x, axis=axis), reductions.mean(x, axis=axis),
                         reductions.norm(x, axis=axis))
    assert total.dtype == mean.dtype == norm.dtype == dtype
    assert np.all(np.abs(total.astype(np.float64) - 5000) <= ulp(5000, dtype)), total
    assert np.all(mean.astype(np.float64) == 1.0), mean
    assert np.all(np.abs(norm.astype(np.float64) - math.sqrt(5000)) <= ulp(math.sqrt(5000), dtype)), norm
    assert abs(float(reductions.total(x)) - 15000) <= ulp(15000, dtype)


def test_float32_and_float64_reduce_exactly_as_numpy():
    """The spec (float64) and the float32 lane are unchanged, bit for bit."""
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        x = rng.normal(size=(7, 300)).astype(dtype)
        for axis in (None, 0, 1):
            assert np.array_equal(reductions.total(x, axis=axis), np.sum(x, axis=axis))
            assert np.array_equal(reductions.mean(x, axis=axis, keepdims=True), np.mean(x, axis=axis, keepdims=True))
            assert np.array_equal(reductions.norm(x, axis=axis), np.sqrt(np.sum(np.square(x), axis=axis)))
            assert reductions.accumulator(dtype) == np.dtype(dtype)
    assert reductions.accumulator(BF16) == reductions.accumulator(F16) == np.dtype(np.float32)


def test_the_derivations_sequential_order_accumulates_in_float32_too():
    """conformance/tolerance.py's other honest order (left to right) widens half precision as
    well: the budgets are derived from two float32-accumulated orders."""
    x = np.ones((3, 5000), BF16)
    with tolerance.summation_order("sequential"):
        assert abs(float(reductions.total(x)) - 15000) <= ulp(15000, BF16)
        assert np.all(reductions.mean(x, axis=1) == 1) and reductions.mean(x, axis=1).dtype == BF16
        assert abs(float(rms(x)) - 1.0) <= ulp(1.0, BF16)
        assert abs(float(reductions.norm(x)) - math.sqrt(15000)) <= ulp(math.sqrt(15000), BF16)


def _random(dtype, shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


@HALF
def test_matches_torch_within_one_ulp(dtype):
    """torch accumulates Half/BFloat16 in float (ATen OpMathType.h); its mean is
    "cast_fp32 -> sum -> div -> cast" on CPU (ReduceOps.cpp mean_out); torch.norm squares,
    sums and roots in float (SharedReduceOps.h NormTwoOps). Summation orders differ, so
    within one ulp, not bit for bit."""
    torch = pytest.importorskip("torch")
    tdtype = {BF16: torch.bfloat16, F16: torch.float16}[dtype]
    for seed, shape in enumerate([(5000,), (3, 1024), (640, 2)]):
        x = _random(dtype, shape, seed)
        t = torch.from_numpy(x.astype(np.float32)).to(tdtype)
        for axis in [None] + list(range(x.ndim)):
            pairs = [(reductions.total(x, axis=axis), t.sum() if axis is None else t.sum(dim=axis)),
                     (reductions.mean(x, axis=axis), t.mean() if axis is None else t.mean(dim=axis)),
                     (reductions.norm(x, axis=axis), torch.linalg.vector_norm(t, dim=axis))]
            for ours, theirs in pairs:
                ours = np.asarray(ours).astype(np.float64)
                theirs = theirs.float().numpy().astype(np.float64)
                spacing = np.vectorize(lambda v: ulp(v, dtype) if v else 0.0)(theirs)
                assert np.all(np.abs(ours - theirs) <= spacing), (shape, axis, ours, theirs)


_JAX = textwrap.dedent("""
    import json, sys
    import numpy as np, ml_dtypes, jax.numpy as jnp
    out = []
    for name, shape, seed in json.loads(sys.stdin.read()):
        x = np.random.default_rng(seed).normal(size=shape).astype(np.dtype(name))
        for axis in [None] + list(range(len(shape))):
            out.append([float(v) for v in np.ravel(np.asarray(jnp.sum(x, axis=axis)).astype(np.float64))]
                       + [float(v) for v in np.ravel(np.asarray(jnp.mean(x, axis=axis)).astype(np.float64))])
    print(json.dumps(out))
""")


def test_matches_jax_within_one_ulp():
    """jnp.sum / jnp.mean widen float16 and bfloat16 to float32 (upcast_f16_for_computation),
    as Keras's ops.mean does on every backend; run in a subprocess (JAX's config is global)."""
    if importlib.util.find_spec("jax") is None:  # JAX runs in the child only
        pytest.skip("jax is not installed")
    jobs = [(name, shape, seed) for name in ("bfloat16", "float16")
            for seed, shape in enumerate([(5000,), (3, 1024), (640, 2)])]
    done = subprocess.run([sys.executable, "-c", _JAX], input=json.dumps(jobs), capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = iter(json.loads(done.stdout))
    for name, shape, seed in jobs:
        dtype = np.dtype(name)
        x = _random(dtype, shape, seed)
        for axis in [None] + list(range(len(shape))):
            theirs = np.array(next(results))
            ours = np.concatenate([np.ravel(np.asarray(reductions.total(x, axis=axis))),
                                   np.ravel(np.asarray(reductions.mean(x, axis=axis)))]).astype(np.float64)
            spacing = np.vectorize(lambda v: ulp(v, dtype) if v else 0.0)(theirs)
            assert np.all(np.abs(ours - theirs) <= spacing), (name, shape, axis)


# ----------------------------------------------------------------------------- the reference
def test_reference_bfloat16_step_reduces_a_long_last_axis():
    """One Keras step in the bfloat16 lane on a (2, 1024) variable with unit gradients:
    r = mean(g*g + eps1) over 1024 columns is 1 (in bfloat16 alone: 0.25)."""
    opt = reference_class("bfloat16")(learning_rate=0.1)
    x = np.zeros((2, 1024), BF16)
    opt.build([x])
    opt.apply([np.ones((2, 1024), BF16)], [x])
    r, c, v = opt.state.r[0], opt.state.c[0], opt.state.v[0]
    assert r.dtype == BF16
    assert np.all(r.astype(np.float64) == 1.0), r
    assert np.all(c.astype(np.float64) == 1.0) and np.all(v.astype(np.float64) == 1.0)


def _lane(ids, dtype, policy):
    vectors = [(rel, v) for rel, v in helpers.corpus_vectors() if v.id in ids]
    assert {v.id for _, v in vectors} == set(ids), "a long vector is missing from the corpus"
    return helpers.run_lane(ReferenceAdapter(), vectors, dtype, policy=policy)


def test_long_vectors_reduce_past_256_elements():
    for _, vector in helpers.corpus_vectors():
        if vector.id in LONG_VECTORS:
            longest = max(max(shape[-2:]) for shape in vector.shapes)
            assert longest == LONG_VECTORS[vector.id] and longest > 256, vector.id
            assert vector.result == "valid"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_long_vectors_run_and_conform_in_the_half_precision_lanes(dtype):
    """Not skipped (their gradients keep every g*g in float16's normal range) and within the
    derived budgets."""
    report = _lane(LONG_VECTORS, dtype, tolerance.Policy.load())
    statuses = {o.id: (o.status, o.reason) for o in report.outcomes}
    assert all(status == "pass" for status, _ in statuses.values()), statuses


def test_the_gate_fails_the_bfloat16_lane_without_float32_accumulation(monkeypatch):
    """Reducing in bfloat16 again (NumPy's sequential sum) is no honest implementation: the
    long vectors catch it against the derived budgets (r of the (2, 1024) kernel: 56 epsilons
    against a budget of 7.2; of the (1, 640, 2) one: 162)."""
    for name, function in in_lane_dtype().items():
        monkeypatch.setattr(reductions, name, function)
    report = _lane(["long_reductions/last_axis_1024", "long_reductions/rows_3d_clipnorm",
                    "optax/shapes/long/last_axis_1024"], "bfloat16", tolerance.Policy.load())
    statuses = {o.id: o.status for o in report.outcomes}
    assert set(statuses.values()) == {"fail"}, statuses
