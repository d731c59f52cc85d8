"""Drive the reference from a golden vector: build the optimizer its config describes,
feed its gradients, and snapshot the complete state after every step.

The generator (conformance/generator) records vectors with ``run_steps`` and the snapshots
here; replaying a vector uses the same functions with the vector's recorded inputs, so what
is checked is exactly what was recorded.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Optional

import numpy as np

from conformance import vectorfile as vf
from reference import Adafactor, schedules


class CallsExhausted(RuntimeError):
    """An implementation called a recorded learning-rate callable more often than the
    spec did: a call-count difference (graded as ``learning_rate_calls``), not a crash."""


class RecordedCallable:
    """A zero-argument learning rate that returns recorded values in call order (how a
    vector stores a Python callable: Keras may call it several times per step)."""

    def __init__(self, values: Iterable[float], vector_id: str = "?"):
        self.values = list(values)
        self.position = 0
        self.vector_id = vector_id

    def __call__(self) -> float:
        if self.position >= len(self.values):
            raise CallsExhausted(
                f"vector {self.vector_id!r}: the learning-rate callable was called "
                f"{self.position + 1} times, but only {len(self.values)} calls were recorded")
        value = self.values[self.position]
        self.position += 1
        return value


def decode_learning_rate(vector: dict):
    """The ``learning_rate`` argument a vector's config describes."""
    lr = vector["config"].get("learning_rate", 0.001)
    if isinstance(lr, dict) and lr.get("callable") == "recorded":
        calls = [vf.bits_to_float(b) for step in vector["steps"]
                 for b in step.get("learning_rate_calls", [])]
        return RecordedCallable(calls, vector["id"])
    if isinstance(lr, dict):
        return schedules.deserialize(lr)
    return lr


def make_optimizer(vector: dict, learning_rate=None, cls=Adafactor) -> Adafactor:
    """Construct (not build) the reference optimizer of ``vector``. Raises what the
    reference raises for an invalid configuration."""
    config = dict(vector["config"])
    if "learning_rate" in config or learning_rate is not None:
        config["learning_rate"] = decode_learning_rate(vector) if learning_rate is None else learning_rate
    return cls(**config)


def initial_variables(vector: dict, path="<memory>") -> list:
    return [vf.decode_array(v["initial"], path, vector["id"]).copy() for v in vector["variables"]]


def decode_grads(vector: dict, step: dict, path="<memory>") -> list:
    """One array (or None) per variable, each of its variable's shape. The loader checked
    this for every vector it read (vectorfile.check_vector); vectors built in memory are
    checked here, so a malformed one is a VectorFormatError, not a broadcast error."""
    variables = vector["variables"]
    if len(step["grads"]) != len(variables):
        raise vf.VectorFormatError(path, f"a step holds {len(step['grads'])} gradients for "
                                         f"{len(variables)} variables", vector["id"])
    grads = [vf.decode_optional(g, path, vector["id"]) for g in step["grads"]]
    for i, (g, variable) in enumerate(zip(grads, variables)):
        if g is not None and list(g.shape) != list(variable["initial"]["shape"]):
            raise vf.VectorFormatError(path, f"grads[{i}] has shape {list(g.shape)}, variable {i} has shape "
                                             f"{list(variable['initial']['shape'])}", vector["id"])
    return grads


def build(opt: Adafactor, variables: list, names: list, exclude: Optional[dict]) -> None:
    opt.build(variables, names=names)
    if exclude:
        opt.exclude_from_weight_decay(
            var_list=[variables[i] for i in exclude.get("var_index", [])] or None,
            var_names=exclude.get("var_names") or None,
        )


def state_snapshot(opt: Adafactor, variables: list) -> dict:
    """The optimizer's state as plain arrays: ``iterations``, ``variables`` (copies) and
    per kind (``r``, ``c``, ``v``, ``average``, ``accumulator``) the per-variable arrays, or
    None where the configuration keeps no such kind."""
    state = opt.get_state()
    return {"iterations": state.iterations, "variables": [x.copy() for x in variables],
            "r": state.r, "c": state.c, "v": state.v, "average": state.average, "accumulator": state.accumulator}


def snapshot(opt: Adafactor, variables: list) -> dict:
    """The complete state after a step, as plain arrays (the ``expected`` of a step)."""
    record = opt.last_step
    return {**state_snapshot(opt, variables), "is_update_step": record.is_update_step,
            "learning_rate": record.learning_rate, "ema_overwritten": record.ema_overwritten}


