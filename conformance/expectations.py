"""Known deviations as data: skip/xfail files, one entry per line, each with a reason.

    # comment
    <verdict> <selector> [<selector> ...]  # reason, with a link

``verdict`` is one of:

``model <name>``
    a known numeric deviation, bounded: the selected vectors are graded against the spec
    and, where that fails, against the spec plus deviation model ``<name>``
    (conformance/deviations.py) under the model's derived budget: PASS, MODEL (conforms
    under the named model) or FAIL. A model entry may select every vector of a lane.
``xfail because=<what>``
    run; only the named *non-numeric* failure is expected (XFAIL), any other failure stays
    a FAIL, a pass is an XPASS. ``<what>`` is ``raises:<ErrorClass>`` (the implementation
    raises that class) or a failure kind that is not arithmetic: ``learning_rate_calls``,
    ``iterations``, ``is_update_step``, ``ema_overwritten``. A numeric deviation is never an
    xfail: it needs a model.
``skip``
    not run.
``tolerance x<factor>``
    a per-adapter override: the budget of the selected tensors is multiplied by the factor
    (at most ``MAX_FACTOR``), e.g. ``tolerance dtype=float64 kind=update x4  # XLA sums in
    another order (link)``; the reason must say why the difference is legitimate.

Every selector must match for the entry to apply:

    id=<pattern>      vector id: a prefix, or an fnmatch pattern when it holds * ? [
    flag=<FLAG>[,<FLAG>...]  the vector carries every one of these flags
    result=<grade>    the vector's result: valid, acceptable or invalid
    dtype=<name>      lane dtype (float64, float32, float16, bfloat16)
    mode=<name>       teacher or trajectory
    device=<name>     cpu or gpu
    kind=<tensor>     tolerance entries only: variables, update, r, c, v, average, accumulator, momentum

A value starting with ``!`` negates the selector (``id=!special_values/huge``: every
vector except those).

Selector values are checked: an unknown dtype, mode, device, result or kind is an error,
and so is a flag that no vector of the corpus carries (``check_flags``), never a silent
non-match. A skip or xfail entry cannot hide a lane: one that narrows by no positive
``id=`` or ``flag=`` selector, or whose ``id=`` pattern matches any id, is refused, and so
is one that matches every vector of a lane it runs on (``check_lane``).

An entry that matches no vector of the run is reported as unused (a stale entry hides
nothing but should be removed). Files live in conformance/expectations/<adapter>.txt and are
picked up automatically for registered adapters; ``--xfail-file`` adds more.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from conformance.tolerance import KINDS
from conformance.vector import as_vector

DIRECTORY = Path(__file__).resolve().parent / "expectations"
VERDICTS = ("skip", "xfail", "tolerance", "model")
KEYS = ("id", "flag", "result", "dtype", "mode", "device", "kind")
TENSOR_KINDS = KINDS  # what a tolerance entry's kind= may name: every tensor with a budget
#: The values a lane selector may take.
LANE_VALUES = {"dtype": ("float64", "float32", "float16", "bfloat16"), "mode": ("teacher", "trajectory"),
               "device": ("cpu", "gpu"), "result": ("valid", "acceptable", "invalid")}
#: The non-numeric failures an xfail may name (besides ``raises:<ErrorClass>``).
NON_NUMERIC = ("learning_rate_calls", "iterations", "is_update_step", "ema_overwritten")
#: The largest budget multiplier a tolerance entry may give: past it, the "tolerance" is a
#: blindfold, and the deviation needs a model (conformance/deviations.py).
MAX_FACTOR = 64.0


class ExpectationError(ValueError):
    """A malformed expectation file (exit code 2)."""


@dataclass
class Entry:
    verdict: str
    selectors: dict
    reason: str
    source: str  # file:line
    used: int = field(default=0)
    factor: float = 1.0  # tolerance entries: the budget multiplier
    model: str = ""  # model entries: the deviation model's name
    because: str = ""  # xfail entries: the failure expected

    def unexplained(self, reason: str, failures=()) -> Optional[str]:
        """None when a failed outcome (its reason and failures) is the failure this xfail
        names, else what differs."""
        if self.because.startswith("raises:"):
            name = self.because.split(":", 1)[1]
            return None if reason.startswith(f"raised {name}") else f"raises {name}"
        kinds = {f.kind for f in failures}
        if kinds and kinds <= {self.because}:
            return None
        return f"only {self.because} differs (failing: {', '.join(sorted(kinds)) or reason})"

    def matches(self, vector, dtype: str, mode: str, device: str) -> bool:
        vector = as_vector(vector)
        lane = {"dtype": dtype, "mode": mode, "device": device, "result": vector.result}
        for key, value in self.selectors.items():
            negate = value.startswith("!")
            if negate:
                value = value[1:]
            if key == "id":
                vid = vector.id
                hit = (fnmatch.fnmatchcase(vid, value) if any(ch in value for ch in "*?[")
                       else vid.startswith(value))
            elif key == "flag":
                hit = all(f in vector.flags for f in value.split(","))
            elif key == "kind":
                continue  # applies per tensor, see budget_factor
            else:
                hit = lane[key] == value
            if hit == negate:
                return False
        return True


def parse(path) -> list[Entry]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ExpectationError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    entries = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path}:{number}"
        body, sep, reason = text.partition("#")
        if not sep or not reason.strip():
            raise ExpectationError(f"{where}: every entry needs a reason after '#': {text!r}")
        words = body.split()
        if not words or words[0] not in VERDICTS:
            raise ExpectationError(f"{where}: entry must start with one of {VERDICTS}: {text!r}")
        if len(words) < 2:
            raise ExpectationError(f"{where}: entry has no selector: {text!r}")
        selectors, factor, model, because = {}, 1.0, "", ""
        rest = words[1:]
        if words[0] == "model":
            from conformance import deviations

            model, rest = rest[0], rest[1:]
            if model not in deviations.MODELS:
                raise ExpectationError(f"{where}: unknown deviation model {model!r}; "
                                       f"known: {', '.join(deviations.MODELS)}")
        for word in rest:
            if words[0] == "tolerance" and word.startswith("x") and "=" not in word:
                try:
                    factor = float(word[1:])
                except ValueError:
                    raise ExpectationError(f"{where}: bad factor {word!r}; write e.g. x4") from None
                if not 1 < factor <= MAX_FACTOR:
                    raise ExpectationError(f"{where}: a tolerance factor must be > 1 and at most x{MAX_FACTOR:g}, "
                                           f"got {word!r}: a larger deviation needs a deviation model")
                continue
            if words[0] == "xfail" and word.startswith("because="):
                because = word.split("=", 1)[1]
                if not (because in NON_NUMERIC or (because.startswith("raises:") and len(because) > 7)):
                    raise ExpectationError(
                        f"{where}: because={because!r}: an xfail names a non-numeric failure, "
                        f"raises:<ErrorClass> or one of {NON_NUMERIC}; a numeric deviation needs a model entry")
                continue
            key, eq, value = word.partition("=")
            if not eq or key not in KEYS or not value:
                raise ExpectationError(f"{where}: bad selector {word!r}; use {', '.join(k + '=' for k in KEYS)}")
            if key in selectors:
                raise ExpectationError(f"{where}: selector {key}= given twice")
            selectors[key] = value
        if words[0] == "tolerance" and factor == 1.0:
            raise ExpectationError(f"{where}: a tolerance entry needs a factor such as x4")
        if words[0] == "xfail" and not because:
            raise ExpectationError(f"{where}: an xfail entry must name the failure it expects: "
                                   f"because=raises:<ErrorClass> or because=<{'|'.join(NON_NUMERIC)}>")
        for key, value in selectors.items():
            if key in LANE_VALUES and value.lstrip("!") not in LANE_VALUES[key]:
                raise ExpectationError(f"{where}: unknown {key} {value.lstrip('!')!r}; use one of {LANE_VALUES[key]}")
        if words[0] in ("skip", "xfail") and _is_blanket(selectors):
            raise ExpectationError(
                f"{where}: a {words[0]} entry must narrow by a positive id= or flag= selector that does not "
                f"match every id: {text!r} would hide a whole lane")
        if "kind" in selectors:
            if words[0] != "tolerance":
                raise ExpectationError(f"{where}: kind= is for tolerance entries only")
            if selectors["kind"].lstrip("!") not in TENSOR_KINDS:
                raise ExpectationError(f"{where}: unknown kind {selectors['kind']!r}; use one of {TENSOR_KINDS}")
        entries.append(Entry(words[0], selectors, reason.strip(), where, factor=factor, model=model,
                             because=because))
    return entries


def _is_blanket(selectors: dict) -> bool:
    """True when no positive id= or flag= selector narrows the entry to some vectors."""
    flag = selectors.get("flag", "")
    if flag and not flag.startswith("!"):
        return False
    pattern = selectors.get("id", "")
    if not pattern or pattern.startswith("!"):
        return True
    if any(ch in pattern for ch in "*?["):
        return all(fnmatch.fnmatchcase(probe, pattern) for probe in ("", "x", "keras/a/b", "zz/9"))
    return False


def check_flags(entries: list[Entry], known_flags) -> None:
    """Every flag an entry names must exist in the corpus (a misspelt flag matches nothing)."""
    known = set(known_flags)
    for entry in entries:
        for flag in entry.selectors.get("flag", "").lstrip("!").split(","):
            if flag and flag not in known:
                raise ExpectationError(f"{entry.source}: no vector carries flag {flag!r}; "
                                       f"known flags: {', '.join(sorted(known))}")


def check_lane(entries: list[Entry], vectors: list, dtype: str, mode: str, device: str) -> None:
    """A skip or xfail entry that matches every one of a lane's vectors (two or more) hides
    the lane: refused."""
    if len(vectors) < 2:
        return
    for entry in entries:
        if entry.verdict in ("skip", "xfail") and all(entry.matches(v, dtype, mode, device) for v in vectors):
            raise ExpectationError(f"{entry.source}: this {entry.verdict} entry matches all {len(vectors)} vectors "
                                   f"of the {dtype} {mode} {device} lane: it would hide the lane")


def for_adapter(adapter_name: str, extra_files=()) -> list[Entry]:
    entries = []
    default = DIRECTORY / f"{adapter_name}.txt"
    if default.exists():
        entries.extend(parse(default))
    for path in extra_files:
        entries.extend(parse(path))
    return entries


def budget_factors(entries: list[Entry], vector: dict, dtype: str, mode: str, device: str) -> dict:
    """{tensor kind: budget multiplier} from the matching tolerance entries."""
    factors = {}
    for entry in entries:
        if entry.verdict == "tolerance" and entry.matches(vector, dtype, mode, device):
            entry.used += 1
            value = entry.selectors.get("kind")
            kinds = TENSOR_KINDS if value is None else (
                [k for k in TENSOR_KINDS if k != value[1:]] if value.startswith("!") else [value])
            for kind in kinds:
                factors[kind] = max(factors.get(kind, 1.0), entry.factor)
    return factors


def lookup(entries: list[Entry], vector: dict, dtype: str, mode: str, device: str) -> Optional[Entry]:
    """The first matching skip/xfail entry (file order), counting its use."""
    for entry in entries:
        if entry.verdict in ("skip", "xfail") and entry.matches(vector, dtype, mode, device):
            entry.used += 1
            return entry
    return None


def lookup_models(entries: list[Entry], vector: dict, dtype: str, mode: str, device: str) -> list[Entry]:
    """Every matching model entry (they compose), counting their use."""
    found = [e for e in entries if e.verdict == "model" and e.matches(vector, dtype, mode, device)]
    for entry in found:
        entry.used += 1
    return found
