"""The results-file protocol, for ports in other languages: the loader and the adapter.

The protocol itself (format versions 1 and 2, state encoding, teacher and trajectory mode,
error entries, what is validated, exit codes, an example) is documented in
conformance/RESULTS_FILE.md; the JSON Schemas are conformance/schemas/results.v1.schema.json
and results.v2.schema.json. This module:

* ``load_results(path)`` parses a file and checks everything that does not need the corpus
  (types, required and unknown fields, lanes, arrays); ``load_lanes(path)`` gives its lanes.
* ``ResultsFileAdapter(lane)`` replays one lane; its ``validate(documents)`` checks the lane
  against the corpus (ids, dialects, step counts, shapes, dtype exactness, the call counts a
  recorded learning rate needs) before anything is graded.
* ``check_distinct(adapters)``: no two lanes of the files graded together are the same lane.

Every problem is a ``ResultsFileError`` whose one-line message names the file, the lane, the
vector id, the step and the field; ``python -m conformance grade`` prints it and exits 2.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from conformance import vectorfile as vf
from conformance.adapters.base import DEVICES, DTYPES, Adapter, Session, numpy_dtype
from reference.state import Kind, State

RESULTS_FORMAT = "adafactor-conformance-results"
VERSIONS = (1, 2)
MODES = ("teacher", "trajectory")
DIALECTS = vf.DIALECTS
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
#: The reason of a selected vector the results file does not hold (a failure by default).
MISSING = "missing from the results file"
#: Array fields of a state (one per state kind), and the ones every state must have.
STATE_ARRAYS = tuple(k.value for k in Kind)
REQUIRED = ("iterations", "variables", "r", "c", "v")
STEP_FLAGS = ("is_update_step", "ema_overwritten")
#: Every field version 2 knows; any other is an error (a typo never passes silently).
TOP_FIELDS = ("format", "schema_version", "implementation", "device", "lanes")
LANE_FIELDS = ("dialect", "dtype", "mode", "vectors")
ENTRY_FIELDS = ("steps", "initial", "error", "message", "step")
STATE_FIELDS = ("iterations", "learning_rate_calls", *STEP_FLAGS, *STATE_ARRAYS)
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")


def schema_path(version: int) -> Path:
    """The JSON Schema (draft 2020-12) of results files of ``version``."""
    return SCHEMA_DIR / f"results.v{version}.schema.json"


class ResultsFileError(ValueError):
    pass


class PortError(Exception):
    """Stands for the error a port reported; ``type(e).__name__`` is the reported class and
    ``str(e)`` its message (version 2). ``reported_only``: grading matches the class by this
    name alone, never by the base classes of this stand-in (grading.error_problems)."""

    reported_only = True


def _port_error(name: str, message: Optional[str] = None) -> PortError:
    cls = type(str(name), (PortError,), {})
    return cls(message if message is not None else f"the port reported {name}")


def _kind_of(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- a lane
@dataclass
class Lane:
    """One lane of a results file: a dtype, a mode, (version 2) a dialect, and the entries
    per vector id. A version-1 file is one lane whose dialects are those of the ids it names."""

    path: Path
    version: int
    index: Optional[int]  # the position in "lanes" (version 2); None for a version-1 file
    implementation: str
    device: str
    dtype: str
    mode: str
    dialect: Optional[str]  # version 2: named (default "keras"); version 1: None
    vectors: dict

    @property
    def where(self) -> str:
        if self.index is None:
            return str(self.path)
        return f"{self.path}: lane {self.index} ({self.dialect} {self.dtype} {self.mode})"

    def describe(self) -> str:
        what = f"{self.path}" if self.index is None else f"{self.path} lane {self.index}"
        return f"{what} ({self.dtype} {self.mode} on {self.device})"


def load_results(path) -> dict:
    """Parse a results file and check all that does not need the corpus; the parsed JSON.
    Raises ResultsFileError (one line: file, lane, vector id, step, field)."""
    path = Path(path)
    data = vf.read_json(path, ResultsFileError)
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT \
            or data.get("schema_version") not in VERSIONS or isinstance(data.get("schema_version"), bool):
        got = data if not isinstance(data, dict) else data.get("format")
        version = None if not isinstance(data, dict) else data.get("schema_version")
        raise ResultsFileError(f"{path}: not a version-1 results file, nor a version-2 one (format={got!r}, "
                               f"schema_version={version!r}; expected format {RESULTS_FORMAT!r}, schema_version "
                               f"1 or 2)")
    if data["schema_version"] == 1:
        _check_v1(data, path)
    else:
        _check_v2(data, path)
    return data


def load_lanes(path) -> list[Lane]:
    """The lanes of a results file (``load_results``'s checks done)."""
    path = Path(path)
    data = load_results(path)
    if data["schema_version"] == 1:
        return [Lane(path, 1, None, str(data.get("implementation", "?")), data.get("device", "cpu"),
                     data["dtype"], data["mode"], None, data["vectors"])]
    return [Lane(path, 2, i, data["implementation"], data["device"], lane["dtype"], lane["mode"],
                 lane.get("dialect", "keras"), lane["vectors"]) for i, lane in enumerate(data["lanes"])]


def _check_v1(data: dict, path: Path) -> None:
    """Version 1 as it always was: top-level dtype, mode, device and vectors; unknown fields
    ignored; an error entry carries the class only. States and arrays are checked as in
    version 2 (a malformed one was an error before too, with a less precise message)."""
    for key in ("dtype", "mode", "vectors"):
        if key not in data:
            raise ResultsFileError(f"{path}: missing field {key!r}")
    for key, allowed in (("dtype", DTYPES), ("mode", MODES), ("device", DEVICES)):
        value = data.get(key, "cpu")
        if value not in allowed:
            raise ResultsFileError(f"{path}: {key} {value!r} is unknown; choose from {list(allowed)}")
    if not isinstance(data.get("implementation", ""), str):
        raise ResultsFileError(f"{path}: field 'implementation' must be a string, not "
                               f"{_kind_of(data['implementation'])}")
    if not isinstance(data["vectors"], dict):
        raise ResultsFileError(f"{path}: 'vectors' must be an object of vector id -> results, "
                               f"not {type(data['vectors']).__name__}")
    for vector_id, entry in data["vectors"].items():
        _check_entry(entry, f"{path}: vector {vector_id!r}", version=1)


def _check_v2(data: dict, path: Path) -> None:
    where = str(path)
    _unknown_fields(data, TOP_FIELDS, where, "a version-2 results file")
    for key in ("implementation", "device", "lanes"):
        if key not in data:
            raise ResultsFileError(f"{where}: field {key!r} missing")
    if not isinstance(data["implementation"], str) or not data["implementation"].strip():
        raise ResultsFileError(f"{where}: field 'implementation' must be a non-empty string (the port's name and "
                               f"version), not {_kind_of(data['implementation'])}")
    if data["device"] not in DEVICES:
        raise ResultsFileError(f"{where}: field 'device': {data['device']!r} is unknown; choose from {list(DEVICES)}")
    lanes = data["lanes"]
    if not isinstance(lanes, list) or not lanes:
        raise ResultsFileError(f"{where}: field 'lanes' must be a non-empty list of lanes, not "
                               f"{'an empty list' if lanes == [] else _kind_of(lanes)}")
    seen = {}
    for i, lane in enumerate(lanes):
        here = f"{where}: lane {i}"
        if not isinstance(lane, dict):
            raise ResultsFileError(f"{here}: a lane must be an object, not {_kind_of(lane)}")
        _unknown_fields(lane, LANE_FIELDS, here, "a lane")
        for key in ("dtype", "mode", "vectors"):
            if key not in lane:
                raise ResultsFileError(f"{here}: field {key!r} missing")
        for key, allowed in (("dialect", DIALECTS), ("dtype", DTYPES), ("mode", MODES)):
            value = lane.get(key, "keras")
            if not isinstance(value, str) or value not in allowed:
                raise ResultsFileError(f"{here}: field {key!r}: {value!r} is unknown; choose from {list(allowed)}")
        identity = (lane.get("dialect", "keras"), lane["dtype"], lane["mode"])
        if identity in seen:
            raise ResultsFileError(f"{here}: duplicate lane: lane {seen[identity]} is also {' '.join(identity)} "
                                   f"(one lane per dialect, dtype and mode)")
        seen[identity] = i
        here = f"{here} ({' '.join(identity)})"
        if not isinstance(lane["vectors"], dict):
            raise ResultsFileError(f"{here}: field 'vectors' must be an object of vector id -> entry, not "
                                   f"{_kind_of(lane['vectors'])}")
        for vector_id, entry in lane["vectors"].items():
            _check_entry(entry, f"{here}: vector {vector_id!r}", version=2)


def _unknown_fields(obj: dict, known: tuple, where: str, what: str) -> None:
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ResultsFileError(f"{where}: field {unknown[0]!r} is not a field of {what} (known: {', '.join(known)})")


def _check_entry(entry, where: str, version: int) -> None:
    if not isinstance(entry, dict):
        raise ResultsFileError(f"{where}: must be an object, not {_kind_of(entry)}")
    if version == 2:
        _unknown_fields(entry, ENTRY_FIELDS, where, "a vector's entry")
    steps = entry.get("steps", [])
    if not isinstance(steps, list):
        raise ResultsFileError(f"{where}: 'steps' must be a list, not {_kind_of(steps)}")
    if "error" in entry:
        error = entry["error"]
        if not isinstance(error, str) or not error:
            raise ResultsFileError(f"{where}: 'error' must be the name of an error class, not {error!r}")
        if version == 2:
            if "message" not in entry:
                raise ResultsFileError(f"{where}: field 'message' missing: a version-2 error entry carries the "
                                       f"port's error message")
            if not isinstance(entry["message"], str):
                raise ResultsFileError(f"{where}: field 'message' must be a string, not {_kind_of(entry['message'])}")
    elif version == 2:
        for key in ("message", "step"):
            if key in entry:
                raise ResultsFileError(f"{where}: field {key!r} without 'error' (only an error entry has one)")
    error_step = entry.get("step")
    if error_step is not None and (not _is_int(error_step) or error_step < 0):
        raise ResultsFileError(f"{where}: field 'step' must be the 0-based index of the step that raised (an "
                               f"integer >= 0; omitted: at construction), not {error_step!r}")
    if version == 2 and "step" in entry and error_step is None:
        raise ResultsFileError(f"{where}: field 'step' is null: omit it for an error at construction")
    initial = entry.get("initial")
    if initial is not None:
        _check_state(initial, f"{where} the initial state", version)
    for k, state in enumerate(steps, 1):
        _check_state(state, f"{where} step {k}", version)


def _check_state(state, where: str, version: int) -> None:
    if not isinstance(state, dict):
        raise ResultsFileError(f"{where}: a state must be an object, not {_kind_of(state)}")
    if version == 2:
        _unknown_fields(state, STATE_FIELDS, where, "a state")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise ResultsFileError(f"{where}: field {missing[0]!r} missing")
    if not _is_int(state["iterations"]) or state["iterations"] < 0:
        raise ResultsFileError(f"{where}: field 'iterations' must be an integer >= 0, not {state['iterations']!r}")
    calls = state.get("learning_rate_calls")
    if ("learning_rate_calls" in state and version == 2 or calls is not None) and (not _is_int(calls) or calls < 0):
        raise ResultsFileError(f"{where}: field 'learning_rate_calls' must be an integer >= 0 (the calls of the "
                               f"learning-rate callable so far), not {calls!r}")
    for key in STEP_FLAGS:
        value = state.get(key)
        if (key in state and version == 2 or value is not None) and not isinstance(value, bool):
            raise ResultsFileError(f"{where}: field {key!r} must be a boolean, not {value!r}")
    for kind in STATE_ARRAYS:
        items = state.get(kind)
        if items is None:
            continue
        if not isinstance(items, list):
            raise ResultsFileError(f"{where}: field {kind!r} must be a list of arrays (or null), not "
                                   f"{_kind_of(items)}")
        for i, obj in enumerate(items):
            if obj is not None:
                _check_array(obj, f"{where}: field {kind}[{i}]")


def _check_array(obj, where: str) -> None:
    if not isinstance(obj, dict) or set(obj) != {"shape", "bits"}:
        got = sorted(obj) if isinstance(obj, dict) else _kind_of(obj)
        raise ResultsFileError(f"{where}: an array is {{\"shape\": [...], \"bits\": [...]}} (or null), not {got}")
    shape, bits = obj["shape"], obj["bits"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise ResultsFileError(f"{where}: 'shape' must be a list of integers >= 0, not {shape!r}")
    if not isinstance(bits, list):
        raise ResultsFileError(f"{where}: 'bits' must be a list of 16-hex-digit strings, not {_kind_of(bits)}")
    for j, b in enumerate(bits):
        if not isinstance(b, str) or not _HEX16.fullmatch(b):
            raise ResultsFileError(f"{where}: bits[{j}] = {b!r} is not 16 hex digits (a float64 bit pattern)")
    size = math.prod(shape)
    if len(bits) != size:
        raise ResultsFileError(f"{where}: shape {shape} holds {size} values, 'bits' has {len(bits)}")


# ----------------------------------------------------------------------------- sessions
class _RecordedSession(Session):
    def __init__(self, steps: list, where, vector, error=None, error_step=None, initial=None, message=None):
        self.steps, self.index, self.where, self.vector = steps, 0, where, vector
        self.vector_id = vector.id
        self.error, self.error_step, self.initial, self.message = error, error_step, initial, message

    def load(self, state: State) -> None:
        pass  # the port did its own loading (teacher mode) or ran free (trajectory)

    def step(self, grads) -> None:
        if self.error is not None and self.index == self.error_step:
            raise _port_error(self.error, self.message)
        self.index += 1

    def read(self) -> State:
        if self.index == 0:  # before step 1 (trajectory mode reads the port's own build)
            if self.initial is None:  # not reported: the vector's initial state (not graded)
                return self.vector.initial_state
            return _state(self.initial)
        if self.index > len(self.steps):
            raise ResultsFileError(f"{self.where}: vector {self.vector_id!r} holds only {len(self.steps)} of the "
                                   f"vector's {len(self.vector.steps)} steps")
        return _state(self.steps[self.index - 1])


def _state(s: dict) -> State:
    """A checked state (``_check_state`` and ``validate`` ran) as a float64 ``State``."""
    def arrays(items):
        return None if items is None else [vf.decode_optional(a) for a in items]

    flags = {key: s[key] for key in STEP_FLAGS if s.get(key) is not None}
    return State(int(s["iterations"]), {kind: arrays(s.get(kind.value)) for kind in Kind},
                 s.get("learning_rate_calls"), flags or None)


# ----------------------------------------------------------------------------- the adapter
class ResultsFileAdapter(Adapter):
    """Grades one lane of a results file; arrays are read as float64 and must be values of
    the lane's dtype (``validate`` checks it), then converted to that dtype losslessly.
    ``source``: a ``Lane``, or a path (its lane ``lane``, the only one of a version-1 file)."""

    def __init__(self, source, lane: int = 0):
        if not isinstance(source, Lane):
            lanes = load_lanes(source)
            if not 0 <= lane < len(lanes):
                raise ResultsFileError(f"{source}: has {len(lanes)} lane(s), no lane {lane}")
            source = lanes[lane]
        self.lane = source
        self.path = source.path
        name = f"results:{self.path.name}"
        if source.dialect not in (None, "keras"):
            name += f"[{source.dialect}]"
        super().__init__(name=name, dtypes=(source.dtype,), devices=(source.device,),
                         error_messages=source.version >= 2)
        if source.dialect is not None:
            self.dialects = (source.dialect,)

    def environment(self, device: str) -> dict:
        env = {"implementation": self.lane.implementation, "file": str(self.path),
               "results_schema_version": self.lane.version}
        if self.lane.index is not None:
            env["lane"] = self.lane.index
        return env

    def validate(self, documents: dict) -> None:
        """Check the lane against the whole corpus (``vf.load_corpus``); for a version-1 file
        set ``dialects`` to the dialects of the vectors it names (Keras when it names none).
        Raises ResultsFileError naming the file, lane, vector id, step and field."""
        lane, where = self.lane, self.lane.where
        corpus = {vector.id: vector for _, vector in vf.iter_vectors(documents)}
        unknown = sorted(i for i in lane.vectors if i not in corpus)
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise ResultsFileError(f"{where}: vector id {shown} is not in the corpus: unknown vector id")
        if lane.dialect is not None:
            foreign = sorted(i for i in lane.vectors if corpus[i].dialect != lane.dialect)
            if foreign:
                raise ResultsFileError(f"{where}: vector {foreign[0]!r} is a {corpus[foreign[0]].dialect} vector, "
                                       f"but the lane's dialect is {lane.dialect} (one lane per dialect: add "
                                       f"\"dialect\": \"{corpus[foreign[0]].dialect}\" to a lane of its own)")
        dtype = numpy_dtype(lane.dtype)
        for vector_id, entry in lane.vectors.items():
            self._check_entry(corpus[vector_id], entry, f"{where}: vector {vector_id!r}", dtype)
        if lane.dialect is None:
            named = {corpus[i].dialect for i in lane.vectors}
            self.dialects = tuple(sorted(named)) if named else ("keras",)

    def _check_entry(self, vector, entry: dict, where: str, lane_dtype) -> None:
        steps = entry.get("steps", [])
        error_step = entry.get("step")
        count = len(vector.raw["steps"])
        if "error" in entry and error_step is not None and not error_step < count:
            raise ResultsFileError(f"{where}: field 'step' {error_step!r} is not a step index of the vector "
                                   f"(0 to {count - 1})" if count else
                                   f"{where}: field 'step' {error_step!r}: the vector has no steps (an error can "
                                   f"only be at construction: omit 'step')")
        allowed = error_step if "error" in entry and error_step is not None else count
        if len(steps) > allowed:
            limit = f"has {allowed} steps" if allowed == count else f"raises at step index {allowed}"
            raise ResultsFileError(f"{where} step {allowed + 1}: extra steps (the file holds {len(steps)}, "
                                   f"the vector {limit})")
        recorded = isinstance(vector.config.get("learning_rate"), dict) \
            and vector.config["learning_rate"].get("callable") == "recorded"
        fixed = self.state_dtypes(vector, self.lane.dtype)
        goldens = [step.expected for step in vector.steps]
        states = [("the initial state", entry["initial"], vector.initial_state)] \
            if entry.get("initial") is not None else []
        states += [(f"step {k}", s, goldens[k - 1]) for k, s in enumerate(steps, 1)]
        for label, state, golden in states:
            here = f"{where} {label}"
            if (self.lane.version >= 2 and recorded and label != "the initial state"
                    and "learning_rate_calls" not in state):
                raise ResultsFileError(f"{here}: field 'learning_rate_calls' missing: the vector's learning rate is "
                                       f"a recorded callable, so every state after a step reports how often it has "
                                       f"been called since construction")
            self._check_arrays(state, here, vector, golden, lane_dtype, fixed)

    def _check_arrays(self, state: dict, where: str, vector, golden: Optional[State], lane_dtype, fixed) -> None:
        n = len(vector.shapes)
        for kind in STATE_ARRAYS:
            items = state.get(kind)
            if items is None:
                continue
            if len(items) != n:
                raise ResultsFileError(f"{where}: field {kind!r} holds {len(items)} arrays for the vector's "
                                       f"{n} variables (one per variable, null where it keeps none)")
            want = None if golden is None else golden.get(kind)
            dtype = fixed.get(Kind(kind), lane_dtype)
            for i, obj in enumerate(items):
                if obj is None:
                    continue
                a = vf.decode_array(obj)
                expected_shape = vector.shapes[i] if kind == "variables" else (
                    None if want is None or want[i] is None else want[i].shape)
                if expected_shape is not None and a.shape != tuple(expected_shape):
                    raise ResultsFileError(f"{where}: field {kind}[{i}] has shape {list(a.shape)}, the vector's "
                                           f"has {list(expected_shape)}")
                with np.errstate(all="ignore"):
                    back = a.astype(dtype).astype(np.float64)
                same = (back == a) | (np.isnan(back) & np.isnan(a))
                if not same.all():
                    at = tuple(int(j) for j in np.argwhere(~same)[0])
                    raise ResultsFileError(
                        f"{where}: field {kind}[{i}] element {list(at)} holds {float(a[at])!r}, which is not a "
                        f"{dtype.name} value (nearest {float(back[at])!r}): the lane's dtype is {self.lane.dtype}"
                        f"{'' if dtype == lane_dtype else f' and the vector keeps {kind} in {dtype.name}'}, so "
                        f"its values must be {dtype.name} values widened exactly to float64")

    def unsupported(self, vector, dtype, device):
        if vector.id not in self.lane.vectors:
            from conformance.applicability import skip_reason

            # A vector no port can run in this dtype is skipped as for every adapter; any
            # other selected vector of the lane's dialects that it lacks is MISSING
            # (cli.py makes that a failure unless --allow-partial).
            return super().unsupported(vector, dtype, device) or skip_reason(vector, dtype) or MISSING
        return super().unsupported(vector, dtype, device)

    def create(self, vector, dtype, device) -> Session:
        entry = self.lane.vectors[vector.id]
        if "error" in entry and entry.get("step") is None:
            raise _port_error(entry["error"], entry.get("message"))
        session = _RecordedSession(entry.get("steps", []), self.lane.where, vector, entry.get("error"),
                                   entry.get("step"), entry.get("initial"), entry.get("message"))
        return _Casting(session, dtype, self.state_dtypes(vector, dtype))


def check_distinct(adapters: list) -> None:
    """No two lanes graded together are the same lane: the same dtype, mode and device with
    a dialect in common (validate first: a version-1 file's dialects come from its ids)."""
    seen = []
    for adapter in adapters:
        lane = adapter.lane
        for other in seen:
            o = other.lane
            common = sorted(set(adapter.dialects) & set(other.dialects))
            if (lane.dtype, lane.mode, lane.device) == (o.dtype, o.mode, o.device) and common:
                raise ResultsFileError(f"{lane.where}: duplicate lane: {o.where} grades the same "
                                       f"{', '.join(common)} {lane.dtype} {lane.mode} lane on {lane.device} "
                                       f"(each lane once across the --results files)")
        seen.append(adapter)


class _Casting(Session):
    """Convert what the file holds to the lane dtype (and state kinds the vector keeps in a
    dtype of their own to that one). ``validate`` has checked that this is exact."""

    def __init__(self, inner: _RecordedSession, dtype: str, fixed: dict):
        self.inner, self.dtype, self.fixed = inner, dtype, fixed

    def load(self, state):
        self.inner.load(state)

    def step(self, grads):
        self.inner.step(grads)

    def read(self):
        raw = self.inner.read()
        state = raw.cast(numpy_dtype(self.dtype))
        for kind, dtype in self.fixed.items():
            items = raw.get(kind)
            if items is not None:
                state.values[kind] = [None if a is None else np.asarray(a, dtype=np.float64).astype(dtype)
                                      for a in items]
        return state
