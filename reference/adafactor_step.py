"""The Adafactor step: Algorithms 4 (matrix) and 5 (vector) of Shazeer & Stern (2018),
computed exactly as Keras 3 computes them.

This module is the heart of the spec. It mirrors ``Adafactor.update_step`` in
``keras/src/optimizers/adafactor.py:143-214`` (keras 3.15.1), in Keras's order of
operations. The step is a composition of small named stages, one function per line of the
paper (relative step size, parameter scale, gradient square, beta_2, second-moment update,
preconditioning, update clipping, apply), each citing the Keras line it mirrors;
``update_step`` calls them in Keras's order. The dialects (reference/dialects) reuse these
same functions: a dialect is this step with some named stages swapped. Everything that
surrounds the step in Keras (loss-scale unscaling, gradient accumulation, clipping, weight
decay, EMA, the iteration counter) lives in ``reference/optimizer.py``; this module knows
nothing about it.

Notation (paper -> code):
    t       local_step = iterations + 1        (Keras counts real updates, see optimizer.py)
    rho_t   min(lr, 1 / sqrt(t))               relative step size, capped by the learning rate
    alpha_t max(eps2, RMS(X_{t-1})) * rho_t    absolute step size ("parameter scaling")
    beta_2t 1 - t ** beta_2_decay              increasing second-moment decay
    R, C    row / column statistics            Keras stores *means*, the paper *sums*
    V       second-moment estimate
    U       G / sqrt(V)
    U_hat   U / max(1, RMS(U) / d)             update clipping, d = clip_threshold

The functions are pure: they never modify their inputs (an ``out=`` buffer, where a stage
takes one, is the caller's scratch array). They are written for any NumPy floating dtype
(the dtype of the variable), so the same code can be run in float32 to measure what an
honest lower-precision port does; the spec itself is float64. ``minmax`` and
``reductions`` are looked up at call time: they are the swap points of the deviation
models and of the summation-order measurement (conformance/deviations.py, tolerance.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from reference import minmax, reductions


@dataclass(frozen=True)
class Hyperparameters:
    """Adafactor's own constructor arguments (keras/src/optimizers/adafactor.py:44-82)."""

    beta_2_decay: float = -0.8
    epsilon_1: float = 1e-30
    epsilon_2: float = 1e-3
    clip_threshold: float = 1.0
    relative_step: bool = True


@dataclass(frozen=True)
class StepTrace:
    """The scalars of one step, kept so that vectors can record how close each
    min/max/clip was to switching branch (a knife-edge step)."""

    local_step: float
    learning_rate: float  # lr as cast to the variable dtype
    inv_sqrt_step: float  # 1 / sqrt(t), the other arm of rho_t's min
    rho: float
    rms_x: float  # RMS of the variable the step sees (after weight decay)
    alpha: float
    beta_2: float
    rms_u: float  # RMS of the unclipped update U
    clip_denominator: float  # max(1, RMS(U) / clip_threshold)


# ----------------------------------------------------------------------------- layout
def factored_axes(shape) -> Optional[tuple[int, int]]:
    """(row axis, column axis) of a factored variable, or None. Keras factors the last two
    axes of every variable with two or more axes, whatever their sizes: a (1, n) or (n, 1)
    matrix is factored too; leading axes are batch axes (adafactor.py:100, 113-115, 163).
    There is no ``min_dim_size_to_factor`` (optax has)."""
    return (len(shape) - 2, len(shape) - 1) if len(shape) >= 2 else None


def zero_moments(x: np.ndarray) -> tuple:
    """Zero second-moment state ``(r, c, v)`` for variable ``x`` (adafactor.py:84-138).

    ``r`` drops the column axis (shape ``x.shape[:-1]``), ``c`` the row axis (shape
    ``x.shape[:-2] + x.shape[-1:]``); both are None for 0-D and 1-D variables (Keras creates
    unused integer placeholders there, adafactor.py:100-108). ``v`` always has the shape of
    the variable: Keras keeps a full-size ``v`` even when it factors (adafactor.py:131-138),
    so Keras's Adafactor saves no memory over Adam's second moment."""
    axes = factored_axes(x.shape)
    if axes is None:
        return None, None, np.zeros_like(x)
    row, col = axes
    return (np.zeros(np.delete(x.shape, col), dtype=x.dtype), np.zeros(np.delete(x.shape, row), dtype=x.dtype),
            np.zeros_like(x))


