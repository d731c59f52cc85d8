"""Applicability: whether a lane can hold a vector's inputs at all.

Each rule returns why a ``dtype`` implementation cannot be held to the vector (the skip reason
printed in the report), or None. They are numerical facts about the inputs and the golden
states in the lane dtype, never about an implementation: a finite input that overflows, a
non-zero input that underflows to zero, a gradient square that leaves the range, a golden
statistic beyond the lane's normal range, an RMS(x) whose squares are subnormal, a
second-moment EMA step whose conditioning no precision below float64 meets, and defaults
that bind differently in a lower dtype. float64 lanes and invalid vectors are always run.
"""

from __future__ import annotations

import weakref
from typing import Optional

import numpy as np

from conformance.adapters.base import finfo, numpy_dtype
from conformance.vector import Vector, as_vector
from reference.state import Kind

#: Largest |old| / |new| of a second-moment EMA step that is graded (see _ema_conditioning).
EMA_SHRINK_LIMIT = 16.0

#: Skip reasons per vector and dtype: the teacher and trajectory lanes of a dtype share them.
_reasons: "weakref.WeakKeyDictionary[Vector, dict]" = weakref.WeakKeyDictionary()


def skip_reason(vector, dtype: str) -> Optional[str]:
    """Why the vector cannot be given to a ``dtype`` implementation, or None (always None
    for float64 and for invalid vectors, which test the error, not the arithmetic). The
    rules, first match wins: an input that does not survive the cast to the lane dtype; a
    gradient square out of range; a default that binds differently in the lane
    (flags ``EPS1_DTYPE_DEFAULT_BINDS``, ``EPSILON_1_SIGNIFICANT`` in float16); RMS(x) with
    subnormal squares; a golden second moment beyond the lane's range; an ill-conditioned
    second-moment EMA step."""
    vector = as_vector(vector)
    if dtype == "float64" or vector.result == "invalid":
        return None
    known = _reasons.setdefault(vector, {})
    if dtype not in known:
        known[dtype] = _first_reason(vector, dtype)
    return known[dtype]


def _first_reason(vector: Vector, dtype: str) -> Optional[str]:
    target = numpy_dtype(dtype)
    return (_inputs_out_of_range(vector, target, dtype) or _binding_defaults(vector, dtype)
            or _rms_underflow(vector, dtype) or _rms_overflow(vector, dtype) or _moment_range(vector, dtype)
            or _ema_conditioning(vector))


def _inputs_out_of_range(vector: Vector, target, dtype: str) -> Optional[str]:
    """A finite input (initial variable or gradient) that overflows the lane, a non-zero one
    that underflows to zero, or a gradient whose square overflows or underflows to zero."""
    grads = [g for step in vector.steps for g in step.grads if g is not None]
    for a in [*vector.initial, *grads]:
        with np.errstate(all="ignore"):
            cast = a.astype(target).astype(np.float64)
        finite = np.isfinite(a)
        if np.any(finite & ~np.isfinite(cast)):
            return f"inputs overflow {dtype}"
        if np.any(finite & (a != 0) & (cast == 0)):
            return f"inputs underflow to zero in {dtype}"
    for g in grads:
        with np.errstate(all="ignore"):
            lane_g = g.astype(target)
            square = (lane_g * lane_g).astype(np.float64)
        if np.any(np.isfinite(g) & (g != 0) & (square == 0)):
            return f"g*g underflows to zero in {dtype} (the second moment would be 0 and U = 0/0)"
        if np.any(np.isfinite(g) & ~np.isfinite(square)):
            return f"g*g overflows {dtype}"
    return None


def _binding_defaults(vector: Vector, dtype: str) -> Optional[str]:
    """A default that depends on the lane dtype and binds, so the float64 golden is another
    function: torch's eps1=None is finfo(dtype).eps (torch/optim/_adafactor.py:372-373);
    a significant epsilon_1 rounds to 0 in float16."""
    if "EPS1_DTYPE_DEFAULT_BINDS" in vector.flags:
        return f"eps1 defaults to finfo({dtype}).eps and binds here: the float64 golden does not apply"
    if dtype == "float16" and "EPSILON_1_SIGNIFICANT" in vector.flags:
        return "epsilon_1 matters here and rounds to 0 in float16"
    return None


