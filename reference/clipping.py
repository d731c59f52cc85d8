"""Gradient clipping as Keras 3's base optimizer does it (clipnorm, global_clipnorm,
clipvalue). Not part of the Adafactor algorithm: Keras applies it to the (unscaled,
accumulated) gradients before the step, see ``BaseOptimizer._clip_gradients``
(keras/src/optimizers/base_optimizer.py:870-881, keras 3.15.1).

All three work in the gradient's own dtype and propagate NaN and inf as Keras does.
"""

from __future__ import annotations

import numpy as np

from reference import minmax, reductions


def clip_by_norm(g: np.ndarray, clipnorm: float) -> np.ndarray:
    """Per-tensor norm clipping: g * clipnorm / max(||g||_2, clipnorm).

    base_optimizer.py:1108-1119 (the TensorFlow backend calls ``tf.clip_by_norm``,
    tensorflow/python/ops/clip_ops.py:214-234, which is the same arithmetic):
    the product g * clipnorm is formed first, then divided; there is no epsilon.
    The "two-tap where" keeps a zero (or NaN) sum of squares as the norm itself instead
    of taking its square root, which only matters for the derivative; the value is the
    same. A NaN anywhere in g makes the whole clipped tensor NaN; an inf makes
    every finite element 0 and the inf element NaN.
    """
    dtype = g.dtype.type
    l2sum = reductions.total(np.square(g), keepdims=True)
    l2norm = np.where(l2sum > 0, np.sqrt(np.where(l2sum > 0, l2sum, 1)), l2sum)
    return (g * dtype(clipnorm)) / minmax.maximum(l2norm, dtype(clipnorm))


def global_norm(grads: list) -> float:
    """sqrt of the sum of every tensor's sum of squares (base_optimizer.py:1181-1187).
    The per-tensor sums are stacked and summed again: two levels of summation."""
    squared_norms = [reductions.total(np.square(g)) for g in grads if g is not None]
    return np.sqrt(reductions.total(np.stack(squared_norms)))


def clip_by_global_norm(grads: list, clipnorm: float) -> list:
    """Scale every gradient by clipnorm * min(1/n, 1/clipnorm), n the global norm
    (base_optimizer.py:1190-1197).

    QUIRK: when n <= clipnorm the scale is clipnorm * (1/clipnorm), which is not always
    exactly 1.0 in floating point (49.0 * (1/49.0) = 0.9999999999999999), so gradients
    that need no clipping can still move by one ulp. The ``+ (n - n)`` turns a NaN or
    infinite norm into a NaN scale, so every gradient becomes NaN.
    """
    n = global_norm(grads)
    scale_for_finite = clipnorm * minmax.minimum(1.0 / n, 1.0 / clipnorm)
    scale = scale_for_finite + (n - n)
    return [None if g is None else g * g.dtype.type(scale) for g in grads]


def clip_by_value(g: np.ndarray, clipvalue: float) -> np.ndarray:
    """Elementwise clip to [-clipvalue, clipvalue] (base_optimizer.py:877-879);
    NaN stays NaN, +-inf become +-clipvalue."""
    dtype = g.dtype.type
    return np.clip(g, dtype(-clipvalue), dtype(clipvalue))
