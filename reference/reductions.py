"""The reductions of the spec: the one place where a correct port may legitimately compute
differently (the order of a sum).

The spec sums with NumPy (pairwise summation, 8-way unrolled, over contiguous data; row by
row over a strided axis) and takes a mean as that sum divided once by the count, as
Keras's ``ops.mean`` does on TensorFlow. Every reduction in the reference goes through
these two functions, so that conformance/tolerance.py can swap in another summation order
and measure what that alone changes.

Half precision (float16, bfloat16: the honest lower-precision lanes of the gate) is
reduced the way real frameworks reduce it: the elements are widened to float32, summed
(and, for a mean, divided by the count) in float32, and the result is rounded once to the
lane dtype. That is what each framework the gate runs does, for sums and means alike:

* Keras's ``ops.mean`` casts to ``result_type(x.dtype, "float32")`` first on every backend
  (keras 3.15.1: keras/src/backend/jax/numpy.py:231, 262; torch/numpy.py:176, 195-197;
  tensorflow/numpy.py:716, 723-726); ``ops.sum`` calls jnp.sum / torch.sum, which do the same
  inside (below).
* JAX: ``jnp.sum`` and ``jnp.mean`` compute float16/bfloat16 in float32
  (``upcast_f16_for_computation``, jax 0.10.2: jax/_src/numpy/reductions.py:67-70 and
  139-143 widen, 164 rounds the sum back; 906-922: ``sum(a, dtype=float32) / count``, then
  ``.astype`` the input dtype). XLA reduces the widened float32 array in its own order.
* torch: reductions of Half/BFloat16 accumulate in ``opmath_type`` = float
  (torch/include/ATen/OpMathType.h:15-27 of torch 2.13.0); ``mean`` on CPU is
  "cast_fp32 -> sum -> div -> cast_bf16_or_fp16" (aten/src/ATen/native/ReduceOps.cpp,
  ``TORCH_IMPL_FUNC(mean_out)``); ``torch.norm`` squares, sums and takes the root in float
  and rounds once (ATen/native/SharedReduceOps.h:366-382, ``NormTwoOps``; see ``norm``).

NumPy alone does not: ml_dtypes' bfloat16 has no pairwise loop, so ``np.sum`` adds one
element at a time in bfloat16 (the sum of 5000 ones is 256: past 256 an added 1 is below
half an ulp), and float16 sums over a strided axis are added row by row in float16
(``np.sum(np.ones((5000, 3), np.float16), axis=0)`` is 2048). Float32 and float64 are reduced
in their own dtype, as before: the float64 spec is unchanged bit for bit.
"""

import numpy as np

#: Lane dtypes whose reductions accumulate in float32 (by name: ml_dtypes.bfloat16 is not a
#: NumPy builtin, and importing ml_dtypes is not needed to recognise it).
HALF_DTYPES = ("float16", "bfloat16")


def accumulator(dtype) -> np.dtype:
    """The dtype a reduction of ``dtype`` elements accumulates in: float32 for float16 and
    bfloat16, ``dtype`` itself otherwise."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.name in HALF_DTYPES else dtype


#: dtype -> float32 for the half dtypes, None for the others (``dtype.name`` is slow to build).
_WIDENED_TO: dict = {}


def _widened(x):
    """(x as an array, the accumulator dtype, or None where x is reduced in its own dtype)."""
    x = np.asarray(x)
    try:
        return x, _WIDENED_TO[x.dtype]
    except KeyError:
        acc = np.dtype(np.float32) if x.dtype.name in HALF_DTYPES else None
        _WIDENED_TO[x.dtype] = acc
        return x, acc


def total(x, axis=None, keepdims=False):
    """Sum of ``x`` (over all elements by default); float16/bfloat16 summed in float32 and
    rounded once to their dtype."""
    x, acc = _widened(x)
    if acc is None:
        return np.sum(x, axis=axis, keepdims=keepdims)
    return np.sum(x, axis=axis, keepdims=keepdims, dtype=acc).astype(x.dtype)


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean: the sum, then one division by the element count; float16/bfloat16
    summed and divided in float32, rounded once to their dtype. This is ``np.mean``'s own
    arithmetic (``np.add.reduce`` then one true division by the count) without its Python
    bookkeeping; an empty reduction goes through ``np.mean`` for its warning."""
    x, acc = _widened(x)
    count = x.size if axis is None else x.shape[axis]
    if count == 0:
        result = np.mean(x, axis=axis, keepdims=keepdims, dtype=acc)
        return result if acc is None else result.astype(x.dtype)
    if acc is None:
        return np.add.reduce(x, axis=axis, keepdims=keepdims) / count
    return (np.add.reduce(x, axis=axis, keepdims=keepdims, dtype=acc) / count).astype(x.dtype)


def norm(x, axis=None, keepdims=False):
    """||x||_2 = sqrt(sum x*x) as ``torch.norm`` / ``torch.linalg.vector_norm`` computes it
    (the torch and transformers dialects): float16/bfloat16 elements are widened to float32,
    squared (exactly: a half-precision product fits float32), summed and rooted in float32,
    and the root is rounded once to x's dtype (ATen/native/SharedReduceOps.h:366-382:
    ``reduce`` is ``acc + data * data`` and ``project`` is ``sqrt(acc)`` in ``acc_t`` =
    ``opmath_type`` = float). Other dtypes in their own dtype. The sum goes through ``total``,
    so a swapped summation order (conformance/tolerance.py) applies here too."""
    x, acc = _widened(x)
    if acc is None:
        return np.sqrt(total(np.square(x), axis=axis, keepdims=keepdims))
    return np.sqrt(total(np.square(x.astype(acc)), axis=axis, keepdims=keepdims)).astype(x.dtype)
