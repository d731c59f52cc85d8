"""Arbitrary-precision oracle of one Adafactor step, and the reference's float64 error.

The oracle (``exact_step``) evaluates the *same mathematical step* as
``reference.adafactor_step.update_step`` in mpmath at ``PREC`` = 200 bits, on the same
float64 inputs (x, g, r, c, v, learning rate, t, hyperparameters, each taken as the
exact real number its float64 holds). It does not copy the reference's order of
operations: it computes the real-number result, with 2**-190 relative error or better.

Two views of what "the real-number result" is; both are measured and both are asserted
by tests/reference/test_oracle.py:

  E ("exact scalars", the spec view). Every scalar of Keras's formula is the exact real
    number: rho_t = min(lr, 1/sqrt(t)), p = t**beta_2_decay, beta_2_t = 1 - p and
    1 - beta_2_t = p. The measured error is everything float64 evaluation costs,
    including Keras's fl(1 - fl(1 - p)) for the EMA weight, which loses up to
    log2(1/p) bits of p (a cancellation, not a rounding of the reference's own making).
  R ("rounded beta"). As E, but beta_2_t and 1 - beta_2_t are the float64 values the
    reference computed (``trace.beta_2`` and 1 - it, a subtraction that is always exact,
    see ``beta_scalars``). This isolates the rounding error of the elementwise
    arithmetic; its bounds are shape-only constants, so it is the sharper detector of a
    changed formula, and it is blind to a changed beta (which E catches).

``error_bounds`` derives an a-priori bound (a first-order rounding-error count of the
reference's formula, derivation in its comment) for every element of every output, per
view; ``measure`` runs the reference on ``make_cases`` and compares. Run

    .venv/bin/python -m tools.oracle_report            # from the repository root

to print the table that reference/ACCURACY.md quotes.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Optional
from unittest import mock

import numpy as np
from mpmath import mp, mpf

import reference.optimizer as _optimizer_module
from reference.adafactor_step import Hyperparameters, factored_axes, update_step
from reference.optimizer import Adafactor
from reference.state import Kind, State

PREC = 200  # bits of the oracle's working precision
SEED = 20240607
N_CASES = 400
U = 2.0**-53  # unit roundoff of float64: fl(y) = y (1 + delta), |delta| <= U
# The bounds below are first order in U. With every count k <= 1000 here, the dropped
# terms are below k**2 U**2 / (1 - k U) relative to the first-order bound, < 1e-12 of
# it; this factor covers them (and the float64 evaluation of the bound itself).
SECOND_ORDER = 1.0 + 1e-9

QUANTITIES = ("new_x", "update", "update_dominant", "r", "c", "v_factored", "v_vector")
VIEWS = ("E", "R")


# ---------------------------------------------------------------------------- cases
@dataclass
class Case:
    index: int
    x: np.ndarray
    g: np.ndarray
    moments: tuple  # (r, c, v) before the step; r and c None when not factored
    learning_rate: float
    iterations: int  # t = iterations + 1
    hyper: Hyperparameters
    via: str  # "step": update_step directly; "optimizer": Adafactor.stateless_apply

    @property
    def t(self) -> int:
        return self.iterations + 1


def _log_uniform(rng, lo_exp, hi_exp):
    return float(10.0 ** rng.uniform(lo_exp, hi_exp))


def make_cases(seed: int = SEED, n: int = N_CASES) -> list:
    """Deterministic random cases. Shapes 0-D to 3-D (every fourth case of each), small
    sizes including 1 x n and n x 1; t = 1 in ~8% of cases, else log-uniform on 1..1000;
    the learning rate log-uniform on [1e-4, 1] (so both arms of min(lr, 1/sqrt(t)));
    x of scale 1e-6..10 (so epsilon_2 dominates RMS(x) or not); g of scale 1e-6..100
    (1e-16..1e-14 in ~10% of cases, where epsilon_1 = 1e-30 is not negligible); a state
    whose scale is 1e-4..1e4 times g**2, so the clip is active or not; slots r and c are
    row and column means of one positive matrix (consistent with factoring)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        ndim = i % 4
        if ndim == 0:
            shape = ()
        elif ndim == 1:
            shape = (int(rng.integers(1, 9)),)
        elif ndim == 2:
            shape = (int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        else:
            shape = (int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 6)))

        t = 1 if rng.random() < 0.08 else int(round(10.0 ** rng.uniform(0.0, 3.0)))
        x = _log_uniform(rng, -6, 1) * rng.standard_normal(shape)
        g_scale = _log_uniform(rng, -16, -14) if rng.random() < 0.1 else _log_uniform(rng, -6, 2)
        g = g_scale * rng.standard_normal(shape)
        state_scale = g_scale**2 * _log_uniform(rng, -4, 4)
        q0 = state_scale * np.exp(rng.standard_normal(shape))  # positive "past g**2"
        if factored_axes(shape) is not None:
            moments = (q0.mean(axis=-1), q0.mean(axis=-2), q0.copy())
        else:
            moments = (None, None, np.asarray(q0, dtype=np.float64))
        hyper = Hyperparameters(
            beta_2_decay=float(rng.choice([-0.8, -0.8, -0.8, -0.65, -0.5, -1.0])),
            epsilon_1=float(rng.choice([1e-30, 1e-30, 1e-30, 1e-15])),
            epsilon_2=float(rng.choice([1e-3, 1e-3, 1e-4])),
            clip_threshold=float(rng.choice([1.0, 1.0, 1.0, 0.5, 2.0, 0.1, 10.0])),
            relative_step=bool(rng.random() < 0.5),
        )
        cases.append(
            Case(
                index=i,
                x=np.asarray(x, dtype=np.float64),
                g=np.asarray(g, dtype=np.float64),
                moments=moments,
                learning_rate=_log_uniform(rng, -4, 0),
                iterations=t - 1,
                hyper=hyper,
                via="optimizer" if i % 2 else "step",
            )
        )
    return cases


