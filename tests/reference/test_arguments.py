"""Hand-derived checks for every constructor argument of ``reference.Adafactor``.

Every expected value here is computed in the test itself, with plain Python floats and
``math``, from the formulas of Keras 3.15.1 (``keras/src/optimizers/adafactor.py`` and
``base_optimizer.py``) on tiny inputs: a scalar, a 2-element vector, a 1x2 / 2x1 / 2x2
matrix. The reference is never used to compute its own expected value.

Facts the hand derivations lean on (t = 1 is the first real update):
  * beta_2 at t = 1 is 1 - 1**d = 0, so v (or r, c) is exactly the new g**2 + eps1;
  * for an unfactored variable at t = 1, U = g / sqrt(g**2 + eps1) = sign(g) exactly when
    eps1 is absorbed (sqrt(fl(g*g)) == |g| in binary floating point), so RMS(U) = 1 and
    the step is x - alpha * sign(g), alpha = max(eps2, RMS(x)) * min(lr, 1);
  * so at t = 1 the gradient's scale is invisible in x, but not in the slot v = g**2:
    clipping, loss scaling and accumulation are checked through v.
"""

import importlib.util
import json
import math
import sys
import warnings

import numpy as np
import pytest

from reference import Adafactor, schedules
from tests import background

EPS1 = 1e-30


# ----------------------------------------------------------------------------- helpers
def f64(values):
    return np.array(values, dtype=np.float64)


def assert_ulps(actual, expected, ulps=4):
    """|actual - expected| <= ulps * spacing(expected), elementwise (NaN never passes)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    tol = ulps * np.spacing(np.maximum(np.abs(e), np.finfo(np.float64).tiny))
    assert np.all(np.abs(a - e) <= tol), f"\nactual   {a!r}\nexpected {e!r}"


def assert_bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), f"\n{a!r}\n{b!r}"


def assert_state_bitwise(s1, s2):
    assert s1.iterations == s2.iterations
    assert s1.kinds() == s2.kinds()
    for kind in s1.kinds():
        assert len(s1[kind]) == len(s2[kind]), kind
        for x, y in zip(s1[kind], s2[kind]):
            assert (x is None) == (y is None), kind
            if x is not None:
                assert_bitwise(x, y)


def rms(values):
    """RMS of a flat list of Python floats, summed left to right like np.mean on tiny arrays."""
    values = list(values)
    return math.sqrt(sum(v * v for v in values) / len(values))


def sign(v):
    return math.copysign(1.0, v)


def step1_unfactored(x, g, lr, eps2=1e-3):
    """x - alpha * sign(g) (zero gradient: no move), t = 1, no clipping needed."""
    alpha = max(eps2, rms(x)) * min(lr, 1.0)
    return [xi - alpha * (sign(gi) if gi != 0 else 0.0) for xi, gi in zip(x, g)]


def quiet_apply(opt, grads, variables):
    """apply() with the 'Gradients do not exist' warning for None gradients silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.apply(grads, variables)


class RecordingSchedule(schedules.LearningRateSchedule):
    """A schedule that records the step it is called with; lr = 0.5 ** (step + 1)."""

    def __init__(self):
        self.steps = []

    def __call__(self, step):
        self.steps.append(step)
        return 0.5 ** (step + 1)

    def get_config(self):
        return {}


