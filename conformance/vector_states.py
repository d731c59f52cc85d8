"""What a golden vector gives the runner, decoded once per vector and process: the initial
``State``, the golden ``State`` after each step, the gradients of each step and the floor of
RMS(x) in the step size, all as the vector records them (schema version 2; nothing is
rebuilt through the reference).

Every lane of a process (four per adapter in ``make check``) and every skip rule reads the same
decoded arrays: decoding is cached per vector object (the most recent ``CACHE_SIZE`` vectors;
a vector must not be changed after it was first read).
"""

from __future__ import annotations

from collections import OrderedDict

from conformance import vectorfile as vf
from reference.state import Kind, State

CACHE_SIZE = 2048
#: Per-step booleans of the vectors, graded exactly where an adapter reports them.
STEP_FLAGS = ("is_update_step", "ema_overwritten")


_cache: "OrderedDict[int, tuple]" = OrderedDict()


def cached(vector: dict, name: str, build):
    """``build()`` once per vector object and ``name`` (the latest CACHE_SIZE vectors are
    kept): for what is computed from a vector alone (its decoded parts, its skip reasons)."""
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
    return cached(vector, "variables", lambda: [
        vf.decode_array(v["initial"], path, vector["id"]) for v in vector["variables"]])


def initial_state(vector: dict, path="<memory>") -> State:
    """The state before step 1 (the vector's ``initial_state`` with its initial variables),
    float64; a copy the caller may keep."""
    return cached(vector, "initial", lambda: _initial_state(vector, path)).copy()


def golden_states(vector: dict, path="<memory>") -> list:
    """The golden state after each step, float64; None for the failing step of an invalid
    vector (shared: do not modify)."""
    return cached(vector, "goldens", lambda: _golden_states(vector, path))


def grads(vector: dict, path="<memory>") -> list:
    """Per step, one float64 array (or None) per variable, each of its variable's shape
    (shared: do not modify)."""
    return cached(vector, "grads", lambda: [_step_grads(vector, step, path) for step in vector["steps"]])


def rms_floor(vector: dict) -> float:
    """The floor of RMS(x) in the step size the vector's optimizer uses (Keras
    ``epsilon_2``; a dialect's own), as the vector records it (``rms_floor``)."""
    bits = _field(vector, "rms_floor", "<memory>")
    return 0.0 if bits is None else vf.bits_to_float(bits)


def _field(vector: dict, name: str, path):
    if name not in vector:
        raise vf.VectorFormatError(path, f"has no {name!r}: written before schema version 2 "
                                         f"(regenerate it: python -m tools.generate_vectors)", vector.get("id"))
    return vector[name]


def _arrays(items, path, vector_id):
    return None if items is None else [vf.decode_optional(a, path, vector_id) for a in items]


def _initial_state(vector: dict, path) -> State:
    recorded = _field(vector, "initial_state", path)
    if recorded is None:
        raise vf.VectorFormatError(path, "has no initial state (a vector without steps is never replayed)",
                                   vector["id"])
    variables = [x.copy() for x in initial_variables(vector, path)]
    values = {k: _arrays(recorded.get(k.value), path, vector["id"]) for k in Kind if k is not Kind.VARIABLES}
    values[Kind.VARIABLES] = variables
    return State(recorded["iterations"], values)


def _golden_states(vector: dict, path) -> list:
    states, calls = [], 0
    for step in vector["steps"]:
        calls += len(step.get("learning_rate_calls", []))
        expected = step["expected"]
        if expected is None:
            states.append(None)
            continue
        values = {k: _arrays(expected.get(k.value), path, vector["id"]) for k in Kind}
        flags = {key: expected[key] for key in STEP_FLAGS if expected.get(key) is not None}
        states.append(State(expected["iterations"], values, calls, flags))
    return states


def _step_grads(vector: dict, step: dict, path) -> list:
    variables = vector["variables"]
    if len(step["grads"]) != len(variables):
        raise vf.VectorFormatError(path, f"a step holds {len(step['grads'])} gradients for "
                                         f"{len(variables)} variables", vector["id"])
    out = [vf.decode_optional(g, path, vector["id"]) for g in step["grads"]]
    for i, (g, variable) in enumerate(zip(out, variables)):
        if g is not None and list(g.shape) != list(variable["initial"]["shape"]):
            raise vf.VectorFormatError(path, f"grads[{i}] has shape {list(g.shape)}, variable {i} has shape "
                                             f"{list(variable['initial']['shape'])}", vector["id"])
    return out
