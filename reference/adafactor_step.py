"""The Adafactor step: Algorithms 4 (matrix) and 5 (vector) of Shazeer & Stern (2018),
computed exactly as Keras 3 computes them.

This module is the heart of the spec. It mirrors ``Adafactor.update_step`` in
``keras/src/optimizers/adafactor.py:143-214`` (keras 3.15.1), one line per equation,
in Keras's order of operations. Everything that surrounds the step in Keras (loss-scale
unscaling, gradient accumulation, clipping, weight decay, EMA, the iteration counter)
lives in ``reference/optimizer.py``; this module knows nothing about it.

Notation (paper -> code):
    t       local_step = iterations + 1        (Keras counts real updates, see optimizer.py)
    rho_t   min(lr, 1 / sqrt(t))               relative step size, capped by the learning rate
    alpha_t max(eps2, RMS(X_{t-1})) * rho_t    absolute step size ("parameter scaling")
    beta_2t 1 - t ** beta_2_decay              increasing second-moment decay
    R, C    row / column statistics            Keras stores *means*, the paper *sums*
    V       second-moment estimate
    U       G / sqrt(V)
    U_hat   U / max(1, RMS(U) / d)             update clipping, d = clip_threshold

The functions are pure: they never modify their inputs. They are written for any NumPy
floating dtype (the dtype of the variable), so the same code can be run in float32 to
measure what an honest lower-precision port does; the spec itself is float64.
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
class Slots:
    """Adafactor's per-variable state.

    ``r`` has shape ``x.shape[:-1]`` and ``c`` shape ``x.shape[:-2] + x.shape[-1:]`` for
    variables with two or more axes; both are ``None`` for 0-D and 1-D variables (Keras
    creates unused integer placeholders there, adafactor.py:100-108). ``v`` always has
    the shape of the variable: Keras keeps a full-size ``v`` even when it factors
    (adafactor.py:131-138), so Keras's Adafactor saves no memory over Adam's second
    moment.
    """

    r: Optional[np.ndarray]
    c: Optional[np.ndarray]
    v: np.ndarray


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


def is_factored(shape) -> bool:
    """Keras factors the last two axes of every variable with two or more axes, whatever
    their sizes: a (1, n) or (n, 1) matrix is factored too; leading axes are batch axes
    (adafactor.py:100, 113-115, 163). There is no ``min_dim_size_to_factor`` (optax has)."""
    return len(shape) >= 2


def init_slots(x: np.ndarray) -> Slots:
    """Zero state for variable ``x`` (adafactor.py:84-138)."""
    if is_factored(x.shape):
        r = np.zeros(x.shape[:-1], dtype=x.dtype)
        c = np.zeros(x.shape[:-2] + x.shape[-1:], dtype=x.dtype)
        return Slots(r=r, c=c, v=np.zeros_like(x))
    return Slots(r=None, c=None, v=np.zeros_like(x))


def rms(x: np.ndarray, scratch: np.ndarray = None):
    """Root mean square over *all* elements: sqrt(mean(x**2)) (adafactor.py:140-141).
    The mean is a sum and one division (reference/reductions.py). ``scratch``, an array of
    x's shape and dtype, receives x**2 instead of a fresh allocation (same bits)."""
    return np.sqrt(reductions.mean(np.square(x, out=scratch)))


