"""The pytorch_optimizer dialect (reference/dialects/pytorch_optimizer.py) against the real
``pytorch_optimizer.AdaFactor`` (pytorch-optimizer 4.1.0), its stages one by one, its
DIFFERENCES against the Keras stages and its Keras mapping. The real optimizer through the
conformance gate: tests/frameworks/test_pytorch_optimizer.py."""

import inspect
import math

import numpy as np
import pytest

from reference.dialects import optimizer_class
from reference.dialects import pytorch_optimizer as dialect
from reference.dialects.pytorch_optimizer import (DIFFERENCES, PytorchOptimizerAdaFactor, PytorchOptimizerArguments,
                                                  from_keras)
from reference.state import Kind
from tools.dialect_cases.pytorch_optimizer import CASES
from tests.reference.dialect_differences import difference_tests

EPS64 = float(np.finfo(np.float64).eps)
#: Tests that import torch / pytorch_optimizer (tests/conftest.py checks the marker).
FRAMEWORK = pytest.mark.framework


# ----------------------------------------------------------------------------- stages (NumPy only)
def test_registered_as_a_dialect():
    assert optimizer_class("pytorch_optimizer") is PytorchOptimizerAdaFactor


def test_beta_2_is_the_capped_lerp_weight():
    """1 - min(cap, 1 - t**decay): the whole new value at t = 1, the cap once 1 - t**-0.8 > cap
    (adafactor.py:363)."""
    p = PytorchOptimizerArguments()
    assert dialect.beta_2(p, np.float64, 1) == 1.0
    assert dialect.beta_2(p, np.float64, 4) == 1.0 - (1.0 - math.pow(4, -0.8))
    assert dialect.beta_2(p, np.float64, 10**6) == 1.0 - 0.999  # capped: Keras would give 1.6e-5
    capped = PytorchOptimizerArguments(beta2_cap=0.5)
    assert dialect.beta_2(capped, np.float64, 3) == 0.5


def test_relative_step_ignores_lr():
    assert PytorchOptimizerAdaFactor(lr=0.5).learning_rate(4) == 1e-2
    assert PytorchOptimizerAdaFactor().learning_rate(40000) == 1.0 / 200.0
    assert PytorchOptimizerAdaFactor(warmup_init=True).learning_rate(3) == 1e-6 * 3
    assert PytorchOptimizerAdaFactor(lr=0.5, relative_step=False).learning_rate(100) == 0.5  # uncapped
    with pytest.raises(TypeError, match="lr=None"):
        PytorchOptimizerAdaFactor(lr=None, relative_step=False).learning_rate(1)


def test_default_momentum_is_bfloat16_and_quantises_the_update():
    """beta1 = 0.9 in bfloat16 by default: after one step from zero, the update is
    0.1 * U rounded through bfloat16, so p moves by a bfloat16 number even in float64."""
    import ml_dtypes

    opt = PytorchOptimizerAdaFactor()
    x = [np.array([0.3, -1.7, 2.5])]
    x0 = x[0].copy()
    opt.build(x)
    assert opt.state[Kind.MOMENTUM][0].dtype == np.dtype(ml_dtypes.bfloat16)
    opt.apply([np.array([0.11, 0.7, -3.0])], x)
    m = opt.state[Kind.MOMENTUM][0]
    assert np.array_equal(x0 - x[0], m.astype(np.float64))
    assert np.array_equal(m.astype(np.float64).astype(ml_dtypes.bfloat16).astype(np.float64), m.astype(np.float64))


def test_float16_momentum_sets_eps1():
    assert PytorchOptimizerAdaFactor(momentum_dtype="float16").arguments.eps1 == 1e-7  # adafactor.py:68
    assert PytorchOptimizerAdaFactor(momentum_dtype="float32", eps1=1e-20).arguments.eps1 == 1e-20


