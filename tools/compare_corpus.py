"""Compare the corpus with the one of another git revision, the fields one schema version
added removed.

    python -m tools.compare_corpus REVISION [--vectors DIR]

For every vector file of either side: parse both (the old one from ``git show
REVISION:vectors/<file>``), drop from the new one what schema version 2 added (each
vector's ``initial_state``, ``state_dtypes`` and ``rms_floor``) and ``schema_version`` from
both, and compare what is left (every other field, every bit). Prints one row per file (its
vectors, how many differ, the first differing ids) and exits 1 if anything but the added
fields differs or a file exists on one side only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

from conformance import vectorfile as vf

REPO = Path(__file__).resolve().parent.parent
#: Vector fields each schema version added (removed from the newer side before comparing).
ADDED = {2: ("initial_state", "state_dtypes", "rms_floor")}


def _git(revision: str, relative: str) -> str | None:
    result = subprocess.run(["git", "show", f"{revision}:vectors/{relative}"], cwd=REPO, capture_output=True,
                            text=True)
    return result.stdout if result.returncode == 0 else None


def _git_files(revision: str) -> list[str]:
    result = subprocess.run(["git", "ls-tree", "-r", "--name-only", revision, "vectors/"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    names = [line[len("vectors/"):] for line in result.stdout.splitlines()]
    return [n for n in names if n.endswith(".json") and n != vf.MANIFEST_NAME and not n.startswith("schema/")]


def strip(document: dict, since: int) -> dict:
    """``document`` without ``schema_version`` and the vector fields added after version ``since``."""
    added = [field for version, fields in ADDED.items() if version > since for field in fields]
    out = {key: value for key, value in document.items() if key != "schema_version"}
    out["vectors"] = [{key: value for key, value in vector.items() if key not in added}
                      for vector in document["vectors"]]
    return out


def compare(revision: str, directory: Path) -> tuple[list, bool]:
    """(table rows, whether everything but the added fields is equal)."""
    new_files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*.json")
                       if p.name != vf.MANIFEST_NAME and "schema" not in p.relative_to(directory).parts)
    rows, same = [], True
    for relative in sorted(set(new_files) | set(_git_files(revision))):
        old_text = _git(revision, relative)
        path = directory / relative
        if old_text is None or not path.exists():
            rows.append((relative, "", "", "only in " + ("the working tree" if old_text is None else revision)))
            same = False
            continue
        old = json.loads(old_text)
        new = json.loads(path.read_text(encoding="utf-8"))
        old_version = old.get("schema_version")
        old_s, new_s = strip(old, old_version), strip(new, old_version)
        old_vectors = {v["id"]: v for v in old_s.pop("vectors")}
        new_vectors = {v["id"]: v for v in new_s.pop("vectors")}
        differing = sorted(i for i in old_vectors.keys() | new_vectors.keys()
                           if old_vectors.get(i) != new_vectors.get(i))
        header = "" if old_s == new_s else "file fields differ; "
        same = same and not differing and not header
        rows.append((relative, len(new_vectors), len(differing),
                     header + (", ".join(differing[:3]) + (" ..." if len(differing) > 3 else "") if differing
                               else "" if header else "same")))
    return rows, same


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="git revision of the corpus to compare with (e.g. a commit)")
    parser.add_argument("--vectors", type=Path, default=REPO / "vectors")
    args = parser.parse_args(argv)
    rows, same = compare(args.revision, args.vectors)
    print(tabulate(rows, headers=["file", "vectors", "differing", "first differing ids"], tablefmt="github"))
    fields = ", ".join(f for fields in ADDED.values() for f in fields)
    print(f"\n{'identical' if same else 'DIFFERENT'} to {args.revision} apart from schema_version and {fields}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