def update_step(
    x: np.ndarray,
    g: np.ndarray,
    slots: Slots,
    learning_rate: float,
    iterations: int,
    hyper: Hyperparameters,
    learning_rate_is_callable: bool = False,
) -> tuple[np.ndarray, Slots, StepTrace]:
    """One Adafactor step on one variable. Returns ``(new_x, new_slots, trace)``.

    ``x`` is the variable *after* weight decay (Keras decays before the step, so RMS(x)
    sees the decayed variable). ``learning_rate`` is the value Keras passes to
    ``update_step`` (the float, or the schedule/callable's value for this call).
    ``iterations`` is Keras's ``optimizer.iterations`` (accumulated updates when
    gradient accumulation is on). ``learning_rate_is_callable`` is True for schedules and
    callables: it only decides whether line (1) below runs, which changes nothing.
    """
    dtype = x.dtype.type
    # adafactor.py:146-150: every scalar is cast to the variable's dtype.
    lr = dtype(learning_rate)
    g = g.astype(x.dtype, copy=False)  # Keras casts the gradient only here, after clipping
    epsilon_2 = dtype(hyper.epsilon_2)
    one = dtype(1.0)
    local_step = dtype(iterations + 1)

    inv_sqrt_step = one / np.sqrt(local_step)
    # (1) adafactor.py:151-152. QUIRK `relative_step` is a no-op: line (2) below applies
    # the same min unconditionally, and min(min(lr, s), s) == min(lr, s) bit for bit.
    # Schedules and callables skip (1) and still get (2).
    if not learning_rate_is_callable and hyper.relative_step:
        lr = minmax.minimum(lr, inv_sqrt_step)

    # (2) adafactor.py:158. QUIRK: Keras's `learning_rate` is only the cap on the relative
    # step size (the paper hard-codes 1e-2; Keras's default is 1e-3).
    rho_t = minmax.minimum(lr, inv_sqrt_step)
    # Memory: two variable-sized buffers serve every temporary of the step (`work`, and
    # `new_x` before it holds the result); each in-place ufunc below rounds exactly as the
    # expression in its comment (benchmark: conformance/RESULTS.md).
    work, new_x = np.empty_like(x), np.empty_like(x)
    rms_x = rms(x, scratch=work)
    alpha_t = minmax.maximum(epsilon_2, rms_x) * rho_t  # adafactor.py:159
    # QUIRK (paper style) epsilon_1 is added to G**2 before any mean or EMA and appears
    # nowhere else; there is no epsilon in U = G / sqrt(V). adafactor.py:160
    regulated_grad_square = np.square(g, out=work)
    regulated_grad_square += dtype(hyper.epsilon_1)  # G**2 + epsilon_1
    # adafactor.py:161. At t = 1, t**d = 1 exactly, so beta_2 = 0 and the first step
    # copies the new statistics. Note 1 - beta_2 is computed as written, fl(1 - fl(1 - p)),
    # which is not always p.
    beta_2_t = one - dtype(float(local_step) ** hyper.beta_2_decay)
    one_minus_beta_2_t = one - beta_2_t

    if is_factored(x.shape):
        # Algorithm 4 (adafactor.py:163-197), with means where the paper has sums.
        r = beta_2_t * slots.r + one_minus_beta_2_t * reductions.mean(regulated_grad_square, axis=-1)
        c = beta_2_t * slots.c + one_minus_beta_2_t * reductions.mean(regulated_grad_square, axis=-2)
        # V = (R / mean(R)) (outer) C: Keras divides R by the mean of R over the rows
        # first, then takes the outer product with C (torch multiplies first).
        v = np.expand_dims(r / reductions.mean(r, axis=-1, keepdims=True), -1) * np.expand_dims(c, -2)
        new_slots = Slots(r=r, c=c, v=v)
    else:
        # Algorithm 5 (adafactor.py:198-207): 0-D and 1-D variables keep a full V.
        v = beta_2_t * slots.v + one_minus_beta_2_t * regulated_grad_square
        new_slots = Slots(r=None, c=None, v=v)

    # G**2 + epsilon_1 is spent: `work` holds U from here on.
    u_t = np.divide(g, np.sqrt(v, out=work), out=work)  # U = G / sqrt(V), adafactor.py:209
    rms_u = rms(u_t, scratch=new_x)
    clip_denominator = minmax.maximum(one, rms_u / dtype(hyper.clip_threshold))
    u_t_hat = np.divide(u_t, clip_denominator, out=work)  # U / max(1, RMS(U)/d), adafactor.py:210-213
    step = np.multiply(alpha_t, u_t_hat, out=work)  # alpha_t * U_hat
    new_x = np.subtract(x, step, out=new_x)  # x - alpha_t * U_hat, adafactor.py:214 (assign_sub)
    # NumPy turns 0-D results into scalars; the state stays arrays of the variable's shape.
    new_slots = Slots(r=new_slots.r, c=new_slots.c, v=np.asarray(new_slots.v))

    trace = StepTrace(
        local_step=float(local_step),
        learning_rate=float(dtype(learning_rate)),
        inv_sqrt_step=float(inv_sqrt_step),
        rho=float(rho_t),
        rms_x=float(rms_x),
        alpha=float(alpha_t),
        beta_2=float(beta_2_t),
        rms_u=float(rms_u),
        clip_denominator=float(clip_denominator),
    )
    return new_x, new_slots, trace