# ----------------------------------------------------------------------------- the stages
def rms(x: np.ndarray, scratch: np.ndarray = None):
    """Root mean square over *all* elements: sqrt(mean(x**2)) (adafactor.py:140-141).
    The mean is a sum and one division (reference/reductions.py). ``scratch``, an array of
    x's shape and dtype, receives x**2 instead of a fresh allocation (same bits)."""
    return np.sqrt(reductions.mean(np.square(x, out=scratch)))


def inverse_sqrt_step(local_step):
    """1 / sqrt(t): sqrt, then one division, in t's dtype (adafactor.py:152, 158)."""
    one = type(local_step)(1.0)
    return one / np.sqrt(local_step)


def relative_step_size(lr, inv_sqrt_step):
    """rho_t = min(lr, 1/sqrt(t)) (adafactor.py:158). QUIRK: Keras's `learning_rate` is
    only the cap on the relative step size (the paper hard-codes 1e-2; Keras's default is
    1e-3)."""
    rho_t = minmax.minimum(lr, inv_sqrt_step)
    return rho_t


def parameter_scale(rms_x, epsilon_2):
    """max(epsilon_2, RMS(x)): the variable's scale, floored (adafactor.py:159)."""
    return minmax.maximum(epsilon_2, rms_x)


def gradient_square(g: np.ndarray, epsilon_1, out: np.ndarray = None) -> np.ndarray:
    """G**2 + epsilon_1 (adafactor.py:160). QUIRK (paper style): epsilon_1 is added to
    G**2 before any mean or EMA and appears nowhere else; there is no epsilon in
    U = G / sqrt(V)."""
    regulated_grad_square = np.square(g, out=out)
    regulated_grad_square += epsilon_1
    return regulated_grad_square


def beta_2(local_step, beta_2_decay: float) -> tuple:
    """(beta_2t, 1 - beta_2t) with beta_2t = 1 - t**beta_2_decay, in t's dtype
    (adafactor.py:161). At t = 1, t**d = 1 exactly, so beta_2 = 0 and the first step copies
    the new statistics. 1 - beta_2 is computed as written, fl(1 - fl(1 - p)), which is not
    always p."""
    dtype = type(local_step)
    one = dtype(1.0)
    beta_2_t = one - dtype(float(local_step) ** beta_2_decay)
    one_minus_beta_2_t = one - beta_2_t
    return beta_2_t, one_minus_beta_2_t


def moment_update(old, new, beta_2_t, one_minus_beta_2_t):
    """beta * old + (1 - beta) * new: the EMA of every statistic (adafactor.py:165-177,
    199-205)."""
    return beta_2_t * old + one_minus_beta_2_t * new


def estimate(r: np.ndarray, c: np.ndarray, axes) -> np.ndarray:
    """V = (R / mean(R over the rows)) (outer) C (adafactor.py:178-183): Keras divides R by
    its mean first, then takes the outer product with C (torch multiplies first)."""
    row, col = axes
    row_in_r = row if row < col else row - 1  # r lacks the column axis
    return np.expand_dims(r / reductions.mean(r, axis=row_in_r, keepdims=True), col) * np.expand_dims(c, row)


def second_moment(regulated_grad_square, r, c, v, beta_2_t, one_minus_beta_2_t, axes) -> tuple:
    """The new (r, c, v). Factored (Algorithm 4, adafactor.py:163-197, with means where the
    paper has sums): the EMAs of the row and column means of G**2 + eps1, and V rebuilt from
    them. Otherwise (Algorithm 5, adafactor.py:198-207; 0-D and 1-D variables): the EMA of
    G**2 + eps1 itself."""
    if axes is None:
        v = moment_update(v, regulated_grad_square, beta_2_t, one_minus_beta_2_t)
        return r, c, v
    row, col = axes
    r = moment_update(r, reductions.mean(regulated_grad_square, axis=col), beta_2_t, one_minus_beta_2_t)
    c = moment_update(c, reductions.mean(regulated_grad_square, axis=row), beta_2_t, one_minus_beta_2_t)
    v = estimate(r, c, axes)
    return r, c, v


def precondition(g: np.ndarray, v: np.ndarray, out: np.ndarray = None) -> np.ndarray:
    """U = G / sqrt(V) (adafactor.py:209)."""
    return np.divide(g, np.sqrt(v, out=out), out=out)


def clip_denominator(rms_u, clip_threshold, dtype):
    """max(1, RMS(U) / d), d = clip_threshold (adafactor.py:210-213)."""
    clip_denominator = minmax.maximum(dtype(1.0), rms_u / dtype(clip_threshold))
    return clip_denominator