def run_reference(case: Case):
    """(new_x, (r, c, v), trace) from the reference, through update_step or through
    the public optimizer (stateless_apply from a state with iterations = t - 1)."""
    if case.via == "step":
        return update_step(
            case.x, case.g, case.moments, case.learning_rate, case.iterations, case.hyper
        )
    h = case.hyper
    opt = Adafactor(
        learning_rate=case.learning_rate,
        beta_2_decay=h.beta_2_decay,
        epsilon_1=h.epsilon_1,
        epsilon_2=h.epsilon_2,
        clip_threshold=h.clip_threshold,
        relative_step=h.relative_step,
    )
    opt.build([case.x.copy()])
    r, c, v = case.moments
    state = State(case.iterations, {Kind.R: [r], Kind.C: [c], Kind.V: [v]})
    new_vars, new_state, record = opt.stateless_apply(state, [case.g], [case.x])
    return new_vars[0], (new_state.r[0], new_state.c[0], new_state.v[0]), record.traces[0]


# ---------------------------------------------------------------------------- oracle
_to_mp = np.frompyfunc(lambda a: mpf(float(a)), 1, 1)
_sqrt = np.frompyfunc(mp.sqrt, 1, 1)
_abs = np.frompyfunc(abs, 1, 1)


def _mp_array(a: np.ndarray) -> np.ndarray:
    return np.asarray(_to_mp(np.asarray(a, dtype=np.float64)), dtype=object)


def _mean(a, axis=None, keepdims=False):
    n = a.size if axis is None else a.shape[axis]
    return np.sum(a, axis=axis, keepdims=keepdims) / int(n)


