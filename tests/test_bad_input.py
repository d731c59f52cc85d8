"""Bad input: the errors Keras 3.15.1 raises where it validates (same class, same message,
checked against real Keras in a subprocess when it is importable), the reference's own
checks beyond Keras, atomicity of a failed ``apply``, and what NaN / inf gradients do."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from reference import Adafactor, schedules


def f64(values):
    return np.array(values, dtype=np.float64)


def assert_bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), f"\n{a!r}\n{b!r}"


def snapshot(opt, variables):
    """Bytes of every variable and every piece of optimizer state."""
    state = opt.state
    items = [("iterations", state.iterations)]
    items += [(f"x{i}", x.tobytes()) for i, x in enumerate(variables)]
    for i, s in enumerate(state.slots):
        for name in ("r", "c", "v"):
            a = getattr(s, name)
            items.append((f"{name}{i}", None if a is None else a.tobytes()))
    for name in ("average", "accumulator"):
        arrays = getattr(state, name)
        items.append((name, None if arrays is None else [a.tobytes() for a in arrays]))
    return items


# ----------------------------------------------------------------------------- constructor
LR_MESSAGE = (
    "Argument `learning_rate` should be float, or an instance of LearningRateSchedule, or a "
    "callable (that takes in the current iteration value and returns the corresponding "
    "learning rate value). Received instead: learning_rate="
)
CLIP_MESSAGE = "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "

# (kwargs as a JSON-able dict, exact message). Keras raises ValueError for all of them.
CONSTRUCTOR_ERRORS = [
    ({"clipnorm": 1.0, "clipvalue": 2.0},
     CLIP_MESSAGE + "clipnorm=1.0, clipvalue=2.0, global_clipnorm=None"),
    ({"clipnorm": 1.0, "global_clipnorm": 3.0},
     CLIP_MESSAGE + "clipnorm=1.0, clipvalue=None, global_clipnorm=3.0"),
    ({"clipvalue": 1.0, "global_clipnorm": 3.0},
     CLIP_MESSAGE + "clipnorm=None, clipvalue=1.0, global_clipnorm=3.0"),
    ({"clipnorm": 1.0, "clipvalue": 2.0, "global_clipnorm": 3.0},
     CLIP_MESSAGE + "clipnorm=1.0, clipvalue=2.0, global_clipnorm=3.0"),
    # counted with `is not None`: a 0 that would disable clipping still conflicts
    ({"clipnorm": 0.0, "global_clipnorm": 1.0},
     CLIP_MESSAGE + "clipnorm=0.0, clipvalue=None, global_clipnorm=1.0"),
    ({"gradient_accumulation_steps": 1},
     "`gradient_accumulation_steps` must be an integer >= 2. Received: gradient_accumulation_steps=1"),
    ({"gradient_accumulation_steps": -3},
     "`gradient_accumulation_steps` must be an integer >= 2. Received: gradient_accumulation_steps=-3"),
    ({"learning_rate": 1}, LR_MESSAGE + "1"),
    ({"learning_rate": True}, LR_MESSAGE + "True"),
    ({"learning_rate": None}, LR_MESSAGE + "None"),
    ({"use_ema": True, "ema_momentum": 1.5},
     "`ema_momentum` must be in the range [0, 1]. Received: ema_momentum=1.5"),
    ({"use_ema": True, "ema_momentum": -0.1},
     "`ema_momentum` must be in the range [0, 1]. Received: ema_momentum=-0.1"),
    ({"use_ema": True, "ema_overwrite_frequency": -1},
     "`ema_overwrite_frequency` must be an integer >= 1 or None. Received: ema_overwrite_frequency=-1"),
    ({"use_ema": True, "ema_overwrite_frequency": 2.0},
     "`ema_overwrite_frequency` must be an integer >= 1 or None. Received: ema_overwrite_frequency=2.0"),
    ({"foo": 1}, "Argument(s) not recognized: {'foo': 1}"),
    # Keras's order of checks: kwargs, accumulation, EMA, clipping, learning rate
    ({"foo": 1, "learning_rate": 1}, "Argument(s) not recognized: {'foo': 1}"),
    ({"gradient_accumulation_steps": 1, "clipnorm": 1.0, "clipvalue": 1.0, "learning_rate": 1},
     "`gradient_accumulation_steps` must be an integer >= 2. Received: gradient_accumulation_steps=1"),
    ({"use_ema": True, "ema_momentum": 2.0, "clipnorm": 1.0, "clipvalue": 1.0},
     "`ema_momentum` must be in the range [0, 1]. Received: ema_momentum=2.0"),
    ({"clipnorm": 1.0, "clipvalue": 1.0, "learning_rate": 1},
     CLIP_MESSAGE + "clipnorm=1.0, clipvalue=1.0, global_clipnorm=None"),
]

# Accepted by Keras (and the reference) although they look wrong.
CONSTRUCTOR_ACCEPTED = [
    {"gradient_accumulation_steps": 0},  # falsy: accumulation off
    {"use_ema": False, "ema_momentum": 1.5},  # EMA arguments are checked only with use_ema
    {"use_ema": False, "ema_overwrite_frequency": -1},
    {"use_ema": True, "ema_overwrite_frequency": 0},  # falsy: no overwrite
    {"use_ema": True, "ema_overwrite_frequency": True},  # bool is an int >= 1
    {"use_ema": True, "ema_momentum": 0.0},
    {"use_ema": True, "ema_momentum": 1.0},
    {"clipnorm": -1.0},  # accepted; disables clipping at apply time
]


@pytest.mark.parametrize("kwargs,message", CONSTRUCTOR_ERRORS, ids=[json.dumps(k) for k, _ in CONSTRUCTOR_ERRORS])
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError) as info:
        Adafactor(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs", CONSTRUCTOR_ACCEPTED, ids=[json.dumps(k) for k in CONSTRUCTOR_ACCEPTED])
def test_constructor_accepts(kwargs):
    Adafactor(**kwargs)


def test_learning_rate_type_errors_name_the_value():
    # Keras formats the value with str(); the reference with repr(). For a str or a NumPy
    # float32 the two differ (Keras: learning_rate=0.1 / 0.10000000149011612); either way
    # the message names the offending value.
    for value, pattern in [("0.1", r"learning_rate='?0\.1'?$"), (np.float32(0.5), r"learning_rate=.*0\.5")]:
        with pytest.raises(ValueError, match=pattern):
            Adafactor(learning_rate=value)
    # float subclasses are floats
    Adafactor(learning_rate=np.float64(0.1))


def test_decay_kwarg_warns_and_is_ignored():
    with pytest.warns(UserWarning, match="Argument `decay` is no longer supported and will be ignored."):
        opt = Adafactor(learning_rate=0.1, decay=0.5)
    x = f64([1.0, 2.0])
    opt.apply([f64([1.0, 1.0])], [x])
    plain = Adafactor(learning_rate=0.1)
    y = f64([1.0, 2.0])
    plain.apply([f64([1.0, 1.0])], [y])
    assert_bitwise(x, y)


KERAS_ERRORS_SCRIPT = r"""
import json, os, sys, warnings
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras
keras.config.set_floatx("float64")
out = {"errors": [], "accepted": []}
for kwargs in json.loads(sys.argv[1]):
    try:
        keras.optimizers.Adafactor(**kwargs)
        out["errors"].append(None)
    except Exception as e:
        out["errors"].append([type(e).__name__, str(e)])
