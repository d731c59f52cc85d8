"""The timm_bigvision dialect (reference/dialects/timm_bigvision.py) against the real
``timm.optim.AdafactorBigVision`` (timm 1.0.31), its stages, its DIFFERENCES against the Keras
stages and its Keras mapping. The real optimizer through the conformance gate:
tests/frameworks/test_timm.py."""

import inspect
import math

import numpy as np
import pytest

from reference.dialects import optimizer_class
from reference.dialects import timm_bigvision as dialect
from reference.dialects.timm_bigvision import (DIFFERENCES, BigVisionArguments, TimmBigVisionAdafactor,
                                               from_keras)
from reference.state import Kind
from tests.reference.dialect_differences import difference_tests
from tools.dialect_cases.timm_bigvision import CASES

#: Tests that import torch / timm (tests/conftest.py checks the marker).
FRAMEWORK = pytest.mark.framework
HINT = "pip install --no-deps timm==1.0.31"


# ----------------------------------------------------------------------------- stages (NumPy only)
def test_registered_as_a_dialect():
    assert optimizer_class("timm_bigvision") is TimmBigVisionAdafactor


def test_factored_axes_are_the_two_largest():
    """(dc, dr) = second-largest, largest, ties by index; only when size[dc] >= min_dim_size_to_factor
    (adafactor_bv.py:41-46)."""
    p = BigVisionArguments(min_dim_size_to_factor=2)
    assert dialect.factored_axes(p, (5, 3)) == (1, 0)
    assert dialect.factored_axes(p, (3, 5)) == (0, 1)
    assert dialect.factored_axes(p, (3, 1, 2)) == (2, 0)
    assert dialect.factored_axes(p, (2, 2)) == (0, 1)
    assert dialect.factored_axes(p, (7,)) is None
    assert dialect.factored_axes(BigVisionArguments(), (15, 40)) is None  # the default 16
    assert dialect.factored_axes(BigVisionArguments(), (16, 40)) == (0, 1)


def test_beta_2_is_the_capped_lerp_weight_with_the_offset():
    p = BigVisionArguments()
    assert dialect.beta_2(p, np.float64, 1) == 1.0
    assert dialect.beta_2(p, np.float64, 4) == 1 - (1.0 - 4.0 ** -0.8)
    assert dialect.beta_2(p, np.float64, 10**6) == 1 - 0.999
    offset = BigVisionArguments(decay_offset=2, beta2_cap=0.3)
    assert dialect.beta_2(offset, np.float64, 2) == 1.0  # max(t - offset, 1) = 1
    assert dialect.beta_2(offset, np.float64, 4) == 1 - 0.3  # 1 - 2**-0.8 = 0.43 > the cap


def test_no_clipping_by_default_and_the_plain_lr():
    """clipping_threshold None: U = g / sqrt(g*g + eps) unclipped; lr 1.0; momentum 0.9 in bfloat16."""
    import ml_dtypes

    opt = TimmBigVisionAdafactor(momentum=None)
    x = [np.array([0.5, -1.0, 2.0])]
    opt.build(x)
    g = np.array([3.0, -0.5, 1e-3])
    opt.apply([g], x)
    assert np.array_equal(x[0], np.array([0.5, -1.0, 2.0]) - g * (1.0 / np.sqrt(g * g + 1e-30)))
    default = TimmBigVisionAdafactor()
    default.build([np.zeros(3)])
    assert default.state[Kind.MOMENTUM][0].dtype == np.dtype(ml_dtypes.bfloat16)


def test_decay_factors():
    def factor(**kw):
        return dialect.decay_factor(BigVisionArguments(**kw))

    assert factor(lr=0.2, weight_decay=0.1) == 1. - 0.2 * 0.1
    assert factor(lr=0.2, weight_decay=0.1, unscaled_wd=True) == 1. - 0.1
    assert factor(lr=0.2, weight_decay=0.1, corrected_weight_decay=True) == 1. - (0.2 ** 2 / 0.2) * 0.1
    assert factor(lr=0.2, weight_decay=0.1, unscaled_wd=True, corrected_weight_decay=True) == 1. - (0.2 / 0.2) * 0.1


def test_caution_is_refused():
    with pytest.raises(NotImplementedError, match="caution"):
        TimmBigVisionAdafactor(caution=True)


(test_every_override_is_in_exactly_one_difference, test_keras_plus_all_differences_is_the_dialect_bit_for_bit,
 test_each_difference_alone_changes_the_result) = difference_tests("timm_bigvision", dialect, BigVisionArguments(),
                                                                    TimmBigVisionAdafactor, DIFFERENCES, from_keras)


def test_from_keras():
    assert from_keras({"learning_rate": 0.05, "beta_2_decay": -0.5, "weight_decay": None})["decay_rate"] == 0.5
    assert from_keras({"learning_rate": 0.05})["momentum"] is None
    assert from_keras({"clipnorm": 1.0}) is None
    assert from_keras({"learning_rate": {"class_name": "ExponentialDecay"}}) is None


