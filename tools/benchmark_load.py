"""How long loading the golden-vector corpus takes, against parsing its files.

    python -m tools.benchmark_load [--vectors DIR] [--repeat N] [--no-schema]

Prints one table, each row the best of ``--repeat`` runs in this process, in CPU and wall
seconds (the in-process cache of checked files is cleared before every run, so each run
does the whole work):

    json.load               parse every file the manifest lists with ``json.load``
    load (trust manifest)   ``vectorfile.load_corpus``: sha256 against MANIFEST.json, strict
                            parse, every semantic check, one ``Vector`` per vector: what the
                            gate does in every adapter process
    + decode every array    the same, then every vector's initial state and steps decoded
                            (what a run that replays the whole corpus adds, spread over lanes)
    load + JSON Schema      ``load_corpus(validate_schema=True)``: what the corpus tests and
                            ``generate --check`` do

and the ratio of each to ``json.load`` in CPU time (the issue-13 target: the trusted load
within 3x).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tabulate import tabulate

from conformance import vectorfile as vf

REPO = Path(__file__).resolve().parent.parent


def _json_load(directory: Path) -> None:
    manifest = vf.load_manifest(directory)
    for relative in sorted(manifest["files"]):
        with open(directory / relative, encoding="utf-8") as handle:
            json.load(handle)


def _load(directory: Path, *, schema: bool = False, decode: bool = False) -> None:
    vf._VALIDATED.clear()
    documents = vf.load_corpus(directory, validate_schema=schema)
    if decode:
        for _, vector in vf.iter_vectors(documents):
            vector.initial_state, vector.steps  # noqa: B018 - decoded on first use


def best_of(repeat: int, fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the best of ``repeat`` runs (the CPU time of this
    process: steadier than the wall clock on a shared machine)."""
    runs = []
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(runs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=Path, default=REPO / "vectors")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row; the best is shown (default 5)")
    parser.add_argument("--no-schema", action="store_true", help="skip the (slow) JSON Schema row")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    rows = [("json.load", lambda: _json_load(args.vectors)),
            ("load (trust manifest)", lambda: _load(args.vectors)),
            ("+ decode every array", lambda: _load(args.vectors, decode=True))]
    if not args.no_schema:
        rows.append(("load + JSON Schema", lambda: _load(args.vectors, schema=True)))
    _load(args.vectors)  # imports and first-use costs out of the measurement
    results = [(name, *best_of(args.repeat if name != "load + JSON Schema" else 1, fn)) for name, fn in rows]
    base = results[0][1]
    manifest = vf.load_manifest(args.vectors)
    size = sum((args.vectors / r).stat().st_size for r in manifest["files"])
    print(f"corpus: {args.vectors} ({len(manifest['files'])} files, {manifest['total_vectors']} vectors, "
          f"{size / 2**20:.1f} MiB); best of {args.repeat} (the schema row: 1 run)")
    print(tabulate([(name, f"{cpu:.3f}", f"{wall:.3f}", f"{cpu / base:.2f}x") for name, cpu, wall in results],
                   headers=["what", "CPU seconds", "wall seconds", "vs json.load (CPU)"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
