"""The reductions of the spec: the one place where a correct port may legitimately compute
differently (the order of a sum).

The spec sums with NumPy (pairwise summation, 8-way unrolled, over contiguous data; row by
row over a strided axis) and takes a mean as that sum divided once by the count, as
Keras's ``ops.mean`` does on TensorFlow. Every reduction in the reference goes through
these two functions, so that conformance/tolerance.py can swap in another summation order
and measure what that alone changes.
"""

import numpy as np


def total(x, axis=None, keepdims=False):
    """Sum of ``x`` (over all elements by default)."""
    return np.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean: the sum, then one division by the element count."""
    return np.mean(x, axis=axis, keepdims=keepdims)