class CountingCallable:
    """A zero-argument learning rate returning 2**-(2 + calls): a new value each call."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        value = 2.0 ** -(2 + self.calls)
        self.calls += 1
        return value


# ----------------------------------------------------------------------------- the step
def test_step1_unfactored_is_x_minus_alpha_sign_g():
    opt = Adafactor(learning_rate=0.01)
    x, g = f64([3.0, 4.0]), f64([2.0, -0.5])
    opt.apply([g], [x])
    alpha = math.sqrt((3.0 * 3.0 + 4.0 * 4.0) / 2) * 0.01
    assert x.tolist() == [3.0 - alpha, 4.0 + alpha]
    assert opt.state.v[0].tolist() == [4.0, 0.25]  # g**2 + 1e-30: eps1 absorbed
    assert opt.state.r[0] is None and opt.state.c[0] is None
    trace = opt.last_step.traces[0]
    assert (trace.local_step, trace.beta_2, trace.rho) == (1.0, 0.0, 0.01)
    assert (trace.rms_u, trace.clip_denominator, trace.alpha) == (1.0, 1.0, alpha)


def test_factored_2x2_by_hand():
    # Keras's own adafactor_test.py case: lr 0.5, x [[1,2],[3,4]], g [[1,6],[7,2]].
    opt = Adafactor(learning_rate=0.5)
    x0 = [[1.0, 2.0], [3.0, 4.0]]
    g = [[1.0, 6.0], [7.0, 2.0]]
    x = f64(x0)
    opt.apply([f64(g)], [x])

    sq = [[gij * gij + EPS1 for gij in row] for row in g]  # [[1, 36], [49, 4]]
    r = [(sq[0][0] + sq[0][1]) / 2, (sq[1][0] + sq[1][1]) / 2]  # row means: [18.5, 26.5]
    c = [(sq[0][0] + sq[1][0]) / 2, (sq[0][1] + sq[1][1]) / 2]  # column means: [25, 20]
    r_mean = (r[0] + r[1]) / 2  # 22.5
    v = [[r[i] / r_mean * c[j] for j in range(2)] for i in range(2)]
    u = [[g[i][j] / math.sqrt(v[i][j]) for j in range(2)] for i in range(2)]
    rms_u = rms(u[0] + u[1])
    denominator = max(1.0, rms_u / 1.0)
    alpha = max(1e-3, rms(x0[0] + x0[1])) * min(0.5, 1.0)
    expected = [[x0[i][j] - alpha * (u[i][j] / denominator) for j in range(2)] for i in range(2)]

    state_r, state_c, state_v = opt.state.r[0], opt.state.c[0], opt.state.v[0]
    assert state_r.tolist() == [18.5, 26.5]
    assert state_c.tolist() == [25.0, 20.0]
    assert_ulps(state_v, v)
    assert rms_u > 1  # this case does clip the update
    assert_ulps(opt.last_step.traces[0].clip_denominator, denominator)
    assert_ulps(x, expected)
    np.testing.assert_allclose(x, [[0.7007, -0.0081], [1.2492, 3.4407]], atol=1e-4)


# ----------------------------------------------------------------------------- learning_rate
def test_learning_rate_float_is_capped_by_inverse_sqrt_step():
    opt = Adafactor(learning_rate=0.6)
    x = f64([1.0, -2.0])
    rhos = []
    for _ in range(3):
        opt.apply([f64([1.0, 1.0])], [x])
        assert opt.last_step.learning_rate == 0.6
        rhos.append(opt.last_step.traces[0].rho)
    # rho_t = min(lr, 1/sqrt(t)): 1/sqrt(3) = 0.577 < 0.6
    assert rhos == [0.6, 0.6, 1.0 / math.sqrt(3.0)]


def test_learning_rate_schedule_sees_raw_counter_and_its_value_is_used():
    schedule = schedules.ExponentialDecay(initial_learning_rate=0.5, decay_steps=1, decay_rate=0.5)
    opt = Adafactor(learning_rate=schedule)
    x = f64([3.0, 4.0])
    for k in range(3):
        before = x.tolist()
        opt.apply([f64([1.0, -1.0])], [x])
        lr = 0.5 * 0.5 ** k  # schedule(step), step = the counter before this apply
        rho = min(lr, 1.0 / math.sqrt(k + 1.0))
        trace = opt.last_step.traces[0]
        assert opt.last_step.learning_rate == lr and trace.learning_rate == lr
        assert trace.rho == rho
        alpha = max(1e-3, rms(before)) * rho
        assert trace.alpha == alpha
        # v stays ~g**2 = 1 (a mix of equal squares), so U ~ sign(g)
        assert_ulps(x, [before[0] - alpha, before[1] + alpha])


def test_learning_rate_schedule_call_count_and_argument():
    schedule = RecordingSchedule()
    opt = Adafactor(learning_rate=schedule, weight_decay=0.1)
    a, b, c = f64([1.0, 2.0]), f64([3.0]), f64([4.0])
    opt.build([a, b, c], names=["kernel", "bias", "other"])
    opt.exclude_from_weight_decay(var_names=["bias"])
    g = f64([1.0, 1.0])
    quiet_apply(opt, [g, f64([1.0]), None], [a, b, c])
    # once for the weight decay of `kernel` (bias is excluded, other has no gradient),
    # once for the step; both see the raw counter 0
    assert schedule.steps == [0, 0]
    quiet_apply(opt, [g, f64([1.0]), None], [a, b, c])
    assert schedule.steps == [0, 0, 1, 1]


def test_learning_rate_callable_called_without_arguments_once_per_decay_and_once_per_step():
    lr = CountingCallable()  # __call__ takes no argument: a call with one would raise
    opt = Adafactor(learning_rate=lr, weight_decay=0.5)
    a0, b0 = [2.0, -2.0], [1.0, 3.0]
    a, b, c = f64(a0), f64(b0), f64([5.0])
    opt.build([a, b, c], names=["dense/kernel", "dense/bias", "other"])
    opt.exclude_from_weight_decay(var_names=["bias"])
    quiet_apply(opt, [f64([1.0, 1.0]), f64([1.0, -1.0]), None], [a, b, c])
    assert lr.calls == 2
    # call 1 (0.25) decays `kernel`; call 2 (0.125) is the step's learning rate
    decayed = [v - v * 0.5 * 0.25 for v in a0]
    assert opt.last_step.learning_rate == 0.125
    assert a.tolist() == step1_unfactored(decayed, [1.0, 1.0], 0.125)
    assert b.tolist() == step1_unfactored(b0, [1.0, -1.0], 0.125)
    assert c.tolist() == [5.0]
    quiet_apply(opt, [f64([1.0, 1.0]), f64([1.0, -1.0]), None], [a, b, c])
    assert lr.calls == 4
    # without weight decay: exactly one call per apply
    lr2 = CountingCallable()
    opt2 = Adafactor(learning_rate=lr2)
    x = f64([1.0, 2.0])
    for k in range(3):
        opt2.apply([f64([1.0, 1.0])], [x])
        assert lr2.calls == k + 1
    # two decayed variables: one call each, and each decays with its own value
    lr4 = CountingCallable()
    opt4 = Adafactor(learning_rate=lr4, weight_decay=1.0)
    p, q = f64([4.0, 4.0]), f64([4.0, 4.0])
    opt4.apply([np.zeros(2), np.zeros(2)], [p, q])  # zero gradient: only the decay moves
    assert lr4.calls == 3
    assert p.tolist() == [4.0 - 4.0 * 1.0 * 0.25] * 2
    assert q.tolist() == [4.0 - 4.0 * 1.0 * 0.125] * 2
    assert opt4.last_step.learning_rate == 0.0625
    # weight_decay=0.0 is not None: the decay runs (a no-op) and still calls the callable
    lr3 = CountingCallable()
    opt3 = Adafactor(learning_rate=lr3, weight_decay=0.0)
    opt3.apply([f64([1.0, 1.0])], [f64([1.0, 2.0])])
    assert lr3.calls == 2


def test_learning_rate_callable_is_capped_too():
    opt = Adafactor(learning_rate=lambda: 5.0)
    x = f64([1.0, 1.0])
    opt.apply([f64([1.0, 1.0])], [x])
    opt.apply([f64([1.0, 1.0])], [x])
    assert opt.last_step.traces[0].rho == 1.0 / math.sqrt(2.0)


# ----------------------------------------------------------------------------- relative_step
@pytest.mark.parametrize("learning_rate", [1e-3, 0.3, 0.9, 2.0, "callable"])
def test_relative_step_true_and_false_are_bit_identical(learning_rate):
    rng = np.random.default_rng(7)
    inits = [rng.normal(size=s) for s in [(), (3,), (2, 3)]]
    grads = [[rng.normal(size=s) for s in [(), (3,), (2, 3)]] for _ in range(6)]
    results = []
    for relative_step in (True, False):
        lr = (lambda: 0.7) if learning_rate == "callable" else learning_rate
        opt = Adafactor(learning_rate=lr, relative_step=relative_step)
        xs = [np.array(x, copy=True) for x in inits]
        for step in grads:
            opt.apply(step, xs)
        results.append((xs, opt.get_state()))
    for x1, x2 in zip(results[0][0], results[1][0]):
        assert_bitwise(x1, x2)
    assert_state_bitwise(results[0][1], results[1][1])


def test_relative_step_false_still_caps_by_inverse_sqrt_step():
    opt = Adafactor(learning_rate=0.9, relative_step=False)
    x = f64([1.0, 2.0])
    opt.apply([f64([1.0, 1.0])], [x])
    assert opt.last_step.traces[0].rho == 0.9
    opt.apply([f64([1.0, 1.0])], [x])
    assert opt.last_step.traces[0].rho == 1.0 / math.sqrt(2.0)


# ----------------------------------------------------------------------------- beta_2_decay
@pytest.mark.parametrize("decay", [-0.8, -0.5, -1.0, -2.0, 0.0])
def test_beta_2_decay(decay):
    opt = Adafactor(learning_rate=0.1, beta_2_decay=decay)
    g1, g2 = [1.0, 2.0], [3.0, -1.0]
    m1, m2 = [[1.0, 2.0]], [[3.0, -1.0]]
    x, m = f64([1.0, 2.0]), f64([[1.0, 2.0]])
    opt.apply([f64(g1), f64(m1)], [x, m])
    assert opt.last_step.traces[0].beta_2 == 0.0  # 1 - 1**d, whatever d
    opt.apply([f64(g2), f64(m2)], [x, m])
    beta = 1.0 - 2.0 ** decay
    assert opt.last_step.traces[0].beta_2 == beta
    one_minus = 1.0 - beta  # computed as written, not 2**d
    expected_v = [beta * (a * a + EPS1) + one_minus * (b * b + EPS1) for a, b in zip(g1, g2)]
    assert_ulps(opt.state.v[0], expected_v, ulps=2)
    # factored (1, 2): r and c mix the same way
    row1 = (1.0 + 4.0) / 2
    row2 = (9.0 + 1.0) / 2
    assert_ulps(opt.state.r[1], [beta * row1 + one_minus * row2], ulps=2)
    assert_ulps(opt.state.c[1], [beta * 1.0 + one_minus * 9.0, beta * 4.0 + one_minus * 1.0], ulps=2)
    if decay == -1.0:
        assert opt.state.v[0].tolist() == [5.0, 2.5]  # beta = 0.5 exactly


# ----------------------------------------------------------------------------- epsilon_1
@pytest.mark.parametrize("eps1", [1e-30, 1e-10, 0.25])
def test_epsilon_1_zero_gradient_gives_v_equal_eps1(eps1):
    opt = Adafactor(learning_rate=0.1, epsilon_1=eps1)
    x, m = f64([1.0, 2.0]), f64([[1.0, 2.0], [3.0, 4.0]])
    opt.apply([np.zeros(2), np.zeros((2, 2))], [x, m])
    assert opt.state.v[0].tolist() == [eps1, eps1]
    assert opt.state.r[1].tolist() == [eps1, eps1]
    assert opt.state.c[1].tolist() == [eps1, eps1]
    assert opt.state.v[1].tolist() == [[eps1 / eps1 * eps1] * 2] * 2
    # U = 0 / sqrt(eps1) = 0: nothing moves
    assert x.tolist() == [1.0, 2.0]
    assert m.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_epsilon_1_is_added_to_g_squared():
    opt = Adafactor(learning_rate=0.1, epsilon_1=1e-10)
    x = f64([1.0, 2.0])
    opt.apply([f64([1e-5, 0.0])], [x])
    v0 = 1e-5 * 1e-5 + 1e-10
    assert opt.state.v[0].tolist() == [v0, 1e-10]
    u0 = 1e-5 / math.sqrt(v0)  # ~0.707, not 1: eps1 is not negligible here
    rms_u = math.sqrt((u0 * u0 + 0.0) / 2)  # ~0.5 < 1: no clipping
    assert rms_u < 1
    alpha = rms([1.0, 2.0]) * 0.1
    assert_ulps(x, [1.0 - alpha * u0, 2.0])


# ----------------------------------------------------------------------------- epsilon_2
@pytest.mark.parametrize("eps2", [1e-3, 0.5])
def test_epsilon_2_floors_rms_of_zero_variable(eps2):
    opt = Adafactor(learning_rate=0.1, epsilon_2=eps2)
    x = f64([0.0, 0.0])
    opt.apply([f64([1.0, -1.0])], [x])
    alpha = eps2 * 0.1
    assert x.tolist() == [-alpha, alpha]
    assert opt.last_step.traces[0].alpha == alpha


def test_epsilon_2_only_when_rms_is_smaller():
    small = Adafactor(learning_rate=0.1, epsilon_2=1e-3)
    x = f64([1e-4, -1e-4])  # RMS 1e-4 < eps2
    small.apply([f64([1.0, 1.0])], [x])
    assert small.last_step.traces[0].alpha == 1e-3 * 0.1
    large = Adafactor(learning_rate=0.1, epsilon_2=1e-3)
    y = f64([3.0, 4.0])  # RMS > eps2
    large.apply([f64([1.0, 1.0])], [y])
    assert large.last_step.traces[0].alpha == rms([3.0, 4.0]) * 0.1


# ----------------------------------------------------------------------------- clip_threshold
@pytest.mark.parametrize("threshold", [0.25, 0.5, 1.0, 1e9])
def test_clip_threshold_clips_update_rms(threshold):
    opt = Adafactor(learning_rate=0.1, clip_threshold=threshold)
    x = f64([1.0, 2.0])
    opt.apply([f64([3.0, 0.0])], [x])
    # U = [1, 0], RMS(U) = sqrt(1/2); denominator max(1, RMS(U) / d)
    rms_u = math.sqrt(0.5)
    denominator = max(1.0, rms_u / threshold)
    alpha = rms([1.0, 2.0]) * 0.1
    assert opt.last_step.traces[0].clip_denominator == denominator
    assert_ulps(x, [1.0 - alpha * (1.0 / denominator), 2.0])
    if threshold >= 1.0:
        assert x.tolist() == [1.0 - alpha, 2.0]


# ----------------------------------------------------------------------------- weight_decay
def test_weight_decay_uses_raw_lr_and_runs_before_the_step():
    # lr 2.0 > 1: the step's rho is min(2, 1) = 1, but the decay uses the raw 2.0
    opt = Adafactor(learning_rate=2.0, weight_decay=0.1)
    x0 = [3.0, 4.0]
    x = f64(x0)
    opt.apply([f64([1.0, 1.0])], [x])
    decayed = [v - v * 0.1 * 2.0 for v in x0]  # x * 0.8, not x * 0.9
    assert opt.last_step.traces[0].rms_x == rms(decayed)  # RMS sees the decayed x
    alpha = rms(decayed) * 1.0
    assert x.tolist() == [decayed[0] - alpha, decayed[1] - alpha]


def test_weight_decay_with_schedule_uses_schedule_value():
    schedule = schedules.ExponentialDecay(initial_learning_rate=4.0, decay_steps=1, decay_rate=0.5)
    opt = Adafactor(learning_rate=schedule, weight_decay=0.125)
    x = f64([2.0, 2.0])
    opt.apply([np.zeros(2)], [x])  # zero gradient: only the decay moves x
    assert x.tolist() == [2.0 - 2.0 * 0.125 * 4.0] * 2
    opt.apply([np.zeros(2)], [x])
    assert x.tolist() == [1.0 - 1.0 * 0.125 * 2.0] * 2


def test_weight_decay_exclusion_by_name_is_regex_search():
    opt = Adafactor(learning_rate=1.0, weight_decay=0.004)
    names = ["dense/kernel", "dense/bias", "bias_free", "emb", "my_emb"]
    xs = [f64([2.0, 2.0]) for _ in names]
    opt.build(xs, names=names)
    opt.exclude_from_weight_decay(var_names=["bias$", "^emb"])
    opt.apply([np.zeros(2) for _ in names], xs)  # zero gradient: only decay moves x
    decayed = 2.0 - 2.0 * 0.004 * 1.0
    assert [x[0] for x in xs] == [decayed, 2.0, decayed, 2.0, decayed]


def test_weight_decay_exclusion_by_identity_and_after_build():
    a, b, b_copy = f64([2.0, 2.0]), f64([2.0, 2.0]), f64([2.0, 2.0])
    opt = Adafactor(learning_rate=1.0, weight_decay=0.5)
    opt.build([a, b, b_copy], names=["same", "same", "same"])  # names cannot tell them apart
    opt.exclude_from_weight_decay(var_list=[b])  # accepted after build, as in Keras
    opt.apply([np.zeros(2)] * 3, [a, b, b_copy])
    assert a.tolist() == [1.0, 1.0]
    assert b.tolist() == [2.0, 2.0]
    assert b_copy.tolist() == [1.0, 1.0]  # an equal array is not the excluded variable


def test_weight_decay_skips_variables_without_gradient():
    opt = Adafactor(learning_rate=1.0, weight_decay=0.5)
    a, b = f64([2.0, 2.0]), f64([2.0, 2.0])
    quiet_apply(opt, [np.zeros(2), None], [a, b])
    assert a.tolist() == [1.0, 1.0]
    assert b.tolist() == [2.0, 2.0]


# ----------------------------------------------------------------------------- clipping
def test_clipnorm_is_per_tensor():
    opt = Adafactor(learning_rate=0.1, clipnorm=1.0)
    a, b = f64([1.0, 1.0]), f64([1.0, 1.0])
    opt.apply([f64([3.0, 4.0]), f64([0.3, 0.4])], [a, b])
    # a: ||g|| = 5 -> g * 1 / 5; b: ||g|| = 0.5 <= 1 -> g * 1 / max(0.5, 1) = g
    ga = [3.0 * 1.0 / 5.0, 4.0 * 1.0 / 5.0]
    assert opt.state.v[0].tolist() == [ga[0] * ga[0], ga[1] * ga[1]]
    assert opt.state.v[1].tolist() == [0.3 * 0.3, 0.4 * 0.4]


def test_clipvalue():
    opt = Adafactor(learning_rate=0.1, clipvalue=1.0)
    x = f64([1.0, 1.0, 1.0])
    opt.apply([f64([3.0, -0.5, -7.0])], [x])
    assert opt.state.v[0].tolist() == [1.0, 0.25, 1.0]


def test_global_clipnorm_scales_all_tensors_together():
    opt = Adafactor(learning_rate=0.1, global_clipnorm=1.0)
    a, b = f64([1.0, 1.0]), f64([1.0])
    opt.apply([f64([3.0, 0.0]), f64([4.0])], [a, b])
    scale = 1.0 * min(1.0 / 5.0, 1.0 / 1.0)  # global norm sqrt(9 + 0 + 16) = 5
    ga, gb = 3.0 * scale, 4.0 * scale
    assert opt.state.v[0].tolist() == [ga * ga, 0.0 + EPS1]
    assert opt.state.v[1].tolist() == [gb * gb]
    assert ga != 3.0 * 1.0 / 5.0  # 3 * 0.2 is not 3 / 5 (clipnorm's order): 0.6000000000000001


def test_global_clipnorm_scale_is_not_exactly_one_when_not_clipping():
    # norm sqrt(5) < 49: scale = 49 * min(1/sqrt(5), 1/49) = 49 * (1/49) = 0.9999999999999999
    scale = 49.0 * (1.0 / 49.0)
    assert scale == 0.9999999999999999
    opt = Adafactor(learning_rate=0.1, global_clipnorm=49.0)
    x = f64([1.0, 1.0])
    opt.apply([f64([1.0, 2.0])], [x])
    assert opt.state.v[0].tolist() == [scale * scale, (2.0 * scale) * (2.0 * scale)]
    assert opt.state.v[0][0] != 1.0
    # per-tensor clipnorm=49 leaves the same gradient exact: (g * 49) / 49
    per_tensor = Adafactor(learning_rate=0.1, clipnorm=49.0)
    per_tensor.apply([f64([1.0, 2.0])], [f64([1.0, 1.0])])
    assert per_tensor.state.v[0].tolist() == [1.0, 4.0]


@pytest.mark.parametrize("argument", ["clipnorm", "clipvalue", "global_clipnorm"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_zero_or_negative_clip_disables_clipping(argument, value):
    opt = Adafactor(learning_rate=0.1, **{argument: value})
    x = f64([1.0, 1.0])
    opt.apply([f64([30.0, -40.0])], [x])
    assert opt.state.v[0].tolist() == [900.0, 1600.0]


# ----------------------------------------------------------------------------- loss_scale_factor
def test_loss_scale_factor_divides_gradients():
    opt = Adafactor(learning_rate=0.1, loss_scale_factor=100.0)
    x = f64([1.0, 1.0])
    opt.apply([f64([300.0, 400.0])], [x])
    assert opt.state.v[0].tolist() == [9.0, 16.0]
    # g / scale, not g * (1 / scale): 49 * (1 / 49) = 0.9999999999999999
    opt49 = Adafactor(learning_rate=0.1, loss_scale_factor=49.0)
    opt49.apply([f64([49.0, 98.0])], [f64([1.0, 1.0])])
    assert opt49.state.v[0].tolist() == [1.0, 4.0]


def test_loss_scale_factor_divides_before_clipnorm():
    opt = Adafactor(learning_rate=0.1, loss_scale_factor=100.0, clipnorm=1.0)
    x = f64([1.0, 1.0])
    opt.apply([f64([300.0, 400.0])], [x])
    g = [3.0 * 1.0 / 5.0, 4.0 * 1.0 / 5.0]  # [3, 4] clipped to norm 1
    assert opt.state.v[0].tolist() == [g[0] * g[0], g[1] * g[1]]


def test_loss_scale_factor_divides_before_clipvalue():
    opt = Adafactor(learning_rate=0.1, loss_scale_factor=100.0, clipvalue=1.0)
    x = f64([1.0, 1.0])
    opt.apply([f64([300.0, -50.0])], [x])
    assert opt.state.v[0].tolist() == [1.0, 0.25]


def test_loss_scale_factor_divides_before_accumulation():
    opt = Adafactor(learning_rate=0.1, loss_scale_factor=100.0, gradient_accumulation_steps=2)
    x = f64([1.0, 1.0])
    opt.apply([f64([300.0, 400.0])], [x])
    assert opt.accumulator(0).tolist() == [3.0, 4.0]
    opt.apply([f64([100.0, 200.0])], [x])
    # ((1, 2) + (3, 4)) / 2 = (2, 3)
    assert opt.state.v[0].tolist() == [4.0, 9.0]


# ----------------------------------------------------------------------------- use_ema
def test_use_ema_first_update_copies_then_momentum():
    opt = Adafactor(learning_rate=0.1, use_ema=True, ema_momentum=0.9)
    x, y = f64([3.0, 4.0]), f64([5.0])
    quiet_apply(opt, [f64([1.0, -1.0]), None], [x, y])
    x1 = x.tolist()
    assert opt.average(0).tolist() == x1  # momentum 0 while iterations == 0
    assert opt.average(1).tolist() == [5.0]  # every variable, also one without gradient
    quiet_apply(opt, [f64([1.0, -1.0]), None], [x, y])
    x2 = x.tolist()
    assert x2 != x1
    assert opt.average(0).tolist() == [0.9 * a + (1.0 - 0.9) * b for a, b in zip(x1, x2)]
    assert opt.average(1).tolist() == [0.9 * 5.0 + (1.0 - 0.9) * 5.0]


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_ema_momentum_edges(momentum):
    opt = Adafactor(learning_rate=0.1, use_ema=True, ema_momentum=momentum)
    x = f64([3.0, 4.0])
    opt.apply([f64([1.0, -1.0])], [x])
    first = x.tolist()
    opt.apply([f64([1.0, -1.0])], [x])
    expected = first if momentum == 1.0 else x.tolist()
    assert opt.average(0).tolist() == expected


def test_no_ema_state_without_use_ema():
    opt = Adafactor(learning_rate=0.1, ema_momentum=0.5, ema_overwrite_frequency=1)
    x = f64([3.0, 4.0])
    opt.apply([f64([1.0, -1.0])], [x])
    assert opt.state.average is None
    assert opt.last_step.ema_overwritten is False


def test_ema_overwrite_frequency_overwrites_on_multiples():
    opt = Adafactor(learning_rate=0.1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=3)
    x = f64([3.0, 4.0])
    flags = []
    for step in range(1, 8):
        opt.apply([f64([1.0, -1.0])], [x])
        flags.append(opt.last_step.ema_overwritten)
        if opt.last_step.ema_overwritten:
            assert x.tolist() == opt.average(0).tolist()
        elif step > 1:  # step 1 copies x into the average: equal without an overwrite
            assert x.tolist() != opt.average(0).tolist()
    # (iterations + 1) % 3 == 0 with iterations = step - 1
    assert flags == [False, False, True, False, False, True, False]


def test_ema_overwrite_value_by_hand():
    opt = Adafactor(learning_rate=0.1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2)
    x0, g = [3.0, 4.0], [1.0, -1.0]
    x = f64(x0)
    opt.apply([f64(g)], [x])
    x1 = step1_unfactored(x0, g, 0.1)
    assert x.tolist() == x1 and not opt.last_step.ema_overwritten
    opt.apply([f64(g)], [x])
    assert opt.last_step.ema_overwritten
    # step 2 (t = 2) by hand: v = beta * g**2 + (1 - beta) * g**2, U = g / sqrt(v)
    beta = 1.0 - 2.0 ** -0.8
    v = [beta * (gi * gi + EPS1) + (1.0 - beta) * (gi * gi + EPS1) for gi in g]
    u = [gi / math.sqrt(vi) for gi, vi in zip(g, v)]
    denominator = max(1.0, rms(u))
    alpha = max(1e-3, rms(x1)) * min(0.1, 1.0 / math.sqrt(2.0))
    x2 = [a - alpha * (ui / denominator) for a, ui in zip(x1, u)]
    # then the average 0.5 * x1 + 0.5 * x2 overwrites x
    expected = [0.5 * a + (1.0 - 0.5) * b for a, b in zip(x1, x2)]
    assert_ulps(x, expected, ulps=2)
    assert_bitwise(x, opt.average(0))


@pytest.mark.parametrize("frequency", [None, 0])
def test_ema_overwrite_frequency_none_or_zero_never_overwrites(frequency):
    opt = Adafactor(learning_rate=0.1, use_ema=True, ema_overwrite_frequency=frequency)
    x = f64([3.0, 4.0])
    for _ in range(4):
        opt.apply([f64([1.0, -1.0])], [x])
        assert opt.last_step.ema_overwritten is False


def test_finalize_variable_values():
    opt = Adafactor(learning_rate=0.1, use_ema=True, ema_momentum=0.5)
    x = f64([3.0, 4.0])
    opt.apply([f64([1.0, -1.0])], [x])
    opt.apply([f64([1.0, -1.0])], [x])
    average = opt.average(0).tolist()
    assert x.tolist() != average
    other = f64([0.0, 0.0])
    opt.finalize_variable_values([other])  # writes into the list given
    assert other.tolist() == average and x.tolist() != average
    opt.finalize_variable_values()  # default: the built variables
    assert x.tolist() == average
    # without use_ema: a no-op
    plain = Adafactor(learning_rate=0.1)
    y = f64([3.0, 4.0])
    plain.apply([f64([1.0, -1.0])], [y])
    before = y.tolist()
    plain.finalize_variable_values([y])
    assert y.tolist() == before


# ----------------------------------------------------------------------------- gradient accumulation
def test_accumulation_updates_only_every_n_with_mean_gradient():
    opt = Adafactor(learning_rate=0.1, gradient_accumulation_steps=3)
    x0 = [1.0, 2.0]
    x = f64(x0)
    g1, g2, g3 = [1.0, 2.0], [0.5, -7.0], [2.0, 1.0]
    opt.apply([f64(g1)], [x])
    assert x.tolist() == x0 and not opt.last_step.is_update_step
    assert opt.last_step.learning_rate is None
    assert opt.accumulator(0).tolist() == g1
    assert opt.state.v[0].tolist() == [0.0, 0.0]
    opt.apply([f64(g2)], [x])
    assert x.tolist() == x0
    acc = [b + a for a, b in zip(g1, g2)]  # g + acc
    assert opt.accumulator(0).tolist() == acc
    assert opt.iterations == 0 and opt.state.iterations == 2
    opt.apply([f64(g3)], [x])
    assert opt.last_step.is_update_step
    mean = [(c + a) / 3 for a, c in zip(acc, g3)]  # (g_N + acc) / N = [3.5/3, -4/3]
    assert opt.state.v[0].tolist() == [m * m for m in mean]
    assert x.tolist() == step1_unfactored(x0, mean, 0.1)
    assert opt.accumulator(0).tolist() == [0.0, 0.0]
    assert opt.iterations == 1 and opt.state.iterations == 3
    assert opt.last_step.traces[0].local_step == 1.0


def test_accumulation_step_counter_and_schedule():
    schedule = RecordingSchedule()
    opt = Adafactor(learning_rate=schedule, gradient_accumulation_steps=3)
    x = f64([1.0, 2.0])
    local_steps = []
    for micro in range(1, 7):
        opt.apply([f64([1.0, 1.0])], [x])
        if opt.last_step.is_update_step:
            local_steps.append(opt.last_step.traces[0].local_step)
            assert opt.last_step.learning_rate == 0.5 ** micro  # schedule(micro - 1)
    assert schedule.steps == [2, 5]  # raw micro-step counter, on update steps only
    assert local_steps == [1.0, 2.0]  # Adafactor's t counts updates
    assert opt.last_step.traces[0].beta_2 == 1.0 - 2.0 ** -0.8
    assert opt.iterations == 2


def test_accumulation_clips_the_averaged_gradient():
    opt = Adafactor(learning_rate=0.1, gradient_accumulation_steps=2, clipnorm=1.0)
    x = f64([1.0, 1.0])
    opt.apply([f64([6.0, 8.0])], [x])
    opt.apply([f64([0.0, 0.0])], [x])
    g = [3.0 * 1.0 / 5.0, 4.0 * 1.0 / 5.0]  # mean (3, 4), then clipped: (0.6, 0.8)
    assert opt.state.v[0].tolist() == [g[0] * g[0], g[1] * g[1]]


def test_accumulation_resets_every_accumulator_even_without_gradient():
    opt = Adafactor(learning_rate=0.1, gradient_accumulation_steps=2)
    a, b = f64([1.0, 2.0]), f64([3.0, 4.0])
    b0 = b.tolist()
    quiet_apply(opt, [f64([1.0, 1.0]), f64([100.0, 100.0])], [a, b])
    assert opt.accumulator(1).tolist() == [100.0, 100.0]
    quiet_apply(opt, [f64([1.0, 1.0]), None], [a, b])  # update step; b has no gradient
    assert b.tolist() == b0  # b is not updated ...
    assert opt.accumulator(1).tolist() == [0.0, 0.0]  # ... but its accumulator is reset
    assert opt.state.v[1].tolist() == [0.0, 0.0]
    gb3, gb4 = [1.0, -3.0], [2.0, 1.0]
    quiet_apply(opt, [f64([1.0, 1.0]), f64(gb3)], [a, b])
    quiet_apply(opt, [f64([1.0, 1.0]), f64(gb4)], [a, b])
    mean = [(p + q) / 2 for p, q in zip(gb4, gb3)]  # the lost 100s are not in it
    # b's first update happens at t = 2 (t counts the optimizer's updates)
    beta = 1.0 - 2.0 ** -0.8
    assert opt.last_step.traces[1].local_step == 2.0
    assert_ulps(opt.state.v[1], [beta * 0.0 + (1.0 - beta) * (m * m + EPS1) for m in mean], ulps=2)


def test_accumulation_with_ema_updates_every_micro_step():
    opt = Adafactor(learning_rate=0.1, gradient_accumulation_steps=2, use_ema=True, ema_momentum=0.5)
    x0 = [3.0, 4.0]
    x = f64(x0)
    g = f64([1.0, -1.0])
    opt.apply([g], [x])  # micro 1: iterations 0 -> copy
    assert opt.average(0).tolist() == x0
    opt.apply([g], [x])  # micro 2: update, iterations still 0 -> copy again
    x2 = x.tolist()
    assert x2 != x0 and opt.average(0).tolist() == x2
    opt.apply([g], [x])  # micro 3: momentum 0.5, x unchanged
    assert x.tolist() == x2
    assert opt.average(0).tolist() == [0.5 * a + (1.0 - 0.5) * a for a in x2]
    opt.apply([g], [x])  # micro 4: update
    x4 = x.tolist()
    avg4 = [0.5 * a + (1.0 - 0.5) * b for a, b in zip(x2, x4)]
    assert opt.average(0).tolist() == avg4
    opt.apply([g], [x])  # micro 5: no update, but the average still moves toward x4
    assert x.tolist() == x4
    avg5 = [0.5 * a + (1.0 - 0.5) * b for a, b in zip(avg4, x4)]
    assert opt.average(0).tolist() == avg5 != avg4


def test_accumulation_ema_overwrite_fires_on_n_consecutive_micro_steps():
    opt = Adafactor(
        learning_rate=0.1, gradient_accumulation_steps=2, use_ema=True, ema_overwrite_frequency=2
    )
    x = f64([3.0, 4.0])
    flags = []
    for _ in range(8):
        opt.apply([f64([1.0, -1.0])], [x])
        flags.append(opt.last_step.ema_overwritten)
    # (raw // 2 + 1) % 2 == 0 for raw = 2, 3, 6, 7: micro-steps 3, 4, 7, 8
    assert [i + 1 for i, f in enumerate(flags) if f] == [3, 4, 7, 8]


def test_accumulation_zero_disables():
    opt = Adafactor(learning_rate=0.1, gradient_accumulation_steps=0)
    x = f64([3.0, 4.0])
    opt.apply([f64([1.0, -1.0])], [x])
    assert x.tolist() == step1_unfactored([3.0, 4.0], [1.0, -1.0], 0.1)
    assert opt.state.accumulator is None and opt.iterations == 1


# ----------------------------------------------------------------------------- None / empty / counting
def test_none_gradient_leaves_variable_and_state_untouched():
    opt = Adafactor(learning_rate=0.1, use_ema=False)
    a, b = f64([1.0, 2.0]), f64([[3.0, 4.0]])
    opt.apply([f64([1.0, 1.0]), f64([[1.0, 2.0]])], [a, b])
    b_before, state_before = b.copy(), opt.get_state()
    with pytest.warns(UserWarning, match=r"Gradients do not exist for variables \['variable_1'\]"):
        opt.apply([f64([1.0, 1.0]), None], [a, b])
    assert_bitwise(b, b_before)
    for name in ("r", "c", "v"):
        assert_bitwise(opt.state[name][1], state_before[name][1])
    assert opt.last_step.traces[1] is None and opt.last_step.traces[0] is not None
    assert opt.iterations == 2


def test_empty_gradient_list_is_a_no_op():
    opt = Adafactor(learning_rate=0.1)
    opt.apply([], [])
    assert not opt.built and opt.iterations == 0
    x = f64([1.0, 2.0])
    opt.apply([f64([1.0, 1.0])], [x])
    state, before = opt.get_state(), x.copy()
    opt.apply([], [x])
    opt.apply([])
    assert opt.iterations == 1
    assert_bitwise(x, before)
    assert_state_bitwise(opt.state, state)


def test_iterations_counting():
    opt = Adafactor(learning_rate=0.1)
    x = f64([1.0, 2.0])
    for k in range(1, 4):
        assert opt.apply_gradients(zip([f64([1.0, 1.0])], [x])) == k
        assert opt.iterations == k
    acc = Adafactor(learning_rate=0.1, gradient_accumulation_steps=3)
    y = f64([1.0, 2.0])
    seen = [acc.apply_gradients(zip([f64([1.0, 1.0])], [y])) for _ in range(7)]
    assert seen == [0, 0, 1, 1, 1, 2, 2]  # updates, i.e. raw // 3
    assert acc.state.iterations == 7


# ----------------------------------------------------------------------------- shapes
def test_scalar_variable():
    opt = Adafactor(learning_rate=0.25)
    x = np.array(2.0)
    opt.apply([np.array(-3.0)], [x])
    state_r, state_c, state_v = opt.state.r[0], opt.state.c[0], opt.state.v[0]
    assert state_r is None and state_c is None and state_v.shape == ()
    assert state_v == 9.0
    assert x == 2.0 + 2.0 * 0.25  # alpha = RMS(x) * lr = |x| * lr, sign(g) = -1


def test_vector_is_not_factored():
    opt = Adafactor(learning_rate=0.1)
    x = f64([1.0, 2.0, 3.0])
    opt.apply([f64([1.0, 2.0, 3.0])], [x])
    assert opt.state.r[0] is None and opt.state.c[0] is None
    assert opt.state.v[0].tolist() == [1.0, 4.0, 9.0]  # not the factored (r / mean r) c


def test_row_matrix_1xn_is_factored():
    opt = Adafactor(learning_rate=0.1)
    x = f64([[1.0, 2.0]])
    opt.apply([f64([[1.0, 3.0]])], [x])
    state_r, state_c, state_v = opt.state.r[0], opt.state.c[0], opt.state.v[0]
    assert state_r.shape == (1,) and state_c.shape == (2,)
    assert state_r.tolist() == [(1.0 + 9.0) / 2]
    assert state_c.tolist() == [1.0, 9.0]
    assert state_v.tolist() == [[5.0 / 5.0 * 1.0, 5.0 / 5.0 * 9.0]]
    alpha = rms([1.0, 2.0]) * 0.1
    assert x.tolist() == [[1.0 - alpha, 2.0 - alpha]]


def test_column_matrix_nx1_is_factored():
    opt = Adafactor(learning_rate=0.1)
    x = f64([[1.0], [2.0]])
    opt.apply([f64([[1.0], [3.0]])], [x])
    state_r, state_c, state_v = opt.state.r[0], opt.state.c[0], opt.state.v[0]
    assert state_r.shape == (2,) and state_c.shape == (1,)
    assert state_r.tolist() == [1.0, 9.0]
    assert state_c.tolist() == [(1.0 + 9.0) / 2]
    r_mean = (1.0 + 9.0) / 2
    v = [1.0 / r_mean * 5.0, 9.0 / r_mean * 5.0]
    assert_ulps(state_v, [[v[0]], [v[1]]], ulps=1)
    u = [1.0 / math.sqrt(v[0]), 3.0 / math.sqrt(v[1])]
    denominator = max(1.0, rms(u))
    alpha = rms([1.0, 2.0]) * 0.1
    assert_ulps(x, [[1.0 - alpha * u[0] / denominator], [2.0 - alpha * u[1] / denominator]])


def test_3d_variable_is_factored_over_last_two_axes():
    x0 = [[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.5], [2.0, -3.0]]]
    g = [[[1.0, 6.0], [7.0, 2.0]], [[0.5, -1.0], [4.0, 3.0]]]
    opt = Adafactor(learning_rate=0.1)
    x = f64(x0)
    opt.apply([f64(g)], [x])
    state_r, state_c, state_v = opt.state.r[0], opt.state.c[0], opt.state.v[0]
    assert state_r.shape == (2, 2) and state_c.shape == (2, 2) and state_v.shape == (2, 2, 2)
    v = []
    u = []
    for b in range(2):  # each leading index is an independent 2x2 factorization
        sq = [[g[b][i][j] * g[b][i][j] + EPS1 for j in range(2)] for i in range(2)]
        r = [(sq[i][0] + sq[i][1]) / 2 for i in range(2)]
        c = [(sq[0][j] + sq[1][j]) / 2 for j in range(2)]
        assert_ulps(state_r[b], r, ulps=0)
        assert_ulps(state_c[b], c, ulps=0)
        r_mean = (r[0] + r[1]) / 2
        vb = [[r[i] / r_mean * c[j] for j in range(2)] for i in range(2)]
        v.append(vb)
        u.append([[g[b][i][j] / math.sqrt(vb[i][j]) for j in range(2)] for i in range(2)])
    assert_ulps(state_v, v, ulps=1)
    flat_u = [e for b in u for row in b for e in row]
    denominator = max(1.0, rms(flat_u))  # RMS over the whole variable, all batches
    alpha = rms([e for b in x0 for row in b for e in row]) * 0.1
    expected = [
        [[x0[b][i][j] - alpha * (u[b][i][j] / denominator) for j in range(2)] for i in range(2)]
        for b in range(2)
    ]
    assert_ulps(x, expected)


# ----------------------------------------------------------------------------- stateless_apply
def test_stateless_apply_does_not_modify_inputs_and_equals_apply():
    rng = np.random.default_rng(3)
    shapes = [(), (3,), (2, 3)]
    opt = Adafactor(
        learning_rate=0.3, use_ema=True, ema_overwrite_frequency=3, gradient_accumulation_steps=2,
        weight_decay=0.01,
    )
    xs = [np.asarray(rng.normal(size=s)) for s in shapes]
    for _ in range(3):
        opt.apply([np.asarray(rng.normal(size=s)) for s in shapes], xs)
    grads = [np.asarray(rng.normal(size=s)) for s in shapes]
    state = opt.get_state()
    xs_copy = [x.copy() for x in xs]
    grads_copy = [g.copy() for g in grads]
    state_copy = state.copy()
    opt_state_copy = opt.state.copy()
    new_xs, new_state, record = opt.stateless_apply(state, grads, xs)
    for x, c in zip(xs, xs_copy):
        assert_bitwise(x, c)
    for g, c in zip(grads, grads_copy):
        assert_bitwise(g, c)
    assert_state_bitwise(state, state_copy)
    assert_state_bitwise(opt.state, opt_state_copy)
    assert record.is_update_step  # the 4th micro-step
    opt.apply(grads, xs)
    for x, n in zip(xs, new_xs):
        assert_bitwise(x, n)
    assert_state_bitwise(opt.state, new_state)


# ----------------------------------------------------------------------------- config and name
def test_name_default_and_custom_do_not_change_arithmetic():
    assert Adafactor().name == "adafactor"
    assert Adafactor().get_config()["name"] == "adafactor"
    custom = Adafactor(learning_rate=0.1, name="my_opt")
    assert custom.get_config()["name"] == "my_opt"
    default = Adafactor(learning_rate=0.1)
    x, y = f64([1.0, 2.0]), f64([1.0, 2.0])
    custom.apply([f64([1.0, -1.0])], [x])
    default.apply([f64([1.0, -1.0])], [y])
    assert_bitwise(x, y)


ALL_ARGUMENTS = dict(
    learning_rate=0.25,
    beta_2_decay=-0.5,
    epsilon_1=1e-20,
    epsilon_2=2e-3,
    clip_threshold=0.75,
    relative_step=False,
    weight_decay=0.01,
    clipnorm=None,
    clipvalue=0.5,
    global_clipnorm=None,
    use_ema=True,
    ema_momentum=0.9,
    ema_overwrite_frequency=3,
    loss_scale_factor=128.0,
    gradient_accumulation_steps=2,
    name="custom",
)

KERAS_CONFIG_SCRIPT = r"""
import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
keras.config.set_floatx("float64")
kwargs = json.loads(sys.argv[1])
out = {"defaults": keras.optimizers.Adafactor(name="adafactor").get_config(),
       "all": keras.optimizers.Adafactor(**kwargs).get_config()}
