"""The real-Keras adapters (conformance/adapters/keras_adapter.py) on the jax, torch and
tensorflow backends, teacher-forced against the golden vectors.

Keras picks its backend once per process, so each backend runs in its own subprocess
(this file, run as ``python tests/frameworks/test_keras_adapters.py --worker BACKEND``), which
prints its measurements as JSON; the tests below judge them. What is pinned:

* TensorFlow, float64: every golden state to <= 8 ulps (normwise relative), except where
  reference/SPEC.md section 7 says TF passes a value through float32 (epsilon_2 while it
  binds, weight_decay, schedules). There the deviation must be present (well above float64
  rounding, below 1e-6), and the reference given the float32-rounded value must reproduce
  Keras to <= 8 ulps again: the float32 detour is the whole cause.
* jax and torch, float64: keras-team/keras#23223 (means computed in float32 although every
  tensor is float64): errors ~1e-7 relative, clearly above float64 rounding, and every
  array still reads back as float64.
* float32 lanes: ~1e-7 to 1e-6 from the float64 golden, arrays float32.
* invalid vectors raise the recorded error class; one Keras backend per process; JAX
  without x64 is refused by the runner's dtype check (it would silently run float64 in
  float32); a session reused for another vector of its structure computes the same bits as
  a fresh one.
* two backend-specific deviations found with the gate: the JAX backend does not reset the
  accumulators of variables without a gradient on the update micro-step; the torch backend
  calls a callable learning rate once per apply for weight decay (not once per decayed
  variable). Both are listed in conformance/expectations/keras-*.txt.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORK = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}
ULP = 2.0 ** -52
FEW_ULPS = 8 * ULP
STATE_KINDS = ("variables", "r", "c", "v", "average", "accumulator")

# Vectors without a float32 detour on TensorFlow: every shape, accumulation, EMA, a recorded
# callable (values exact in float32), clipping.
CLEAN = [
    "arguments/learning_rate/0.5",
    "multi_variable/all_shapes",
    "arguments/gradient_accumulation_steps/3",
    "arguments/use_ema/momentum_0.5",
    "schedules/callable_constant",
    "arguments/clipnorm/0.5",
]
# SPEC.md section 7: where the TF backend goes through float32 in a float64 lane.
TF_DETOURS = {
    "arguments/epsilon_2/0.1": "epsilon_2 (binds)",
    "special_values/zero_variables": "epsilon_2 (binds, x = 0)",
    "arguments/weight_decay/0.1": "weight_decay",
    "schedules/exponential": "schedule",
    "schedules/cosine_restarts": "schedule",
}
PINNED = {
    "jax": "combinations/accumulation_none_gradients",
    "torch": "schedules/callable_counter",
}
#: Reused across vectors of one structure (keras_adapter.structure_key): accumulation, EMA with
#: overwrites, weight decay, a factored and an unfactored variable.
REUSED = "combinations/accumulation_ema_overwrite_wd"
INVALID = ["invalid/clipnorm_and_clipvalue", "invalid/learning_rate_int", "invalid/unknown_argument",
           "invalid/all_gradients_none"]


# ============================================================================ worker side
def _worker(backend: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from conformance import metrics, runner
    from conformance import vectorfile as vf
    from conformance.adapters import AdapterError, resolve
    from conformance.adapters.base import numpy_dtype
    from conformance.adapters.reference import ReferenceSession
    from conformance.tolerance import Policy
    from conformance.vector import as_vector

    adapter = resolve(f"keras-{backend}")
    documents = vf.load_corpus(ROOT / "vectors")
    out = {"backend": backend, "environment": adapter.environment("cpu"),
           "gpu": adapter.device_available("gpu"), "lanes": {}, "invalid": {}}
    keras = sys.modules["keras"]
    out["keras_backend"] = keras.backend.backend()

    def find(vector_id):
        return as_vector(vf.find(documents, vector_id)[1])

    def compare(worst, golden, actual, before, loaded):
        for kind in STATE_KINDS:
            for g, a in zip(golden.get(kind) or [], actual.get(kind) or []):
                if g is not None:
                    worst[kind] = max(worst.get(kind, 0.0), metrics.relative_error(a, g))
        for g1, g0, a1, a0 in zip(golden.variables, before.variables, actual.variables, loaded.variables):
            with np.errstate(all="ignore"):
                update = metrics.relative_error(a1.astype(np.float64) - a0.astype(np.float64), g1 - g0)
            worst["update"] = max(worst.get("update", 0.0), update)

    def float32_detours(vector, keras_lr):
        """The vector as the TF backend really computes it in float64: epsilon_2,
        weight_decay, a callable's values and the schedule's value rounded to float32."""
        vector = json.loads(json.dumps(vector.raw))
        config = vector["config"]
        for key in ("epsilon_2", "weight_decay"):
            if isinstance(config.get(key), float):
                config[key] = float(np.float32(config[key]))
        if keras_lr is not None:
            config["learning_rate"] = keras_lr
        for step in vector["steps"]:
            if "learning_rate_calls" in step:
                step["learning_rate_calls"] = [vf.float_to_bits(float(np.float32(vf.bits_to_float(b))))
                                               for b in step["learning_rate_calls"]]
        return vector

    def teacher(vector_id, dtype, explain=False):
        vector = find(vector_id)
        lane = numpy_dtype(dtype)
        start = vector.initial_state
        session = adapter.create(vector, dtype, "cpu")
        is_schedule = isinstance(vector.config.get("learning_rate"), dict) and \
            "class_name" in vector.config["learning_rate"]
        result = {"max": {}, "explained": {}, "calls": [], "iterations": [], "dtypes": set()}
        for k, step in enumerate(vector.steps):
            golden = step.expected
            before = vector.steps[k - 1].expected if k else start
            loaded = before.cast(dtype)
            session.load(loaded)
            keras_lr = None
            if explain and is_schedule:
                # The value update_step will receive: the schedule at the loaded counter.
                keras_lr = float(keras.ops.convert_to_numpy(session.opt.learning_rate))
            session.step([None if g is None else g.astype(lane) for g in step.grads])
            actual = session.read()
            result["dtypes"].update(str(a.dtype) for _, _, a in actual.arrays())
            result["calls"].append([golden.learning_rate_calls, actual.learning_rate_calls])
            result["iterations"].append([golden.iterations, actual.iterations])
            compare(result["max"], golden, actual, before, loaded)
            if explain:
                ref = ReferenceSession(float32_detours(vector, keras_lr), "float64")
                ref.load(before)
                ref.step([None if g is None else g.copy() for g in step.grads])
                compare(result["explained"], ref.read(), actual, before, loaded)
        session.close()
        result["dtypes"] = sorted(result["dtypes"])
        return result

    def run_session(session, vector, mode):
        """Every state read from ``session`` over ``vector``: the built state first in
        trajectory mode, then one per step."""
        reads = [session.read()] if mode == "trajectory" else []
        for k, step in enumerate(vector.steps):
            if mode == "teacher":
                session.load((vector.steps[k - 1].expected if k else vector.initial_state).cast("float64"))
            session.step([None if g is None else g.copy() for g in step.grads])
            reads.append(session.read())
        return reads

    def differences(first, second):
        """Where two runs' states differ in any bit (or in kinds, dtypes, counters)."""
        out = []
        for k, (a, b) in enumerate(zip(first, second)):
            if (a.iterations, a.learning_rate_calls, a.kinds()) != (b.iterations, b.learning_rate_calls, b.kinds()):
                out.append(f"read {k}: counters or kinds differ")
            for (kind, i, x), (_, _, y) in zip(a.arrays(), b.arrays()):
                if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                    out.append(f"read {k}: {kind.value}[{i}]")
        return out if len(first) == len(second) else out + ["different numbers of reads"]

    def reuse_check():
        """The same vector through a fresh session and through a reused one that has just
        run another vector of its structure (other initial values, other gradients): the
        same bits in every read, trajectory and teacher-forced."""
        vector = find(REUSED)
        raw = json.loads(json.dumps(vector.raw))
        raw["id"] = vector.id + "/sibling"
        for variable in raw["variables"]:
            x = vf.decode_array(variable["initial"])
            variable["initial"] = vf.encode_array(x * 0.5 - 0.25)
        for step in raw["steps"]:
            step["grads"] = [None if g is None else vf.encode_array(vf.decode_array(g)[::-1].copy() * 3.0)
                             for g in step["grads"]]
        sibling = as_vector(raw)
        report = {"reused": [], "differences": []}
        for mode in ("trajectory", "teacher"):
            fresh = resolve(f"keras-{backend}")
            session = fresh.create(vector, "float64", "cpu")
            first = run_session(session, vector, mode)
            session.close()
            pooled = resolve(f"keras-{backend}")
            dirty = pooled.create(sibling, "float64", "cpu")
            run_session(dirty, sibling, mode)
            dirty.close()
            again = pooled.create(vector, "float64", "cpu")
            report["reused"].append(again is dirty)
            report["differences"] += [f"{mode} {d}" for d in differences(first, run_session(again, vector, mode))]
            again.close()
        callable_vector = find(CLEAN[4])
        one = pooled.create(callable_vector, "float64", "cpu")
        one.close()
        report["callable_reused"] = pooled.create(callable_vector, "float64", "cpu") is one
        return report

    for vector_id in CLEAN:
        out["lanes"][f"float64:{vector_id}"] = teacher(vector_id, "float64", explain=backend == "tensorflow")
        out["lanes"][f"float32:{vector_id}"] = teacher(vector_id, "float32")
    if backend == "tensorflow":
        for vector_id in TF_DETOURS:
            out["lanes"][f"float64:{vector_id}"] = teacher(vector_id, "float64", explain=True)
    if backend in PINNED:
        for dtype in ("float64", "float32"):
            out["lanes"][f"{dtype}:{PINNED[backend]}"] = teacher(PINNED[backend], dtype)

    for vector_id in INVALID:
        vector = find(vector_id)
        at, raised = "construction", None
        try:
            session = adapter.create(vector, "float64", "cpu")
            for index, step in enumerate(vector.steps):
                at = f"step {index}"
                session.step(list(step.grads))
        except AdapterError:
            raise
        except Exception as exc:  # noqa: BLE001 - graded by the test
            raised = [type(exc).__name__, str(exc), at]
        out["invalid"][vector_id] = raised

    # One Keras backend per process: another backend's adapter must refuse to start.
    other = next(b for b in FRAMEWORK if b != backend)
    try:
        resolve(f"keras-{other}")
        out["other_backend"] = None
    except AdapterError as exc:
        out["other_backend"] = str(exc)

    out["reuse"] = reuse_check()

    if backend == "jax":
        from conformance.adapters.keras_adapter import KerasJaxAdapter

        try:
            outcome = runner.run_vector(KerasJaxAdapter(x64=False), find(CLEAN[0]), "<x>", "float64", "cpu",
                                        "teacher", Policy.load(), [])
            out["no_x64"] = f"not refused: {outcome.status}"
        except AdapterError as exc:
            out["no_x64"] = str(exc)
    return out


