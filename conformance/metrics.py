"""Error metrics between an implementation's tensor and the float64 golden tensor.

For one tensor at one step the gate computes:

* ``normwise``: max|actual - golden| / max|golden|, in units of the lane's machine epsilon
  (2**-52 for float64, 2**-23 float32, 2**-10 float16, 2**-7 bfloat16). This is what the
  tolerance policy budgets: it is scale-free and robust to elements near zero. For the
  update x_k - x_{k-1}, which is only observable through the stored variables, one ulp of
  x_k plus half an ulp of x_{k-1} (in the lane dtype) is forgiven per element first: that
  rounding of the variable is legitimately either way and can be hundreds of epsilons of
  an update that is 1e-3 of the variable.
* ``ulp``: the largest distance, in units in the last place of the lane dtype, between
  an actual element and the golden element rounded to the lane dtype (0 means the
  implementation produced the correctly rounded golden value). Reported, not gated:
  an element near zero can be many ulps off while the tensor is fine.
* ``abs``: the largest elementwise absolute error, and where it is.

NaN must meet NaN and an infinity the same infinity; any mismatch there is an infinite
error.

``relative_error`` is the plain normwise relative error max|actual - golden| / max|golden|
(unitless, no allowance, no scale floor), over one array or a list of arrays taken together:
the one definition every other comparison in the gate, the tools and the tests uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from conformance.adapters.base import numpy_dtype

EPSILON = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
PRECISION = {"float64": 53, "float32": 24, "float16": 11, "bfloat16": 8}  # significand bits
MIN_EXPONENT = {"float64": -1021, "float32": -125, "float16": -13, "bfloat16": -125}  # frexp, normal
_INT = {8: np.int64, 4: np.int32, 2: np.int16}


@dataclass
class TensorError:
    normwise: float  # in units of the lane epsilon
    ulp: float  # max ulp distance in the lane dtype (inf on NaN/inf mismatch)
    abs: float
    index: Optional[tuple]  # element with the largest absolute error (or first mismatch)
    expected: Optional[float]
    actual: Optional[float]


def _ordered(a: np.ndarray) -> np.ndarray:
    """Map floats to integers whose difference counts representable values between."""
    size = a.dtype.itemsize
    bits = a.view(_INT[size]).astype(np.int64)
    magnitude = bits & np.int64(2 ** (8 * size - 1) - 1)
    return np.where(bits < 0, -magnitude, magnitude)


def ulp_distance(actual: np.ndarray, golden: np.ndarray, dtype_name: str) -> np.ndarray:
    dtype = numpy_dtype(dtype_name)
    a = np.asarray(actual).astype(dtype)
    g = np.asarray(golden, dtype=np.float64).astype(dtype)
    return np.abs(_ordered(a) - _ordered(g)).astype(np.float64)


def ulp_of(x, dtype_name: str) -> np.ndarray:
    """One unit in the last place of each value of float64 ``x`` in the lane dtype
    (subnormal spacing below the normal range)."""
    _, exponent = np.frexp(np.abs(np.asarray(x, dtype=np.float64)))
    exponent = np.maximum(exponent, MIN_EXPONENT[dtype_name])
    return np.ldexp(1.0, exponent - PRECISION[dtype_name])


def largest(x) -> float:
    """Largest finite magnitude of an array (0 when it has none)."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def _special_mismatch(actual64: np.ndarray, golden: np.ndarray) -> np.ndarray:
    """Elements where one side is NaN or infinite and the other is not the same special value."""
    a_special, g_special = ~np.isfinite(actual64), ~np.isfinite(golden)
    both_nan = np.isnan(actual64) & np.isnan(golden)
    same_inf = np.isinf(actual64) & np.isinf(golden) & (actual64 == golden)
    return (a_special | g_special) & ~(both_nan | same_inf)


def relative_error(actual, golden) -> float:
    """max|actual - golden| / max|golden|, unitless (divide by ``EPSILON[dtype]`` for lane
    epsilons). ``actual`` and ``golden`` are arrays of one shape, or equal-length lists of
    them taken together (one maximum over all). Special values follow ``compare``: NaN
    meeting NaN and an infinity meeting the same infinity are equal and left out; any other
    non-finite element on either side, or a shape mismatch, makes the error inf. 0 when the
    finite elements are equal; inf when they differ and every finite golden element is 0."""
    pairs = list(zip(actual, golden)) if isinstance(golden, (list, tuple)) else [(actual, golden)]
    if isinstance(golden, (list, tuple)) and len(actual) != len(golden):
        return math.inf
    top = diff = 0.0
    with np.errstate(all="ignore"):
        for a, g in pairs:
            g = np.asarray(g, dtype=np.float64)
            a = np.asarray(a).astype(np.float64)
            if a.shape != g.shape:
                return math.inf
            if _special_mismatch(a, g).any():
                return math.inf
            finite = np.isfinite(a) & np.isfinite(g)
            if finite.any():
                top = max(top, float(np.max(np.abs(g[finite]))))
                diff = max(diff, float(np.max(np.abs(a[finite] - g[finite]))))
    if diff == 0:
        return 0.0
    return diff / top if top > 0 else math.inf