schedule = keras.optimizers.schedules.ExponentialDecay(0.5, decay_steps=10, decay_rate=0.9)
out["schedule"] = keras.optimizers.Adafactor(learning_rate=schedule, name="s").get_config()
print(json.dumps(out))
"""


#: Real Keras's get_config, computed in a child process on the second core while other tests run.
KERAS_CONFIGS = background.Job(
    "keras-get-config", [sys.executable, "-c", KERAS_CONFIG_SCRIPT, json.dumps(ALL_ARGUMENTS)],
    env=background.environment(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3"), timeout=300,
    fixtures=("keras_configs",), requires=("keras", "tensorflow"))


@pytest.fixture(scope="module")
def keras_configs():
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
        pytest.skip("keras/tensorflow not importable: cannot compare get_config with real Keras")
    proc = KERAS_CONFIGS.result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_get_config_matches_keras(keras_configs):
    assert set(Adafactor().get_config()) == set(keras_configs["defaults"])
    assert len(keras_configs["defaults"]) == 16
    assert Adafactor().get_config() == keras_configs["defaults"]  # floatx float64: 0.001 exact
    assert Adafactor(**ALL_ARGUMENTS).get_config() == keras_configs["all"]
    schedule = schedules.ExponentialDecay(0.5, decay_steps=10, decay_rate=0.9)
    ours = Adafactor(learning_rate=schedule, name="s").get_config()
    assert json.loads(json.dumps(ours)) == keras_configs["schedule"]


def test_get_config_has_every_constructor_argument():
    config = Adafactor(**ALL_ARGUMENTS).get_config()
    assert config == ALL_ARGUMENTS


@pytest.mark.parametrize("schedule", [False, True])
def test_from_config_round_trip(schedule):
    kwargs = dict(ALL_ARGUMENTS)
    if schedule:
        kwargs["learning_rate"] = schedules.PiecewiseConstantDecay([2, 4], [0.5, 0.25, 0.125])
    opt = Adafactor(**kwargs)
    config = opt.get_config()
    clone = Adafactor.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == json.loads(json.dumps(config))
    if schedule:
        assert isinstance(clone._learning_rate, schedules.PiecewiseConstantDecay)
    rng = np.random.default_rng(11)
    shapes = [(2,), (2, 2)]
    inits = [np.asarray(rng.normal(size=s)) for s in shapes]
    xs1 = [x.copy() for x in inits]
    xs2 = [x.copy() for x in inits]
    for _ in range(6):
        grads = [np.asarray(rng.normal(size=s)) * 100 for s in shapes]
        opt.apply(grads, xs1)
        clone.apply(grads, xs2)
    for a, b in zip(xs1, xs2):
        assert_bitwise(a, b)
    assert_state_bitwise(opt.state, clone.state)


def test_set_state_loads_the_state_not_the_step_flags_nor_the_variables():
    """What a step did (is_update_step, ema_overwritten) is ``last_step``; a loaded golden
    state's flags and variables do not become the optimizer's state."""
    opt = Adafactor(learning_rate=0.1)
    x = [f64([1.0, 2.0])]
    opt.apply([f64([0.5, 0.5])], x)
    golden = opt.get_state().replace(flags={"is_update_step": False}, variables=[f64([9.0, 9.0])])
    opt.set_state(golden)
    assert opt.get_state().flags is None and "variables" not in opt.get_state()
    assert opt.get_state().iterations == 1 and np.array_equal(opt.state.v[0], golden.v[0])