def test_weight_decay_uses_the_full_step_size_and_the_pre_decay_rms():
    """p *= 1 - wd*lr_t with lr_t = max(eps2, RMS(p before decay)) * rho; no momentum."""
    opt = PytorchOptimizerAdaFactor(lr=0.1, relative_step=False, betas=(None, 0.999), weight_decay=0.5)
    x = [np.array([3.0, 4.0])]
    opt.build(x)
    g = np.array([1.0, -1.0])
    opt.apply([g], x)
    lr_t = (5.0 / math.sqrt(2.0)) * 0.1
    u = (1.0 / np.sqrt(g * g + 1e-30)) * g  # v = q at t = 1; RMS(u) = 1, no clipping
    assert np.array_equal(x[0], np.array([3.0, 4.0]) * (1.0 - 0.5 * lr_t) - u * lr_t)


@FRAMEWORK
def test_lerp_fma32_is_torch_lerp():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    a = rng.normal(size=4096).astype(np.float32)
    b = (a + rng.normal(size=4096).astype(np.float32) * 0.1).astype(np.float32)
    for w in (0.1, 1.0 - 0.9, 0.5, 0.75, 1.0):
        want = torch.tensor(a).lerp_(torch.tensor(b), weight=w).numpy()
        got = dialect.lerp_fma32(a, b, w)
        assert np.array_equal(got, want), f"weight {w}: {(got != want).sum()} elements differ"


# ----------------------------------------------------------------------------- against the real optimizer
CONFIGS = {
    "defaults": {}, "no_momentum": {"betas": [None, 0.999]}, "momentum_float64": {"momentum_dtype": "float64"},
    "momentum_float32": {"momentum_dtype": "float32"}, "momentum_float16": {"momentum_dtype": "float16"},
    "manual_lr": {"lr": 0.05, "relative_step": False, "betas": [0.5, 0.5]},
    "weight_decay": {"weight_decay": 0.1}, "fixed_decay": {"weight_decay": 0.1, "fixed_decay": True},
    "coupled": {"weight_decay": 0.1, "weight_decouple": False, "betas": [None, 0.999]},
    "maximize": {"maximize": True}, "per_param": {"foreach": False, "weight_decay": 0.2},
    "warmup_init": {"warmup_init": True}, "no_scale": {"scale_parameter": False},
    "everything": {"lr": 0.05, "relative_step": False, "betas": [0.3, 0.6], "weight_decay": 0.2,
                   "clip_threshold": 0.5, "decay_rate": -0.5, "eps1": 1e-3, "eps2": 0.1},
}
SHAPES = [(), (7,), (5, 3), (2, 3, 4), (1, 6)]
STEPS = 10
#: Normwise relative error allowed between real AdaFactor and the dialect in float64, on the
#: variable and every state array after every step. The dialect does every operation in the
#: same order and dtype (the bfloat16/float16/float32 momentum lerp fused as torch fuses it),
#: but not torch's summation order in mean()/norm() nor the fused multiply-add of a float64
#: lerp: about 8 eps is the worst seen (a float64 momentum whose lerp cancels). 32 eps still
#: fails any semantic difference (a wrong cap, order or dtype is 1e-3 or more).
FLOAT64_BOUND = 32 * EPS64
STATE_KEYS = {"r": "exp_avg_sq_row", "c": "exp_avg_sq_col", "v": "exp_avg_sq", "momentum": "exp_avg"}


def _normwise(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    err = float(np.max(np.abs(a - b))) if b.size else 0.0
    return err / scale if scale > 0 else err


def _real_and_dialect(config, shape, seed):
    torch = pytest.importorskip("torch")
    AdaFactor = pytest.importorskip("pytorch_optimizer").AdaFactor
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=shape)
    real_config = dict(config)
    real_config["momentum_dtype"] = getattr(torch, config.get("momentum_dtype", "bfloat16"))
    if "betas" in real_config:
        real_config["betas"] = tuple(real_config["betas"])
    p = torch.nn.Parameter(torch.tensor(x0.copy()))
    real = AdaFactor([p], **real_config)
    ours = PytorchOptimizerAdaFactor(**config)
    xs = [x0.copy()]
    ours.build(xs)
    worst = 0.0
    for step in range(STEPS):
        g = rng.normal(size=shape) * (1.0 + 5.0 * (step % 3))
        p.grad = torch.tensor(g.copy())
        real.step()
        ours.apply([g], xs)
        state, slots = real.state[p], {k.value: ours.state[k][0] for k in ours.state.kinds()}
        slots = {k: a for k, a in slots.items() if a is not None}
        assert sorted(STATE_KEYS[k] for k in slots) == sorted(k for k in state if k in STATE_KEYS.values()), \
            f"{config} {shape}: dialect slots {sorted(slots)} vs AdaFactor state {sorted(state)}"
        assert real.param_groups[0]["step"] == ours.iterations
        worst = max(worst, _normwise(p.detach().numpy(), xs[0]))
        for kind, array in slots.items():
            held = state[STATE_KEYS[kind]]
            assert str(held.dtype).replace("torch.", "") == str(array.dtype), f"{kind}: {held.dtype} vs {array.dtype}"
            worst = max(worst, _normwise(held.double().numpy(), array))
    return worst


