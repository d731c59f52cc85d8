"""The dialect machinery (reference/dialects/base.py, tools/dialect_vectors.py): the Keras
step cut into stages is still the spec, bit for bit, and dialect vectors round-trip
through the schema, the loader and the reference adapter. Each native dialect has its
own tests/test_dialect_<name>.py."""

import numpy as np
import pytest

from reference import Adafactor
from reference.dialects import DIALECTS, optimizer_class
from reference.dialects.base import KerasStage
from reference.dialects.keras import KerasStages
from tools.vector_cases import SHAPES

CONFIGS = [
    {"learning_rate": 0.1},
    {"learning_rate": 0.5, "weight_decay": 0.1, "clip_threshold": 0.5, "epsilon_2": 0.5},
    {"learning_rate": 0.01, "beta_2_decay": -0.5, "epsilon_1": 1e-3, "relative_step": False},
]


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("config", CONFIGS, ids=["lr", "decay_clip", "eps"])
def test_keras_stages_are_the_spec_bit_for_bit(shape, config):
    rng = np.random.default_rng(sum(shape) + len(config))
    initial = [rng.normal(size=shape), rng.normal(size=(3, 2))]
    spec = [x.copy() for x in initial]
    staged = [x.copy() for x in initial]
    a, b = Adafactor(**config), KerasStages(**config)
    a.build(spec)
    b.build(staged)
    for _ in range(6):
        grads = [rng.normal(size=x.shape) for x in initial]
        a.apply(grads, spec)
        b.apply(grads, staged)
        for x, y in zip(spec, staged):
            assert np.array_equal(x, y), (shape, config)
        for s, slots in zip(a.state.slots, b.slots):
            assert np.array_equal(s.v, slots["v"])
            if s.r is not None:
                assert np.array_equal(s.r, slots["r"]) and np.array_equal(s.c, slots["c"])


def test_keras_stages_run_in_the_variable_dtype():
    x = [np.ones((3, 4), dtype=np.float32)]
    opt = KerasStages(learning_rate=0.1)
    opt.build(x)
    opt.apply([np.full((3, 4), 0.5, dtype=np.float32)], x)
    assert x[0].dtype == np.float32 and all(a.dtype == np.float32 for a in opt.slots[0].values())


def test_dialect_optimizer_refuses_missing_gradients():
    x = [np.ones(3), np.ones(2)]
    opt = KerasStages(learning_rate=0.1)
    opt.build(x)
    with pytest.raises(ValueError, match="variable 1 has no gradient"):
        opt.apply([np.ones(3), None], x)
    assert np.array_equal(x[0], np.ones(3)), "nothing may change when apply fails"


def test_unknown_dialect_is_named():
    with pytest.raises(ValueError, match="unknown dialect 'mxnet'"):
        optimizer_class("mxnet")


def test_factored_axes_generalise_keras():
    """The stages factor whichever (row, column) axes a dialect names; Keras's are the last two."""
    stage = KerasStage()
    assert stage.factored_axes((4, 5, 6)) == (1, 2) and stage.factored_axes((6,)) is None
    slots = stage.init_slots(np.zeros((4, 5, 6)))
    assert slots["r"].shape == (4, 5) and slots["c"].shape == (4, 6) and slots["v"].shape == (4, 5, 6)


def test_every_dialect_is_registered():
    assert set(DIALECTS) == {"keras", "torch", "optax", "transformers"}
