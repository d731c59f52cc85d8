"""Where the golden vectors are, and which corpus they are.

The corpus is ``vectors/`` at the top of a checkout; an installed wheel carries the same files
as ``conformance/vectors/`` (pyproject.toml maps one onto the other), so the gate runs from any
directory without a checkout. ``corpus_identity`` is what every report records and
``--version`` prints: a port's CI log then says exactly what it was checked against.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conformance import vectorfile as vf

_PACKAGE = Path(__file__).resolve().parent
#: Where the corpus is looked for, in order: inside the installed package (a wheel), then the
#: checkout's top-level ``vectors/`` (a source tree or an editable install).
CANDIDATES = (_PACKAGE / "vectors", _PACKAGE.parent / "vectors")


class CorpusNotFound(FileNotFoundError):
    pass


def default_vectors_dir() -> Path:
    """The corpus this installation carries: the first of ``CANDIDATES`` that holds a
    MANIFEST.json. Raises CorpusNotFound naming every place looked at."""
    for candidate in CANDIDATES:
        if (candidate / vf.MANIFEST_NAME).is_file():
            return candidate
    looked = ", ".join(str(c) for c in CANDIDATES)
    raise CorpusNotFound(f"no golden-vector corpus found (looked for {vf.MANIFEST_NAME} in {looked}); "
                         "pass --vectors-dir DIR (a checkout's vectors/ or a copy of it)")


def default_vectors_dir_or_none() -> Path | None:
    try:
        return default_vectors_dir()
    except CorpusNotFound:
        return None


def corpus_identity(vectors_dir) -> dict:
    """{"path", "corpus_version", "schema_version", "sha256", "vectors"} of the corpus in
    ``vectors_dir``: ``sha256`` is of MANIFEST.json's bytes, which pin every vector file's own
    sha256, so equal hashes mean the same vectors bit for bit. Fields the manifest does not
    hold are None; an unreadable manifest gives {"path", "error"} (the run that needs the
    vectors reports that error itself)."""
    path = Path(vectors_dir) / vf.MANIFEST_NAME
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError) as exc:
        return {"path": str(Path(vectors_dir)), "error": f"{path}: {exc}"}
    if not isinstance(manifest, dict):
        return {"path": str(Path(vectors_dir)), "error": f"{path}: not a JSON object"}
    return {"path": str(Path(vectors_dir)), "corpus_version": manifest.get("corpus_version"),
            "schema_version": manifest.get("schema_version"), "sha256": hashlib.sha256(raw).hexdigest(),
            "vectors": manifest.get("total_vectors")}


def describe(identity: dict) -> str:
    """One line for a report header: ``2.1.0 (schema 2, 1234 vectors, sha256 ab12...) at PATH``."""
    if "error" in identity:
        return f"unreadable at {identity['path']} ({identity['error']})"
    return (f"{identity.get('corpus_version') or '(unversioned)'} (schema {identity.get('schema_version')}, "
            f"{identity.get('vectors')} vectors, sha256 {identity.get('sha256')}) at {identity['path']}")
