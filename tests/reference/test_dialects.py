"""The dialect machinery (reference/dialects/base.py): the Keras stages are the spec, bit for
bit; the spec's buffered step equals its stages composed without buffers; a dialect is the
Keras stages with named stages replaced. Each native dialect has its own
tests/test_dialect_<name>.py."""

import numpy as np
import pytest

from reference import Adafactor
from reference import adafactor_step as spec
from reference.adafactor_step import Hyperparameters
from reference.dialects import DIALECTS, optimizer_class
from reference.dialects.keras import KerasDialect, keras_stages
from reference.state import Kind
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
    a, b = Adafactor(**config), KerasDialect(**config)
    a.build(spec)
    b.build(staged)
    for _ in range(6):
        grads = [rng.normal(size=x.shape) for x in initial]
        a.apply(grads, spec)
        b.apply(grads, staged)
        for x, y in zip(spec, staged):
            assert np.array_equal(x, y), (shape, config)
        assert a.state.kinds() == b.state.kinds() == [Kind.R, Kind.C, Kind.V]
        for k in (Kind.R, Kind.C, Kind.V):
            for p, q in zip(a.state[k], b.state[k]):
                assert (p is None) == (q is None) and (p is None or np.array_equal(p, q)), (shape, config, k)


def test_keras_stages_run_in_the_variable_dtype():
    x = [np.ones((3, 4), dtype=np.float32)]
    opt = KerasDialect(learning_rate=0.1)
    opt.build(x)
    opt.apply([np.full((3, 4), 0.5, dtype=np.float32)], x)
    assert x[0].dtype == np.float32 and all(a.dtype == np.float32 for _, _, a in opt.state.arrays())


def test_dialect_optimizer_refuses_missing_gradients():
    x = [np.ones(3), np.ones(2)]
    opt = KerasDialect(learning_rate=0.1)
    opt.build(x)
    with pytest.raises(ValueError, match="variable 1 has no gradient"):
        opt.apply([np.ones(3), None], x)
    assert np.array_equal(x[0], np.ones(3)), "nothing may change when apply fails"


def test_unknown_dialect_is_named():
    with pytest.raises(ValueError, match="unknown dialect 'mxnet'"):
        optimizer_class("mxnet")


def test_factored_axes_generalise_keras():
    """The stages factor whichever (row, column) axes a dialect names; Keras's are the last two."""
    stages = keras_stages()
    assert stages.factored_axes((4, 5, 6)) == (1, 2) and stages.factored_axes((6,)) is None
    moments = stages.initial_moments(stages, np.zeros((4, 5, 6)))
    assert moments[Kind.R].shape == (4, 5) and moments[Kind.C].shape == (4, 6) and moments[Kind.V].shape == (4, 5, 6)


def test_every_dialect_is_registered():
    assert set(DIALECTS) == {"keras", "torch", "optax", "transformers", "pytorch_optimizer", "timm_bigvision",
                               "timm"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_buffered_spec_step_equals_its_stages_without_buffers(shape, dtype):
    """update_step reuses two buffers for speed; the same stage functions called without
    ``out=`` (a fresh array per stage) give the same bits, every returned array included."""
    rng = np.random.default_rng(len(shape))
    hyper = Hyperparameters(epsilon_1=1e-3, clip_threshold=0.5)
    x = np.asarray(rng.normal(size=shape)).astype(dtype)
    moments = spec.zero_moments(x)
    for iterations in range(4):
        g = np.asarray(rng.normal(size=shape) * 3).astype(dtype)
        new_x, new_moments, trace = spec.update_step(x, g, moments, 0.3, iterations, hyper)
        f = x.dtype.type
        local_step = f(iterations + 1)
        rho = spec.relative_step_size(f(0.3), spec.inverse_sqrt_step(local_step))
        alpha = spec.parameter_scale(spec.rms(x), f(hyper.epsilon_2)) * rho
        q = spec.gradient_square(g, f(hyper.epsilon_1))
        r, c, v = spec.second_moment(q, *moments, *spec.beta_2(local_step, hyper.beta_2_decay),
                                     spec.factored_axes(x.shape))
        u = spec.precondition(g, v)
        den = spec.clip_denominator(spec.rms(u), hyper.clip_threshold, f)
        plain_x = spec.apply_update(x, alpha, spec.clip_update(u, den))
        for got, want in zip((new_x, *new_moments), (plain_x, r, c, v)):
            assert (got is None) == (want is None)
            if got is not None:
                got, want = np.asarray(got), np.asarray(want)
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (shape, dtype, iterations)
        assert trace.clip_denominator == float(den) and trace.alpha == float(alpha)
        x, moments = new_x, new_moments


def test_a_dialect_is_keras_with_named_stages_replaced():
    """Replacing a stage changes the step; replacing it by Keras's own changes nothing; an
    unknown stage name is refused by name."""
    keras = keras_stages(Hyperparameters(), None)
    torch = optimizer_class("torch")().stages
    x, g = np.linspace(-1, 1, 12).reshape(4, 3), np.linspace(2, -3, 12).reshape(4, 3)

    def run(stages):
        return stages.step(x, g, stages.initial_moments(stages, x), 3, 0.1)[0]

    assert np.array_equal(run(keras.replace(parameter_scale=keras.parameter_scale)), run(keras))
    assert not np.array_equal(run(keras.replace(axis_mean=torch.axis_mean)), run(keras))
    with pytest.raises(TypeError, match="no_such_stage"):
        keras.replace(no_such_stage=torch.axis_mean)
