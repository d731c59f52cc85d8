"""Mathematical properties of the float64 reference (reference/), checked with Hypothesis.

Each test states a property of Keras's Adafactor that follows from the algorithm (SPEC.md,
Shazeer & Stern 2018, the Keras docs), with the derivation next to it. Where the property is
exact in floating point the test demands bit-identical results; where rounding enters, the
slack is derived from the operations involved (u = 2**-53, the unit roundoff of float64;
a sum of n non-negative terms in any order is within (n-1)u, a square, product, quotient or
square root within u, all to first order; the constants below round those counts up).

Draws where the float64 reference is ill-conditioned for the property are discarded with
``assume`` and the reason is written next to each one. Inputs come from
conformance/fuzz/strategies.py; bounded magnitudes (|v| <= 1e100, no subnormals) keep g*g
and its sums finite and normal unless a test says otherwise.

Profiles (tests/conftest.py): ``ci`` is derandomized, so every run checks the same examples.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import assume, event, given, settings, target  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conformance import replay  # noqa: E402
from conformance.fuzz import strategies as fz  # noqa: E402
from conformance.fuzz.strategies import (  # noqa: E402
    CallableLearningRate, cases, configs, fresh, learning_rates, shapes, variable_sets)
from reference import Adafactor, schedules  # noqa: E402
from reference.adafactor_step import factored_axes  # noqa: E402

U = 2.0 ** -53  # unit roundoff of float64
TINY = float(np.finfo(np.float64).tiny)  # smallest normal float64

# epsilon_1 strategies: > 0 (no 0/0 on zero gradients), and small enough to be negligible
# next to g*g for the magnitudes drawn (g*g + eps1 == g*g needs eps1 < ~2**-53 g*g).
EPS1_POSITIVE = st.one_of(st.just(1e-30), st.floats(1e-30, 1e-3))
EPS1_SMALL = st.one_of(st.just(1e-30), st.just(0.0), st.floats(0.0, 1e-30))


# ============================================================================ helpers
def examples(fraction: float) -> int:
    """A fraction of the active profile's max_examples (for the heavier tests)."""
    return max(10, int(settings.default.max_examples * fraction))


@contextmanager
def quiet():
    """The reference runs under errstate(ignore) as the golden-vector generator does;
    Keras's "Gradients do not exist" warning is expected for None gradients."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def case_config(case) -> dict:
    """The constructor arguments of a drawn case (a fresh callable learning rate)."""
    config = dict(case.config)
    if case.make_learning_rate is not None:
        config["learning_rate"] = case.make_learning_rate()
    return config


class Run:
    """One reference optimizer on copies of a case's initial values."""

    def __init__(self, config: dict, case, initial=None, opt=None):
        self.opt = Adafactor(**fresh(config)) if opt is None else opt
        start = case.inputs[0] if initial is None else initial
        self.x = [np.array(a, dtype=np.float64, copy=True) for a in start]
        self.names = [name for name, _ in case.variables]
        replay.build(self.opt, self.x, self.names, case.exclude)

    def step(self, grads):
        with quiet():
            self.opt.apply(grads, self.x)
        return self.opt.last_step

    def snapshot(self) -> dict:
        s = self.opt.state
        return {
            "iterations": self.opt.iterations,
            "x": [a.copy() for a in self.x],
            "r": list(s.r),
            "c": list(s.c),
            "v": list(s.v),
            "average": s.average,
            "accumulator": s.accumulator,
        }


def bits(a):
    if a is None:
        return None
    a = np.asarray(a)
    return a.shape, a.dtype.str, a.tobytes()


def assert_bit_identical(s1: dict, s2: dict, where: str = "", signed_zeros: bool = True):
    """Bit for bit; with ``signed_zeros=False``, -0.0 and +0.0 count as equal (the rest,
    NaN included, must still be identical)."""
    assert s1["iterations"] == s2["iterations"], where
    for key in ("x", "r", "c", "v", "average", "accumulator"):
        a, b = s1[key], s2[key]
        assert (a is None) == (b is None), f"{where} {key}"
        for i, (p, q) in enumerate(zip(a or [], b or [])):
            if signed_zeros or bits(p) == bits(q):
                assert bits(p) == bits(q), f"{where}: {key}[{i}] differs\n{p!r}\n{q!r}"
            else:
                p, q = np.asarray(p), np.asarray(q)
                assert p.shape == q.shape and p.dtype == q.dtype, f"{where}: {key}[{i}]"
                zeros = (p == 0) & (q == 0)
                assert np.array_equal(np.where(zeros, 0.0, p), np.where(zeros, 0.0, q), equal_nan=True) and \
                    bits(np.where(zeros, 0.0, p)) == bits(np.where(zeros, 0.0, q)), \
                    f"{where}: {key}[{i}] differs beyond the sign of zero\n{p!r}\n{q!r}"


def state_dict(state, x) -> dict:
    """A reference State (and variables) in the form of Run.snapshot()."""
    return {"iterations": state.iterations, "x": list(x), "r": list(state.r),
            "c": list(state.c), "v": list(state.v),
            "average": state.average, "accumulator": state.accumulator}


def is_array(a, shape) -> bool:
    """A float64 ndarray of ``shape`` (a NumPy scalar, what 0-D arithmetic returns, is not)."""
    return isinstance(a, np.ndarray) and a.shape == tuple(shape) and a.dtype == np.float64


