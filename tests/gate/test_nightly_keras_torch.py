"""The Keras 3.16 nightlies on the torch backend (keras-team/keras#23225): float64 binary ops
computed in float32, named by the deviation models keras-float32-ops-torch and
keras-float32-schedules-torch and the versioned entries of conformance/expectations/
keras-torch.txt (conformance/HISTORY.md). Synthetic data and the reference only: no Keras
nightly is needed. A stand-in for the nightly is the composed emulation (bit-exact against
3.16.0.dev2026102704 on 104 of the 114 valid float64 Keras vectors, teacher-forced, with torch's
own mean and sqrt swapped in; the 10 others are schedules, within SCHEDULE_ULPS).

No markers: no framework is imported (torch's float32 pow is libm's ``powf`` through ctypes),
no child process is started, and the module takes about 5 s on the 2-core machine (its
slowest test under 4 s), below the ``slow`` threshold (tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance import deviations, expectations
from conformance import vectorfile as vf
from reference import minmax, reductions
from reference.adafactor_step import Hyperparameters, update_step
from tests import helpers

NIGHTLY = "3.16.0.dev2026102704"
MEANS, OPS, SCHEDULES = "keras-float32-means-torch", "keras-float32-ops-torch", "keras-float32-schedules-torch"
#: Factored and unfactored variables, clipnorm, EMA, weight decay, accumulation (all failed
#: on the nightly under the means model alone, or exercise a path the new model changes).
SAMPLE = ("arguments/learning_rate/", "arguments/clipnorm/0.5", "arguments/use_ema", "arguments/weight_decay/0.1",
          "arguments/gradient_accumulation_steps", "shapes/")


def _versions(**installed):
    return lambda name: installed.get(name)


def _models(keras):
    entries = expectations.for_adapter("keras-torch", version_of=_versions(keras=keras, torch="2.13.0+cpu"))
    return {e.model for e in entries if e.model}


def _sample(corpus_vectors, prefixes=SAMPLE):
    chosen = [(rel, v) for rel, v in corpus_vectors if vf.dialect_of(v) == "keras" and v["result"] == "valid"
              and any(v["id"].startswith(p) for p in prefixes)]
    assert chosen
    return chosen


def _entries(tmp_path, text):
    path = tmp_path / "entries.txt"
    path.write_text(text + "\n")
    return expectations.parse(path)


# ----------------------------------------------------------------------------- the entries
@pytest.mark.parametrize("keras,applies", [("3.12.0", False), ("3.15.1", False), ("3.15.2", False),
                                           ("3.16.0.dev0", True), (NIGHTLY, True), ("3.16.0", True)])
def test_the_nightly_models_apply_from_3_16_dev_only(keras, applies):
    """3.15.1's lanes keep exactly the float32-means model; every 3.16 build (nightlies
    included: 'keras>=3.16' would not match 3.16.0.devN) gets both new models on top."""
    models = _models(keras)
    assert MEANS in models and "keras-torch-decay-once-per-apply" in models
    assert (OPS in models) == applies and (SCHEDULES in models) == applies


def test_the_entries_select_float64_and_schedules():
    entries = [e for e in expectations.for_adapter("keras-torch", version_of=_versions(keras=NIGHTLY))
               if e.model in (OPS, SCHEDULES)]
    by_model = {e.model: e for e in entries}
    assert set(by_model) == {OPS, SCHEDULES}
    assert "float64" in str(by_model[OPS].selectors["dtype"])
    assert "SCHEDULE" in str(by_model[SCHEDULES].selectors.get("flag"))
    assert all("keras 3.16.0.dev2026102704" in e.source for e in entries)


# ----------------------------------------------------------------------------- the emulation
def test_the_models_compose_with_the_float32_means_model():
    """Same mean functions, so the runner's combine() accepts all three at once."""
    assert deviations.model(OPS).variants[0].mean is deviations.model(MEANS).variants[0].mean
    combined = deviations.combine([deviations.model(n).variants[0] for n in (MEANS, OPS, SCHEDULES)])
    assert combined.float32_minmax and "torch-float32-ops" in combined.behaviours
    assert combined.float32_scalars == ("schedule",)
    assert "sqrt-down" in deviations.model(OPS).variants[-1].name  # torch's float32 sqrt: an open choice


def test_torch_pow_is_libm_powf_not_numpy():
    """torch.pow of float32 0-d tensors (libm powf) at t = 3: 0.41524365544319153; NumPy's
    float32 power is one ulp lower there."""
    assert float(deviations.powf(3, -0.8)) == 0.41524365544319153
    assert deviations.powf(3, -0.8).dtype == np.float32
    root = deviations.sqrt32_nearest(np.float32(1.0139273405075073))
    assert float(root) == 1.0069396495819092
    assert float(deviations.sqrt32_down(np.float32(1.0139273405075073))) == 1.0069395303726196  # torch's value


