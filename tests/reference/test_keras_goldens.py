"""Every golden value in Keras's own test file, keras/src/optimizers/adafactor_test.py
(keras 3.15.1, unchanged since 3.0.2), reproduced by the reference at Keras's own
tolerances. Keras's tests run in float32; the reference is float64, so these are loose
by construction. The tight checks are in test_keras_tf_crosscheck.py."""

import json
from pathlib import Path

import numpy as np
import pytest

from reference import Adafactor

#: Keras's goldens as its test file states them (test data, not the spec).
TESTS = next(p for p in Path(__file__).resolve().parents if p.name == "tests")
GOLDENS = json.loads((TESTS / "data" / "keras_goldens.json").read_text())["goldens"]


def run_golden(golden: dict) -> float:
    """Run the reference on one golden; return the largest violation ratio
    max(|x - expected| / (atol + rtol*|expected|)) over checked steps (<= 1 passes)."""
    opt = Adafactor(**golden["config"])
    x = np.array(golden["initial"], dtype=np.float64)
    tolerance = golden["tolerance"]
    worst = 0.0
    for g, expected in zip(golden["grads"], golden["expected"]):
        opt.apply([np.array(g, dtype=np.float64)], [x])
        if expected is not None:
            e = np.array(expected, dtype=np.float64)
            worst = max(worst, float(np.max(np.abs(x - e) / (tolerance + tolerance * np.abs(e)))))
    return worst


def f64(values):
    return np.array(values, dtype=np.float64)


@pytest.mark.parametrize("golden", GOLDENS, ids=[g["name"] for g in GOLDENS])
def test_keras_golden_trajectory(golden):
    """single_step_1d, single_step_2d and the 5-step golden, at Keras's tolerances."""
    assert run_golden(golden) <= 1.0


def test_single_step_1d_exact():
    """The worked example behind adafactor_test.py:23-30: at t=1, v = g*g + eps1 so
    u = sign(g), RMS(u) = 1, alpha = RMS(x) * min(0.5, 1) = sqrt(7.5)/2."""
    opt = Adafactor(learning_rate=0.5)
    x = f64([1.0, 2.0, 3.0, 4.0])
    opt.apply([f64([1.0, 6.0, 7.0, 2.0])], [x])
    alpha = np.sqrt(np.mean(np.square([1.0, 2.0, 3.0, 4.0]))) * 0.5
    np.testing.assert_allclose(x, [1.0 - alpha, 2.0 - alpha, 3.0 - alpha, 4.0 - alpha], rtol=1e-15)


def test_weight_decay_with_exclusion():  # adafactor_test.py:41-61
    g = np.zeros(())
    var1, var2, var3 = f64(2.0), f64(2.0), f64(2.0)

    opt1 = Adafactor(learning_rate=1.0, weight_decay=0.004)
    opt1.apply_gradients(zip([g], [var1]))

    opt2 = Adafactor(learning_rate=1.0, weight_decay=0.004)
    opt2.exclude_from_weight_decay(var_names=["exclude"])
    opt2.build([var1, var2], names=["variable", "exclude"])
    opt2.apply_gradients(zip([g, g], [var1, var2]))

    opt3 = Adafactor(learning_rate=1.0, weight_decay=0.004)
    opt3.exclude_from_weight_decay(var_list=[var3])
    opt3.apply_gradients(zip([g, g], [var1, var3]))

    assert var1 == pytest.approx(1.9760959, abs=1.5e-6)  # decimal=6 in Keras
    assert var1 == pytest.approx(2 * 0.996**3, rel=1e-15)  # what it is exactly
    assert var2 == 2.0
    assert var3 == 2.0


def test_clip_norm():  # adafactor_test.py:92-96
    opt = Adafactor(clipnorm=1)
    (clipped,) = opt._clip_gradients([f64([100.0, 100.0])])
    np.testing.assert_allclose(clipped, [2**0.5 / 2, 2**0.5 / 2], rtol=1e-15)


def test_clip_value():  # adafactor_test.py:98-102
    opt = Adafactor(clipvalue=1)
    (clipped,) = opt._clip_gradients([f64([100.0, 100.0])])
    np.testing.assert_array_equal(clipped, [1.0, 1.0])


def test_config_round_trip():  # adafactor_test.py:12-21
    opt = Adafactor(
        learning_rate=0.5,
        beta_2_decay=-0.65,
        epsilon_1=1e-15,
        epsilon_2=1e-4,
        clip_threshold=0.9,
        relative_step=False,
    )
    config = opt.get_config()
    again = Adafactor.from_config(config)
    assert again.get_config() == config
    assert config["beta_2_decay"] == -0.65 and config["relative_step"] is False