def run_steps(opt: Adafactor, variables: list, grads_per_step: Iterable[list],
              on_step: Callable[[int, dict], None]) -> None:
    """Apply each step's gradients; call ``on_step(index, snapshot)`` after each."""
    for index, grads in enumerate(grads_per_step):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras's "Gradients do not exist" warning
            opt.apply(grads, variables)
        on_step(index, snapshot(opt, variables))


def decode_expected(vector: dict, expected: dict, path="<memory>") -> dict:
    def arrays(items):
        return None if items is None else [vf.decode_optional(a, path, vector["id"]) for a in items]

    lr = expected["learning_rate"]
    return {
        "iterations": expected["iterations"],
        "is_update_step": expected["is_update_step"],
        "learning_rate": None if lr is None else vf.bits_to_float(lr),
        "ema_overwritten": expected["ema_overwritten"],
        "variables": arrays(expected["variables"]),
        "r": arrays(expected["r"]),
        "c": arrays(expected["c"]),
        "v": arrays(expected["v"]),
        "average": arrays(expected["average"]),
        "accumulator": arrays(expected["accumulator"]),
        "momentum": arrays(expected.get("momentum")),
    }


STATE_KEYS = ("variables", "r", "c", "v", "average", "accumulator", "momentum")


def bitwise_differences(expected: dict, actual: dict) -> list[str]:
    """Every place where two snapshots differ in bits (any NaN equals any NaN)."""
    problems = []
    for key in ("iterations", "is_update_step", "ema_overwritten"):
        if expected[key] != actual[key]:
            problems.append(f"{key}: expected {expected[key]!r}, got {actual[key]!r}")
    if expected["learning_rate"] != actual["learning_rate"]:
        problems.append(f"learning_rate: expected {expected['learning_rate']!r}, got {actual['learning_rate']!r}")
    for key in STATE_KEYS:
        problems.extend(_kind_differences(key, expected.get(key), actual.get(key)))
    return problems


def initial_state_differences(vector: dict, built: dict, path="<memory>") -> list[str]:
    """Where the vector's ``initial_state`` (and ``iterations``) differs in bits from the
    state the reference holds right after ``build`` (``built``: a snapshot)."""
    recorded = vector["initial_state"]
    if recorded is None:
        return ["initial_state: expected the state after build, the vector has none"]
    problems = []
    if recorded["iterations"] != built["iterations"]:
        problems.append(f"initial_state.iterations: recorded {recorded['iterations']}, built {built['iterations']}")
    for key in STATE_KEYS[1:]:
        items = recorded.get(key)
        decoded = None if items is None else [vf.decode_optional(a, path, vector["id"]) for a in items]
        problems.extend(f"initial_state.{p}" for p in _kind_differences(key, decoded, built.get(key)))
    return problems


def _kind_differences(key: str, e_list, a_list) -> list[str]:
    if (e_list is None) != (a_list is None):
        return [f"{key}: expected {'none' if e_list is None else 'present'}"]
    problems = []
    for i, (e, a) in enumerate(zip(e_list or [], a_list or [])):
        if (e is None) != (a is None):
            problems.append(f"{key}[{i}]: presence differs")
        elif e is not None and not _same_bits(e, a):
            problems.append(f"{key}[{i}]: differs")
    return problems


def _same_bits(e: np.ndarray, a: np.ndarray) -> bool:
    a = np.asarray(a).astype(np.float64)  # optax keeps its momentum in float32: widening is exact
    if e.shape != a.shape:
        return False
    both_nan = np.isnan(e) & np.isnan(a)
    return bool(np.all(both_nan | (e.view(np.int64) == a.view(np.int64))))


def check_reference(vector: dict, path="<memory>") -> list[str]:
    """Replay ``vector`` through the reference; return the problems (empty: its initial
    state is the reference's state after build, and it conforms at 0 ulp, or raises the
    recorded error for an invalid vector)."""
    if vf.dialect_of(vector) != "keras":
        return _check_dialect(vector, path)
    error = vector["error"]
    try:
        opt = make_optimizer(vector)
    except Exception as exc:  # noqa: BLE001 - any exception is graded against `error`
        return _graded_error(vector, exc, "construction")
    if error and error["at"] == "construction":
        return [f"expected {error['class']} at construction, nothing raised"]
    variables = initial_variables(vector, path)
    build(opt, variables, [v["name"] for v in vector["variables"]], vector["exclude_from_weight_decay"])
    grads = [decode_grads(vector, step, path) for step in vector["steps"]]
    problems: list[str] = initial_state_differences(vector, state_snapshot(opt, variables), path)
    done = []

    def on_step(index, actual):
        expected = decode_expected(vector, vector["steps"][index]["expected"], path)
        problems.extend(f"step {index + 1}: {p}" for p in bitwise_differences(expected, actual))
        done.append(index)

    try:
        run_steps(opt, variables, grads, on_step)
    except Exception as exc:  # noqa: BLE001
        problems.extend(_graded_error(vector, exc, "step"))
        if error and error.get("step") != len(done):
            problems.append(f"raised at step {len(done)}, expected at step {error.get('step')}")
        return problems
    if error:
        problems.append(f"expected {error['class']} during the steps, nothing raised")
    return problems


