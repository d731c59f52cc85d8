"""The transformers dialect (reference/dialects/transformers.py) against the real
``transformers.optimization.Adafactor``, its DIFFERENCES against the Keras stages, its
Keras mapping, and the real optimizer through the conformance gate on its vectors."""

import inspect
import sys

import numpy as np
import pytest

from reference.dialects import transformers as transformers_dialect
from reference.dialects.transformers import DIFFERENCES, TransformersAdafactor, TransformersArguments, from_keras
from tools.dialect_cases.transformers import CASES
from tests import background
from tests.reference.dialect_differences import difference_tests

torch = pytest.importorskip("torch")
transformers_optimization = pytest.importorskip("transformers.optimization")
Adafactor = transformers_optimization.Adafactor

EPS64 = float(np.finfo(np.float64).eps)

SHAPES = [(), (7,), (5, 3), (2, 3, 4), (1, 6)]
CONFIGS = {
    "defaults": {},
    "manual_lr": {"lr": 0.3, "relative_step": False},
    "beta1": {"beta1": 0.9},
    "weight_decay": {"weight_decay": 0.1},
    "warmup_init": {"warmup_init": True},
    "no_scale": {"scale_parameter": False},
    "everything": {"lr": 0.05, "relative_step": False, "beta1": 0.5, "weight_decay": 0.2, "clip_threshold": 0.5,
                   "decay_rate": -0.5, "eps": (1e-3, 0.1)},
}
STEPS = 10
#: Normwise relative error (max|a - b| / max|b|) allowed between real transformers and the
#: dialect reference in float64, on the variable and on every state array, after every
#: step. The dialect does every operation of optimization.py in the same order and dtype,
#: but does not copy torch's summation order in mean() and norm() nor the fused multiply-add
#: of add_(x, alpha=a) (module docstring): a handful of operations per step round
#: differently by at most an ulp or so each. Update clipping and the RMS(p) scale renormalise
#: every step, so these do not compound; about 3.5 eps is the largest seen over these
#: shapes and configurations. 16 eps leaves room for other draws while still failing on any
#: real semantic difference (one wrongly scaled term is orders of magnitude above it).
FLOAT64_BOUND = 16 * EPS64
STATE_KEYS = {"r": "exp_avg_sq_row", "c": "exp_avg_sq_col", "v": "exp_avg_sq", "momentum": "exp_avg"}


