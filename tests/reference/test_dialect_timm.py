"""The timm dialect (reference/dialects/timm.py) against the real ``timm.optim.Adafactor``
(timm 1.0.31), its stages, its DIFFERENCES against the Keras stages and its Keras mapping.
The real optimizer through the conformance gate: tests/frameworks/test_timm.py."""

import inspect

import numpy as np
import pytest

from reference.dialects import optimizer_class
from reference.dialects import timm as dialect
from reference.dialects.timm import DIFFERENCES, TimmAdafactor, TimmArguments, from_keras
from reference.state import Kind
from tests.reference.dialect_differences import difference_tests
from tools.dialect_cases.timm import CASES

#: Tests that import torch / timm (tests/conftest.py checks the marker).
FRAMEWORK = pytest.mark.framework
HINT = "pip install --no-deps timm==1.0.31"


# ----------------------------------------------------------------------------- stages (NumPy only)
def test_registered_as_a_dialect():
    assert optimizer_class("timm") is TimmAdafactor


def test_factored_axes_are_timms_rule():
    """dims 0, 1 of a > 2-D parameter when both exceed m, else the last two when both exceed m,
    strictly (adafactor.py:121-126); m = 16 by default."""
    p = TimmArguments()
    assert dialect.factored_axes(p, (16, 16)) is None
    assert dialect.factored_axes(p, (17, 17)) == (0, 1)
    assert dialect.factored_axes(p, (17, 17, 3)) == (0, 1)
    assert dialect.factored_axes(p, (3, 17, 17)) == (1, 2)
    assert dialect.factored_axes(p, (17, 3, 17)) is None
    assert dialect.factored_axes(p, (40,)) is None
    one = TimmArguments(min_dim_size_to_factor=1)
    assert dialect.factored_axes(one, (2, 3, 4)) == (0, 1)
    assert dialect.factored_axes(one, (1, 2, 3)) == (1, 2)


def test_beta_2_has_no_cap():
    p = TimmArguments()
    assert dialect.beta_2(p, np.float64, 1) == 1.0
    assert dialect.beta_2(p, np.float64, 10**6) == 1.0 - (1.0 - (10**6) ** -0.8)  # pytorch_optimizer would cap beta2t at 0.999


def test_explicit_lr_has_no_cap_and_no_parameter_scale():
    """lr=5.0 at step 4 is used as is (min(lr, 1/sqrt t) would be 0.5) and not scaled by RMS(p)."""
    opt = TimmAdafactor(lr=5.0, clip_threshold=1e9)
    x = [np.array([10.0, -20.0])]
    opt.build(x)
    for _ in range(4):
        before = x[0].copy()
        opt.apply([np.array([1.0, -1.0])], x)
    assert np.allclose(before - x[0], [5.0, -5.0], rtol=1e-12)


def test_weight_decay_is_by_the_full_step_size_after_the_update():
    """p_new = p + p*(-wd*lr_t) - U (adafactor.py:235-238): with a zero gradient U is 0."""
    x = [np.array([2.0, -4.0])]
    opt = TimmAdafactor(lr=0.3, weight_decay=0.5)
    opt.build(x)
    opt.apply([np.zeros(2)], x)
    assert np.array_equal(x[0], np.array([2.0, -4.0]) + np.array([2.0, -4.0]) * (-0.5 * 0.3))


def test_caution_is_refused_and_warmup_needs_the_relative_step():
    with pytest.raises(NotImplementedError, match="caution"):
        TimmAdafactor(caution=True)
    with pytest.raises(ValueError, match="warmup_init requires relative_step=True"):
        TimmAdafactor(lr=0.1, warmup_init=True)


(test_every_override_is_in_exactly_one_difference, test_keras_plus_all_differences_is_the_dialect_bit_for_bit,
 test_each_difference_alone_changes_the_result) = difference_tests("timm", dialect, TimmArguments(),
                                                                    TimmAdafactor, DIFFERENCES, from_keras)


def test_from_keras():
    assert from_keras({"learning_rate": 0.01})["lr"] is None
    assert from_keras({"learning_rate": 0.05, "weight_decay": None})["lr"] == 0.05
    assert from_keras({"clipnorm": 1.0}) is None


def test_cases_exercise_each_argument():
    """Every argument but caution is given a non-default value by some valid case."""
    defaults = {n: p.default for n, p in inspect.signature(TimmAdafactor.__init__).parameters.items() if n != "self"}
    given = {k for c in CASES if not c.error for k, v in c.config.items() if v != defaults[k]}
    assert given == set(defaults) - {"caution"}, set(defaults) - given


# ----------------------------------------------------------------------------- the real optimizer
@pytest.fixture(scope="module")
def timm_adafactor():
    from tests.helpers import installed_or_skip

    installed_or_skip(("timm", "torch"), HINT)
    from conformance.adapters.timm_adapter import timm_optimizers

    torch, adafactor, _, _ = timm_optimizers()
    return torch, adafactor


