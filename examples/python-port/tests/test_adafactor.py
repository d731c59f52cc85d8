"""The port's own tests. The conformance tests need no file: the gate's pytest plugin collects
them (the adafactor_* keys in pyproject.toml)."""

import numpy as np
import pytest

from adafactor_port import Adafactor


def test_a_matrix_is_factored_and_a_vector_is_not():
    opt = Adafactor()
    opt.build([np.zeros((3, 4)), np.zeros(5)])
    assert opt.r[0].shape == (3,) and opt.c[0].shape == (4,) and opt.v[0].shape == (3, 4)
    assert opt.r[1] is None and opt.c[1] is None and opt.v[1].shape == (5,)


def test_a_step_moves_against_the_gradient():
    x = np.ones((2, 2))
    opt = Adafactor(learning_rate=0.1)
    opt.build([x])
    opt.apply([np.ones((2, 2))], [x])
    assert opt.iterations == 1 and np.all(x < 1)


def test_unknown_arguments_are_refused():
    with pytest.raises(ValueError, match="not recognized"):
        Adafactor(beta_1=0.9)
