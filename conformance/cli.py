"""``adafactor-conformance`` / ``python -m conformance``: the conformance gate.

    python -m conformance run --adapter keras-jax --dtype float32 --device cpu \\
        [--vectors PATTERN ...] [--flags FLAG ...] [--mode teacher|trajectory] [--timeout S] \\
        [--xfail-file F ...] [--json OUT] [--junit OUT] [--plot OUT.png]
    python -m conformance run --adapter all          # every installed adapter (the main job)
    python -m conformance run --adapter all --device gpu   # GPU lanes; adapters without one skip
    python -m conformance grade --results FILE [--results FILE ...] [--allow-partial]
                                                     # a port's results files (conformance/RESULTS_FILE.md)
    python -m conformance --version                  # the gate's and the corpus's version and sha256
    python -m conformance list [--vectors PATTERN]   # the vectors and their flags

Exit status (exit 0 is a promise: at least one vector was graded, and every graded vector
conforms or deviates only where conformance/expectations/ names the cause):

    0  CONFORMS
    1  DOES NOT CONFORM: a graded vector failed (a vector missing from a results file too)
    2  ERROR: usage or environment error (unknown adapter, framework not importable, device
       not present, unreadable vectors, a malformed expectation or results file, a report
       path equal to an input or not writable, an implementation that did not run in the
       requested dtype), or an adapter process that exited early (any code), was killed, or
       ran past the per-vector timeout (--timeout, default 300 s): named with the vector it
       was on
    3  NOTHING CHECKED: no vector was graded (every vector skipped or xfail, none of the
       adapter's dialect selected, a dtype or device the adapter does not run, a results file
       graded with --allow-partial that holds none of the selected vectors); the output says why
    130, 143  interrupted by SIGINT, SIGTERM: every adapter process was stopped and the
       temporary files removed; no report was written

``run`` never runs an adapter in its own process: each adapter (with ``--split dtype``, each
adapter and dtype) runs in a child process in a session of its own, and this process
supervises it. A child counts only if it exits normally after writing a complete report;
one that exits early, is killed or makes no progress on one vector for ``--timeout``
seconds is an ERROR (its whole process group is killed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import conformance
from conformance import corpus, expectations, report, runner
from conformance import vectorfile as vf
from conformance.adapters import ADAPTERS, AdapterError, resolve
from conformance.adapters.registry import GROUPS
from conformance.adapters.base import DEVICES, DTYPES
from conformance.tolerance import Policy

EXIT_OK, EXIT_NONCONFORMING, EXIT_ERROR, EXIT_NOTHING_CHECKED = 0, 1, 2, 3
VERDICTS = {EXIT_OK: "CONFORMS", EXIT_NONCONFORMING: "DOES NOT CONFORM", EXIT_ERROR: "ERROR",
            EXIT_NOTHING_CHECKED: "NOTHING CHECKED"}
MODES = ("teacher", "trajectory")
#: Seconds an adapter process may spend on one vector (its setup counts as one) by default.
DEFAULT_TIMEOUT = 300.0
#: What ``--plot`` can write (matplotlib's formats), by file suffix.
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp", "pgf")

class UsageError(Exception):
    pass


def _csv(values, allowed=None, what="value"):
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise UsageError(f"unknown {what} {bad}; choose from {list(allowed)}")
    return items


def version_text() -> str:
    """What ``--version`` prints: the gate's version, the corpus it carries (version, schema,
    vector count, sha256, where), and the Keras release whose semantics are the spec."""
    from reference import KERAS_VERSION

    found = corpus.default_vectors_dir_or_none()
    described = ("corpus " + corpus.describe(corpus.corpus_identity(found)) if found
                 else "corpus: none found (pass --vectors-dir)")
    return (f"adafactor-conformance {conformance.__version__}\n{described}\n"
            f"spec: keras.optimizers.Adafactor of Keras {KERAS_VERSION} (reference/SPEC.md)")


class _Version(argparse.Action):
    """``--version``: the text is computed when asked for (it hashes the manifest and imports
    the reference), not each time the parser is built, which every adapter child does."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def _vectors_dir_help() -> str:
    found = corpus.default_vectors_dir_or_none()
    where = found if found else "none found: this option is then required"
    return f"the golden-vector corpus to read (default: the one this installation carries, {where})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adafactor-conformance",
        description="The Adafactor conformance gate: replays the golden vectors against an implementation "
                    "(an adapter, or a port's results file) and grades it against the spec, Keras 3's "
                    "Adafactor (reference/SPEC.md), under the derived tolerance policy.",
        epilog=__doc__[__doc__.index("Exit status"):].split("\n\n``run``")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the gate's version and the corpus's version and sha256, then exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,grade,list}")

    def common(p):
        selection(p)
        p.add_argument("--xfail-file", action="append", default=[], type=Path,
                       help="extra skip/xfail file (format: conformance/expectations.py)")
        p.add_argument("--json", type=Path, help="write the JSON report here (never over an input)")
        p.add_argument("--junit", type=Path, help="write a JUnit XML report here (never over an input)")
        p.add_argument("--plot", type=Path, help="write an error-versus-step PNG here (needs matplotlib)")
        p.add_argument("--verbose", action="store_true", help="print every vector's outcome")

    def selection(p):
        p.add_argument("--vectors", action="append", default=[], metavar="PATTERN",
                       help="only vectors whose id starts with PATTERN, fnmatches it (it holds * ? or [), or "
                            "equals it when written =ID (repeatable, comma-separated; default: every vector)")
        p.add_argument("--flags", action="append", default=[], metavar="FLAG",
                       help="only vectors carrying every one of these flags (repeatable, comma-separated; "
                            "`list` shows each vector's flags)")
        p.add_argument("--vectors-dir", type=Path, default=None, metavar="DIR", help=_vectors_dir_help())

    run = sub.add_parser("run", help="run an adapter over the vectors")
    run.add_argument("--adapter", action="append", default=[],
                     help=f"registered name ({', '.join(ADAPTERS)}), a group ({', '.join(GROUPS)}: "
                          f"every installed adapter of the group; `all` is the main job), or package.module:Class")
    run.add_argument("--dtype", action="append", default=[],
                     help=f"comma-separated, from {','.join(DTYPES)} (default float64,float32)")
    run.add_argument("--mode", action="append", default=[], help="teacher,trajectory (default both)")
    run.add_argument("--device", default="cpu", choices=DEVICES,
                     help="where the adapter runs the vectors (default cpu); an adapter that cannot use it "
                          "is an ERROR (exit 2) unless --if-available")
    run.add_argument("--if-available", action="store_true",
                     help="skip, saying why, an adapter that cannot use --device here instead of failing "
                          "with exit 2 (a run where nothing was graded still exits 3, NOTHING CHECKED); "
                          "implied by --adapter all on a device other than cpu")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="with --adapter all: run up to N adapter processes at once (default 1)")
    run.add_argument("--split", choices=("adapter", "dtype"), default="adapter",
                     help="with --adapter all: one process per adapter (default) or per adapter and "
                          "lane dtype (more, smaller units for many cores)")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                     help=f"an adapter process that spends longer than this on one vector (or on its setup) "
                          f"is killed and the run is an ERROR (default {DEFAULT_TIMEOUT:g}; 0: no limit)")
    # Internal: this process is the child that runs the adapter (see _work).
    run.add_argument("--worker-report", type=Path, help=argparse.SUPPRESS)
    run.add_argument("--worker-progress", type=Path, help=argparse.SUPPRESS)
    common(run)
    grade = sub.add_parser("grade", help="grade a port's results file(s) (format: conformance/RESULTS_FILE.md)")
    grade.add_argument("--results", type=Path, action="append", required=True, metavar="FILE",
                       help="a results file (version 1 or 2); repeat it to grade every lane of several files "
                            "in one report and one verdict")
    grade.add_argument("--allow-partial", action="store_true",
                       help="skip (not fail) the selected vectors of each lane's dialect(s) that it lacks")
    common(grade)
    lister = sub.add_parser("list", help="list the vectors (id, expected result, steps, flags)")
    selection(lister)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.vectors_dir is None:
            try:
                args.vectors_dir = corpus.default_vectors_dir()
            except corpus.CorpusNotFound as exc:
                raise UsageError(str(exc)) from None
        if args.command == "list":
            return _list(args)
        if args.command == "grade":
            return _grade(args)
        if args.worker_report:
            return _work(args)
        return _supervise(args)
    except (UsageError, AdapterError, vf.VectorFormatError, expectations.ExpectationError,
            ValueError) as exc:
        if getattr(args, "worker_progress", None):
            _Progress(args.worker_progress).emit("error", exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _select(documents, args):
    vectors = runner.select(documents, _csv(args.vectors), _csv(args.flags))
    if not vectors:
        raise UsageError(f"NOTHING CHECKED: no vector matches --vectors {args.vectors} --flags {args.flags} "
                         f"in {args.vectors_dir}")
    return vectors


def _selected(args):
    return _select(vf.load_corpus(args.vectors_dir), args)


def _list(args) -> int:
    from tabulate import tabulate

    rows = [[v.id, v.result, len(v.raw["steps"]), " ".join(v.flags)] for _, v in _selected(args)]
    print(tabulate(rows, headers=["id", "result", "steps", "flags"]))
    return EXIT_OK


def _run_info(args) -> dict:
    return {"gate": conformance.__version__, "corpus": corpus.corpus_identity(args.vectors_dir),
            "python": platform.python_version(), "machine": platform.machine(),
            "numpy": np.__version__, "vectors": str(args.vectors_dir),
            "xfail_files": [str(Path(p).resolve()) for p in args.xfail_file],
            "date": time.strftime("%Y-%m-%d")}


# ----------------------------------------------------------------------------- verdicts
def _verdict(reports, errors=()) -> int:
    """The exit status of a run: ERROR when an adapter could not run, DOES NOT CONFORM when a
    graded vector failed, NOTHING CHECKED when no lane graded a vector, else CONFORMS. A lane
    that graded nothing does not fail a run in which other lanes graded vectors (the output
    lists it)."""
    if errors:
        return EXIT_ERROR
    if any(r.counts()["fail"] for r in reports):
        return EXIT_NONCONFORMING
    if not any(r.graded for r in reports):
        return EXIT_NOTHING_CHECKED
    return EXIT_OK


def _print_reports(args, reports, info) -> None:
    """Header, lane table, and per lane the verbose tables and the failures."""
    print(report.header(reports, info))
    print()
    print(report.lane_table(reports))
    models = report.model_summary(reports)
    if models:
        print(models)
    for r in reports:
        if args.verbose:
            print(f"\n{r.adapter} {r.dtype} {r.mode}: per flag")
            print(report.flag_table(r))
            for o in r.outcomes:
                print(f"  {o.status:10s} {o.id}  {o.reason}")
        text = report.failures(r, vectors_dir=args.vectors_dir, xfail_files=args.xfail_file)
        if text:
            print()
            print(text)


def _problems(code, reports, errors=(), skipped=()) -> list[str]:
    """What makes a run ERROR or NOTHING CHECKED, one line each (empty otherwise)."""
    if code == EXIT_ERROR:
        return list(errors)
    if code == EXIT_NOTHING_CHECKED:
        lines = report.not_graded(reports)
        lines += [f"adapter {name} skipped: {why}" for name, why in skipped]
        return lines or ["no adapter ran"]
    return []


def _print_verdict(code, reports, errors=(), skipped=(), unit: str = "") -> None:
    """The verdict line (and why, for ERROR and NOTHING CHECKED). ``unit``: the verdict of
    one adapter process of a run of several, printed in its section (the run's comes last)."""
    problems = _problems(code, reports, errors, skipped)
    if code == EXIT_ERROR:
        print(f"\nERROR: {len(problems)} adapter process{'es' if len(problems) != 1 else ''} did not run to the end "
              f"(nothing it did counts):")
    elif code == EXIT_NOTHING_CHECKED:
        print(f"\nNOTHING CHECKED by {unit}:" if unit else "\nNOTHING CHECKED: no vector was graded (exit 3):")
    else:
        empty = report.not_graded(reports)
        if empty:
            print(f"\nnote: {len(empty)} lane{'s' if len(empty) != 1 else ''} graded nothing "
                  f"(the verdict rests on the other lanes):")
            for line in empty:
                print(f"  {line}")
        print(f"\n{VERDICTS[code]}")
        return
    for line in problems:
        print(f"  {line}")


def _write_outputs(args, reports, info, code, problems=(), skipped=None) -> None:
    """The --json, --junit and --plot files of a run, each written atomically."""
    verdict = VERDICTS[code]
    if args.json:
        report.write_json(args.json, reports, info, skipped, verdict=verdict, exit_status=code,
                          errors=list(problems) if code == EXIT_ERROR else [])
    if args.junit:
        report.write_junit(args.junit, reports, verdict, problems, info)
    if args.plot:
        problem = report.write_plot(args.plot, reports)
        if problem:
            print(f"note: {problem}", file=sys.stderr)


def _finish(args, reports, info, errors=(), skipped=()) -> int:
    code = _verdict(reports, errors)
    _write_outputs(args, reports, info, code, _problems(code, reports, errors, skipped),
                   "; ".join(f"{name}: {why}" for name, why in skipped) or None)
    _print_verdict(code, reports, errors, skipped)
    return code


# ----------------------------------------------------------------------------- outputs
def _inputs(args, results=None) -> list[tuple[str, Path]]:
    """Every file the run reads, which no report may replace."""
    found = [("the results file", Path(results))] if results else []
    directory = Path(args.vectors_dir)
    if directory.is_dir():
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                what = "the vectors' manifest" if path.name == vf.MANIFEST_NAME else "a file of the vectors directory"
                found.append((what, path))
    if expectations.DIRECTORY.is_dir():
        found += [("an expectation file", p) for p in sorted(expectations.DIRECTORY.iterdir()) if p.is_file()]
    found += [("an expectation file (--xfail-file)", Path(p)) for p in args.xfail_file]
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _check_outputs(args, inputs) -> None:
    """Before anything runs: a report path is never an input (the same file, through any
    symlink or hard link) nor another report's path, and its directory exists and takes a
    new file. Nothing is left behind by the check."""
    outputs = [(f"--{key}", Path(getattr(args, key))) for key in ("json", "junit", "plot") if getattr(args, key)]
    for k, (flag, path) in enumerate(outputs):
        for what, source in inputs:
            if _same_file(path, source):
                raise UsageError(f"{flag} {path} is {what} ({source}): a report never overwrites an input; "
                                 f"choose another path")
        for other_flag, other in outputs[:k]:
            if _same_file(path, other):
                raise UsageError(f"{flag} {path} and {other_flag} {other} are the same file: one report would "
                                 f"replace the other")
        if path.is_dir():
            raise UsageError(f"{flag} {path} is a directory; give a file path")
        if flag == "--plot" and path.suffix and path.suffix.lstrip(".").lower() not in PLOT_FORMATS:
            raise UsageError(f"--plot {path}: unknown image format {path.suffix!r}; use one of "
                             f"{', '.join('.' + f for f in PLOT_FORMATS)}")
        parent = path.parent
        if not parent.is_dir():
            raise UsageError(f"{flag} {path}: directory {parent} does not exist (create it first)")
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot write in directory {parent}: {exc.strerror or exc}") from exc


# ----------------------------------------------------------------------------- grade
def _grade(args) -> int:
    """Grade every lane of every ``--results`` file (conformance/RESULTS_FILE.md) in one
    report with one verdict. Every file is checked, against the corpus too, before anything
    is graded: a malformed one is an error (exit 2) naming file, lane, vector, step, field."""
    from conformance.adapters import results_file as rf

    paths = list(args.results)
    _check_outputs(args, [("the results file", Path(p)) for p in paths] + _inputs(args))
    documents = vf.load_corpus(args.vectors_dir)
    adapters = []
    for path in paths:
        try:
            lanes = [rf.ResultsFileAdapter(lane) for lane in rf.load_lanes(path)]
            for adapter in lanes:
                adapter.validate(documents)
        except rf.ResultsFileError:
            raise
        except (KeyError, TypeError, IndexError, AttributeError, ValueError, OverflowError) as exc:
            # A safety net: the checks above should have named the problem precisely.
            raise rf.ResultsFileError(f"{path}: malformed results file ({type(exc).__name__}: {exc})") from None
        adapters += lanes
    rf.check_distinct(adapters)
    vectors = _select(documents, args)
    corpus = list(vf.iter_vectors(documents))
    flags = {f for _, v in corpus for f in v.flags}
    policy = Policy.load()
    reports = []
    for adapter in adapters:
        entries = expectations.for_adapter(adapter.expectations or adapter.name, args.xfail_file)
        expectations.check_flags(entries, flags)
        lane = runner.run_lane(adapter, vectors, args.vectors_dir, adapter.lane.dtype, adapter.lane.device,
                               adapter.lane.mode, policy, entries, corpus=corpus)
        for o in lane.outcomes:
            if o.status == "skip" and o.reason == rf.MISSING:
                if args.allow_partial:
                    o.reason = f"{rf.MISSING} (--allow-partial)"
                else:
                    o.status, o.worst_ratio = "fail", float("inf")
                    o.reason = f"{rf.MISSING} (the lane covers the dialect(s) {', '.join(adapter.dialects)}; " \
                               f"--allow-partial to grade only what it holds)"
        if not lane.outcomes:
            lane.not_run = (f"none of the {len(vectors)} selected vectors is of the lane's dialect(s) "
                            f"({', '.join(adapter.dialects)}): {adapter.lane.describe()}")
        reports.append(lane)
    dialects = sorted({d for a in adapters for d in a.dialects})
    info = _run_info(args)
    info["results"] = ", ".join(str(p) for p in paths)
    info["coverage"] = ("partial (--allow-partial): selected vectors missing from the results file are skipped"
                        if args.allow_partial else
                        f"complete: every selected vector of {', '.join(dialects)} must be in the results file "
                        f"(in every lane of its dialect)")
    info["allow_partial"] = bool(args.allow_partial)
    _print_reports(args, reports, info)
    return _finish(args, reports, info)


# ----------------------------------------------------------------------------- the child
class _Progress:
    """Where a child says what it is doing: one tab-separated line per event, appended
    and flushed (``setup``; ``lane DTYPE MODE``; ``vector ID``; ``error MESSAGE``; ``done``)."""

    def __init__(self, path):
        self.handle = open(path, "a", encoding="utf-8") if path else None

    def emit(self, *fields) -> None:
        if self.handle is not None:
            self.handle.write("\t".join(" ".join(str(f).split()) for f in fields) + "\n")
            self.handle.flush()


def _watch(adapter, progress: _Progress) -> None:
    """Report every vector the runner hands the adapter (``unsupported`` and ``create`` are
    called once per vector it runs), so that the supervisor can time each vector and name
    the one a child died on."""
    for method in ("unsupported", "create"):
        original = getattr(adapter, method)

        def wrapped(vector, *rest, _original=original, **kwargs):
            progress.emit("vector", vector.id)
            return _original(vector, *rest, **kwargs)

        setattr(adapter, method, wrapped)
    environment = adapter.environment

    def setting_up(*a, **kw):
        progress.emit("setup")
        return environment(*a, **kw)

    adapter.environment = setting_up


def _work(args) -> int:
    """The child: run one adapter over its lanes and write a complete report to
    ``--worker-report``; the supervisor (``_supervise``) prints it. Exit status as the run's."""
    progress = _Progress(args.worker_progress)
    progress.emit("setup")
    (adapter_name,) = _csv(args.adapter)
    dtypes = _csv(args.dtype, DTYPES, "dtype") or ["float64", "float32"]
    modes = _csv(args.mode, MODES, "mode") or list(MODES)
    adapter = resolve(adapter_name)
    why_not = adapter.device_available(args.device)
    skipped = None
    reports = []
    if why_not and not args.if_available:
        raise UsageError(f"device {args.device!r} is not available: {why_not}")
    if why_not:
        skipped = f"{args.device}: {why_not}"
    else:
        documents = vf.load_corpus(args.vectors_dir)
        vectors, corpus = _select(documents, args), list(vf.iter_vectors(documents))
        entries = expectations.for_adapter(adapter.expectations or adapter.name, args.xfail_file)
        expectations.check_flags(entries, {f for _, v in corpus for f in v.flags})
        policy = Policy.load()
        dialects = getattr(adapter, "dialects", ("keras",))
        _watch(adapter, progress)
        for dtype in dtypes:
            for mode in modes:
                progress.emit("lane", dtype, mode)
                if dtype not in adapter.dtypes:
                    reports.append(runner.LaneReport(
                        adapter.name, dtype, args.device, mode, adapter.environment(args.device), 0.0, [],
                        not_run=f"{adapter.name} does not run {dtype} (it runs {', '.join(adapter.dtypes)})"))
                    continue
                lane = runner.run_lane(adapter, vectors, args.vectors_dir, dtype, args.device, mode, policy, entries,
                                       corpus=corpus)
                if not lane.outcomes and not lane.not_run:
                    lane.not_run = (f"none of the {len(vectors)} selected vectors is of {adapter.name}'s "
                                    f"dialect(s) ({', '.join(dialects)})")
                reports.append(lane)
        if adapter_name != adapter.name:  # module:Class: reproduction commands must name it so
            for r in reports:
                r.environment["adapter_spec"] = adapter_name
    code = _verdict(reports)
    data = report.to_json(reports, {}, skipped, verdict=VERDICTS[code], exit_status=code)
    data["complete"] = True
    vf.write_atomic(args.worker_report, json.dumps(data, sort_keys=True) + "\n")
    progress.emit("done")
    return code


# ----------------------------------------------------------------------------- supervision
class _Interrupted(BaseException):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt():
    """SIGINT and SIGTERM raise _Interrupted in the main thread while the gate supervises."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _StatusLine:
    """The progress line of a long run, on standard error when it is a terminal (never in a
    log): rewritten in place, and cleared before anything else is printed, so it never
    mixes with the output."""

    INTERVAL = 0.5  # seconds between redraws

    def __init__(self, enabled: bool):
        self.enabled, self.shown, self.drawn_at = enabled, False, 0.0
        self.started = time.monotonic()

    @staticmethod
    def wanted() -> bool:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"

    def show(self, units) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.drawn_at < self.INTERVAL:
            return
        self.drawn_at = now
        busy = [u.status() for u in units if u.proc is not None and u.proc.returncode is None]
        done = sum(u.proc is not None and u.proc.returncode is not None for u in units)
        text = f"[{now - self.started:5.0f} s] {done}/{len(units)} adapter processes done; " + "; ".join(busy)
        width = shutil.get_terminal_size((100, 20)).columns
        sys.stderr.write("\r\x1b[K" + text[:max(width - 1, 10)])
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


class _Unit:
    """One child process: an adapter (and with --split dtype one lane dtype)."""

    def __init__(self, name, dtypes, modes, args, tmp: Path, index: int, split: bool, if_available: bool):
        self.name, self.dtypes, self.modes = name, dtypes, modes
        self.label = f"{name} {dtypes[0]}" if split else name
        stem = f"{index:02d}"
        self.report, self.progress = tmp / f"{stem}.json", tmp / f"{stem}.progress"
        public = ["-m", "conformance", "run", "--adapter", name, "--device", args.device,
                  "--vectors-dir", str(args.vectors_dir), "--dtype", ",".join(dtypes), "--mode", ",".join(modes)]
        for key in ("vectors", "flags"):
            for value in getattr(args, key):
                public += [f"--{key}", value]
        for path in args.xfail_file:
            public += ["--xfail-file", str(path)]
        if if_available:
            public.append("--if-available")
        self.shown = " ".join(public)
        self.cmd = [sys.executable, *public, "--worker-report", str(self.report),
                    "--worker-progress", str(self.progress)]
        self.proc = None
        self.output: list[str] = []
        self.threads = []
        self.offset, self.pending_text = 0, ""
        self.where, self.last_change = None, None
        self.lane_vectors: set = set()  # ids the child has reached in its current lane
        self.error_message, self.timed_out, self.done = None, False, False

    def start(self, stream: bool, lock: threading.Lock, status: _StatusLine | None = None) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     errors="replace", bufsize=1, start_new_session=True, env=dict(os.environ))
        self.last_change = time.monotonic()

        def pump(pipe, sink):
            for line in iter(pipe.readline, ""):
                if stream:
                    with lock:
                        if status is not None:
                            status.clear()
                        sink().write(line)
                        sink().flush()
                else:
                    self.output.append(line)
            pipe.close()

        self.threads = [threading.Thread(target=pump, args=(self.proc.stdout, lambda: sys.stdout), daemon=True),
                        threading.Thread(target=pump, args=(self.proc.stderr, lambda: sys.stderr), daemon=True)]
        for t in self.threads:
            t.start()

    def read_progress(self) -> None:
        try:
            with open(self.progress, encoding="utf-8") as handle:
                handle.seek(self.offset)
                text = handle.read()
                self.offset = handle.tell()
        except FileNotFoundError:
            return
        lines = (self.pending_text + text).split("\n")
        self.pending_text = lines.pop()
        lane = self.where[0] if self.where else None
        for line in lines:
            kind, _, rest = line.partition("\t")
            where = self.where
            if kind == "setup":
                where = (lane, None)
            elif kind == "lane":
                lane = tuple(rest.split("\t"))
                where = (lane, None)
                self.lane_vectors = set()
            elif kind == "vector":
                where = (lane, rest)
                self.lane_vectors.add(rest)
            elif kind == "error":
                self.error_message = rest
            elif kind == "done":
                self.done = True
            if where != self.where:
                self.where, self.last_change = where, time.monotonic()

    def status(self) -> str:
        """What the progress line says of this process while it runs."""
        if not self.where or self.where[1] is None:
            lane = f" {' '.join(self.where[0])}" if self.where and self.where[0] else ""
            return f"{self.label}{lane}: setting up"
        lane = f" {' '.join(self.where[0])}" if self.where[0] else ""
        return f"{self.label}{lane}: vector {len(self.lane_vectors)} ({self.where[1]})"

    def position(self) -> str:
        if self.done:
            return "after its last vector"
        if not self.where or self.where[1] is None:
            lane = f" of the {' '.join(self.where[0])} lane" if self.where and self.where[0] else ""
            return f"while setting up{lane} (before its first vector there)"
        lane = f" ({' '.join(self.where[0])})" if self.where[0] else ""
        return f"on vector {self.where[1]!r}{lane}"

    def kill(self) -> None:
        """SIGKILL the child's whole process group (it leads a session of its own), while
        the child is not yet reaped, so the group id cannot belong to anyone else."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=2)

    def collect(self, timeout: float):
        """(lanes, skipped reason, error): the child's report when it ended normally with
        a complete one, else the error that names the adapter and where it was."""
        code = self.proc.returncode
        where = self.position()
        if self.timed_out:
            return [], None, (f"adapter {self.label}: ran past the per-vector timeout of {timeout:g} s (--timeout) "
                              f"{where}; its processes were killed")
        if self.error_message:
            return [], None, f"adapter {self.label}: error: {self.error_message}"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return [], None, f"adapter {self.label}: its process was killed by {name} {where}"
        data = None
        if self.report.exists():
            try:
                data = json.loads(self.report.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None
        if not isinstance(data, dict) or data.get("complete") is not True:
            return [], None, (f"adapter {self.label}: its process exited with code {code} {where} "
                              f"without writing a complete report")
        if code != data.get("exit_status"):
            return [], None, (f"adapter {self.label}: its process exited with code {code}, but its report says "
                              f"{data.get('verdict')} (exit {data.get('exit_status')}): it did not end normally")
        lanes = [runner.LaneReport.from_json(lane) for lane in data["lanes"]]
        if not data.get("skipped"):
            have = sorted((r.dtype, r.mode) for r in lanes)
            want = sorted((d, m) for d in self.dtypes for m in self.modes)
            if have != want:
                return [], None, (f"adapter {self.label}: its report holds the lanes {have}, not the requested {want}")
        return lanes, data.get("skipped"), None


def installed(adapter_name: str) -> str | None:
    """None when the adapter's frameworks are importable (or it is not a registered name),
    else what is missing (``AdapterEntry.missing``)."""
    registered = ADAPTERS.get(adapter_name)
    return None if registered is None else registered.missing()


def _supervise(args) -> int:
    """``run``: every adapter in a child process (one per adapter, or per adapter and lane
    dtype with ``--split dtype``), up to ``--jobs`` at once, each supervised (exit status,
    complete report, per-vector ``--timeout``); the lanes merged into one report. One
    adapter prints as before: its header, table, failures and verdict. Several print each
    child's as it finishes, then a summary table in registry order and the verdict."""
    adapters = _csv(args.adapter) or ["reference"]
    groups = [a for a in adapters if a in GROUPS]
    if groups and len(adapters) > 1:
        raise UsageError(f"--adapter {groups[0]} (a group) cannot be combined with other adapters ({adapters})")
    names = list(GROUPS[groups[0]]) if groups else adapters
    single = len(adapters) == 1 and not groups
    # Several adapters on a device other than cpu: those that cannot use it are skipped.
    if_available = args.if_available or (not single and args.device != "cpu")
    dtypes = _csv(args.dtype, DTYPES, "dtype") or ["float64", "float32"]
    modes = _csv(args.mode, MODES, "mode") or list(MODES)
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be at least 1")
    if not args.timeout >= 0:
        raise UsageError(f"--timeout {args.timeout}: must be >= 0 seconds (0: no limit)")
    _check_outputs(args, _inputs(args))
    if not single:  # one clear error, not one per adapter process (a single child says it itself)
        _select(vf.load_corpus(args.vectors_dir, validate_schema=False), args)
    skipped, runnable = [], []
    for name in names:
        missing = None if single else installed(name)
        (skipped.append((name, missing)) if missing else runnable.append(name))
    split = args.split == "dtype" and not single
    info = _run_info(args)
    tmp = Path(tempfile.mkdtemp(prefix="conformance-"))
    units = []
    with _signals_interrupt():
        try:
            for name in runnable:
                for unit_dtypes in ([[d] for d in dtypes] if split else [dtypes]):
                    units.append(_Unit(name, unit_dtypes, modes, args, tmp, len(units), split, if_available))
            return _run_units(args, units, single, skipped, info)
        except _Interrupted as exc:
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_IGN)  # no second interruption while cleaning up
            stopped = sum(u.proc is not None and u.proc.returncode is None for u in units)
            for unit in units:
                unit.kill()
            name = signal.Signals(exc.signum).name
            print(f"\nINTERRUPTED by {name}: stopped {stopped} adapter process{'es' if stopped != 1 else ''}; "
                  f"no report written", file=sys.stderr, flush=True)
            return 128 + exc.signum
        finally:
            for unit in units:
                unit.kill()
            shutil.rmtree(tmp, ignore_errors=True)


def _run_units(args, units, single, skipped, info) -> int:
    lock = threading.Lock()
    stream = single or args.jobs == 1
    status = _StatusLine(_StatusLine.wanted())
    pending, running = list(units), []
    results = {}

    def finished(unit):
        unit.join()
        unit.read_progress()
        lanes, skip, error = unit.collect(args.timeout)
        results[unit] = (lanes, skip, error)
        if single:
            return
        with lock:
            status.clear()
            if not stream:
                print(f"\n=== {unit.label}: {unit.shown}")
                print("".join(unit.output), end="")
            if error:
                print(f"\nERROR: {error}")
            elif skip:
                print(f"skipped adapter {unit.name} on {args.device}: {skip.split(': ', 1)[-1]}")
            else:
                _print_reports(args, lanes, info)
                _print_verdict(_verdict(lanes), lanes, unit=unit.label)
            sys.stdout.flush()

    while pending or running:
        while pending and len(running) < args.jobs:
            unit = pending.pop(0)
            if stream and not single:
                with lock:
                    status.clear()
                    print(f"\n=== {unit.label}: {unit.shown}", flush=True)
            unit.start(stream, lock, status)
            running.append(unit)
        time.sleep(0.05)
        for unit in list(running):
            unit.read_progress()
            if unit.proc.poll() is not None:
                running.remove(unit)
                finished(unit)
            elif args.timeout and time.monotonic() - unit.last_change > args.timeout:
                unit.timed_out = True
                unit.kill()
                running.remove(unit)
                finished(unit)
        with lock:
            status.show(units)
    status.clear()

    reports, errors = [], []
    for unit in units:  # registry order
        lanes, skip, error = results[unit]
        reports.extend(lanes)
        if error:
            errors.append(error)
        if skip and unit.name not in [n for n, _ in skipped]:
            skipped.append((unit.name, skip))
    if single:
        (unit,) = units
        lanes, skip, error = results[unit]
        if error and unit.error_message:  # the child said why ("error: ..." above), as before
            code = _verdict(reports, errors)
            _write_outputs(args, reports, info, code, errors)
            return code
        if skip:
            print(f"skipped adapter {unit.name} on {args.device}: {skip.split(': ', 1)[-1]}")
        elif not error:
            _print_reports(args, reports, info)
        return _finish(args, reports, info, errors, skipped)
    print("\n=== summary of every adapter")
    print(report.lane_table(reports))
    models = report.model_summary(reports)
    if models:
        print(models)
    for name, why in skipped:
        print(f"skipped adapter {name}: {why}")
    return _finish(args, reports, info, errors, skipped)
