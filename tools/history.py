"""Conformance history: the gate's lanes across framework releases, each release in its own
cached env (tools/envs.py), written to conformance/HISTORY.md (`make history`).

    python -m tools.history keras==3.11.3:torch keras==3.12.0:torch     # these specs
    python -m tools.history --full --discard                             # the whole matrix
    python -m tools.history --report-only keras==3.11.3:torch ...        # rewrite from out/history/
    python -m tools.history SPEC ... -- --dtype float64                  # after --: to conformance run

Per spec: the env is built (or found in the cache), its lanes run (``conformance run --json``,
one report per adapter in ``<out>/<env name>/``), then HISTORY.md is written atomically: per
adapter, one row per version with the run's verdict and each lane's counts; for every
expectation entry of those adapters (conformance/expectations/*.txt) the first and last
version that shows it and the versions run where it does not. An entry *shows* in a run
when a model entry grades a vector MODEL under its model, an xfail entry turns a failure
into XFAIL, a skip entry skips a vector, a tolerance entry applies to a vector (its range
holds and it is not reported unused). Where a Keras lane ran both keras-nightly and the release
constraints.txt pins, the pre-release watch follows its table: each change between the two
as tools/nightly.py classifies it (EXPECTED where a versioned entry names it), grouped by lane
and change. An ERROR row says why: the env that did not build (pip's cause), or the exception
that ended the adapter process (its ``<adapter>.log``). The document names exactly the specs that ran and the
command that reproduces it; ``--discard`` removes each env after its run (disk), ``--full``
is ``FULL_MATRIX``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

from tools import envs

OUT = envs.REPO / "out" / "history"
DOCUMENT = envs.REPO / "conformance" / "HISTORY.md"
KERAS_RELEASES = ("3.0.5", "3.1.1", "3.2.1", "3.3.3", "3.4.1", "3.5.0", "3.6.0", "3.7.0", "3.8.0", "3.9.2", "3.10.0",
                  "3.11.3", "3.12.0", "3.12.4", "3.13.2", "3.14.1", "3.15.1")
#: Keras 3.0-3.15 (the last patch of each minor; 3.12.0 too, where keras-team/keras#23223
#: begins) and the nightly on each backend; torch 2.5-2.15 (newest patch of each minor, CPU
#: builds from the PyTorch index); optax 0.2.x; transformers 4.40-5.24 (every fifth minor and
#: the ends). A release that does not install or import with the pinned backends shows as an
#: ERROR row: that is history too.
FULL_MATRIX = tuple(
    [f"keras=={v}:{b}" for b in envs.BACKENDS for v in KERAS_RELEASES]
    + [f"keras-nightly:{b}" for b in envs.BACKENDS]
    + [f"torch==2.{m}.*" for m in range(5, 16)]
    + [f"optax==0.2.{p}" for p in range(0, 9)]
    + [f"transformers==4.{m}.*" for m in (40, 45, 50, 55, 57)]
    + [f"transformers==5.{m}.*" for m in (0, 5, 10, 15, 20, 23, 24)])
#: What `make history` runs by default, and what conformance/HISTORY.md shows: every Keras
#: backend at 3.0.5, 3.6.0, the pinned release and the nightly (3.11.3, and 3.12.0 where
#: keras-team/keras#23223 begins), the torch lanes at 2.5-2.15, optax 0.2.0 and 0.2.4,
#: transformers 4.40, 5.0, 5.24. Measured on 2 cores shared with other jobs: 96 minutes of
#: lanes in all (keras-jax 9-20 minutes a release, the others 1-8), plus 1-5 minutes of env
#: build per spec (mostly downloads); add --discard where disk is short.
SUBSET = tuple(
    [f"keras=={v}:jax" for v in ("3.0.5", "3.6.0", "3.12.0", "3.15.1")] + ["keras-nightly:jax"]
    + [f"keras=={v}:torch" for v in ("3.0.5", "3.6.0", "3.11.3", "3.12.0", "3.15.1")] + ["keras-nightly:torch"]
    + [f"keras=={v}:tensorflow" for v in ("3.0.5", "3.6.0", "3.11.3", "3.15.1")] + ["keras-nightly:tensorflow"]
    + [f"torch==2.{m}.*" for m in (5, 8, 11, 14, 15)]
    + ["optax==0.2.0", "optax==0.2.4"]
    + [f"transformers=={v}.*" for v in ("4.40", "5.0", "5.24")])
STATUSES = ("pass", "model", "fail", "acceptable", "xfail", "xpass", "skip")
#: The framework whose version names a spec's row.
SUBJECT = {"keras": ("keras", "keras-nightly"), "torch": ("torch",), "optax": ("optax",),
           "transformers": ("transformers",)}


_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)(: .*)?$")


def not_built(exc: Exception) -> str:
    """The ERROR row's reason for an env that did not build: the failing pip call and why, from
    pip's output (an index that cannot be reached, pip's own ERROR lines), not only "failed"."""
    lines = str(exc).splitlines()
    causes = []
    for line in lines[1:]:
        match = re.search(r"Failed to establish a new connection: ([^'\"]+)['\"].*\)': (\S+)", line)
        if match:
            cause = f"index unreachable ({match.group(1).strip()}) at {match.group(2)}"
            if cause not in causes:
                causes.append(cause)
    if not causes:  # the resolver's conclusion is the cause only where no index was out of reach
        causes = [line[len("ERROR: "):].strip() for line in lines[1:] if line.startswith("ERROR: ")][:2]
    first = lines[0].rstrip(":") if lines else type(exc).__name__
    return "env not built: " + first + (": " + "; ".join(causes) if causes else "")


def _version_key(text: str):
    from conformance.expectations import Version

    try:
        return 0, Version.parse(text).key(8)
    except ValueError:
        return 1, text


class Run:
    """One spec's reports: its version, lanes and verdicts."""

    def __init__(self, spec: envs.EnvSpec, directory: Path, stamp: dict, seconds: float = 0.0):
        self.spec, self.directory, self.stamp, self.seconds = spec, directory, stamp or {}, seconds
        self.reports = {}
        for adapter in spec.lanes:
            path = directory / f"{adapter}.json"
            try:
                self.reports[adapter] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.reports[adapter] = None
        installed = {k.lower().replace("_", "-"): v for k, v in self.stamp.get("installed", {}).items()}
        family = spec.spec.split("==")[0].split(":")[0]
        names = SUBJECT.get("keras" if family.startswith("keras") else family, (family,))
        self.version = next((installed[n] for n in names if n in installed), spec.name)
        self.installed = installed

    def cause(self, adapter) -> str:
        """The exception that ended the adapter's process, from its log (tools/envs.py keeps
        each lane run's output in ``<adapter>.log``): its last line of the form ``SomeError: ...``."""
        try:
            text = (self.directory / f"{adapter}.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        found = [line.strip() for line in text.splitlines() if _EXCEPTION.match(line.strip())]
        return found[-1][:160] if found else ""

    def lanes(self, adapter):
        data = self.reports.get(adapter)
        return [] if data is None else data.get("lanes", [])


def _counts(lane: dict) -> str:
    if lane.get("not_run"):
        return "none graded"
    counts = lane.get("counts", {})
    text = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
    return (text or "nothing") + ("" if lane.get("conforms") else " **FAIL**")


def shows(entry, lanes: list, vectors: dict, version_of) -> bool:
    """Whether ``entry`` shows in these lanes (one adapter's lanes of one run); see the
    module docstring."""
    if entry.versions:
        try:
            if not all(version_of(r.name) is not None and r.holds(version_of(r.name)) for r in entry.versions):
                return False
        except ValueError:
            return False
    tag = f"[{entry.where}"
    for lane in lanes:
        key = (lane["dtype"], lane["mode"], lane["device"])
        if entry.verdict == "tolerance":
            stale = any(u.startswith(entry.where + ":") or u.startswith(entry.where + " (")
                        for u in lane.get("unused_expectations", []))
            if not stale and any(entry.matches(vectors[o["id"]], *key) for o in lane.get("outcomes", [])
                                 if o["id"] in vectors):
                return True
            continue
        for o in lane.get("outcomes", []):
            if entry.verdict == "model":
                if o["status"] == "model" and entry.model in (o.get("model") or "").split(" + ") \
                        and o["id"] in vectors and entry.matches(vectors[o["id"]], *key):
                    return True
            elif o["status"] == entry.verdict and (tag + "]" in o.get("reason", "") or tag + " (" in o.get("reason", "")):
                return True
    return False


def _lane_version_of(run: Run, lanes: list):
    environment = {}
    for lane in lanes:
        environment.update(lane.get("environment", {}))

    def version_of(name):
        for key in (name, f"{name}-cpu", f"{name}-nightly"):
            if run.installed.get(key):
                return run.installed[key]
            if environment.get(key):
                return str(environment[key])
        return None

    return version_of


def render(runs: list[Run], command: str, full_command: str, vectors: dict, entries_of) -> str:
    from conformance import __version__

    lines = ["# Conformance history", "",
             f"Written by `tools/history.py` on {datetime.date.today().isoformat()} (gate {__version__}). "
             "Each row is one framework release in its own env (tools/envs.py: the frameworks pinned as listed, "
             "the gate installed editable from this checkout), running its lanes with `conformance run` on the "
             "CPU; each lane's counts are its vectors' statuses (conformance/README.md); \"gate, corpus\": the gate "
             "and corpus versions the row ran under (its report's `run`).", "",
             "**What ran**, and nothing else: " + ", ".join(f"`{r.spec.spec}`" for r in runs)
             + f" (Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs as this "
             "document was written; the seconds are the lanes' wall time, the env builds not included, and for an env "
             "that did not build the time its build took to fail).", "",
             f"Reproduce this table: `{command}`", "",
             f"The full matrix (Keras 3.0-3.15 and the nightly on jax/torch/tensorflow, torch 2.5-2.15, "
             f"optax 0.2.x, transformers 4.40-5.24; `tools.history.FULL_MATRIX`): `{full_command}`", ""]
    adapters = []
    for run in runs:
        for adapter in run.spec.lanes:
            if adapter not in adapters:
                adapters.append(adapter)
    for adapter in adapters:
        mine = sorted((r for r in runs if adapter in r.spec.lanes), key=lambda r: _version_key(r.version))
        lane_names = []
        for run in mine:
            for lane in run.lanes(adapter):
                name = f"{lane['dtype']} {lane['mode']}"
                if name not in lane_names:
                    lane_names.append(name)
        lines += [f"## {adapter}", "",
                  _row(["version", "frameworks", "gate, corpus", "run verdict", *lane_names, "seconds (wall, lanes)"]),
                  "|" + "---|" * (5 + len(lane_names))]
        for run in mine:
            data = run.reports.get(adapter)
            frameworks = ", ".join(f"{n} {run.installed[n]}" for n in ("torch", "jax", "tensorflow-cpu", "optax")
                                   if n in run.installed and n not in SUBJECT.get(adapter, ()))
            if data is None:
                lines.append(_row([run.version, frameworks, "-", "no report", *("" for _ in lane_names),
                                   f"{run.seconds:.0f}"]))
                continue
            cells = {f"{lane['dtype']} {lane['mode']}": _counts(lane) for lane in data.get("lanes", [])}
            verdict = data.get("verdict", "?")
            if data.get("errors"):
                cause = run.cause(adapter)
                verdict += ": " + ((f"`{cause}`; " if cause else "")
                                   + "; ".join(str(e) for e in data["errors"]))[:300].replace("|", "\\|")
            elif any(lane.get("counts", {}).get("fail") for lane in data.get("lanes", [])):
                verdict += ": " + main_failure(data)
            ran = data.get("run", {})
            under = f"{ran['gate']}, {ran.get('corpus', {}).get('corpus_version', '?')}" if ran.get("gate") else "-"
            lines.append(_row([run.version, frameworks, under, verdict, *(cells.get(n, "") for n in lane_names),
                               f"{run.seconds:.0f}"]))
        lines.append("")
        lines += nightly_section(adapter, mine, vectors, entries_of)
        entries = entries_of(adapter)
        if not entries:
            continue
        lines += [f"Expectation entries of {adapter} (`{Path(entries[0].where.rsplit(':', 1)[0]).name}`): "
                  "first and last version run that shows each", "",
                  "| line | entry | first | last | not shown in |", "|---|---|---|---|---|"]
        for entry in entries:
            shown = []
            for run in mine:
                lanes = run.lanes(adapter)
                if shows(entry, lanes, vectors, _lane_version_of(run, lanes)):
                    shown.append(run.version)
            missing = [r.version for r in mine if r.version not in shown]
            label = " ".join([entry.verdict] + ([entry.model] if entry.model else [])
                             + [f"{k}={v}" for k, v in entry.selectors.items()]
                             + ([f"because={entry.because}"] if entry.because else [])
                             + [r.text for r in entry.versions])
            lines.append(f"| {entry.where.rsplit(':', 1)[1]} | `{label}` | {shown[0] if shown else '-'} | "
                         f"{shown[-1] if shown else '-'} | {', '.join(missing) or '-'} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main_failure(report: dict) -> str:
    """What most FAILs of a run say (the first line of their reasons), and how many: a release
    the adapter cannot drive fails every vector the same way, a numeric change does not."""
    reasons = [(o.get("reason") or "").strip().split("\n")[0][:120] for lane in report.get("lanes", [])
               for o in lane.get("outcomes", []) if o.get("status") == "fail"]
    if not reasons:
        return ""
    top = max(set(reasons), key=lambda r: (reasons.count(r), r))
    return f"{reasons.count(top)} of the {len(reasons)} failures: `{top}`".replace("|", "\\|")


def _row(cells) -> str:
    """One markdown table row; as many cells as the header has, whatever the lanes."""
    return "| " + " | ".join(cells) + " |"


def _shown_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(envs.REPO))
    except ValueError:
        return str(path)


def nightly_section(adapter: str, mine: list, vectors: dict, entries_of, pinned_keras=None) -> list:
    """The pre-release watch from the history's own runs: where ``mine`` (one Keras lane's
    runs) holds keras-nightly and the release constraints.txt pins, each change between them
    as tools/nightly.py classifies it (EXPECTED: a versioned expectation entry names it),
    grouped by lane and change, with the command that prints it vector by vector."""
    from tools import nightly

    pinned_keras = pinned_keras or envs.pins().get("keras")
    night = [r for r in mine if r.spec.spec.startswith("keras-nightly")]
    pinned = [r for r in mine if r.version == pinned_keras and not r.spec.spec.startswith("keras-nightly")]
    if not night or not pinned:
        return []
    a, b = pinned[0], night[0]
    backend = adapter.split("-", 1)[1]
    command = (f"python -m tools.nightly --backend {backend} --reports {_shown_path(a.directory)} "
               f"{_shown_path(b.directory)}")
    head = (f"keras-nightly {b.version} against the pinned release {a.version} (constraints.txt), vector by vector "
            f"(tools/nightly.py on these two rows' reports: `{command}`): ")
    before, after = a.reports.get(adapter), b.reports.get(adapter)
    if not before or not after or not before.get("lanes") or not after.get("lanes"):
        return [head + "not compared, a run has no lanes.", ""]
    changes = nightly.classify(before, after, entries_of, vectors, (a.stamp, b.stamp))
    if not changes:
        return [head + "no vector changed.", ""]
    groups = {}
    for lane, _vid, what, why in changes:
        why = re.sub(r"^\S*/(?=[^/\s]+\.txt:)", "", why or "")  # the expectation file's name and line
        groups[(lane, what, why)] = groups.get((lane, what, why), 0) + 1
    unexpected = sum(n for (_, _, why), n in groups.items() if not why)
    lines = [head + f"{len(changes)} vectors or lanes changed, {unexpected} not named by a versioned expectation"
             + (" (**UNEXPECTED**)." if unexpected else "."), "",
             "| lane | change | vectors | named by (EXPECTED) |", "|---|---|---|---|"]
    for (lane, what, why), n in groups.items():
        lines.append(f"| {lane} | {what} | {n} | {('`' + why + '`') if why else '**UNEXPECTED**'} |")
    return lines + [""]


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _entries_of(adapter: str):
    from conformance import expectations
    from conformance.adapters import registry

    stem = registry.ADAPTERS[adapter].expectations if adapter in registry.ADAPTERS else adapter
    path = expectations.DIRECTORY / f"{stem}.txt"
    return expectations.parse(path) if path.exists() else []


def _vectors() -> dict:
    from conformance import vectorfile as vf
    from conformance.corpus import default_vectors_dir
    from conformance.vector import as_vector

    return {as_vector(v).id: as_vector(v) for _, v in vf.iter_vectors(vf.load_corpus(default_vectors_dir()))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="*", help=f"env specs (tools/envs.py); default: {' '.join(SUBSET)}")
    parser.add_argument("--full", action="store_true", help="the whole matrix (FULL_MATRIX)")
    parser.add_argument("--cache", help="the env cache (default .envs/ or $ADAFACTOR_ENVS)")
    parser.add_argument("--out", default=str(OUT), help="reports: OUT/<env name>/<adapter>.json")
    parser.add_argument("--write", default=str(DOCUMENT), help="the document (default conformance/HISTORY.md)")
    parser.add_argument("--refresh", action="store_true", help="upgrade keras-nightly in its env")
    parser.add_argument("--discard", action="store_true", help="remove each env after its run (disk)")
    parser.add_argument("--report-only", action="store_true", help="no runs: rewrite from the reports in OUT")
    args, gate_args = parser.parse_known_args(argv)
    gate_args = [a for a in gate_args if a != "--"]
    specs = list(FULL_MATRIX if args.full else (args.specs or SUBSET))
    cache, out = envs.cache_dir(args.cache), Path(args.out)
    runs = []
    try:
        parsed = [envs.parse_spec(s) for s in specs]
        for spec in parsed:
            directory = out / spec.name
            seconds = 0.0
            timing = directory / "seconds.json"
            if not args.report_only:
                start = time.monotonic()
                try:
                    env = envs.ensure(spec, cache, refresh=args.refresh)
                except envs.EnvError as exc:  # a release that does not install is history too
                    print(f"{spec.name}: {exc}", file=sys.stderr)
                    directory.mkdir(parents=True, exist_ok=True)
                    for adapter in spec.lanes:
                        (directory / f"{adapter}.json").write_text(json.dumps(
                            {"verdict": "ERROR", "errors": [not_built(exc)], "lanes": []}) + "\n", encoding="utf-8")
                    if args.discard:  # what the failed build left
                        shutil.rmtree(cache / spec.name, ignore_errors=True)
                    seconds = time.monotonic() - start  # the failed build's, kept for --report-only
                    timing.write_text(json.dumps({"seconds": seconds, "stamp": {}}) + "\n", encoding="utf-8")
                    runs.append(Run(spec, directory, {}, seconds))
                    continue
                stamp = envs.read_stamp(env)
                start = time.monotonic()  # the lanes' wall time, not the env's build
                envs.run_lanes(spec, env, directory, gate_args)
                seconds = time.monotonic() - start
                timing.write_text(json.dumps({"seconds": seconds, "stamp": stamp}) + "\n", encoding="utf-8")
                if args.discard:
                    shutil.rmtree(env, ignore_errors=True)
            try:
                saved = json.loads(timing.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = {"seconds": 0.0, "stamp": envs.read_stamp(cache / spec.name)}
            runs.append(Run(spec, directory, saved.get("stamp") or {}, saved.get("seconds", 0.0)))
    except envs.EnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pieces = ["python -m tools.history"]
    if args.full:
        pieces.append("--full")
    else:
        pieces += [shlex.quote(s) for s in specs]
    if gate_args:
        pieces += ["--"] + [shlex.quote(a) for a in gate_args]
    command = " ".join(pieces)
    text = render(runs, command, "python -m tools.history --full --discard", _vectors(), _entries_of)
    write_atomic(Path(args.write), text)
    print(f"wrote {args.write} ({len(runs)} runs)")
    print(f"reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
