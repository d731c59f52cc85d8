"""What a golden vector gives the runner, decoded once per vector and process: the initial
``State``, the golden ``State`` after each step, the gradients of each step, the state dtypes
that are not the lane's, and the floor of RMS(x) in the step size.

Every lane of a process (four per adapter in ``make check``) and every skip rule reads the same
decoded arrays: decoding is cached per vector object (the most recent ``CACHE_SIZE`` vectors;
a vector must not be changed after it was first read).
"""

from __future__ import annotations

from collections import OrderedDict
import numpy as np

from conformance import vectorfile as vf
from reference.state import Kind, State

CACHE_SIZE = 2048


_cache: "OrderedDict[int, tuple]" = OrderedDict()


def _part(vector: dict, name: str, build):
    """``build()`` once per vector object and part (the latest CACHE_SIZE vectors are kept)."""
    key = id(vector)
    hit = _cache.get(key)
    if hit is None or hit[0] is not vector:
        hit = _cache[key] = (vector, {})
    _cache.move_to_end(key)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    parts = hit[1]
    if name not in parts:
        parts[name] = build()
    return parts[name]


def initial_variables(vector: dict, path="<memory>") -> list:
    """The initial variables, float64 (shared: do not modify)."""
    from conformance import replay

    return _part(vector, "variables", lambda: replay.initial_variables(vector, path))


def initial_state(vector: dict, path="<memory>") -> State:
    """The state before step 1, float64 (a copy the caller may keep)."""
    return _part(vector, "initial", lambda: _initial_state(vector, path)).copy()


def golden_states(vector: dict, path="<memory>") -> list:
    """The golden state after each step, float64; None for the failing step of an invalid
    vector (shared: do not modify)."""
    return _part(vector, "goldens", lambda: _golden_states(vector, path))


def grads(vector: dict, path="<memory>") -> list:
    """Per step, one float64 array (or None) per variable (shared: do not modify)."""
    from conformance import replay

    return _part(vector, "grads", lambda: [replay.decode_grads(vector, s, path) for s in vector["steps"]])


def _golden_states(vector: dict, path) -> list:
    from conformance import replay

    states, calls = [], 0
    for step in vector["steps"]:
        calls += len(step.get("learning_rate_calls", []))
        if step["expected"] is None:
            states.append(None)
            continue
        e = replay.decode_expected(vector, step["expected"], path)
        flags = {key: e[key] for key in ("is_update_step", "ema_overwritten") if e.get(key) is not None}
        states.append(State(e["iterations"], {k: e.get(k.value) for k in Kind}, calls, flags))
    return states


def _initial_state(vector: dict, path) -> State:
    from conformance import replay

    variables = [x.copy() for x in initial_variables(vector, path)]
    if vf.dialect_of(vector) != "keras":
        return _dialect_initial_state(vector, variables)
    config = vector["config"]
    factored = [x.ndim >= 2 for x in variables]
    values = {
        Kind.VARIABLES: variables,
        Kind.R: [np.zeros(x.shape[:-1]) if f else None for x, f in zip(variables, factored)],
        Kind.C: [np.zeros(x.shape[:-2] + x.shape[-1:]) if f else None for x, f in zip(variables, factored)],
        Kind.V: [np.zeros_like(x) for x in variables],
    }
    if config.get("use_ema"):
        values[Kind.AVERAGE] = [np.zeros_like(x) for x in variables]
    if config.get("gradient_accumulation_steps"):
        values[Kind.ACCUMULATOR] = [np.zeros_like(x) for x in variables]
    return State(0, values)


def _dialect_initial_state(vector: dict, variables) -> State:
    """Zero state of a native dialect (its own slot shapes: reference/dialects)."""
    from reference.dialects import optimizer_class

    stage = optimizer_class(vf.dialect_of(vector))(**vector["config"]).stage
    slots = [stage.init_slots(x) for x in variables]
    values = {Kind.VARIABLES: variables, Kind.R: [s.get("r") for s in slots],
              Kind.C: [s.get("c") for s in slots], Kind.V: [s.get("v") for s in slots]}
    if any("momentum" in s for s in slots):
        values[Kind.MOMENTUM] = [s.get("momentum") for s in slots]
    return State(0, values)


def state_dtypes(vector: dict) -> dict:
    """State kinds the vector's configuration keeps in a dtype of its own whatever the lane:
    optax stores its momentum in ``dtype_momentum`` (optax/_src/alias.py adafactor,
    transform.py ema with accumulator_dtype)."""
    config = vector["config"]
    if vf.dialect_of(vector) == "optax" and config.get("momentum") is not None and config.get("dtype_momentum"):
        return {Kind.MOMENTUM: np.dtype(config["dtype_momentum"])}
    return {}


def rms_floor(vector: dict) -> float:
    """The floor of RMS(x) in the step size (Keras ``epsilon_2``; a dialect's stage knows its own)."""
    if vf.dialect_of(vector) == "keras":
        return vector["config"].get("epsilon_2", 1e-3)
    from reference.dialects import optimizer_class

    value = optimizer_class(vf.dialect_of(vector))(**vector["config"]).stage.epsilon_2
    return 0.0 if value is None else float(value)
