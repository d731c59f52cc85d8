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
    ``iterations``, ``is_update_step``, ``ema_overwritten``; for ``invalid`` vectors also
    ``accepts`` (the implementation raises nothing where the spec refuses) or ``message``
    (it raises the right class at the right place, with another message). A numeric
    deviation is never an xfail: it needs a model.
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

An entry may also carry version ranges, one word each, PEP 440 style, and then applies only
where every one holds:

    <framework><op><version>[,<op><version>...]     e.g.  keras>=3.12   torch<2.14   keras>=3.12,<3.16

``<op>`` is one of ``== != < <= > >= ~=`` (``==3.12.*`` matches a whole series).
``<framework>`` is the distribution, or a top-level module as the registry's ``requires``
names it (``keras``, ``torch``, ``jax``, ``tensorflow``, ``optax``, ``transformers``): its
version is read with importlib.metadata in the adapter's process, from the distribution that
provides that module (``keras-nightly`` for ``keras``, ``tensorflow-cpu`` for
``tensorflow``). Pre-releases and nightlies take their PEP 440 place and are never excluded
for being one: ``keras>=3.12`` holds for 3.16.0.dev2026102704, ``keras<3.16`` does not; a
local label (``+cpu``) is ignored. An entry whose range excludes the installed version does
not apply: it is neither used nor reported. One that applies names the versions it was
checked against in its source (``keras-torch.txt:22 (keras>=3.12: keras 3.15.1)``), so an
entry stale for the installed version is reported naming that version. A malformed range,
or one naming a framework not installed in the adapter's process, is an error naming file and
line.

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
import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

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
NON_NUMERIC = ("learning_rate_calls", "iterations", "is_update_step", "ema_overwritten", "accepts", "message")
#: How grading.error_problems words the two failures of an invalid vector an xfail may name:
#: nothing raised (``accepts``), and the right class and place with another message (``message``).
_INVALID_FAILURES = {"accepts": ("expected ", ", nothing was raised"), "message": ("message ", " lacks ")}
#: The largest budget multiplier a tolerance entry may give: past it, the "tolerance" is a
#: blindfold, and the deviation needs a model (conformance/deviations.py).
MAX_FACTOR = 64.0


class ExpectationError(ValueError):
    """A malformed expectation file (exit code 2)."""


# ----------------------------------------------------------------------------- version ranges
_VERSION = re.compile(
    r"^v?(?:(?P<epoch>[0-9]+)!)?(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:[-_.]?(?P<pre>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>[0-9]*))?"
    r"(?:-(?P<post_implicit>[0-9]+)|[-_.]?(?:post|rev|r)[-_.]?(?P<post>[0-9]*))?"
    r"(?:[-_.]?(?P<dev>dev)[-_.]?(?P<dev_n>[0-9]*))?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$", re.IGNORECASE)
_PRE = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
#: A version-range word: a name, then an operator (checked before the selector syntax).
_RANGE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*?)(?P<spec>(?:~=|==|!=|<=|>=|<|>).*)$")
_OPERATORS = ("~=", "==", "!=", "<=", ">=", "<", ">")


@dataclass(frozen=True, order=False)
class Version:
    """A PEP 440 version (public part; the local label is kept but never compared)."""

    epoch: int
    release: tuple
    pre: Optional[tuple]  # (0|1|2, n): a, b, rc
    post: Optional[int]
    dev: Optional[int]
    text: str

    @classmethod
    def parse(cls, text: str) -> "Version":
        m = _VERSION.match(text.strip())
        if not m:
            raise ValueError(f"{text!r} is not a PEP 440 version")
        post = m.group("post_implicit") or m.group("post")
        has_post = m.group("post_implicit") is not None or m.group("post") is not None
        return cls(int(m.group("epoch") or 0), tuple(int(x) for x in m.group("release").split(".")),
                   (_PRE[m.group("pre").lower()], int(m.group("pre_n") or 0)) if m.group("pre") else None,
                   int(post or 0) if has_post else None,
                   int(m.group("dev_n") or 0) if m.group("dev") else None, text.strip())

    @property
    def is_prerelease(self) -> bool:
        return self.pre is not None or self.dev is not None

    def key(self, width: int = 0) -> tuple:
        """PEP 440 order (trailing zeros of the release do not count)."""
        release = list(self.release)
        while len(release) > 1 and release[-1] == 0:
            release.pop()
        if self.pre is None and self.post is None and self.dev is not None:
            pre = (-1, 0)  # 1.0.dev1 sorts before 1.0a1
        else:
            pre = self.pre if self.pre is not None else (3, 0)
        post = -1 if self.post is None else self.post
        dev = float("inf") if self.dev is None else self.dev
        return (self.epoch, tuple(release) + (0,) * max(0, width - len(release)), pre, post, dev)

    def base(self) -> tuple:
        release = list(self.release)
        while len(release) > 1 and release[-1] == 0:
            release.pop()
        return self.epoch, tuple(release)