@dataclass
class ExactStep:
    """The exact step (object arrays of mpf) and the scalars the bounds need."""

    view: str
    shape: tuple
    factored: bool
    p: object  # t ** beta_2_decay, exact
    beta: object  # beta_2_t used by this view
    omb: object  # 1 - beta_2_t used by this view
    inv_sqrt_t: object
    rho: object
    rms_x: object
    alpha: object
    rms_u: object
    clip_denominator: object
    q: np.ndarray
    mean_q_rows: Optional[np.ndarray]  # mean of q over the last axis (feeds r)
    mean_q_cols: Optional[np.ndarray]  # mean of q over axis -2 (feeds c)
    r0: Optional[np.ndarray]
    c0: Optional[np.ndarray]
    v0: np.ndarray
    r: Optional[np.ndarray]
    c: Optional[np.ndarray]
    v: np.ndarray
    update: np.ndarray  # alpha * U_hat, so that new_x = x - update
    new_x: np.ndarray


def exact_step(case: Case, beta: Optional[float] = None) -> ExactStep:
    """The step in real arithmetic. ``beta=None``: view E (beta_2_t = 1 - t**d exactly);
    a float: view R (that float64 beta_2_t and 1 - it, taken as exact)."""
    h = case.hyper
    with mp.workprec(PREC):
        # A 0-D variable is computed as a 1-element vector (same elementwise arithmetic,
        # RMS over one element); shapes are restored at the end.
        x, g = _mp_array(case.x).reshape(-1), _mp_array(case.g).reshape(-1)
        if case.x.ndim >= 2:
            x, g = x.reshape(case.x.shape), g.reshape(case.x.shape)
        t = mpf(case.t)
        lr = mpf(float(case.learning_rate))
        inv_sqrt_t = 1 / mp.sqrt(t)
        rho = min(lr, inv_sqrt_t)
        rms_x = mp.sqrt(_mean(x * x))
        alpha = max(mpf(h.epsilon_2), rms_x) * rho
        q = g * g + mpf(h.epsilon_1)
        p = mp.power(t, mpf(h.beta_2_decay))
        if beta is None:
            b, w = 1 - p, p
        else:
            b = mpf(float(beta))
            w = 1 - b
        factored = factored_axes(case.x.shape) is not None
        if factored:
            r0, c0 = _mp_array(case.moments[0]), _mp_array(case.moments[1])
            mq_rows, mq_cols = _mean(q, axis=-1), _mean(q, axis=-2)
            r = b * r0 + w * mq_rows
            c = b * c0 + w * mq_cols
            v = np.expand_dims(r / _mean(r, axis=-1, keepdims=True), -1) * np.expand_dims(c, -2)
        else:
            r0 = c0 = mq_rows = mq_cols = r = c = None
            v = b * _mp_array(case.moments[2]).reshape(-1) + w * q
        u_t = g / _sqrt(v)
        rms_u = mp.sqrt(_mean(u_t * u_t))
        clip_denominator = max(mpf(1), rms_u / mpf(h.clip_threshold))
        update = alpha * (u_t / clip_denominator)
        new_x = x - update
        shape = case.x.shape

        def as_obj(a, full=True):
            if a is None:
                return None
            a = np.asarray(a, dtype=object)
            return a.reshape(shape) if full else a

        return ExactStep(
            view="E" if beta is None else "R",
            shape=case.x.shape,
            factored=factored,
            p=p,
            beta=b,
            omb=w,
            inv_sqrt_t=inv_sqrt_t,
            rho=rho,
            rms_x=rms_x,
            alpha=alpha,
            rms_u=rms_u,
            clip_denominator=clip_denominator,
            q=as_obj(q),
            mean_q_rows=as_obj(mq_rows, full=False),
            mean_q_cols=as_obj(mq_cols, full=False),
            r0=as_obj(r0, full=False),
            c0=as_obj(c0, full=False),
            v0=_mp_array(case.moments[2]).reshape(shape),
            r=as_obj(r, full=False),
            c=as_obj(c, full=False),
            v=as_obj(v),
            update=as_obj(update),
            new_x=as_obj(new_x),
        )


