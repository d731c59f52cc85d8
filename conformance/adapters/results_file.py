"""The results-file protocol, for ports in other languages.

A port reads the vectors (vectors/README.md), runs them in its own language, and writes
one JSON file:

    {
     "format": "adafactor-conformance-results", "schema_version": 1,
     "implementation": "my-port 0.3 (C++, AVX2)",     # free text, printed in the report
     "dtype": "float32", "mode": "trajectory",        # or "teacher": the port loaded the
     "device": "cpu",                                 #   golden state before every step
     "vectors": {
      "<vector id>": {"steps": [state after step 1, state after step 2, ...]},
      "<invalid vector id>": {"error": "ValueError"}, # the error class the port raised at
      "<other invalid id>": {"error": "ValueError", "step": 1, "steps": [...]}
                                                      # construction, or at step k (0-based)
     }
    }

A state is ``{"iterations": n, "variables": [array...], "r": [array or null...],
"c": [...], "v": [...], "average": [...] or null, "accumulator": [...] or null}``
(optionally ``"learning_rate_calls": n``, how often a callable learning rate has been
called so far; graded when present) with
arrays encoded as in the vectors (``{"shape": [...], "bits": [...]}``, float64 bit
patterns of the port's values widened exactly to float64). Vectors the file does not
mention are skipped. ``python -m conformance grade --results FILE`` grades it with the
same runner, metrics and tolerance policy as every adapter.
"""

from __future__ import annotations

from pathlib import Path

from conformance import vectorfile as vf
from conformance.adapters.base import Adapter, LaneState, Session

RESULTS_FORMAT = "adafactor-conformance-results"


class ResultsFileError(ValueError):
    pass


class PortError(Exception):
    """Stands for the error a port reported; ``type(e).__name__`` is the reported class."""


def load_results(path) -> dict:
    path = Path(path)
    data = vf.read_json(path, ResultsFileError)
    if data.get("format") != RESULTS_FORMAT or data.get("schema_version") != 1:
        raise ResultsFileError(f"{path}: not a version-1 results file (format={data.get('format')!r}, "
                               f"schema_version={data.get('schema_version')!r})")
    for key in ("dtype", "mode", "vectors"):
        if key not in data:
            raise ResultsFileError(f"{path}: missing field {key!r}")
    return data


class _RecordedSession(Session):
    def __init__(self, steps: list, path, vector_id, error=None, error_step=None):
        self.steps, self.index, self.path, self.vector_id = steps, 0, path, vector_id
        self.error, self.error_step = error, error_step

    def load(self, state: LaneState) -> None:
        pass  # the port did its own loading (teacher mode) or ran free (trajectory)

    def step(self, grads) -> None:
        if self.error is not None and self.index == self.error_step:
            raise _port_error(self.error)
        self.index += 1

    def read(self) -> LaneState:
        if self.index > len(self.steps):
            raise ResultsFileError(f"{self.path}: vector {self.vector_id!r} has only {len(self.steps)} steps")
        s = self.steps[self.index - 1]

        def arrays(items):
            return None if items is None else [vf.decode_optional(a, self.path, self.vector_id) for a in items]

        try:
            return LaneState(int(s["iterations"]), arrays(s["variables"]), arrays(s["r"]), arrays(s["c"]),
                             arrays(s["v"]), arrays(s.get("average")), arrays(s.get("accumulator")),
                             s.get("learning_rate_calls"))
        except (KeyError, TypeError) as exc:
            raise ResultsFileError(f"{self.path}: vector {self.vector_id!r} step {self.index}: "
                                   f"malformed state ({exc})") from exc


def _port_error(name) -> PortError:
    return type(str(name), (PortError,), {})(f"the port reported {name}")


class ResultsFileAdapter(Adapter):
    """Grades a results file; arrays are read as float64 and rounded to the file's dtype
    (a lossless round trip when the port wrote its lane values)."""

    def __init__(self, path):
        self.path = Path(path)
        self.data = load_results(self.path)
        super().__init__(name=f"results:{self.path.name}", dtypes=(self.data["dtype"],),
                         devices=(self.data.get("device", "cpu"),))

    def environment(self, device: str) -> dict:
        return {"implementation": self.data.get("implementation", "?"), "file": str(self.path)}

    def unsupported(self, vector, dtype, device):
        if vector["id"] not in self.data["vectors"]:
            return "not in the results file"
        return super().unsupported(vector, dtype, device)

    def create(self, vector, dtype, device) -> Session:
        entry = self.data["vectors"][vector["id"]]
        if "error" in entry and entry.get("step") is None:
            raise _port_error(entry["error"])
        session = _RecordedSession(entry.get("steps", []), self.path, vector["id"],
                                   entry.get("error"), entry.get("step"))
        return _Casting(session, dtype)


class _Casting(Session):
    """Round what the file holds to the lane dtype (the runner checks dtypes)."""

    def __init__(self, inner: _RecordedSession, dtype: str):
        self.inner, self.dtype = inner, dtype

    def load(self, state):
        self.inner.load(state)

    def step(self, grads):
        self.inner.step(grads)

    def read(self):
        return self.inner.read().cast(self.dtype)
