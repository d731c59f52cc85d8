"""``python -m reference.selfcheck``: the reference checks itself and prints tables.

Replays every golden vector in vectors/ (0 ulp required; invalid vectors must raise
their recorded error), runs Keras's own golden trajectories (reference/examples.py),
and checks that the reference is deterministic. Exit status 0 when every check passes,
1 otherwise, 2 when the corpus cannot be read.
"""

from __future__ import annotations

import platform
import sys
import time
from collections import Counter
from pathlib import Path

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


VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def replay_corpus() -> bool:
    from conformance import replay
    from conformance import vectorfile as vf

    start = time.perf_counter()
    documents = vf.load_corpus(VECTORS)
    rows, failures = [], []
    for relative, document in documents.items():
        results = Counter()
        for vector in document["vectors"]:
            problems = replay.check_reference(vector, VECTORS / relative)
            results[vector["result"] + (" FAIL" if problems else "")] += 1
            if problems:
                failures.append(f"{vector['id']}: {problems[0]}")
        rows.append([relative, len(document["vectors"]), results["valid"], results["acceptable"],
                     results["invalid"], sum(v for k, v in results.items() if k.endswith("FAIL"))])
    print(f"\nGolden vectors ({VECTORS}), replayed by the reference at 0 ulp "
          f"in {time.perf_counter() - start:.2f} s:")
    print(tabulate(rows, headers=["file", "vectors", "valid", "acceptable", "invalid", "failed"]))
    for line in failures:
        print("FAIL", line)
    return not failures


def main() -> int:
    print(f"reference {reference.__version__} (spec: keras {reference.KERAS_VERSION}), "
          f"numpy {np.__version__}, python {platform.python_version()}, {platform.machine()}")
    from conformance.vectorfile import VectorFormatError

    try:
        ok = replay_corpus()
    except VectorFormatError as exc:
        print(f"error: {exc}")
        return 2
    print("\nKeras's own goldens and determinism:")
    rows = []
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