for kwargs in json.loads(sys.argv[2]):
    try:
        keras.optimizers.Adafactor(**kwargs)
        out["accepted"].append(True)
    except Exception as e:
        out["accepted"].append([type(e).__name__, str(e)])
opt = keras.optimizers.Adafactor(learning_rate=0.1)
x = keras.Variable(np.zeros(2), dtype="float64")
try:
    opt.apply([None], [x])
    out["all_none"] = None
except Exception as e:
    out["all_none"] = [type(e).__name__, str(e), int(opt.iterations.numpy())]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def keras_errors():
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
        pytest.skip("keras/tensorflow not importable: cannot compare errors with real Keras")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", KERAS_ERRORS_SCRIPT,
         json.dumps([k for k, _ in CONSTRUCTOR_ERRORS]), json.dumps(CONSTRUCTOR_ACCEPTED)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_constructor_errors_match_real_keras(keras_errors):
    for (kwargs, message), keras_result in zip(CONSTRUCTOR_ERRORS, keras_errors["errors"]):
        assert keras_result == ["ValueError", message], kwargs
    assert keras_errors["accepted"] == [True] * len(CONSTRUCTOR_ACCEPTED)


def test_all_none_gradients_match_real_keras(keras_errors):
    assert keras_errors["all_none"] == ["ValueError", "No gradients provided for any variable.", 0]