# ---------------------------------------------------------------------------- bounds
def error_bounds(ex: ExactStep) -> dict:
    """A-priori bound on |computed - exact| for every element of every output, as object
    arrays of mpf (absolute values). Keys: "new_x" (also the bound of the update, whose
    measured value new_x - x has the same absolute error), "r", "c", "v".

    Derivation (first order in U; "k" below means relative error <= k U, and a relative
    error k U is < k ulps of the exact value, since |y| / ulp(y) < 2**53 = 1/U):

    * Model: every +, -, *, /, sqrt is correctly rounded (IEEE), fl(y) = y (1 + d),
      |d| <= U, with no underflow or overflow (every intermediate of the cases here is
      a normal float64, far from both ends of the range). min/max of two values with relative errors e1, e2 has relative error
      <= max(e1, e2) (monotone), so the knife-edge branches cost nothing extra.
    * A sum of n *positive* terms, in any order (NumPy's pairwise sum, or row by row for
      a reduction over a non-last axis), has relative error <= (n - 1) U, because every
      term passes through at most n - 1 additions (depth of any summation tree). A mean
      adds one division: n roundings. All sums in the step are of positive terms
      (squares, epsilon_1-regulated squares, r > 0).
    * sqrt halves a relative error and adds one rounding.

    Scalars, N = x.size:
      1/sqrt(t)      sqrt, divide                                   2
      rho_t          min(lr, .), lr exact                           2
      RMS(x)         squares 1, sum N-1, divide 1, then sqrt        (N+1)/2 + 1 = (N+3)/2
      alpha_t        max(eps2, .) then * rho_t                      (N+3)/2 + 2 + 1 = (N+9)/2
      q = g*g + eps1 square, add (both terms positive)              2
    Unfactored (0-D, 1-D): v' = fl(fl(beta v) + fl(omb q)): the beta term 1, the omb
      term 2 + 1, the add 1:                                        eps_v = 4
    Factored, x of shape (..., M, K):
      mean of q over K   2 + (K-1) + 1                              K + 2
      r' = fl(fl(beta r) + fl(omb mean)):                           eps_r = K + 4
      c' likewise with the mean over M:                             eps_c = M + 4
      mean(r') over M    max eps_r + (M-1) + 1
      r'/mean(r')        eps_r,i + max eps_r + M + 1 (the same r' on both sides, bounded
                         as independent)
      v = (r'/mean) c'   eps_v,ij = eps_r,i + max_i eps_r + eps_c,j + M + 2
                         (R view: 2K + 2M + 14)
    Then, per element (eps_v as above):
      U = g / sqrt(v')   sqrt, divide                               eps_U = eps_v/2 + 2
      RMS(U)             squares 2 eps_U + 1, sum N-1, divide 1, sqrt: max eps_U + (N+3)/2
      clip denominator   max(1, RMS(U) / d), d exact: one division  eps_cd = max eps_U + (N+5)/2
      U_hat = U / cd                                                eps_U + eps_cd + 1
      update = alpha U_hat                                          eps_upd = eps_alpha + eps_U + eps_cd + 2
      new_x = fl(x - update~): |error| <= eps_upd U |update| + U |new_x|
      (the last term is the rounding of new_x itself: in ulps of the update it is up to
      |new_x| / |update| ulps, the absorption of a small update into a large x)

    View E adds the error of the EMA weights. Keras computes p~ = fl(t ** d) (libm pow,
    assumed < 1 ulp: |p~ - p| <= 2 U p), beta~ = fl(1 - p~) and omb~ = fl(1 - beta~).
    If p~ >= 1/2, 1 - p~ is exact (Sterbenz) and so is 1 - beta~ = p~; if p~ < 1/2,
    beta~ lies in [1/2, 1] with rounding error <= U/2 and 1 - beta~ is exact. So
    beta~ + omb~ = 1 exactly, |omb~ - p| <= (2p + 1/2) U, and the float64 EMA is an exact
    EMA with weight omb~ instead of p: the exact values of the two views differ by
    (omb~ - p)(new - old). Hence view E adds, relative to the exact r', c', v' (vector):
      (2p + 1/2) |mean_q - r0| / r'   (and likewise for c', and for v' with q and v0)
    which is up to (2p + 1/2)/p U ~ 1/(2p) ulps when the new statistic dominates the
    old one, e.g. ~125 ulps at t = 1000, d = -0.8. It enters eps_r, eps_c, eps_v above
    and flows on to U, RMS(U) and new_x.
    """
    N = int(np.prod(ex.shape, dtype=np.int64)) if ex.shape else 1
    with mp.workprec(PREC):
        dw = (2 * ex.p + mpf(0.5)) if ex.view == "E" else mpf(0)
        if ex.factored:
            M, K = int(ex.shape[-2]), int(ex.shape[-1])
            eps_r = (K + 4) + dw * _abs(ex.mean_q_rows - ex.r0) / ex.r
            eps_c = (M + 4) + dw * _abs(ex.mean_q_cols - ex.c0) / ex.c
            max_eps_r = np.max(eps_r, axis=-1, keepdims=True)
            eps_v = (
                np.expand_dims(eps_r + max_eps_r, -1) + np.expand_dims(eps_c, -2) + (M + 2)
            )
        else:
            eps_v = 4 + dw * _abs(ex.q - ex.v0) / ex.v
        eps_u = eps_v / 2 + 2
        eps_cd = np.max(eps_u) + mpf(N + 5) / 2
        eps_alpha = mpf(N + 9) / 2
        eps_upd = eps_alpha + eps_u + eps_cd + 2
        bounds = {
            "new_x": U * (eps_upd * _abs(ex.update) + _abs(ex.new_x)),
            "v": U * eps_v * ex.v,
        }
        if ex.factored:
            bounds["r"] = U * eps_r * ex.r
            bounds["c"] = U * eps_c * ex.c
        return {k: np.asarray(b, dtype=object) for k, b in bounds.items()}


