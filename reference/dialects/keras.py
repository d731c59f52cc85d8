"""The Keras step as named stages: every stage is the spec's own stage function
(reference/adafactor_step.py; the weight decay is reference/optimizer.py's), so
``keras_stages`` computes what ``reference.Adafactor`` computes, bit for bit
(tests/reference/test_dialects.py). The other dialects start from these stages and replace the ones
their framework computes differently; the divergence report (tools/divergence.py) replaces
one framework difference at a time. The spec remains ``reference.Adafactor``, which has every
argument; ``KerasDialect`` drives these stages with the arguments that reach the step (a
float learning rate, ``beta_2_decay``, ``epsilon_1``, ``epsilon_2``, ``clip_threshold``,
``relative_step``, ``weight_decay``)."""

from __future__ import annotations

from functools import partial
from typing import Optional

import numpy as np

from reference import adafactor_step as spec
from reference import reductions
from reference.adafactor_step import Hyperparameters
from reference.dialects.base import DialectOptimizer, Stages, statistic_zeros
from reference.optimizer import apply_weight_decay
from reference.state import Kind


def initial_moments(stages: Stages, x: np.ndarray) -> dict:
    """Zero r, c and a full-size v for a factored variable, v otherwise (adafactor.py:84-138;
    Keras keeps V too, the other dialects keep ``statistic_zeros`` only)."""
    return {**statistic_zeros(stages, x), Kind.V: np.zeros_like(x)}


def relative_step(hyper: Hyperparameters, dtype, t: int, lr):
    """rho_t = min(lr, 1/sqrt(t)) (adafactor.py:151-152, 158; relative_step is a no-op)."""
    return spec.relative_step_size(dtype(lr), spec.inverse_sqrt_step(dtype(t)))


def parameter_scale(hyper: Hyperparameters, dtype, x: np.ndarray):
    """max(eps2, RMS(x)) (adafactor.py:159)."""
    return spec.parameter_scale(spec.rms(x), dtype(hyper.epsilon_2))


def weight_decay(rate: Optional[float], dtype, x: np.ndarray, lr, decays: bool) -> np.ndarray:
    """x - x*wd*lr with the raw learning rate, before the step (base_optimizer.py:952-959)."""
    if rate is None or not decays:
        return x
    return apply_weight_decay(x, rate, lr)


def gradient_square(hyper: Hyperparameters, dtype, g: np.ndarray) -> np.ndarray:
    """g*g + eps1: epsilon_1 inside the square, before any mean (adafactor.py:160)."""
    return spec.gradient_square(g, dtype(hyper.epsilon_1))


def beta_2(hyper: Hyperparameters, dtype, t: int) -> tuple:
    """(beta_2, 1 - beta_2) with beta_2 = 1 - t**beta_2_decay, both as written (adafactor.py:161)."""
    return spec.beta_2(dtype(t), hyper.beta_2_decay)


def moment_update(dtype, old, new, beta):
    """beta * old + (1 - beta) * new (adafactor.py:165-177, 199-205)."""
    return spec.moment_update(old, new, *beta)


def axis_mean(dtype, q: np.ndarray, axis: int) -> np.ndarray:
    """mean(q, axis): the row or column statistic of q (adafactor.py:168, 174)."""
    return reductions.mean(q, axis=axis)


def second_moment(stages: Stages, dtype, q: np.ndarray, moments: dict, beta, axes) -> dict:
    """``adafactor_step.second_moment`` through the stages: the EMAs of the factored
    statistics and V rebuilt from them (Algorithm 4), or the EMA of q (Algorithm 5)."""
    if axes is None:
        return {**moments, Kind.V: np.asarray(stages.moment_update(dtype, moments[Kind.V], q, beta))}
    row, col = axes
    r = stages.moment_update(dtype, moments[Kind.R], stages.axis_mean(dtype, q, col), beta)
    c = stages.moment_update(dtype, moments[Kind.C], stages.axis_mean(dtype, q, row), beta)
    return {**moments, Kind.R: r, Kind.C: c, Kind.V: stages.estimate(dtype, r, c, axes)}


def estimate(dtype, r: np.ndarray, c: np.ndarray, axes) -> np.ndarray:
    """V = (r / mean(r over rows)) (outer) c: Keras divides first (adafactor.py:178-183)."""
    return spec.estimate(r, c, axes)


def precondition(stages: Stages, dtype, g: np.ndarray, moments: dict, axes) -> np.ndarray:
    """U = g / sqrt(V) (adafactor.py:209)."""
    return spec.precondition(g, moments[Kind.V])


def clip(hyper: Hyperparameters, dtype, u: np.ndarray) -> tuple:
    """(U, max(1, RMS(U) / d)) (adafactor.py:210-213)."""
    return u, spec.clip_denominator(spec.rms(u), hyper.clip_threshold, dtype)


def apply(stages: Stages, dtype, x, x_scale, u, den, alpha, lr, moments: dict, decays: bool) -> tuple:
    """x - alpha * (U / den) (adafactor.py:214). Returns (new x, moments)."""
    return np.asarray(spec.apply_update(x, alpha, spec.clip_update(u, den))), moments


def keras_stages(hyper: Hyperparameters = Hyperparameters(), weight_decay_rate: Optional[float] = None) -> Stages:
    """Keras 3.15.1's step (adafactor.py:143-214) and weight decay (base_optimizer.py:952-959)."""
    return Stages(
        factored_axes=spec.factored_axes,
        initial_moments=initial_moments,
        relative_step=partial(relative_step, hyper),
        parameter_scale=partial(parameter_scale, hyper),
        scale_after_decay=True,  # the decay runs first, in the base optimizer
        weight_decay=partial(weight_decay, weight_decay_rate),
        gradient_square=partial(gradient_square, hyper),
        beta_2=partial(beta_2, hyper),
        moment_update=moment_update,
        axis_mean=axis_mean,
        second_moment=second_moment,
        estimate=estimate,
        precondition=precondition,
        clip=partial(clip, hyper),
        apply=apply,
    )


class KerasDialect(DialectOptimizer):
    """``keras_stages`` driven by ``DialectOptimizer`` with the arguments of
    ``keras.optimizers.Adafactor`` that reach the step."""

    dialect = "keras"
    framework = "keras.optimizers.Adafactor"
    spec = "keras 3.15.1, keras/src/optimizers/adafactor.py (reference.Adafactor is the spec)"

    def __init__(self, learning_rate: float = 0.001, beta_2_decay: float = -0.8, epsilon_1: float = 1e-30,
                 epsilon_2: float = 1e-3, clip_threshold: float = 1.0, relative_step: bool = True,
                 weight_decay: Optional[float] = None):
        super().__init__()
        if not isinstance(learning_rate, float):
            raise ValueError(f"KerasDialect: learning_rate must be a float, got {learning_rate!r} "
                             "(schedules and callables: use reference.Adafactor)")
        self.config = dict(learning_rate=learning_rate, beta_2_decay=beta_2_decay, epsilon_1=epsilon_1,
                           epsilon_2=epsilon_2, clip_threshold=clip_threshold, relative_step=relative_step,
                           weight_decay=weight_decay)
        hyper = Hyperparameters(beta_2_decay=beta_2_decay, epsilon_1=epsilon_1, epsilon_2=epsilon_2,
                                clip_threshold=clip_threshold, relative_step=relative_step)
        self.stages = keras_stages(hyper, weight_decay)
        self.rms_floor = epsilon_2
        self.has_weight_decay = bool(weight_decay)

    def learning_rate(self, t: int) -> float:
        return self.config["learning_rate"]

    def get_config(self) -> dict:
        return dict(self.config)

