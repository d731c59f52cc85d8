"""Measure differential-fuzzing throughput (examples per second) per adapter, in one run.

    python -m tools.fuzz_throughput [--examples 60] [--profile ci]

Each adapter runs in its own process (one Keras backend per process), the reference
first; the table goes to stdout and into conformance/FUZZING.md by hand.
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

LANES = [("reference", "float64"), ("reference", "float32"), ("keras-tensorflow", "float64"),
         ("keras-tensorflow", "float32"), ("keras-torch", "float32"), ("keras-jax", "float32")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=60)
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args(argv)
    rows = []
    for adapter, dtype in LANES:
        with tempfile.TemporaryDirectory() as tmp:
            stats = Path(tmp) / "s.json"
            code = subprocess.call([sys.executable, "-m", "conformance.fuzz", "--adapter", adapter, "--dtype", dtype,
                                    "--profile", args.profile, "--max-examples", str(args.examples),
                                    "--json", str(stats)], cwd=tmp, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL,
                                   env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
            if not stats.exists():
                rows.append([adapter, dtype, "-", "-", "-", f"exit {code}"])
                continue
            s = json.loads(stats.read_text())
            rows.append([adapter, dtype, s["examples"], s["discarded"], f"{s['seconds']:.1f}",
                         f"{s['examples_per_second']:.1f}", "ok" if code == 0 else f"exit {code}"])
    print(tabulate(rows, headers=["adapter", "dtype", "examples", "discarded", "seconds", "examples/s", "result"],
                   tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