def beta_scalars(case: Case, beta: float):
    """Checks of the claims the E-view bound rests on, for this case's float64 beta~:
    (1 - beta~ is exact in float64, |omb~ - p| / ((2p + 1/2) U))."""
    with mp.workprec(PREC):
        b = mpf(float(beta))
        omb_f64 = np.float64(1.0) - np.float64(beta)  # what the reference computes
        exact_subtraction = mpf(float(omb_f64)) == 1 - b
        p = mp.power(mpf(case.t), mpf(case.hyper.beta_2_decay))
        ratio = float(abs((1 - b) - p) / ((2 * p + mpf(0.5)) * U))
        return bool(exact_subtraction), ratio


# ---------------------------------------------------------------------------- measuring
@dataclass
class Target:
    """An exact output as float64 arrays: value = hi + lo (to ~2**-106), its ulp, and the
    a-priori bound on the absolute error."""

    hi: np.ndarray
    lo: np.ndarray
    ulp: np.ndarray
    bound: np.ndarray
    index: Optional[np.ndarray] = None  # flat indices measured (None: all)


def _ulp(y) -> float:
    """ulp of the exact real y in float64: 2**(floor(log2|y|) - 52), subnormal floor."""
    if y == 0:
        return 2.0**-1074
    _, e = mp.frexp(y)  # |y| = m 2**e, 1/2 <= m < 1
    return math.ldexp(1.0, max(int(e) - 53, -1074))


def _target(exact: np.ndarray, bound: np.ndarray, ulp_of: Optional[np.ndarray] = None) -> Target:
    """``ulp_of``: measure in ulps of this exact value instead of ``exact``'s."""
    with mp.workprec(PREC):
        flat = np.asarray(exact, dtype=object).reshape(-1)
        hi = np.array([float(y) for y in flat], dtype=np.float64)
        lo = np.array([float(y - mpf(h)) for y, h in zip(flat, hi)], dtype=np.float64)
        scale = flat if ulp_of is None else np.asarray(ulp_of, dtype=object).reshape(-1)
        ulp = np.array([_ulp(y) for y in scale], dtype=np.float64)
        bnd = np.array([float(b) for b in np.asarray(bound, dtype=object).reshape(-1)], dtype=np.float64) * SECOND_ORDER
    return Target(hi, lo, ulp, bnd)


