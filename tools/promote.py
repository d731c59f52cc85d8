"""Promote a failing fuzz example to a regression vector, checked forever by every port.

    python -m tools.promote out/fuzz/<id>.json [--name NAME]
    make vectors

The fuzz case (written by ``python -m conformance.fuzz`` when it finds a failure) is copied
into ``tools/regressions/<name>.json``; ``tools/vector_cases.py`` turns every file there into
a vector ``regression/<name>`` flagged ``REGRESSION`` whose description records the command
and Hypothesis settings that found it. ``make vectors`` then writes it into the corpus.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from conformance import vectorfile as vf

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
CASE_FORMAT = "adafactor-fuzz-case"


class PromotionError(ValueError):
    pass


def load_case(path) -> dict:
    path = Path(path)
    data = vf.read_json(path, PromotionError)
    if data.get("format") != CASE_FORMAT or data.get("version") != 1:
        raise PromotionError(f"{path}: not a version-1 fuzz case (format={data.get('format')!r})")
    for key in ("config", "variables", "initial", "grads", "found_by"):
        if key not in data:
            raise PromotionError(f"{path}: missing field {key!r}")
    if len(data["initial"]) != len(data["variables"]):
        raise PromotionError(f"{path}: {len(data['initial'])} initial arrays for {len(data['variables'])} variables")
    for i, (var, array) in enumerate(zip(data["variables"], data["initial"])):
        if list(array["shape"]) != list(var["shape"]):
            raise PromotionError(f"{path}: initial[{i}] has shape {array['shape']}, variable "
                                 f"{var['name']!r} has shape {var['shape']}")
        vf.decode_array(array, path)
    return data


def promote(path, name: str | None = None, directory: Path = REGRESSIONS) -> Path:
    data = load_case(path)
    name = name or data["id"].split("/")[-1]
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.+-]*", name):
        raise PromotionError(f"bad regression name {name!r}: use lowercase letters, digits, _ . + -")
    target = directory / f"{name}.json"
    if target.exists():
        raise PromotionError(f"{target} exists already: choose another --name")
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