def aim(ratios, label: str):
    """hypothesis.target: steer generation toward the largest error / derived slack. Not
    in the ``ci`` profile: target observations steer generation, and their last bits can
    differ between machines, so CI would not draw the same examples everywhere."""
    if (os.environ.get("ADAFACTOR_HYPOTHESIS_PROFILE") or "ci") == "ci":
        return
    ratios = [float(r) for r in ratios if np.isfinite(r)]
    if ratios:
        target(max(ratios), label=label)


def rms(a):
    return np.sqrt(np.mean(np.square(a)))


# ============================================================================ 1. update clipping
@given(case=cases(config=configs(epsilon_1=EPS1_POSITIVE, epsilon_2=st.floats(1e-6, 0.1),
                                 use_ema=False, gradient_accumulation_steps=st.none())))
def test_clipped_update_rms_never_exceeds_clip_threshold(case):
    """RMS(u_hat) <= d (d = clip_threshold) at every step, whatever the history.

    Math: u_hat = u / max(1, RMS(u)/d), so RMS(u_hat) = RMS(u) <= d when not clipped and
    RMS(u_hat) = d when clipped (paper section 5, "update clipping").

    Observation: the step is probed on an all-zero variable with the optimizer's current
    state (stateless_apply): weight decay leaves 0 at 0, alpha = eps2 * rho > 0, and
    x_new = 0 - fl(alpha*u_hat) = -alpha*u_hat*(1+d1) exactly, so est = -x_new/alpha =
    u_hat*(1+d1)(1+d2).

    Slack: the computed rms of n numbers is within (1+u)^k, k = (n+3)/2, of the exact one
    (n squares and n-1 additions of non-negative terms, a division: (n+1)u inside the sqrt,
    halved by it, plus the sqrt's own u). RMS(u_hat) <= d(1+u)/(1-u)^(k+1) (the computed
    RMS(u) in the denominator, the divisions), est adds 2u and its rms k u: in all
    d * (1 + (n+7)u) to first order. We allow (n+8)u. Tiny elements whose product with
    alpha underflows only make est smaller. NaN fails the comparison (eps1 > 0 and the
    bounded magnitudes keep everything finite, see the NaN property below).
    """
    run = Run(case_config(case), case)
    d = run.opt.clip_threshold
    checked, ratios = 0, []
    for grads in case.inputs[1]:
        zeros = [np.zeros_like(x) for x in run.x]
        with quiet():
            probe, _, record = run.opt.stateless_apply(run.opt.state, grads, zeros)
        for i, trace in enumerate(record.traces):
            if trace is None or not trace.alpha > 0:  # a schedule may reach lr = 0 (alpha 0)
                continue
            est = -probe[i] / trace.alpha
            bound = d * (1 + (est.size + 8) * U)
            value = rms(est)
            ratios.append((value / d - 1) / ((est.size + 8) * U))
            assert value <= bound, (f"step {run.opt.state.iterations + 1}, {run.names[i]}: RMS(u_hat) = "
                                    f"{value!r} > clip_threshold {d!r} (+{(est.size + 8)} u)")
            checked += 1
        run.step(grads)
    event(f"checked variable-steps: {min(checked, 10)}{'+' if checked >= 10 else ''}")
    aim(ratios, "(RMS(u_hat)/d - 1) / slack")


# ============================================================================ 2. first step
@given(case=cases(config=configs(weight_decay=None, clipping=None, gradient_accumulation_steps=None,
                                 loss_scale_factor=None, use_ema=False),
                  variables=variable_sets(shapes=shapes(0, 1)), min_steps=1, max_steps=1,
                  gradient_kinds=("ordinary", "positive", "huge", "zeros", "mixed")))
def test_first_unfactored_step_is_minus_alpha_sign_g(case):
    """At t = 1 an unfactored (0-D/1-D) update is x - alpha * sign(g) / D, bit for bit.

    Math: at t = 1, beta_2 = 1 - 1**c = 0 (1**c is exactly 1), so v = fl(g*g + eps1). When
    eps1 is absorbed (fl(g*g + eps1) == fl(g*g)) and g*g is a normal number,
    sqrt(fl(g*g)) == |g| exactly (a correctly rounded square root of a correctly rounded
    square), so u = g/|g| = sign(g) exactly, and u = 0/sqrt(eps1) = 0 = sign(0) where g = 0
    (this needs eps1 > 0). Then RMS(u) = sqrt(k/n), k the non-zero count, and the clip
    divisor is D = max(1, RMS(u)/d). alpha = max(eps2, RMS(x)) * min(lr, 1/sqrt(1)).
    Comparison by value (-0.0 == 0.0: x - alpha*(-0.0) is the only sign-of-zero
    difference possible).

    Discarded per variable (not checked): some g*g not normal or eps1 not absorbed, or a zero
    gradient with eps1 = 0 (0/0). At least one variable must be checked.
    """
    config = case_config(case)
    run = Run(config, case)
    x0 = [x.copy() for x in run.x]
    grads = case.inputs[1][0]
    record = run.step(grads)
    eps1, eps2, d = run.opt.epsilon_1, run.opt.epsilon_2, run.opt.clip_threshold
    lr = record.learning_rate
    checked = 0
    for i, g in enumerate(grads):
        if g is None:
            assert bits(run.x[i]) == bits(x0[i])
            continue
        g2 = g * g
        nonzero = g != 0
        ok = np.all(np.isfinite(g2)) and np.all(g2[nonzero] >= TINY) \
            and np.all(g2[nonzero] + eps1 == g2[nonzero]) and (eps1 > 0 or np.all(nonzero))
        if not ok:
            continue
        sign = np.sign(g)
        alpha = np.maximum(eps2, rms(x0[i])) * np.minimum(lr, 1.0)
        divisor = np.maximum(1.0, rms(sign) / d)
        expected = x0[i] - alpha * (sign / divisor)
        assert np.array_equal(run.x[i], expected), (
            f"{run.names[i]}: x1 = {run.x[i]!r}, expected x0 - alpha*sign(g)/D = {expected!r}")
        checked += 1
    assume(checked > 0)