# ============================================================================ test side
def _skip_reason(backend: str):
    for module in ("keras", FRAMEWORK[backend]):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: the keras-{backend} adapter cannot run (`make test` installs it)"
    return None


@functools.lru_cache(maxsize=None)
def _run_worker(backend: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", backend],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"keras-{backend} worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def results(backend: str) -> dict:
    reason = _skip_reason(backend)
    if reason:
        pytest.skip(reason)
    try:
        return _run_worker(backend)
    except RuntimeError as exc:
        pytest.fail(str(exc))


def _worst(entry: dict, kinds=STATE_KINDS) -> float:
    return max((entry[k] for k in kinds if k in entry), default=0.0)


def _format(entry: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in sorted(entry.items()))


# ----------------------------------------------------------------------------- all backends
@pytest.mark.parametrize("backend", list(FRAMEWORK))
def test_worker_ran_the_requested_backend(backend):
    out = results(backend)
    assert out["keras_backend"] == backend
    env = out["environment"]
    assert env["backend"] == backend and env["keras"] and env["numpy"] and env["device"]
    assert FRAMEWORK[backend] in env
    if backend == "jax":
        assert env["jax_enable_x64"].startswith("on for float64 lanes")
    assert out["gpu"] is None or (isinstance(out["gpu"], str) and out["gpu"]), out["gpu"]
    print(f"keras-{backend}: {env}; gpu: {out['gpu'] or 'available'}")


@pytest.mark.parametrize("backend", list(FRAMEWORK))
def test_iterations_and_dtypes_are_real(backend):
    out = results(backend)
    for key, lane in out["lanes"].items():
        dtype = key.split(":", 1)[0]
        assert lane["dtypes"] == [dtype], f"keras-{backend} {key}: arrays in {lane['dtypes']}"
        assert all(g == a for g, a in lane["iterations"]), f"keras-{backend} {key}: {lane['iterations']}"


@pytest.mark.parametrize("backend", list(FRAMEWORK))
def test_float32_lane_smoke(backend):
    """float32 lanes land ~1e-7 to 1e-6 (normwise relative) from the float64 golden."""
    out = results(backend)
    for vector_id in CLEAN:
        lane = out["lanes"][f"float32:{vector_id}"]
        worst = _worst(lane["max"])
        print(f"keras-{backend} float32 {vector_id}: {_format(lane['max'])}")
        assert 0 < worst <= 2e-6, f"keras-{backend} float32 {vector_id}: {_format(lane['max'])}"
        assert all(g == a for g, a in lane["calls"])


@pytest.mark.parametrize("backend", list(FRAMEWORK))
def test_invalid_vectors_raise_the_recorded_error(backend):
    from tests import helpers

    out = results(backend)
    for vector_id in INVALID:
        error = helpers.vector(vector_id)[1].error
        raised = out["invalid"][vector_id]
        assert raised is not None, f"keras-{backend} {vector_id}: nothing raised, expected {error.cls}"
        cls, message, at = raised
        assert cls == error.cls and error.message_contains in message, (vector_id, raised)
        expected_at = "construction" if error.at == "construction" else f"step {error.step}"
        assert at == expected_at, (vector_id, raised)


@pytest.mark.parametrize("backend", list(FRAMEWORK))
def test_one_keras_backend_per_process(backend):
    message = results(backend)["other_backend"]
    assert message and "already imported" in message and repr(backend) in message, message


# ----------------------------------------------------------------------------- TensorFlow
def test_tensorflow_float64_agrees_to_a_few_ulps():
    out = results("tensorflow")
    for vector_id in CLEAN:
        lane = out["lanes"][f"float64:{vector_id}"]
        print(f"keras-tensorflow float64 {vector_id}: {_format(lane['max'])}")
        assert _worst(lane["max"]) <= FEW_ULPS, f"{vector_id}: {_format(lane['max'])}"
        assert lane["max"]["update"] <= 1e-12, f"{vector_id}: {_format(lane['max'])}"
        assert all(g == a for g, a in lane["calls"]), lane["calls"]


@pytest.mark.parametrize("vector_id", list(TF_DETOURS))
def test_tensorflow_float64_float32_detours_are_present_and_explained(vector_id):
    """SPEC.md section 7: the deviation exists (not silently absent), is float32-sized, and
    the reference with the float32-rounded value reproduces Keras to a few ulps."""
    lane = results("tensorflow")["lanes"][f"float64:{vector_id}"]
    worst, explained = _worst(lane["max"]), _worst(lane["explained"])
    print(f"keras-tensorflow float64 {vector_id} ({TF_DETOURS[vector_id]}): golden {_format(lane['max'])}; "
          f"float32-detour reference {_format(lane['explained'])}")
    assert 1e-11 < worst < 1e-6, f"{TF_DETOURS[vector_id]} float32 detour not seen: {_format(lane['max'])}"
    assert lane["max"]["update"] > 1e-10
    assert explained <= FEW_ULPS, f"not explained by the float32 detour: {_format(lane['explained'])}"


# ----------------------------------------------------------------------------- jax, torch
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_float64_shows_keras_23223_float32_means(backend):
    """keras-team/keras#23223: on jax and torch, Keras >= 3.12 computes ops.mean in float32
    for float64 tensors (keras/src/backend/common/dtypes.py BIT64_TO_BIT32_DTYPE), so a
    float64 lane is only ~1e-7 from the spec, while its arrays stay float64."""
    out = results(backend)
    for vector_id in CLEAN:
        lane = out["lanes"][f"float64:{vector_id}"]
        worst = _worst(lane["max"], STATE_KINDS + ("update",))
        print(f"keras-{backend} float64 {vector_id}: {_format(lane['max'])}")
        assert lane["dtypes"] == ["float64"]
        assert 1e-9 < worst < 1e-6, f"keras-{backend} float64 {vector_id}: {_format(lane['max'])}"
        # Second moments come from means: visibly float32.
        factored = [lane["max"][k] for k in ("r", "c") if k in lane["max"]]
        if factored:
            assert max(factored) > 1e-9


def test_jax_without_x64_is_refused():
    """Without jax_enable_x64 JAX silently holds a float64 lane in float32: the runner's dtype
    check (the one check; adapters do not re-check) refuses the lane."""
    message = results("jax")["no_x64"]
    assert message and "holds float32" in message and "float64" in message, message


@pytest.mark.parametrize("backend", list(FRAMEWORK))
def test_a_reused_session_computes_the_same_bits_as_a_fresh_one(backend):
    """Sessions are pooled per structure (keras_adapter.structure_key; keras-jax keeps its
    compiled step): after another vector of the same structure, the pooled session gives
    exactly the bits of a fresh one, its freshly built state included. A recorded callable
    learning rate belongs to one vector: never pooled."""
    reuse = results(backend)["reuse"]
    assert reuse["reused"] == [True, True], reuse
    assert reuse["differences"] == [], reuse["differences"]
    assert reuse["callable_reused"] is False


def test_jax_does_not_reset_accumulators_without_gradient():
    """keras/src/backend/jax/optimizer.py:31-39 zeroes only the accumulators of variables
    with a gradient in this apply; base Keras resets all (base_optimizer.py:623-626). In
    combinations/accumulation_none_gradients the bias has no gradient on the update micro-step
    2, keeps its stale sum, and the accumulator no longer matches (zero expected)."""
    for dtype in ("float64", "float32"):
        lane = results("jax")["lanes"][f"{dtype}:{PINNED['jax']}"]
        assert lane["max"]["accumulator"] == float("inf"), _format(lane["max"])


def test_torch_calls_a_callable_learning_rate_once_per_weight_decay():
    """keras/src/backend/torch/optimizers/torch_optimizer.py:38-45 evaluates the learning
    rate once per apply for weight decay; base Keras once per decayed variable
    (base_optimizer.py:952-959). With two decayed variables the recorded callable is called
    2 times per step instead of 3."""
    for dtype in ("float64", "float32"):
        lane = results("torch")["lanes"][f"{dtype}:{PINNED['torch']}"]
        per_step = [(g, a) for g, a in lane["calls"]]
        assert all(a == g - 1 for g, a in per_step), per_step


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    sys.stdout.write("\n" + json.dumps(_worker(sys.argv[2])) + "\n")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None or importlib.util.find_spec("keras") is None,
                    reason="jax/keras not installed: `make test` installs them")
def test_jax_eager_apply_conforms_like_the_compiled_step(tmp_path):
    """keras-jax steps with jax.jit(optimizer.stateless_apply); the eager-apply variant
    must reach the same verdicts on accumulation, EMA and callable vectors."""
    report = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--adapter",
         "conformance.adapters.keras_adapter:KerasJaxEagerAdapter", "--dtype", "float32", "--mode", "teacher",
         "--vectors", "arguments/gradient_accumulation_steps,arguments/use_ema,schedules/callable",
         "--json", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (lane,) = json.loads(report.read_text())["lanes"]
    assert lane["environment"]["apply"] == "eager optimizer.apply, one per step"
    assert lane["conforms"] and lane["counts"]["fail"] == 0 and lane["counts"]["pass"] >= 5, lane["counts"]
