"""The result model of a gate run, with its JSON out and back in side by side.

A lane (adapter x dtype x mode x device) holds one ``VectorOutcome`` per vector it was given;
an outcome holds its verdict, its error-versus-step curve and up to ``MAX_FAILURES_KEPT``
``Failure`` records. ``LaneReport.to_json`` writes plain JSON (non-finite floats as the
strings "inf", "-inf", "nan") and ``LaneReport.from_json`` reads exactly that back.

Vector statuses: ``pass``; ``model`` (conforms to the spec plus a named deviation model);
``fail``; ``acceptable`` (an ``acceptable`` vector that deviates: allowed, reported);
``skip`` (with a reason); ``xfail``/``xpass`` (an expectation entry matched, and the vector
failed / passed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

#: Every vector status, in report order.
STATUSES = ("pass", "model", "fail", "acceptable", "xfail", "xpass", "skip")
#: Statuses of a vector that was not graded: skipped (never run), or xfail (its result was
#: replaced by an expectation entry). Every other status is a vector whose own verdict stands.
UNGRADED = ("skip", "xfail")
MAX_FAILURES_KEPT = 5


@dataclass(kw_only=True)
class Failure:
    """One thing that went wrong in one step. Numeric failures name the tensor element with
    the largest error; non-numeric ones (``iterations``, ``learning_rate_calls``, a step
    flag, an exception, the built state) have ``variable`` -1 and no element."""

    step: int  # 1-based; 0: before the first step (construction, the built state, a crash)
    kind: str  # a state kind, "update", or what differed ("iterations", "exception", ...)
    variable: int = -1  # index of the variable; -1: not about one variable
    variable_name: str = ""
    element: Optional[list] = None  # index of the worst element
    expected: Optional[float] = None
    actual: Optional[float] = None
    ulp: float = math.inf  # ulp distance of the worst element in the lane dtype
    normwise: float = math.inf  # normwise error in lane epsilons
    budget: float = 0.0  # the budget it was held to, in lane epsilons
    message: str = ""  # what a non-numeric failure is, ending ": " (printed before the numbers)

    @classmethod
    def from_json(cls, data: dict) -> "Failure":
        data = dict(data)
        if "name" in data:  # reports written before the field was named variable_name
            data["variable_name"] = data.pop("name")
        return cls(**data)


@dataclass
class VectorOutcome:
    id: str
    file: str
    result: str  # valid | acceptable | invalid (the vector's own grade)
    flags: list
    status: str  # one of STATUSES
    reason: str = ""
    first_bad_step: Optional[int] = None
    worst_ratio: float = 0.0  # max over steps and tensors of normwise / budget
    curve: dict = field(default_factory=dict)  # kind -> [max normwise per step, lane eps]
    failures: list = field(default_factory=list)
    # Graded under a deviation model (conformance/deviations.py): its name, the worst
    # error/budget against the spec plus the model, and against the spec alone.
    model: Optional[str] = None
    model_ratio: Optional[float] = None
    spec_ratio: Optional[float] = None
    dialect: str = "keras"  # whose budgets the vector was graded with

    @classmethod
    def from_json(cls, data: dict) -> "VectorOutcome":
        data = dict(data)
        data["failures"] = [Failure.from_json(f) for f in data.get("failures", [])]
        return cls(**data)


@dataclass
class LaneReport:
    adapter: str
    dtype: str
    device: str
    mode: str
    environment: dict
    seconds: float
    outcomes: list
    unused_expectations: list = field(default_factory=list)
    #: Why the lane ran no vector at all ("" when it ran): the adapter does not run this
    #: dtype, or no selected vector is of a dialect it replays. Such a lane graded nothing.
    not_run: str = ""

    def counts(self) -> dict:
        out = dict.fromkeys(STATUSES, 0)
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out

    @property
    def graded(self) -> int:
        """Vectors run, compared, and whose verdict stands (every status but UNGRADED)."""
        return sum(o.status not in UNGRADED for o in self.outcomes)

    @property
    def conforms(self) -> bool:
        """No failure, and at least one vector graded: a lane that checked nothing never
        conforms (cli.py turns a run where no lane graded anything into NOTHING CHECKED)."""
        return self.counts()["fail"] == 0 and self.graded > 0

    def to_json(self) -> dict:
        """Plain JSON: the fields, plus ``counts``, ``graded`` and ``conforms`` (derived,
        ignored on reading); non-finite floats as "inf", "-inf", "nan"."""
        data = asdict(self)
        data["counts"] = self.counts()
        data["graded"] = self.graded
        data["conforms"] = self.conforms
        return to_jsonable(data)

    @classmethod
    def from_json(cls, data: dict) -> "LaneReport":
        data = from_jsonable(data)
        return cls(data["adapter"], data["dtype"], data["device"], data["mode"], data["environment"],
                   data["seconds"], [VectorOutcome.from_json(o) for o in data["outcomes"]],
                   data.get("unused_expectations", []), data.get("not_run", ""))


def to_jsonable(value):
    """``value`` with every non-finite float written as "inf", "-inf" or "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def from_jsonable(value):
    """The inverse of ``to_jsonable``: "inf", "-inf" and "nan" back to floats."""
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    if value == "nan":
        return math.nan
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: from_jsonable(v) for k, v in value.items()}
    return value