# ============================================================================ 3. rank one
def _exact_small():
    """+-m * 2**e, m < 2**10: products of two are exact, and so are their squares."""
    return st.tuples(st.integers(1, 1023), st.integers(-4, 4), st.booleans()).map(
        lambda t: (-1.0 if t[2] else 1.0) * t[0] * 2.0 ** t[1])


@st.composite
def rank_one_problems(draw):
    batch = draw(shapes(0, 2, 3))
    m, n = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    count = math.prod(batch)
    a = np.array(draw(st.lists(_exact_small(), min_size=count * m, max_size=count * m))).reshape(batch + (m,))
    b = np.array(draw(st.lists(_exact_small(), min_size=count * n, max_size=count * n))).reshape(batch + (n,))
    steps = draw(st.integers(1, 8))
    scales = [2.0 ** k for k in draw(st.lists(st.integers(-4, 4), min_size=steps, max_size=steps))]
    return a, b, scales


@given(problem=rank_one_problems(),
       config=configs(clipping=None, gradient_accumulation_steps=None, epsilon_1=EPS1_SMALL,
                      loss_scale_factor=st.one_of(st.none(), st.sampled_from([0.25, 2.0, 1024.0]))))
def test_factored_second_moment_is_exact_for_rank_one_gradients(problem, config):
    """For g_t = s_t * (a outer b), the factored v equals the full EMA second moment.

    Math (paper section 4, Keras's means): with eps1 negligible q = g*g = s^2 a_i^2 b_j^2 is
    rank one. Then r_i = S a_i^2 mean(b^2), c_j = S mean(a^2) b_j^2 and mean(r) =
    S mean(a^2) mean(b^2), with S = the EMA of s_t^2, so v_ij = r_i c_j / mean(r) =
    S a_i^2 b_j^2, which is exactly the unfactored EMA beta*v + (1-beta)*g^2 of the same
    gradients. Leading axes are batch axes: the identity holds per slice. Checked against
    the same config on the flattened (1-D, unfactored) variable.

    Exact inputs: a_i, b_j have 10-bit mantissas and s_t is a power of two, so g and g*g are
    exact (a loss scale that is a power of two keeps them exact; clipping and accumulation
    would round g elementwise and are left out).

    Slack, relative to v: step 1 factored: r (n-term mean) nu, c mu, mean(r) (n+m)u, the
    quotient and the product 2u: (2n+2m+2)u; each EMA step adds 3u to r, c and the
    unfactored v (the weights beta + (1-beta) sum to exactly 1, so older errors do not grow).
    After t steps: (2(n+m) + 12t + 4)u, times 1.01 for second-order terms.

    Discarded: eps1 not negligible next to the smallest g*g (then q is not rank one).
    """
    a, b, scales = problem
    lsf = config.get("loss_scale_factor") or 1.0
    eps1 = config.get("epsilon_1", 1e-30)
    base = a[..., :, None] * b[..., None, :]
    g_min2 = float(np.min(np.square(base / lsf))) * min(scales) ** 2
    assume(eps1 < g_min2 * 2.0 ** -54)
    shape = base.shape
    m, n = shape[-2], shape[-1]

    class _Case:  # what Run needs of a case
        variables = (("w", shape),)
        exclude = None
        inputs = ([np.ones(shape)], None)

    class _Flat:
        variables = (("w", (base.size,)),)
        exclude = None
        inputs = ([np.ones(base.size)], None)

    factored, flat = Run(config, _Case), Run(config, _Flat)
    ratios = []
    for t, s in enumerate(scales, start=1):
        g = s * base
        factored.step([g])
        flat.step([g.reshape(-1)])
        v_f = factored.opt.state.v[0].reshape(-1)
        v_u = flat.opt.state.v[0]
        tol = 1.01 * (2 * (n + m) + 12 * t + 4) * U * np.abs(v_u)
        ratios.append(np.max(np.abs(v_f - v_u) / tol))
        excess = np.abs(v_f - v_u) - tol
        assert np.all(excess <= 0), (
            f"step {t}: factored v differs from the full second moment by "
            f"{np.max(np.abs(v_f - v_u) / v_u):.3g} relative (allowed {(2 * (n + m) + 12 * t + 4) * U:.3g})")
    aim(ratios, "|v_factored - v_full| / slack")


# ============================================================================ 4. gradient scale
@given(case=cases(config=configs(clipping=None, gradient_accumulation_steps=None, epsilon_1=EPS1_SMALL),
                  gradient_kinds=("ordinary", "positive", "huge")),
       k=st.integers(-8, 20))