# ----------------------------------------------------------------------------- apply: Keras's checks
@pytest.fixture
def trained():
    """An optimizer with every kind of state, after 3 micro-steps, and its variables."""
    opt = Adafactor(learning_rate=0.1, use_ema=True, gradient_accumulation_steps=2, weight_decay=0.01)
    xs = [f64(2.0), f64([1.0, -2.0]), f64([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])]
    rng = np.random.default_rng(0)
    for _ in range(3):
        opt.apply([np.asarray(rng.normal(size=x.shape)) for x in xs], xs)
    return opt, xs


def good_grads(xs):
    return [np.ones_like(x) for x in xs]


def test_all_none_gradients(trained):
    opt, xs = trained
    before = snapshot(opt, xs)
    with pytest.raises(ValueError, match=r"^No gradients provided for any variable\.$"):
        opt.apply([None, None, None], xs)
    assert snapshot(opt, xs) == before
    fresh = Adafactor(learning_rate=0.1)
    with pytest.raises(ValueError, match="No gradients provided for any variable."):
        fresh.apply([None], [f64([1.0])])
    assert fresh.iterations == 0


def test_unknown_variables(trained):
    opt, xs = trained
    before = snapshot(opt, xs)
    others = [x.copy() for x in xs]  # equal values, different arrays: Keras matches by identity
    with pytest.raises(ValueError, match="Unknown variable"):
        opt.apply(good_grads(xs), others)
    with pytest.raises(ValueError, match="Unknown variable"):
        opt.apply(good_grads(xs)[:2], xs[:2])
    with pytest.raises(ValueError, match="Unknown variable"):
        opt.apply(good_grads(xs), xs[::-1])
    assert snapshot(opt, xs) == before


def test_grads_without_variables_on_unbuilt_optimizer():
    with pytest.raises(ValueError, match="optimizer must already be built"):
        Adafactor(learning_rate=0.1).apply([f64([1.0])])


# ----------------------------------------------------------------------------- apply: beyond Keras
def test_length_mismatch(trained):
    opt, xs = trained
    before = snapshot(opt, xs)
    with pytest.raises(ValueError, match=r"^Got 2 gradients for 3 variables$"):
        opt.apply(good_grads(xs)[:2], xs)
    with pytest.raises(ValueError, match=r"^Got 4 gradients for 3 variables$"):
        opt.apply(good_grads(xs) + [f64([1.0])])
    assert snapshot(opt, xs) == before


@pytest.mark.parametrize(
    "index,bad_shape",
    [(0, (1,)), (1, (3,)), (1, (2, 1)), (2, (3, 2)), (2, (2, 3, 1))],
)
def test_shape_mismatch_names_index_and_both_shapes(trained, index, bad_shape):
    opt, xs = trained
    before = snapshot(opt, xs)
    grads = good_grads(xs)
    grads[index] = np.ones(bad_shape)
    expected = (
        f"grads[{index}] has shape {bad_shape} but variable {index} "
        f"('variable_{index}') has shape {xs[index].shape}"
    )
    with pytest.raises(ValueError) as info:
        opt.apply(grads, xs)
    assert str(info.value) == expected
    assert snapshot(opt, xs) == before


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.complex128, np.bool_])
def test_non_float64_gradient_names_index_and_dtype(trained, dtype):
    opt, xs = trained
    before = snapshot(opt, xs)
    grads = good_grads(xs)
    grads[1] = np.ones(xs[1].shape, dtype=dtype)
    with pytest.raises(TypeError) as info:
        opt.apply(grads, xs)
    message = str(info.value)
    assert message.startswith("grads[1] (variable 'variable_1') has dtype ")
    assert np.dtype(dtype).name in message and "float64" in message
    assert snapshot(opt, xs) == before