@FRAMEWORK
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_dialect_matches_real_adafactor_in_float64(name, shape):
    worst = _real_and_dialect(CONFIGS[name], shape, seed=len(shape) + 11 * len(name))
    assert worst <= FLOAT64_BOUND, (f"{name} {shape}: real AdaFactor and the dialect differ by {worst:.3g} "
                                    f"= {worst / EPS64:.3g} eps normwise (bound {FLOAT64_BOUND / EPS64:.0f} eps)")


@FRAMEWORK
def test_constructor_signature_is_adafactors():
    torch = pytest.importorskip("torch")
    AdaFactor = pytest.importorskip("pytorch_optimizer").AdaFactor
    ours = inspect.signature(PytorchOptimizerAdaFactor.__init__).parameters
    real = inspect.signature(AdaFactor.__init__).parameters

    def default(value):
        if isinstance(value, torch.dtype):
            return str(value).replace("torch.", "")
        return value

    assert [(n, default(p.default)) for n, p in ours.items() if n != "self"] == \
           [(n, default(p.default)) for n, p in real.items() if n not in ("self", "params", "kwargs")]


@FRAMEWORK
@pytest.mark.parametrize("case", [c for c in CASES if c.error], ids=lambda c: c.id)
def test_construction_errors_are_adafactors(case):
    torch = pytest.importorskip("torch")
    AdaFactor = pytest.importorskip("pytorch_optimizer").AdaFactor
    param = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    config = {k: tuple(v) if k == "betas" else v for k, v in case.config.items()}
    with pytest.raises(Exception) as real:
        AdaFactor([param], **config)
    with pytest.raises(Exception) as ours:
        PytorchOptimizerAdaFactor(**case.config)
    assert type(ours.value).__name__ == type(real.value).__name__ == case.error["class"]
    assert str(ours.value) == str(real.value) and case.error["message_contains"] in str(real.value)


# ----------------------------------------------------------------------------- DIFFERENCES
(test_every_override_is_in_exactly_one_difference, test_keras_plus_all_differences_is_the_dialect_bit_for_bit,
 test_each_difference_alone_changes_the_result) = difference_tests("pytorch_optimizer", dialect, PytorchOptimizerArguments(), PytorchOptimizerAdaFactor, DIFFERENCES,
                                                                   from_keras)


def test_from_keras():
    mapped = from_keras({"learning_rate": 0.01, "weight_decay": 0.1, "epsilon_1": 1e-20, "beta_2_decay": -0.5,
                         "relative_step": False, "use_ema": False, "clipnorm": None, "name": "x"})
    assert mapped["relative_step"] is True  # min(1e-2, 1/sqrt t) == Keras's rho at lr 0.01
    assert (mapped["weight_decay"], mapped["eps1"], mapped["decay_rate"], mapped["betas"]) == \
           (0.1, 1e-20, -0.5, [None, 0.999])
    assert from_keras({"learning_rate": 0.5})["relative_step"] is False
    PytorchOptimizerAdaFactor(**mapped)
    for unmappable in ({"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 0.5}, {"use_ema": True},
                       {"gradient_accumulation_steps": 2}, {"loss_scale_factor": 128.0},
                       {"learning_rate": {"class_name": "ExponentialDecay"}}, {"learning_rate": 1},
                       {"something_new": 1}):
        assert from_keras(unmappable) is None, unmappable