def test_update_is_invariant_to_gradient_scale(case, k):
    """g -> s*g (s = 2**k) changes nothing but v, r, c, which scale by s^2: bit for bit.

    Math: with eps1 negligible, q = s^2 g^2 exactly (powers of two scale exactly); means,
    EMAs and the quotient r/mean(r) commute with the exact scaling, so v' = s^2 v exactly;
    sqrt(s^2 v) = |s| sqrt(v) exactly (an even power of two), so u' = s g / (|s| sqrt v) = u
    (s > 0) bit for bit, and so are RMS(u), u_hat and every variable (the paper's "scale
    invariance" of the second-moment normalisation). Loss scaling and weight decay commute
    with it; clipping is left out (clipnorm/clipvalue thresholds are not scaled) and so is
    accumulation (a cancelling sum could make the averaged gradient 0, where eps1 is not
    negligible).

    Discarded: any gradient element (after the loss-scale division, scaled or not) that is
    0, whose square is not a normal finite number, or to whose square eps1 is not absorbed.
    """
    config = case_config(case)
    s = 2.0 ** k
    lsf = np.float64(config.get("loss_scale_factor") or 1.0)
    eps1 = config.get("epsilon_1", 1e-30)
    with quiet():
        for row in case.inputs[1]:
            for g in row:
                if g is None:
                    continue
                for h in (g / lsf, (s * g) / lsf):
                    h2 = h * h
                    assume(np.all(np.isfinite(h2)) and np.all(h2 >= TINY) and np.all(h2 + eps1 == h2))
    plain, scaled = Run(config, case), Run(config, case)
    for t, row in enumerate(case.inputs[1], start=1):
        plain.step(row)
        scaled.step([None if g is None else np.asarray(s * g) for g in row])
        p, q = plain.snapshot(), scaled.snapshot()
        for key in ("x", "average"):
            for i, (a, b) in enumerate(zip(p[key] or [], q[key] or [])):
                assert bits(a) == bits(b), f"step {t}: {key}[{i}] differs with gradients x 2**{k}"
        for key in ("r", "c", "v"):
            for i, (a, b) in enumerate(zip(p[key], q[key])):
                if a is not None:
                    assert bits(a * (s * s)) == bits(b), f"step {t}: {key}[{i}] is not scaled by 2**{2 * k}"


# ============================================================================ 5. relative_step
@given(case=cases())
def test_relative_step_false_is_bit_identical_to_true(case):
    """SPEC.md Q1: line (2) applies min(lr, 1/sqrt t) unconditionally and
    min(min(lr, s), s) == min(lr, s) exactly, so relative_step changes nothing."""
    config = case_config(case)
    on = Run({**config, "relative_step": True}, case)
    off = Run({**config, "relative_step": False}, case)
    for t, row in enumerate(case.inputs[1], start=1):
        on.step(row)
        off.step(row)
        assert_bit_identical(on.snapshot(), off.snapshot(), f"step {t}")


# ============================================================================ 6. accumulation
class _EveryNth(schedules.LearningRateSchedule):
    """The schedule a plain run must see to match accumulation: the accumulated run's k-th
    update happens at raw micro-step k*N + N - 1 (the schedule sees micro-steps, Q9)."""

    def __init__(self, base, n):
        self.base, self.n = base, n

    def __call__(self, step):
        return self.base(step * self.n + self.n - 1)

    def get_config(self):
        return {"base": self.base, "n": self.n}


@given(case=cases(config=configs(use_ema=False, gradient_accumulation_steps=st.none())),
       n=st.integers(2, 7))
def test_accumulating_n_copies_of_a_gradient_equals_one_step(case, n):
    """gradient_accumulation_steps=N, fed the same gradient on the N micro-steps of each
    update, equals one plain step per update with that gradient.

    What is equal: on the update micro-step Keras uses g~ = fl(fl(g + acc)/N) with acc the
    sequential sum g + (g + (... + g)) of the N-1 earlier copies (Q9); clipping, weight decay
    and the step see g~; Adafactor's t counts updates (iterations = raw // N), so t agrees;
    the schedule sees raw micro-steps, so the plain run gets the schedule at k*N + N - 1
    (_EveryNth); a callable is called only on update micro-steps, as often as in a plain
    step. EMA is left out: it also runs on the N-1 accumulating micro-steps (Q10).

    g~ == g exactly for N = 2 (g + g = 2g, /2 exact) and N = 4 (2g, then fl(3g) = 3g(1+d)
    with |3g d| <= 1.5 ulp(g) < half an ulp of 4g, so fl(g + fl(3g)) = 4g; /4 exact): then
    the whole trajectory is bit-identical, and every accumulator is back to zero; up to the
    sign of zero: the accumulator starts at +0.0 and -0.0 + 0.0 = +0.0, so a -0.0 gradient
    arrives as +0.0, and x - alpha*(+-0) differs only where x is itself a zero (Keras too).
    For other N, |g~ - g| <= N u |g| elementwise (N-1 additions, one division). A relative
    perturbation of g moves clipping, q, the means, u, RMS(u) and the clip divisor only
    relatively; alpha is identical (same x, same lr). Bounding each stage (clip 2Nu+6u; q
    doubles it; means and rms add at most 2(n+3)u each side; u_hat doubles the lot) gives
    |x_acc - x_plain| <= (8N + 4n + 60) u |x_prev - x_plain| + 1 ulp of each result, checked
    on the first update only (later steps compound through x and v).
    """
    config = case_config(case)
    exact = n in (2, 4)
    plain_config = dict(config)
    if isinstance(config.get("learning_rate"), schedules.LearningRateSchedule):
        plain_config["learning_rate"] = _EveryNth(fresh(config)["learning_rate"], n)
    plain = Run(plain_config, case)
    accumulated = Run({**config, "gradient_accumulation_steps": n}, case)
    for t, row in enumerate(case.inputs[1], start=1):
        before = [x.copy() for x in plain.x]
        plain.step(row)
        for micro in range(n):
            record = accumulated.step(row)
            assert record.is_update_step == (micro == n - 1)
        p, a = plain.snapshot(), accumulated.snapshot()
        assert p["iterations"] == a["iterations"] == t
        assert all(not np.any(acc) for acc in a["accumulator"]), "accumulators not reset"
        if exact:
            a = {**a, "accumulator": None}
            assert_bit_identical(p, a, f"update {t} (N={n})", signed_zeros=False)
            continue
        ratios = []
        for i, (xa, xp, x0) in enumerate(zip(a["x"], p["x"], before)):
            size = max(x0.size, 1)
            with quiet():
                tol = (8 * n + 4 * size + 60) * U * np.abs(x0 - xp) + np.spacing(np.abs(xa)) + np.spacing(np.abs(xp))
                ok = (np.abs(xa - xp) <= tol) | (np.isnan(xa) & np.isnan(xp))
                ratios.append(np.max(np.abs(xa - xp) / tol, initial=0.0))
            assert np.all(ok), f"update 1 (N={n}): {plain.names[i]} differs beyond the derived slack"
        aim(ratios, "|x_accumulated - x_plain| / slack")
        break