@pytest.mark.parametrize(
    "bad,type_name",
    [([1.0, 1.0], "list"), (1.0, "float"), (np.float64(1.0), "float64"), ((1.0, 1.0), "tuple"), ("1", "str")],
)
def test_non_array_gradient_names_index_and_type(trained, bad, type_name):
    opt, xs = trained
    before = snapshot(opt, xs)
    grads = good_grads(xs)
    grads[1] = bad
    with pytest.raises(TypeError) as info:
        opt.apply(grads, xs)
    assert str(info.value) == f"grads[1] (variable 'variable_1') must be a NumPy array, got {type_name}"
    assert snapshot(opt, xs) == before


def test_non_array_or_non_float64_variable_at_build():
    with pytest.raises(TypeError, match=r"^variables\[1\] must be a NumPy array, got list$"):
        Adafactor(learning_rate=0.1).build([f64([1.0]), [1.0, 2.0]])
    with pytest.raises(TypeError, match=r"^variables\[0\] must be a NumPy array, got float$"):
        Adafactor(learning_rate=0.1).apply([f64(1.0)], [1.0])
    with pytest.raises(TypeError, match=r"^variables\[0\] has dtype float32"):
        Adafactor(learning_rate=0.1).apply([f64([1.0])], [np.ones(1, np.float32)])
    with pytest.raises(ValueError, match="Got 1 names for 2 variables"):
        Adafactor(learning_rate=0.1).build([f64([1.0]), f64([2.0])], names=["a"])


def test_failed_stateless_apply_leaves_everything_unchanged(trained):
    opt, xs = trained
    before = snapshot(opt, xs)
    state = opt.get_state()
    grads = good_grads(xs)
    grads[2] = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"grads\[2\] has shape \(3, 2\)"):
        opt.stateless_apply(state, grads, xs)
    with pytest.raises(ValueError, match="No gradients provided"):
        opt.stateless_apply(state, [None] * 3, xs)
    assert snapshot(opt, xs) == before


def test_learning_rate_that_raises_leaves_everything_unchanged():
    calls = {"n": 0}

    def learning_rate():
        calls["n"] += 1
        if calls["n"] == 4:  # step 2: after the weight decay's call, at the step's call
            raise RuntimeError("learning rate unavailable")
        return 0.1

    opt = Adafactor(learning_rate=learning_rate, weight_decay=0.5, use_ema=True)
    xs = [f64([1.0, 2.0]), f64([[1.0, 2.0]])]
    opt.apply(good_grads(xs), xs)
    opt.build(xs)
    before = snapshot(opt, xs)
    with pytest.raises(RuntimeError, match="learning rate unavailable"):
        opt.apply(good_grads(xs), xs)
    assert snapshot(opt, xs) == before


def test_failed_schedule_leaves_everything_unchanged():
    # Keras quirk kept by the reference: empty boundaries pass the constructor and fail
    # only when the schedule is called.
    schedule = schedules.PiecewiseConstantDecay([], [0.1])
    opt = Adafactor(learning_rate=schedule)
    x = f64([1.0, 2.0])
    opt.build([x])
    before = snapshot(opt, [x])
    with pytest.raises(IndexError):
        opt.apply([f64([1.0, 1.0])], [x])
    assert snapshot(opt, [x]) == before


def test_floating_point_error_mid_step_leaves_state_unchanged():
    # Under np.errstate(all="raise") (or warnings turned into errors) the step itself can
    # raise after an earlier variable's slots were already computed: nothing may stick.
    opt = Adafactor(learning_rate=0.1, epsilon_1=0.0)
    a, b = f64([1.0, 2.0]), f64([3.0, 4.0])
    opt.build([a, b])
    before = snapshot(opt, [a, b])
    with np.errstate(all="raise"):
        with pytest.raises(FloatingPointError):
            # variable 1: epsilon_1 = 0 and a zero gradient give 0 / 0 in U = g / sqrt(v)
            opt.apply([f64([1.0, 1.0]), f64([0.0, 0.0])], [a, b])
    assert snapshot(opt, [a, b]) == before


