"""A vector's states as JSON (format: vectors/README.md): the expected state after a step,
the initial state before step 1, and the state dtypes a configuration fixes.

A state here is the generator's snapshot: a dict with ``iterations``, the per-variable
arrays of each kind (``variables``, ``r``, ``c``, ``v``, ``average``, ``accumulator``,
``momentum``; None for a kind the configuration does not keep) and, after a step, what the
step was (``is_update_step``, ``learning_rate``, ``ema_overwritten``).
"""

from __future__ import annotations

from conformance import vectorfile as vf
from reference.state import SLOT_KINDS

#: Kinds every state in a file lists (null where the configuration keeps none); any other
#: kind (momentum) is listed only where it is kept.
ALWAYS_LISTED = ("r", "c", "v", "average", "accumulator")


def _slots(snapshot: dict) -> dict:
    """Every kind of the optimizer's own state, per variable (null where a variable keeps
    none), in the snapshot's arrays."""
    encoded = {}
    for kind in SLOT_KINDS:
        arrays = snapshot.get(kind.value)
        if arrays is not None:
            encoded[kind.value] = [vf.encode_optional(a) for a in arrays]
        elif kind.value in ALWAYS_LISTED:
            encoded[kind.value] = None
    return encoded


def encode_expected(snapshot: dict) -> dict:
    """A step's ``expected``: the state after it and what the step was."""
    lr = snapshot["learning_rate"]
    return {
        "iterations": snapshot["iterations"],
        "is_update_step": snapshot["is_update_step"],
        "learning_rate": None if lr is None else vf.float_to_bits(lr),
        "ema_overwritten": snapshot["ema_overwritten"],
        "variables": [vf.encode_array(x) for x in snapshot["variables"]],
        **_slots(snapshot),
    }


def encode_initial_state(snapshot: dict) -> dict:
    """A vector's ``initial_state``: the optimizer's state right after ``build`` (the
    variables are the vector's ``variables[i].initial``, not repeated here)."""
    return {"iterations": snapshot["iterations"], **_slots(snapshot)}


def encode_state_dtypes(dtypes: dict) -> dict:
    """``state_dtypes``: {kind name: dtype name} of the kinds the configuration keeps in a
    dtype of its own whatever the lane's (optax's ``dtype_momentum``)."""
    return {str(kind): str(dtype) for kind, dtype in sorted(dtypes.items(), key=lambda item: str(item[0]))}
