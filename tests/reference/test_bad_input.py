"""Bad input: the errors Keras 3.15.1 raises where it validates (same class, same message,
checked against real Keras in a subprocess when it is importable), the reference's own
checks beyond Keras, atomicity of a failed ``apply``, and what NaN / inf gradients do."""

import importlib.util
import json
import sys

import numpy as np
import pytest

from reference import Adafactor, schedules
from tests import background
from tests.helpers import assert_bitwise, f64, gate


def snapshot(opt, variables):
    """Bytes of every variable and every piece of optimizer state."""
    state = opt.state
    items = [("iterations", state.iterations)]
    items += [(f"x{i}", x.tobytes()) for i, x in enumerate(variables)]
    for name in ("r", "c", "v"):
        for i, a in enumerate(getattr(state, name)):
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


#: Real Keras's answers, computed in a child process on the second core while other tests run.
KERAS_ERRORS = background.Job(
    "keras-constructor-errors",
    [sys.executable, "-c", KERAS_ERRORS_SCRIPT, json.dumps([k for k, _ in CONSTRUCTOR_ERRORS]),
     json.dumps(CONSTRUCTOR_ACCEPTED)],
    env=background.environment(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3"), timeout=300,
    fixtures=("keras_errors",), requires=("keras", "tensorflow"))


@pytest.fixture(scope="module")
def keras_errors():
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
        pytest.skip("keras/tensorflow not importable: cannot compare errors with real Keras")
    proc = KERAS_ERRORS.result()
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
    assert np.isnan(opt.state.v[0][0]) and opt.state.v[0][1] == 1.0
    assert np.isfinite(y).all() and np.isfinite(opt.state.v[1]).all()


def test_nan_in_matrix_gradient():
    # r is NaN in that row, c in that column; mean(r) is NaN, so all of v and x are NaN.
    opt, (x,) = one_step([[[1.0, 2.0], [3.0, 4.0]]], [[[nan, 1.0], [2.0, 3.0]]])
    r, c, v = opt.state.r[0], opt.state.c[0], opt.state.v[0]
    assert np.isnan(r).tolist() == [True, False]
    assert np.isnan(c).tolist() == [True, False]
    assert r[1] == (4.0 + 9.0) / 2 and c[1] == (1.0 + 9.0) / 2
    assert np.isnan(v).all() and np.isnan(x).all()


def test_inf_in_vector_gradient():
    # v = [inf, 1]; U[0] = inf / sqrt(inf) = inf / inf = NaN, then as for NaN: all of x NaN.
    for value in (inf, -inf):
        opt, (x,) = one_step([[1.0, 2.0]], [[value, 1.0]])
        assert opt.state.v[0].tolist() == [inf, 1.0]
        assert np.isnan(x).all()


def test_inf_in_matrix_gradient():
    # r = [inf, 6.5], c = [inf, 5]; r / mean(r) = [inf/inf, 6.5/inf] = [NaN, 0], so
    # v = [[NaN, NaN], [NaN (0 * inf), 0 (0 * 5)]]; U is NaN -> all of x NaN.
    opt, (x,) = one_step([[[1.0, 2.0], [3.0, 4.0]]], [[[inf, 1.0], [2.0, 3.0]]])
    r, c, v = opt.state.r[0], opt.state.c[0], opt.state.v[0]
    assert r.tolist() == [inf, 6.5] and c.tolist() == [inf, 5.0]
    assert np.isnan(v).tolist() == [[True, True], [True, False]]
    assert v[1, 1] == 0.0
    assert np.isnan(x).all()


def test_overflowing_gradient_square_freezes_that_element():
    # (1e200)**2 = inf: v = [inf, 1], U = [1e200 / inf, 1] = [0, 1], RMS(U) = sqrt(1/2) < 1:
    # the element with the huge gradient does not move, the other moves by alpha.
    opt, (x,) = one_step([[1.0, 2.0]], [[1e200, 1.0]])
    assert opt.state.v[0].tolist() == [inf, 1.0]
    alpha = np.sqrt((1.0 + 4.0) / 2) * 0.1
    assert x.tolist() == [1.0, 2.0 - alpha]


def test_zero_gradient_with_zero_epsilon_1_is_nan():
    # epsilon_1 exists for this: v = 0 + 0, U = 0 / 0 = NaN, and the NaN RMS spreads.
    opt, (x,) = one_step([[1.0, 2.0]], [[0.0, 1.0]], epsilon_1=0.0)
    assert opt.state.v[0].tolist() == [0.0, 1.0]
    assert np.isnan(x).all()


def test_clipvalue_rescues_inf_but_not_nan():
    # np.clip maps +-inf to +-clipvalue; NaN stays NaN.
    opt, (x,) = one_step([[1.0, 2.0]], [[inf, 1.0]], clipvalue=1.0)
    assert opt.state.v[0].tolist() == [1.0, 1.0] and np.isfinite(x).all()
    opt, (x,) = one_step([[1.0, 2.0]], [[-inf, 1.0]], clipvalue=0.5)
    assert opt.state.v[0].tolist() == [0.25, 0.25] and np.isfinite(x).all()
    opt, (x,) = one_step([[1.0, 2.0]], [[nan, 1.0]], clipvalue=1.0)
    assert np.isnan(opt.state.v[0][0]) and np.isnan(x).all()


def test_clipnorm_with_inf():
    # norm inf: g * c / inf gives NaN for the inf element (inf / inf) and 0 elsewhere,
    # so v = [NaN, 0 + eps1] and x is all NaN; the other variable is clipped normally.
    opt, (x, y) = one_step([[1.0, 2.0], [3.0, 4.0]], [[inf, 1.0], [0.3, 0.4]], clipnorm=1.0)
    assert np.isnan(opt.state.v[0][0]) and opt.state.v[0][1] == 1e-30
    assert np.isnan(x).all() and np.isfinite(y).all()


@pytest.mark.parametrize("bad", [nan, inf])
def test_global_clipnorm_spreads_nan_and_inf_to_every_variable(bad):
    # The global norm is NaN/inf; the `+ (n - n)` term makes the scale NaN for everyone.
    opt, (x, y) = one_step([[1.0, 2.0], [3.0, 4.0]], [[bad, 1.0], [0.3, 0.4]], global_clipnorm=1.0)
    assert np.isnan(x).all() and np.isnan(y).all()
    assert np.isnan(opt.state.v[1]).all()


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
    assert np.isnan(opt.state.v[0][0]) and not np.isnan(opt.state.v[0][1])
    assert np.isnan(x).all()


# ============================================================================ damaged vectors
# A damaged or hand-made vector must be a format error (VectorFormatError; exit 2 from the
# gate) naming the file and the vector, never a DOES NOT CONFORM blamed on the
# implementation. Each test damages one vector of a small corpus written to tmp_path with a
# MANIFEST that matches it (sha256 and counts), so only the damage itself can be refused.
from pathlib import Path  # noqa: E402

from conformance import vectorfile as vf  # noqa: E402

from tests.helpers import REPO, VECTORS  # noqa: E402
KERAS_FILE, KERAS_ID = "keras/arguments.json", "arguments/learning_rate/0.01"  # kernel (5, 3), bias (3,)


def one_vector(relative, vector_id):
    """The vector file ``relative`` holding only the vector ``vector_id`` (parsed)."""
    document = json.loads((VECTORS / relative).read_text())
    document["vectors"] = [v for v in document["vectors"] if v["id"] == vector_id]
    assert len(document["vectors"]) == 1, vector_id
    return document


def write_corpus(directory, files):
    """Write ``files`` ({relative path: document or raw text}) and a MANIFEST.json that
    matches them; return the directory."""
    directory = Path(directory)
    entries = {}
    for relative, content in files.items():
        text = content if isinstance(content, str) else vf.dumps(content)
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        count = len(json.loads(text, parse_constant=lambda token: 0.0)["vectors"])
        entries[relative] = {"sha256": vf.sha256_of(target), "vectors": count}
    manifest = {"format": vf.FORMAT_NAME, "schema_version": vf.SCHEMA_VERSION,
                "total_vectors": sum(e["vectors"] for e in entries.values()), "files": entries}
    (directory / vf.MANIFEST_NAME).write_text(vf.dumps(manifest))
    return directory


def damaged(tmp_path, damage, relative=KERAS_FILE, vector_id=KERAS_ID):
    """A one-vector corpus with ``damage(vector)`` applied; returns its directory."""
    document = one_vector(relative, vector_id)
    damage(document["vectors"][0])
    return write_corpus(tmp_path / "v", {relative: document})


def refused(directory, *fragments, vector_id=KERAS_ID, relative=KERAS_FILE):
    """load_corpus refuses ``directory`` with a message naming the file, the vector id and
    every fragment."""
    with pytest.raises(vf.VectorFormatError) as info:
        vf.load_corpus(directory)
    message = str(info.value)
    assert relative in message, message
    if vector_id is not None:
        assert repr(vector_id) in message and info.value.vector_id == vector_id, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_the_undamaged_one_vector_corpus_loads(tmp_path):
    directory = damaged(tmp_path, lambda v: None)
    (vector,) = vf.load_corpus(directory)[KERAS_FILE]["vectors"]
    assert vector["id"] == KERAS_ID


def _transpose_shape(array):
    array["shape"] = array["shape"][::-1]  # (5, 3) -> (3, 5): the same 15 values


def test_expected_array_of_the_wrong_shape_with_the_right_count(tmp_path):
    directory = damaged(tmp_path, lambda v: _transpose_shape(v["steps"][2]["expected"]["variables"][0]))
    refused(directory, "steps[2].expected.variables[0]", "[3, 5]", "[5, 3]")


def test_expected_state_of_the_wrong_shape_with_the_right_count(tmp_path):
    def damage(vector):  # r of the (5, 3) kernel is (5,); make it (1, 5)
        vector["steps"][0]["expected"]["r"][0]["shape"] = [1, 5]
    refused(damaged(tmp_path, damage), "steps[0].expected.r[0]", "[1, 5]", "expected [5]")


def test_expected_state_present_where_keras_keeps_none(tmp_path):
    def damage(vector):  # the bias is 1-D: Keras keeps no r for it
        expected = vector["steps"][0]["expected"]
        expected["r"][1] = expected["v"][1]
    refused(damaged(tmp_path, damage), "steps[0].expected.r[1] must be null")


# --- the initial state (schema version 2): checked like an expected state, without the schema
def test_initial_state_of_the_wrong_shape(tmp_path):
    def damage(vector):  # r of the (5, 3) kernel is (5,); make it (1, 5)
        vector["initial_state"]["r"][0]["shape"] = [1, 5]
    refused(damaged(tmp_path, damage), "initial_state.r[0]", "[1, 5]", "expected [5]")


def test_initial_state_present_where_keras_keeps_none(tmp_path):
    def damage(vector):  # no use_ema: Keras keeps no average
        vector["initial_state"]["average"] = [vector["variables"][0]["initial"], vector["variables"][1]["initial"]]
    refused(damaged(tmp_path, damage), "initial_state.average must be null")


def test_initial_state_missing_from_a_vector_with_steps(tmp_path):
    refused(damaged(tmp_path, lambda v: v.update(initial_state=None)), "initial_state = null",
            "needs the state before step 1")
    refused(damaged(tmp_path, lambda v: v.update(rms_floor=None)), "rms_floor = null")


def test_initial_state_in_a_vector_without_steps(tmp_path):
    relative, vector_id = "keras/invalid.json", "invalid/clipnorm_and_clipvalue"
    document = one_vector(relative, vector_id)
    source = one_vector(KERAS_FILE, KERAS_ID)["vectors"][0]
    document["vectors"][0]["initial_state"] = source["initial_state"]
    refused(write_corpus(tmp_path / "v", {relative: document}), "initial_state and rms_floor must be null",
            vector_id=vector_id, relative=relative)


def test_initial_state_nonfinite_without_its_flag(tmp_path):
    def damage(vector):
        vector["initial_state"]["v"][1]["bits"][2] = "7ff8000000000000"
    refused(damaged(tmp_path, damage), "initial_state.v[1] holds NaN or inf", "NONFINITE_STATE")
    refused(damaged(tmp_path, lambda v: v.update(rms_floor="7ff0000000000000")), "rms_floor holds NaN or inf")


def test_state_dtypes_name_a_kind_and_a_dtype_the_state_keeps(tmp_path):
    refused(damaged(tmp_path, lambda v: v.update(state_dtypes={"momentum": "float8"})),
            "state_dtypes.momentum = \"float8\"")
    refused(damaged(tmp_path, lambda v: v.update(state_dtypes={"moment": "float32"})), "state_dtypes.moment")
    refused(damaged(tmp_path, lambda v: v.update(state_dtypes={"momentum": "float32"})),
            "state_dtypes names momentum, but the initial state keeps no momentum")


def test_gradient_of_the_wrong_shape_with_the_right_count(tmp_path):
    directory = damaged(tmp_path, lambda v: _transpose_shape(v["steps"][4]["grads"][0]))
    refused(directory, "steps[4].grads[0]", "[3, 5]", "[5, 3]")


def test_fewer_gradients_than_variables(tmp_path):
    directory = damaged(tmp_path, lambda v: v["steps"][1]["grads"].pop())
    refused(directory, "steps[1].grads holds 1 gradients for 2 variables")


def test_null_gradient_without_its_flag(tmp_path):
    def damage(vector):
        vector["steps"][1]["grads"][1] = None
    refused(damaged(tmp_path, damage), "steps[1].grads[1] is null", "NONE_GRADIENT")


def test_fewer_expected_arrays_than_variables(tmp_path):
    directory = damaged(tmp_path, lambda v: v["steps"][3]["expected"]["v"].pop())
    refused(directory, "steps[3].expected.v holds 1 entries for 2 variables")


NAN, INF = "7ff8000000000000", "7ff0000000000000"


def test_nan_gradient_in_a_valid_vector_without_the_flag(tmp_path):
    def damage(vector):
        vector["steps"][2]["grads"][1]["bits"][0] = NAN
    refused(damaged(tmp_path, damage), "steps[2].grads[1] holds NaN or inf", "NONFINITE_GRADIENT")


def test_inf_in_the_expected_state_without_the_flag(tmp_path):
    def damage(vector):
        vector["steps"][5]["expected"]["c"][0]["bits"][1] = INF
    refused(damaged(tmp_path, damage), "steps[5].expected.c[0] holds NaN or inf", "NONFINITE_STATE")


def test_nan_initial_value_without_the_flag(tmp_path):
    def damage(vector):
        vector["variables"][0]["initial"]["bits"][3] = NAN
    refused(damaged(tmp_path, damage), "variables[0].initial holds NaN or inf", "NONFINITE_STATE")


def test_subnormal_and_overflowing_gradients_need_their_flags(tmp_path):
    def subnormal(vector):
        vector["steps"][0]["grads"][0]["bits"][0] = "0000000000000001"
    refused(damaged(tmp_path / "a", subnormal), "steps[0].grads[0] holds a subnormal value", "SUBNORMAL_GRADIENT")

    def huge(vector):
        vector["steps"][0]["grads"][0]["bits"][0] = vf.float_to_bits(1e160)
    refused(damaged(tmp_path / "b", huge), "square overflows", "SQUARE_OVERFLOW")


def test_a_special_gradient_flag_on_a_valid_vector(tmp_path):
    def damage(vector):
        vector["flags"] = sorted(vector["flags"] + ["NONFINITE_GRADIENT"])
    document = one_vector(KERAS_FILE, KERAS_ID)
    damage(document["vectors"][0])
    document["notes"]["NONFINITE_GRADIENT"] = "a gradient holds NaN or +-inf"
    directory = write_corpus(tmp_path / "v", {KERAS_FILE: document})
    refused(directory, "NONFINITE_GRADIENT", "result is valid")


def test_flagged_non_finite_vectors_load():
    """The corpus's own NaN/inf vectors carry their flags and load (the positive case)."""
    document = vf.load_file(VECTORS / "keras" / "special_values.json")
    nan_vector = next(v for v in document["vectors"] if v["id"] == "special_values/nan_gradient")
    assert {"NONFINITE_GRADIENT", "NONFINITE_STATE"} <= set(nan_vector["flags"])
    assert nan_vector["result"] == "acceptable"


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_bare_nan_or_infinity_json_token(tmp_path, token):
    text = vf.dumps(one_vector(KERAS_FILE, KERAS_ID))
    assert '"learning_rate": 0.01' in text
    directory = write_corpus(tmp_path / "v", {KERAS_FILE: text.replace('"learning_rate": 0.01',
                                                                        f'"learning_rate": {token}', 1)})
    refused(directory, f"bare {token} token", "vectors/0/config/learning_rate")


def test_bare_nan_token_in_the_manifest(tmp_path):
    directory = write_corpus(tmp_path / "v", {KERAS_FILE: one_vector(KERAS_FILE, KERAS_ID)})
    manifest = directory / vf.MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"total_vectors": 1', '"total_vectors": NaN'))
    with pytest.raises(vf.VectorFormatError, match=r"MANIFEST\.json: invalid JSON at total_vectors: bare NaN"):
        vf.load_corpus(directory)


@pytest.mark.parametrize("key,value,fragment", [
    ("learning_rate", "fast", 'config.learning_rate = "fast"'),
    ("learning_rate", 1, "config.learning_rate = 1: expected a float"),
    ("use_ema", "yes", 'config.use_ema = "yes": expected boolean'),
    ("epsilon_1", True, "config.epsilon_1 = true: expected number"),
    ("gradient_accumulation_steps", "2", 'config.gradient_accumulation_steps = "2": expected number or null'),
    ("ema_overwrite_frequency", True, "config.ema_overwrite_frequency = true: expected number or null"),
    ("clipnorm", [1.0], "config.clipnorm = [1.0]: expected number or null"),
    ("name", None, "config.name = null: expected string"),
    ("beta_1", 0.9, "unknown argument(s) ['beta_1']"),
    ("learning_rate", {"module": "keras.optimizers.schedules", "class_name": "ExponentialDecay",
                       "config": {"initial_learning_rate": 0.5, "decay_steps": "3", "decay_rate": 0.5},
                       "registered_name": None}, 'config.learning_rate.config.decay_steps = "3"'),
    ("learning_rate", {"module": "keras.optimizers.schedules", "class_name": "ExponentialDecay",
                       "config": {"initial_learning_rate": 0.5, "decay_rate": 0.5},
                       "registered_name": None}, "ExponentialDecay needs ['decay_steps']"),
    ("learning_rate", {"module": "keras.optimizers.schedules", "class_name": "ExponentialDecay",
                       "config": {"initial_learning_rate": 0.5, "decay_steps": 3, "decay_rate": 0.5,
                                  "speed": 2}, "registered_name": None}, "unknown argument(s) ['speed']"),
])
def test_wrongly_typed_or_unknown_configuration(tmp_path, key, value, fragment):
    def damage(vector):
        vector["config"][key] = value
    refused(damaged(tmp_path, damage, ), fragment)


def test_an_invalid_vectors_bad_configuration_is_what_it_tests():
    """Invalid vectors carry bad configurations on purpose (learning_rate "0.01", an unknown
    argument): only their structure is checked, and they load."""
    document = vf.load_file(VECTORS / "keras" / "invalid.json")
    configs = {v["id"]: v["config"] for v in document["vectors"]}
    assert configs["invalid/learning_rate_string"] == {"learning_rate": "0.01"}
    assert configs["invalid/unknown_argument"] == {"beta_1": 0.9}


def test_dialect_argument_of_the_wrong_type(tmp_path):
    vector_id = "torch/shapes/defaults/tall"
    directory = damaged(tmp_path, lambda v: v["config"].update(eps=[None]), "torch/shapes.json", vector_id)
    refused(directory, "config.eps = [null]: expected [number or null, number]", vector_id=vector_id,
            relative="torch/shapes.json")


@pytest.mark.parametrize("relative,vector_id,damage,fragment", [
    # torch keeps r and c, no v, for a matrix
    ("torch/shapes.json", "torch/shapes/defaults/tall",
     lambda v: v["steps"][0]["expected"].update(v=[v["steps"][0]["expected"]["variables"][0]]),
     "steps[0].expected.v[0] must be null"),
    # optax factors its two largest axes: for (2, 3, 5) r lacks axis 2, c lacks axis 1
    ("optax/shapes.json", "optax/shapes/factor_all/3d",
     lambda v: v["steps"][1]["expected"]["c"][0].update(shape=[5, 2]),
     "steps[1].expected.c[0] has shape [5, 2], expected [2, 5]"),
    # ... not the last two: for (5, 3) r lacks axis 0 (the largest), c axis 1; swapped is wrong
    ("optax/shapes.json", "optax/shapes/factor_all/tall",
     lambda v: v["steps"][0]["expected"].update(r=v["steps"][0]["expected"]["c"], c=v["steps"][0]["expected"]["r"]),
     "steps[0].expected.r[0] has shape [5], expected [3]"),
    ("optax/shapes.json", "optax/shapes/defaults/3d",  # not factored at min_dim_size_to_factor=128
     lambda v: v["steps"][1]["expected"].update(r=[v["steps"][1]["expected"]["v"][0]]),
     "steps[1].expected.r[0] must be null"),
    # transformers with beta1 keeps a momentum per variable
    ("transformers/arguments.json", "transformers/arguments/beta1/0.9",
     lambda v: v["steps"][0]["expected"].pop("momentum"),
     "steps[0].expected.momentum holds null entries for 2 variables"),
])
def test_dialect_state_shapes(tmp_path, relative, vector_id, damage, fragment):
    refused(damaged(tmp_path, damage, relative, vector_id), fragment, vector_id=vector_id, relative=relative)


def test_duplicate_id_across_two_files_names_both(tmp_path):
    document = one_vector(KERAS_FILE, KERAS_ID)
    directory = write_corpus(tmp_path / "v", {KERAS_FILE: document, "keras/copy.json": document})
    message = refused(directory, "duplicate vector id", relative="keras/copy.json")
    assert KERAS_FILE in message


def test_vector_file_not_in_the_manifest(tmp_path):
    directory = write_corpus(tmp_path / "v", {KERAS_FILE: one_vector(KERAS_FILE, KERAS_ID)})
    (directory / "keras" / "extra.json").write_text(vf.dumps(one_vector("keras/shapes.json", "shapes/defaults/scalar")))
    refused(directory, "does not list", "make vectors", vector_id=None, relative="keras/extra.json")


def test_error_step_must_be_the_last_and_unexpected(tmp_path):
    relative, vector_id = "keras/invalid.json", "invalid/all_gradients_none"
    directory = damaged(tmp_path, lambda v: v["error"].update(step=0), relative, vector_id)
    refused(directory, "error.step = 0: the step that raises must be the last", vector_id=vector_id,
            relative=relative)


def test_malformed_structure_is_a_format_error_even_without_the_schema(tmp_path, monkeypatch):
    """Without jsonschema the loader's own checks still turn structural garbage into a
    format error naming the vector (not a KeyError traceback)."""
    import sys as _sys

    monkeypatch.setitem(_sys.modules, "jsonschema", None)
    monkeypatch.setattr(vf, "_WARNED_NO_SCHEMA", True)
    directory = damaged(tmp_path, lambda v: v["steps"][0].pop("expected"))
    refused(directory)
    directory = damaged(tmp_path / "b", lambda v: v["steps"][0]["grads"][0].update(bits=[1] * 15))
    refused(directory, "gradients: a value is not a 16-digit bit string")


def test_manifest_total_must_match(tmp_path):
    directory = write_corpus(tmp_path / "v", {KERAS_FILE: one_vector(KERAS_FILE, KERAS_ID)})
    manifest = directory / vf.MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"total_vectors": 1', '"total_vectors": 2'))
    with pytest.raises(vf.VectorFormatError, match=r"MANIFEST\.json: total_vectors = 2, but its files hold 1"):
        vf.load_corpus(directory)


def test_a_dialect_invalid_vector_is_checked_for_structure_only(tmp_path):
    """A dialect's invalid vector may carry any configuration (it is what the vector tests);
    its state arrays are then checked for structure, not against a layout that the
    configuration would decide."""
    relative, vector_id = "torch/shapes.json", "torch/shapes/defaults/tall"

    def damage(vector):
        vector.update(result="invalid", error={"class": "ValueError", "message_contains": "eps", "at": "step",
                                               "step": len(vector["steps"]) - 1})
        vector["steps"][-1]["expected"] = None
        vector["config"]["eps"] = "not a pair"
        vector["flags"] = sorted(set(vector["flags"]) | {"INVALID_STEP"})

    document = one_vector(relative, vector_id)
    damage(document["vectors"][0])
    document["notes"]["INVALID_STEP"] = "a step must be rejected"
    (vector,) = vf.load_corpus(write_corpus(tmp_path / "v", {relative: document}))[relative]["vectors"]
    assert vector["config"]["eps"] == "not a pair"


def test_replay_refuses_a_malformed_in_memory_vector():
    """Vectors built in memory skip the loader; replay's decoder still refuses a missing or
    misshapen gradient with a format error naming the vector, not a broadcast error."""
    from conformance import replay

    vector = one_vector(KERAS_FILE, KERAS_ID)["vectors"][0]
    step = vector["steps"][0]
    assert [g.shape for g in replay.decode_grads(vector, step)] == [(5, 3), (3,)]
    with pytest.raises(vf.VectorFormatError, match=r"arguments/learning_rate/0\.01.*1 gradients for 2 variables"):
        replay.decode_grads(vector, {**step, "grads": step["grads"][:1]})
    _transpose_shape(step["grads"][0])
    with pytest.raises(vf.VectorFormatError, match=r"grads\[0\] has shape \[3, 5\], variable 0 has shape \[5, 3\]"):
        replay.decode_grads(vector, step)


# ----------------------------------------------------------------------------- the tables
def test_argument_tables_match_the_constructors():
    """The loader's argument tables name exactly the arguments of reference.Adafactor, the
    reference schedules and the reference dialects (and the schedules' required ones)."""
    import inspect

    from reference.dialects import optimizer_class

    keras = [n for n in inspect.signature(Adafactor).parameters if n != "kwargs"]
    assert sorted(vf.KERAS_ARGUMENTS) == sorted(keras)
    for name, (table, required) in vf.SCHEDULE_ARGUMENTS.items():
        parameters = inspect.signature(getattr(schedules, name)).parameters
        assert sorted(table) == sorted(parameters), name
        assert sorted(required) == sorted(n for n, p in parameters.items() if p.default is p.empty), name
    for dialect, table in vf.DIALECT_ARGUMENTS.items():
        assert sorted(table) == sorted(inspect.signature(optimizer_class(dialect)).parameters), dialect


def test_gradient_flag_rule_matches_the_generators():
    """The loader requires exactly the flags the generator (conformance/generator/flags.py) gives a gradient."""
    from conformance.generator.flags import special_value_flags

    tiny, limit = np.finfo(np.float64).tiny, np.sqrt(np.finfo(np.float64).max)
    for values in ([1.0, 2.0], [np.nan], [np.inf, 1.0], [1e160], [limit], [np.nextafter(limit, np.inf)],
                   [-np.nextafter(limit, np.inf)], [tiny / 2], [tiny], [0.0, -0.0], [-1e-310, 1e200, -np.inf]):
        g = f64(values)
        with np.errstate(all="ignore"):
            assert vf.gradient_flags(g) == special_value_flags(g), values
    rng = np.random.default_rng(0)
    for _ in range(500):
        with np.errstate(all="ignore"):
            g = rng.normal(size=4) * 10.0 ** rng.integers(-330, 310)
            assert vf.gradient_flags(g) == special_value_flags(g), g


# ----------------------------------------------------------------------------- through the gate
def _gate(directory, *extra):
    return gate("run", "--adapter", "reference", "--dtype", "float64", "--mode", "teacher", "--vectors-dir",
                directory, *extra)


@pytest.mark.parametrize("kind", ["expected_shape", "bare_nan", "learning_rate_fast", "duplicate_id"])
def test_the_gate_exits_2_naming_file_and_vector(tmp_path, kind):
    """End to end: the real CLI on a damaged corpus exits 2 with the file and the vector id,
    instead of running the reference into DOES NOT CONFORM."""
    document = one_vector(KERAS_FILE, KERAS_ID)
    vector = document["vectors"][0]
    files = {KERAS_FILE: document}
    if kind == "expected_shape":
        _transpose_shape(vector["steps"][2]["expected"]["variables"][0])
    elif kind == "learning_rate_fast":
        vector["config"]["learning_rate"] = "fast"
    elif kind == "bare_nan":
        files[KERAS_FILE] = vf.dumps(document).replace('"learning_rate": 0.01', '"learning_rate": NaN', 1)
    elif kind == "duplicate_id":
        files["keras/copy.json"] = document
    done = _gate(write_corpus(tmp_path / "v", files))
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "DOES NOT CONFORM" not in done.stdout and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert KERAS_FILE in done.stderr and repr(KERAS_ID) in done.stderr, done.stderr[-2000:]


def test_the_gate_exits_2_on_a_file_missing_from_the_manifest(tmp_path):
    directory = write_corpus(tmp_path / "v", {KERAS_FILE: one_vector(KERAS_FILE, KERAS_ID)})
    (directory / "keras" / "extra.json").write_text(vf.dumps(one_vector("keras/shapes.json", "shapes/defaults/scalar")))
    done = _gate(directory)
    assert done.returncode == 2 and "keras/extra.json" in done.stderr and "does not list" in done.stderr, done.stderr


# ============================================================================ promotion
from tools import promote  # noqa: E402

CASE = REPO / "tools" / "regressions" / "float32-beta2-decay-cancellation.json"


def fuzz_case(tmp_path, damage=None, raw=None):
    data = json.loads(CASE.read_text())
    data["id"] = "regression/fuzz-0123456789ab"
    if damage is not None:
        damage(data)
    path = tmp_path / "case.json"
    path.write_text(raw(json.dumps(data)) if raw else json.dumps(data))
    return path


def test_promote_writes_a_sound_case(tmp_path):
    out = tmp_path / "regressions"
    target = promote.promote(fuzz_case(tmp_path), "sound-case", directory=out)
    assert target == out / "sound-case.json"
    assert json.loads(target.read_text())["id"] == "regression/sound-case"
    assert [p.name for p in out.iterdir()] == ["sound-case.json"]


def _second_step_bits(data, bits):
    data["grads"][1][0]["bits"] = [bits]


@pytest.mark.parametrize("damage,fragments", [
    (lambda d: d.update(grads=[]), ["grads", "no steps"]),
    (lambda d: _second_step_bits(d, "3ff00000000000"), ["grads[1][0].bits[0]", "16 lowercase hex digits"]),
    (lambda d: _second_step_bits(d, "3FF0000000000000"), ["grads[1][0].bits[0]"]),
    (lambda d: _second_step_bits(d, "zzzzzzzzzzzzzzzz"), ["grads[1][0].bits[0]"]),
    (lambda d: d["grads"][0][0].update(shape=[1]), ["grads[0][0]", "has shape [1]", "has shape []"]),
    (lambda d: d["initial"][0].update(shape=[1, 1]), ["initial[0]", "has shape [1, 1]"]),
    (lambda d: d["grads"][1].append(None), ["grads[1]", "2 gradients for 1 variables"]),
    (lambda d: d["config"].update(beta_1=0.9), ["config", "unknown argument(s) ['beta_1']"]),
    (lambda d: d["config"].update(learning_rate="fast"), ['config.learning_rate = "fast"']),
    (lambda d: d["config"].update(use_ema="yes"), ['config.use_ema = "yes"']),
    (lambda d: d.update(exclude_from_weight_decay={"var_index": [3]}), ["exclude_from_weight_decay.var_index"]),
    (lambda d: d.pop("found_by"), ["missing field 'found_by'"]),
    (lambda d: d.update(format="something-else"), ["not a version-1 fuzz case"]),
])
def test_promote_refuses_a_broken_case_and_writes_nothing(tmp_path, damage, fragments):
    path = fuzz_case(tmp_path, damage)
    out = tmp_path / "regressions"
    with pytest.raises(promote.PromotionError) as info:
        promote.promote(path, "broken", directory=out)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert str(path) in message or "fuzz case" in message or "not a version-1" in message, message
    assert not out.exists() or not list(out.iterdir())


def test_promote_refuses_a_bare_nan_token(tmp_path):
    path = fuzz_case(tmp_path, raw=lambda text: text.replace('"beta_2_decay": -0.0078125', '"beta_2_decay": NaN'))
    with pytest.raises(promote.PromotionError, match=r"case\.json: invalid JSON at config/beta_2_decay: bare NaN"):
        promote.promote(path, "broken", directory=tmp_path / "regressions")
    assert not (tmp_path / "regressions").exists()


def test_promote_refuses_what_the_generator_refuses(tmp_path, monkeypatch):
    """A case that passes the field checks but that the generator cannot build (here: the
    reference raises at a step) is refused before anything is written."""
    def damage(data):  # a legal config whose first step has no gradient at all: Keras raises
        data["grads"][0][0] = None
    path = fuzz_case(tmp_path, damage)
    with pytest.raises(promote.PromotionError, match="the generator cannot build this vector"):
        promote.promote(path, "broken", directory=tmp_path / "regressions")
    assert not (tmp_path / "regressions").exists()


def test_promote_refuses_a_taken_id(tmp_path):
    with pytest.raises(promote.PromotionError, match="taken by an existing case"):
        promote.promote(fuzz_case(tmp_path), CASE.stem, directory=tmp_path / "regressions")


def test_promote_cli_exit_status(tmp_path, capsys):
    path = fuzz_case(tmp_path, lambda d: d.update(grads=[]))
    assert promote.main([str(path), "--name", "zero-steps"]) == 2
    err = capsys.readouterr().err
    assert "case.json: grads: no steps" in err
    assert not (promote.REGRESSIONS / "zero-steps.json").exists()
