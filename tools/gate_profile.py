"""Where one adapter's gate run spends its time, phase by phase, in this process.

    python -m tools.gate_profile --adapter keras-torch [--dtype float64,float32] [--mode teacher,trajectory]

Runs what one adapter process of ``conformance run`` runs (corpus load, expectations, every
lane) and prints a table: wall and CPU seconds of Python start-up and imports, corpus load,
the adapter's framework import (its ``environment``), and inside the lanes the skip rules
(``applicability``), the replays (the adapter's own work: create, load, step, read, and the
runner's copies and dtype checks), the grading, and the deviation models' expected states.
CPU seconds are this process's (threads included), so a loaded machine inflates the wall
column more than the CPU column. The same table of another checkout (e.g. before a change):
``cd OTHER && PYTHONPATH=OTHER python /path/to/tools/gate_profile.py --adapter reference``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

_T0 = (time.perf_counter(), time.process_time())


class Clock:
    """Accumulates wall and CPU time per phase; ``wrap`` times every call of a function."""

    def __init__(self):
        self.wall, self.cpu, self.calls = {}, {}, {}

    @contextlib.contextmanager
    def phase(self, name: str):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - w, time.process_time() - c)

    def add(self, name, wall, cpu, calls=1):
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu
        self.calls[name] = self.calls.get(name, 0) + calls

    def wrap(self, owner, attribute: str, name: str):
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.phase(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="reference")
    parser.add_argument("--dtype", default="float64,float32")
    parser.add_argument("--mode", default="teacher,trajectory")
    parser.add_argument("--vectors-dir", type=Path, default=Path(__file__).resolve().parent.parent / "vectors")
    args = parser.parse_args(argv)
    clock = Clock()
    clock.add("python start-up and imports of the gate", time.perf_counter() - _T0[0],
              time.process_time() - _T0[1])
    with clock.phase("python start-up and imports of the gate"):
        from tabulate import tabulate

        from conformance import deviations, expectations, runner
        from conformance import vectorfile as vf
        from conformance.adapters import resolve
        from conformance.tolerance import Policy

        grading = sys.modules.get("conformance.grading")  # absent before the runner split
    with clock.phase("corpus load (and validation)"):
        documents = vf.load_corpus(args.vectors_dir)
        corpus = list(vf.iter_vectors(documents))
    with clock.phase("adapter and framework import (environment)"):
        adapter = resolve(args.adapter)
        adapter.environment("cpu")
    with clock.phase("expectations and policy"):
        entries = expectations.for_adapter(adapter.expectations or adapter.name)
        expectations.check_flags(entries, {f for _, v in corpus for f in v["flags"]})
        policy = Policy.load()
    # (the older runner's names too, so that the same table can be made of an older tree)
    clock.wrap(runner, "skip_reason" if hasattr(runner, "skip_reason") else "representability",
               "lanes: skip rules (applicability)")
    clock.wrap(runner, "replay_states", "lanes: replays (adapter work, copies, dtype checks)")
    if grading is not None:
        clock.wrap(grading.Grader, "replay", "lanes: grading")
    else:
        clock.wrap(runner, "grade_states", "lanes: grading")
    clock.wrap(deviations, "expected_states", "lanes: deviation models' expected states")
    lanes = []
    for dtype in args.dtype.split(","):
        for mode in args.mode.split(","):
            if dtype not in adapter.dtypes:
                continue
            w, c = time.perf_counter(), time.process_time()
            lane = runner.run_lane(adapter, runner.select(documents), args.vectors_dir, dtype, "cpu", mode, policy,
                                   entries, corpus=corpus)
            clock.add("lanes (total)", time.perf_counter() - w, time.process_time() - c, 0)
            lanes.append(lane)
    inner = [k for k in clock.wall if k.startswith("lanes: ")]
    clock.add("lanes: the rest (expectations, outcomes)",
              clock.wall.get("lanes (total)", 0.0) - sum(clock.wall[k] for k in inner),
              clock.cpu.get("lanes (total)", 0.0) - sum(clock.cpu[k] for k in inner), 0)
    total_wall, total_cpu = time.perf_counter() - _T0[0], time.process_time() - _T0[1]
    rows = [[name, f"{clock.wall[name]:.2f}", f"{clock.cpu[name]:.2f}", clock.calls[name] or "",
             f"{100 * clock.wall[name] / total_wall:.0f} %"] for name in clock.wall]
    rows.append(["total", f"{total_wall:.2f}", f"{total_cpu:.2f}", "", "100 %"])
    print(f"{args.adapter}: {sum(len(lane.outcomes) for lane in lanes)} vector outcomes in {len(lanes)} lanes "
          f"({', '.join(f'{lane.dtype} {lane.mode}' for lane in lanes)})")
    print(tabulate(rows, headers=["phase", "wall s", "cpu s", "calls", "of wall"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
