"""A golden vector, decoded once into typed fields (format: vectors/README.md).

``vectorfile.load_corpus`` gives ``Vector`` objects; a vector built in memory (the fuzzer's,
the generator's) becomes one through ``as_vector``. The metadata is read when the vector is
made; the arrays (initial values, initial state, every step's gradients and expected state)
are decoded on first use, once per object, and are read-only: every lane of a process and
every skip rule shares them, so whoever hands an array to an implementation copies it.

    vector.id, .file (path relative to the corpus), .path (for messages), .dialect
    vector.config            the constructor arguments as recorded (do not modify)
    vector.config_integers   JSON Pointers of the integers in config (None: not recorded)
    vector.names, .shapes    per variable, in build order
    vector.initial_state     reference.state.State before step 1 (variables included), or None
    vector.state_dtypes      {Kind: numpy dtype} kept whatever the lane's dtype
    vector.rms_floor         the floor of RMS(x) in the step size, or None
    vector.steps             Step per apply call: .grads, .expected (a State), .learning_rate
    vector.error             ExpectedError for an invalid vector, else None

While the gate moves over to these fields, ``vector["key"]`` and ``vector.get("key")`` still
read the JSON object (``vector.raw``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np

from conformance import vectorfile as vf
from reference.state import Kind, State, kind

#: The step flags a vector records per step (``Step.expected.flags``).
STEP_FLAGS = ("is_update_step", "ema_overwritten")


@dataclass(frozen=True)
class ExpectedError:
    """What an invalid vector must raise: an exception of class ``cls`` (by name) whose
    message contains ``message_contains``, at ``construction`` or at ``step`` (0-based)."""

    cls: str
    message_contains: str
    at: str
    step: Optional[int] = None

    @classmethod
    def from_json(cls, obj: Optional[dict]) -> Optional["ExpectedError"]:
        if obj is None:
            return None
        return cls(obj["class"], obj["message_contains"], obj["at"], obj.get("step"))


@dataclass(frozen=True, eq=False)
class Step:
    """One ``apply`` call: its gradients and the golden state after it."""

    index: int  # 0-based
    grads: tuple  # one read-only float64 array (or None) per variable
    expected: Optional[State]  # None for the step that must raise
    learning_rate: Optional[float]  # the rate the step used (None: no step ran)
    learning_rate_calls: tuple  # values a recorded callable returned during this step
    margins: Optional[dict]


def dtype_of(name: str) -> np.dtype:
    """The NumPy dtype of a dtype name of the format (bfloat16 through ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _slot_kinds(holder: dict) -> list:
    """[(Kind, encoded arrays)] of the state kinds other than the variables that ``holder``
    (an ``expected`` or an ``initial_state``) keeps, in ``Kind`` order."""
    return [(k, holder[k.value]) for k in Kind if k is not Kind.VARIABLES and holder.get(k.value) is not None]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class Vector(Mapping):
    """One golden vector. Equality and hashing are by identity."""

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __init__(self, raw: dict, *, file: str = "<memory>", path=None, dialect: Optional[str] = None):
        self.raw = raw
        self.file = str(file)
        self.path = str(path if path is not None else file)
        self.id: str = raw["id"]
        self.dialect: str = dialect or raw.get("dialect", "keras")
        self.description: str = raw.get("description", "")
        self.seed: Optional[int] = raw.get("seed")
        self.config: dict = raw["config"]
        integers = raw.get("config_integers")
        self.config_integers: Optional[frozenset] = None if integers is None else frozenset(integers)
        self.result: str = raw["result"]
        self.flags: tuple = tuple(raw["flags"])
        self.error: Optional[ExpectedError] = ExpectedError.from_json(raw["error"])
        self.exclude_from_weight_decay: Optional[dict] = raw["exclude_from_weight_decay"]
        self.names: tuple = tuple(v["name"] for v in raw["variables"])
        self.shapes: tuple = tuple(tuple(v["initial"]["shape"]) for v in raw["variables"])
        if "initial_state" not in raw:
            raise vf.VectorFormatError(self.path, "has no initial_state: a vector of schema version 1? "
                                                  f"({vf.OLD_VERSIONS[1]}; regenerate it)", self.id)
        self.state_dtypes: dict = {kind(k): dtype_of(d) for k, d in (raw.get("state_dtypes") or {}).items()}
        floor = raw.get("rms_floor")
        self.rms_floor: Optional[float] = None if floor is None else vf.bits_to_float(floor)

    @classmethod
    def from_json(cls, raw: dict, *, file: str = "<memory>", path=None, dialect: Optional[str] = None) -> "Vector":
        return cls(raw, file=file, path=path, dialect=dialect)

    def __repr__(self) -> str:
        return f"Vector({self.id!r}, file={self.file!r})"

    def __reduce__(self):
        """Pickled as its JSON (the arrays are decoded again, read-only, where it lands)."""
        return (_rebuild, (self.raw, self.file, self.path, self.dialect))

    # the arrays, decoded on first use ------------------------------------------------
    def _decode_all(self, objs: list) -> list:
        """Encoded arrays (or None) as read-only float64 arrays, decoded in one pass: one
        hex parse for all of them, each array a view of one buffer."""
        shapes, bits = [], []
        for obj in objs:
            if obj is None:
                shapes.append(None)
                continue
            try:
                shape, values = tuple(obj["shape"]), obj["bits"]
                size = math.prod(shape)
            except (KeyError, TypeError, ValueError) as exc:
                raise vf.VectorFormatError(self.path, f"malformed array {str(obj)[:80]!r}: {exc}", self.id) from None
            if type(values) is not list or len(values) != size:
                raise vf.VectorFormatError(self.path, f"array of shape {list(shape)} needs {size} 16-digit values, "
                                                      f"got {len(values) if type(values) is list else values!r}",
                                           self.id)
            shapes.append((shape, size))
            bits.extend(values)
        try:
            raw = bytes.fromhex("".join(bits))
        except (TypeError, ValueError) as exc:
            raise vf.VectorFormatError(self.path, f"a value is not a 16-digit bit string: {exc}", self.id) from None
        if len(raw) != 8 * len(bits):
            raise vf.VectorFormatError(self.path, "a value is not a 16-digit bit string", self.id)
        flat = _frozen(np.frombuffer(raw, dtype=">f8").astype(np.float64))
        out, offset = [], 0
        for item in shapes:
            if item is None:
                out.append(None)
                continue
            shape, size = item
            out.append(flat[offset:offset + size].reshape(shape))
            offset += size
        return out

    @cached_property
    def initial(self) -> tuple:
        """The initial value of each variable (float64, read-only)."""
        return tuple(self._decode_all([v["initial"] for v in self.raw["variables"]]))

    @cached_property
    def initial_state(self) -> Optional[State]:
        """The state before step 1, variables included (float64 arrays, read-only; use
        ``.copy()`` or ``.cast()`` for arrays of your own). None where no optimizer is
        built (an invalid configuration)."""
        start = self.raw["initial_state"]
        if start is None:
            return None
        kinds = _slot_kinds(start)
        arrays = iter(self._decode_all([a for _, items in kinds for a in items]))
        values = {Kind.VARIABLES: list(self.initial)}
        values.update({k: [next(arrays) for _ in items] for k, items in kinds})
        return State(start["iterations"], values, 0, None)

    @cached_property
    def steps(self) -> tuple:
        """Every step, decoded (see ``Step``)."""
        n = len(self.shapes)
        layout, encoded = [], []
        for index, raw in enumerate(self.raw["steps"]):
            grads = raw["grads"]
            if len(grads) != n:
                raise vf.VectorFormatError(self.path, f"steps[{index}] holds {len(grads)} gradients for {n} "
                                                      "variables", self.id)
            e = raw["expected"]
            kinds = [] if e is None else [(Kind.VARIABLES, e["variables"]), *_slot_kinds(e)]
            layout.append(kinds)
            encoded.extend(grads)
            for _, items in kinds:
                encoded.extend(items)
        arrays = iter(self._decode_all(encoded))
        out, calls = [], 0
        for index, (raw, kinds) in enumerate(zip(self.raw["steps"], layout)):
            grads = tuple(next(arrays) for _ in range(n))
            for i, g in enumerate(grads):
                if g is not None and g.shape != self.shapes[i]:
                    raise vf.VectorFormatError(self.path, f"steps[{index}].grads[{i}] has shape {list(g.shape)}, "
                                                          f"variable {i} has shape {list(self.shapes[i])}", self.id)
            step_calls = tuple(vf.bits_to_float(b) for b in raw.get("learning_rate_calls", ()))
            calls += len(step_calls)
            e = raw["expected"]
            expected = learning_rate = None
            if e is not None:
                values = {k: [next(arrays) for _ in items] for k, items in kinds}
                flags = {key: e[key] for key in STEP_FLAGS if e.get(key) is not None}
                expected = State(e["iterations"], values, calls, flags)
                learning_rate = None if e["learning_rate"] is None else vf.bits_to_float(e["learning_rate"])
            out.append(Step(index, grads, expected, learning_rate, step_calls, raw.get("margins")))
        return tuple(out)

    @cached_property
    def learning_rate_calls(self) -> tuple:
        """Every value a recorded callable learning rate returns, in call order."""
        return tuple(v for step in self.steps for v in step.learning_rate_calls)

    @property
    def goldens(self) -> list:
        """The golden state after each step (None for the step that must raise)."""
        return [step.expected for step in self.steps]

    # transition shim: the JSON object as a read-only mapping ---------------------------
    def __getitem__(self, key):
        if key == "dialect":
            return self.dialect
        return self.raw[key]

    def __iter__(self):
        yield from self.raw
        if "dialect" not in self.raw:
            yield "dialect"

    def __len__(self) -> int:
        return len(self.raw) + ("dialect" not in self.raw)


def _rebuild(raw: dict, file: str, path: str, dialect: str) -> Vector:
    return Vector(raw, file=file, path=path, dialect=dialect)


def as_vector(obj, *, file: str = "<memory>", path=None, dialect: Optional[str] = None) -> Vector:
    """``obj`` itself if it is a ``Vector``, else the ``Vector`` of a JSON object (a vector
    built in memory; the loader's checks have not run on it, but its gradients are checked
    against its variables when its steps are decoded)."""
    if isinstance(obj, Vector):
        return obj
    return Vector(obj, file=file, path=path, dialect=dialect)
