"""A golden-vector case: what one vector is built from, and the inputs it draws.

A ``Case`` names a configuration (Keras's arguments, or a native dialect's), the variables
(name and shape), how their initial values and each step's gradients are drawn (or explicit
``inputs``, as fuzz examples and promoted regressions carry), and for an invalid vector the
error the spec raises. ``draw_inputs`` draws the arrays from a generator seeded by the case
id (``seed_for``), so adding or reordering cases never changes another vector.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

#: A gradient source: ``draw(rng, step, shape)`` (or ``draw(rng, step, shape, var=index)``
#: when it has ``needs_var = True``) returns one step's gradient of one variable.
GradFn = Callable[[np.random.Generator, int, tuple], np.ndarray]


def normal(scale: float = 1.0) -> GradFn:
    """N(0, scale^2) gradients, with a gentle step-to-step change of scale."""
    def draw(rng, step, shape):
        return np.asarray(rng.normal(size=shape) * scale * (1.0 + 0.5 * math.sin(step)))
    return draw


KERNEL_BIAS = (("dense/kernel", (5, 3)), ("dense/bias", (3,)))


@dataclass
class Case:
    id: str
    description: str
    config: dict = field(default_factory=dict)
    variables: tuple = KERNEL_BIAS  # (name, shape) pairs
    steps: int = 10
    init: str = "normal"  # normal | small (N(0, 0.01^2)) | tiny (N(0, 1e-10)) | zeros | ones
    #                     | below_epsilon_2 (random sign, magnitude uniform in [1e-4, 9e-4])
    grads: GradFn = field(default_factory=normal)
    none_at: frozenset = frozenset()  # {(step, variable index)}: gradient None
    exclude: Optional[dict] = None  # {"var_names": [...], "var_index": [...]}
    flags: tuple = ()  # flags the generator cannot derive
    error: Optional[dict] = None  # invalid vectors: {"class", "message_contains", "at", "step"?}
    make_learning_rate: Optional[Callable] = None  # a fresh callable learning rate per run
    # Explicit inputs instead of drawn ones: (initial arrays, per-step lists of gradient
    # arrays or None). Used by regression vectors promoted from fuzzing.
    inputs: Optional[tuple] = None
    # Which Adafactor the vector is for: "keras" (the spec) or a native dialect of
    # reference/dialects/ (ids "<dialect>/<file>/..."; config = that framework's arguments).
    dialect: str = "keras"
    # The vector's config holds only the arguments in ``config``: every other argument is
    # left out, so a replay does not pass it and the implementation's own default is used
    # (and graded). Flag DEFAULT_ARGUMENTS. Otherwise the config lists every argument.
    given_only: bool = False
    # Native dialects only: the iterations the optimizer has applied before step 1 (its state
    # otherwise zero), e.g. torch's float32 step counter near 2**24; 0 for every other case.
    start_iterations: int = 0

    @property
    def file(self) -> str:
        parts = self.id.split("/")
        return parts[1] if self.dialect != "keras" else parts[0]


def seed_for(case_id: str) -> int:
    """The seed of a case's random inputs: the CRC-32 of its id."""
    return zlib.crc32(case_id.encode("utf-8"))


def draw_inputs(case: Case, rng: np.random.Generator):
    """(initial values, per-step gradient rows) of ``case``: its explicit ``inputs`` as
    float64 arrays, or drawn from ``rng`` as ``init`` and ``grads`` say."""
    if case.inputs is not None:
        initial, grads = case.inputs
        return ([np.array(x, dtype=np.float64) for x in initial],
                [[None if g is None else np.array(g, dtype=np.float64) for g in row] for row in grads])
    initial = []
    for _, shape in case.variables:
        if case.init == "zeros":
            initial.append(np.zeros(shape))
        elif case.init == "ones":
            initial.append(np.ones(shape))
        elif case.init == "small":
            initial.append(np.asarray(rng.normal(size=shape) * 0.01))
        elif case.init == "tiny":
            initial.append(np.asarray(rng.normal(size=shape) * 1e-5))
        elif case.init == "below_epsilon_2":  # RMS(x) ~ 5.6e-4 < 1e-3, every |x| normal in float16
            initial.append(np.asarray(rng.choice((-1.0, 1.0), size=shape) * rng.uniform(1e-4, 9e-4, size=shape)))
        else:
            initial.append(np.asarray(rng.normal(size=shape), dtype=np.float64))
    grads = []
    for step in range(case.steps):
        row = []
        for index, (_, shape) in enumerate(case.variables):
            if (step, index) in case.none_at:
                row.append(None)
            elif getattr(case.grads, "needs_var", False):
                row.append(np.asarray(case.grads(rng, step, shape, var=index), dtype=np.float64))
            else:
                row.append(np.asarray(case.grads(rng, step, shape), dtype=np.float64))
        grads.append(row)
    return initial, grads
