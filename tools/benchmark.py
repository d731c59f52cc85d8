"""Benchmark: the reference's Adafactor step on large float64 variables, side by side with
torch.optim.Adafactor (float64, CPU) on the same tensors and with a memory-traffic floor
measured in the same run.

    python -m tools.benchmark [--repeats 5] [--shapes 256x256,1024x1024,4096x4096,64x256x256]

The floor is what any step must at least cost: reading the variable, the gradient and the
factored statistics and writing the variable and the statistics back, timed as NumPy copies
of exactly those arrays (``np.copyto`` into preallocated buffers). Keras keeps a full-size
``v`` too (reference/adafactor_step.py, Slots), so the floor counts its write as well.
Each row is the median of ``--repeats`` timed steps after one warm-up step; ratios are
taken within the same run (the machines are shared and noisy). Threads: whatever NumPy and
torch use by default (``torch.get_num_threads()`` is printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
from tabulate import tabulate

from reference.adafactor_step import Hyperparameters, init_slots, update_step

DEFAULT_SHAPES = "256x256,1024x1024,4096x4096,64x256x256"


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_step(x, g, repeats: int) -> float:
    hyper = Hyperparameters()
    state = {"slots": init_slots(x), "x": x, "t": 0}

    def step():
        state["x"], state["slots"], _ = update_step(state["x"], g, state["slots"], 0.01, state["t"], hyper)
        state["t"] += 1

    return _median_time(step, repeats)


def floor(x, g, repeats: int) -> float:
    """Copy every array a step must read (x, g, r, c) into buffers and write x, r, c, v."""
    r = np.zeros(x.shape[:-1])
    c = np.zeros(x.shape[:-2] + x.shape[-1:])
    reads = [x, g, r, c]
    read_buffers = [np.empty_like(a) for a in reads]
    writes = [np.empty_like(x), np.empty_like(r), np.empty_like(c), np.empty_like(x)]
    sources = [x, r, c, g]

    def traffic():
        for a, b in zip(reads, read_buffers):
            np.copyto(b, a)
        for b, a in zip(writes, sources):
            np.copyto(b, a)

    return _median_time(traffic, repeats) / 2  # each copy reads and writes: count each array once


def torch_step(x, g, repeats: int):
    try:
        import torch
    except ImportError:
        return None
    p = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt = torch.optim.Adafactor([p], lr=0.01)
    return _median_time(opt.step, repeats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for text in args.shapes.split(","):
        shape = tuple(int(n) for n in text.split("x"))
        x = rng.normal(size=shape)
        g = rng.normal(size=shape)
        ref = reference_step(x, g, args.repeats)
        tor = torch_step(x, g, args.repeats)
        flo = floor(x, g, args.repeats)
        rows.append([text, f"{x.nbytes / 2**20:.1f}", f"{ref * 1e3:.1f}", "-" if tor is None else f"{tor * 1e3:.1f}",
                     f"{flo * 1e3:.1f}", "-" if tor is None else f"{ref / tor:.2f}", f"{ref / flo:.1f}"])
    try:
        import torch

        threads = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        threads = "torch not installed"
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numpy {np.__version__}, {threads}; median of {args.repeats} steps after a warm-up")
    print(tabulate(rows, headers=["shape", "MiB per array", "reference ms", "torch ms", "floor ms",
                                  "reference / torch", "reference / floor"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
