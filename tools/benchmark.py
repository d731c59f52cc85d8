"""Benchmark: the reference's Adafactor step on large float64 variables, side by side with
torch.optim.Adafactor (float64, CPU) on the same tensors and with a memory-traffic floor
measured in the same run.

    python -m tools.benchmark [--repeats 5] [--shapes 256x256,1024x1024,4096x4096,64x256x256] [--gpu]

The floor is what any step must at least cost: reading the variable, the gradient and the
factored statistics and writing the variable and the statistics back, timed as NumPy copies
of exactly those arrays (``np.copyto`` into preallocated buffers). Keras keeps a full-size
``v`` too (reference/adafactor_step.py, zero_moments), so the floor counts its write as well.
Each row is the median of ``--repeats`` timed steps after one warm-up step; ratios are
taken within the same run (the machines are shared and noisy). Threads: whatever NumPy and
torch use by default (``torch.get_num_threads()`` is printed).

``--profile`` adds the step's passes one by one at the largest shape (what the time goes to);
``--gate`` times the suite's own jobs as a user runs them, imports included, each the median of
three runs: the reference's self-replay of the whole corpus (``python -m conformance run
--adapter reference``), the corpus regeneration (``python -m tools.generate_vectors --out TMP``)
and its freshness check (``--check``).

``--small`` times one step on the small variables differential fuzzing draws (Python overhead
dominates there, not memory traffic): the spec's ``update_step`` alone, ``reference.Adafactor.apply``
on two variables, and every dialect's ``apply`` on the same two variables, in microseconds of
CPU time (``time.process_time``: single-threaded work, robust to the shared machine's load).

``--gpu`` adds a second table where torch sees a CUDA device: torch.optim.Adafactor's step on
the GPU in float64 and float32 (single-tensor and foreach) and the same copy floor as
device-to-device copies, each timed with ``torch.cuda.synchronize()`` around every step.
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

from reference import reductions
from reference.adafactor_step import Hyperparameters, update_step, zero_moments

DEFAULT_SHAPES = "256x256,1024x1024,4096x4096,64x256x256"


def _median_time(fn, repeats: int, clock=time.perf_counter) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def reference_step(x, g, repeats: int) -> float:
    hyper = Hyperparameters()
    state = {"moments": zero_moments(x), "x": x, "t": 0}

    def step():
        state["x"], state["moments"], _ = update_step(state["x"], g, state["moments"], 0.01, state["t"], hyper)
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


def _cuda_median_time(torch, fn, repeats: int) -> float:
    def synced():
        fn()
        torch.cuda.synchronize()

    return _median_time(synced, repeats)


def gpu_rows(shapes, repeats: int) -> list:
    """torch.optim.Adafactor on the GPU (float64/float32, single-tensor/foreach) and a
    device-copy floor of the same arrays, per shape (milliseconds)."""
    import torch

    rows = []
    for shape in shapes:
        gen = torch.Generator(device="cuda").manual_seed(0)
        cells = ["x".join(map(str, shape))]
        for dtype in (torch.float64, torch.float32):
            x = torch.randn(shape, dtype=dtype, device="cuda", generator=gen)
            g = torch.randn(shape, dtype=dtype, device="cuda", generator=gen)
            for foreach in (False, True):
                p = x.clone().requires_grad_(True)
                p.grad = g
                opt = torch.optim.Adafactor([p], lr=0.01, foreach=foreach)
                cells.append(f"{_cuda_median_time(torch, opt.step, repeats) * 1e3:.3f}")
            r = torch.zeros(shape[:-1], dtype=dtype, device="cuda")
            c = torch.zeros(shape[:-2] + shape[-1:], dtype=dtype, device="cuda")
            sources = [x, g, r, c, x, r, c, g]
            buffers = [torch.empty_like(a) for a in sources]

            def traffic():
                for b, a in zip(buffers, sources):
                    b.copy_(a)

            cells.append(f"{_cuda_median_time(torch, traffic, repeats) / 2 * 1e3:.3f}")
        rows.append(cells)
    return rows


def profile_rows(shape, repeats: int) -> list:
    """The reference step's passes over variable-sized arrays, timed one by one with the
    same ufunc calls (and buffers) as reference/adafactor_step.py's factored path."""
    rng = np.random.default_rng(1)
    x, g = rng.normal(size=shape), rng.normal(size=shape)
    work, out = np.empty_like(x), np.empty_like(x)
    r = reductions.mean(np.square(g), axis=-1)
    c = reductions.mean(np.square(g), axis=-2)
    v = np.expand_dims(r / reductions.mean(r, axis=-1, keepdims=True), -1) * np.expand_dims(c, -2)
    passes = [
        ("RMS(x): square into a buffer", lambda: np.square(x, out=work)),
        ("RMS(x): mean", lambda: reductions.mean(work)),
        ("G**2 into a buffer", lambda: np.square(g, out=work)),
        ("+= epsilon_1", lambda: np.add(work, 1e-30, out=work)),
        ("r: mean over the last axis", lambda: reductions.mean(work, axis=-1)),
        ("c: mean over the second-to-last axis", lambda: reductions.mean(work, axis=-2)),
        ("V = (R / mean R) outer C (new array: it is state)",
         lambda: np.expand_dims(r / reductions.mean(r, axis=-1, keepdims=True), -1) * np.expand_dims(c, -2)),
        ("sqrt(V) into the buffer", lambda: np.sqrt(v, out=work)),
        ("U = G / sqrt(V) in place", lambda: np.divide(g, work, out=work)),
        ("RMS(U): square into the result buffer", lambda: np.square(work, out=out)),
        ("RMS(U): mean", lambda: reductions.mean(out)),
        ("U / clip denominator in place", lambda: np.divide(work, 1.0, out=work)),
        ("alpha * U in place", lambda: np.multiply(0.001, work, out=work)),
        ("x - alpha U into the result buffer", lambda: np.subtract(x, work, out=out)),
        ("(one copy of x, for scale)", lambda: np.copyto(out, x)),
        ("(one fresh allocation + write, as the readable step did per pass)", lambda: np.square(x)),
    ]
    return [[name, f"{_median_time(fn, repeats) * 1e3:.1f}"] for name, fn in passes]


