"""Reading and writing golden-vector files (format: vectors/README.md, schema version 2).

A vector file is UTF-8 JSON. Every float64 travels as the 16-hex-digit big-endian bit
pattern of its IEEE-754 binary64 value (``"3ff0000000000000"`` is 1.0), so NaN, +-inf
and -0.0 need no special case and every reader is exact. Arrays are objects
``{"shape": [...], "bits": [...]}`` in row-major (C) order.

Loading the corpus (``load_corpus``) checks every file's sha256 and vector count against
MANIFEST.json, then every vector once, beyond the JSON Schema (rules: vectors/README.md,
"Validation"): strict JSON (no bare NaN/Infinity tokens), every array's shape against its
variable (and the dialect's state layout, the initial state's too), one gradient per
variable per step, non-finite values only in vectors flagged for them, the configuration's
argument names and types, ids unique across the corpus, and no vector file on disk that
MANIFEST.json does not list. The JSON Schema itself runs where asked (the corpus tests,
``generate --check``): a file whose bytes match the manifest is trusted to follow it, and one
that does not is refused. The vectors come back as ``conformance.vector.Vector``.

Errors always name the file and, where one is involved, the vector id.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from reference.state import SLOT_KINDS, Kind

SCHEMA_VERSION = 2
#: What each older version lacks (the message a reader of an old file gets).
OLD_VERSIONS = {1: "version 2 adds each vector's initial_state, state_dtypes and rms_floor"}
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
    """``{"shape", "bits"}`` of a float64 array (row-major, each value's big-endian bits)."""
    a = np.asarray(a, dtype=np.float64)
    text = np.ascontiguousarray(a, dtype=">f8").tobytes().hex()
    return {"shape": list(a.shape), "bits": [text[i:i + 16] for i in range(0, len(text), 16)]}


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
    """Write ``text`` to ``path`` through a temporary file ``.NAME.XXXXXXXX.tmp`` in the same
    directory and a rename, so a reader never sees a half-written file. The temporary file
    is removed on any exception, KeyboardInterrupt and SystemExit included; only a process
    killed outright (SIGKILL) leaves one behind (``stale_temporary_files`` finds those)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def stale_temporary_files(directory) -> list[Path]:
    """Temporary files of ``write_atomic`` under ``directory`` (``.NAME.XXXXXXXX.tmp``): left
    behind by a writer that was killed, or belonging to one that is still writing."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob(".*.tmp") if p.is_file())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _BareConstant:
    """What the strict parser puts where a document holds a bare NaN/Infinity token."""

    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = token


def _loads_strict(text: str):
    """``json.loads`` that records bare ``NaN``, ``Infinity`` and ``-Infinity`` tokens
    (Python's json accepts them; strict JSON does not). Returns (document, tokens)."""
    tokens: list = []

    def constant(token):
        tokens.append(token)
        return _BareConstant(token)

    return json.loads(text, parse_constant=constant), tokens


def _find_bare_constant(node, where=()):
    """(JSON path, token) of the first bare constant in a parsed document, or None."""
    if isinstance(node, _BareConstant):
        return where, node.token
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found = _find_bare_constant(value, where + (key,))
        if found is not None:
            return found
    return None


def _json_path(where) -> str:
    return "/".join(map(str, where)) or "(top level)"


def read_json(path, fail):
    """Parse the JSON file ``path`` (strict JSON: a bare NaN or Infinity is refused); on an
    unreadable file or invalid JSON raise ``fail(message)``, the message naming the file and
    the line (or the JSON path of the bare token)."""
    path = Path(path)
    try:
        data, tokens = _loads_strict(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise fail(f"{path}: not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise fail(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    if tokens:
        where, token = _find_bare_constant(data)
        raise fail(f"{path}: invalid JSON at {_json_path(where)}: bare {token} token (strict JSON has "
                   "no NaN or Infinity; floats that are data travel as 16-hex-digit bit patterns)")
    return data


def load_file(path, *, validate_schema: bool = True) -> dict:
    """Parse one vector file and check its version, ids, (optionally) its JSON Schema, and
    the meaning of every vector (``check_document``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VectorFormatError(path, f"cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        raise VectorFormatError(path, f"not UTF-8: {exc}")
    return parse_document(text, path, validate_schema=validate_schema)


def parse_document(text: str, path="<memory>", *, validate_schema: bool = True,
                   _outcome: Optional[dict] = None) -> dict:
    """``load_file`` on text already read (``tools.promote`` checks a vector it has not
    written yet this way). ``_outcome`` (``load_corpus``'s cache): {"skip": True} parses
    without validating (these exact bytes passed before); the key "schema" is set to
    whether the JSON Schema step ran."""
    try:
        document, tokens = _loads_strict(text)
    except json.JSONDecodeError as exc:
        hint = "" if text.rstrip().endswith("}") else " (the file ends early: truncated?)"
        raise VectorFormatError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                                      f"{exc.msg}{hint}")
    if tokens:
        where, token = _find_bare_constant(document)
        vector_id = _vector_id_at(document, where)
        raise VectorFormatError(path, f"invalid JSON at {_json_path(where)}: bare {token} token (strict JSON "
                                      "has no NaN or Infinity; a float that is data is written as its "
                                      "16-hex-digit bit pattern)", vector_id)
    if not isinstance(document, dict):
        raise VectorFormatError(path, "top level must be a JSON object")
    if document.get("format") != FORMAT_NAME:
        raise VectorFormatError(path, f"not a golden-vector file (format={document.get('format')!r}, "
                                      f"expected {FORMAT_NAME!r})")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise VectorFormatError(path, version_message(version))
    outcome = {} if _outcome is None else _outcome
    if outcome.get("skip"):
        pass
    elif validate_schema:
        outcome["schema"] = validate(document, path)
    else:
        check_document(document, path)
        outcome["schema"] = False
    for vector in document["vectors"]:  # in memory only: the file-level dialect, per vector
        vector["dialect"] = document.get("dialect", "keras")
    return document


def version_message(version) -> str:
    """Why a file of schema version ``version`` is refused."""
    if version in OLD_VERSIONS:
        return (f"schema_version {version} is an old version of this format ({OLD_VERSIONS[version]}); "
                f"this loader reads version {SCHEMA_VERSION} only: regenerate the corpus (`make vectors`)")
    return f"unknown schema_version {version!r}; this loader reads version {SCHEMA_VERSION} only"


def check_text(text: str, path="<memory>", *, validate_schema: bool = True, digest: Optional[str] = None) -> dict:
    """``parse_document`` with the in-process cache of ``load_corpus``: bytes that passed
    (with the schema step, where ``validate_schema``) are parsed, not checked again.
    ``digest``: the sha256 of the text's UTF-8 bytes, where the caller has it."""
    digest = digest or hashlib.sha256(text.encode("utf-8")).hexdigest()
    passed = _VALIDATED.get(digest)
    outcome = {"skip": passed is not None and (passed or not validate_schema)}
    document = parse_document(text, path, validate_schema=validate_schema, _outcome=outcome)
    if not outcome["skip"]:
        _VALIDATED[digest] = outcome["schema"]
    return document


def _vector_id_at(document, where):
    if len(where) >= 2 and where[0] == "vectors" and isinstance(where[1], int):
        try:
            vector_id = document["vectors"][where[1]].get("id")
        except (IndexError, AttributeError, KeyError, TypeError):
            return None
        return vector_id if isinstance(vector_id, str) else None
    return None


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


def validate(document: dict, path="<memory>") -> bool:
    """Validate against the JSON Schema (with the jsonschema library), then check what a
    schema cannot (``check_document``). Returns whether the schema step ran.

    jsonschema is a test dependency, not a runtime one: where it is missing (a bare GPU
    image, a vendored install) the schema step is skipped with one warning and the checks
    of ``check_document`` still run. ``make test`` always validates every file against the
    schema."""
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
        raise VectorFormatError(path, f"schema violation at {'/'.join(map(str, location))}: "
                                      f"{e.message[:300]}", _vector_id_at(document, location))
    check_document(document, path)
    return jsonschema is not None


# ----------------------------------------------------------------------------- semantics
# Argument types of a vector's ``config`` (checked for valid and acceptable vectors; an
# invalid vector's config is what it tests). A type is "|"-separated JSON kinds: number
# (an integer or a float, finite, not a boolean), float (written with "." or an exponent),
# integer, boolean, string, null, dtype (a dtype name), "[A, B]" (a list of exactly these)
# or "[A...]" (a list of any length). Keras's learning_rate is a float, a schedule or a
# recorded callable. The types are what the constructor accepts, not what is sensible:
# without use_ema Keras checks neither EMA argument (ema_overwrite_frequency=2.5 is valid),
# and a gradient_accumulation_steps of 2.5 passes its `>= 2` test. tests/reference/test_bad_input.py checks these tables against the constructors
# of reference.Adafactor, reference.schedules and reference/dialects.
KERAS_ARGUMENTS = {
    "learning_rate": "float|schedule|recorded callable",
    "beta_2_decay": "number", "epsilon_1": "number", "epsilon_2": "number", "clip_threshold": "number",
    "relative_step": "boolean", "weight_decay": "number|null", "clipnorm": "number|null",
    "clipvalue": "number|null", "global_clipnorm": "number|null", "use_ema": "boolean",
    "ema_momentum": "number", "ema_overwrite_frequency": "number|null", "loss_scale_factor": "number|null",
    "gradient_accumulation_steps": "number|null", "name": "string",
}
DIALECT_ARGUMENTS = {
    "torch": {"lr": "number", "beta2_decay": "number", "eps": "[number|null, number]", "d": "number",
              "weight_decay": "number", "foreach": "boolean|null", "maximize": "boolean"},
    "optax": {"learning_rate": "number|null", "min_dim_size_to_factor": "integer", "decay_rate": "number",
              "decay_offset": "integer", "multiply_by_parameter_scale": "boolean",
              "clipping_threshold": "number|null", "momentum": "number|null", "dtype_momentum": "dtype",
              "weight_decay_rate": "number|null", "eps": "number", "factored": "boolean",
              "weight_decay_mask": "null"},
    "transformers": {"lr": "number|null", "eps": "[number, number]", "clip_threshold": "number",
                     "decay_rate": "number", "beta1": "number|null", "weight_decay": "number",
                     "scale_parameter": "boolean", "relative_step": "boolean", "warmup_init": "boolean"},
    "pytorch_optimizer": {"lr": "number|null", "betas": "[number|null, number]", "decay_rate": "number",
                          "weight_decay": "number", "weight_decouple": "boolean", "fixed_decay": "boolean",
                          "clip_threshold": "number", "ams_bound": "boolean", "scale_parameter": "boolean",
                          "relative_step": "boolean", "warmup_init": "boolean", "eps1": "number", "eps2": "number",
                          "momentum_dtype": "dtype", "foreach": "boolean|null", "maximize": "boolean"},
    "timm_bigvision": {"lr": "number", "min_dim_size_to_factor": "integer", "decay_rate": "number",
                       "decay_offset": "integer", "beta2_cap": "number", "momentum": "number|null",
                       "momentum_dtype": "dtype", "eps": "number|null", "weight_decay": "number",
                       "clipping_threshold": "number|null", "unscaled_wd": "boolean", "caution": "boolean",
                       "corrected_weight_decay": "boolean"},
    "timm": {"lr": "number|null", "eps": "number", "eps_scale": "number", "clip_threshold": "number",
             "decay_rate": "number", "betas": "null|[number|null, number]", "weight_decay": "number",
             "scale_parameter": "boolean", "warmup_init": "boolean", "min_dim_size_to_factor": "integer",
             "caution": "boolean"},
}
DIALECTS = ("keras", *DIALECT_ARGUMENTS)
#: Keras schedules: {class_name: ({argument: type}, required arguments)}.
SCHEDULE_ARGUMENTS = {
    "ExponentialDecay": ({"initial_learning_rate": "number", "decay_steps": "number", "decay_rate": "number",
                          "staircase": "boolean", "name": "string|null"},
                         ("initial_learning_rate", "decay_steps", "decay_rate")),
    "PiecewiseConstantDecay": ({"boundaries": "[number...]", "values": "[number...]", "name": "string|null"},
                               ("boundaries", "values")),
    "PolynomialDecay": ({"initial_learning_rate": "number", "decay_steps": "number",
                         "end_learning_rate": "number", "power": "number", "cycle": "boolean",
                         "name": "string|null"}, ("initial_learning_rate", "decay_steps")),
    "InverseTimeDecay": ({"initial_learning_rate": "number", "decay_steps": "number", "decay_rate": "number",
                          "staircase": "boolean", "name": "string|null"},
                         ("initial_learning_rate", "decay_steps", "decay_rate")),
    "CosineDecay": ({"initial_learning_rate": "number", "decay_steps": "number", "alpha": "number",
                     "name": "string|null", "warmup_target": "number|null", "warmup_steps": "number"},
                    ("initial_learning_rate", "decay_steps")),
    "CosineDecayRestarts": ({"initial_learning_rate": "number", "first_decay_steps": "number",
                             "t_mul": "number", "m_mul": "number", "alpha": "number", "name": "string|null"},
                            ("initial_learning_rate", "first_decay_steps")),
}
DTYPE_NAMES = ("float64", "float32", "float16", "bfloat16")
#: Flags a gradient's special values require (conformance/generator/flags.py derives them) and
#: that make a vector ``acceptable``, never ``valid``.
GRADIENT_FLAGS = ("NONFINITE_GRADIENT", "SQUARE_OVERFLOW", "SUBNORMAL_GRADIENT")
#: The flag that allows NaN or inf anywhere else (initial values, expected state, learning rates).
STATE_FLAG = "NONFINITE_STATE"
_SQUARE_LIMIT = math.sqrt(np.finfo(np.float64).max)  # |g| above this: g*g overflows
_ABS = np.uint64(0x7FFFFFFFFFFFFFFF)  # bit patterns of |x|
_INF_BITS = np.uint64(0x7FF0000000000000)  # |x| at or above: inf or NaN
_LIMIT_BITS = np.float64(_SQUARE_LIMIT).view(np.uint64)
_TINY_BITS = np.float64(np.finfo(np.float64).tiny).view(np.uint64)
#: The state kinds a vector file names (reference.state.Kind's values), variables first.
STATE_KEYS = tuple(k.value for k in Kind)
SLOT_KEYS = tuple(k.value for k in SLOT_KINDS)


def json_pointer(parts) -> str:
    """The RFC 6901 JSON Pointer of a path of keys and list indices ("/a/0/b"; "~" and "/"
    in a key escaped as "~0" and "~1")."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def config_integers(config) -> list[str]:
    """Where ``config`` holds a JSON integer (booleans excluded): the sorted JSON Pointers of
    every one, nested values (a schedule's ``decay_steps``, a list item) included. A vector
    carries this as ``config_integers`` for readers whose JSON parser cannot tell ``1`` from
    ``1.0`` (JavaScript): every other number in the config is a float (vectors/README.md)."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, where + (key,))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, where + (index,))
        elif isinstance(node, int) and not isinstance(node, bool):
            found.append(json_pointer(where))

    walk(config, ())
    return sorted(found)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matches(value, kinds: str) -> bool:
    """Whether ``value`` (parsed JSON) has one of the kinds of a type string (above)."""
    if kinds.startswith("null|["):  # a list or null (timm's betas)
        return value is None or _matches(value, kinds[len("null|"):])
    if kinds.startswith("["):
        if not isinstance(value, list):
            return False
        if kinds.endswith("...]"):
            return all(_matches(item, kinds[1:-4]) for item in value)
        parts = kinds[1:-1].split(", ")
        return len(value) == len(parts) and all(_matches(v, k) for v, k in zip(value, parts))
    for kind in kinds.split("|"):
        if ((kind == "number" and _is_number(value))
                or (kind == "float" and isinstance(value, float) and math.isfinite(value))
                or (kind == "integer" and isinstance(value, int) and not isinstance(value, bool))
                or (kind == "boolean" and isinstance(value, bool))
                or (kind == "string" and isinstance(value, str))
                or (kind == "null" and value is None)
                or (kind == "dtype" and value in DTYPE_NAMES)):
            return True
    return False


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, _BareConstant) else value.token
    return text if len(text) <= 60 else text[:57] + "..."


def check_arguments(config: dict, table: dict, where: str, fail) -> None:
    """Every key of ``config`` is in ``table`` and has its type; ``fail(message)`` raises."""
    if not isinstance(config, dict):
        fail(f"{where} must be an object, got {_short(config)}")
    unknown = sorted(set(config) - set(table))
    if unknown:
        fail(f"{where}: unknown argument(s) {unknown}; known: {sorted(table)}")
    for key, value in config.items():
        kinds = table[key]
        if kinds == "float|schedule|recorded callable":
            _check_learning_rate(value, f"{where}.{key}", fail)
        elif not _matches(value, kinds):
            fail(f"{where}.{key} = {_short(value)}: expected {kinds.replace('|', ' or ')}")


def _check_learning_rate(value, where: str, fail) -> None:
    if isinstance(value, float) and math.isfinite(value):
        return
    if isinstance(value, dict) and value.get("callable") == "recorded" and set(value) == {"callable"}:
        return
    if isinstance(value, dict) and "class_name" in value:
        name = value["class_name"]
        if name not in SCHEDULE_ARGUMENTS:
            fail(f"{where}: unknown schedule class_name {_short(name)}; known: {sorted(SCHEDULE_ARGUMENTS)}")
        table, required = SCHEDULE_ARGUMENTS[name]
        inner = value.get("config")
        check_arguments(inner, table, f"{where}.config", fail)
        missing = [key for key in required if key not in inner]
        if missing:
            fail(f"{where}.config: {name} needs {missing}")
        return
    fail(f"{where} = {_short(value)}: expected a float (written with '.' or an exponent), a "
         "keras.optimizers.schedules object or {\"callable\": \"recorded\"}")


def _array_shape(array, where: str, fail) -> tuple:
    """The shape of an encoded array, after checking its structure and size (not its bits)."""
    if not isinstance(array, dict) or not isinstance(array.get("shape"), list) \
            or not isinstance(array.get("bits"), list):
        fail(f"{where}: not an array {{\"shape\": [...], \"bits\": [...]}}: {_short(array)}")
    shape = array["shape"]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        fail(f"{where}: bad shape {_short(shape)}")
    size = math.prod(shape)
    if len(array["bits"]) != size:
        fail(f"{where}: an array of shape {shape} holds {len(array['bits'])} values, expected {size}")
    return tuple(shape)


def _keras_state_shapes(shape: tuple) -> dict:
    """Keras (adafactor.py:84-138): r without the last axis, c without the second-to-last,
    for variables with >= 2 axes (null otherwise); v always full size."""
    if len(shape) < 2:
        return {"r": None, "c": None, "v": shape}
    return {"r": shape[:-1], "c": shape[:-2] + shape[-1:], "v": shape}


def _factored_state_shapes(shape: tuple, axes) -> dict:
    """torch, optax, transformers: r (without the column axis) and c (without the row
    axis) for a factored variable, a full v for any other; never both."""
    if axes is None:
        return {"r": None, "c": None, "v": shape}
    row, col = axes
    return {"r": tuple(d for i, d in enumerate(shape) if i != col),
            "c": tuple(d for i, d in enumerate(shape) if i != row), "v": None}


def _dialect_factored_axes(dialect: str, config: dict, shape: tuple):
    """The (row, column) axes a dialect factors (reference/dialects/*.py ``factored_axes``)."""
    if dialect in ("optax", "timm_bigvision"):
        # the second-largest and the largest axis (a stable sort: ties keep axis order),
        # only if factored and the second-largest reaches min_dim_size_to_factor (optax 128,
        # timm's AdafactorBigVision 16: timm/optim/adafactor_bv.py:23-46)
        if not config.get("factored", True) or len(shape) < 2:
            return None
        order = sorted(range(len(shape)), key=lambda i: shape[i])
        if shape[order[-2]] < config.get("min_dim_size_to_factor", 128 if dialect == "optax" else 16):
            return None
        return order[-2], order[-1]
    if dialect == "timm":
        # timm.optim.Adafactor: dims 0, 1 of a > 2-D shape when both exceed min_dim_size_to_factor
        # (16), else the last two when both exceed it (timm/optim/adafactor.py:113-128)
        m = config.get("min_dim_size_to_factor", 16)
        if len(shape) > 2 and shape[0] > m and shape[1] > m:
            return 0, 1
        return (len(shape) - 2, len(shape) - 1) if len(shape) >= 2 and shape[-2] > m and shape[-1] > m else None
    return (len(shape) - 2, len(shape) - 1) if len(shape) >= 2 else None


def state_layout(dialect: str, config: dict, shapes: list, result: str) -> dict:
    """The expected-state layout of a vector: per state key, a list (one entry per
    variable) of (shape, size) each array must have (None: the entry must be null), None
    where the whole key must be null, ``"optional"`` where it may be null or hold one array
    of its variable's shape per variable, or ``"unchecked"`` where the layout depends on a
    configuration that may be anything (a dialect's invalid vector: arrays are checked for
    structure only)."""
    return {key: value if value in (None, "optional", "unchecked")
            else [None if s is None else (s, math.prod(s)) for s in value]
            for key, value in _state_shapes(dialect, config, shapes, result).items()}


def _state_shapes(dialect: str, config: dict, shapes: list, result: str) -> dict:
    valid = result != "invalid"
    if dialect == "keras":
        per = [_keras_state_shapes(s) for s in shapes]
        layout = {key: [p[key] for p in per] for key in ("r", "c", "v")}
        if valid:
            layout["average"] = list(shapes) if config.get("use_ema") else None
            layout["accumulator"] = list(shapes) if config.get("gradient_accumulation_steps") else None
        else:
            layout["average"] = layout["accumulator"] = "optional"
        layout["momentum"] = None
        return layout
    if not valid:
        return {"r": "unchecked", "c": "unchecked", "v": "unchecked", "average": None, "accumulator": None,
                "momentum": "unchecked"}
    per = [_factored_state_shapes(s, _dialect_factored_axes(dialect, config, s)) for s in shapes]
    layout = {key: [p[key] for p in per] for key in ("r", "c", "v")}
    layout["average"] = layout["accumulator"] = None
    if dialect == "pytorch_optimizer":  # betas[0], 0.9 by default (pytorch_optimizer/optimizer/adafactor.py:43)
        has_momentum = (config.get("betas") or [0.9])[0] is not None
    elif dialect == "timm_bigvision":  # momentum 0.9 by default (timm/optim/adafactor_bv.py:64)
        has_momentum = config.get("momentum", 0.9) is not None
    elif dialect == "timm":  # betas None by default; beta1 = betas[0] (timm/optim/adafactor.py:57, :68)
        has_momentum = (config.get("betas") or [None])[0] is not None
    else:
        has_momentum = config.get("momentum" if dialect == "optax" else "beta1") is not None
    layout["momentum"] = list(shapes) if has_momentum and dialect != "torch" else None
    return layout


def check_document(document: dict, path="<memory>") -> None:
    """Everything a JSON Schema cannot say about a vector file (rules: vectors/README.md,
    "Validation"). Raises VectorFormatError naming the file and the vector."""
    if not isinstance(document, dict) or not isinstance(document.get("vectors"), list) \
            or not isinstance(document.get("notes"), dict):
        raise VectorFormatError(path, "a vector file needs a \"notes\" object and a \"vectors\" list")
    dialect = document.get("dialect", "keras")
    if dialect not in DIALECTS:
        raise VectorFormatError(path, f"unknown dialect {dialect!r}; this loader knows {list(DIALECTS)}")
    seen = set()
    for index, vector in enumerate(document["vectors"]):
        vector_id = vector.get("id") if isinstance(vector, dict) else None
        if not isinstance(vector_id, str) or not vector_id:
            raise VectorFormatError(path, f"vectors/{index} has no id")
        if vector_id in seen:
            raise VectorFormatError(path, "duplicate vector id in this file", vector_id)
        seen.add(vector_id)
        check_vector(vector, dialect, document["notes"], path)


def check_vector(vector: dict, dialect: str, notes: dict, path="<memory>") -> None:
    """The semantic checks of one vector (see ``check_document``)."""
    vector_id = vector.get("id")

    def fail(message):
        raise VectorFormatError(path, message, vector_id)

    try:
        _check_vector(vector, dialect, notes, fail)
    except VectorFormatError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
        fail(f"malformed vector ({type(exc).__name__}: {exc})")


def _check_vector(vector: dict, dialect: str, notes: dict, fail) -> None:
    flags = vector["flags"]
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        fail("flags must be a list of strings")
    undefined = [f for f in flags if f not in notes]
    if undefined:
        fail(f"flags {undefined} are not defined in notes")
    flags = set(flags)
    result, error, steps, config = vector["result"], vector["error"], vector["steps"], vector["config"]
    if result not in ("valid", "acceptable", "invalid"):
        fail(f"result {_short(result)} is not valid, acceptable or invalid")
    if not isinstance(steps, list):
        fail("steps must be a list")

    # --- result, error and steps agree
    if result == "invalid":
        if not isinstance(error, dict) or error.get("at") not in ("construction", "step"):
            fail("an invalid vector needs error.at = \"construction\" or \"step\"")
        if error["at"] == "construction" and steps:
            fail(f"error at construction, but {len(steps)} steps are recorded")
        if error["at"] == "step":
            at = error.get("step")
            if not isinstance(at, int) or isinstance(at, bool) or at != len(steps) - 1:
                fail(f"error.step = {_short(at)}: the step that raises must be the last of the "
                     f"{len(steps)} steps (0-based)")
    else:
        if error is not None:
            fail(f"a {result} vector has error = {_short(error)}")
        if not steps:
            fail(f"a {result} vector needs at least one step")
        special = sorted(flags.intersection(GRADIENT_FLAGS))
        if result == "valid" and special:
            fail(f"flagged {special} but result is valid (special gradients make a vector acceptable)")
    raising = error["step"] if result == "invalid" and error["at"] == "step" else None

    # --- configuration (an invalid vector's configuration is what it tests: structure only)
    if not isinstance(config, dict):
        fail("config must be an object")
    if result != "invalid":
        table = KERAS_ARGUMENTS if dialect == "keras" else DIALECT_ARGUMENTS[dialect]
        check_arguments(config, table, "config", fail)
    if "config_integers" in vector:
        listed, actual = vector["config_integers"], config_integers(config)
        if listed != actual:
            fail(f"config_integers = {_short(listed)}, but the integers of config are at {_short(actual)} "
                 "(sorted JSON Pointers of every JSON integer in config, booleans excluded)")
    recorded = dialect == "keras" and isinstance(config.get("learning_rate"), dict) \
        and config["learning_rate"].get("callable") == "recorded"

    # --- variables
    variables = vector["variables"]
    if not isinstance(variables, list):
        fail("variables must be a list")
    shapes, initial = [], []
    for i, variable in enumerate(variables):
        if not isinstance(variable, dict) or not isinstance(variable.get("name"), str):
            fail(f"variables[{i}] needs a name and an initial array")
        shapes.append(_array_shape(variable["initial"], f"variables[{i}].initial", fail))
        initial.append(variable["initial"]["bits"])
    n = len(shapes)
    sizes = [math.prod(shape) for shape in shapes]
    exclude = vector["exclude_from_weight_decay"]
    if exclude is not None:
        if not isinstance(exclude, dict):
            fail("exclude_from_weight_decay must be null or an object")
        for k in exclude.get("var_index", []):
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < n:
                fail(f"exclude_from_weight_decay.var_index holds {_short(k)}, not a variable index "
                     f"(0..{n - 1})")

    # --- steps: one gradient per variable, every state array shaped as the dialect keeps it
    layout = state_layout(dialect, config, shapes, result)
    fitted = list(zip(shapes, sizes))
    grads, state = [], []
    start = _check_start(vector, steps, shapes, fitted, layout, fail)
    none_allowed = dialect == "keras" and "NONE_GRADIENT" in flags
    for k, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("grads"), list):
            fail(f"steps[{k}] needs a grads list")
        row = step["grads"]
        if len(row) != n:
            fail(f"steps[{k}].grads holds {len(row)} gradients for {n} variables")
        for i, g in enumerate(row):
            if g is None:
                if not none_allowed:
                    fail(f"steps[{k}].grads[{i}] is null, but " + (
                        "dialect vectors give every variable a gradient" if dialect != "keras"
                        else "the vector is not flagged NONE_GRADIENT"))
                continue
            shape, size = fitted[i]
            if type(g) is not dict or tuple(g["shape"]) != shape or type(g["bits"]) is not list \
                    or len(g["bits"]) != size:
                _array_problem(g, shape, f"steps[{k}].grads[{i}]", i, shapes, fail)
            grads.append(g["bits"])
        calls = step.get("learning_rate_calls")
        if calls is not None or (recorded and step.get("expected") is not None):
            if not recorded:
                fail(f"steps[{k}].learning_rate_calls, but the learning rate is not a recorded callable")
            if not isinstance(calls, list) or not all(isinstance(b, str) for b in calls):
                fail(f"steps[{k}].learning_rate_calls must be a list of bit strings (the learning rate "
                     "is a recorded callable)")
            state.append(calls)
        expected = step.get("expected")
        if expected is None:
            if k != raising:
                fail(f"steps[{k}].expected is null, but only the step that must raise has no expected state")
            continue
        if k == raising:
            fail(f"steps[{k}] must raise (error.step = {raising}), so its expected state must be null")
        _check_expected(expected, k, shapes, fitted, layout, state, fail)
        margins = step.get("margins")
        if margins is not None:
            for key in ("epsilon_2", "clip_threshold"):
                if len(margins[key]) != n:
                    fail(f"steps[{k}].margins.{key} holds {len(margins[key])} entries for {n} variables")

    # --- the bits: valid hex, and NaN/inf only where a flag declares them
    initial_raw = _check_bits(initial, "initial values", fail)
    start_raw = _check_bits(start, "initial state", fail)
    state_raw = _check_bits(state, "expected state", fail)
    needed = _gradient_flags_of_bits(_check_bits(grads, "gradients", fail))
    for flag in GRADIENT_FLAGS:
        if flag in needed and flag not in flags:
            what = {"NONFINITE_GRADIENT": "NaN or inf", "SQUARE_OVERFLOW": "a value whose square overflows",
                    "SUBNORMAL_GRADIENT": "a subnormal value"}[flag]
            fail(f"{_first_gradient_with(steps, flag)} holds {what}, but the vector is not flagged {flag}")
    if STATE_FLAG not in flags:
        for label, raw in (("initial values", initial_raw), ("initial state", start_raw),
                           ("expected state", state_raw)):
            if raw and (np.frombuffer(raw, dtype=">u8") & _ABS).max() >= _INF_BITS:
                fail(f"{_first_nonfinite(vector, label)} holds NaN or inf, but the vector is not flagged "
                     f"{STATE_FLAG}")


def gradient_flags(g) -> set:
    """The flags gradient values ``g`` require: NONFINITE_GRADIENT (a NaN or inf),
    SQUARE_OVERFLOW (finite, but g*g overflows), SUBNORMAL_GRADIENT (nonzero, below the
    smallest normal). The same rule as conformance/generator/flags.py, which the generator uses."""
    return _gradient_flags_of_bits(np.asarray(g, dtype=">f8").tobytes())


def _gradient_flags_of_bits(raw: bytes) -> set:
    """``gradient_flags`` of big-endian float64 bytes, on the bit patterns: for |x| the
    patterns order as the values do (inf, then NaN, above every finite value)."""
    if not raw:
        return set()
    a = np.frombuffer(raw, dtype=">u8") & _ABS
    flags = set()
    if ((a - np.uint64(1)) < _TINY_BITS - np.uint64(1)).any():  # 0 < |x| < tiny (0 wraps around)
        flags.add("SUBNORMAL_GRADIENT")
    if a.max() > _LIMIT_BITS:
        if a.max() >= _INF_BITS:
            flags.add("NONFINITE_GRADIENT")
        if ((a > _LIMIT_BITS) & (a < _INF_BITS)).any():
            flags.add("SQUARE_OVERFLOW")
    return flags


def _check_expected(expected: dict, k: int, shapes: list, fitted: list, layout: dict, state: list,
                    fail) -> None:
    """Step ``k``'s expected state: types, and every array shaped as ``layout`` says."""
    value = expected["iterations"]
    if type(value) is not int or value < 0:
        fail(f"steps[{k}].expected.iterations = {_short(value)}: expected a non-negative integer")
    if type(expected["is_update_step"]) is not bool or type(expected["ema_overwritten"]) is not bool:
        fail(f"steps[{k}].expected: is_update_step and ema_overwritten must be booleans")
    lr = expected["learning_rate"]
    if lr is not None:
        if not isinstance(lr, str):
            fail(f"steps[{k}].expected.learning_rate = {_short(lr)}: expected a bit string or null")
        state.append((lr,))
    _check_state_arrays(expected, f"steps[{k}].expected", STATE_KEYS, shapes, fitted, layout, state, fail)


def _check_start(vector: dict, steps: list, shapes: list, fitted: list, layout: dict, fail) -> list:
    """The state before step 1 (``initial_state``, with ``rms_floor`` and ``state_dtypes``):
    present exactly when the vector has steps, every array shaped as ``layout`` says.
    Returns its bit strings (a list of lists)."""
    start, floor, dtypes = vector["initial_state"], vector["rms_floor"], vector["state_dtypes"]
    if not isinstance(dtypes, dict):
        fail(f"state_dtypes = {_short(dtypes)}: expected an object {{kind: dtype name}}")
    for key, value in dtypes.items():
        if key not in SLOT_KEYS or value not in DTYPE_NAMES:
            fail(f"state_dtypes.{key} = {_short(value)}: expected a state kind of {list(SLOT_KEYS)} and a "
                 f"dtype of {list(DTYPE_NAMES)}")
    if not steps:
        if start is not None or floor is not None:
            fail("initial_state and rms_floor must be null: the vector has no steps (its optimizer is never built)")
        return []
    if type(start) is not dict:
        fail(f"initial_state = {_short(start)}: a vector with steps needs the state before step 1")
    if floor is None or not isinstance(floor, str):
        fail(f"rms_floor = {_short(floor)}: a vector with steps needs the bits of its RMS(x) floor")
    value = start["iterations"]
    if type(value) is not int or value < 0:
        fail(f"initial_state.iterations = {_short(value)}: expected a non-negative integer")
    bits = [[floor]]
    _check_state_arrays(start, "initial_state", SLOT_KEYS, shapes, fitted, layout, bits, fail)
    for key in dtypes:
        if start.get(key) is None:
            fail(f"state_dtypes names {key}, but the initial state keeps no {key}")
    return bits


def _check_state_arrays(holder: dict, where: str, keys, shapes: list, fitted: list, layout: dict, state: list,
                        fail) -> None:
    """Every kind of ``keys`` in ``holder`` shaped as ``layout`` says; appends the bit
    strings to ``state``."""
    n = len(shapes)
    for key in keys:
        items, want = holder.get(key), layout[key] if key != "variables" else fitted
        if want == "optional":
            want = None if items is None else fitted
        elif want == "unchecked":
            if items is not None:
                if type(items) is not list or len(items) != n:
                    fail(f"{where}.{key} holds {_count(items)} entries for {n} variables")
                for i, a in enumerate(items):
                    if a is not None:
                        _array_shape(a, f"{where}.{key}[{i}]", fail)
                        state.append(a["bits"])
            continue
        if want is None:
            if items is not None and any(a is not None for a in items):
                fail(f"{where}.{key} must be null here (this configuration keeps no {key})")
            continue
        if type(items) is not list or len(items) != n:
            fail(f"{where}.{key} holds {_count(items)} entries for {n} variables")
        for i, a in enumerate(items):
            w = want[i]
            if a is None:
                if w is not None:
                    fail(f"{where}.{key}[{i}] is null; variable {i} (shape {list(shapes[i])}) "
                         f"has a {key} of shape {list(w[0])}")
                continue
            if w is None or type(a) is not dict or tuple(a["shape"]) != w[0] or type(a["bits"]) is not list \
                    or len(a["bits"]) != w[1]:
                _array_problem(a, None if w is None else w[0], f"{where}.{key}[{i}]", i, shapes, fail, key)
            state.append(a["bits"])


def _array_problem(array, shape, where: str, i: int, shapes: list, fail, key: str = "gradient") -> None:
    """Raise the precise message for an array that does not fit ``shape`` (None: it should be
    null)."""
    of = f"variable {i} (shape {list(shapes[i])})"
    if shape is None:
        fail(f"{where} must be null: {of} keeps no {key}")
    if type(array) is not dict or "bits" not in array or "shape" not in array:
        fail(f"{where}: not an array {{\"shape\": [...], \"bits\": [...]}}: {_short(array)}")
    if tuple(array["shape"]) != shape:
        fail(f"{where} has shape {_short(array['shape'])}, expected {list(shape)} for {of}")
    fail(f"{where}: an array of shape {list(shape)} holds {_count(array['bits'])} values, "
         f"expected {math.prod(shape)}")


def _count(items) -> str:
    return str(len(items)) if isinstance(items, list) else _short(items)


def _check_bits(lists: list, what: str, fail) -> bytes:
    """Decode every bit string of ``lists`` (a list of lists of strings) at once; each must
    be exactly 16 lowercase hex digits. Returns the big-endian bytes."""
    count = sum(map(len, lists))
    if not count:
        return b""
    try:
        text = " ".join(map(" ".join, filter(None, lists)))  # fromhex skips the spaces
        raw = bytes.fromhex(text)
    except (TypeError, ValueError):
        fail(f"{what}: a value is not a 16-digit bit string ({_first_bad_bits(lists)})")
    # 16 characters each: the separators sit every 17th character; 8 bytes each: no
    # character but the separators was skipped; lowercase, as written
    if len(text) != 17 * count - 1 or text[16::17] != " " * (count - 1) or len(raw) != 8 * count \
            or text != text.lower():
        fail(f"{what}: a value is not 16 lowercase hex digits ({_first_bad_bits(lists)})")
    return raw


def _first_bad_bits(lists: list) -> str:
    for bits in lists:
        for b in bits:
            if not (isinstance(b, str) and len(b) == 16 and all(ch in "0123456789abcdef" for ch in b)):
                return _short(b)
    return "?"


def _decode_bits(bits) -> np.ndarray:
    return np.frombuffer(bytes.fromhex("".join(bits)), dtype=">f8").astype(np.float64)


def _first_gradient_with(steps: list, flag: str) -> str:
    """Where the first gradient value that needs ``flag`` is (for the message)."""
    for k, step in enumerate(steps):
        for i, g in enumerate(step["grads"]):
            if g is None:
                continue
            if flag in gradient_flags(_decode_bits(g["bits"])):
                return f"steps[{k}].grads[{i}]"
    return "a gradient"


def _first_nonfinite(vector: dict, label: str) -> str:
    """Where the first NaN/inf of the initial values or of the expected state is."""
    def bad(bits):
        return not np.all(np.isfinite(_decode_bits(bits)))

    if label == "initial values":
        for i, variable in enumerate(vector["variables"]):
            if bad(variable["initial"]["bits"]):
                return f"variables[{i}].initial"
        return "an initial value"
    if label == "initial state":
        if bad([vector["rms_floor"]]):
            return "rms_floor"
        for key in SLOT_KEYS:
            for i, a in enumerate(vector["initial_state"].get(key) or []):
                if a is not None and bad(a["bits"]):
                    return f"initial_state.{key}[{i}]"
        return "the initial state"
    for k, step in enumerate(vector["steps"]):
        if step.get("learning_rate_calls") and bad(step["learning_rate_calls"]):
            return f"steps[{k}].learning_rate_calls"
        expected = step.get("expected")
        if expected is None:
            continue
        if expected["learning_rate"] is not None and bad([expected["learning_rate"]]):
            return f"steps[{k}].expected.learning_rate"
        for key in STATE_KEYS:
            for i, a in enumerate(expected.get(key) or []):
                if a is not None and bad(a["bits"]):
                    return f"steps[{k}].expected.{key}[{i}]"
    return "the expected state"


def load_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST_NAME
    manifest = read_json(path, lambda message: VectorFormatError(path, message.split(": ", 1)[1]))
    if not isinstance(manifest, dict):
        raise VectorFormatError(path, "top level must be a JSON object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise VectorFormatError(path, version_message(manifest.get("schema_version")))
    version = manifest.get("corpus_version")
    if version is not None and (not isinstance(version, str) or len(version.split(".")) != 3
                                or not all(part.isdigit() for part in version.split("."))
                                or int(version.split(".")[0]) != SCHEMA_VERSION):
        raise VectorFormatError(path, f"corpus_version {version!r} is not MAJOR.MINOR.PATCH with MAJOR = the "
                                      f"schema_version {SCHEMA_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise VectorFormatError(path, "needs a \"files\" object {relative path: {sha256, vectors}}")
    for relative, entry in files.items():
        parts = Path(relative).parts
        if Path(relative).is_absolute() or ".." in parts or not relative.endswith(".json"):
            raise VectorFormatError(path, f"files: {relative!r} is not a .json path inside the corpus")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not isinstance(entry.get("vectors"), int) or isinstance(entry.get("vectors"), bool):
            raise VectorFormatError(path, f"files: the entry of {relative!r} needs a sha256 string and a "
                                          "vectors count")
    return manifest


def unlisted_files(directory, manifest: dict) -> list[str]:
    """Vector files (``*.json`` outside ``schema/``, MANIFEST.json aside) under ``directory``
    that the manifest does not list: relative paths."""
    directory = Path(directory)
    listed = set(manifest["files"])
    found = []
    for p in directory.rglob("*.json"):
        relative = p.relative_to(directory).as_posix()
        if relative == MANIFEST_NAME or relative.split("/")[0] == "schema":
            continue
        if relative not in listed:
            found.append(relative)
    return sorted(found)


#: sha256 of the vector files that passed validation in this process -> whether the JSON
#: Schema step was part of it. The same bytes always give the same verdict, so a process
#: that loads the corpus again (the test suite does dozens of times) parses it again but
#: checks it once.
_VALIDATED: dict[str, bool] = {}


def load_corpus(directory, *, validate_schema: bool = False) -> dict[str, dict]:
    """Load every file the manifest lists, checking sha256 and vector count first, then every
    vector's meaning (``check_document``); ids must be unique across the corpus, and a vector
    file the manifest does not list is an error (the gate would otherwise ignore it silently).

    The manifest pins every file's sha256, so a file whose bytes match it is trusted to follow
    the JSON Schema (the corpus tests and ``generate --check`` validate it, and a file that
    differs is refused); ``validate_schema=True`` validates it here too. Every semantic check
    runs either way.

    Returns {relative path: document}, each document's ``vectors`` a list of
    ``conformance.vector.Vector``."""
    from conformance.vector import Vector

    directory = Path(directory)
    manifest = load_manifest(directory)
    for relative in sorted(manifest["files"]):
        if not (directory / relative).exists():
            raise VectorFormatError(directory / relative, "listed in MANIFEST.json but missing")
    stray = unlisted_files(directory, manifest)
    if stray:
        raise VectorFormatError(directory / stray[0], f"a vector file that {MANIFEST_NAME} does not list "
                                f"({len(stray)} such file(s): {', '.join(stray[:5])}): the gate would ignore "
                                "it; regenerate (`make vectors`) or remove it")
    documents = {}
    owner: dict[str, str] = {}
    for relative, entry in sorted(manifest["files"].items()):
        path = directory / relative
        try:
            raw = path.read_bytes()  # one read: the bytes hashed are the bytes parsed
        except OSError as exc:
            raise VectorFormatError(path, f"cannot read: {exc.strerror or exc}")
        digest = hashlib.sha256(raw).hexdigest()
        if digest != entry["sha256"]:
            raise VectorFormatError(path, f"sha256 {digest} does not match MANIFEST.json "
                                          f"({entry['sha256']}): the file was edited or damaged; "
                                          f"regenerate with `make vectors`")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VectorFormatError(path, f"not UTF-8: {exc}")
        document = check_text(text, path, validate_schema=validate_schema, digest=digest)
        if len(document["vectors"]) != entry["vectors"]:
            raise VectorFormatError(path, f"holds {len(document['vectors'])} vectors, "
                                          f"MANIFEST.json says {entry['vectors']}")
        for vector in document["vectors"]:
            other = owner.setdefault(vector["id"], relative)
            if other != relative:
                raise VectorFormatError(path, f"duplicate vector id: {directory / other} has a vector "
                                              "with the same id (ids are unique across the corpus)",
                                        vector["id"])
        dialect = document.get("dialect", "keras")
        document["vectors"] = [Vector(v, file=relative, path=path, dialect=dialect) for v in document["vectors"]]
        documents[relative] = document
    total = manifest.get("total_vectors")
    if total != len(owner):
        raise VectorFormatError(directory / MANIFEST_NAME, f"total_vectors = {total!r}, but its files hold "
                                                           f"{len(owner)} vectors")
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
