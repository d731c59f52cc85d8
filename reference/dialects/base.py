"""The Keras Adafactor step cut into named stages, so that a framework's dialect is the list
of stages it does differently.

``KerasStage`` computes exactly what ``reference.adafactor_step.update_step`` computes,
plus Keras's weight decay (which the spec runs in ``reference/optimizer.py`` just before
the step, base_optimizer.py:952-959), bit for bit (tests/test_dialects.py checks it on
every shape class). It exists for the dialects: ``reference/dialects/torch.py``,
``optax.py`` and ``transformers.py`` subclass it and override only the stages where their
framework differs, each override pointing at the source line it mirrors. The spec itself
stays ``reference.Adafactor``.

One step on one variable, in this order (Keras's names; each line is a method):

    rho     = relative_step(t, lr)                 min(lr, 1/sqrt(t))
    x_scale = x                                    the variable the step size is taken on
    x       = decay(x, lr, ...)                    Keras: x - x*wd*lr, before the step
    alpha   = parameter_scale(x or x_scale) * rho  max(eps2, RMS(x)); Keras: after the decay
    q       = gradient_square(g)                   g*g + eps1
    beta    = beta_2(t)                            (1 - t**decay, 1 - (1 - t**decay))
    slots   = second_moment(q, slots, beta)        EMA of row/column means or of q
    u       = precondition(g, slots)               g / sqrt(V)
    u, den  = clip(u)                              den = max(1, RMS(u)/d)
    x       = apply(x, x_scale, u, den, alpha, lr, slots)   x - alpha * (u / den)

Slots are a dict of arrays. ``r`` is the statistic that reduced the *column* axis (Keras:
the last axis, shape ``x.shape[:-1]``), ``c`` the one that reduced the *row* axis (Keras:
axis -2); ``v`` is the full second moment where the dialect keeps one; ``momentum`` a
first moment where the dialect has one. ``factored_axes(shape)`` says which axes are the
row and column axes, or None for an unfactored variable.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from reference import reductions
from reference.adafactor_step import rms


class KerasStage:
    """Keras 3.15.1 ``Adafactor.update_step`` (adafactor.py:143-214) and its weight decay
    (base_optimizer.py:952-959), as stages. ``hyper`` holds Keras's argument names."""

    #: Keras takes RMS(x) after weight decay (the decay runs first, in the base optimizer).
    scale_after_decay = True
    #: The scalar type of the variable being stepped (set by ``step``): every constant is
    #: cast to it, as Keras casts every scalar to the variable dtype (adafactor.py:146-150),
    #: so the same stages run honestly in float32 and below.
    f = np.float64

    def __init__(self, beta_2_decay: float = -0.8,
                 epsilon_1: float = 1e-30, epsilon_2: float = 1e-3, clip_threshold: float = 1.0,
                 weight_decay: Optional[float] = None):
        self.beta_2_decay = beta_2_decay
        self.epsilon_1 = epsilon_1
        self.epsilon_2 = epsilon_2
        self.clip_threshold = clip_threshold
        self.weight_decay = weight_decay

    # ------------------------------------------------------------------ layout
    def factored_axes(self, shape) -> Optional[tuple[int, int]]:
        """(row axis, column axis) of a factored variable, or None. Keras: the last two
        axes of every variable with two or more axes (adafactor.py:100, 163)."""
        return (len(shape) - 2, len(shape) - 1) if len(shape) >= 2 else None

    def statistic_zeros(self, x: np.ndarray) -> dict:
        """Zero second-moment statistics: r and c for a factored variable, v otherwise."""
        axes = self.factored_axes(x.shape)
        if axes is None:
            return {"v": np.zeros_like(x)}
        row, col = axes
        return {"r": np.zeros(np.delete(x.shape, col), dtype=x.dtype),
                "c": np.zeros(np.delete(x.shape, row), dtype=x.dtype)}

    def init_slots(self, x: np.ndarray) -> dict:
        """Zero state (adafactor.py:84-138): r, c and a full-size v for factored variables
        (Keras keeps V too; the other dialects keep ``statistic_zeros`` only)."""
        return {**self.statistic_zeros(x), "v": np.zeros_like(x)}

    # ------------------------------------------------------------------ step size
    def relative_step(self, t: int, lr: float):
        """rho_t = min(lr, 1/sqrt(t)) (adafactor.py:151-152, 158; relative_step is a no-op)."""
        one = self.f(1.0)
        return np.minimum(self.f(lr), one / np.sqrt(self.f(t)))

    def parameter_scale(self, x: np.ndarray):
        """max(eps2, RMS(x)) (adafactor.py:159)."""
        return np.maximum(self.f(self.epsilon_2), rms(x))

    def decay(self, x: np.ndarray, lr: float, decayed: bool) -> np.ndarray:
        """x - x*wd*lr with the raw learning rate, before the step (base_optimizer.py:952-959)."""
        if self.weight_decay is None or not decayed:
            return x
        return np.asarray(x - x * self.f(self.weight_decay) * self.f(lr))

    # ------------------------------------------------------------------ second moment
    def gradient_square(self, g: np.ndarray) -> np.ndarray:
        """g*g + eps1: epsilon_1 inside the square, before any mean (adafactor.py:160)."""
        return np.square(g) + self.f(self.epsilon_1)

    def beta_2(self, t: int):
        """(beta_2, 1 - beta_2) with beta_2 = 1 - t**beta_2_decay, both as written
        (adafactor.py:161)."""
        one = self.f(1.0)
        beta = one - self.f(float(t) ** self.beta_2_decay)
        return beta, one - beta

    def moment_update(self, old: np.ndarray, new: np.ndarray, beta):
        """beta * old + (1 - beta) * new (adafactor.py:165-177, 199-205)."""
        b, one_minus_b = beta
        return b * old + one_minus_b * new

    def axis_mean(self, q: np.ndarray, axis: int) -> np.ndarray:
        """mean(q, axis): the row or column statistic of q (adafactor.py:168, 174)."""
        return reductions.mean(q, axis=axis)

    def second_moment(self, q: np.ndarray, slots: dict, beta, axes) -> dict:
        """The EMA of the factored statistics and V (Algorithm 4), or of q (Algorithm 5)."""
        if axes is None:
            return {**slots, "v": np.asarray(self.moment_update(slots["v"], q, beta))}
        row, col = axes
        r = self.moment_update(slots["r"], self.axis_mean(q, col), beta)
        c = self.moment_update(slots["c"], self.axis_mean(q, row), beta)
        return {**slots, "r": r, "c": c, "v": self.estimate(r, c, axes)}

    def estimate(self, r: np.ndarray, c: np.ndarray, axes) -> np.ndarray:
        """V = (r / mean(r over rows)) (outer) c: Keras divides first (adafactor.py:178-183)."""
        row, col = axes
        row_in_r = row if row < col else row - 1  # r lacks the column axis
        return np.expand_dims(r / reductions.mean(r, axis=row_in_r, keepdims=True), col) * np.expand_dims(c, row)

    def precondition(self, g: np.ndarray, slots: dict, axes) -> np.ndarray:
        """U = g / sqrt(V) (adafactor.py:209)."""
        return g / np.sqrt(slots["v"])

    # ------------------------------------------------------------------ update
    def clip(self, u: np.ndarray):
        """den = max(1, RMS(U) / d) (adafactor.py:210-213); returns (U, den)."""
        return u, np.maximum(self.f(1.0), rms(u) / self.f(self.clip_threshold))

    def apply(self, x, x_scale, u, den, alpha, lr, slots, decayed: bool):
        """x - alpha * (U / den) (adafactor.py:214). Returns (new x, slots)."""
        return np.asarray(x - alpha * (u / den)), slots

    # ------------------------------------------------------------------ the step
    def step(self, x: np.ndarray, g: np.ndarray, slots: dict, t: int, lr: float,
             decayed: bool = True) -> tuple[np.ndarray, dict]:
        """One step on one variable at 1-based step ``t``; ``decayed``: whether weight decay
        applies to this variable. Returns (new x, new slots); inputs are not modified."""
        self.f = x.dtype.type
        rho = self.relative_step(t, lr)
        x_scale = x
        x = self.decay(x, lr, decayed)
        alpha = self.parameter_scale(x if self.scale_after_decay else x_scale) * rho
        axes = self.factored_axes(x.shape)
        q = self.gradient_square(g)
        slots = self.second_moment(q, slots, self.beta_2(t), axes)
        u = self.precondition(g, slots, axes)
        u, den = self.clip(u)
        return self.apply(x, x_scale, u, den, alpha, lr, slots, decayed)


