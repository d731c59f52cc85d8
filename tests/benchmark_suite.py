"""How long the test suite takes, by marker selection, test directory and test: runs
pytest in a child process per selection (with the tests/timing.py plugin) and prints
tables of wall time, CPU time (the child and every process it waited for: on a loaded
machine the steadier number), collection time and test counts, then where the time of the
first selection goes.

    .venv/bin/python -m tests.benchmark_suite                      # whole suite, then -m "not framework"
    .venv/bin/python -m tests.benchmark_suite -m "not framework"   # one selection
    .venv/bin/python -m tests.benchmark_suite --collect-only       # collection alone

Timings stay in ``--out`` (default out/test-timing/), one JSON-lines file per selection.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SELECTIONS = ("", "not framework")


def run(selection: str, out: Path, extra: list, timeout: float) -> dict:
    """One pytest run of ``selection`` (a ``-m`` expression; empty: everything)."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", selection).strip("-") or "all"
    log = out / f"{name}.jsonl"
    log.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.timing", *extra]
    if selection:
        command += ["-m", selection]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "ADAFACTOR_TEST_TIMING": str(log)})
        status = done.returncode
        summary = (done.stdout.strip().splitlines() or [""])[-1]
    except subprocess.TimeoutExpired:
        status, summary = "timeout", f"stopped after {timeout:.0f} s"
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    collected = next((r for r in records if "collected" in r), {})
    return {"selection": selection or "(all)", "wall": wall, "cpu": cpu, "status": status, "summary": summary,
            "collection": collected.get("collected"), "items": collected.get("items"), "records": records}


def where_the_time_goes(result: dict, top: int) -> None:
    per_test = collections.defaultdict(float)
    for record in result["records"]:
        if "test" in record:
            per_test[record["test"]] += record["seconds"]
    per_directory = collections.defaultdict(lambda: [0, 0.0])
    per_file = collections.defaultdict(lambda: [0, 0.0])
    for nodeid, seconds in per_test.items():
        path = nodeid.split("::")[0]
        for table, key in ((per_directory, str(Path(path).parent)), (per_file, path)):
            table[key][0] += 1
            table[key][1] += seconds
    modules = {r["module"]: r["seconds"] for r in result["records"] if "module" in r}
    print(f"\nWhere the time of {result['selection']} goes (seconds in tests, setup and teardown included):")
    print(tabulate([(d, n, f"{s:.1f}") for d, (n, s) in sorted(per_directory.items(), key=lambda kv: -kv[1][1])],
                   headers=("directory", "tests", "seconds"), tablefmt="github"))
    print()
    print(tabulate([(f, n, f"{s:.1f}", f"{modules.get(f, 0.0):.1f}")
                    for f, (n, s) in sorted(per_file.items(), key=lambda kv: -kv[1][1])],
                   headers=("file", "tests", "seconds", "collection s"), tablefmt="github"))
    print()
    print(tabulate([(f"{s:.1f}", n) for n, s in sorted(per_test.items(), key=lambda kv: -kv[1])[:top]],
                   headers=("seconds", f"the {top} slowest tests"), tablefmt="github"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", dest="selections", action="append", help="a marker expression (repeatable)")
    parser.add_argument("--collect-only", action="store_true", help="time collection alone")
    parser.add_argument("--top", type=int, default=30, help="how many of the slowest tests to list")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per selection")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "test-timing")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    selections = args.selections or list(DEFAULT_SELECTIONS)
    extra = ["--collect-only"] if args.collect_only else []
    results = [run(selection, args.out, extra, args.timeout) for selection in selections]
    print(tabulate([(r["selection"], r["items"], f"{r['wall']:.1f}", f"{r['cpu']:.1f}",
                     "" if r["collection"] is None else f"{r['collection']:.1f}", r["status"], r["summary"])
                    for r in results],
                   headers=("selection", "tests", "wall s", "CPU s", "collection s", "exit", "pytest says"),
                   tablefmt="github"))
    print(f"\n{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    if not args.collect_only:
        where_the_time_goes(results[0], args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
