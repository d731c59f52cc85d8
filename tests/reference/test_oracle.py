"""The reference's float64 error, measured against a 200-bit mpmath oracle of the same
step (tools/oracle_report.py), is within an a-priori rounding-error bound.

What is asserted, per element of new_x (and of the update new_x - x), r, c and v, in
400 seeded random cases (0-D to 3-D, t in 1..1000, clip active and not, epsilon_2
dominating RMS(x) and not, both arms of min(lr, 1/sqrt(t)), through update_step and
through Adafactor.stateless_apply):

    |reference - exact| <= bound,

with the bound derived in ``tools.oracle_report.error_bounds`` (comment there, summary
here; U = 2**-53; a relative error of k U is < k ulps; N = x.size, x of shape (..., M, K)
when factored). The bounds count the roundings of the reference's formula; they were
written before the measurement and are not fitted to it.

    quantity         view R (rounded beta, exact elsewhere)     view E adds (exact beta)
    r                (K + 4) U r'                               (2p + 1/2) U |mean_K(q) - r0|
    c                (M + 4) U c'                               (2p + 1/2) U |mean_M(q) - c0|
    v, unfactored    4 U v'                                     (2p + 1/2) U |q - v0|
    v, factored      (eps_r,i + max eps_r + eps_c,j + M + 2) U v'   (through eps_r, eps_c)
    new_x, update    eps_upd U |update| + U |new_x|, with
                     eps_upd = (N+9)/2 + eps_U + (max eps_U + (N+5)/2) + 2, eps_U = eps_v/2 + 2

Which view is "right": the spec is "what Keras computes in float64", and Keras's formula
defines beta_2_t = 1 - t**d and 1 - beta_2_t as real numbers; Keras then evaluates
1 - beta_2_t as fl(1 - fl(1 - fl(t**d))). View E (all scalars exact) is therefore the
accuracy of Keras's float64 evaluation against the mathematical step, and its bound
honestly contains that cancellation (up to ~1/(2p) ulps: ~125 at t = 1000). View R takes
the float64 beta_2_t the reference computed (and 1 - it, an exact subtraction) as exact
inputs, isolating the elementwise arithmetic with shape-only bounds; it is the sharper
detector of a changed formula but is blind to a changed beta. Both are asserted: E is
the accuracy claim, R the tight one. ``test_mutants`` shows each catching what the
other cannot.

Run with ``-s`` to print the table (or ``python -m tools.oracle_report``).
"""

from __future__ import annotations

import pathlib
import sys
import types

import numpy as np
import pytest

pytest.importorskip("mpmath")
pytest.importorskip("tabulate")

from tools import oracle_report as orc  # noqa: E402

from reference.adafactor_step import Hyperparameters  # noqa: E402

STEP_SOURCE = pathlib.Path(__file__).resolve().parents[2] / "reference" / "adafactor_step.py"


@pytest.fixture(scope="module")
def cases():
    return orc.make_cases(orc.SEED, orc.N_CASES)


@pytest.fixture(scope="module")
def results(cases):
    return orc.measure(cases, orc.SEED)


def _describe(viols, limit=8):
    return "\n".join(
        f"  view {v} {q:16s} case {i:3d} element {j:3d}: {e:.4g} ulp > bound {b:.4g} ulp"
        for v, q, i, j, e, b in viols[:limit]
    )


def test_errors_within_a_priori_bounds(results):
    viols = orc.violations(results)
    assert not viols, f"{len(viols)} elements over their bound:\n{_describe(viols)}"


def test_summary_maxima_within_bounds(results):
    """The same, stated on the summary: for every quantity and view, the largest
    error/bound ratio over all elements is at most 1."""
    for row in orc.summarize(results):
        assert row["max_err_over_bound"] <= 1.0, row


def test_coverage(results):
    """The cases exercise every branch the bounds distinguish."""
    cov = orc.coverage(results)
    for d in range(4):
        assert cov[f"ndim_{d}"] >= 50
    n = cov["cases"]
    for key in ("t1", "p_ge_half", "clip_active", "eps2_dominates", "rho_is_inv_sqrt_t",
                "eps1_significant", "via_optimizer"):
        assert 20 <= cov[key] <= n - 20, (key, cov[key])


def test_beta_scalar_claims(results):
    """What the E-view bound rests on: 1 - beta~ is exact in float64, and the EMA weight
    Keras uses is within (2p + 1/2) U of p = t**d."""
    assert all(r.omb_exact_subtraction for r in results)
    assert max(r.omb_deviation_ratio for r in results) <= 1.0


