"""A vector's states as JSON (format: vectors/README.md): the expected state after a step,
the initial state before step 1, and the state dtypes a configuration fixes.

A state here is the generator's snapshot: a dict with ``iterations``, the per-variable
arrays of each kind (``variables``, ``r``, ``c``, ``v``, ``average``, ``accumulator``,
``momentum``; None for a kind the configuration does not keep) and, after a step, what the
step was (``is_update_step``, ``learning_rate``, ``ema_overwritten``).
"""

from __future__ import annotations

from conformance import vectorfile as vf

#: The optimizer's own kinds, in the order a vector file lists them.
SLOT_KEYS = ("r", "c", "v", "average", "accumulator", "momentum")


def _per_variable(arrays, optional: bool):
    if arrays is None:
        return None
    return [vf.encode_optional(a) if optional else vf.encode_array(a) for a in arrays]


def _slots(snapshot: dict) -> dict:
    """r, c and v per variable (None where a variable has none), average and accumulator
    (None where the configuration keeps none), and momentum only where it is kept (the
    dialects that have a first moment): a Keras vector has no momentum key at all."""
    encoded = {
        "r": _per_variable(snapshot["r"], True),
        "c": _per_variable(snapshot["c"], True),
        "v": _per_variable(snapshot["v"], True),
        "average": _per_variable(snapshot["average"], False),
        "accumulator": _per_variable(snapshot["accumulator"], False),
    }
    if snapshot.get("momentum") is not None:
        encoded["momentum"] = _per_variable(snapshot["momentum"], True)
    return encoded


def encode_expected(snapshot: dict) -> dict:
    """A step's ``expected``: the state after it and what the step was."""
    lr = snapshot["learning_rate"]
    return {
        "iterations": snapshot["iterations"],
        "is_update_step": snapshot["is_update_step"],
        "learning_rate": None if lr is None else vf.float_to_bits(lr),
        "ema_overwritten": snapshot["ema_overwritten"],
        "variables": _per_variable(snapshot["variables"], False),
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