def _check_dialect(vector: dict, path="<memory>") -> list[str]:
    """``check_reference`` for a native dialect's vector (reference/dialects)."""
    from reference.dialects import optimizer_class

    try:
        opt = optimizer_class(vf.dialect_of(vector))(**vector["config"])
    except Exception as exc:  # noqa: BLE001
        return _graded_error(vector, exc, "construction")
    if vector["error"]:
        return [f"expected {vector['error']['class']} at construction, nothing raised"]
    variables = initial_variables(vector, path)
    excluded = set((vector["exclude_from_weight_decay"] or {}).get("var_index", []))
    opt.build(variables, decayed=[i not in excluded for i in range(len(variables))])
    problems: list[str] = initial_state_differences(vector, dialect_snapshot(opt, variables), path)
    for index, step in enumerate(vector["steps"]):
        lr = opt.learning_rate(opt.iterations + 1)
        with np.errstate(all="ignore"):
            opt.apply(decode_grads(vector, step, path), variables)
        actual = dialect_snapshot(opt, variables, lr)
        expected = decode_expected(vector, step["expected"], path)
        problems.extend(f"step {index + 1}: {p}" for p in bitwise_differences(expected, actual))
    return problems


# ----------------------------------------------------------------------------- dialects
def dialect_snapshot(opt, variables: list, learning_rate=None) -> dict:
    """A native dialect's state as plain arrays (reference/dialects): ``r``/``c``/``v`` per
    variable (None where it keeps none), ``momentum`` only where some variable keeps one, no
    EMA or accumulator; after a step (``learning_rate``: the rate it used) every step is an
    update step and nothing is overwritten."""
    slots = _dialect_slots(opt)
    return {"iterations": opt.iterations, "is_update_step": True,
            "learning_rate": None if learning_rate is None else float(learning_rate), "ema_overwritten": False,
            "variables": [x.copy() for x in variables], "average": None, "accumulator": None,
            "r": [s.get("r") for s in slots], "c": [s.get("c") for s in slots],
            "v": [s.get("v") for s in slots],
            "momentum": [s.get("momentum") for s in slots] if dialect_has_momentum(opt) else None}


def _dialect_slots(opt) -> list:
    """One {kind name: array} per variable of a built dialect optimizer."""
    slots = opt.slots
    return [s if isinstance(s, dict) else {k: getattr(s, k) for k in ("r", "c", "v", "momentum")
                                           if getattr(s, k, None) is not None}
            for s in slots]


def dialect_has_momentum(opt) -> bool:
    """Whether a built dialect optimizer keeps a first moment for some variable."""
    return any("momentum" in s for s in _dialect_slots(opt))


def dialect_rms_floor(opt) -> float:
    """The floor of RMS(x) in a dialect's step size (its ``epsilon_2``; None: 0)."""
    value = opt.stage.epsilon_2
    return 0.0 if value is None else float(value)


def dialect_factored_axes(opt, shape: tuple):
    """The (row, column) axes a dialect factors for ``shape``, or None."""
    return opt.stage.factored_axes(shape)


def dialect_weight_decay(opt):
    """A dialect's weight-decay rate (0 or None: no decay)."""
    return opt.stage.weight_decay


def _graded_error(vector: dict, exc: Exception, at: str) -> list[str]:
    error = vector["error"]
    if not error or error["at"] != at:
        return [f"unexpected {type(exc).__name__} at {at}: {exc}"]
    problems = []
    if type(exc).__name__ != error["class"]:
        problems.append(f"raised {type(exc).__name__}, expected {error['class']}: {exc}")
    if error["message_contains"] not in str(exc):
        problems.append(f"message {str(exc)!r} lacks {error['message_contains']!r}")
    return problems
