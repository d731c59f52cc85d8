"""``python -m reference.selfcheck``: the reference checks itself and prints a table.

Runs Keras's own golden trajectories (reference/examples.py) and checks that the
reference is deterministic (two runs give identical bits). Exit status 0 when every
check passes, 1 otherwise.
"""

from __future__ import annotations

import platform
import sys

import numpy as np
from tabulate import tabulate

import reference
from reference.examples import GOLDENS, run_golden


def _deterministic() -> bool:
    def run():
        opt = reference.Adafactor(learning_rate=0.5, weight_decay=0.01, use_ema=True)
        rng = np.random.default_rng(0)
        xs = [rng.normal(size=(3, 5)), rng.normal(size=(7,))]
        for _ in range(10):
            opt.apply([rng.normal(size=x.shape) for x in xs], xs)
        return [x.tobytes() for x in xs]

    return run() == run()


def main() -> int:
    print(f"reference {reference.__version__} (spec: keras {reference.KERAS_VERSION}), "
          f"numpy {np.__version__}, python {platform.python_version()}, {platform.machine()}")
    rows, ok = [], True
    for golden in GOLDENS:
        worst = run_golden(golden)
        passed = worst <= 1.0
        ok &= passed
        rows.append([golden.name, golden.source, f"{worst:.3f}", "PASS" if passed else "FAIL"])
    det = _deterministic()
    ok &= det
    rows.append(["deterministic", "two runs, same bits", "", "PASS" if det else "FAIL"])
    print(tabulate(rows, headers=["check", "source", "error / tolerance", "result"]))
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
