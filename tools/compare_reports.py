"""Compare the verdicts of two gate JSON reports (``conformance run --json``), lane by lane
and vector by vector.

    python -m tools.compare_reports BEFORE.json AFTER.json
    python -m tools.compare_reports BEFORE_DIR AFTER_DIR     # every *.json in each, lanes merged
    python -m tools.compare_reports --common BEFORE AFTER    # only the lanes both hold

A lane is adapter x dtype x mode x device (a directory holds e.g. one report per adapter;
its reports' lanes are merged, and their run verdicts are compared report by report). Printed: lanes present in only one report, lanes
whose status counts differ, and every vector whose status (pass, model, fail, acceptable,
xfail, xpass, skip) or deviation model differs or that is in only one report. Errors,
reasons and numbers are not compared. Exit 0 when the verdicts are identical, 1 when they
differ, 2 when a report cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _lanes(data: dict) -> dict:
    return {(lane["adapter"], lane["dtype"], lane["mode"], lane["device"]): lane for lane in data.get("lanes", [])}


def _verdicts(lane: dict) -> dict:
    """vector id -> (status, deviation model or None)."""
    return {o["id"]: (o["status"], o.get("model")) for o in lane.get("outcomes", [])}


def _verdict_set(verdict) -> set:
    return set(verdict.values()) if isinstance(verdict, dict) else {verdict}


def differences(before: dict, after: dict, common_only: bool = False) -> list[str]:
    """One line per difference in verdicts between two reports (empty: identical);
    ``common_only``: only the lanes both hold (and no run verdict), for a partial run."""
    out = []
    old, new = _lanes(before), _lanes(after)
    same_shape = isinstance(before.get("verdict"), dict) == isinstance(after.get("verdict"), dict)
    if not common_only and (before.get("verdict") != after.get("verdict") if same_shape
                            else _verdict_set(before.get("verdict")) != _verdict_set(after.get("verdict"))):
        out.append(f"run verdict: {before.get('verdict')} -> {after.get('verdict')}")
    keys = (old.keys() & new.keys()) if common_only else (old.keys() | new.keys())
    for key in sorted(keys):
        name = " ".join(key)
        if key not in new:
            out.append(f"{name}: lane only in the first report")
            continue
        if key not in old:
            out.append(f"{name}: lane only in the second report")
            continue
        a, b = old[key], new[key]
        if a.get("counts") != b.get("counts"):
            changed = {s: (a["counts"].get(s, 0), b["counts"].get(s, 0))
                       for s in sorted(set(a.get("counts", {})) | set(b.get("counts", {})))
                       if a["counts"].get(s, 0) != b["counts"].get(s, 0)}
            out.append(f"{name}: counts differ " + ", ".join(f"{s} {x} -> {y}" for s, (x, y) in changed.items()))
        va, vb = _verdicts(a), _verdicts(b)
        for vid in sorted(va.keys() | vb.keys()):
            if vid not in vb:
                out.append(f"{name}: {vid}: only in the first report ({va[vid][0]})")
            elif vid not in va:
                out.append(f"{name}: {vid}: only in the second report ({vb[vid][0]})")
            elif va[vid] != vb[vid]:
                (s1, m1), (s2, m2) = va[vid], vb[vid]
                what = f"{s1} -> {s2}" if s1 != s2 else f"{s1}, model {m1} -> {m2}"
                out.append(f"{name}: {vid}: {what}")
    return out


def _read(path: Path) -> dict:
    """One report, or the reports of a directory merged: their lanes together, and as
    ``verdict`` the verdict of each file by name."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise SystemExit(f"error: no report (*.json) in {path}")
    merged = {"lanes": [], "verdict": {}}
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: cannot read report {file}: {exc}") from None
        merged["lanes"].extend(data.get("lanes", []))
        merged["verdict"][file.name] = data.get("verdict")
    if not path.is_dir():
        merged["verdict"] = merged["verdict"][path.name]
    return merged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--common", action="store_true", help="compare only the lanes both hold (a partial run)")
    args = parser.parse_args(argv)
    try:
        before, after = _read(args.before), _read(args.after)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    found = differences(before, after, args.common)
    lanes = len(_lanes(after).keys() & _lanes(before).keys()) if args.common else len(_lanes(after))
    vectors = sum(len(lane.get("outcomes", [])) for lane in after.get("lanes", []))
    for line in found:
        print(line)
    print(f"{'SAME' if not found else 'DIFFERENT'}: {len(found)} differences over {lanes} lanes, "
          f"{vectors} vector outcomes ({args.before} -> {args.after})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