def clip_update(u: np.ndarray, denominator, out: np.ndarray = None) -> np.ndarray:
    """U_hat = U / max(1, RMS(U) / d) (adafactor.py:210-213)."""
    return np.divide(u, denominator, out=out)


def apply_update(x: np.ndarray, alpha_t, u_hat: np.ndarray, out: np.ndarray = None,
                 scratch: np.ndarray = None) -> np.ndarray:
    """x - alpha_t * U_hat (adafactor.py:214, assign_sub). ``out`` receives the result and
    ``scratch`` the product alpha_t * U_hat (it may be ``u_hat`` itself)."""
    step = np.multiply(alpha_t, u_hat, out=scratch)
    return np.subtract(x, step, out=out)


# ----------------------------------------------------------------------------- the step
def update_step(
    x: np.ndarray,
    g: np.ndarray,
    moments: tuple,
    learning_rate: float,
    iterations: int,
    hyper: Hyperparameters,
    learning_rate_is_callable: bool = False,
) -> tuple[np.ndarray, tuple, StepTrace]:
    """One Adafactor step on one variable. ``moments`` is the variable's ``(r, c, v)``
    (``zero_moments``); returns ``(new_x, (r, c, v), trace)``.

    ``x`` is the variable *after* weight decay (Keras decays before the step, so RMS(x)
    sees the decayed variable). ``learning_rate`` is the value Keras passes to
    ``update_step`` (the float, or the schedule/callable's value for this call).
    ``iterations`` is Keras's ``optimizer.iterations`` (accumulated updates when
    gradient accumulation is on). ``learning_rate_is_callable`` is True for schedules and
    callables: it only decides whether line (1) below runs, which changes nothing.
    """
    r, c, v = moments
    dtype = x.dtype.type
    # adafactor.py:146-150: every scalar is cast to the variable's dtype.
    lr = dtype(learning_rate)
    g = g.astype(x.dtype, copy=False)  # Keras casts the gradient only here, after clipping
    local_step = dtype(iterations + 1)

    inv_sqrt_step = inverse_sqrt_step(local_step)
    # (1) adafactor.py:151-152. QUIRK `relative_step` is a no-op: line (2) below applies
    # the same min unconditionally, and min(min(lr, s), s) == min(lr, s) bit for bit.
    # Schedules and callables skip (1) and still get (2).
    if not learning_rate_is_callable and hyper.relative_step:
        lr = minmax.minimum(lr, inv_sqrt_step)

    # (2) adafactor.py:158, the relative step size.
    rho_t = relative_step_size(lr, inv_sqrt_step)
    # Memory: two variable-sized buffers serve every temporary of the step (`work`, and
    # `new_x` before it holds the result); each stage given `out=` rounds exactly as without
    # it (tests/reference/test_dialects.py checks the buffered step against the unbuffered stages).
    work, new_x = np.empty_like(x), np.empty_like(x)
    rms_x = rms(x, scratch=work)
    alpha_t = parameter_scale(rms_x, dtype(hyper.epsilon_2)) * rho_t  # adafactor.py:159
    regulated_grad_square = gradient_square(g, dtype(hyper.epsilon_1), out=work)  # adafactor.py:160
    beta_2_t, one_minus_beta_2_t = beta_2(local_step, hyper.beta_2_decay)  # adafactor.py:161
    r, c, v = second_moment(regulated_grad_square, r, c, v, beta_2_t, one_minus_beta_2_t,
                            factored_axes(x.shape))  # adafactor.py:163-207

    # G**2 + epsilon_1 is spent: `work` holds U from here on.
    u_t = precondition(g, v, out=work)  # adafactor.py:209
    rms_u = rms(u_t, scratch=new_x)
    denominator = clip_denominator(rms_u, hyper.clip_threshold, dtype)  # adafactor.py:210-213
    u_t_hat = clip_update(u_t, denominator, out=work)
    new_x = apply_update(x, alpha_t, u_t_hat, out=new_x, scratch=work)  # adafactor.py:214
    # NumPy turns 0-D results into scalars; the state stays arrays of the variable's shape.
    v = np.asarray(v)

    trace = StepTrace(
        local_step=float(local_step),
        learning_rate=float(dtype(learning_rate)),
        inv_sqrt_step=float(inv_sqrt_step),
        rho=float(rho_t),
        rms_x=float(rms_x),
        alpha=float(alpha_t),
        beta_2=float(beta_2_t),
        rms_u=float(rms_u),
        clip_denominator=float(denominator),
    )
    return new_x, (r, c, v), trace
