"""The sharded lane (conformance/adapters/sharded.py): Keras's Adafactor on JAX with its
variables split over a 2x2 mesh of virtual CPU devices conforms, and a port that reduces only
over its local shard (conformance/adapters/broken.py: LocalShardMean) is failed by the gate.
Each run is its own process (the four host devices must be requested before JAX starts),
started early on the other core (tests/background.py); this process never imports JAX."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from conformance.adapters.sharded import is_sharded, variable_spec
from tests import background
from tests.helpers import REPO

_MISSING = [m for m in ("keras", "jax") if importlib.util.find_spec(m) is None]
needs_keras_jax = pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed")


def _gate_job(name: str, adapter: str, fixture: str) -> background.Job:
    return background.Job(name, [sys.executable, "-m", "conformance", "run", "--adapter", adapter, "--dtype", "float32",
                                 "--vectors", "sharding/,shapes/"], cwd=REPO, timeout=900, fixtures=(fixture,),
                          requires=("keras", "jax"))


SHARDED_RUN = _gate_job("sharded-lane-gate", "keras-jax-sharded", "sharded_run")
LOCAL_SHARD_RUN = _gate_job("sharded-local-shard-mean-gate", "conformance.adapters.broken:LocalShardMean",
                            "local_shard_run")


@pytest.fixture(scope="module")
def sharded_run():
    return SHARDED_RUN.result()


@pytest.fixture(scope="module")
def local_shard_run():
    return LOCAL_SHARD_RUN.result()


def test_variable_spec_splits_the_last_two_axes_where_they_divide():
    assert variable_spec((8, 16)) == ("rows", "cols")
    assert variable_spec((4, 6, 8)) == (None, "rows", "cols")
    assert variable_spec((16,)) == (("rows", "cols"),)
    assert variable_spec((6,)) == ("cols",)
    assert variable_spec((5, 3)) == (None, None) and not is_sharded(variable_spec((5, 3)))
    assert variable_spec(()) == ()


@needs_keras_jax
def test_sharded_keras_conforms_on_four_devices(sharded_run):
    done = sharded_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "mesh=2x2 ('rows', 'cols') over cpu:0, cpu:1, cpu:2, cpu:3" in done.stdout
    # The 5 vectors whose variables split run; the 18 odd-shaped ones are skipped with the reason.
    # Columns: pass, model, fail, acceptable, xfail, xpass, skip.
    rows = re.findall(r"^keras-jax-sharded\s+float32\s+(\w+)\s+cpu\s+(\d+)\s+0\s+0\s+0\s+0\s+0\s+(\d+)\s",
                      done.stdout, re.M)
    assert sorted(rows) == [("teacher", "5", "18"), ("trajectory", "5", "18")], done.stdout[-3000:]


@needs_keras_jax
def test_gate_fails_a_port_that_reduces_over_its_local_shard_only(local_shard_run):
    done = local_shard_run
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
    failed = set(re.findall(r"^FAIL \S+ float32 \w+: (\S+)", done.stdout, re.M))
    sharding = {"sharding/defaults", "sharding/clipping", "sharding/3d", "sharding/weight_decay_ema",
                "sharding/accumulation_global_clipnorm"}
    # Every vector whose variables split fails, in both modes; nothing else ran.
    assert failed == sharding, done.stdout[-4000:]
    assert len(re.findall(r"^FAIL ", done.stdout, re.M)) == 10
    assert "--adapter conformance.adapters.broken:LocalShardMean" in done.stdout  # the repro runs as printed


SPLIT_SCRIPT = r'''
from conformance.adapters.sharded import KerasJaxShardedAdapter
from conformance import replay, vectorfile as vf
adapter = KerasJaxShardedAdapter()
_, vector = vf.find(vf.load_corpus("vectors"), "sharding/defaults")
session = adapter.create(vector, "float32", "cpu")
session.step(replay.decode_grads(vector, vector.steps[0]))
opt = session.opt
def where(a):
    return len(a.value.sharding.device_set), tuple(a.value.sharding.spec)
print(session.sharded_variables, where(session.variables[0]), where(session.variables[1]),
      where(opt._r[0]), where(opt._c[0]), where(opt._v[0]))
'''
SPLIT_RUN = background.Job("sharded-lane-split", [sys.executable, "-c", SPLIT_SCRIPT], cwd=REPO, timeout=300,
                           fixtures=("split_run",), requires=("keras", "jax"))


@pytest.fixture(scope="module")
def split_run():
    return SPLIT_RUN.result()


@needs_keras_jax
def test_sharded_lane_really_splits_the_variables_and_state(split_run):
    """In its own process: after one step of sharding/defaults the kernel, its c and v, and the
    bias live on four devices with the specs of the module table; r is replicated."""
    done = split_run
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line == ("[0, 1] (4, ('rows', 'cols')) (4, (('rows', 'cols'),)) (4, ('rows',)) (4, ('cols',)) "
                    "(4, ('rows', 'cols'))"), line
