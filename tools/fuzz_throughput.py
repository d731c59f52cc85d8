"""Measure differential-fuzzing throughput (examples per second) and depth per adapter, in
one run.

    python -m tools.fuzz_throughput [--examples 60] [--profile ci] [--repeat 3] [--lanes reference:float32 ...]

Each lane runs in its own process (one Keras backend per process), the reference first;
two tables go to stdout and into conformance/FUZZING.md by hand: throughput and verdicts,
and the deep regimes each lane reached (checked examples / examples run). Throughput is
given per wall second and per CPU second of the fuzzing process (all its threads): on a
machine shared with other jobs only the second is comparable between runs. ``--repeat N``
runs every lane N times, each in a fresh process, and reports whether every run drew the
same examples (the ``draws`` fingerprint) and reached the same verdicts and regime counts:
the CI profile's no-flake claim, measured.
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
         ("keras-tensorflow", "float32"), ("keras-torch", "float64"), ("keras-torch", "float32"),
         ("keras-jax", "float64"), ("keras-jax", "float32"), (EAGER_JAX, "float32")]
#: Short column names of the regimes (conformance/fuzz/strategies.py REGIMES, in order).
SHORT = {"accumulation_clip": "acc+clip", "accumulation_schedule": "acc+sched", "ema_overwrite": "ema ovw",
         "relative_step_false_high_lr": "rel=F lr>", "weight_decay_epsilon_2": "wd+eps2",
         "long_run": "step>8", "long_axis": "axis>64"}
VERDICT = {0: "ok", 1: "FAIL", 3: "NOTHING CHECKED"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=60)
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--repeat", type=int, default=1, help="runs per lane (fresh processes)")
    parser.add_argument("--lanes", nargs="*", help="ADAPTER:DTYPE (default: every lane of LANES)")
    args = parser.parse_args(argv)
    lanes = [tuple(lane.rsplit(":", 1)) for lane in args.lanes] if args.lanes else LANES
    rows, regime_rows = [], []
    for adapter, dtype in lanes:
        runs = [_run(adapter, dtype, args.profile, args.examples) for _ in range(args.repeat)]
        shown = "keras-jax (eager apply)" if adapter == EAGER_JAX else adapter
        if any(s is None for s, _ in runs):
            rows.append([shown, dtype] + ["-"] * 9 + [f"exit {runs[0][1]}"])
            continue
        s, code = runs[0]
        same = len({(r["draws"], r["examples"], r["discarded"], json.dumps(r["statuses"], sort_keys=True),
                     json.dumps(r["regimes"], sort_keys=True)) for r, _ in runs}) == 1
        seconds = sorted(r["seconds"] for r, _ in runs)[len(runs) // 2]  # the median run
        cpu = sorted(r["cpu_seconds"] for r, _ in runs)[len(runs) // 2]
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(s["statuses"].items()))
        rows.append([shown, dtype, s["examples"], s["discarded"], s["checked"], statuses, f"{seconds:.1f}",
                     f"{cpu:.1f}", f"{s['examples'] / seconds:.1f}", f"{s['examples'] / cpu:.1f}" if cpu else "-",
                     f"{s['draws']} x{len(runs)} " + ("same" if same else "DIFFERENT"),
                     VERDICT.get(code, f"exit {code}")])
        regime_rows.append([shown, dtype] + [f"{s['regimes'].get(name, 0)}/{s['regimes_run'].get(name, 0)}"
                                             for name in SHORT]
                           + [s["one_step"], s["max_steps"], s["max_last_axis"], s["configurations"]])
    print(tabulate(rows, headers=["adapter", "dtype", "examples", "discarded", "checked", "statuses",
                                  "seconds (median)", "CPU s (median)", "examples/s", "examples/CPU s", "draws, runs", "result"], tablefmt="github"))
    print()
    print(tabulate(regime_rows, headers=["adapter", "dtype", *SHORT.values(), "1 step", "max steps", "max last axis",
                                         "configs"], tablefmt="github"))
    return 0


def _run(adapter: str, dtype: str, profile: str, examples: int):
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "s.json"
        code = subprocess.call([sys.executable, "-m", "conformance.fuzz", "--adapter", adapter, "--dtype", dtype,
                                "--profile", profile, "--max-examples", str(examples),
                                "--json", str(stats)], cwd=tmp, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent),
                                        TF_CPP_MIN_LOG_LEVEL="3"))
        return (json.loads(stats.read_text()) if stats.exists() else None), code


if __name__ == "__main__":
    sys.exit(main())