def _ema_conditioning(vector: Vector) -> Optional[str]:
    """A second-moment EMA step new = beta*old + (1-beta)*q where |old| / |new| exceeds
    EMA_SHRINK_LIMIT, on the golden r, c and unfactored v. beta = 1 - t**beta_2_decay
    carries an absolute rounding error of about one eps of the computing dtype, so new
    carries eps*|old|: |old|/|new| eps relative in any dtype below float64 (float64 lanes
    are graded: t**beta_2_decay is correctly rounded there, and
    regression/float32-beta2-decay-cancellation checks it). With the default
    beta_2_decay = -0.8 the ratio stays below 2.3 (conformance/TOLERANCES.md)."""
    previous = None
    for k, expected in enumerate(vector.goldens):
        if expected is None:
            continue
        if previous is not None:
            for kind in (Kind.R, Kind.C, Kind.V):
                for i, (old, new) in enumerate(zip(previous.get(kind) or [], expected.get(kind) or [])):
                    if old is None or new is None or not new.size:
                        continue
                    if kind is Kind.V and expected.r is not None and expected.r[i] is not None:
                        continue  # factored: V is recomputed from r and c
                    with np.errstate(all="ignore"):
                        ratio = np.abs(old) / np.abs(new)
                    ratio = ratio[np.isfinite(ratio)]
                    if ratio.size and float(ratio.max()) > EMA_SHRINK_LIMIT:
                        return (f"the second-moment EMA of {kind.value}[{i}] shrinks {float(ratio.max()):.3g}-fold "
                                f"at step {k + 1} (beta_2 near 0): the rounding of t**beta_2_decay alone costs "
                                f"that many eps in any dtype (limit {EMA_SHRINK_LIMIT:g})")
        previous = expected
    return None


def _moment_range(vector: Vector, dtype: str) -> Optional[str]:
    """A golden second-moment statistic (r, c, v, or Keras's intermediate R/mean(R))
    outside the lane's normal range [tiny, max]: the lane cannot hold V itself (subnormal,
    flushed, or infinite; conformance/FUZZING.md, "What is discarded")."""
    info = finfo(dtype)
    low, high = float(info.tiny), float(info.max)
    for k, expected in enumerate(vector.goldens):
        if expected is None:  # an invalid vector's failing step
            continue
        rows = expected.r or []
        with np.errstate(all="ignore"):
            ratios = [None if r is None or not r.size else r / np.mean(r, axis=-1, keepdims=True) for r in rows]
        for kind, arrays in (("r", rows), ("c", expected.c or []), ("v", expected.v or []),
                             ("R / mean(R)", ratios)):
            for i, a in enumerate(arrays):
                if a is None or not a.size:
                    continue
                finite = a[np.isfinite(a)]
                magnitude = np.abs(finite[finite != 0])
                if magnitude.size and (magnitude.min() < low or magnitude.max() > high):
                    return (f"the golden {kind} of variable {i} at step {k + 1} spans "
                            f"[{magnitude.min():.3g}, {magnitude.max():.3g}], beyond {dtype}'s "
                            f"normal range [{low:.3g}, {high:.3g}]")
    return None


def _rms_underflow(vector: Vector, dtype: str) -> Optional[str]:
    """RMS(x) = sqrt(mean(x*x)) (SPEC.md) where it sets the step size (RMS(x) above the
    vector's floor epsilon_2) but mean(x*x) < tiny/eps of the lane: the squares are
    subnormal or zero in the lane, losing more than one rounding of the sum. Checked on the
    initial variables and on every golden variable state a later step starts from."""
    info = finfo(dtype)
    floor = float(info.tiny) / float(info.eps)
    epsilon_2 = vector.rms_floor or 0.0
    states = [vector.initial] + [g.variables for g in vector.goldens[:-1] if g is not None]
    for variables in states:
        for i, x in enumerate(variables):
            with np.errstate(all="ignore"):
                mean_square = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
            if np.isfinite(mean_square) and 0 < mean_square < floor and np.sqrt(mean_square) > epsilon_2:
                return (f"RMS(x) of variable {i} sets the step size (> epsilon_2 = {epsilon_2:g}) but "
                        f"mean(x*x) = {mean_square:.3g} < tiny/eps of {dtype}: x*x is subnormal or zero there")
    return None


def _rms_overflow(vector: Vector, dtype: str) -> Optional[str]:
    """RMS(x) = sqrt(mean(x*x)) (SPEC.md) whose sum of squares overflows where it is
    accumulated (float32 for float16 and bfloat16 lanes, as every framework reduces them;
    the lane itself otherwise) or whose mean overflows the lane: mean(x*x) is inf in every
    lane implementation of the formula, and so is the step. Checked on the finite initial
    variables and on every finite golden variable state a later step starts from."""
    lane_max = float(finfo(dtype).max)
    sum_max = float(np.finfo(np.float32).max) if dtype in ("float16", "bfloat16") else lane_max
    states = [vector.initial] + [g.variables for g in vector.goldens[:-1] if g is not None]
    for k, variables in enumerate(states):
        for i, x in enumerate(variables):
            if not x.size or not np.all(np.isfinite(x)):
                continue  # RMS(x) is NaN or inf in float64 too: the golden says so
            with np.errstate(all="ignore"):
                total = float(np.sum(np.square(x, dtype=np.float64)))
            if total > sum_max or total / x.size > lane_max:
                where = "the initial variables" if k == 0 else f"the state after step {k}"
                return (f"sum(x*x) of variable {i} in {where} is {total:.3g}, beyond {dtype} "
                        f"(max {lane_max:.3g}; summed in {'float32' if sum_max != lane_max else dtype}): "
                        f"mean(x*x) and RMS(x) overflow there")
    return None
