"""A dialect is the Keras step with named stages swapped.

``Stages`` holds one Adafactor step on one variable as named stage functions, in Keras's
order; ``Stages.step`` composes them. ``reference/dialects/keras.py`` fills every stage with
the spec's own stage functions (``reference/adafactor_step.py``), so the Keras stages are the
spec bit for bit (tests/reference/test_dialects.py); every other dialect is
``keras_stages(...).replace(<stage>=<its function>, ...)`` with the stages its framework
computes differently, each function citing the source line it mirrors, as optax builds an
optimizer by chaining transforms. "Keras plus one framework difference" (tools/divergence.py)
is the same ``replace`` with fewer stages.

One step on one variable at 1-based step ``t`` with learning rate ``lr``, in this order:

    rho     = relative_step(dtype, t, lr)                 min(lr, 1/sqrt(t))
    x_scale = x                                           the variable the step size may be taken on
    x       = weight_decay(dtype, x, lr, decays)          Keras: x - x*wd*lr, before the step
    alpha   = parameter_scale(dtype, x or x_scale) * rho  max(eps2, RMS(x)); Keras: after the decay
    q       = gradient_square(dtype, g)                   g*g + eps1
    beta    = beta_2(dtype, t)                            Keras: (1 - t**decay, 1 - (1 - t**decay))
    moments = second_moment(stages, dtype, q, moments, beta, axes)   EMAs of row/column means or of q
    u       = precondition(stages, dtype, g, moments, axes)          g / sqrt(V)
    u, den  = clip(dtype, u)                              den = max(1, RMS(u)/d)
    x, moments = apply(stages, dtype, x, x_scale, u, den, alpha, lr, moments, decays)  x - alpha*(u/den)

``dtype`` is the variable's scalar type: every constant is cast to it, as Keras casts every
scalar to the variable dtype (adafactor.py:146-150), so the same stages run honestly in
float32 and below. Stages that combine other stages (``initial_moments``, ``second_moment``,
``precondition``, ``apply``) receive the composed ``Stages`` first and call the others
through it, so swapping a leaf (``moment_update``, ``axis_mean``, ``estimate``,
``parameter_scale``) reaches them too. A stage's own arguments (eps1, a momentum, ...) are
bound to it with ``functools.partial`` when the dialect builds its stages.

``moments`` is a dict {Kind: array} for one variable: ``Kind.R`` is the statistic that
reduced the *column* axis (Keras: the last axis, shape ``x.shape[:-1]``), ``Kind.C`` the one
that reduced the *row* axis (Keras: axis -2); ``Kind.V`` the full second moment where the
dialect keeps one; ``Kind.MOMENTUM`` a first moment where the dialect has one.
``factored_axes(shape)`` says which axes are the row and column axes, or None for an
unfactored variable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from reference.state import Kind, State


@dataclass(frozen=True)
class Stages:
    """The named stages of one step on one variable (signatures in the module docstring)."""

    factored_axes: Callable  # (shape) -> (row, col) | None
    initial_moments: Callable  # (stages, x) -> {Kind: zeros}
    relative_step: Callable  # (dtype, t, lr) -> rho
    parameter_scale: Callable  # (dtype, x) -> scale
    scale_after_decay: bool  # alpha from the decayed variable (Keras) or the one passed in
    weight_decay: Callable  # (dtype, x, lr, decays) -> x
    gradient_square: Callable  # (dtype, g) -> q
    beta_2: Callable  # (dtype, t) -> beta, in whatever form moment_update takes
    moment_update: Callable  # (dtype, old, new, beta) -> new EMA
    axis_mean: Callable  # (dtype, q, axis) -> row or column statistic
    second_moment: Callable  # (stages, dtype, q, moments, beta, axes) -> moments
    estimate: Callable  # (dtype, r, c, axes) -> V
    precondition: Callable  # (stages, dtype, g, moments, axes) -> U
    clip: Callable  # (dtype, u) -> (u, denominator)
    apply: Callable  # (stages, dtype, x, x_scale, u, den, alpha, lr, moments, decays) -> (x, moments)

    def replace(self, **stages) -> "Stages":
        """These stages with the named ones swapped (``dataclasses.replace``; an unknown
        name is a TypeError naming it)."""
        return dataclasses.replace(self, **stages)

    def step(self, x: np.ndarray, g: np.ndarray, moments: dict, t: int, lr, decays: bool = True) -> tuple:
        """One step on one variable at 1-based step ``t``; ``decays``: whether weight decay
        applies to this variable. Returns (new x, new moments); inputs are not modified."""
        dtype = x.dtype.type
        rho = self.relative_step(dtype, t, lr)
        x_scale = x
        x = self.weight_decay(dtype, x, lr, decays)
        alpha = self.parameter_scale(dtype, x if self.scale_after_decay else x_scale) * rho
        axes = self.factored_axes(x.shape)
        q = self.gradient_square(dtype, g)
        moments = self.second_moment(self, dtype, q, moments, self.beta_2(dtype, t), axes)
        u = self.precondition(self, dtype, g, moments, axes)
        u, den = self.clip(dtype, u)
        return self.apply(self, dtype, x, x_scale, u, den, alpha, lr, moments, decays)


def statistic_zeros(stages: Stages, x: np.ndarray) -> dict:
    """Zero second-moment statistics in x's dtype: r and c for a factored variable, v
    otherwise (the part of ``initial_moments`` every dialect shares)."""
    axes = stages.factored_axes(x.shape)
    if axes is None:
        return {Kind.V: np.zeros_like(x)}
    row, col = axes
    return {Kind.R: np.zeros(np.delete(x.shape, col), dtype=x.dtype),
            Kind.C: np.zeros(np.delete(x.shape, row), dtype=x.dtype)}


class DialectOptimizer:
    """A framework's Adafactor over a list of NumPy variables, stepped by ``self.stages``.
    Subclasses take their framework's own constructor arguments and defaults, build
    ``self.stages`` from them and say what the learning rate is at step ``t``.

    The state is a ``reference.state.State``: ``iterations`` (applies so far; every
    dialect's step counter is ``iterations + 1`` on the next apply) and the moment kinds of
    ``stages.initial_moments`` per variable. Every variable needs a gradient on every apply:
    the frameworks differ in how they count steps of a parameter without one (per-parameter
    counters in torch and transformers), which the vector format does not record.
    """

    dialect = "?"
    #: What the dialect mirrors, for vector files and reports, e.g.
    #: framework = "torch.optim.Adafactor", spec = "torch 2.13.0, torch/optim/_adafactor.py".
    framework = "?"
    spec = "?"
    stages: Stages
    #: The floor of RMS(x) in the step size (Keras's epsilon_2), None where there is none.
    rms_floor: Optional[float] = None
    #: Whether the configuration decays weights at all.
    has_weight_decay: bool = False

    def __init__(self):
        self.state: Optional[State] = None
        self.decays: Optional[list] = None

    # subclasses --------------------------------------------------------------------
    def learning_rate(self, t: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    # state -------------------------------------------------------------------------
    def zero_state(self, variables) -> State:
        """The state before the first step: iterations 0 and zero moments per variable (no
        ``variables`` kind)."""
        moments = [self.stages.initial_moments(self.stages, np.asarray(x)) for x in variables]
        kinds = [k for k in Kind if any(k in m for m in moments)]
        return State(0, {k: [m.get(k) for m in moments] for k in kinds})

    @property
    def iterations(self) -> int:
        return self.state.iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        self.state.iterations = value

    def set_state(self, state: State) -> None:
        """Load ``state`` (iterations and this dialect's moment kinds; other kinds, such as
        ``variables``, are ignored), each array cast to the dtype the built state keeps it in."""
        if self.state is None:
            raise ValueError(f"{self.dialect}: call build(variables) before set_state()")
        values = {}
        for k in self.state.kinds():
            if k not in state:
                raise ValueError(f"{self.dialect}: the state to load has no {k.value!r}")
            values[k] = [None if old is None else np.array(new, dtype=old.dtype)
                         for old, new in zip(self.state[k], state[k])]
        self.state = State(state.iterations, values)

    # driver ------------------------------------------------------------------------
    def build(self, variables, decays=None) -> None:
        """Zero state for ``variables``; ``decays[i]`` False excludes variable i from weight
        decay (where the dialect has a mask)."""
        self.state = self.zero_state(variables)
        self.decays = list(decays) if decays is not None else [True] * len(variables)

    def apply(self, grads, variables) -> None:
        """One step on every variable; ``variables`` are arrays updated in place."""
        if self.state is None:
            self.build(variables)
        if len(grads) != len(variables):
            raise ValueError(f"{self.dialect}: {len(grads)} gradients for {len(variables)} variables")
        for i, g in enumerate(grads):
            if g is None:
                raise ValueError(f"{self.dialect}: variable {i} has no gradient; dialect vectors "
                                 "give every variable a gradient on every step")
        t = self.state.iterations + 1
        lr = self.learning_rate(t)
        kinds = self.state.kinds()
        new_x, new_moments = [], []
        for i, (x, g) in enumerate(zip(variables, grads)):
            x = np.asarray(x)
            moments = {k: self.state[k][i] for k in kinds if self.state[k][i] is not None}
            value, moments = self.stages.step(x, np.asarray(g).astype(x.dtype, copy=False), moments, t, lr,
                                              self.decays[i])
            new_x.append(value)
            new_moments.append(moments)
        # all or nothing: assign after every step succeeded
        for x, value in zip(variables, new_x):
            x[...] = value
        self.state = State(t, {k: [m.get(k) for m in new_moments] for k in kinds})


# ----------------------------------------------------------------------------- from_keras
#: The Keras arguments a torch-style dialect's ``from_keras`` can map (the step itself).
KERAS_STEP_KEYS = ("learning_rate", "beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold", "relative_step",
                   "weight_decay", "name")
#: Keras features with no counterpart in those dialects: set (not None/False/0), they do not map.
KERAS_UNMAPPABLE = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "loss_scale_factor",
                    "gradient_accumulation_steps")


def keras_step_only(config: dict) -> bool:
    """Whether a Keras spec config uses only the step's arguments: every unmappable feature
    off, EMA settings only alongside (an unused) EMA, and no argument outside
    ``KERAS_STEP_KEYS``. The shared first check of the transformers, pytorch_optimizer, timm
    and timm_bigvision ``from_keras``."""
    for key, value in config.items():
        if key in KERAS_UNMAPPABLE:
            if value not in (None, False, 0, 0.0):
                return False
        elif key in ("ema_momentum", "ema_overwrite_frequency"):
            continue  # only meaningful with use_ema, checked above
        elif key not in KERAS_STEP_KEYS:
            return False
    return True
