"""The pairwise minimum and maximum of the spec: the scalar branch choices of the step
(rho_t, alpha_t, the clip denominator, adafactor_step.py) and the clipping denominators
(clipping.py).

Both are exact in any dtype, so a correct port cannot compute them differently. They sit
behind these two names for one reason: a real framework that evaluates them in *another*
dtype (Keras's torch backend rounds both operands of ``ops.maximum``/``ops.minimum`` to
float32 when they are float64, keras-team/keras#23223) is graded against a deviation model
(conformance/deviations.py) that swaps these two names and nothing else.
"""

import numpy as np

minimum = np.minimum
maximum = np.maximum