def _compare(a: Version, b: Version) -> int:
    width = max(len(a.release), len(b.release))
    ka, kb = a.key(width), b.key(width)
    return (ka > kb) - (ka < kb)


@dataclass(frozen=True)
class Clause:
    """One ``<op><version>`` of a range."""

    op: str
    version: Version
    wildcard: bool = False  # ==X.Y.* / !=X.Y.*

    def holds(self, v: Version) -> bool:
        op, w = self.op, self.version
        if op in ("==", "!=") and self.wildcard:
            prefix = w.release
            release = v.release + (0,) * max(0, len(prefix) - len(v.release))
            same = v.epoch == w.epoch and release[:len(prefix)] == prefix
            return same if op == "==" else not same
        c = _compare(v, w)
        if op == "==":
            return c == 0
        if op == "!=":
            return c != 0
        if op == "<=":
            return c <= 0
        if op == ">=":
            return c >= 0
        if op == "<":  # <3.16 excludes 3.16.0.dev1 (PEP 440), <3.16rc1 does not
            return c < 0 and not (v.is_prerelease and not w.is_prerelease and v.base() == w.base())
        if op == ">":  # >3.12 excludes 3.12.post1 (PEP 440)
            return c > 0 and not (v.post is not None and w.post is None and v.base() == w.base()
                                  and v.pre == w.pre)
        # ~=X.Y.Z: >= X.Y.Z and == X.Y.*
        return c >= 0 and Clause("==", Version.parse(".".join(map(str, w.release[:-1]))), True).holds(v)


@dataclass(frozen=True)
class VersionRange:
    """``keras>=3.12,<3.16``: a framework and the clauses its installed version must meet."""

    name: str
    clauses: tuple
    text: str

    def holds(self, version: str) -> bool:
        v = Version.parse(version)
        return all(c.holds(v) for c in self.clauses)


def parse_range(word: str) -> VersionRange:
    """The VersionRange of ``keras>=3.12`` (ValueError, saying why, when malformed)."""
    m = _RANGE.match(word)
    if not m:
        raise ValueError(f"{word!r} is not <framework><op><version>")
    clauses = []
    for part in m.group("spec").split(","):
        op = next((o for o in _OPERATORS if part.startswith(o)), None)
        if op is None:
            raise ValueError(f"{part!r} does not start with one of {' '.join(_OPERATORS)}")
        text = part[len(op):]
        wildcard = text.endswith(".*")
        if wildcard:
            if op not in ("==", "!="):
                raise ValueError(f"{part!r}: .* only after == or !=")
            text = text[:-2]
        if not text:
            raise ValueError(f"{part!r} has no version")
        if "+" in text:
            raise ValueError(f"{part!r}: a range names public versions (no +local label)")
        version = Version.parse(text)
        if wildcard and (version.pre or version.post is not None or version.dev is not None):
            raise ValueError(f"{part!r}: .* follows a release number only")
        if op == "~=" and len(version.release) < 2:
            raise ValueError(f"{part!r}: ~= needs at least two release numbers (~=3.12)")
        clauses.append(Clause(op, version, wildcard))
    return VersionRange(m.group("name").lower().replace("_", "-"), tuple(clauses), word)


