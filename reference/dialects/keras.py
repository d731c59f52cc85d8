"""The Keras step as a dialect: ``KerasStage`` driven by ``DialectOptimizer``, with the
arguments of ``keras.optimizers.Adafactor`` that reach the step (a float learning rate,
``beta_2_decay``, ``epsilon_1``, ``epsilon_2``, ``clip_threshold``, ``relative_step``,
``weight_decay``). It computes what ``reference.Adafactor`` computes for those arguments,
bit for bit (tests/test_dialects.py); the divergence report (tools/divergence.py) starts
from it and switches one framework difference at a time. The spec remains
``reference.Adafactor``, which has every argument."""

from __future__ import annotations

from typing import Optional

from reference.dialects.base import DialectOptimizer, KerasStage


class KerasStages(DialectOptimizer):
    dialect = "keras"
    stage_class = KerasStage

    def __init__(self, learning_rate: float = 0.001, beta_2_decay: float = -0.8, epsilon_1: float = 1e-30,
                 epsilon_2: float = 1e-3, clip_threshold: float = 1.0, relative_step: bool = True,
                 weight_decay: Optional[float] = None):
        super().__init__()
        if not isinstance(learning_rate, float):
            raise ValueError(f"KerasStages: learning_rate must be a float, got {learning_rate!r} "
                             "(schedules and callables: use reference.Adafactor)")
        self.config = dict(learning_rate=learning_rate, beta_2_decay=beta_2_decay, epsilon_1=epsilon_1,
                           epsilon_2=epsilon_2, clip_threshold=clip_threshold, relative_step=relative_step,
                           weight_decay=weight_decay)
        self.stage = self.stage_class(beta_2_decay=beta_2_decay, epsilon_1=epsilon_1, epsilon_2=epsilon_2,
                                      clip_threshold=clip_threshold, weight_decay=weight_decay)

    def learning_rate(self, t: int) -> float:
        return self.config["learning_rate"]

    def get_config(self) -> dict:
        return dict(self.config)
