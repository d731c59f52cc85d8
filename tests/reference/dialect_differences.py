"""The structural tests every dialect that lists its ``DIFFERENCES`` from the Keras stages
shares (tests/reference/test_dialect_transformers.py, test_dialect_pytorch_optimizer.py):

* every stage the dialect overrides is in exactly one difference;
* the Keras stages plus all differences (tools/divergence.keras_plus) are the dialect bit for
  bit, in float64 and float32, on shapes from 0-D to 4-D;
* each difference alone changes the Keras result for some configuration and dtype.

``difference_tests(...)`` returns the three test functions; a module assigns them to
``test_*`` names so that pytest collects them there.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference.dialects.keras import KerasDialect
from tools.divergence import keras_plus

KERAS_CONFIGS = [
    {"learning_rate": 0.5, "weight_decay": 0.1, "clip_threshold": 0.5},
    {"learning_rate": 0.01, "beta_2_decay": -0.5, "epsilon_1": 1e-3, "epsilon_2": 0.1},
    {"learning_rate": 0.01, "weight_decay": 0.05},
]
DIFF_SHAPES = [(), (7,), (5, 3), (3, 5), (1, 5), (5, 1), (2, 3, 5), (2, 1, 3, 5)]


def run_steps(opt, dtype, seed, steps=12):
    """Build ``opt`` on one variable per shape of DIFF_SHAPES and apply ``steps`` seeded
    gradients; returns (variables, per-variable {kind: state array})."""
    rng = np.random.default_rng(seed)
    variables = [rng.normal(size=s).astype(dtype) for s in DIFF_SHAPES]
    opt.build(variables)
    for _ in range(steps):
        opt.apply([(rng.normal(size=s) * 3.0).astype(dtype) for s in DIFF_SHAPES], variables)
    return variables, [{k: opt.state[k][i] for k in opt.state.kinds()} for i in range(len(variables))]


def difference_tests(name: str, module, arguments, native_cls, differences: dict, from_keras):
    """The three tests for dialect ``name``: ``module`` its reference/dialects module (for
    ``stage_functions``), ``arguments`` an instance of its arguments, ``native_cls`` its
    optimizer, ``differences`` its DIFFERENCES, ``from_keras`` its Keras-config mapping."""
    every = tuple(m for methods, _ in differences.values() for m in methods)

    def test_every_override_is_in_exactly_one_difference():
        overridden = set(module.stage_functions(arguments))
        assert len(every) == len(set(every)), f"a stage is in two differences: {every}"
        assert overridden == set(every), (f"overridden but in no difference: {overridden - set(every)}; "
                                          f"listed but not overridden: {set(every) - overridden}")

    @pytest.mark.parametrize("dtype", [np.float64, np.float32])
    @pytest.mark.parametrize("keras_config", KERAS_CONFIGS, ids=["wd_clip", "eps_decay", "relative"])
    def test_keras_plus_all_differences_is_the_dialect_bit_for_bit(keras_config, dtype):
        native = from_keras(keras_config)
        assert native is not None
        got, got_slots = run_steps(keras_plus(name, keras_config, native, every), dtype, 3)
        want, want_slots = run_steps(native_cls(**native), dtype, 3)
        for i, (a, b) in enumerate(zip(got, want)):
            assert np.array_equal(a, b), f"variable {i} ({DIFF_SHAPES[i]}) differs"
        for i, (a, b) in enumerate(zip(got_slots, want_slots)):
            assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a), f"slots of variable {i}"

    @pytest.mark.parametrize("difference", list(differences))
    def test_each_difference_alone_changes_the_result(difference):
        methods = differences[difference][0]
        changed = []
        for keras_config in KERAS_CONFIGS:
            native = from_keras(keras_config)
            for dtype in (np.float64, np.float32):  # some differences only show below float64
                keras, _ = run_steps(KerasDialect(**keras_config), dtype, 5)
                alone, _ = run_steps(keras_plus(name, keras_config, native, methods), dtype, 5)
                changed.append(any(not np.array_equal(a, b) for a, b in zip(keras, alone)))
        assert any(changed), f"difference {difference!r} ({methods}) never changes the Keras result"

    return (test_every_override_is_in_exactly_one_difference, test_keras_plus_all_differences_is_the_dialect_bit_for_bit,
            test_each_difference_alone_changes_the_result)
