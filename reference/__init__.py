"""A float64 NumPy Adafactor that is the spec: keras.optimizers.Adafactor (Keras 3),
every constructor argument included. Start reading at ``reference/SPEC.md``, then
``adafactor_step.py`` (the algorithm) and ``optimizer.py`` (Keras's base-optimizer
machinery around it)."""

from reference import schedules
from reference.adafactor_step import Hyperparameters, Slots, StepTrace, init_slots, update_step
from reference.optimizer import Adafactor, OptimizerState, StepRecord

__version__ = "1.0.0"
#: The Keras release whose arithmetic this reference reproduces.
KERAS_VERSION = "3.15.1"

__all__ = [
    "Adafactor",
    "Hyperparameters",
    "OptimizerState",
    "Slots",
    "StepRecord",
    "StepTrace",
    "init_slots",
    "schedules",
    "update_step",
    "__version__",
    "KERAS_VERSION",
]
