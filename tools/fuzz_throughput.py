"""Measure differential-fuzzing throughput (examples per second) per adapter, in one run.

    python -m tools.fuzz_throughput [--examples 60] [--profile ci] [--repeat 3]

Each adapter runs in its own process (one Keras backend per process), the reference
first; the table goes to stdout and into conformance/FUZZING.md by hand. ``--repeat N``
runs every lane N times, each in a fresh process, and reports whether every run drew the
same examples (the ``draws`` fingerprint) and reached the same verdicts: the CI profile's
no-flake claim, measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

EAGER_JAX = "conformance.adapters.keras_adapter:KerasJaxEagerAdapter"
LANES = [("reference", "float64"), ("reference", "float32"), ("keras-tensorflow", "float64"),
         ("keras-tensorflow", "float32"), ("keras-torch", "float32"), ("keras-jax", "float32"),
         (EAGER_JAX, "float32")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=60)
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--repeat", type=int, default=1, help="runs per lane (fresh processes)")
    args = parser.parse_args(argv)
    rows = []
    for adapter, dtype in LANES:
        runs = [_run(adapter, dtype, args.profile, args.examples) for _ in range(args.repeat)]
        shown = "keras-jax (eager apply)" if adapter == EAGER_JAX else adapter
        if any(s is None for s, _ in runs):
            rows.append([shown, dtype, "-", "-", "-", "-", "-", f"exit {runs[0][1]}"])
            continue
        s, code = runs[0]
        same = len({(r["draws"], r["examples"], r["discarded"], json.dumps(r["statuses"], sort_keys=True))
                    for r, _ in runs}) == 1
        seconds = sorted(r["seconds"] for r, _ in runs)[len(runs) // 2]  # the median run
        rows.append([shown, dtype, s["examples"], s["discarded"], f"{seconds:.1f}",
                     f"{s['examples'] / seconds:.1f}", f"{s['draws']} x{len(runs)} " + ("same" if same else "DIFFERENT"),
                     "ok" if code == 0 else f"exit {code}"])
    print(tabulate(rows, headers=["adapter", "dtype", "examples", "discarded", "seconds (median)", "examples/s",
                                  "draws, runs", "result"], tablefmt="github"))
    return 0


def _run(adapter: str, dtype: str, profile: str, examples: int):
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "s.json"
        code = subprocess.call([sys.executable, "-m", "conformance.fuzz", "--adapter", adapter, "--dtype", dtype,
                                "--profile", profile, "--max-examples", str(examples),
                                "--json", str(stats)], cwd=tmp, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
        return (json.loads(stats.read_text()) if stats.exists() else None), code


if __name__ == "__main__":
    sys.exit(main())