# ----------------------------------------------------------------------------- the real optimizer
@pytest.fixture(scope="module")
def bigvision():
    from tests.helpers import installed_or_skip

    installed_or_skip(("timm", "torch"), HINT)
    from conformance.adapters.timm_adapter import timm_optimizers

    return timm_optimizers()


CONFIGS = [
    {},
    {"momentum": None, "clipping_threshold": 1.0},
    {"momentum_dtype": "float64", "weight_decay": 0.1, "lr": 0.05},
    {"momentum_dtype": "float32", "momentum": 0.5, "weight_decay": 0.01, "unscaled_wd": True},
    {"momentum": None, "min_dim_size_to_factor": 2, "decay_offset": 2, "beta2_cap": 0.6},
    {"momentum": 0.5, "momentum_dtype": "float64", "min_dim_size_to_factor": 1, "clipping_threshold": 0.5,
     "unscaled_wd": True, "weight_decay": 0.01},
    {"momentum": None, "min_dim_size_to_factor": 3, "eps": 1e-3, "decay_rate": 0.5, "corrected_weight_decay": True,
     "weight_decay": 0.2, "lr": 0.3},
]
SHAPE_SETS = [[(3, 2), (2,)], [(4, 5, 3), ()], [(2, 3, 4), (5,)], [(1, 7), (7, 1)], [(3, 4, 2, 5)], [(5, 5)],
              [(17, 16)]]


@FRAMEWORK
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_dialect_matches_real_bigvision_in_float64(bigvision, config):
    """8 steps with gradient bursts (30x every third step), every shape set: the variables and
    every statistic (r, c with timm's kept axis removed, v, the momentum in its dtype) within
    1e-15 relative of the dialect."""
    torch, _, real, _ = bigvision
    rng = np.random.default_rng(7)
    for shapes in SHAPE_SETS:
        init = [rng.normal(size=s) for s in shapes]
        params = [torch.nn.Parameter(torch.tensor(x)) for x in init]
        kwargs = dict(config)
        if "momentum_dtype" in kwargs:
            kwargs["momentum_dtype"] = getattr(torch, kwargs["momentum_dtype"])
        opt = real(params, **kwargs)
        ours = TimmBigVisionAdafactor(**config)
        xs = [x.copy() for x in init]
        ours.build(xs)
        for t in range(8):
            grads = [rng.normal(size=s) * (30.0 if t % 3 == 2 else 1.0) for s in shapes]
            for p, g in zip(params, grads):
                p.grad = torch.tensor(g)
            opt.step()
            ours.apply(grads, xs)
        for i, (p, x) in enumerate(zip(params, xs)):
            where = (shapes, i)
            assert _rel(p.detach().numpy(), x) <= 1e-15, where
            state = opt.state[p]
            axes = dialect.factored_axes(ours.arguments, x.shape)
            if axes is None:
                assert _rel(state["exp_avg_sq"].numpy(), ours.state[Kind.V][i]) <= 1e-15, where
            else:
                dc, dr = axes
                assert _rel(state["exp_avg_sq_r"].squeeze(dr).numpy(), ours.state[Kind.R][i]) <= 1e-15, where
                assert _rel(state["exp_avg_sq_c"].squeeze(dc).numpy(), ours.state[Kind.C][i]) <= 1e-15, where
            if config.get("momentum", 0.9) is not None:
                m = ours.state[Kind.MOMENTUM][i]
                assert str(state["exp_avg"].dtype) == f"torch.{m.dtype}", where
                assert _rel(state["exp_avg"].to(torch.float64).numpy(), m.astype(np.float64)) <= 1e-15, where


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale else float(np.max(np.abs(a), initial=0.0))


@FRAMEWORK
def test_constructor_signature_is_bigvisions(bigvision):
    """Same argument names and defaults (momentum_dtype as a name)."""
    _, _, real, _ = bigvision
    theirs = {n: p.default for n, p in inspect.signature(real.__init__).parameters.items() if n not in ("self", "params")}
    ours = {n: p.default for n, p in inspect.signature(TimmBigVisionAdafactor.__init__).parameters.items()
            if n != "self"}
    theirs["momentum_dtype"] = str(theirs["momentum_dtype"]).replace("torch.", "")
    assert ours == theirs


@FRAMEWORK
@pytest.mark.parametrize("case", [c for c in CASES if c.error], ids=lambda c: c.id)
def test_construction_errors_are_bigvisions(bigvision, case):
    torch, _, real, _ = bigvision
    with pytest.raises(ValueError) as theirs:
        real([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], **case.config)
    with pytest.raises(ValueError) as ours:
        TimmBigVisionAdafactor(**case.config)
    assert str(ours.value) == str(theirs.value) and case.error["message_contains"] in str(theirs.value)


def test_cases_exercise_each_argument():
    """Every argument but caution is given a non-default value by some valid case."""
    defaults = {n: p.default for n, p in inspect.signature(TimmBigVisionAdafactor.__init__).parameters.items()
                if n != "self"}
    given = {k for c in CASES if not c.error for k, v in c.config.items() if v != defaults[k]}
    assert given == set(defaults) - {"caution"}, set(defaults) - given
    assert all(math.isfinite(c.config.get("lr", 1.0)) for c in CASES)
