"""The optax dialect (reference/dialects/optax.py) against real optax.adafactor, its
DIFFERENCES against the Keras stages, from_keras, and the gate on the optax vectors.

Real optax runs in a subprocess (jax_enable_x64 is process-global). It is not bit-exact
with the dialect, for two measured reasons: XLA on CPU contracts ``a*b + c`` into one fused
multiply-add (the EMA ``beta*v + (1-beta)*q``, ``(1-m)*u + m*mom``, ``u + wd*p``; ~24% of
such float64 results differ by an ulp from the separately rounded NumPy expression), and
XLA sums means in its own order. Each step's update therefore differs in its last bits; the
bound is ``2 * eps * steps * max|x|`` per variable (normwise), which the measured error (a
few eps after 10 steps) is well inside, while any real semantic difference (the float32
beta_2, pow vs 1/sqrt, the 1e-3 floor, the order of the tail) is >= 1e-8 relative.
"""

import json
import sys
import textwrap
from functools import partial

import numpy as np
import pytest

from reference.dialects import optimizer_class
from reference.dialects import optax as optax_dialect
from reference.dialects.keras import keras_stages
from reference.dialects.optax import DIFFERENCES, OptaxAdafactor, OptaxArguments, from_keras, stage_functions
from reference.state import Kind
from tests import background

SHAPES = [(), (7,), (5, 3), (130, 3), (2, 3, 4)]
CONFIGS = [{}, {"min_dim_size_to_factor": 1}, {"momentum": 0.9, "learning_rate": 0.1},
           {"momentum": 0.5, "dtype_momentum": "float64", "min_dim_size_to_factor": 1},
           {"weight_decay_rate": 0.1, "learning_rate": 0.3}, {"learning_rate": 0.3, "decay_rate": 0.5},
           {"clipping_threshold": None, "multiply_by_parameter_scale": False, "learning_rate": 0.01}]
STEPS = 10

#: One child runs real optax for every comparison of this module (JAX is imported once): each run
#: is {dtype, config, shape, x, grads}; x64 is on for float64 runs; the output is each run's final
#: parameter as float64.
_REAL = textwrap.dedent("""
    import json, sys
    import jax
    import jax.numpy as jnp, numpy as np, optax, ml_dtypes
    out = []
    for run in json.loads(sys.stdin.read()):
        jax.config.update("jax_enable_x64", run["dtype"] == "float64")
        cfg = dict(run["config"])
        cfg["dtype_momentum"] = jnp.dtype(cfg.get("dtype_momentum", "float32"))
        dtype = jnp.dtype(run["dtype"])
        tx = optax.adafactor(**cfg)
        p = [jnp.asarray(np.array(run["x"], dtype=np.float64).reshape(run["shape"]), dtype=dtype)]
        state = tx.init(p)
        step = jax.jit(lambda g, s, p: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
        for g in run["grads"]:
            p, state = step([jnp.asarray(np.array(g, dtype=np.float64).reshape(run["shape"]), dtype=dtype)], state, p)
        assert p[0].dtype == dtype, (p[0].dtype, dtype)
        if cfg.get("momentum") is not None:
            ema = [e for e in state if hasattr(e, "ema")][0].ema[0]
            assert ema.dtype == cfg["dtype_momentum"], (ema.dtype, cfg["dtype_momentum"])
        out.append(np.asarray(p[0], dtype=np.float64).reshape(-1).tolist())
    print(json.dumps(out))
""")