def _targets(ex: ExactStep) -> dict:
    b = error_bounds(ex)
    out = {
        "new_x": _target(ex.new_x, b["new_x"]),
        # The update is measured as new_x - x (x exact): its error is new_x's error, here
        # in ulps of the exact update.
        "update": _target(ex.new_x, b["new_x"], ulp_of=ex.update),
    }
    # The same, only where |update| >= |new_x|: there the rounding of new_x costs at
    # most one ulp of the update, so this is the update's accuracy without absorption.
    with mp.workprec(PREC):
        upd = np.asarray(ex.update, dtype=object).reshape(-1)
        nx = np.asarray(ex.new_x, dtype=object).reshape(-1)
        idx = np.array([j for j in range(upd.size) if upd[j] != 0 and abs(upd[j]) >= abs(nx[j])],
                       dtype=np.intp)
    tgt = _target(nx[idx], np.asarray(b["new_x"], dtype=object).reshape(-1)[idx], ulp_of=upd[idx])
    tgt.index = idx
    out["update_dominant"] = tgt
    if ex.factored:
        out["r"] = _target(ex.r, b["r"])
        out["c"] = _target(ex.c, b["c"])
        out["v_factored"] = _target(ex.v, b["v"])
    else:
        out["v_vector"] = _target(ex.v, b["v"])
    return out


@dataclass
class CaseResult:
    case: Case
    errors: dict  # (view, quantity) -> float64 array of |error| in ulps of the exact value
    ratios: dict  # (view, quantity) -> float64 array of |error| / bound
    bounds_ulp: dict  # (view, quantity) -> float64 array of the bound in ulps
    tags: dict = field(default_factory=dict)
    omb_exact_subtraction: bool = True
    omb_deviation_ratio: float = 0.0


_ORACLE_CACHE: dict = {}


def _oracle_targets(case: Case, seed: int, beta: Optional[float]) -> tuple:
    key = (seed, case.index, None if beta is None else float(beta))
    if key not in _ORACLE_CACHE:
        ex = exact_step(case, beta)
        _ORACLE_CACHE[key] = (ex, _targets(ex))
    return _ORACLE_CACHE[key]


def _abs_error(computed: np.ndarray, tgt: Target) -> np.ndarray:
    c = np.asarray(computed, dtype=np.float64).reshape(-1)
    if tgt.index is not None:
        c = c[tgt.index]
    # (c - hi) is exact whenever c is within a factor 2 of hi (Sterbenz); otherwise the
    # error is large and one rounding in it is immaterial.
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs((c - tgt.hi) - tgt.lo)
    return np.where(np.isfinite(err), err, np.inf)


def _tags(ex: ExactStep, case: Case) -> dict:
    h = case.hyper
    with mp.workprec(PREC):
        return {
            "ndim": case.x.ndim,
            "t1": case.t == 1,
            "p_ge_half": bool(ex.p >= mpf(0.5)),
            "clip_active": bool(ex.rms_u > mpf(h.clip_threshold)),
            "eps2_dominates": bool(mpf(h.epsilon_2) > ex.rms_x),
            "rho_is_inv_sqrt_t": bool(ex.inv_sqrt_t < mpf(case.learning_rate)),
            "eps1_significant": bool(np.min(np.abs(case.g)) ** 2 < 1e6 * h.epsilon_1),
            "via_optimizer": case.via == "optimizer",
        }