def installed_version(name: str) -> Optional[str]:
    """The version of the distribution ``name``, or of the one that provides the top-level
    module ``name`` (keras-nightly for keras, tensorflow-cpu for tensorflow); None when none
    is installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    providers = importlib.metadata.packages_distributions().get(name.replace("-", "_"), [])
    for dist in sorted(set(providers), key=lambda d: (not d.lower().startswith(name), d)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


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
    versions: tuple = ()  # VersionRange: where the entry applies (all must hold)
    where: str = ""  # file:line (``source`` gains the versions checked once they are)

    def applies_to(self, version_of: Callable[[str], Optional[str]]) -> bool:
        """Whether every version range holds for the installed versions (``version_of``:
        framework -> version or None); ExpectationError naming file and line when a range
        names a framework that is not installed."""
        found = []
        for rng in self.versions:
            version = version_of(rng.name)
            if version is None:
                raise ExpectationError(f"{self.where or self.source}: {rng.text}: {rng.name} is not installed here; "
                                       f"a version range names a framework the adapter imports")
            try:
                ok = rng.holds(version)
            except ValueError as exc:
                raise ExpectationError(f"{self.where or self.source}: {rng.text}: the installed {rng.name} "
                                       f"{exc}") from None
            if not ok:
                return False
            found.append(f"{rng.name} {version}")
        if self.versions:
            self.where = self.where or self.source
            ranges = " ".join(r.text for r in self.versions)
            self.source = f"{self.where} ({ranges}: {', '.join(found)})"
        return True

    def unexplained(self, reason: str, failures=()) -> Optional[str]:
        """None when a failed outcome (its reason and failures) is the failure this xfail
        names, else what differs."""
        if self.because.startswith("raises:"):
            name = self.because.split(":", 1)[1]
            return None if reason.startswith(f"raised {name}") else f"raises {name}"
        if self.because in _INVALID_FAILURES:
            start, middle = _INVALID_FAILURES[self.because]
            problems = reason.split("; ")
            if len(problems) == 1 and problems[0].startswith(start) and middle in problems[0]:
                return None
            return f"only {self.because} differs (failing: {reason})"
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
        selectors, factor, model, because, versions = {}, 1.0, "", "", []
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
            ranged = _RANGE.match(word)
            if ranged and ranged.group("name") not in KEYS:
                try:
                    versions.append(parse_range(word))
                except ValueError as exc:
                    raise ExpectationError(f"{where}: bad version range {word!r}: {exc}; "
                                           f"write e.g. keras>=3.12 or torch>=2.5,<2.14") from None
                continue
            key, eq, value = word.partition("=")
            if not eq or key not in KEYS or not value:
                raise ExpectationError(f"{where}: bad selector {word!r}; use {', '.join(k + '=' for k in KEYS)} "
                                       f"or a version range such as keras>=3.12")
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
        names = [r.name for r in versions]
        if len(set(names)) < len(names):
            raise ExpectationError(f"{where}: one version range per framework: join them with a comma "
                                   f"(keras>=3.12,<3.16)")
        entries.append(Entry(words[0], selectors, reason.strip(), where, factor=factor, model=model,
                             because=because, versions=tuple(versions), where=where))
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


def applicable(entries: list[Entry], version_of: Callable[[str], Optional[str]] = installed_version
               ) -> list[Entry]:
    """The entries whose version ranges hold for the installed versions (``version_of``:
    framework -> version or None); the others do not apply and are dropped."""
    cache = {}

    def cached(name):
        if name not in cache:
            cache[name] = version_of(name)
        return cache[name]

    return [e for e in entries if e.applies_to(cached)]


def for_adapter(adapter_name: str, extra_files=(), version_of: Callable[[str], Optional[str]] = installed_version
                ) -> list[Entry]:
    """The entries of ``conformance/expectations/<adapter_name>.txt`` and ``extra_files``
    that apply to the installed framework versions (read in this, the adapter's, process)."""
    entries = []
    default = DIRECTORY / f"{adapter_name}.txt"
    if default.exists():
        entries.extend(parse(default))
    for path in extra_files:
        entries.extend(parse(path))
    return applicable(entries, version_of)


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