def _normwise(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    err = float(np.max(np.abs(a - b))) if b.size else 0.0
    return err / scale if scale > 0 else err


def _real_and_dialect(config, shape, seed):
    """Largest normwise error between transformers and the dialect over STEPS steps."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=shape)
    p = torch.nn.Parameter(torch.tensor(x0.copy()))
    real = Adafactor([p], **config)
    ours = TransformersAdafactor(**config)
    xs = [x0.copy()]
    ours.build(xs)
    worst = 0.0
    for step in range(STEPS):
        g = rng.normal(size=shape) * (1.0 + step % 3)
        p.grad = torch.tensor(g.copy())
        real.step()
        ours.apply([g], xs)
        state, slots = real.state[p], {k.value: ours.state[k][0] for k in ours.state.kinds()}
        assert sorted(STATE_KEYS[k] for k in slots) == sorted(k for k in state if k in STATE_KEYS.values()), \
            f"{config} {shape}: dialect slots {sorted(slots)} vs transformers state {sorted(state)}"
        assert state["step"] == ours.iterations
        worst = max(worst, _normwise(p.detach().numpy(), xs[0]))
        for kind, array in slots.items():
            worst = max(worst, _normwise(state[STATE_KEYS[kind]].numpy(), array))
    return worst


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_dialect_matches_real_transformers_in_float64(name, shape):
    worst = _real_and_dialect(CONFIGS[name], shape, seed=len(shape) + 11 * len(name))
    assert worst <= FLOAT64_BOUND, (f"{name} {shape}: real transformers and the dialect differ by {worst:.3g} "
                                    f"= {worst / EPS64:.3g} eps normwise (bound {FLOAT64_BOUND / EPS64:.0f} eps)")


def test_constructor_signature_is_transformers():
    ours = inspect.signature(TransformersAdafactor.__init__).parameters
    real = inspect.signature(Adafactor.__init__).parameters
    assert [(n, p.default) for n, p in ours.items() if n != "self"] == \
           [(n, p.default) for n, p in real.items() if n not in ("self", "params")]


@pytest.mark.parametrize("case", [c for c in CASES if c.error], ids=lambda c: c.id)
def test_construction_errors_are_transformers(case):
    param = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(Exception) as real:
        Adafactor([param], **case.config)
    with pytest.raises(Exception) as ours:
        TransformersAdafactor(**case.config)
    assert type(ours.value) is type(real.value) and type(real.value).__name__ == case.error["class"]
    assert str(ours.value) == str(real.value) and case.error["message_contains"] in str(real.value)


def test_eps_list_and_config_round_trip():
    opt = TransformersAdafactor(eps=[1e-20, 1e-2], lr=0.1, relative_step=False)
    config = opt.get_config()
    assert config["eps"] == [1e-20, 1e-2] and config["lr"] == 0.1
    assert TransformersAdafactor(**config).get_config() == config
    assert opt.arguments.eps == (1e-20, 1e-2) and opt.rms_floor == 1e-2


def test_learning_rate_is_the_relative_step():
    assert TransformersAdafactor().learning_rate(4) == 1e-2
    assert TransformersAdafactor().learning_rate(40000) == 1.0 / 200.0
    assert TransformersAdafactor(warmup_init=True).learning_rate(3) == 3e-6
    assert TransformersAdafactor(lr=0.5, relative_step=False).learning_rate(100) == 0.5  # no 1/sqrt(t) cap
    with pytest.raises(TypeError, match="lr=None"):
        TransformersAdafactor(relative_step=False).learning_rate(1)


# ----------------------------------------------------------------------------- DIFFERENCES
(test_every_override_is_in_exactly_one_difference, test_keras_plus_all_differences_is_the_dialect_bit_for_bit,
 test_each_difference_alone_changes_the_result) = difference_tests("transformers", transformers_dialect, TransformersArguments(), TransformersAdafactor, DIFFERENCES,
                                                                   from_keras)


def test_from_keras():
    assert from_keras({}) == dict(lr=0.001, relative_step=False, eps=[1e-30, 1e-3], clip_threshold=1.0,
                                  decay_rate=-0.8, beta1=None, weight_decay=0.0, scale_parameter=True,
                                  warmup_init=False)
    mapped = from_keras({"learning_rate": 0.01, "weight_decay": 0.1, "epsilon_1": 1e-20, "beta_2_decay": -0.5,
                         "relative_step": False, "use_ema": False, "clipnorm": None, "name": "x"})
    assert mapped["relative_step"] is True and mapped["lr"] is None  # min(1e-2, 1/sqrt t) == Keras's rho
    assert (mapped["weight_decay"], mapped["eps"][0], mapped["decay_rate"]) == (0.1, 1e-20, -0.5)
    TransformersAdafactor(**mapped)
    for unmappable in ({"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 0.5}, {"use_ema": True},
                       {"gradient_accumulation_steps": 2}, {"loss_scale_factor": 128.0},
                       {"learning_rate": {"class_name": "ExponentialDecay"}}, {"learning_rate": 1},
                       {"something_new": 1}):
        assert from_keras(unmappable) is None, unmappable


# ----------------------------------------------------------------------------- the gate
GATE = background.Job(
    "transformers-gate", [sys.executable, "-m", "conformance", "run", "--adapter",
                          "conformance.adapters.transformers_adapter:TransformersAdapter", "--vectors", "transformers/",
                          "--dtype", "float64,float32,float16,bfloat16", "--mode", "teacher,trajectory"],
    timeout=600, fixtures=("transformers_gate",), requires=("transformers", "torch"))


@pytest.fixture(scope="module")
def transformers_gate():
    return GATE.result()


def test_real_transformers_conforms_on_its_vectors(transformers_gate):
    """Every lane dtype; in float16/bfloat16 transformers steps in float32 and keeps its
    statistics in float32 (TransformersAdapter.state_dtypes), which the gate checks."""
    result = transformers_gate
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