SMALL_SHAPES = ((), (3,), (5, 3), (2, 4, 6))


def _median_per_call(fn, calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean CPU time (``time.process_time``) of ``calls``
    consecutive calls, in seconds. These steps are single-threaded, so the process's CPU
    time is their cost, and other processes on the shared machine do not inflate it as
    they inflate wall time."""
    return _median_time(lambda: [fn() for _ in range(calls)], repeats, clock=time.process_time) / calls


def small_rows(repeats: int, calls: int = 300) -> list:
    """Microseconds per step on the small variables differential fuzzing draws: the spec's
    ``update_step`` on one variable of each shape, and ``apply`` on that variable plus a
    (4, 3) matrix for ``reference.Adafactor`` and each dialect (its default arguments)."""
    from reference import Adafactor
    from reference.dialects import DIALECTS, optimizer_class

    rng = np.random.default_rng(2)
    hyper = Hyperparameters()
    rows = []
    for shape in SMALL_SHAPES:
        x, g = np.asarray(rng.normal(size=shape)), np.asarray(rng.normal(size=shape))
        moments = zero_moments(x)
        cells = [str(shape), f"{_median_per_call(lambda: update_step(x, g, moments, 0.01, 3, hyper), calls, repeats) * 1e6:.1f}"]
        grads = [g, rng.normal(size=(4, 3))]
        makers = [lambda: Adafactor(learning_rate=0.01)] + [
            (lambda d=d: optimizer_class(d)(learning_rate=0.01) if d == "keras" else optimizer_class(d)())
            for d in DIALECTS]
        for make in makers:
            opt = make()
            variables = [x.copy(), rng.normal(size=(4, 3))]
            opt.build(variables)
            with np.errstate(all="ignore"):
                cells.append(f"{_median_per_call(lambda: opt.apply(grads, variables), calls, repeats) * 1e6:.1f}")
        rows.append(cells)
    return rows, ["shape", "update_step us", "Adafactor.apply us"] + [f"{d} apply us" for d in DIALECTS]


def gate_rows(repeats: int = 3) -> list:
    """Wall time of the suite's own jobs, imports included (median of ``repeats``)."""
    import subprocess
    import tempfile

    jobs = [("reference self-replay (every vector, float64+float32, both modes)",
             [sys.executable, "-m", "conformance", "run", "--adapter", "reference"]),
            ("corpus regeneration into a temporary directory", None),
            ("corpus freshness check (--check)", [sys.executable, "-m", "tools.generate_vectors", "--check"])]
    rows = []
    for name, cmd in jobs:
        times = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                command = cmd or [sys.executable, "-m", "tools.generate_vectors", "--out", tmp]
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                times.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        rows.append([name, f"{statistics.median(times):.2f}"])
    return rows


def fix_allocator() -> str:
    """Pin glibc's mmap threshold at its 32 MiB maximum (mallopt M_MMAP_THRESHOLD) for both
    implementations alike. Left dynamic, it depends on what the process freed before: the same
    256x256 step measured 0.52 ms first in a process and 0.25 ms later (page faults of fresh
    mmap'd buffers). Arrays above 32 MiB are always mmap'd, so the big shapes still pay them."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        if libc.mallopt(-3, 32 * 1024 * 1024) == 1:  # M_MMAP_THRESHOLD = -3
            return "glibc mmap threshold pinned at 32 MiB"
    except (OSError, AttributeError, TypeError):
        pass
    return "allocator left as is (no glibc mallopt)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--gpu", action="store_true", help="add torch's CUDA step (needs a CUDA device)")
    parser.add_argument("--profile", action="store_true", help="time the step's passes one by one")
    parser.add_argument("--gate", action="store_true", help="time self-replay and regeneration")
    parser.add_argument("--small", action="store_true", help="time steps on small variables (fuzzing's sizes)")
    args = parser.parse_args(argv)
    allocator = fix_allocator()
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
          f"numpy {np.__version__}, {threads}; median of {args.repeats} steps after a warm-up; {allocator}")
    print(tabulate(rows, headers=["shape", "MiB per array", "reference ms", "torch ms", "floor ms",
                                  "reference / torch", "reference / floor"], tablefmt="github"))
    if args.profile:
        largest = max((tuple(int(n) for n in t.split("x")) for t in args.shapes.split(",")),
                      key=lambda sh: int(np.prod(sh)))
        print(f"\nThe step's passes at {'x'.join(map(str, largest))} float64 (median of {args.repeats}, ms)")
        print(tabulate(profile_rows(largest, args.repeats), headers=["pass", "ms"], tablefmt="github"))
    if args.small:
        rows, headers = small_rows(args.repeats)
        print(f"\nOne step on small float64 variables (median of {args.repeats} runs of 300 steps, "
              "CPU microseconds)")
        print(tabulate(rows, headers=headers, tablefmt="github"))
    if args.gate:
        print("\nThe suite's own jobs, wall time with imports (median of 3, seconds)")
        print(tabulate(gate_rows(), headers=["job", "seconds"], tablefmt="github"))
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print(f"\n--gpu: torch {torch.__version__} sees no CUDA device; no GPU table")
            return 2
        shapes = [tuple(int(n) for n in text.split("x")) for text in args.shapes.split(",")]
        print(f"\nGPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
              f"median of {args.repeats} synchronized steps after a warm-up (ms)")
        print(tabulate(gpu_rows(shapes, args.repeats),
                       headers=["shape", "float64 single", "float64 foreach", "float64 copy floor",
                                "float32 single", "float32 foreach", "float32 copy floor"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
