"""The results-file protocol, for ports in other languages.

A port reads the vectors (vectors/README.md), runs them in its own language, and writes
one JSON file:

    {
     "format": "adafactor-conformance-results", "schema_version": 1,
     "implementation": "my-port 0.3 (C++, AVX2)",     # free text, printed in the report
     "dtype": "float32", "mode": "trajectory",        # or "teacher": the port loaded the
     "device": "cpu",                                 #   golden state before every step
     "vectors": {
      "<vector id>": {"steps": [state after step 1, state after step 2, ...],
                      "initial": state before step 1}, # optional (trajectory: its own build)
      "<invalid vector id>": {"error": "ValueError"}, # the error class the port raised at
      "<other invalid id>": {"error": "ValueError", "step": 1, "steps": [...]}
                                                      # construction, or at step k (0-based)
     }
    }

A state is ``{"iterations": n, "variables": [array...], "r": [array or null...],
"c": [...], "v": [...], "average": [...] or null, "accumulator": [...] or null}``
(optionally ``"momentum": [...]`` for the dialects with a first moment, ``"learning_rate_calls":
n``, how often a callable learning rate has been called so far, and ``"is_update_step"`` /
``"ema_overwritten"``, booleans of the last step; each graded when present) with
arrays encoded as in the vectors (``{"shape": [...], "bits": [...]}``, float64 bit
patterns of the port's values widened exactly to float64).

What ``python -m conformance grade --results FILE`` checks before grading anything (each
an error, exit 2, naming the file, vector id, step and field): every vector id is in the
corpus; no vector has more steps than the vector itself; ``dtype``, ``mode`` and ``device``
are known (``device`` one of base.DEVICES); every state has its fields; every value is a
value of the declared ``dtype`` (it round-trips through that dtype exactly: float64 values
that a float32 port cannot hold are refused, never rounded). Then it grades the file with
the same runner, metrics and tolerance policy as every adapter, over the whole corpus of the
file's dialect(s) (those of the ids it names; Keras when it names none): a selected vector
of those dialects that the file lacks is a failure, "missing from the results file", unless
``--allow-partial`` is given (then it is skipped, and the header and JSON report say so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conformance import vectorfile as vf
from conformance.adapters.base import DEVICES, DTYPES, Adapter, Session, numpy_dtype
from reference.state import Kind, State

RESULTS_FORMAT = "adafactor-conformance-results"
MODES = ("teacher", "trajectory")
#: The reason of a selected vector the results file does not hold (a failure by default).
MISSING = "missing from the results file"
#: Array fields of a state (one per state kind), and the ones every state must have.
STATE_ARRAYS = tuple(k.value for k in Kind)
REQUIRED = ("iterations", "variables", "r", "c", "v")
STEP_FLAGS = ("is_update_step", "ema_overwritten")


class ResultsFileError(ValueError):
    pass


class PortError(Exception):
    """Stands for the error a port reported; ``type(e).__name__`` is the reported class."""


def load_results(path) -> dict:
    path = Path(path)
    data = vf.read_json(path, ResultsFileError)
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT or data.get("schema_version") != 1:
        got = data if not isinstance(data, dict) else data.get("format")
        version = None if not isinstance(data, dict) else data.get("schema_version")
        raise ResultsFileError(f"{path}: not a version-1 results file (format={got!r}, "
                               f"schema_version={version!r})")
    for key in ("dtype", "mode", "vectors"):
        if key not in data:
            raise ResultsFileError(f"{path}: missing field {key!r}")
    for key, allowed in (("dtype", DTYPES), ("mode", MODES), ("device", DEVICES)):
        value = data.get(key, "cpu")
        if value not in allowed:
            raise ResultsFileError(f"{path}: {key} {value!r} is unknown; choose from {list(allowed)}")
    if not isinstance(data["vectors"], dict):
        raise ResultsFileError(f"{path}: 'vectors' must be an object of vector id -> results, "
                               f"not {type(data['vectors']).__name__}")
    return data


class _RecordedSession(Session):
    def __init__(self, steps: list, path, vector, error=None, error_step=None, initial=None):
        self.steps, self.index, self.path, self.vector = steps, 0, path, vector
        self.vector_id = vector.id
        self.error, self.error_step, self.initial = error, error_step, initial

    def load(self, state: State) -> None:
        pass  # the port did its own loading (teacher mode) or ran free (trajectory)

    def step(self, grads) -> None:
        if self.error is not None and self.index == self.error_step:
            raise _port_error(self.error)
        self.index += 1

    def read(self) -> State:
        if self.index == 0:  # before step 1 (trajectory mode reads the port's own build)
            if self.initial is None:  # not reported: the vector's initial state (not graded)
                return self.vector.initial_state
            return _state(self.initial, self.path, self.vector_id, "the initial state")
        if self.index > len(self.steps):
            raise ResultsFileError(f"{self.path}: vector {self.vector_id!r} holds only {len(self.steps)} of the "
                                   f"vector's {len(self.vector.steps)} steps")
        return _state(self.steps[self.index - 1], self.path, self.vector_id, f"step {self.index}")


def _state(s: dict, path, vector_id, where) -> State:
    def arrays(items):
        return None if items is None else [vf.decode_optional(a, path, vector_id) for a in items]

    try:
        flags = {key: s[key] for key in STEP_FLAGS if s.get(key) is not None}
        missing = [key for key in REQUIRED if key not in s]
        if missing:
            raise KeyError(missing[0])
        return State(int(s["iterations"]), {kind: arrays(s.get(kind.value)) for kind in Kind},
                     s.get("learning_rate_calls"), flags or None)
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultsFileError(f"{path}: vector {vector_id!r} {where}: malformed state ({exc})") from exc


def _port_error(name) -> PortError:
    return type(str(name), (PortError,), {})(f"the port reported {name}")


class ResultsFileAdapter(Adapter):
    """Grades a results file; arrays are read as float64 and must be values of the file's
    dtype (``validate`` checks it), then converted to that dtype losslessly."""

    def __init__(self, path):
        self.path = Path(path)
        self.data = load_results(self.path)
        super().__init__(name=f"results:{self.path.name}", dtypes=(self.data["dtype"],),
                         devices=(self.data.get("device", "cpu"),), error_messages=False)

    def environment(self, device: str) -> dict:
        return {"implementation": self.data.get("implementation", "?"), "file": str(self.path)}

    def validate(self, documents: dict) -> None:
        """Check the file against the whole corpus (``vf.load_corpus``) and set
        ``dialects`` to the dialects of the vectors it names (Keras when it names none).
        Raises ResultsFileError naming the file, vector id, step and field."""
        corpus = {vector.id: vector for _, vector in vf.iter_vectors(documents)}
        unknown = sorted(i for i in self.data["vectors"] if i not in corpus)
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise ResultsFileError(f"{self.path}: vector id {shown} is not in the corpus: unknown vector id")
        lane = numpy_dtype(self.data["dtype"])
        for vector_id, entry in self.data["vectors"].items():
            vector = corpus[vector_id]
            where = f"{self.path}: vector {vector_id!r}"
            if not isinstance(entry, dict):
                raise ResultsFileError(f"{where}: must be an object, not {type(entry).__name__}")
            steps = entry.get("steps", [])
            if not isinstance(steps, list):
                raise ResultsFileError(f"{where}: 'steps' must be a list, not {type(steps).__name__}")
            if "error" in entry and not isinstance(entry["error"], str):
                raise ResultsFileError(f"{where}: 'error' must be the name of an error class, not {entry['error']!r}")
            error_step = entry.get("step")
            count = len(vector.raw["steps"])
            if error_step is not None and (not isinstance(error_step, int) or isinstance(error_step, bool)
                                           or not 0 <= error_step < count):
                raise ResultsFileError(f"{where}: 'step' {error_step!r} is not a step index of the vector "
                                       f"(0 to {count - 1})")
            allowed = error_step if "error" in entry and error_step is not None else count
            if len(steps) > allowed:
                limit = (f"has {allowed} steps" if allowed == count
                         else f"raises at step index {allowed}")
                raise ResultsFileError(f"{where} step {allowed + 1}: extra steps (the file holds {len(steps)}, "
                                       f"the vector {limit})")
            fixed = self.state_dtypes(vector, self.data["dtype"])
            states = [("the initial state", entry["initial"])] if entry.get("initial") is not None else []
            states += [(f"step {k}", s) for k, s in enumerate(steps, 1)]
            for label, state in states:
                self._check_state(state, f"{where} {label}", vector_id, lane, fixed)
        named = {corpus[i].dialect for i in self.data["vectors"]}
        self.dialects = tuple(sorted(named)) if named else ("keras",)

    def _check_state(self, state, where: str, vector_id: str, lane, fixed: dict) -> None:
        if not isinstance(state, dict):
            raise ResultsFileError(f"{where}: a state must be an object, not {type(state).__name__}")
        missing = [key for key in REQUIRED if key not in state]
        if missing:
            raise ResultsFileError(f"{where}: field {missing[0]!r} missing")
        if not isinstance(state["iterations"], int) or isinstance(state["iterations"], bool):
            raise ResultsFileError(f"{where}: field 'iterations' must be an integer, not {state['iterations']!r}")
        for kind in STATE_ARRAYS:
            items = state.get(kind)
            if items is None:
                continue
            if not isinstance(items, list):
                raise ResultsFileError(f"{where}: field {kind!r} must be a list of arrays (or null)")
            dtype = fixed.get(kind, lane)
            for i, obj in enumerate(items):
                a = vf.decode_optional(obj, self.path, vector_id)
                if a is None:
                    continue
                with np.errstate(all="ignore"):
                    back = a.astype(dtype).astype(np.float64)
                same = (back == a) | (np.isnan(back) & np.isnan(a))
                if not same.all():
                    at = tuple(int(j) for j in np.argwhere(~same)[0])
                    raise ResultsFileError(
                        f"{where}: field {kind}[{i}] element {list(at)} holds {float(a[at])!r}, which is not a "
                        f"{dtype.name} value (nearest {float(back[at])!r}): the file declares dtype "
                        f"{self.data['dtype']}, so its values must be {dtype.name} values widened exactly to float64")

    def unsupported(self, vector, dtype, device):
        if vector.id not in self.data["vectors"]:
            from conformance.applicability import skip_reason

            # A vector no port can run in this dtype is skipped as for every adapter; any
            # other selected vector of the file's dialects that it lacks is MISSING
            # (cli.py makes that a failure unless --allow-partial).
            return super().unsupported(vector, dtype, device) or skip_reason(vector, dtype) or MISSING
        return super().unsupported(vector, dtype, device)

    def create(self, vector, dtype, device) -> Session:
        entry = self.data["vectors"][vector.id]
        if "error" in entry and entry.get("step") is None:
            raise _port_error(entry["error"])
        session = _RecordedSession(entry.get("steps", []), self.path, vector, entry.get("error"),
                                   entry.get("step"), entry.get("initial"))
        return _Casting(session, dtype, self.state_dtypes(vector, dtype))


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
