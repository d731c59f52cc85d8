"""The vectors that leave arguments out (flag DEFAULT_ARGUMENTS) and the clipnorm vectors whose
gradient squares underflow (flag SQUARE_UNDERFLOW): an implementation with a wrong constructor
default, or with a norm that is not 0 when every square underflows, fails the gate on them.

Each wrong default is planted in a copy of the reference adapter: the vector's config gets the
wrong value for the key it leaves out, exactly what an implementation whose own default is wrong
computes. A few percent off is enough, in float64 and in float32, teacher-forced."""


import numpy as np
import pytest

from conformance import applicability, runner
from conformance.adapters.reference import ReferenceAdapter
from conformance.vector import as_vector
from conformance.tolerance import Policy
from reference import Adafactor
from tests import helpers
from tests.helpers import VECTORS
KERAS_DEFAULTS = {name: p.default for name, p in __import__("inspect").signature(Adafactor).parameters.items()
                  if name != "kwargs"}

#: A wrong default for every Keras argument whose default a result can show, a few percent off
#: where the argument is a number.
WRONG_KERAS_DEFAULTS = {
    "learning_rate": 0.00101,
    "beta_2_decay": -0.808,
    "epsilon_1": 1.1e-30,
    "epsilon_2": 1.01e-3,
    "clip_threshold": 1.01,
    "weight_decay": 0.004,  # AdamW's
    "clipnorm": 1.0,
    "clipvalue": 1.0,
    "global_clipnorm": 1.0,
    "ema_momentum": 0.991,
    "ema_overwrite_frequency": 2,
    "loss_scale_factor": 2.0,
    "gradient_accumulation_steps": 2,
}
#: Defaults no result can show, with the reason.
INVISIBLE_KERAS_DEFAULTS = {
    "relative_step": "a no-op in Keras (SPEC.md Q1): min(min(lr, s), s) == min(lr, s)",
    "name": "not numeric",
    "use_ema": "an EMA nobody reads changes no variable (without an overwrite frequency); the gate grades the "
               "state the golden vector has",
}
WRONG_DIALECT_DEFAULTS = {
    "torch": {"lr": 0.0101, "beta2_decay": -0.808, "eps": [1e-30, 1e-3], "d": 1.01, "weight_decay": 1e-4,
              "maximize": True},
    "optax": {"learning_rate": 1.01, "min_dim_size_to_factor": 3, "decay_rate": 0.808, "decay_offset": 1,
              "multiply_by_parameter_scale": False, "clipping_threshold": 1.01, "momentum": 0.1,
              "weight_decay_rate": 1e-4, "eps": 1.1e-30},
    "transformers": {"relative_step": False, "eps": [1.1e-30, 1e-3], "clip_threshold": 1.01,
                     "decay_rate": -0.808, "beta1": 0.1, "weight_decay": 1e-4, "scale_parameter": False,
                     "warmup_init": True},
    "pytorch_optimizer": {"betas": [0.8, 0.999], "decay_rate": -0.808, "weight_decay": 1e-4, "clip_threshold": 1.01,
                          "scale_parameter": False, "relative_step": False, "warmup_init": True, "eps1": 1e-29,
                          "eps2": 1.01e-3, "maximize": True},
    "timm_bigvision": {"lr": 1.01, "min_dim_size_to_factor": 2, "decay_rate": 0.808, "decay_offset": 1, "beta2_cap": 0.5,
                       "momentum": 0.1, "eps": 1e-7, "weight_decay": 1e-4,
                       "clipping_threshold": 0.5},
    "timm": {"lr": 0.01, "eps": 1e-7, "clip_threshold": 1.01, "decay_rate": -0.808,
             "betas": [0.9, 0.999], "weight_decay": 1e-4, "scale_parameter": False, "warmup_init": True,
             "min_dim_size_to_factor": 1},
}


@pytest.fixture(scope="module")
def corpus():
    return helpers.select()


@pytest.fixture(scope="module")
def policy():
    return Policy.load()


def _defaults_vectors(corpus, dialect):
    return [(path, v) for path, v in corpus if "DEFAULT_ARGUMENTS" in v.flags and v.dialect == dialect]


class WrongDefault(ReferenceAdapter):
    """The reference with one wrong constructor default (used where a vector leaves the key out)."""

    def __init__(self, key, value):
        super().__init__()
        self.key, self.value = key, value

    def create(self, vector, dtype, device):
        if self.key not in vector.config:
            vector = as_vector({**vector.raw, "config": {**vector.config, self.key: self.value}}, file=vector.file,
                               dialect=vector.dialect)
        return super().create(vector, dtype, device)


