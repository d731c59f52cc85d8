"""``adafactor-conformance`` / ``python -m conformance``: the conformance gate.

    python -m conformance run --adapter keras-jax --dtype float32 --device cpu \\
        [--vectors PATTERN ...] [--flags FLAG ...] [--mode teacher|trajectory] \\
        [--xfail-file F ...] [--json OUT] [--junit OUT] [--plot OUT.png]
    python -m conformance run --adapter all          # every installed adapter (the main job)
    python -m conformance run --adapter all --device gpu   # GPU lanes; adapters without one skip
    python -m conformance grade --results FILE       # a port's results file
    python -m conformance list [--vectors PATTERN]   # the vectors and their flags

Exit status: 0 conforms, 1 does not conform, 2 usage or environment error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from conformance import expectations, report, runner
from conformance import vectorfile as vf
from conformance.adapters import REGISTRY, AdapterError, resolve
from conformance.adapters.base import DEVICES, DTYPES
from conformance.tolerance import Policy

DEFAULT_VECTORS = Path(__file__).resolve().parent.parent / "vectors"
EXIT_OK, EXIT_NONCONFORMING, EXIT_ERROR = 0, 1, 2
MODES = ("teacher", "trajectory")

#: What each registered adapter needs importable, for ``--adapter all``.
REQUIREMENTS = {
    "reference": (),
    "keras-jax": ("keras", "jax"),
    "keras-torch": ("keras", "torch"),
    "keras-tensorflow": ("keras", "tensorflow"),
    "torch": ("torch",),
    "torch-foreach": ("torch",),
    "optax": ("jax", "optax"),
    "transformers": ("transformers", "torch"),
    "keras-jax-sharded": ("keras", "jax"),
}


class UsageError(Exception):
    pass


def _csv(values, allowed=None, what="value"):
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise UsageError(f"unknown {what} {bad}; choose from {list(allowed)}")
    return items


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adafactor-conformance", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--vectors", action="append", default=[], metavar="PATTERN",
                       help="vector id prefix or fnmatch pattern (repeatable, comma-separated)")
        p.add_argument("--flags", action="append", default=[], metavar="FLAG",
                       help="only vectors carrying every one of these flags")
        p.add_argument("--vectors-dir", type=Path, default=DEFAULT_VECTORS, help="corpus directory")
        p.add_argument("--xfail-file", action="append", default=[], type=Path,
                       help="extra skip/xfail file (format: conformance/expectations.py)")
        p.add_argument("--json", type=Path, help="write the JSON report here")
        p.add_argument("--junit", type=Path, help="write a JUnit XML report here")
        p.add_argument("--plot", type=Path, help="write an error-versus-step PNG here (needs matplotlib)")
        p.add_argument("--verbose", action="store_true", help="print every vector's outcome")

    run = sub.add_parser("run", help="run an adapter over the vectors")
    run.add_argument("--adapter", action="append", default=[],
                     help=f"registered name ({', '.join(REGISTRY)}), 'all', or package.module:Class")
    run.add_argument("--dtype", action="append", default=[],
                     help=f"comma-separated, from {','.join(DTYPES)} (default float64,float32)")
    run.add_argument("--mode", action="append", default=[], help="teacher,trajectory (default both)")
    run.add_argument("--device", default="cpu", choices=DEVICES)
    run.add_argument("--if-available", action="store_true",
                     help="skip (exit 0, saying why) an adapter that cannot use --device here instead of "
                          "failing with exit 2; implied by --adapter all on a device other than cpu")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="with --adapter all: run up to N adapter processes at once (default 1)")
    run.add_argument("--split", choices=("adapter", "dtype"), default="adapter",
                     help="with --adapter all: one process per adapter (default) or per adapter and "
                          "lane dtype (more, smaller units for many cores)")
    common(run)
    grade = sub.add_parser("grade", help="grade a port's results file")
    grade.add_argument("--results", type=Path, required=True)
    common(grade)
    lister = sub.add_parser("list", help="list the vectors")
    lister.add_argument("--vectors", action="append", default=[])
    lister.add_argument("--flags", action="append", default=[])
    lister.add_argument("--vectors-dir", type=Path, default=DEFAULT_VECTORS)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list(args)
        if args.command == "grade":
            return _grade(args)
        adapters = _csv(args.adapter) or ["reference"]
        if adapters == ["all"]:
            return _run_all(args)
        if len(adapters) > 1:
            return _run_all(args, adapters)
        return _run(args, adapters[0])
    except (UsageError, AdapterError, vf.VectorFormatError, expectations.ExpectationError,
            ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _selected(args):
    documents = vf.load_corpus(args.vectors_dir)
    vectors = runner.select(documents, _csv(args.vectors), _csv(args.flags))
    if not vectors:
        raise UsageError(f"no vector matches --vectors {args.vectors} --flags {args.flags}")
    return vectors


def _list(args) -> int:
    from tabulate import tabulate

    rows = [[v["id"], v["result"], len(v["steps"]), " ".join(v["flags"])] for _, v in _selected(args)]
    print(tabulate(rows, headers=["id", "result", "steps", "flags"]))
    return EXIT_OK


def _run_info(args) -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(),
            "numpy": np.__version__, "vectors": str(args.vectors_dir),
            "date": time.strftime("%Y-%m-%d")}


def _run(args, adapter_name: str) -> int:
    dtypes = _csv(args.dtype, DTYPES, "dtype") or ["float64", "float32"]
    modes = _csv(args.mode, MODES, "mode") or list(MODES)
    adapter = resolve(adapter_name)
    why_not = adapter.device_available(args.device)
    if why_not and args.if_available:
        print(f"skipped adapter {adapter.name} on {args.device}: {why_not}")
        if args.json:
            report.write_json(args.json, [], _run_info(args), skipped=f"{args.device}: {why_not}")
        return EXIT_OK
    if why_not:
        raise UsageError(f"device {args.device!r} is not available: {why_not}")
    vectors = _selected(args)
    entries = expectations.for_adapter(adapter.expectations or adapter.name, args.xfail_file)
    policy = Policy.load()
    reports = []
    for dtype in dtypes:
        if dtype not in adapter.dtypes:
            print(f"note: {adapter.name} does not run {dtype}; lane skipped", file=sys.stderr)
            continue
        for mode in modes:
            reports.append(runner.run_lane(adapter, vectors, args.vectors_dir, dtype, args.device, mode,
                                           policy, entries))
    if adapter_name != adapter.name:  # module:Class: reproduction commands must name it so
        for r in reports:
            r.environment["adapter_spec"] = adapter_name
    return _emit(args, reports)


def _emit(args, reports) -> int:
    info = _run_info(args)
    print(report.header(reports, info))
    print()
    print(report.lane_table(reports))
    for r in reports:
        if args.verbose:
            print(f"\n{r.adapter} {r.dtype} {r.mode}: per flag")
            print(report.flag_table(r))
            for o in r.outcomes:
                print(f"  {o.status:10s} {o.id}  {o.reason}")
        text = report.failures(r)
        if text:
            print()
            print(text)
    _write_outputs(args, reports, info)
    conforms = all(r.conforms for r in reports)
    print(f"\n{'CONFORMS' if conforms else 'DOES NOT CONFORM'}")
    return EXIT_OK if conforms else EXIT_NONCONFORMING


def _write_outputs(args, reports, info) -> None:
    """The --json, --junit and --plot files of a run."""
    if args.json:
        report.write_json(args.json, reports, info)
    if args.junit:
        report.write_junit(args.junit, reports)
    if args.plot:
        problem = report.write_plot(args.plot, reports)
        if problem:
            print(f"note: {problem}", file=sys.stderr)


def _grade(args) -> int:
    from conformance.adapters.results_file import ResultsFileAdapter, ResultsFileError

    try:
        adapter = ResultsFileAdapter(args.results)
    except ResultsFileError as exc:
        raise UsageError(str(exc)) from exc
    vectors = _selected(args)
    entries = expectations.for_adapter(adapter.expectations or adapter.name, args.xfail_file)
    dtype, mode = adapter.data["dtype"], adapter.data["mode"]
    if dtype not in DTYPES or mode not in MODES:
        raise UsageError(f"{args.results}: dtype {dtype!r} or mode {mode!r} unknown")
    reports = [runner.run_lane(adapter, vectors, args.vectors_dir, dtype, adapter.devices[0], mode,
                               Policy.load(), entries)]
    return _emit(args, reports)


def installed(adapter_name: str) -> str | None:
    """None when the adapter's frameworks are importable, else what is missing."""
    missing = [m for m in REQUIREMENTS.get(adapter_name, ()) if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def _run_all(args, names=None) -> int:
    """One process per adapter (a Keras backend is fixed per process), or per adapter and
    lane dtype with ``--split dtype``; merge the reports. With ``--jobs N`` up to N processes
    run at once, each one's output printed whole as it finishes; the summary table keeps
    registry order."""
    names = names or list(REGISTRY)
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be at least 1")
    lane_jsons, codes, skipped = [], [], []
    runnable = []
    for name in names:
        missing = installed(name)
        if missing:
            skipped.append((name, missing))
        else:
            runnable.append(name)
    if args.split == "dtype":
        dtypes = _csv(args.dtype, DTYPES, "dtype") or ["float64", "float32"]
        units = [(name, dtype) for name in runnable for dtype in dtypes]
    else:
        units = [(name, None) for name in runnable]
    with tempfile.TemporaryDirectory() as tmp:
        def command(name, dtype):
            label = name.replace(":", "_").replace("/", "_") + (f".{dtype}" if dtype else "")
            out = Path(tmp) / f"{label}.json"
            cmd = [sys.executable, "-m", "conformance", "run", "--adapter", name, "--device", args.device,
                   "--json", str(out), "--vectors-dir", str(args.vectors_dir)]
            keys = ("mode", "vectors", "flags") if dtype else ("dtype", "mode", "vectors", "flags")
            for key in keys:
                for value in getattr(args, key):
                    cmd += [f"--{key}", value]
            if dtype:
                cmd += ["--dtype", dtype]
            for path in args.xfail_file:
                cmd += ["--xfail-file", str(path)]
            if args.if_available or args.device != "cpu":
                cmd.append("--if-available")
            if args.verbose:
                cmd.append("--verbose")
            return cmd, out

        def run_one(unit):
            cmd, out = command(*unit)
            if args.jobs == 1:
                print(f"\n=== {unit[0]}: {' '.join(cmd[1:])}", flush=True)
                return subprocess.call(cmd, env=dict(os.environ)), out, None
            done = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True)
            return done.returncode, out, f"\n=== {unit[0]}: {' '.join(cmd[1:])}\n{done.stdout}{done.stderr}"

        if args.jobs == 1:
            results = [run_one(unit) for unit in units]
        else:
            from concurrent.futures import ThreadPoolExecutor, as_completed

            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                futures = {pool.submit(run_one, unit): k for k, unit in enumerate(units)}
                finished = {}
                for future in as_completed(futures):  # printed as they finish
                    finished[futures[future]] = future.result()
                    print(finished[futures[future]][2], end="", flush=True)
                results = [finished[k] for k in range(len(units))]  # registry order
        for (name, _), (code, out, _) in zip(units, results):
            if not out.exists():
                code = EXIT_ERROR  # it crashed before writing its report (see its output above)
            codes.append(code)
            if out.exists():
                data = json.loads(out.read_text())
                lane_jsons.extend(data["lanes"])
                if data.get("skipped") and name not in [n for n, _ in skipped]:
                    skipped.append((name, data["skipped"]))
    reports = [runner.LaneReport.from_json(lane) for lane in lane_jsons]
    print("\n=== summary of every adapter")
    print(report.lane_table(reports))
    for name, why in skipped:
        print(f"skipped adapter {name}: {why}")
    info = _run_info(args)
    _write_outputs(args, reports, info)
    if any(c == EXIT_ERROR for c in codes):
        print("\nERROR: an adapter could not run (see above)")
        return EXIT_ERROR
    if not reports:
        print(f"\nNOTHING CHECKED: no installed adapter can run on {args.device} here")
        return EXIT_OK
    conforms = all(c == EXIT_OK for c in codes)
    print(f"\n{'CONFORMS' if conforms else 'DOES NOT CONFORM'}")
    return EXIT_OK if conforms else EXIT_NONCONFORMING
