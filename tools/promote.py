"""Promote a failing fuzz example to a regression vector, checked forever by every port.

    python -m tools.promote out/fuzz/<id>.json [--name NAME]
    make vectors

The fuzz case (written by ``python -m conformance.fuzz`` when it finds a failure) is copied
into ``tools/regressions/<name>.json``; ``tools/vector_cases.py`` turns every file there into
a vector ``regression/<name>`` flagged ``REGRESSION`` whose description records the command
and Hypothesis settings that found it. ``make vectors`` then writes it into the corpus.

Nothing is written unless the case is sound: its fields are checked one by one (at least one
step, one gradient of the right shape per variable per step, 16-digit bit strings, known
Keras arguments of the right types), then the generator builds the vector in memory exactly
as ``make vectors`` will (``tools.vector_cases.regression_case`` and
``tools.generate_vectors.generate_corpus``) and the loader's own validation
(``conformance.vectorfile``) must accept it. A broken file in ``tools/regressions/`` would
otherwise break ``make vectors``, the fuzzer and test collection until it was deleted.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import warnings
from pathlib import Path

from conformance import vectorfile as vf

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
CASE_FORMAT = "adafactor-fuzz-case"
NAME_PATTERN = r"[a-z0-9][a-z0-9_.+-]*"


class PromotionError(ValueError):
    pass


def load_case(path) -> dict:
    """Read a fuzz case and check every field it has; raise PromotionError naming the file
    and the field."""
    path = Path(path)
    data = vf.read_json(path, PromotionError)

    def fail(field: str, message: str):
        raise PromotionError(f"{path}: {field}: {message}")

    def fail_with(message: str):
        raise PromotionError(f"{path}: {message}")

    if not isinstance(data, dict) or data.get("format") != CASE_FORMAT or data.get("version") != 1:
        format_name = data.get("format") if isinstance(data, dict) else None
        raise PromotionError(f"{path}: not a version-1 fuzz case (format={format_name!r})")
    for key in ("config", "variables", "initial", "grads", "found_by"):
        if key not in data:
            raise PromotionError(f"{path}: missing field {key!r}")
    for key in ("found_by", "description", "hypothesis", "id"):
        if key in data and not isinstance(data[key], str):
            fail(key, f"must be a string, got {json.dumps(data[key])[:60]}")

    variables = data["variables"]
    if not isinstance(variables, list) or not variables:
        fail("variables", "must be a non-empty list of {\"name\", \"shape\"}")
    shapes = []
    for i, var in enumerate(variables):
        if not isinstance(var, dict) or not isinstance(var.get("name"), str) \
                or not isinstance(var.get("shape"), list) \
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in var["shape"]):
            fail(f"variables[{i}]", f"needs a name and a shape of non-negative integers, got "
                                    f"{json.dumps(var)[:80]}")
        shapes.append(var["shape"])

    initial = data["initial"]
    if not isinstance(initial, list) or len(initial) != len(variables):
        fail("initial", f"{_count(initial)} arrays for {len(variables)} variables")
    for i, array in enumerate(initial):
        _check_array(array, shapes[i], f"initial[{i}]", f"variable {variables[i]['name']!r}", fail)

    grads = data["grads"]
    if not isinstance(grads, list):
        fail("grads", "must be a list of steps")
    if not grads:
        fail("grads", "no steps: a regression vector needs at least one step")
    for k, row in enumerate(grads):
        if not isinstance(row, list) or len(row) != len(variables):
            fail(f"grads[{k}]", f"{_count(row)} gradients for {len(variables)} variables (one array or "
                                "null per variable)")
        for i, g in enumerate(row):
            if g is not None:
                _check_array(g, shapes[i], f"grads[{k}][{i}]", f"variable {variables[i]['name']!r}", fail)
    if all(g is None for row in grads for g in row):
        fail("grads", "every gradient is null")

    config = data["config"]
    if not isinstance(config, dict):
        fail("config", "must be an object of Keras Adafactor arguments")
    unknown = sorted(set(config) - set(vf.KERAS_ARGUMENTS))
    if unknown:
        fail("config", f"unknown argument(s) {unknown}; Keras Adafactor takes {sorted(vf.KERAS_ARGUMENTS)}")
    for key, value in config.items():
        if key == "learning_rate" and isinstance(value, dict) and value.get("callable") == "recorded":
            calls = value.get("calls")
            if set(value) != {"callable", "calls"} or not isinstance(calls, list) or not calls:
                fail("config.learning_rate", "a recorded callable needs a non-empty \"calls\" list of bit strings")
            for j, bits in enumerate(calls):
                if not _is_bits(bits):
                    fail(f"config.learning_rate.calls[{j}]", f"not 16 lowercase hex digits: {bits!r}")
            continue
        vf.check_arguments({key: value}, vf.KERAS_ARGUMENTS, "config", fail_with)

    exclude = data.get("exclude_from_weight_decay")
    if exclude is not None:
        if not isinstance(exclude, dict) or set(exclude) - {"var_names", "var_index"}:
            fail("exclude_from_weight_decay", "must be null or {\"var_names\": [...], \"var_index\": [...]}")
        if not all(isinstance(s, str) for s in exclude.get("var_names", [])):
            fail("exclude_from_weight_decay.var_names", "must be strings")
        if not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(variables)
                   for k in exclude.get("var_index", [])):
            fail("exclude_from_weight_decay.var_index", f"must be variable indices 0..{len(variables) - 1}")
    return data


def _count(items) -> str:
    return str(len(items)) if isinstance(items, list) else json.dumps(items)[:40]


def _is_bits(bits) -> bool:
    return isinstance(bits, str) and re.fullmatch(r"[0-9a-f]{16}", bits) is not None


def _check_array(array, shape: list, field: str, of: str, fail) -> None:
    if not isinstance(array, dict) or not isinstance(array.get("shape"), list) \
            or not isinstance(array.get("bits"), list):
        fail(field, f"not an array {{\"shape\": [...], \"bits\": [...]}}: {json.dumps(array)[:80]}")
    if list(array["shape"]) != list(shape):
        fail(field, f"has shape {array['shape']}, {of} has shape {shape}")
    if len(array["bits"]) != math.prod(shape):
        fail(field, f"holds {len(array['bits'])} values, shape {shape} needs {math.prod(shape)}")
    for j, bits in enumerate(array["bits"]):
        if not _is_bits(bits):
            fail(f"{field}.bits[{j}]", f"not 16 lowercase hex digits: {json.dumps(bits)[:40]}")


def check_as_generator(data: dict, source, name: str) -> dict:
    """Build the vector ``regression/<name>`` from the case ``data`` exactly as ``make
    vectors`` will (the regression loader of tools/vector_cases.py, then the generator), and
    validate it as the gate's loader will. Returns the vector; raises PromotionError."""
    from tools import generate_vectors as gen
    from tools.vector_cases import CASES, regression_case

    vector_id = f"regression/{name}"
    taken = [case.id for case in CASES if case.id == vector_id]
    if taken:
        raise PromotionError(f"{source}: the id {vector_id!r} is taken by an existing case: choose another --name")
    with tempfile.TemporaryDirectory(prefix="promote-") as scratch:
        staged = Path(scratch) / f"{name}.json"
        staged.write_text(json.dumps({**data, "id": vector_id}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        try:
            case = regression_case(staged)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                documents = gen.generate_corpus([case])
        except vf.VectorFormatError as exc:
            raise PromotionError(f"{source}: {str(exc).replace(str(staged), 'case')}") from exc
        except Exception as exc:  # noqa: BLE001 - whatever stops `make vectors` stops promotion
            raise PromotionError(f"{source}: the generator cannot build this vector "
                                 f"({type(exc).__name__}: {exc})") from exc
    ((relative, document),) = documents.items()
    try:
        vf.parse_document(vf.dumps(document), f"vectors/{relative} (as generated from {source})")
    except vf.VectorFormatError as exc:
        raise PromotionError(f"{source}: the generated vector does not validate: {exc}") from exc
    (vector,) = document["vectors"]
    return vector


def promote(path, name: str | None = None, directory: Path = REGRESSIONS) -> Path:
    data = load_case(path)
    if name is None:
        if not isinstance(data.get("id"), str):
            raise PromotionError(f"{path}: the case has no id: give --name")
        name = data["id"].split("/")[-1]
    if not re.fullmatch(NAME_PATTERN, name):
        raise PromotionError(f"bad regression name {name!r}: use lowercase letters, digits, _ . + -")
    target = Path(directory) / f"{name}.json"
    if target.exists():
        raise PromotionError(f"{target} exists already: choose another --name")
    check_as_generator(data, path, name)  # before anything is written
    data["id"] = f"regression/{name}"
    vf.write_atomic(target, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", type=Path, help="a fuzz case file (out/fuzz/*.json)")
    parser.add_argument("--name", help="regression name (default: from the case id)")
    args = parser.parse_args(argv)
    try:
        target = promote(args.case, args.name)
    except PromotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {target}; now run `make vectors` and commit both")
    return 0


if __name__ == "__main__":
    sys.exit(main())