def test_read_only_variable_is_rejected_before_anything_changes():
    opt = Adafactor(learning_rate=0.1)
    a = f64([1.0, 2.0])
    b = np.broadcast_to(f64(3.0), (2,))  # a read-only float64 view
    try:
        opt.build([a, b])
    except (TypeError, ValueError) as error:
        assert "variables[1]" in str(error)  # rejecting it up front is fine
        return
    before = snapshot(opt, [a, b])
    with pytest.raises((TypeError, ValueError)):
        opt.apply([f64([1.0, 1.0]), f64([1.0, 1.0])], [a, b])
    assert snapshot(opt, [a, b]) == before


def test_variable_made_read_only_after_build_changes_nothing():
    opt = Adafactor(learning_rate=0.1)
    a, b = f64([1.0, 2.0]), f64([3.0, 4.0])
    opt.build([a, b])
    b.flags.writeable = False
    before = snapshot(opt, [a, b])
    with pytest.raises((TypeError, ValueError), match=r"variables\[1\]"):
        opt.apply([f64([1.0, 1.0]), f64([1.0, 1.0])], [a, b])
    assert snapshot(opt, [a, b]) == before


# ----------------------------------------------------------------------------- NaN and inf
# Every outcome below was also checked against real Keras 3.15.1 (TensorFlow backend,
# floatx float64) in a scratch run when this file was written: tf.maximum propagates NaN
# like np.maximum, and tf.clip_by_norm / clip_by_global_norm give the same NaNs.
nan, inf = np.nan, np.inf


def one_step(x, g, **kwargs):
    opt = Adafactor(learning_rate=0.1, **kwargs)
    xs = [f64(v) for v in x]
    with np.errstate(all="ignore"):
        opt.apply([f64(v) for v in g], xs)
    return opt, xs


def test_nan_in_vector_gradient_makes_whole_variable_nan():
    # v is NaN only at that element, but U's RMS is NaN, and the clip denominator
    # max(1, NaN) is NaN (np.maximum propagates NaN), so every element's update is NaN.
    # Another variable is unaffected (no global clipping).
    opt, (x, y) = one_step([[1.0, 2.0], [3.0, 4.0]], [[nan, 1.0], [1.0, 1.0]])
    assert np.isnan(x).all()
    assert np.isnan(opt.slots(0).v[0]) and opt.slots(0).v[1] == 1.0
    assert np.isfinite(y).all() and np.isfinite(opt.slots(1).v).all()


def test_nan_in_matrix_gradient():
    # r is NaN in that row, c in that column; mean(r) is NaN, so all of v and x are NaN.
    opt, (x,) = one_step([[[1.0, 2.0], [3.0, 4.0]]], [[[nan, 1.0], [2.0, 3.0]]])
    slots = opt.slots(0)
    assert np.isnan(slots.r).tolist() == [True, False]
    assert np.isnan(slots.c).tolist() == [True, False]
    assert slots.r[1] == (4.0 + 9.0) / 2 and slots.c[1] == (1.0 + 9.0) / 2
    assert np.isnan(slots.v).all() and np.isnan(x).all()


def test_inf_in_vector_gradient():
    # v = [inf, 1]; U[0] = inf / sqrt(inf) = inf / inf = NaN, then as for NaN: all of x NaN.
    for value in (inf, -inf):
        opt, (x,) = one_step([[1.0, 2.0]], [[value, 1.0]])
        assert opt.slots(0).v.tolist() == [inf, 1.0]
        assert np.isnan(x).all()


def test_inf_in_matrix_gradient():
    # r = [inf, 6.5], c = [inf, 5]; r / mean(r) = [inf/inf, 6.5/inf] = [NaN, 0], so
    # v = [[NaN, NaN], [NaN (0 * inf), 0 (0 * 5)]]; U is NaN -> all of x NaN.
    opt, (x,) = one_step([[[1.0, 2.0], [3.0, 4.0]]], [[[inf, 1.0], [2.0, 3.0]]])
    slots = opt.slots(0)
    assert slots.r.tolist() == [inf, 6.5] and slots.c.tolist() == [inf, 5.0]
    assert np.isnan(slots.v).tolist() == [[True, True], [True, False]]
    assert slots.v[1, 1] == 0.0
    assert np.isnan(x).all()


