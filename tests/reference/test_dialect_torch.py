"""The torch dialect (reference/dialects/torch.py) against real torch.optim.Adafactor, its
DIFFERENCES decomposition, from_keras, and the torch adapter through the CLI.

Bound for (a): the dialect writes lerp and add-with-alpha without FMA, while CPU torch fuses
them (ATen LerpKernel.cpp, ufunc/add.h), and torch.norm / mean sum in ATen's vectorised
order, not NumPy's pairwise one. Each is <= 1 ulp per operation; over 10 steps they add up
to a few ulp of x (measured: <= 8 float64 ulp on these shapes with lr <= 0.1). The bound is
normwise, max|x_torch - x_dialect| <= 32 eps * max|x|: an elementwise ulp bound would
punish elements that cancel to near zero, where a 1-ulp difference of a large term is many
ulp of the small result.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reference.adafactor_step import Hyperparameters  # noqa: E402
from reference.dialects import torch as torch_dialect  # noqa: E402
from reference.dialects.keras import keras_stages  # noqa: E402
from reference.dialects.torch import DIFFERENCES, TorchAdafactor, TorchArguments, from_keras  # noqa: E402
from reference.state import Kind  # noqa: E402
from tests import background  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EPS = np.finfo(np.float64).eps
BOUND_EPS = 32  # normwise, in float64 eps of max|x| (see the module docstring)
SHAPES = [(), (7,), (5, 3), (2, 3, 4), (1, 6)]
CONFIGS = {
    "defaults": {},
    "weight_decay": {"lr": 0.1, "weight_decay": 0.1},
    "maximize": {"lr": 0.1, "maximize": True},
    "eps1_binding": {"lr": 0.1, "eps": (1.0, 1e-3)},
    "d_2": {"lr": 0.1, "d": 2.0},
}
STEPS = 10


def _inputs(shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=shape)
    grads = [rng.normal(size=shape) * scale * (1 + 0.5 * np.sin(k)) for k in range(STEPS)]
    grads[3] = grads[3] * 30.0  # a burst: clipping on for one step
    return x0, grads


def _torch_run(x0, grads, config, foreach):
    p = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adafactor([p], **config, foreach=foreach)
    out = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        s = opt.state[p]
        slots = ({"r": s["row_var"][..., 0].numpy().copy(), "c": s["col_var"][..., 0, :].numpy().copy()}
                 if p.dim() > 1 else {"v": s["variance"].numpy().copy()})
        out.append((p.detach().numpy().copy(), slots))
    return out


def _dialect_run(x0, grads, config):
    x = np.array(x0, dtype=np.float64)
    opt = TorchAdafactor(**config)
    opt.build([x])
    out = []
    for g in grads:
        opt.apply([g], [x])
        out.append((x.copy(), {k.value: opt.state[k][0] for k in opt.state.kinds()}))
    return out


def _normwise(a, b):
    scale = max(float(np.max(np.abs(b))), np.finfo(np.float64).tiny) if b.size else 1.0
    return float(np.max(np.abs(a - b))) / scale / EPS if b.size else 0.0


@pytest.mark.parametrize("foreach", [None, True], ids=["single-tensor", "foreach"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dialect_matches_real_torch(shape, config_name, foreach):
    config = CONFIGS[config_name]
    x0, grads = _inputs(shape, scale=0.03 if config_name == "eps1_binding" else 1.0)
    real = _torch_run(x0, grads, config, foreach)
    ours = _dialect_run(x0, grads, config)
    for k, ((x_t, s_t), (x_d, s_d)) in enumerate(zip(real, ours)):
        assert sorted(s_t) == sorted(s_d), f"step {k + 1}: torch keeps {sorted(s_t)}, the dialect {sorted(s_d)}"
        for name, a, b in [("x", x_t, x_d)] + [(key, s_t[key], s_d[key]) for key in s_t]:
            err = _normwise(a, b)
            assert err <= BOUND_EPS, (f"{shape} {config_name} foreach={foreach} step {k + 1}: {name} differs from "
                                      f"torch by {err:.3g} eps normwise (bound {BOUND_EPS})")


def test_eps1_binding_config_really_binds():
    """The eps1_binding configuration is only a test of the floor if the floor is active."""
    s = TorchAdafactor(**CONFIGS["eps1_binding"]).stages
    x0, grads = _inputs((5, 3), scale=0.03)
    f = np.float64
    moments = s.second_moment(s, f, s.gradient_square(f, grads[0]), s.initial_moments(s, x0), s.beta_2(f, 1), (0, 1))
    assert np.mean(moments[Kind.R]) < 1.0, "mean(r) does not fall below eps1=1: the floor never binds"


# ----------------------------------------------------------------------------- DIFFERENCES
def _compose(names, keras, arguments):
    """``keras`` (Keras's stages) with the stages ``names`` taken from torch's, bound to
    ``arguments`` (as tools/divergence.py builds "Keras + differences")."""
    torch_functions = torch_dialect.stage_functions(arguments)
    return keras.replace(**{name: torch_functions[name] for name in names})


def _stage_run(stages, x0s, gradss, lr=0.5):
    xs = [np.array(x, dtype=np.float64) for x in x0s]
    moments = [stages.initial_moments(stages, x) for x in xs]
    for t, row in enumerate(gradss, start=1):
        for i, g in enumerate(row):
            xs[i], moments[i] = stages.step(xs[i], g, moments[i], t, lr)
    return xs, moments


def _difference_inputs():
    shapes = [(5, 3), (3,), (2, 3, 4)]
    inputs = [_inputs(s, seed=i) for i, s in enumerate(shapes)]
    return [x for x, _ in inputs], [list(row) for row in zip(*[g for _, g in inputs])]


def test_every_override_belongs_to_exactly_one_difference():
    overrides = list(torch_dialect.stage_functions(TorchArguments()))
    listed = [name for methods, _ in DIFFERENCES.values() for name in methods]
    assert sorted(listed) == sorted(set(listed)), f"a method is in two differences: {listed}"
    assert sorted(listed) == sorted(overrides), (f"DIFFERENCES lists {sorted(listed)}, torch replaces "
                                                 f"{sorted(overrides)}")


def test_keras_plus_all_differences_is_torch_bit_for_bit():
    native = TorchAdafactor(lr=0.5, weight_decay=0.1, eps=(1e-3, 1e-3), d=2.0)
    every = [name for methods, _ in DIFFERENCES.values() for name in methods]
    x0s, gradss = _difference_inputs()
    want_x, want_s = _stage_run(native.stages, x0s, gradss)
    keras = keras_stages(Hyperparameters(beta_2_decay=-0.8, epsilon_1=1e-3, epsilon_2=1e-3, clip_threshold=2.0), 0.1)
    got_x, got_s = _stage_run(_compose(every, keras, native.arguments), x0s, gradss)
    for i, (a, b) in enumerate(zip(got_x, want_x)):
        np.testing.assert_array_equal(a, b, err_msg=f"variable {i}: Keras + every difference != torch")
    for i, (a, b) in enumerate(zip(got_s, want_s)):
        assert sorted(a) == sorted(b), f"variable {i}: slots {sorted(a)} != {sorted(b)}"
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"variable {i} slot {key}")


@pytest.mark.parametrize("difference", list(DIFFERENCES))
def test_each_difference_alone_changes_the_keras_result(difference):
    keras = keras_stages(Hyperparameters(), 0.1)
    arguments = TorchArguments(weight_decay=0.1)
    x0s, gradss = _difference_inputs()
    base_x, _ = _stage_run(_compose((), keras, arguments), x0s, gradss)
    alone_x, _ = _stage_run(_compose(DIFFERENCES[difference][0], keras, arguments), x0s, gradss)
    assert any(not np.array_equal(a, b) for a, b in zip(alone_x, base_x)), (
        f"difference {difference!r} alone leaves the Keras result unchanged bit for bit")


# ----------------------------------------------------------------------------- from_keras
def test_from_keras_maps_the_step_arguments():
    got = from_keras({"learning_rate": 0.25, "beta_2_decay": -0.5, "epsilon_1": 1e-20, "epsilon_2": 0.01,
                      "clip_threshold": 2.0, "relative_step": True, "weight_decay": 0.05, "clipnorm": None,
                      "use_ema": False, "gradient_accumulation_steps": None, "loss_scale_factor": None})
    assert got == {"lr": 0.25, "beta2_decay": -0.5, "eps": (None, 0.01), "d": 2.0, "weight_decay": 0.05}
    assert from_keras({"learning_rate": 0.1})["weight_decay"] == 0.0
    TorchAdafactor(**got)  # torch accepts it


@pytest.mark.parametrize("extra", [{"clipnorm": 1.0}, {"clipvalue": 0.5}, {"global_clipnorm": 1.0},
                                   {"use_ema": True}, {"gradient_accumulation_steps": 2},
                                   {"loss_scale_factor": 128.0}, {"clip_threshold": 0.5},
                                   {"learning_rate": {"class_name": "ExponentialDecay"}},
                                   {"some_future_argument": 1}])
def test_from_keras_refuses_what_torch_cannot_do(extra):
    assert from_keras({"learning_rate": 0.1, **extra}) is None, f"{extra} must not map onto torch"


# ----------------------------------------------------------------------------- construction
@pytest.mark.parametrize("kwargs", [{"lr": -0.1}, {"beta2_decay": 0.5}, {"eps": (-1e-30, 1e-3)},
                                    {"eps": [None, -1e-3]}, {"d": 0.5}, {"weight_decay": -0.01}])
def test_constructor_errors_match_torch(kwargs):
    with pytest.raises(ValueError) as real:
        torch.optim.Adafactor([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError) as ours:
        TorchAdafactor(**kwargs)
    assert str(ours.value) == str(real.value)


def test_config_round_trips_and_eps1_none_follows_the_dtype():
    config = TorchAdafactor(eps=[None, 1e-3]).get_config()
    assert config == {"lr": 1e-2, "beta2_decay": -0.8, "eps": [None, 1e-3], "d": 1.0, "weight_decay": 0.0,
                      "foreach": None, "maximize": False}
    assert TorchAdafactor(**config).get_config() == config
    s = TorchAdafactor().stages
    # g*g = 1e-18 against the floor eps1^2: 4.9e-32 in float64 (U = g/|g| = 1), 1.4e-14 in
    # float32 (U = g/eps1 ~ 0.008); real torch in the same dtype agrees.
    for dtype, floored in ((np.float64, False), (np.float32, True)):
        x = np.ones(3, dtype=dtype)
        g = np.full(3, 1e-9, dtype=dtype)
        new_x, moments = s.step(x, g, s.initial_moments(s, x), 1, 0.01)
        u = s.precondition(s, dtype, g, moments, None)
        assert (float(u[0]) < 0.5) == floored, f"{dtype.__name__}: U = {u[0]}, eps1 floor bound: {floored}"
        p = torch.tensor(x, requires_grad=True)
        p.grad = torch.tensor(g)
        opt = torch.optim.Adafactor([p])
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), new_x, rtol=4 * np.finfo(dtype).eps,
                                   err_msg=f"{dtype.__name__}: the dialect's eps1=None is not torch's")


# ----------------------------------------------------------------------------- the gate
#: Both torch adapters through the CLI on the torch vectors, every dtype and mode: one child
#: (torch imported once per adapter process, two at a time), on the second core while other tests run.
GATE = background.Job(
    "torch-gate", [sys.executable, "-m", "conformance", "run", "--adapter", "torch", "--adapter", "torch-foreach",
                   "--jobs", "2", "--vectors", "torch/", "--dtype", "float64,float32,float16,bfloat16",
                   "--mode", "teacher,trajectory"],
    timeout=900, fixtures=("torch_gate",), requires=("torch",))


@pytest.fixture(scope="module")
def torch_gate():
    if not (REPO / "vectors" / "torch").is_dir():
        pytest.fail("vectors/torch/ is missing: run python -m tools.generate_vectors")
    return GATE.result()


def test_gate_cli_conforms_on_the_torch_vectors(torch_gate):
    """TorchAdapter and TorchForeachAdapter both conform (every lane of both in the table)."""
    proc = torch_gate
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert re.search(r"^torch-foreach\s", proc.stdout, re.M) and re.search(r"^torch\s", proc.stdout, re.M), \
        proc.stdout[-3000:]


@pytest.mark.parametrize("w", [0.3, 0.7, 1.0])
def test_lerp_takes_torchs_branch(w):
    """torch.lerp (ATen Lerp.h) uses s + w(e-s) for |w| < 0.5 and e - (e-s)(1-w) otherwise.
    CPU torch fuses the multiply-add, so single elements differ by <= 1 ulp; over 10^4
    elements the right branch agrees with torch bit for bit more often than the other one
    (at w = 1 the second branch is e exactly, the first is not)."""
    rng = np.random.default_rng(1)
    s, e = rng.random(10_000) * 1e3, rng.random(10_000) * 1e-3
    real = torch.tensor(s).lerp_(torch.tensor(e), w).numpy()
    ours = torch_dialect.moment_update(np.float64, s, e, w)
    other = s + w * (e - s) if w >= 0.5 else e - (e - s) * (1 - w)
    assert np.max(np.abs(ours - real) / np.spacing(np.abs(real))) <= 1.0
    agree, agree_other = np.mean(ours == real), np.mean(other == real)
    assert agree > agree_other, (f"w={w}: the dialect's branch matches torch on {agree:.1%} of elements, "
                                 f"the other branch on {agree_other:.1%}")