def test_default_vectors_leave_arguments_out(corpus):
    keras = _defaults_vectors(corpus, "keras")
    assert any(v.config == {} for _, v in keras), "one Keras vector with an empty config"
    for _, v in keras:
        assert set(v.config) < set(KERAS_DEFAULTS), v.id
        assert v.result == "valid", v.id
    for dialect in WRONG_DIALECT_DEFAULTS:
        assert any(v.config == {} for _, v in _defaults_vectors(corpus, dialect)), dialect
    # every other valid vector states every argument
    full = [v for _, v in corpus if v.dialect == "keras" and v.result != "invalid"
            and "DEFAULT_ARGUMENTS" not in v.flags]
    assert full and all(set(v.config) == set(KERAS_DEFAULTS) for v in full)


def test_every_keras_default_is_checked_or_explained():
    assert set(WRONG_KERAS_DEFAULTS) | set(INVISIBLE_KERAS_DEFAULTS) == set(KERAS_DEFAULTS)
    for key, value in WRONG_KERAS_DEFAULTS.items():
        assert value != KERAS_DEFAULTS[key], key


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reference_passes_default_vectors(corpus, policy, dtype):
    chosen = [e for d in ("keras", *WRONG_DIALECT_DEFAULTS) for e in _defaults_vectors(corpus, d)]
    report = runner.run_lane(ReferenceAdapter(), chosen, VECTORS, dtype, "cpu", "teacher", policy, [])
    assert report.conforms and report.counts()["pass"] >= len(chosen) - 1, report.counts()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("key", sorted(WRONG_KERAS_DEFAULTS))
def test_wrong_keras_default_fails(corpus, policy, key, dtype):
    chosen = _defaults_vectors(corpus, "keras")
    report = runner.run_lane(WrongDefault(key, WRONG_KERAS_DEFAULTS[key]), chosen, VECTORS, dtype, "cpu",
                             "teacher", policy, [])
    assert not report.conforms, f"a default {key}={WRONG_KERAS_DEFAULTS[key]!r} passes the {dtype} gate"


@pytest.mark.parametrize("dialect,key", [(d, k) for d, table in WRONG_DIALECT_DEFAULTS.items() for k in table])
def test_wrong_dialect_default_fails(corpus, policy, dialect, key):
    chosen = _defaults_vectors(corpus, dialect)
    assert chosen
    value = WRONG_DIALECT_DEFAULTS[dialect][key]
    report = runner.run_lane(WrongDefault(key, value), chosen, VECTORS, "float64", "cpu", "teacher", policy, [])
    assert not report.conforms, f"{dialect}: a default {key}={value!r} passes the gate"


# ----------------------------------------------------------------------------- underflowing norm
def test_square_underflow_vectors(corpus):
    ids = {v.id: v for _, v in corpus if "SQUARE_UNDERFLOW" in v.flags}
    for key in ("clipnorm", "global_clipnorm"):
        v = ids[f"special_values/{key}_squares_underflow"]
        assert v.result == "valid" and 0 < v.config[key] < 1
        g = v.steps[0].grads[0]
        assert np.all(g != 0) and np.sum(g * g) == 0  # every square underflows in float64
        # lower precision cannot hold these gradients: those lanes skip with the reason
        for dtype in ("float32", "float16", "bfloat16"):
            assert "underflow" in applicability.skip_reason(v, dtype)


def _norm_of_zero_is_one(g, clipnorm):
    """A port that takes sqrt of the "safe" sum of squares (1 where it is 0) as the norm."""
    l2sum = np.sum(np.square(g), keepdims=True)
    l2norm = np.sqrt(np.where(l2sum > 0, l2sum, 1.0))
    return (g * clipnorm) / np.maximum(l2norm, clipnorm)


@pytest.mark.parametrize("key,wrong", [("clipnorm", _norm_of_zero_is_one)])
def test_zero_norm_port_fails(corpus, policy, monkeypatch, key, wrong):
    from reference import clipping

    chosen = [(p, v) for p, v in corpus if v.id == f"special_values/{key}_squares_underflow"]
    assert runner.run_lane(ReferenceAdapter(), chosen, VECTORS, "float64", "cpu", "teacher", policy, []).conforms
    monkeypatch.setattr(clipping, "clip_by_norm", wrong)
    report = runner.run_lane(ReferenceAdapter(), chosen, VECTORS, "float64", "cpu", "teacher", policy, [])
    assert not report.conforms