def test_oracle_reproduces_keras_goldens():
    """An independent check of the oracle itself: Keras's own golden values
    (adafactor_test.py:23-39, float32 goldens at 1e-4)."""
    for x, g, expected in [
        ([1.0, 2.0, 3.0, 4.0], [1.0, 6.0, 7.0, 2.0], [-0.3693, 0.6307, 1.6307, 2.6307]),
        ([[1.0, 2.0], [3.0, 4.0]], [[1.0, 6.0], [7.0, 2.0]],
         [[0.7007, -0.0081], [1.2492, 3.4407]]),
    ]:
        x, g = np.array(x), np.array(g)
        factored = x.ndim >= 2
        moments = (
            np.zeros(x.shape[:-1]) if factored else None,
            np.zeros(x.shape[:-2] + x.shape[-1:]) if factored else None,
            np.zeros_like(x),
        )
        case = orc.Case(0, x, g, moments, 0.5, 0, Hyperparameters(), "step")
        new_x = np.array([float(v) for v in orc.exact_step(case).new_x.reshape(-1)])
        np.testing.assert_allclose(new_x.reshape(x.shape), expected, rtol=1e-4, atol=1e-4)


def test_table_prints(results):
    table = orc.format_table(orc.summarize(results))
    print("\n" + table + "\ncoverage: " + str(orc.coverage(results)))
    assert "v_factored" in table


# ------------------------------------------------------------------ the test can fail
def _mutant(old: str, new: str):
    """update_step from a scratch copy of reference/adafactor_step.py with one line
    changed (the file itself is only read)."""
    source = STEP_SOURCE.read_text()
    assert source.count(old) == 1, old
    module = types.ModuleType("adafactor_step_mutant")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(source.replace(old, new), "<mutant>", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module.update_step


# (name, old line, new line, views that must flag it, views that must not)
MUTANTS = [
    # Computing 1 - beta_2_t directly as t**d is *more* accurate, but not Keras: only the
    # rounded-beta view sees it.
    ("omb_direct", "one_minus_beta_2_t = one - beta_2_t",
     "one_minus_beta_2_t = dtype(float(local_step) ** beta_2_decay)", {"R"}, {"E"}),
    # beta_2_t through float32: the exact-beta view sees it; the rounded-beta view,
    # which takes the reference's beta as given, cannot.
    ("beta_float32", "beta_2_t = one - dtype(float(local_step) ** beta_2_decay)",
     "beta_2_t = one - dtype(np.float32(float(local_step) ** beta_2_decay))",
     {"E"}, {"R"}),
    ("t_off_by_one", "local_step = dtype(iterations + 1)",
     "local_step = dtype(iterations + 2)", {"E"}, set()),
    ("clip_threshold_misplaced", "minmax.maximum(dtype(1.0), rms_u / dtype(clip_threshold))",
     "minmax.maximum(dtype(1.0), rms_u) / dtype(clip_threshold)", {"E", "R"}, set()),
    ("epsilon_1_dropped", "regulated_grad_square += epsilon_1", "pass",
     {"E", "R"}, set()),
    ("rms_x_in_float32", "rms_x = rms(x, scratch=work)", "rms_x = dtype(np.float32(rms(x)))",
     {"E", "R"}, set()),
    # A relative perturbation of 2**-44 (512 U) of alpha_t.
    ("alpha_off_by_512_U", "alpha_t = parameter_scale(rms_x, dtype(hyper.epsilon_2)) * rho_t",
     "alpha_t = parameter_scale(rms_x, dtype(hyper.epsilon_2)) * rho_t * dtype(1 + 2.0**-44)", {"E", "R"}, set()),
    # Control: torch's order for V (outer product first, then divide) has the same
    # rounding count, so an accuracy oracle must NOT flag it (bit-exactness against
    # Keras is the cross-check's job, not this test's).
    ("control_v_multiply_first",
     "return np.expand_dims(r / reductions.mean(r, axis=row_in_r, keepdims=True), col) * np.expand_dims(c, row)",
     "return (np.expand_dims(r, col) * np.expand_dims(c, row)) / np.expand_dims("
     "reductions.mean(r, axis=row_in_r, keepdims=True), col)", set(), {"E", "R"}),
]


@pytest.mark.parametrize("name,old,new,flagged_by,not_flagged_by", MUTANTS,
                         ids=[m[0] for m in MUTANTS])
def test_mutants(cases, results, name, old, new, flagged_by, not_flagged_by):
    """A broken copy of the step must violate the bounds (in the views expected);
    ``results`` is requested so that the oracle cache is warm."""
    viols = orc.violations(orc.measure(cases, orc.SEED, step=_mutant(old, new)))
    views = {v for v, *_ in viols}
    assert flagged_by <= views, f"{name}: flagged only in {views or 'no view'}"
    assert not (not_flagged_by & views), f"{name}: unexpectedly flagged:\n{_describe(viols)}"
