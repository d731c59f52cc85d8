"""A float64 NumPy Adafactor that is the spec: keras.optimizers.Adafactor (Keras 3),
every constructor argument included. Start reading at ``reference/SPEC.md``, then
``adafactor_step.py`` (the algorithm) and ``optimizer.py`` (Keras's base-optimizer
machinery around it)."""

from reference import schedules
from reference.adafactor_step import Hyperparameters, StepTrace, update_step, zero_moments
from reference.optimizer import Adafactor, StepRecord
from reference.state import Kind, State

__version__ = "1.2.0"
#: The Keras release whose arithmetic this reference reproduces.
KERAS_VERSION = "3.15.1"

__all__ = [
    "Adafactor",
    "Hyperparameters",
    "Kind",
    "State",
    "StepRecord",
    "StepTrace",
    "schedules",
    "update_step",
    "zero_moments",
    "__version__",
    "KERAS_VERSION",
]
