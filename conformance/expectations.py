"""Known deviations as data: skip/xfail files, one entry per line, each with a reason.

    # comment
    <verdict> <selector> [<selector> ...]  # reason, with a link

``verdict`` is ``skip`` (not run), ``xfail`` (run; a failure is expected and reported as
XFAIL, a pass is reported as XPASS), or ``tolerance`` (a per-adapter override: the budget
of the selected tensors is multiplied by the entry's ``x<factor>`` word, e.g.
``tolerance dtype=float64 kind=update x4  # XLA sums in another order (link)``; the reason
must say why the difference is legitimate). Every selector must match for the entry to
apply:

    id=<pattern>      vector id: a prefix, or an fnmatch pattern when it holds * ? [
    flag=<FLAG>[,<FLAG>...]  the vector carries every one of these flags
    result=<grade>    the vector's result: valid, acceptable or invalid
    dtype=<name>      lane dtype (float64, float32, float16, bfloat16)
    mode=<name>       teacher or trajectory
    device=<name>     cpu or gpu
    kind=<tensor>     tolerance entries only: variables, update, r, c, v, average, accumulator, momentum

A value starting with ``!`` negates the selector (``id=!special_values/huge``: every
vector except those).

An entry that matches no vector of the run is reported as unused (a stale entry hides
nothing but should be removed). Files live in conformance/expectations/<adapter>.txt and are
picked up automatically for registered adapters; ``--xfail-file`` adds more.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

DIRECTORY = Path(__file__).resolve().parent / "expectations"
VERDICTS = ("skip", "xfail", "tolerance")
KEYS = ("id", "flag", "result", "dtype", "mode", "device", "kind")
TENSOR_KINDS = ("variables", "update", "r", "c", "v", "average", "accumulator", "momentum")


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

    def matches(self, vector: dict, dtype: str, mode: str, device: str) -> bool:
        lane = {"dtype": dtype, "mode": mode, "device": device, "result": vector["result"]}
        for key, value in self.selectors.items():
            negate = value.startswith("!")
            if negate:
                value = value[1:]
            if key == "id":
                vid = vector["id"]
                hit = (fnmatch.fnmatchcase(vid, value) if any(ch in value for ch in "*?[")
                       else vid.startswith(value))
            elif key == "flag":
                hit = all(f in vector["flags"] for f in value.split(","))
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
        selectors, factor = {}, 1.0
        for word in words[1:]:
            if words[0] == "tolerance" and word.startswith("x") and "=" not in word:
                try:
                    factor = float(word[1:])
                except ValueError:
                    raise ExpectationError(f"{where}: bad factor {word!r}; write e.g. x4") from None
                if not factor > 1:
                    raise ExpectationError(f"{where}: a tolerance factor must be > 1, got {word!r}")
                continue
            key, eq, value = word.partition("=")
            if not eq or key not in KEYS or not value:
                raise ExpectationError(f"{where}: bad selector {word!r}; use {', '.join(k + '=' for k in KEYS)}")
            if key in selectors:
                raise ExpectationError(f"{where}: selector {key}= given twice")
            selectors[key] = value
        if words[0] == "tolerance" and factor == 1.0:
            raise ExpectationError(f"{where}: a tolerance entry needs a factor such as x4")
        if "kind" in selectors:
            if words[0] != "tolerance":
                raise ExpectationError(f"{where}: kind= is for tolerance entries only")
            if selectors["kind"].lstrip("!") not in TENSOR_KINDS:
                raise ExpectationError(f"{where}: unknown kind {selectors['kind']!r}; use one of {TENSOR_KINDS}")
        entries.append(Entry(words[0], selectors, reason.strip(), where, factor=factor))
    return entries


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
        if entry.verdict != "tolerance" and entry.matches(vector, dtype, mode, device):
            entry.used += 1
            return entry
    return None
