"""Keras's own golden trajectories for Adafactor, as data.

From keras/src/optimizers/adafactor_test.py (keras 3.15.1, unchanged since 3.0.2). Keras's
tests run in float32 and print 4 decimals, so their tolerances are loose; they are kept
at Keras's own values. Used by ``tests/test_keras_goldens.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference.optimizer import Adafactor


@dataclass(frozen=True)
class Golden:
    name: str
    source: str  # file:lines in keras
    config: dict
    initial: list
    grads: list  # one gradient per step
    expected: list  # the variable after each step (None: not checked at that step)
    tolerance: float  # Keras's rtol = atol


_GOLDEN_5_STEP = [
    [0.55] * 10,
    [0.3031, 0.3026, 0.3025, 0.3024, 0.3024, 0.3024, 0.3024, 0.3024, 0.3024, 0.3024],
    [0.1671, 0.1665, 0.1663, 0.1663, 0.1663, 0.1663, 0.1663, 0.1663, 0.1663, 0.1663],
    [0.0923, 0.0916, 0.0915, 0.0914, 0.0914, 0.0914, 0.0914, 0.0914, 0.0914, 0.0914],
    [0.0554, 0.0548, 0.0546, 0.0546, 0.0546, 0.0546, 0.0546, 0.0545, 0.0545, 0.0545],
]

GOLDENS = [
    Golden(
        "single_step_1d", "adafactor_test.py:23-30", {"learning_rate": 0.5},
        [1.0, 2.0, 3.0, 4.0], [[1.0, 6.0, 7.0, 2.0]],
        [[-0.3693, 0.6307, 1.6307, 2.6307]], 1e-4,
    ),
    Golden(
        "single_step_2d", "adafactor_test.py:32-39", {"learning_rate": 0.5},
        [[1.0, 2.0], [3.0, 4.0]], [[[1.0, 6.0], [7.0, 2.0]]],
        [[[0.7007, -0.0081], [1.2492, 3.4407]]], 1e-4,
    ),
    Golden(
        # Keras checks the variable *before* each of steps 2..6: after steps 1..5.
        "correctness_with_golden", "adafactor_test.py:63-90",
        {"learning_rate": 0.5, "beta_2_decay": -0.65, "epsilon_1": 1e-15, "epsilon_2": 1e-4,
         "clip_threshold": 0.9, "relative_step": False},
        [1.0] * 10,
        [[0.01] * 10] + [list(np.arange(0.1, 1.1, 0.1))] * 5,
        _GOLDEN_5_STEP + [None], 5e-4,
    ),
]


def run_golden(golden: Golden) -> float:
    """Run the reference on one golden; return the largest violation ratio
    max(|x - expected| / (atol + rtol*|expected|)) over checked steps (<= 1 passes)."""
    opt = Adafactor(**golden.config)
    x = np.array(golden.initial, dtype=np.float64)
    worst = 0.0
    for g, expected in zip(golden.grads, golden.expected):
        opt.apply([np.array(g, dtype=np.float64)], [x])
        if expected is not None:
            e = np.array(expected, dtype=np.float64)
            ratio = np.abs(x - e) / (golden.tolerance + golden.tolerance * np.abs(e))
            worst = max(worst, float(np.max(ratio)))
    return worst