# ============================================================================ 7. no NaN
@given(case=cases(config=configs(epsilon_1=st.one_of(st.just(1e-30), st.floats(1e-300, 1e-3)))))
def test_finite_inputs_with_positive_epsilon_1_stay_finite(case):
    """Finite inputs and eps1 > 0 give finite variables and state (no NaN, no inf), provided
    the dynamic range of the gradients is not extreme next to eps1.

    Math: q = g*g + eps1 >= eps1 > 0, and with beta in [0, 1), beta + (1-beta) = 1, every r,
    c (and unfactored v) is a convex combination of q-means, so eps1 <= r, c <= G^2 + eps1,
    G = the largest |gradient| the step sees (clipping only shrinks it, accumulation
    averages it, the loss scale divides it). Hence v >= eps1 / (G^2 + eps1) * eps1 (factored)
    or v >= eps1 (unfactored), and |u| <= G / sqrt(v) <~ G^2 / eps1. If RMS(u) overflows the
    clip divisor is inf and u_hat = 0: no NaN. alpha is finite because |x| stays far below
    1e154 (|x| <= 1e100 initially and at most a factor (1 + 10*36) per step for 8 steps).

    Discarded (ill-conditioned, and genuinely NaN in Keras, see the next test):
    eps1^2 / (G^2 + eps1) below 2**-1000 (v would underflow to 0 next to a zero gradient:
    0/0) or G^2 / eps1 above 2**1000 (u would overflow to inf: inf/inf in u_hat).
    """
    config = case_config(case)
    run = Run(config, case)
    eps1 = run.opt.epsilon_1
    lsf = config.get("loss_scale_factor") or 1.0
    G = max((float(np.max(np.abs(g), initial=0.0)) for row in case.inputs[1] for g in row if g is not None),
            default=0.0) * max(1.0, 1.0 / lsf)
    assume(eps1 * eps1 / (G * G + eps1) > 2.0 ** -1000 and G * G / eps1 < 2.0 ** 1000)
    for t, row in enumerate(case.inputs[1], start=1):
        run.step(row)
        snap = run.snapshot()
        for key in ("x", "r", "c", "v", "average", "accumulator"):
            for i, a in enumerate(snap[key] or []):
                if a is not None:
                    assert np.all(np.isfinite(a)), f"step {t}: {key}[{i}] ({run.names[i]}) is not finite: {a!r}"


def test_the_nan_regime_the_previous_property_excludes_is_real():
    """Why the assume above is needed (Keras does the same): default eps1 = 1e-30 and a
    finite gradient 1e140 (its square, 1e280, does not overflow) on a 2x2 variable: the
    zero row's r/mean(r) * c underflows to v = 0 where g = 0, u = 0/0, and the whole
    variable becomes NaN. SPEC.md section 5 only lists squares that overflow."""
    x = np.ones((2, 2))
    opt = Adafactor()
    with quiet():
        opt.apply([np.array([[1e140, 0.0], [0.0, 0.0]])], [x])
    assert opt.state.v[0][1, 1] == 0.0
    assert np.all(np.isnan(x))