def test_overflowing_gradient_square_freezes_that_element():
    # (1e200)**2 = inf: v = [inf, 1], U = [1e200 / inf, 1] = [0, 1], RMS(U) = sqrt(1/2) < 1:
    # the element with the huge gradient does not move, the other moves by alpha.
    opt, (x,) = one_step([[1.0, 2.0]], [[1e200, 1.0]])
    assert opt.slots(0).v.tolist() == [inf, 1.0]
    alpha = np.sqrt((1.0 + 4.0) / 2) * 0.1
    assert x.tolist() == [1.0, 2.0 - alpha]


def test_zero_gradient_with_zero_epsilon_1_is_nan():
    # epsilon_1 exists for this: v = 0 + 0, U = 0 / 0 = NaN, and the NaN RMS spreads.
    opt, (x,) = one_step([[1.0, 2.0]], [[0.0, 1.0]], epsilon_1=0.0)
    assert opt.slots(0).v.tolist() == [0.0, 1.0]
    assert np.isnan(x).all()


def test_clipvalue_rescues_inf_but_not_nan():
    # np.clip maps +-inf to +-clipvalue; NaN stays NaN.
    opt, (x,) = one_step([[1.0, 2.0]], [[inf, 1.0]], clipvalue=1.0)
    assert opt.slots(0).v.tolist() == [1.0, 1.0] and np.isfinite(x).all()
    opt, (x,) = one_step([[1.0, 2.0]], [[-inf, 1.0]], clipvalue=0.5)
    assert opt.slots(0).v.tolist() == [0.25, 0.25] and np.isfinite(x).all()
    opt, (x,) = one_step([[1.0, 2.0]], [[nan, 1.0]], clipvalue=1.0)
    assert np.isnan(opt.slots(0).v[0]) and np.isnan(x).all()


def test_clipnorm_with_inf():
    # norm inf: g * c / inf gives NaN for the inf element (inf / inf) and 0 elsewhere,
    # so v = [NaN, 0 + eps1] and x is all NaN; the other variable is clipped normally.
    opt, (x, y) = one_step([[1.0, 2.0], [3.0, 4.0]], [[inf, 1.0], [0.3, 0.4]], clipnorm=1.0)
    assert np.isnan(opt.slots(0).v[0]) and opt.slots(0).v[1] == 1e-30
    assert np.isnan(x).all() and np.isfinite(y).all()


@pytest.mark.parametrize("bad", [nan, inf])
def test_global_clipnorm_spreads_nan_and_inf_to_every_variable(bad):
    # The global norm is NaN/inf; the `+ (n - n)` term makes the scale NaN for everyone.
    opt, (x, y) = one_step([[1.0, 2.0], [3.0, 4.0]], [[bad, 1.0], [0.3, 0.4]], global_clipnorm=1.0)
    assert np.isnan(x).all() and np.isnan(y).all()
    assert np.isnan(opt.slots(1).v).all()


def test_nan_during_accumulation_waits_for_the_update_step():
    opt = Adafactor(learning_rate=0.1, gradient_accumulation_steps=2, use_ema=True)
    x = f64([1.0, 2.0])
    with np.errstate(all="ignore"):
        opt.apply([f64([nan, 1.0])], [x])
        # micro-step 1: only the accumulator holds the NaN; x and its average are finite
        assert x.tolist() == [1.0, 2.0] and opt.average(0).tolist() == [1.0, 2.0]
        assert np.isnan(opt.accumulator(0)[0]) and opt.accumulator(0)[1] == 1.0
        opt.apply([f64([1.0, 1.0])], [x])
    # update step: (g + acc) / 2 has the NaN; x and the average become all NaN
    assert np.isnan(x).all() and np.isnan(opt.average(0)).all()
    assert opt.accumulator(0).tolist() == [0.0, 0.0]  # the reset clears the NaN


def test_nan_persists_in_unfactored_v():
    opt = Adafactor(learning_rate=0.1)
    x = f64([1.0, 2.0])
    with np.errstate(all="ignore"):
        opt.apply([f64([nan, 1.0])], [x])
        opt.apply([f64([1.0, 1.0])], [x])
    # beta * NaN + ...: the NaN element of v never recovers; x stays NaN
    assert np.isnan(opt.slots(0).v[0]) and not np.isnan(opt.slots(0).v[1])
    assert np.isnan(x).all()