def compare(actual, golden, dtype_name: str, allowance=None, scale: float = 0.0, ulps: bool = True) -> TensorError:
    """Metrics of ``actual`` (any float dtype) against float64 ``golden``. ``allowance``
    (elementwise, >= 0) is forgiven from each absolute difference before the normwise error
    is taken; the ulp and absolute metrics are reported without it. ``scale`` is the
    largest magnitude among the operation's inputs: the normwise error is taken relative to
    max(max|golden|, scale), so that a result much smaller than its inputs (cancellation,
    e.g. x - alpha*u with alpha*u close to x) is not held to a relative accuracy no finite
    precision can give. ``ulps=False`` skips the ulp metric (``ulp`` is NaN), for callers
    that need it only for the tensors they report."""
    with np.errstate(all="ignore"):
        return _compare(actual, golden, dtype_name, allowance, scale, ulps)


def _compare(actual, golden, dtype_name: str, allowance=None, scale_floor: float = 0.0,
             want_ulps: bool = True) -> TensorError:
    golden = np.asarray(golden, dtype=np.float64)
    actual64 = np.asarray(actual).astype(np.float64)
    if actual64.shape != golden.shape:
        return TensorError(math.inf, math.inf, math.inf, None, None, None)
    if not golden.size:
        return TensorError(0.0, 0.0, 0.0, None, None, None)
    diff = np.abs(actual64 - golden)
    if math.isfinite(diff.max()):  # then every element of both is finite: no special value to match
        return _finite_error(actual64, golden, diff, dtype_name, allowance, scale_floor, want_ulps)
    a_special, g_special = ~np.isfinite(actual64), ~np.isfinite(golden)
    if a_special.any() or g_special.any():
        mismatch = _special_mismatch(actual64, golden)
        if mismatch.any():
            index = tuple(int(i) for i in np.argwhere(mismatch)[0])
            return TensorError(math.inf, math.inf, math.inf, index,
                               float(golden[index]), float(actual64[index]))
    finite = ~(a_special | g_special)
    if not finite.any():
        return TensorError(0.0, 0.0, 0.0, None, None, None)
    diff = np.where(finite, diff, 0.0)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    max_abs = float(diff[worst])
    scale = max(float(np.max(np.abs(np.where(finite, golden, 0.0)))), scale_floor)
    eps = EPSILON[dtype_name]
    excess = diff if allowance is None else np.maximum(diff - np.asarray(allowance, dtype=np.float64), 0.0)
    max_excess = float(np.max(excess))
    if max_excess == 0:
        normwise = 0.0
    elif scale == 0:
        normwise = math.inf
    else:
        normwise = max_excess / scale / eps
    ulp = math.nan
    if want_ulps:
        ulp = float(np.max(ulp_distance(np.where(finite, actual64, 0.0), np.where(finite, golden, 0.0), dtype_name)))
    return TensorError(normwise, ulp, max_abs, tuple(int(i) for i in worst),
                       float(golden[worst]), float(actual64[worst]))


def _finite_error(actual64, golden, diff, dtype_name: str, allowance, scale_floor: float,
                  want_ulps: bool) -> TensorError:
    """``_compare`` where every element of both tensors is finite (the common case)."""
    if not diff.any():
        first = (0,) * golden.ndim  # equal: every metric 0, the first element reported
        return TensorError(0.0, 0.0, 0.0, first, float(golden[first]), float(actual64[first]))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    max_abs = float(diff[worst])
    scale = max(float(np.max(np.abs(golden))), scale_floor)
    excess = diff if allowance is None else np.maximum(diff - np.asarray(allowance, dtype=np.float64), 0.0)
    max_excess = float(np.max(excess))
    if max_excess == 0:
        normwise = 0.0
    elif scale == 0:
        normwise = math.inf
    else:
        normwise = max_excess / scale / EPSILON[dtype_name]
    ulp = float(np.max(ulp_distance(actual64, golden, dtype_name))) if want_ulps else math.nan
    return TensorError(normwise, ulp, max_abs, tuple(int(i) for i in worst),
                       float(golden[worst]), float(actual64[worst]))