CONFIGS = [
    {},
    {"weight_decay": 0.1},
    {"lr": 0.05, "weight_decay": 0.2, "betas": [0.9, 0.999]},
    {"lr": 3.0, "clip_threshold": 0.5},
    {"warmup_init": True, "betas": [0.5, 0.0], "weight_decay": 0.01},
    {"scale_parameter": False, "decay_rate": -0.5, "eps": 1e-3},
    {"min_dim_size_to_factor": 1, "eps_scale": 0.5, "weight_decay": 0.05, "betas": [0.0, 0.9]},
    {"min_dim_size_to_factor": 2, "lr": 1e-4, "decay_rate": -1.0},
]
SHAPE_SETS = [[(3, 2), (2,)], [(4, 5, 3), ()], [(2, 3, 4), (5,)], [(1, 7), (7, 1)], [(3, 4, 2, 5)],
              [(16, 16)], [(17, 18)], [(17, 17, 2)]]


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale else float(np.max(np.abs(a), initial=0.0))


def _run_and_compare(torch, real, config, init, grads_per_step, where):
    params = [torch.nn.Parameter(torch.tensor(x)) for x in init]
    opt = real(params, **config)
    ours = TimmAdafactor(**config)
    xs = [x.copy() for x in init]
    ours.build(xs)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        opt.step()
        ours.apply(grads, xs)
    for i, (p, x) in enumerate(zip(params, xs)):
        at = (where, i)
        assert _rel(p.detach().numpy(), x) <= 1e-15, at
        state = opt.state[p]
        if dialect.factored_axes(ours.arguments, x.shape) is None:
            assert _rel(state["exp_avg_sq"].numpy(), ours.state[Kind.V][i]) <= 1e-15, at
        else:
            assert _rel(state["exp_avg_sq_row"].numpy(), ours.state[Kind.R][i]) <= 1e-15, at
            assert _rel(state["exp_avg_sq_col"].numpy(), ours.state[Kind.C][i]) <= 1e-15, at
        if (config.get("betas") or [None])[0] is not None:
            assert state["exp_avg"].dtype == torch.float64, at
            assert _rel(state["exp_avg"].numpy(), ours.state[Kind.MOMENTUM][i]) <= 1e-15, at


@FRAMEWORK
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_dialect_matches_real_timm_in_float64(timm_adafactor, config):
    """8 steps with gradient bursts (30x every third step), every shape set: the variables and
    every statistic (r, c, v, the momentum) within 1e-15 relative of the dialect."""
    torch, real = timm_adafactor
    rng = np.random.default_rng(11)
    for shapes in SHAPE_SETS:
        init = [rng.normal(size=s) for s in shapes]
        steps = [[rng.normal(size=s) * (30.0 if t % 3 == 2 else 1.0) for s in shapes] for t in range(8)]
        _run_and_compare(torch, real, config, init, steps, shapes)


@FRAMEWORK
@pytest.mark.parametrize("case", [c for c in CASES if not c.error], ids=lambda c: c.id)
def test_dialect_matches_real_timm_on_every_vector(timm_adafactor, case):
    """Every timm vector's config, shapes, initial values and gradients (generated in memory,
    as tools.generate_vectors writes them) in float64."""
    from conformance.generator import generate_vector
    from conformance.vector import as_vector

    torch, real = timm_adafactor
    vector = as_vector(generate_vector(case), dialect="timm")
    grads = [[np.array(g, np.float64) for g in step.grads] for step in vector.steps]
    init = [np.array(x, np.float64) for x in vector.initial]
    _run_and_compare(torch, real, dict(vector.config), init, grads, case.id)


@FRAMEWORK
def test_constructor_signature_is_timms(timm_adafactor):
    """Same argument names and defaults."""
    _, real = timm_adafactor
    theirs = {n: p.default for n, p in inspect.signature(real.__init__).parameters.items() if n not in ("self", "params")}
    ours = {n: p.default for n, p in inspect.signature(TimmAdafactor.__init__).parameters.items() if n != "self"}
    assert ours == theirs


@FRAMEWORK
@pytest.mark.parametrize("case", [c for c in CASES if c.error], ids=lambda c: c.id)
def test_construction_errors_are_timms(timm_adafactor, case):
    torch, real = timm_adafactor
    cls = {"ValueError": ValueError, "TypeError": TypeError}[case.error["class"]]
    with pytest.raises(cls) as theirs:
        real([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], **case.config)
    with pytest.raises(cls) as ours:
        TimmAdafactor(**case.config)
    assert str(ours.value) == str(theirs.value) and case.error["message_contains"] in str(theirs.value)
