"""Reading and writing golden-vector files (format: vectors/README.md, schema version 1).

A vector file is UTF-8 JSON. Every float64 travels as the 16-hex-digit big-endian bit
pattern of its IEEE-754 binary64 value (``"3ff0000000000000"`` is 1.0), so NaN, +-inf
and -0.0 need no special case and every reader is exact. Arrays are objects
``{"shape": [...], "bits": [...]}`` in row-major (C) order.

Errors always name the file and, where one is involved, the vector id.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

SCHEMA_VERSION = 1
FORMAT_NAME = "adafactor-golden-vectors"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "vectors" / "schema" / (
    f"adafactor-vectors.v{SCHEMA_VERSION}.schema.json"
)
MANIFEST_NAME = "MANIFEST.json"


class VectorFormatError(ValueError):
    """A vector file is malformed, unknown, or does not match its manifest."""

    def __init__(self, path, message: str, vector_id: Optional[str] = None):
        where = str(path) if vector_id is None else f"{path}: vector {vector_id!r}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.vector_id = vector_id


# ----------------------------------------------------------------------------- floats
def float_to_bits(x: float) -> str:
    return struct.pack(">d", float(x)).hex()


def bits_to_float(bits: str) -> float:
    return struct.unpack(">d", bytes.fromhex(bits))[0]


def encode_array(a) -> dict:
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "bits": [float_to_bits(v) for v in a.ravel()]}


def decode_array(obj: dict, path="<memory>", vector_id=None) -> np.ndarray:
    try:
        shape = tuple(obj["shape"])
        raw = bytes.fromhex("".join(obj["bits"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise VectorFormatError(path, f"malformed array {str(obj)[:80]!r}: {exc}", vector_id)
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) != 8 * size or any(len(b) != 16 for b in obj["bits"]):
        raise VectorFormatError(
            path, f"array of shape {list(shape)} needs {size} 16-digit values, "
            f"got {len(obj['bits'])}", vector_id)
    return np.frombuffer(raw, dtype=">f8").astype(np.float64).reshape(shape)


def encode_optional(a):
    return None if a is None else encode_array(a)


def decode_optional(obj, path="<memory>", vector_id=None):
    return None if obj is None else decode_array(obj, path, vector_id)


# ----------------------------------------------------------------------------- files
def dumps(document: dict) -> str:
    """Canonical text: sorted keys, two-space indent, one array per line, final newline.
    The same document always gives the same bytes."""
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=True, allow_nan=False)
    return _collapse_leaf_lists(text) + "\n"


def _collapse_leaf_lists(text: str) -> str:
    """Put each list of scalars on one line, so that a diff shows one array per line."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        if line.endswith("["):
            j, items = i + 1, []
            while j < len(lines) and not lines[j].rstrip().endswith(("[", "{")) \
                    and lines[j].strip() not in ("]", "],", "}", "},"):
                items.append(lines[j].strip())
                j += 1
            if j < len(lines) and lines[j].strip() in ("]", "],"):
                out.append(line + " ".join(items) + lines[j].strip())
                i = j + 1
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a
    rename, so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_json(path, fail):
    """Parse the JSON file ``path``; on an unreadable file or invalid JSON raise
    ``fail(message)``, the message naming the file and the line."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise fail(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc


def load_file(path, *, validate_schema: bool = True) -> dict:
    """Parse one vector file and check its version, ids and (optionally) its schema."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VectorFormatError(path, f"cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        raise VectorFormatError(path, f"not UTF-8: {exc}")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "" if text.rstrip().endswith("}") else " (the file ends early: truncated?)"
        raise VectorFormatError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                                      f"{exc.msg}{hint}")
    if not isinstance(document, dict):
        raise VectorFormatError(path, "top level must be a JSON object")
    if document.get("format") != FORMAT_NAME:
        raise VectorFormatError(path, f"not a golden-vector file (format={document.get('format')!r}, "
                                      f"expected {FORMAT_NAME!r})")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise VectorFormatError(path, f"unknown schema_version {version!r}; this loader reads "
                                      f"version {SCHEMA_VERSION} only")
    if validate_schema:
        validate(document, path)
    ids = [v.get("id") for v in document["vectors"]]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise VectorFormatError(path, f"duplicate vector ids {duplicates}")
    for vector in document["vectors"]:  # in memory only: the file-level dialect, per vector
        vector["dialect"] = document.get("dialect", "keras")
    return document