class DialectOptimizer:
    """A framework's Adafactor over a list of float64 NumPy variables, stepped by a stage
    class. Subclasses take their framework's own constructor arguments and defaults, build
    ``self.stage`` from them and say what the learning rate is at step ``t``.

    The state is ``iterations`` (applies so far; every dialect's step counter is
    ``iterations + 1`` on the next apply) and one slots dict per variable. Every variable
    needs a gradient on every apply: the frameworks differ in how they count steps of a
    parameter without one (per-parameter counters in torch and transformers), which the
    version-1 vector format does not record.
    """

    dialect = "keras-stages"
    #: What the dialect mirrors, for vector files and reports, e.g.
    #: framework = "torch.optim.Adafactor", spec = "torch 2.13.0, torch/optim/_adafactor.py".
    framework = "?"
    spec = "?"
    stage: KerasStage

    def __init__(self):
        self.iterations = 0
        self.slots: Optional[list] = None
        self.decayed: Optional[list] = None

    # subclasses --------------------------------------------------------------------
    def learning_rate(self, t: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    # driver ------------------------------------------------------------------------
    def build(self, variables, decayed=None) -> None:
        """Zero state for ``variables``; ``decayed[i]`` False excludes variable i from
        weight decay (where the dialect has a mask)."""
        self.slots = [self.stage.init_slots(np.asarray(x)) for x in variables]
        self.decayed = list(decayed) if decayed is not None else [True] * len(variables)
        self.iterations = 0

    def apply(self, grads, variables) -> None:
        """One step on every variable; ``variables`` are float64 arrays updated in place."""
        if self.slots is None:
            self.build(variables)
        if len(grads) != len(variables):
            raise ValueError(f"{self.dialect}: {len(grads)} gradients for {len(variables)} variables")
        for i, g in enumerate(grads):
            if g is None:
                raise ValueError(f"{self.dialect}: variable {i} has no gradient; dialect vectors "
                                 "give every variable a gradient on every step")
        t = self.iterations + 1
        lr = self.learning_rate(t)
        new = []
        for i, (x, g) in enumerate(zip(variables, grads)):
            x = np.asarray(x)
            new_x, self.slots[i] = self.stage.step(x, np.asarray(g).astype(x.dtype, copy=False), self.slots[i], t, lr,
                                                   self.decayed[i])
            new.append(new_x)
        for x, value in zip(variables, new):  # all or nothing: assign after every step succeeded
            x[...] = value
        self.iterations = t
