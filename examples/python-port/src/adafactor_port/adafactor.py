"""Adafactor as ``keras.optimizers.Adafactor`` computes it (Keras 3), in NumPy, in the
variables' own dtype.

A subset of Keras: the Adafactor step itself, a float or zero-argument callable learning
rate, ``None`` gradients. Not implemented (the port's conformance expectation file skips the
vectors that use them, each with its reason): gradient clipping, weight decay, EMA, gradient
accumulation, loss scaling, learning-rate schedule objects.
"""

from __future__ import annotations

import numpy as np


def rms(x: np.ndarray):
    """Root mean square over every element, in x's dtype."""
    return np.sqrt(np.mean(np.square(x)))


class Adafactor:
    """``Adafactor(learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3,
    clip_threshold=1.0, relative_step=True)``; ``build(variables)`` once, then
    ``apply(grads, variables)`` per step, updating the variables (NumPy arrays) in place."""

    def __init__(self, learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3,
                 clip_threshold=1.0, relative_step=True, name="adafactor", **unknown):
        if unknown:
            raise ValueError(f"Argument(s) not recognized: {unknown}")
        if isinstance(learning_rate, bool) or not (isinstance(learning_rate, float) or callable(learning_rate)):
            raise ValueError(f"learning_rate must be a float or a zero-argument callable, got {learning_rate!r}")
        self.learning_rate = learning_rate
        self.beta_2_decay = beta_2_decay
        self.epsilon_1 = epsilon_1
        self.epsilon_2 = epsilon_2
        self.clip_threshold = clip_threshold
        self.relative_step = relative_step  # Keras applies min(lr, 1/sqrt(t)) whatever its value
        self.name = name
        self.iterations = 0
        self.r, self.c, self.v = [], [], []

    def build(self, variables) -> None:
        """Zero statistics per variable: ``r`` and ``c`` for the last two axes of a variable
        with two or more axes (None otherwise), ``v`` with the variable's shape."""
        self.iterations = 0
        self.r, self.c, self.v = [], [], []
        for x in variables:
            factored = x.ndim >= 2
            self.r.append(np.zeros(x.shape[:-1], x.dtype) if factored else None)
            self.c.append(np.zeros(x.shape[:-2] + x.shape[-1:], x.dtype) if factored else None)
            self.v.append(np.zeros_like(x))

    def apply(self, grads, variables) -> None:
        if not grads:
            return
        pairs = [(i, g) for i, g in enumerate(grads) if g is not None]
        if not pairs:
            raise ValueError("No gradients provided for any variable.")
        lr = self.learning_rate() if callable(self.learning_rate) else self.learning_rate
        with np.errstate(all="ignore"):  # NaN and inf propagate as in Keras
            for i, g in pairs:
                self._step(i, g, variables[i], lr)
        self.iterations += 1

    def _step(self, i, g, x, lr) -> None:
        dt = x.dtype.type
        one = dt(1)
        t = dt(self.iterations + 1)
        rho = np.minimum(dt(lr), one / np.sqrt(t))
        alpha = np.maximum(dt(self.epsilon_2), rms(x)) * rho
        q = np.square(g) + dt(self.epsilon_1)
        beta = one - np.power(t, dt(self.beta_2_decay))
        r, c, v = self.r[i], self.c[i], self.v[i]
        if x.ndim >= 2:
            r[...] = beta * r + (one - beta) * np.mean(q, axis=-1)
            c[...] = beta * c + (one - beta) * np.mean(q, axis=-2)
            v[...] = (r / np.mean(r, axis=-1, keepdims=True))[..., :, None] * c[..., None, :]
        else:
            v[...] = beta * v + (one - beta) * q
        u = g / np.sqrt(v)
        u_hat = u / np.maximum(one, rms(u) / dt(self.clip_threshold))
        x -= alpha * u_hat