def _draw(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    grads = [rng.normal(size=shape) * (1 + k % 3) for k in range(STEPS)]
    return x, grads


def _dialect(config, x, grads, stages=None):
    """The optax dialect's final variable; ``stages(arguments)`` replaces its stages."""
    opt = OptaxAdafactor(**config)
    if stages is not None:
        opt.stages = stages(opt.arguments)
    xs = [np.array(x, dtype=np.float64)]
    opt.build(xs)
    with np.errstate(all="ignore"):
        for g in grads:
            opt.apply([g], xs)
    return xs[0]


def _run_json(dtype, config, x, grads) -> dict:
    return {"dtype": dtype, "config": config, "shape": list(x.shape), "x": x.reshape(-1).tolist(),
            "grads": [g.reshape(-1).tolist() for g in grads]}


#: (config index, shape index) of the float64 comparison runs.
_PAIRS = [(i, j) for i in range(len(CONFIGS)) for j in range(len(SHAPES))]
#: (parameter dtype, dtype_momentum, momentum): m = 0.501 is 0.5 in bfloat16, so m * mom is
#: exact there (tools/dialect_cases/optax.py says why the bfloat16 vector uses it).
MOMENTUM_RUNS = [("float64", "bfloat16", 0.501), ("float64", "float16", 0.9), ("float64", "bfloat16", 0.9),
                 ("float32", "bfloat16", 0.501), ("float32", "float16", 0.9), ("float16", "bfloat16", 0.501),
                 ("bfloat16", "bfloat16", 0.9), ("bfloat16", "float32", 0.9), ("float32", "bfloat16", 0.9)]
_MOMENTUM_INPUTS = _draw((5, 3), 3)
_RUNS = ([_run_json("float64", CONFIGS[i], *_draw(SHAPES[j], 100 * i + j)) for i, j in _PAIRS]
         + [_run_json(lane, {"momentum": m, "dtype_momentum": md, "learning_rate": 0.1}, *_MOMENTUM_INPUTS)
            for lane, md, m in MOMENTUM_RUNS])
REAL_OPTAX = background.Job("real-optax", [sys.executable, "-c", _REAL], input=json.dumps(_RUNS), timeout=600,
                            fixtures=("real_optax", "real_optax_momentum"), requires=("optax",))


@pytest.fixture(scope="module")
def real_results():
    pytest.importorskip("optax")
    done = REAL_OPTAX.result()
    assert done.returncode == 0, done.stderr[-3000:]
    return [np.array(r) for r in json.loads(done.stdout)]


@pytest.fixture(scope="module")
def real_optax(real_results):
    return dict(zip(_PAIRS, real_results))


@pytest.mark.parametrize("j", range(len(SHAPES)), ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=[json.dumps(c) for c in CONFIGS])
def test_dialect_matches_real_optax_float64(real_optax, i, j):
    shape = SHAPES[j]
    x, grads = _draw(shape, 100 * i + j)
    ours = _dialect(CONFIGS[i], x, grads).reshape(-1)
    real = real_optax[(i, j)]
    scale = np.max(np.abs(ours))
    err = np.max(np.abs(ours - real)) / scale / np.finfo(np.float64).eps
    bound = 2 * STEPS
    assert err <= bound, f"{CONFIGS[i]} {shape}: {err:.1f} eps > {bound} eps (normwise, after {STEPS} steps)"


def test_dialect_is_not_keras():
    """The comparison above can fail: the Keras stages land far outside its bound."""
    x, grads = _draw((5, 3), 0)
    ours = _dialect({}, x, grads)
    keras = _dialect({}, x, grads, stages=_keras_plus([]))
    assert np.max(np.abs(ours - keras)) / np.max(np.abs(ours)) > 1e3 * np.finfo(np.float64).eps


# ----------------------------------------------------------------------------- DIFFERENCES
def _keras_plus(names):
    """Keras's stages (with optax's eps, floor, threshold and rate) with the stages of the
    named differences taken from optax, as tools/divergence.py builds them."""
    def build(p):
        optax = stage_functions(p)
        return keras_stages(p.keras_hyperparameters(), p.weight_decay_rate).replace(
            **{n: optax[n] for name in names for n in DIFFERENCES[name][0]})
    return build


def _hybrid(names, config, x, grads):
    return _dialect(config, x, grads, stages=_keras_plus(names))


def test_every_override_belongs_to_exactly_one_difference():
    overrides = set(stage_functions(OptaxArguments()))
    listed = [n for methods, _ in DIFFERENCES.values() for n in methods]
    assert len(listed) == len(set(listed)), f"listed twice: {sorted(n for n in listed if listed.count(n) > 1)}"
    assert overrides == set(listed), (f"not in DIFFERENCES: {sorted(overrides - set(listed))}; "
                                      f"not replaced by optax: {sorted(set(listed) - overrides)}")


@pytest.mark.parametrize("config", [{}, {"momentum": 0.9, "weight_decay_rate": 0.1, "learning_rate": 0.3,
                                         "min_dim_size_to_factor": 1, "clipping_threshold": None}])
@pytest.mark.parametrize("shape", [(7,), (5, 3), (2, 3, 4)])
def test_keras_plus_all_differences_is_optax_bit_for_bit(config, shape):
    x, grads = _draw(shape, 7)
    assert np.array_equal(_hybrid(list(DIFFERENCES), config, x, grads), _dialect(config, x, grads))


#: A configuration under which each difference alone moves the Keras result.
WHERE_IT_MATTERS = {
    "factoring": ({}, (5, 3)),
    "beta_2_float32": ({}, (7,)),
    "pow_preconditioner": ({}, (5, 3)),
    "optional_clipping": ({"clipping_threshold": None}, (7,)),
    "parameter_scale": ({"multiply_by_parameter_scale": False}, (7,)),
    "update_tail": ({"momentum": 0.9}, (7,)),
}


def test_every_difference_is_covered():
    assert set(WHERE_IT_MATTERS) == set(DIFFERENCES)


@pytest.mark.parametrize("name", list(WHERE_IT_MATTERS))
def test_each_difference_alone_changes_the_keras_result(name):
    config, shape = WHERE_IT_MATTERS[name]
    x, grads = _draw(shape, 11)
    with_it = _hybrid([name], config, x, grads)
    try:
        keras = _hybrid([], config, x, grads)
    except TypeError:  # Keras's stage cannot run this configuration at all (clipping_threshold=None)
        assert np.all(np.isfinite(with_it))
        return
    assert not np.array_equal(with_it, keras), f"{name} alone changes nothing under {config} on {shape}"


# ----------------------------------------------------------------------------- configuration
def test_config_round_trips_and_is_jsonable():
    opt = OptaxAdafactor(learning_rate=0.1, momentum=0.9, weight_decay_rate=0.01)
    config = json.loads(json.dumps(opt.get_config()))
    assert OptaxAdafactor(**config).get_config() == opt.get_config()
    assert optimizer_class("optax") is OptaxAdafactor


@pytest.mark.parametrize("bad", [{"learning_rate": lambda t: 0.1}, {"weight_decay_mask": [True]},
                                 {"momentum": 0.9, "dtype_momentum": "not_a_dtype"}])
def test_refusals_name_the_value(bad):
    with pytest.raises((ValueError, TypeError)) as info:
        OptaxAdafactor(**bad)
    key = next(iter(bad)) if "dtype_momentum" not in bad else "dtype_momentum"
    assert key in str(info.value)


def test_learning_rate_none_is_one():
    assert OptaxAdafactor().learning_rate(5) == 1.0 and OptaxAdafactor(learning_rate=0.2).learning_rate(5) == 0.2


def test_from_keras():
    mapped = from_keras({"learning_rate": 0.5, "beta_2_decay": -0.6, "epsilon_1": 1e-20, "clip_threshold": 2.0,
                         "weight_decay": 0.1, "relative_step": True})
    assert mapped == {"learning_rate": 0.5, "decay_rate": 0.6, "eps": 1e-20, "clipping_threshold": 2.0,
                      "weight_decay_rate": 0.1 * 0.5}
    OptaxAdafactor(**mapped)
    assert from_keras({"learning_rate": 0.1}, closest=True)["min_dim_size_to_factor"] == 1
    for unmappable in ({"clipnorm": 1.0}, {"use_ema": True}, {"gradient_accumulation_steps": 2},
                       {"loss_scale_factor": 128.0}, {"epsilon_2": 0.1},
                       {"learning_rate": {"class_name": "ExponentialDecay"}}):
        assert from_keras(unmappable) is None, unmappable


# ----------------------------------------------------------------------------- momentum dtype
def _ml_dtype(name):
    from reference.dialects.optax import momentum_dtype

    return momentum_dtype(name)


@pytest.mark.parametrize("lane,momentum", [("float32", "bfloat16"), ("float64", "bfloat16"),
                                           ("bfloat16", "float32"), ("float16", "bfloat16"),
                                           ("float32", "float16")])
def test_momentum_ema_follows_jax_weak_typing(lane, momentum):
    """(1 - m) * u + m * mom with a Python float m: JAX rounds 1 - m to u's dtype and m to the
    momentum's, multiplies in those dtypes, and promotes only the sum (type_promotion.html,
    weak types). ml_dtypes would promote ``0.9 * bfloat16`` to float32 with m = 0.9 in float32,
    0.9 instead of 0.8984375: 1.8e-3 off real optax."""
    u_dtype, m_dtype = _ml_dtype(lane), _ml_dtype(momentum)
    rng = np.random.default_rng(5)
    u = rng.normal(size=(4, 3)).astype(u_dtype)
    mom = rng.normal(size=(4, 3)).astype(m_dtype)
    new, moments = optax_dialect.momentum_ema(OptaxArguments(momentum=0.9, dtype_momentum=momentum), u,
                                              {Kind.MOMENTUM: mom})
    first = u * u_dtype.type(1 - 0.9)  # in u's dtype
    second = mom * m_dtype.type(0.9)  # in the momentum dtype
    assert first.dtype == u_dtype and second.dtype == m_dtype
    expected = first + second  # the one promotion, as JAX's lattice (bf16 + f16 -> f32)
    # JAX's lattice joins bfloat16 and float16 at float32 (NumPy has no common type for them)
    joined = np.dtype(np.float32) if {u_dtype.name, m_dtype.name} == {"float16", "bfloat16"} else \
        np.result_type(u_dtype, m_dtype)
    assert new.dtype == joined == expected.dtype
    assert np.array_equal(new, expected)
    assert moments[Kind.MOMENTUM].dtype == m_dtype and np.array_equal(moments[Kind.MOMENTUM],
                                                                       expected.astype(m_dtype))
    if m_dtype.name == "bfloat16":  # the old promotion (m in float32, product in float32) is not this
        old = u * np.float32(1 - 0.9) + mom.astype(np.float32) * np.float32(0.9)
        assert not np.array_equal(np.asarray(new, dtype=np.float64), np.asarray(old, dtype=np.float64))


@pytest.fixture(scope="module")
def real_optax_momentum(real_results):
    x, grads = _MOMENTUM_INPUTS
    return x, grads, dict(zip(MOMENTUM_RUNS, real_results[len(_PAIRS):]))


def _momentum_error(run, x, grads, real, stages=None):
    """Normwise distance of the dialect (in the run's parameter dtype) from real optax after
    STEPS steps, in epsilons of that dtype."""
    lane, md, m = run
    dtype = _ml_dtype(lane)
    opt = OptaxAdafactor(momentum=m, dtype_momentum=md, learning_rate=0.1)
    if stages is not None:
        opt.stages = stages(opt.arguments)
    xs = [x.astype(dtype)]
    opt.build(xs)
    with np.errstate(all="ignore"):
        for g in grads:
            opt.apply([g.astype(dtype)], xs)
    ours = xs[0].astype(np.float64).reshape(-1)
    eps = float(np.finfo(np.float64).eps if lane == "float64" else __import__("ml_dtypes").finfo(dtype).eps)
    return np.max(np.abs(ours - real)) / np.max(np.abs(real)) / eps


def _old_promotion_apply(p, stages, dtype, x, x_scale, u, den, alpha, lr, moments, decays):
    """optax's update tail with the momentum EMA as NumPy/ml_dtypes promote it: python
    float * bfloat16 -> float32."""
    u = optax_dialect.scaled_update(stages, dtype, u, den, lr, x_scale)
    u = (1 - p.momentum) * u + p.momentum * moments[Kind.MOMENTUM]
    moments = {**moments, Kind.MOMENTUM: np.asarray(u).astype(_ml_dtype(p.dtype_momentum))}
    u = optax_dialect.add_decayed_weights(p, dtype, u, x_scale, decays)
    return np.asarray(x + (-1 * u)).astype(x.dtype), moments


def _old_promotion(p):
    return optax_dialect.optax_stages(p).replace(apply=partial(_old_promotion_apply, p))


@pytest.mark.parametrize("run", [r for r in MOMENTUM_RUNS if r != ("float32", "bfloat16", 0.9)],
                         ids=lambda r: f"{r[0]}-momentum_{r[1]}-{r[2]}")
def test_half_precision_momentum_matches_real_optax(real_optax_momentum, run):
    """Within 2 eps per step of the parameter dtype (FMA contraction and XLA's excess
    precision elsewhere in the step), where the old promotion was thousands of float32 eps
    (float64: ~1e12 eps) off with a bfloat16 momentum."""
    x, grads, real = real_optax_momentum
    err = _momentum_error(run, x, grads, real[run])
    assert err <= 2 * STEPS, f"{run}: {err:.2f} eps > {2 * STEPS}"
    if run[1] == "bfloat16" and run[0] in ("float64", "float32"):
        old = _momentum_error(run, x, grads, real[run], stages=_old_promotion)
        assert old > 50 * STEPS, f"{run}: the old promotion is only {old:.2f} eps off"


def test_xla_cpu_keeps_a_bfloat16_momentum_product_in_float32(real_optax_momentum):
    """Measured, not optax's semantics: with m = 0.9 (not exact in bfloat16) XLA on CPU does not
    round ``m * mom`` to bfloat16 where the product feeds a float32 sum
    (``xla_allow_excess_precision``, on by default), so real optax's float32 lane is hundreds of
    eps away from JAX's semantics, while its float64 lane rounds as JAX says. This is why the
    bfloat16-momentum vector uses m = 0.501 (0.5 in bfloat16: the product is exact). If this
    test starts failing, XLA rounds now and the vector may use m = 0.9."""
    if jax_platform_is_not_cpu():
        pytest.skip("measured on XLA:CPU")
    x, grads, real = real_optax_momentum
    assert _momentum_error(("float64", "bfloat16", 0.9), x, grads, real[("float64", "bfloat16", 0.9)]) <= 2 * STEPS
    assert _momentum_error(("float32", "bfloat16", 0.9), x, grads, real[("float32", "bfloat16", 0.9)]) > 50 * STEPS


def jax_platform_is_not_cpu() -> bool:
    """The subprocesses above run on JAX's default backend: CPU unless a GPU is visible."""
    import os

    return bool(os.environ.get("CUDA_VISIBLE_DEVICES")) and os.environ.get("JAX_PLATFORMS", "") != "cpu"


# ----------------------------------------------------------------------------- the gate
_GATE = [sys.executable, "-m", "conformance", "run", "--adapter", "conformance.adapters.optax_adapter:OptaxAdapter",
         "--vectors", "optax/"]
#: Teacher-forced here (the free-running mode of the same lane is `make check`'s).
GATE = background.Job("optax-gate", _GATE + ["--mode", "teacher"], timeout=900, fixtures=("optax_gate",),
                      requires=("optax",))
GATE_HALF = background.Job("optax-gate-half", _GATE + ["--dtype", "float16,bfloat16", "--mode", "teacher"],
                           timeout=900, fixtures=("optax_gate_half",), requires=("optax",))


@pytest.fixture(scope="module")
def optax_gate():
    pytest.importorskip("optax")
    return GATE.result()


@pytest.fixture(scope="module")
def optax_gate_half():
    pytest.importorskip("optax")
    return GATE_HALF.result()


def test_gate_passes_on_the_optax_vectors(optax_gate):
    assert optax_gate.returncode == 0, optax_gate.stdout[-4000:] + optax_gate.stderr[-2000:]


def test_gate_passes_on_the_optax_vectors_in_half_precision(optax_gate_half):
    """float16 and bfloat16 (teacher-forced): optax keeps its statistics in the parameter
    dtype and the dialect's honest half-precision lanes bound it."""
    done = optax_gate_half
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "optax      float16   teacher" in done.stdout and "optax      bfloat16  teacher" in done.stdout
