"""The Keras distribution lane (conformance/adapters/keras_distribution.py): Keras's Adafactor on
JAX under keras.distribution.ModelParallel on a 2x2 DeviceMesh of virtual CPU devices conforms
(graded with keras-jax's expectations), its slots are laid out as Keras lays them out, and a port
that reduces over its local shard only on the same engine is failed on every sharding vector.

Each run is its own process (the four host devices must be requested before JAX starts),
started early on the other core (tests/background.py); this process never imports JAX."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest

from conformance.adapters.keras_distribution import is_split, keras_path, layout_axes
from tests import background
from tests.helpers import REPO

pytestmark = [pytest.mark.framework, pytest.mark.subprocess]

_MISSING = [m for m in ("keras", "jax") if importlib.util.find_spec(m) is None]
needs_keras_jax = pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed")

MODULE = "conformance.adapters.keras_distribution"
SHARDING = {"sharding/defaults", "sharding/clipping", "sharding/3d", "sharding/weight_decay_ema",
            "sharding/accumulation_global_clipnorm"}
#: The ordinary Keras vectors whose variables split on the 2x2 mesh (every other one is skipped).
ORDINARY_SPLIT = {"long_reductions/last_axis_1024", "long_reductions/rows_3d_clipnorm"}


def _gate(name: str, adapters, fixture: str, vectors: str) -> background.Job:
    args = [sys.executable, "-m", "conformance", "run", "--dtype", "float64,float32", "--vectors", vectors]
    for adapter in adapters:
        args += ["--adapter", adapter]
    return background.Job(name, args, cwd=REPO, timeout=900, fixtures=(fixture,), requires=("keras", "jax"))


LANE_RUN = _gate("keras-distribution-gate", [f"{MODULE}:{c}" for c in (
    "KerasDistributionAdapter", "KerasDistributionRowsAdapter", "KerasDistributionColsAdapter")],
    "distribution_run", "sharding/,long_reductions/,shapes/")
LOCAL_SHARD_RUN = _gate("keras-distribution-local-shard-mean-gate", [f"{MODULE}:KerasDistributionLocalShardMean"],
                        "distribution_local_shard_run", "sharding/")


@pytest.fixture(scope="module")
def distribution_run():
    return LANE_RUN.result()


@pytest.fixture(scope="module")
def distribution_local_shard_run():
    return LOCAL_SHARD_RUN.result()


def test_layout_axes_split_rows_columns_or_both_where_they_divide():
    assert layout_axes((8, 16), "rows") == ("model", None)
    assert layout_axes((8, 16), "cols") == (None, "model")
    assert layout_axes((8, 16), "both") == ("data", "model")
    assert layout_axes((4, 6, 8), "both") == (None, "data", "model")
    assert layout_axes((16,), "rows") == ("model",)
    assert layout_axes((5, 4), "rows") == (None, None) and layout_axes((5, 4), "both") == (None, "model")
    assert not is_split(layout_axes((5, 3), "both")) and layout_axes((), "both") == ()
    # Unscoped vector names get a layer-like scope (Adafactor's rank < 2 placeholders are named
    # var.name with no scope, and an exact key "bias" would hand them the bias layout).
    assert keras_path("bias") == "layer/bias" and keras_path("dense/kernel") == "dense/kernel"


@pytest.mark.parametrize("split", ["rows", "cols", "both"])
def test_the_vectors_that_split_are_the_sharding_ones_and_two_long_reductions(split):
    """Which valid Keras vectors the lane grades (any variable with a split axis); the others
    are skipped with the reason, since ModelParallel would replicate them (keras-jax's program)."""
    from conformance import vectorfile as vf
    from conformance.corpus import default_vectors_dir
    from conformance.vector import as_vector

    corpus = vf.load_corpus(default_vectors_dir())
    graded = {v["id"] for name, v in vf.iter_vectors(corpus) if name.startswith("keras/") and v["result"] == "valid"
              and any(is_split(layout_axes(s, split)) for s in as_vector(v).shapes)}
    assert graded == SHARDING | ORDINARY_SPLIT


@needs_keras_jax
@pytest.mark.slow
def test_keras_distribution_lane_conforms_with_keras_jax_expectations(distribution_run):
    done = distribution_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.rstrip().endswith("CONFORMS")
    assert "distribution=ModelParallel on DeviceMesh (2, 2) ('data', 'model') over cpu:0, cpu:1, cpu:2, cpu:3" \
        in done.stdout
    # Columns: pass, model, fail, acceptable, xfail, xpass, skip. float64 is graded under
    # keras-jax's deviation model keras-float32-means-jax (keras-team/keras#23223), float32
    # against the spec; 7 vectors split (5 sharding, 2 long reductions), the shapes/ ones do not.
    rows = re.findall(r"^(keras-jax-distribution\S*)\s+(float\d\d)\s+(\w+)\s+cpu\s+(\d+)\s+(\d+)"
                      r"\s+0\s+0\s+0\s+0\s+(\d+)\s", done.stdout, re.M)
    expected = set()
    for name in ("keras-jax-distribution", "keras-jax-distribution-rows", "keras-jax-distribution-cols"):
        for mode in ("teacher", "trajectory"):
            expected.add((name, "float64", mode, "0", "7", "18"))
            expected.add((name, "float32", mode, "7", "0", "18"))
    assert set(rows) == expected, done.stdout[-3000:]
    assert "conform under deviation model keras-float32-means-jax" in done.stdout


@needs_keras_jax
@pytest.mark.slow
def test_gate_fails_a_local_shard_port_on_every_sharding_vector(distribution_local_shard_run):
    done = distribution_local_shard_run
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
    failed = re.findall(r"^FAIL keras-jax-distribution-local-shard-mean (float\d\d) (\w+): (\S+)", done.stdout,
                        re.M)
    every = {(d, m, v) for d in ("float64", "float32") for m in ("teacher", "trajectory") for v in SHARDING}
    assert set(failed) == every and len(failed) == 20, done.stdout[-4000:]
    assert f"--adapter {MODULE}:KerasDistributionLocalShardMean" in done.stdout  # the repro runs as printed
    assert done.stdout.rstrip().endswith("DOES NOT CONFORM")


LAYOUT_SCRIPT = r'''
import json, traceback
import numpy as np
from conformance.adapters.keras_distribution import (KerasDistributionAdapter, KerasDistributionColsAdapter,
                                                     KerasDistributionRowsAdapter, slot_layouts)
from conformance import replay, vectorfile as vf
corpus = vf.load_corpus("vectors")
out = {}
for cls in (KerasDistributionRowsAdapter, KerasDistributionColsAdapter, KerasDistributionAdapter):
    adapter = cls()
    for vid in ("sharding/weight_decay_ema", "sharding/accumulation_global_clipnorm"):
        _, vector = vf.find(corpus, vid)
        session = adapter.create(vector, "float64", "cpu")
        import jax
        assert jax.config.jax_enable_x64
        grads = replay.decode_grads(vector, vector.steps[0])
        session.step([None if g is None else np.asarray(g, "float64") for g in grads])
        rows = slot_layouts(session)
        assert rows == session.built_layouts  # one step later, every array as Keras laid it out
        out[f"{adapter.split} {vid}"] = {f"{k} {p}": [list(s), [a if a is None or isinstance(a, str) else list(a)
                                                              for a in spec], n] for p, k, s, spec, n in rows}
        out[f"{adapter.split} {vid} dtype"] = str(session.opt._v[0].value.dtype)
        session.close()
# A LayoutMap pattern a user might write: what Adafactor.build does with it.
import keras
mesh = adapter.device_mesh("cpu")
for patterns in ({".*kernel": ("data", "model")}, {"dense/kernel": ("data", "model"), ".*bias": ("model",)},
                 {".*dense.*kernel": ("data", "model"), ".*dense.*bias": ("model",)}):
    layout_map = keras.distribution.LayoutMap(mesh)
    for key, axes in patterns.items():
        layout_map[key] = axes
    distribution = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="data")
    keras.distribution.set_distribution(distribution)
    with keras.name_scope("dense"):
        variables = [keras.Variable(np.ones((8, 16), "float32"), name="kernel"),
                     keras.Variable(np.ones((16,), "float32"), name="bias")]
    try:
        keras.optimizers.Adafactor().build(variables)
        result = "built"
    except Exception as exc:  # noqa: BLE001
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                 if f.filename.endswith("optimizers/adafactor.py")]
        result = f"{type(exc).__name__} at adafactor.py:{lines[-1] if lines else '?'}"
    out["pattern " + " ".join(patterns)] = result
print("RESULT " + json.dumps(out))
'''
LAYOUT_RUN = background.Job("keras-distribution-layouts", [sys.executable, "-c", LAYOUT_SCRIPT], cwd=REPO,
                            timeout=600, fixtures=("distribution_layouts",), requires=("keras", "jax"))


@pytest.fixture(scope="module")
def distribution_layouts():
    done = LAYOUT_RUN.result()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@needs_keras_jax
@pytest.mark.slow
@pytest.mark.parametrize("split,kernel", [("rows", ["model", None]), ("cols", [None, "model"]),
                                          ("both", ["data", "model"])])
def test_slots_are_laid_out_as_keras_creates_them(distribution_layouts, split, kernel):
    """v, the EMA and the accumulators follow their variable's layout
    (add_variable_from_reference, base_optimizer.py:313-325); r and c get none and are
    replicated (add_variable with no layout, adafactor.py:111-126: path "adafactor/kernel"
    matches no key); everything lives on all four devices, in float64 with x64 on."""
    ema = distribution_layouts[f"{split} sharding/weight_decay_ema"]
    acc = distribution_layouts[f"{split} sharding/accumulation_global_clipnorm"]
    assert distribution_layouts[f"{split} sharding/weight_decay_ema dtype"] == "float64"
    assert ema["variable layer/kernel"] == [[8, 16], kernel, 4]
    assert ema["variable layer/bias"] == [[16], ["model"], 4]
    assert ema["v adafactor/layer_kernel_velocity"] == [[8, 16], kernel, 4]
    assert ema["v adafactor/layer_bias_velocity"] == [[16], ["model"], 4]
    assert ema["average adafactor/layer_kernel_average"] == [[8, 16], kernel, 4]
    assert ema["average adafactor/layer_bias_average"] == [[16], ["model"], 4]
    assert acc["accumulator adafactor/layer_kernel_gradient_accumulator"] == [[8, 16], kernel, 4]
    assert acc["accumulator adafactor/layer_bias_gradient_accumulator"] == [[16], ["model"], 4]
    assert ema["r adafactor/kernel"] == [[8], [None], 4]
    assert ema["c adafactor/kernel"] == [[16], [None], 4]
    assert ema["other adafactor/iteration"] == [[], [], 4]
    assert ema["other bias"] == [[], [], 4]  # the rank < 2 placeholder, path var.name


@needs_keras_jax
@pytest.mark.slow
def test_layout_map_patterns_that_match_the_factored_slots_break_build(distribution_layouts):
    """r/c are named var.name under the optimizer's scope ("adafactor/kernel") and the rank < 2
    placeholders var.name with no scope ("bias"): a pattern that matches them hands a rank-1 or
    scalar slot the variable's layout, and build fails in distribute_tensor."""
    assert distribution_layouts["pattern .*kernel"] == "IndexError at adafactor.py:117"
    assert distribution_layouts["pattern dense/kernel .*bias"] == "IndexError at adafactor.py:104"
    assert distribution_layouts["pattern .*dense.*kernel .*dense.*bias"] == "built"
