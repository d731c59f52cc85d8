"""Flags a gradient's special values give a vector, shared by the Keras and the dialect
generators (tools/generate_vectors.py, tools/dialect_vectors.py); their notes are in
generate_vectors.NOTES."""

from __future__ import annotations

import numpy as np


def special_value_flags(g: np.ndarray) -> set:
    """NONFINITE_GRADIENT (a NaN or infinity), SQUARE_OVERFLOW (finite but g*g is not),
    SUBNORMAL_GRADIENT (a nonzero value below float64's smallest normal)."""
    flags = set()
    if not np.all(np.isfinite(g)):
        flags.add("NONFINITE_GRADIENT")
    with np.errstate(over="ignore"):
        if np.any(np.isfinite(g) & ~np.isfinite(g * g)):
            flags.add("SQUARE_OVERFLOW")
    finite = g[np.isfinite(g)]
    if np.any((finite != 0) & (np.abs(finite) < np.finfo(np.float64).tiny)):
        flags.add("SUBNORMAL_GRADIENT")
    return flags
