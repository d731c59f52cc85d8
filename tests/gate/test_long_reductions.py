"""Budgets beyond the corpus's reach (TOLERANCES.md, "Long reductions"): the length of each
tensor's longest reduction is read off the state's shapes, the policy records the longest the
derivation saw, budgets within it are the table's and beyond it grow by sqrt(n / reach), a
failure message says when a budget was scaled, and the scaling does not let a wrong port through
at size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance import runner
from conformance import tolerance
from conformance.tolerance import Policy, length_factor, reduction_lengths
from reference.state import Kind, State
from tests import helpers



def _state(shape, r_shape=None, c_shape=None, accumulate=False):
    values = {Kind.VARIABLES: [np.zeros(shape)], Kind.V: [np.zeros(shape)]}
    if r_shape is not None:
        values[Kind.R], values[Kind.C] = [np.zeros(r_shape)], [np.zeros(c_shape)]
    if accumulate:
        values[Kind.ACCUMULATOR] = [np.zeros(shape)]
    return State(iterations=0, values=values)


def test_lengths_of_a_keras_factored_variable():
    """(batch 3, rows 5, cols 7): r is a mean over the 7 columns, c over the 5 rows."""
    lengths = reduction_lengths(_state((3, 5, 7), (3, 5), (3, 7), accumulate=True))
    assert lengths[("r", 0)] == 7 and lengths[("c", 0)] == 5 and lengths[("v", 0)] == 7
    assert lengths[("variables", 0)] == lengths[("update", 0)] == lengths[("average", 0)] == 105
    assert lengths[("accumulator", 0)] == 1


def test_lengths_follow_the_state_not_a_fixed_axis():
    """optax factors its two largest axes: a (40, 3, 9) variable keeps r of shape (40, 3)
    (a mean over the 9) and c of shape (3, 9) (over the 40); the lengths follow the shapes."""
    lengths = reduction_lengths(_state((40, 3, 9), (40, 3), (3, 9)))
    assert lengths[("r", 0)] == 9 and lengths[("c", 0)] == 40 and lengths[("v", 0)] == 40


def test_an_unfactored_variable_has_elementwise_statistics():
    lengths = reduction_lengths(_state((2048,)))
    assert lengths[("v", 0)] == lengths[("r", 0)] == lengths[("c", 0)] == 1
    assert lengths[("variables", 0)] == 2048


def test_the_policy_records_the_corpus_reach():
    """Keras float32's reach is the longest reduction among the vectors its honest lane
    measured: recomputed here from the corpus, not read back from the file."""
    policy = Policy.load()
    vectors = [v for _, v in helpers.select() if v.result == "valid" and v.dialect == "keras"]
    longest_c = max(reduction_lengths(v.initial_state).get(("c", i), 1)
                    for v in vectors for i in range(len(v.initial_state.variables)))
    assert policy.reach_of("float64", "c") == longest_c
    assert policy.reach_of("float32", "c") <= longest_c
    for dialect in policy.dialects:
        assert policy.reach_of("float32", "variables", dialect) >= 1, dialect


@pytest.mark.parametrize("mode", ["teacher", "trajectory"])
def test_budgets_are_the_tables_within_the_reach_and_grow_by_sqrt_beyond(mode):
    policy = Policy.load()
    for dialect in ("keras", *policy.dialects):
        reach = policy.reach_of("float32", "c", dialect)
        flat = policy.budget("float32", mode, "c", 3, dialect)
        assert policy.budget("float32", mode, "c", 3, dialect, length=reach) == flat
        assert policy.budget("float32", mode, "c", 3, dialect, length=1) == flat
        assert policy.budget("float32", mode, "c", 3, dialect, length=16 * reach) == pytest.approx(4 * flat)


def test_length_factor():
    assert length_factor(10, None) == 1.0 and length_factor(10, 640) == 1.0
    assert length_factor(2560, 640) == 2.0
    assert length_factor(640 * 9, 640) == pytest.approx(3.0)


def _long_column_vector(tmp_path, rows, cols=8):
    from tools import scale

    scale.generate_store(tmp_path, [scale.make_case((rows, cols))])
    return scale.load_store(tmp_path)


@pytest.mark.parametrize("mode", ["teacher", "trajectory"])
def test_the_honest_float32_lane_passes_beyond_the_reach_and_a_wrong_mean_fails(tmp_path, mode):
    """A (4096, 8) variable: c is a mean over 4096 rows, beyond the corpus's reach. The
    reference's float32 lane passes under the scaled budget; a port whose column mean divides
    by rows - 1 (relative error 1/4096, 2048 float32 epsilons of c) fails, and its failure
    message says the budget was scaled and by how much."""
    from conformance.adapters.broken import ColumnMeanOverRowsMinusOne
    from conformance.adapters.reference import ReferenceAdapter

    vectors = _long_column_vector(tmp_path, 4096)
    policy = Policy.load()
    (vector,) = [v for _, v in vectors]
    assert reduction_lengths(vector.initial_state)[("c", 0)] == 4096 > policy.reach_of("float32", "c")
    honest = runner.run_lane(ReferenceAdapter(), vectors, tmp_path, "float32", "cpu", mode, policy, [])
    assert [o.status for o in honest.outcomes] == ["pass"], honest.outcomes[0].reason

    wrong = runner.run_lane(ColumnMeanOverRowsMinusOne(), vectors, tmp_path, "float32", "cpu", mode, policy, [])
    (outcome,) = wrong.outcomes
    assert outcome.status == "fail", outcome.reason
    c_failures = [f for f in outcome.failures if f.kind == "c"]
    assert c_failures, outcome.failures
    factor = math.sqrt(4096 / policy.reach_of("float32", "c"))
    assert f"budget x{factor:.3g} for a 4096-term reduction" in c_failures[0].message
    assert c_failures[0].budget == pytest.approx(
        policy.budget("float32", mode, "c", c_failures[0].step, length=4096))