# ============================================================================ 8. shapes, dtypes
@given(case=cases())
def test_shapes_dtypes_and_identity_are_preserved(case):
    """apply updates the variables in place: same objects, shapes, float64 ndarrays; r has shape
    x.shape[:-1], c x.shape[:-2] + x.shape[-1:] for >= 2 axes (Q3), None otherwise; v, the
    EMA and the accumulator have the variable's shape (Q6). iterations counts applies
    (// N with accumulation). stateless_apply returns new arrays of the same shapes."""
    run = Run(case_config(case), case)
    objects = list(run.x)
    shapes_ = [shape for _, shape in case.variables]
    n = run.opt.gradient_accumulation_steps
    for t, row in enumerate(case.inputs[1], start=1):
        with quiet():
            values, state, _ = run.opt.stateless_apply(run.opt.state, row, run.x)
        run.step(row)
        assert run.opt.state.iterations == t and run.opt.iterations == (t // n if n else t)
        for i, (x, shape) in enumerate(zip(run.x, shapes_)):
            assert x is objects[i] and run.opt._variables[i] is x
            assert is_array(x, shape) and is_array(values[i], shape) and values[i] is not x
            for s in (run.opt.state, state):
                if factored_axes(shape) is not None:
                    assert is_array(s.r[i], shape[:-1]) and is_array(s.c[i], shape[:-2] + shape[-1:])
                else:
                    assert s.r[i] is None and s.c[i] is None
                assert is_array(s.v[i], shape)
            for extra in (run.opt.state.average, run.opt.state.accumulator, state.average, state.accumulator):
                if extra is not None:
                    assert is_array(extra[i], shape)


def test_zero_d_results_are_arrays():
    """A 0-D variable's results are 0-D arrays, so stateless_apply can be chained (regression:
    NumPy turns 0-D arithmetic results into scalars, which stateless_apply refused as its
    next input; found while writing the stateless property)."""
    opt = Adafactor(use_ema=True, gradient_accumulation_steps=2)
    x = [np.array(1.0)]
    opt.build([a.copy() for a in x])
    state = opt.get_state()
    for _ in range(4):
        x, state, _ = opt.stateless_apply(state, [np.array(0.5)], x)
        assert isinstance(x[0], np.ndarray)
        for a in (state.v[0], state.average[0], state.accumulator[0]):
            assert isinstance(a, np.ndarray)


# ============================================================================ 9. config
@given(case=cases(max_steps=3))
def test_get_config_from_config_round_trips(case):
    """from_config(get_config()) rebuilds the same optimizer (Keras's serialization
    contract): the same config, the same trajectory bit for bit, and, for float and schedule
    learning rates, also through JSON (schedules serialize to Keras's dict)."""
    config = case_config(case)
    opt = Adafactor(**fresh(config))
    saved = opt.get_config()
    assert set(saved) == set(fz.KERAS_DEFAULTS)
    for key, value in config.items():
        if isinstance(value, schedules.LearningRateSchedule):
            assert saved[key] == schedules.serialize(value)
        elif not isinstance(value, CallableLearningRate):
            assert saved[key] == value, key
    assert Adafactor.from_config(saved).get_config() == saved
    if isinstance(config.get("learning_rate"), CallableLearningRate):
        return  # Keras would serialize the function object; not JSON
    text = json.dumps(saved, sort_keys=True)
    restored = Adafactor.from_config(json.loads(text))
    assert json.dumps(restored.get_config(), sort_keys=True) == text
    original = Run(config, case)
    rebuilt = Run(None, case, opt=Adafactor.from_config(json.loads(text)))
    for t, row in enumerate(case.inputs[1], start=1):
        original.step(row)
        rebuilt.step(row)
        assert_bit_identical(original.snapshot(), rebuilt.snapshot(), f"step {t}")


@given(rejected=configs(valid=False))
def test_invalid_configs_raise_the_declared_error(rejected):
    """Every configuration Keras's constructor rejects raises the declared class with the
    declared message fragment (base_optimizer.py:85-193)."""
    with pytest.raises(rejected.error, match=re.escape(rejected.message)), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Adafactor(**rejected.config)


# ============================================================================ 10. loss scale
@given(case=cases(config=configs(loss_scale_factor=st.none())), k=st.integers(-30, 30))
def test_loss_scale_with_scaled_gradients_is_bit_identical(case, k):
    """loss_scale_factor = s = 2**k with gradients s*g gives the unscaled run bit for bit.

    Math: Keras divides first (Q12): fl(fl(s*g)/s) = g exactly for a power of two, as long
    as s*g neither overflows nor becomes subnormal. After that both runs are the same
    computation (accumulation, clipping, decay, step, EMA).

    Discarded: a non-zero s*g that is not a finite normal number."""
    config = case_config(case)
    s = 2.0 ** k
    with quiet():
        for row in case.inputs[1]:
            for g in row:
                if g is not None:
                    sg = np.abs(s * g[g != 0])
                    assume(np.all(np.isfinite(sg)) and np.all(sg >= TINY))
    plain = Run(config, case)
    scaled = Run({**config, "loss_scale_factor": s}, case)
    for t, row in enumerate(case.inputs[1], start=1):
        plain.step(row)
        scaled.step([None if g is None else np.asarray(s * g) for g in row])
        assert_bit_identical(plain.snapshot(), scaled.snapshot(), f"step {t} (s = 2**{k})")


# ============================================================================ 11. decay order
@given(case=cases(config=configs(weight_decay=st.floats(1e-4, 0.5), use_ema=False, epsilon_1=EPS1_POSITIVE,
                                 learning_rate=learning_rates(max_callable_values=1)),
                  value_kinds=("ordinary", "positive", "huge", "mixed"), exclusion=False))
def test_weight_decay_before_or_after_the_step_agree_when_epsilon_2_does_not_bind(case):
    """SPEC.md Q7: decaying before the step (Keras) or after it agree in exact arithmetic
    whenever RMS(x) >= eps2 (and c = 1 - wd*lr >= 0).

    Math: Keras: x' = c x, alpha' = RMS(c x) rho = c RMS(x) rho, x_new = c x - c RMS(x) rho u_hat.
    After: y = x - RMS(x) rho u_hat, z = c y: the same. The slots never see x, so they are
    bit-identical. Checked one step at a time from the Keras trajectory (teacher-forced,
    stateless_apply with and without weight_decay from the same state).

    Slack (c >= 1/2 so that wd*lr/c <= 1): x' = c x (1 + e), |e| <= 3u (two products, one
    subtraction); alpha' carries e, the rms ((n+3)/2 u) and 1u; x_new adds a product and a
    subtraction; the other order the same with its decay last. First order:
    |x_K - z| <= c (8u |x| + (n + 15)u |A|), A = RMS(x) rho u_hat ~ x - y; c <= 1; times 1.01.

    Not checked (skipped per variable-step): no decay this step (None gradient, accumulation
    micro-step), wd*lr > 1/2, or c RMS(x) < eps2 (eps2 binds: the orders differ by design,
    vector arguments/weight_decay/epsilon_2_binds). At least one check per example.
    """
    config = case_config(case)
    keras = Run(config, case)
    after = Adafactor(**fresh({**config, "weight_decay": None}))
    after.build([x.copy() for x in keras.x], names=keras.names)
    wd = keras.opt.weight_decay
    eps2 = keras.opt.epsilon_2
    x, state = [a.copy() for a in keras.x], keras.opt.get_state()
    checked, ratios = 0, []
    for t, row in enumerate(case.inputs[1], start=1):
        with quiet():
            x_k, state_k, record = keras.opt.stateless_apply(state, row, x)
            y, state_y, _ = after.stateless_apply(state, row, x)
        for i, (vk, vy) in enumerate(zip(state_k.v, state_y.v)):
            assert bits(vk) == bits(vy), f"step {t}: v[{i}] depends on the decay order"
        for i, g in enumerate(row):
            if g is None or not record.is_update_step:
                assert bits(x_k[i]) == bits(y[i])
                continue
            lr = record.learning_rate
            c = 1 - wd * lr
            if not (0 < wd * lr <= 0.5) or not c * rms(x[i]) >= eps2:
                continue
            with quiet():
                z = y[i] - y[i] * np.float64(wd) * np.float64(lr)
                tol = 1.01 * U * (8 * np.abs(x[i]) + (x[i].size + 15) * np.abs(x[i] - y[i])) + 4 * 2.0 ** -1074
            ratios.append(np.max(np.abs(x_k[i] - z) / tol))
            assert np.all(np.abs(x_k[i] - z) <= tol), (
                f"step {t}, {keras.names[i]}: decay-before {x_k[i]!r} vs decay-after {z!r}")
            checked += 1
        x, state = x_k, state_k
    aim(ratios, "|decay before - decay after| / slack")
    assume(checked > 0)


# ============================================================================ 12. EMA
@given(case=cases(config=configs(use_ema=True, ema_momentum=0.0)))
def test_ema_with_momentum_zero_is_the_variable(case):
    """avg = m*avg + (1-m)*x with m = 0 is x after every apply (0*avg = 0 for a finite avg,
    1*x = x, 0 + x = x up to the sign of zero), for every variable with or without a
    gradient, on accumulation micro-steps too; an overwrite then writes x onto itself."""
    run = Run(case_config(case), case)
    for t, row in enumerate(case.inputs[1], start=1):
        run.step(row)
        for i, x in enumerate(run.x):
            assert np.array_equal(run.opt.average(i), x, equal_nan=True), f"step {t}: average[{i}] != x"


# ============================================================================ 13. stateless
@given(case=cases())
def test_stateless_apply_equals_apply(case):
    """stateless_apply(state, g, x) returns exactly what apply writes, and modifies none of
    its inputs (the same computation on explicit state; JAX-style purity)."""
    config = case_config(case)
    stateful = Run(config, case)
    pure = Adafactor(**fresh(config))
    x = [a.copy() for a in stateful.x]
    replay.build(pure, [a.copy() for a in x], stateful.names, case.exclude)
    state = pure.get_state()
    for t, row in enumerate(case.inputs[1], start=1):
        x_in, state_in = x, state
        x_bits, state_copy, grad_bits = [bits(a) for a in x_in], state_in.copy(), [bits(g) for g in row]
        with quiet():
            x, state, _ = pure.stateless_apply(state_in, row, x_in)
        assert [bits(a) for a in x_in] == x_bits, "stateless_apply modified the variables"
        assert [bits(g) for g in row] == grad_bits, "stateless_apply modified the gradients"
        assert_bit_identical(state_dict(state_in, x_in), state_dict(state_copy, x_in), "input state modified")
        stateful.step(row)
        assert state.iterations == stateful.opt.state.iterations
        snap = stateful.snapshot()
        assert_bit_identical(snap, {**state_dict(state, x), "iterations": snap["iterations"]}, f"step {t}")


# ============================================================================ 14. parameter scale
@given(case=cases(config=configs(epsilon_2=st.one_of(st.just(1e-3), st.floats(0.0, 1e-3))),
                  value_kinds=("ordinary", "positive", "huge")),
       k=st.integers(-4, 8))
def test_update_scales_with_the_parameters(case, k):
    """x0 -> 2**k x0 gives 2**k times the trajectory, bit for bit, while eps2 does not bind.

    Math (paper section 8, "relative step size": alpha_t = max(eps2, RMS(x)) rho_t): with
    RMS(x) >= eps2 the step alpha u_hat is proportional to RMS(x), so x_new = x - RMS(x) rho
    u_hat is homogeneous of degree 1 in x; u_hat (and r, c, v) do not depend on x at all.
    Scaling by a power of two is exact in every operation (squares, sums, sqrt of 2**2k,
    products), weight decay x - x*wd*lr and the EMA are linear in x: exact too.

    Discarded: eps2 binds at some step in either run (alpha is then eps2 rho, not
    proportional to RMS(x)), read from the step traces."""
    config = case_config(case)
    s = 2.0 ** k
    plain = Run(config, case)
    scaled = Run(config, case, initial=[np.asarray(s * x) for x in case.inputs[0]])
    eps2 = plain.opt.epsilon_2
    snaps = []
    for row in case.inputs[1]:
        for run in (plain, scaled):
            record = run.step(row)
            assume(all(tr is None or tr.rms_x > eps2 for tr in record.traces))
        snaps.append((plain.snapshot(), scaled.snapshot()))
    for t, (p, q) in enumerate(snaps, start=1):
        for key in ("x", "average"):
            for i, (a, b) in enumerate(zip(p[key] or [], q[key] or [])):
                assert bits(s * a) == bits(b), f"step {t}: {key}[{i}] is not 2**{k} times"
        for key in ("r", "c", "v", "accumulator"):
            for i, (a, b) in enumerate(zip(p[key] or [], q[key] or [])):
                assert bits(a) == bits(b), f"step {t}: {key}[{i}] depends on the parameter scale"


# ============================================================================ 15. constant gradient
@st.composite
def constant_gradient_cases(draw):
    """A drawn case whose gradients repeat its first step's. A variable may skip steps (None)
    unless accumulation or global_clipnorm is on: there a missing gradient changes what the
    others see (the accumulated sum, the global norm)."""
    case = draw(cases(config=configs(epsilon_1=EPS1_POSITIVE), max_steps=1))
    steps = draw(st.integers(2, 8))
    initial, grads = case.inputs
    first = grads[0]
    coupled = case.config.get("gradient_accumulation_steps") or case.config.get("global_clipnorm")
    rows = [first]
    for _ in range(steps - 1):
        if coupled:
            rows.append(first)
            continue
        row = [g if draw(st.sampled_from([True, True, True, False])) else None for g in first]
        rows.append(row if any(g is not None for g in row) else first)
    case.inputs, case.steps = (initial, rows), steps
    return case


@given(case=constant_gradient_cases())
def test_constant_gradient_keeps_the_second_moment(case):
    """A constant gradient keeps v (factored or not) at its first value: Keras needs no
    bias correction.

    Math (paper section 7.2, beta_2t = 1 - t^-c): v_t = beta v + (1-beta) q is a weighted
    average of the q's whose weights sum to exactly 1 (v_1 = q since beta_1 = 0). Keras
    computes 1-beta as fl(1 - beta), which is exact (Sterbenz for beta >= 1/2; otherwise
    beta = 1 - p exactly and 1 - beta = p), so beta + (1-beta) = 1 in floating point too.
    The effective gradient is the same each update whatever the config (clipping, loss
    scale and accumulation are deterministic functions of it), so q is constant.

    Slack: r_t = fl(fl(beta r) + fl((1-beta) M)) with r_{t-1} = M(1+a): |a_t| <= beta|a| + 3u,
    so 3(k-1)u after a variable's k-th update; unfactored v likewise. Factored v = (r/mean r)
    c adds: the perturbed r in the numerator and in the mean, the mean's own rounding in
    both (2(m-1)u + 2u), quotient and product (4u): (9(k-1) + 2m + 6)u, times 1.01.
    """
    run = Run(case_config(case), case)
    first, updates, ratios = {}, {}, []
    for t, row in enumerate(case.inputs[1], start=1):
        record = run.step(row)
        if not record.is_update_step:
            continue
        for i, g in enumerate(row):
            if g is None:
                continue
            v = run.opt.state.v[i]
            updates[i] = updates.get(i, 0) + 1
            if i not in first:
                first[i] = v.copy()
                continue
            k = updates[i]
            rows_m = v.shape[-2] if v.ndim >= 2 else 0
            slack = (9 * (k - 1) + 2 * rows_m + 6) if v.ndim >= 2 else 3 * (k - 1)
            tol = 1.01 * slack * U * np.abs(first[i])
            ratios.append(np.max(np.abs(v - first[i]) / tol))
            assert np.all(np.abs(v - first[i]) <= tol), (
                f"step {t} (update {k} of {run.names[i]}): v drifted by "
                f"{np.max(np.abs(v - first[i]) / first[i]):.3g} relative, allowed {slack} u")
    aim(ratios, "|v_t - v_1| / slack")


# ============================================================================ 16. None gradients
@given(case=cases(config=configs(ema_overwrite_frequency=st.none())))
def test_variables_without_gradient_and_accumulation_micro_steps_change_nothing(case):
    """Keras skips variables whose gradient is None: no decay, no step, slots untouched
    (base_optimizer.py:843-868); on accumulation micro-steps nothing but the accumulators
    moves (Q9). (EMA overwrite, which writes every variable, is left out.)"""
    run = Run(case_config(case), case)
    for t, row in enumerate(case.inputs[1], start=1):
        before = run.snapshot()
        record = run.step(row)
        after = run.snapshot()
        for i, g in enumerate(row):
            if g is None or not record.is_update_step:
                for key in ("x", "r", "c", "v"):
                    assert bits(before[key][i]) == bits(after[key][i]), (
                        f"step {t}: {key}[{i}] ({run.names[i]}) changed without an update")


# ============================================================================ strategies
@settings(max_examples=examples(0.3))
@given(case=cases())
def test_drawn_cases_are_valid_vectors_that_the_reference_replays_exactly(case):
    """Every drawn case becomes a schema-valid golden vector (tools.generate_vectors) with the
    deterministic id regression/fuzz-<sha256>, and the reference adapter replays it at 0
    error in both runner modes: the strategies feed the differential fuzzer correctly."""
    from conformance import runner
    from conformance import vectorfile as vf
    from conformance.adapters.reference import ReferenceAdapter
    from conformance.tolerance import Policy
    from tools import generate_vectors as gen

    digest = fz.case_digest(case.config, case.variables, case.exclude, case.make_learning_rate, case.inputs)
    assert case.id == f"regression/fuzz-{digest[:12]}"
    with quiet():
        documents = gen.generate_corpus([case])
    (document,) = documents.values()
    vf.validate(document)
    (vector,) = document["vectors"]
    assert vector["result"] == "valid" and len(vector["steps"]) == case.steps
    for mode in ("teacher", "trajectory"):
        outcome = runner.run_vector(ReferenceAdapter(), vector, "<fuzz>", "float64", "cpu", mode,
                                    Policy.load(), [])
        assert outcome.status == "pass" and outcome.worst_ratio == 0.0, (mode, outcome.reason)