def _nightly_step(x, g, iterations=0, lr=0.01):
    """The nightly step on a fresh slot state, under the float32-means swaps."""
    moments = (np.zeros(x.shape[:-1]), np.zeros(x.shape[-1:]), np.zeros_like(x)) if x.ndim >= 2 else \
        (None, None, np.zeros_like(x))
    with deviations.model(OPS).variants[0].patched():
        return deviations.torch32_update_step(x, g, moments, lr, iterations, Hyperparameters())


@pytest.mark.parametrize("shape", [(3, 4), (7,), ()])
def test_every_result_of_the_step_is_a_float32_value_widened(shape):
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    new_x, (r, c, v), _ = _nightly_step(x, g)
    for a in (new_x, r, c, v):
        if a is not None:
            a = np.asarray(a)
            assert a.dtype == np.float64
            np.testing.assert_array_equal(a, a.astype(np.float32).astype(np.float64))
    # and the variable is not what the means-only model computes (float64 arithmetic)
    with deviations.model(MEANS).variants[0].patched():
        moments = (np.zeros(x.shape[:-1]), np.zeros(x.shape[-1:]), np.zeros_like(x)) if x.ndim >= 2 else \
            (None, None, np.zeros_like(x))
        means_x, _, _ = update_step(x, g, moments, 0.01, 0, Hyperparameters())
    assert not np.array_equal(new_x, means_x)


def test_a_vector_step_by_hand_in_float32():
    """A 1-D variable at t = 3, written out op by op as the nightly computes it."""
    f32 = np.float32
    x = np.array([0.3, -1.25, 2.0, 0.7])
    g = np.array([0.5, -0.125, 1e-3, 2.0])
    v_old = np.array([0.2, 0.01, 1e-6, 3.0])
    with deviations.model(OPS).variants[0].patched():
        new_x, (_, _, v), _ = deviations.torch32_update_step(x, g, (None, None, v_old), 0.01, 2, Hyperparameters())
    s = 1 / np.sqrt(3.0)
    rho = f32(min(f32(0.01), f32(s)))  # minimum twice, float32
    rms_x = np.sqrt(np.float64(np.sum(np.square(x).astype(f32), dtype=f32) / f32(4)))
    alpha = f32(max(f32(1e-3), f32(rms_x))) * rho
    q = np.square(g).astype(f32) + f32(1e-30)
    beta = f32(1) - deviations.powf(3, -0.8)
    want_v = (beta * v_old.astype(f32) + (f32(1) - beta) * q).astype(np.float64)
    np.testing.assert_array_equal(v, want_v)
    u = g.astype(f32) / np.sqrt(want_v).astype(f32)
    rms_u = np.sqrt(np.sum(np.square(u), dtype=f32) / f32(4))
    u_hat = u / max(f32(1), rms_u / f32(1.0))
    np.testing.assert_array_equal(new_x, (x.astype(f32) - alpha * u_hat).astype(np.float64))


def test_the_weight_decay_factor_is_float32_for_a_float_learning_rate():
    """1 - weight_decay * lr with lr a float64 Keras variable: ops.multiply, float32 (in
    whichever order the two torch models are composed)."""
    from conformance.adapters.reference import reference_class

    for names in (["keras-torch-decay-once-per-apply", OPS], [OPS, "keras-torch-decay-once-per-apply"]):
        variant = deviations.combine([deviations.model(n).variants[0] for n in names])
        opt = variant.optimizer_class(reference_class("float64"))(learning_rate=0.01, weight_decay=0.1)
        x = np.ones((2, 2))
        opt.build([x])
        values = [x.copy()]
        opt._apply_weight_decay([0], values)
        assert values[0][0, 0] == np.float64(np.float32(1) - np.float32(np.float32(0.1) * np.float32(0.01)))
        assert values[0][0, 0] != 1 - 0.1 * 0.01


# ----------------------------------------------------------------------------- grading
def _stand_in():
    """The nightly, as the gate sees it: its torch models composed (float64 lanes only)."""
    return deviations.adapter([MEANS, OPS, "keras-torch-decay-once-per-apply"])