def measure(
    cases: list, seed: int = SEED, step: Optional[Callable] = None
) -> list:
    """Run the reference (or ``step``, a replacement for update_step used on both paths)
    on every case and compare with the oracle in both views."""
    patch = (
        mock.patch.object(_optimizer_module, "update_step", step)
        if step is not None
        else contextlib.nullcontext()
    )
    results = []
    with patch:
        for case in cases:
            if step is not None and case.via == "step":
                new_x, (r, c, v), trace = step(
                    case.x, case.g, case.moments, case.learning_rate, case.iterations, case.hyper
                )
            else:
                new_x, (r, c, v), trace = run_reference(case)
            computed = {"new_x": new_x, "update": new_x, "update_dominant": new_x}
            if r is not None:
                computed.update(r=r, c=c, v_factored=v)
            else:
                computed["v_vector"] = v
            res = CaseResult(case=case, errors={}, ratios={}, bounds_ulp={})
            for view, beta in (("E", None), ("R", trace.beta_2)):
                ex, targets = _oracle_targets(case, seed, beta)
                if view == "E":
                    res.tags = _tags(ex, case)
                for name, tgt in targets.items():
                    err = _abs_error(computed[name], tgt)
                    res.errors[view, name] = err / tgt.ulp
                    res.bounds_ulp[view, name] = tgt.bound / tgt.ulp
                    with np.errstate(invalid="ignore", divide="ignore"):
                        res.ratios[view, name] = np.where(err == 0, 0.0, err / tgt.bound)
            res.omb_exact_subtraction, res.omb_deviation_ratio = beta_scalars(case, trace.beta_2)
            results.append(res)
    return results


def violations(results: list) -> list:
    """(view, quantity, case index, flat element, error ulps, bound ulps) for every
    element whose error exceeds its a-priori bound."""
    out = []
    for res in results:
        for key, ratio in res.ratios.items():
            for j in np.flatnonzero(~(ratio <= 1.0)):
                out.append(
                    (key[0], key[1], res.case.index, int(j),
                     float(res.errors[key][j]), float(res.bounds_ulp[key][j]))
                )
    return out


# ---------------------------------------------------------------------------- report
def summarize(results: list) -> list:
    rows = []
    for name in QUANTITIES:
        for view in VIEWS:
            errs = [r.errors[view, name] for r in results if (view, name) in r.errors]
            if not errs:
                continue
            e = np.concatenate(errs)
            b = np.concatenate([r.bounds_ulp[view, name] for r in results if (view, name) in r.bounds_ulp])
            q = np.concatenate([r.ratios[view, name] for r in results if (view, name) in r.ratios])
            rows.append(
                {
                    "quantity": name,
                    "view": view,
                    "elements": int(e.size),
                    "max_ulp": float(np.max(e)),
                    "p99_ulp": float(np.percentile(e, 99)),
                    "median_ulp": float(np.median(e)),
                    "median_bound_ulp": float(np.median(b)),
                    "max_err_over_bound": float(np.max(q)),
                }
            )
    return rows


def coverage(results: list) -> dict:
    keys = results[0].tags.keys()
    cov = {k: sum(bool(r.tags[k]) for r in results) for k in keys if k != "ndim"}
    for d in range(4):
        cov[f"ndim_{d}"] = sum(r.tags["ndim"] == d for r in results)
    cov["cases"] = len(results)
    return cov


def format_table(rows: list) -> str:
    from tabulate import tabulate

    return tabulate(
        [
            [r["quantity"], r["view"], r["elements"], r["max_ulp"], r["p99_ulp"],
             r["median_ulp"], r["median_bound_ulp"], r["max_err_over_bound"]]
            for r in rows
        ],
        headers=["quantity", "view", "elements", "max ulp", "p99 ulp", "median ulp",
                 "median bound ulp", "max err/bound"],
        floatfmt=".3g",
        tablefmt="github",
    )


def report(seed: int = SEED, n: int = N_CASES) -> str:
    results = measure(make_cases(seed, n), seed)
    lines = [
        f"Adafactor step, float64 reference vs {PREC}-bit oracle: {n} cases, seed {seed}",
        "",
        format_table(summarize(results)),
        "",
        "coverage (cases): " + ", ".join(f"{k}={v}" for k, v in coverage(results).items()),
        f"max |omb~ - p| / ((2p + 1/2) U) = {max(r.omb_deviation_ratio for r in results):.3g}",
        f"bound violations: {len(violations(results))}",
    ]
    return "\n".join(lines)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--cases", type=int, default=N_CASES)
    args = parser.parse_args(argv)
    print(report(args.seed, args.cases))


if __name__ == "__main__":
    main()
