"""Generate the golden-vector corpus from tools/vector_cases.py and tools/dialect_cases/.

    python -m tools.generate_vectors              # (re)write vectors/ (what `make vectors` runs)
    python -m tools.generate_vectors --check      # regenerate in memory, compare with vectors/
    python -m tools.generate_vectors --out DIR    # write somewhere else

Each case becomes a vector through the vector-building core (``conformance.generator``,
which the differential fuzzer uses too); this module gathers them into files, writes them
with MANIFEST.json and the README's coverage table, and ``--check`` also validates every
generated file against the JSON Schema (vectors/schema/).

Output is byte-for-byte deterministic: no dates, sorted keys, per-case seeds derived
from the case id. Every file is written through a temporary file and a rename, and
MANIFEST.json (sha256 and vector count of every file) is written last, so an interrupted
run leaves either the old corpus or one whose manifest check fails loudly. An interrupted
write (Ctrl-C, SIGTERM) removes its temporary file; one left by a killed run
(``.NAME.json.XXXXXXXX.tmp``) is removed by the next run once it is a minute old, and
``--check`` (and the freshness test) reports any as a difference.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from tabulate import tabulate

import reference
from conformance import vectorfile as vf
from conformance.generator import CORPUS_VERSION, generate_vector
from conformance.generator.flags import DIALECT_NOTES, NOTES
from reference import Adafactor
from tools import dialect_cases
from tools.vector_cases import CASES

GENERATOR_VERSION = "1.0.0"
DIALECT = "keras"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "vectors"
#: A temporary file older than this is litter of a killed run; a younger one may belong to a
#: writer that is still running (another `make vectors` in the same checkout), so it is left.
STALE_AFTER_S = 60.0

# Keras's defaults, for the coverage table (an argument counts where it differs).
DEFAULTS = {name: p.default for name, p in __import__("inspect").signature(Adafactor).parameters.items()
            if name != "kwargs"}


# ----------------------------------------------------------------------------- corpus
def all_cases() -> list:
    """The Keras cases (tools/vector_cases.py) and the dialect cases (tools/dialect_cases/)."""
    return list(CASES) + dialect_cases.load()[0]


def generate_corpus(cases=None) -> dict[str, dict]:
    """{relative path: document} for every vector file."""
    cases = all_cases() if cases is None else cases
    notes = {**NOTES, **DIALECT_NOTES, **dialect_cases.load()[1]}
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate case ids in tools/vector_cases.py: {duplicates}")
    by_file: dict[str, list] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in cases:
            by_file.setdefault((case.dialect, case.file), []).append(generate_vector(case))
    provenance = {
        "generator": "tools/generate_vectors.py",
        "generator_version": GENERATOR_VERSION,
        "reference_version": reference.__version__,
        "spec": f"keras {reference.KERAS_VERSION}",
        "numpy": np.__version__,
    }
    documents = {}
    for (dialect, name), vectors in sorted(by_file.items()):
        used = sorted({f for v in vectors for f in v["flags"]})
        if dialect == DIALECT:
            what, spec = "keras.optimizers.Adafactor", provenance["spec"]
        else:
            from reference.dialects import optimizer_class

            cls = optimizer_class(dialect)
            what = getattr(cls, "framework", dialect)
            spec = getattr(cls, "spec", f"reference/dialects/{dialect}.py")
        missing = [flag for flag in used if flag not in notes]
        if missing:
            raise ValueError(f"{dialect}/{name}.json: flags without a note: {missing}")
        documents[f"{dialect}/{name}.json"] = {
            "format": vf.FORMAT_NAME,
            "schema_version": vf.SCHEMA_VERSION,
            "dialect": dialect,
            "description": f"Golden vectors for {what}: {name.replace('_', ' ')}",
            "provenance": {**provenance, "spec": spec},
            "notes": {flag: notes[flag] for flag in used},
            "vectors": vectors,
        }
    return documents


def render(documents: dict[str, dict]) -> dict[str, str]:
    """{relative path: file text} including MANIFEST.json."""
    texts = {path: vf.dumps(doc) for path, doc in documents.items()}
    manifest = {
        "corpus_version": CORPUS_VERSION,
        "format": vf.FORMAT_NAME,
        "schema_version": vf.SCHEMA_VERSION,
        "total_vectors": sum(len(d["vectors"]) for d in documents.values()),
        "files": {path: {"sha256": _sha256(text), "vectors": len(documents[path]["vectors"])}
                  for path, text in texts.items()},
    }
    texts[vf.MANIFEST_NAME] = vf.dumps(manifest)
    return texts


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def coverage_table(documents: dict[str, dict]) -> str:
    dialect_counts = Counter(d["dialect"] for d in documents.values() for _ in d["vectors"])
    per_dialect = tabulate(sorted(dialect_counts.items()), headers=["dialect", "vectors"], tablefmt="github")
    vectors = [v for d in documents.values() if d["dialect"] == DIALECT for v in d["vectors"]]
    rows = []
    for name, default in DEFAULTS.items():
        count = sum(v["config"].get(name, default) != default for v in vectors)
        rows.append([name, repr(default), count])
    arguments = tabulate(rows, headers=["argument", "Keras default", "vectors with another value"],
                         tablefmt="github")
    flag_counts = Counter(f for v in vectors for f in v["flags"])
    results = Counter(v["result"] for v in vectors)
    flags = tabulate(sorted(flag_counts.items()), headers=["flag", "vectors"], tablefmt="github")
    summary = ", ".join(f"{results[r]} {r}" for r in ("valid", "acceptable", "invalid"))
    return (f"{per_dialect}\n\nKeras (the spec): {len(vectors)} vectors: {summary}.\n\n{arguments}\n\n{flags}\n"
            f"\nThe dialects' own coverage: see tools/dialect_cases/<dialect>.py and each file's notes.\n")


COVERAGE_BEGIN = "<!-- coverage: generated by tools/generate_vectors.py, do not edit -->"
COVERAGE_END = "<!-- end of coverage -->"


def readme_with_coverage(readme: str, documents: dict[str, dict]) -> str:
    if COVERAGE_BEGIN not in readme or COVERAGE_END not in readme:
        raise ValueError("vectors/README.md lacks the coverage markers")
    head, rest = readme.split(COVERAGE_BEGIN, 1)
    _, tail = rest.split(COVERAGE_END, 1)
    return f"{head}{COVERAGE_BEGIN}\n{coverage_table(documents)}{COVERAGE_END}{tail}"


def build_outputs(readme_source: Path) -> dict[str, str]:
    documents = generate_corpus()
    texts = render(documents)
    texts["README.md"] = readme_with_coverage(readme_source.read_text(encoding="utf-8"), documents)
    return texts


def write_outputs(texts: dict[str, str], out: Path) -> None:
    remove_stale_temporary_files(out)
    with _sigterm_as_exit():
        for path, text in texts.items():
            if path != vf.MANIFEST_NAME:
                vf.write_atomic(out / path, text)
        vf.write_atomic(out / vf.MANIFEST_NAME, texts[vf.MANIFEST_NAME])  # last


def remove_stale_temporary_files(out: Path, now: float | None = None) -> list[Path]:
    """Remove the temporary files killed runs left in ``out`` (older than STALE_AFTER_S);
    say which, and name any younger one that is left alone. Returns the removed paths."""
    now = time.time() if now is None else now
    removed = []
    for tmp in vf.stale_temporary_files(out):
        try:
            age = now - tmp.stat().st_mtime
        except FileNotFoundError:  # its writer just renamed or removed it
            continue
        if age < STALE_AFTER_S:
            print(f"note: {tmp} is {age:.0f} s old: another writer may be running; left in place",
                  file=sys.stderr)
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
        print(f"removed {tmp}: a temporary file left by an interrupted run", file=sys.stderr)
    return removed


@contextlib.contextmanager
def _sigterm_as_exit():
    """While files are written, SIGTERM raises SystemExit (as Ctrl-C raises
    KeyboardInterrupt), so write_atomic removes its temporary file before the process ends."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def compare_with(texts: dict[str, str], directory: Path) -> list[str]:
    """Human-readable differences between freshly generated texts and a directory."""
    import json

    problems = []
    for path, text in sorted(texts.items()):
        target = directory / path
        old = target.read_text(encoding="utf-8") if target.exists() else None
        if old == text:
            continue
        if old is None:
            problems.append(f"{path}: missing (run `make vectors`)")
            continue
        if path.endswith(".json") and path != vf.MANIFEST_NAME:
            try:
                old_vectors = {v["id"]: v for v in json.loads(old)["vectors"]}
            except (ValueError, KeyError, TypeError):
                problems.append(f"{path}: unreadable committed file")
                continue
            new_vectors = {v["id"]: v for v in json.loads(text)["vectors"]}
            changed = sorted(i for i in new_vectors if i in old_vectors and new_vectors[i] != old_vectors[i])
            added = sorted(set(new_vectors) - set(old_vectors))
            removed = sorted(set(old_vectors) - set(new_vectors))
            detail = "; ".join(f"{label}: {', '.join(ids)}" for label, ids in
                               (("changed", changed), ("added", added), ("removed", removed)) if ids)
            problems.append(f"{path}: differs ({detail or 'file-level fields'})")
        else:
            problems.append(f"{path}: differs")
    known = set(texts)
    for stray in sorted(p for p in directory.rglob("*.json") if "schema" not in p.parts):
        relative = stray.relative_to(directory).as_posix()
        if relative not in known:
            problems.append(f"{relative}: not produced by the generator (stale file?)")
    for tmp in vf.stale_temporary_files(directory):
        problems.append(f"{tmp.relative_to(directory).as_posix()}: temporary file left by an interrupted "
                        "write (`make vectors` removes it)")
    return problems


def schema_problems(texts: dict[str, str]) -> list[str]:
    """Every generated vector file validated against the JSON Schema and the loader's checks
    (the gate itself trusts MANIFEST.json for the schema): one message per file that fails."""
    problems = []
    for path, text in sorted(texts.items()):
        if path.endswith(".json") and path != vf.MANIFEST_NAME:
            try:
                vf.check_text(text, path, validate_schema=True)
            except vf.VectorFormatError as exc:
                problems.append(f"{path}: fails validation: {exc}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: vectors/)")
    parser.add_argument("--check", action="store_true",
                        help="regenerate in memory and compare with --out; exit 1 on any difference")
    args = parser.parse_args(argv)
    readme_source = args.out / "README.md" if (args.out / "README.md").exists() else DEFAULT_OUT / "README.md"
    texts = build_outputs(readme_source)
    if args.check:
        problems = compare_with(texts, args.out) + schema_problems(texts)
        for p in problems:
            print(p)
        print("vectors are fresh" if not problems else f"{len(problems)} difference(s): run `make vectors`")
        return 1 if problems else 0
    write_outputs(texts, args.out)
    total = sum(1 for p in texts if p.endswith(".json")) - 1
    print(f"wrote {total} vector files and {vf.MANIFEST_NAME} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