def test_the_nightly_fails_under_the_means_model_alone_and_passes_with_its_entry(tmp_path, corpus_vectors):
    """What the nightly run showed (82 lanes-vectors changed): without the new entry the
    float64 lane fails; with the committed file's entries it is pass or model."""
    vectors = _sample(corpus_vectors)
    adapter = _stand_in()
    old = _entries(tmp_path, f"model {MEANS} dtype=float64  # 3.15.1's entry only")
    outcomes = [helpers.run_vector(adapter, rel, v, entries=old) for rel, v in vectors]
    assert any(o.status == "fail" for o in outcomes), [(o.id, o.status) for o in outcomes]
    committed = expectations.for_adapter("keras-torch", version_of=_versions(keras=NIGHTLY, torch="2.13.0+cpu"))
    for mode in ("teacher", "trajectory"):
        outcomes = [helpers.run_vector(adapter, rel, v, mode=mode, entries=committed) for rel, v in vectors]
        assert {o.status for o in outcomes} <= {"pass", "model"}, [(o.id, o.reason) for o in outcomes
                                                                  if o.status not in ("pass", "model")]
        assert any(o.status == "model" and OPS in (o.model or "") for o in outcomes)


@pytest.mark.parametrize("kind", ["variables", "v", "average"])
def test_a_1e4_error_on_top_of_the_nightly_still_fails(tmp_path, corpus_vectors, kind):
    """The new budget is not a blanket: the nightly plus one statistic off by 1e-4 fails."""
    from tests.gate.test_deviations import _Scaled

    prefixes = ("arguments/use_ema",) if kind == "average" else ("arguments/learning_rate/",)
    vectors = _sample(corpus_vectors, prefixes)[:2]
    committed = expectations.for_adapter("keras-torch", version_of=_versions(keras=NIGHTLY, torch="2.13.0+cpu"))
    adapter = _Scaled(_stand_in(), kind)
    outcomes = [helpers.run_vector(adapter, rel, v, entries=committed) for rel, v in vectors]
    assert outcomes and all(o.status == "fail" for o in outcomes), [(o.id, o.status, o.reason) for o in outcomes]


def test_minmax_and_mean_are_restored_after_the_step():
    saved = reductions.mean, minmax.minimum, minmax.maximum
    _nightly_step(np.ones((2, 3)), np.ones((2, 3)))
    assert (reductions.mean, minmax.minimum, minmax.maximum) == saved


# ----------------------------------------------------------------------------- tools/nightly.py
def _report(statuses, keras):
    from tools import history

    outcomes = [{"id": vid, "status": s, "model": m, "reason": ""} for vid, (s, m) in statuses.items()]
    counts = {s: sum(o["status"] == s for o in outcomes) for s in history.STATUSES}
    lane = {"adapter": "keras-torch", "dtype": "float64", "mode": "teacher", "device": "cpu",
            "environment": {"keras": keras, "torch": "2.13.0+cpu"}, "outcomes": outcomes, "counts": counts,
            "conforms": counts["fail"] == 0, "not_run": "", "unused_expectations": []}
    return {"lanes": [lane], "verdict": "CONFORMS"}


@pytest.mark.parametrize("committed", [True, False])
def test_the_nightly_check_names_the_change_with_the_committed_entry(tmp_path, committed):
    """What `python -m tools.nightly --backend torch` saw: every float64 vector's model went
    from the float32-means model to the composed one (and a pass became a model): EXPECTED
    (exit 0) by keras-torch.txt's keras>=3.16.0.dev0 entry, UNEXPECTED (exit 1) without it."""
    from conformance.vector import as_vector
    from tools import nightly

    vectors = {as_vector(v).id: as_vector(v) for _, v in helpers.select(["arguments/learning_rate/",
                                                                        "special_values/huge_gradients"])}
    ids = sorted(vectors)
    composed = f"{MEANS} + {OPS}"
    before = _report({i: ("pass", None) if "huge" in i else ("model", MEANS) for i in ids}, "3.15.1")
    after = _report({i: ("model", composed) for i in ids}, NIGHTLY)
    text = (expectations.DIRECTORY / "keras-torch.txt").read_text()
    if not committed:
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"model {OPS} "))
    path = tmp_path / "keras-torch.txt"
    path.write_text(text + "\n")
    parsed = expectations.parse(path)
    lines = []
    status = nightly.report_changes(before, after, entries_of=lambda adapter: parsed, vectors=vectors,
                                    out=lines.append)
    changed = [line for line in lines if line.startswith(("EXPECTED", "UNEXPECTED"))]
    assert len(changed) == len(ids)
    if committed:
        assert status == 0 and all(line.startswith("EXPECTED") and OPS in line for line in changed), lines
    else:
        assert status == 1 and all(line.startswith("UNEXPECTED") for line in changed), lines