def dialect_of(vector: dict) -> str:
    """The dialect a vector belongs to (set by the loader; generated Keras vectors lack it)."""
    return vector.get("dialect", "keras")


_VALIDATOR = None
_WARNED_NO_SCHEMA = False


def _warn_no_schema() -> None:
    global _WARNED_NO_SCHEMA
    if not _WARNED_NO_SCHEMA:
        _WARNED_NO_SCHEMA = True
        print(f"warning: jsonschema is not installed; vector files are not checked against {SCHEMA_PATH.name} "
              "(pip install jsonschema); the loader's own checks still run", file=sys.stderr)


def validate(document: dict, path="<memory>") -> None:
    """Validate against the JSON Schema (with the jsonschema library), then check what a
    schema cannot: every flag defined in `notes`, array sizes agreeing with shapes.

    jsonschema is a test dependency, not a runtime one: where it is missing (a bare GPU
    image, a vendored install) the schema step is skipped with one warning and the checks
    below still run. ``make test`` always validates every file against the schema."""
    global _VALIDATOR
    try:
        import jsonschema
    except ImportError:
        _warn_no_schema()
        jsonschema = None
    if jsonschema is not None and _VALIDATOR is None:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        _VALIDATOR = jsonschema.Draft202012Validator(schema)
    errors = [] if jsonschema is None else sorted(_VALIDATOR.iter_errors(document),
                                                  key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        location = list(e.absolute_path)
        vector_id = None
        if len(location) >= 2 and location[0] == "vectors" and isinstance(location[1], int):
            try:
                vector_id = document["vectors"][location[1]].get("id")
            except (IndexError, AttributeError):
                pass
        raise VectorFormatError(path, f"schema violation at {'/'.join(map(str, location))}: "
                                      f"{e.message[:300]}", vector_id)
    notes = document["notes"]
    for vector in document["vectors"]:
        undefined = [f for f in vector["flags"] if f not in notes]
        if undefined:
            raise VectorFormatError(path, f"flags {undefined} are not defined in notes", vector["id"])
        for array in _arrays(vector):
            size = int(np.prod(array["shape"], dtype=np.int64))
            if len(array["bits"]) != size:
                raise VectorFormatError(
                    path, f"an array of shape {array['shape']} holds {len(array['bits'])} values, "
                    f"expected {size}", vector["id"])


def _arrays(node) -> Iterable[dict]:
    if isinstance(node, dict):
        if "bits" in node and "shape" in node:
            yield node
            return
        for value in node.values():
            yield from _arrays(value)
    elif isinstance(node, list):
        for value in node:
            yield from _arrays(value)


def load_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST_NAME
    manifest = read_json(path, lambda message: VectorFormatError(path, message.split(": ", 1)[1]))
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise VectorFormatError(path, f"unknown schema_version {manifest.get('schema_version')!r}")
    return manifest


def load_corpus(directory, *, validate_schema: bool = True) -> dict[str, dict]:
    """Load every file the manifest lists, checking sha256 and vector count first.
    Returns {relative path: document}."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    documents = {}
    for relative, entry in sorted(manifest["files"].items()):
        path = directory / relative
        if not path.exists():
            raise VectorFormatError(path, "listed in MANIFEST.json but missing")
        digest = sha256_of(path)
        if digest != entry["sha256"]:
            raise VectorFormatError(path, f"sha256 {digest} does not match MANIFEST.json "
                                          f"({entry['sha256']}): the file was edited or damaged; "
                                          f"regenerate with `make vectors`")
        document = load_file(path, validate_schema=validate_schema)
        if len(document["vectors"]) != entry["vectors"]:
            raise VectorFormatError(path, f"holds {len(document['vectors'])} vectors, "
                                          f"MANIFEST.json says {entry['vectors']}")
        documents[relative] = document
    return documents


def iter_vectors(documents: dict[str, dict]) -> Iterable[tuple[str, dict]]:
    for relative, document in documents.items():
        for vector in document["vectors"]:
            yield relative, vector


def find(documents: dict[str, dict], vector_id: str) -> tuple[str, dict]:
    for relative, vector in iter_vectors(documents):
        if vector["id"] == vector_id:
            return relative, vector
    raise KeyError(f"no vector with id {vector_id!r}")


def as_jsonable(value: Any):
    """Convert NumPy scalars in configs to plain Python values."""
    if isinstance(value, dict):
        return {k: as_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
