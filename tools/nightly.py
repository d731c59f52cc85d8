"""The Keras lanes against the newest keras-nightly, compared vector by vector with the
pinned release (`make check-nightly`).

    python -m tools.nightly                       # jax, torch, tensorflow
    python -m tools.nightly --backend torch       # one backend
    python -m tools.nightly --no-refresh          # the nightly already in the cached env
    python -m tools.nightly -- --dtype float64    # arguments after -- go to conformance run
    python -m tools.nightly --backend jax --reports out/history/keras-3.15.1-jax out/history/keras-nightly-jax
                                                  # run nothing: compare reports already written

For each backend: keras-nightly in its cached env (tools/envs.py, ``keras-nightly:<backend>``,
upgraded to the newest nightly unless ``--no-refresh``) runs the lane ``keras-<backend>``,
and this Python (the pinned release, constraints.txt) runs the same lane; reports land in
``<out>/pinned/`` and ``<out>/keras-nightly/``. Printed: every difference
(tools/compare_reports.py), then each changed vector as EXPECTED (a versioned expectation
entry names it: it matches the vector in that lane and its version range holds for exactly
one of the two runs, and the vector does not fail in the nightly) or UNEXPECTED.

``--reports PINNED NIGHTLY`` runs nothing and compares the ``<adapter>.json`` reports already
in two directories, e.g. the pinned release's and the nightly's rows of ``make history``
(tools/history.py, ``out/history/<env name>/``, whose ``seconds.json`` carries the env's stamp):
one run of the nightly lanes serves both the history and the watch.

Exit 0 when nothing changed or every change is EXPECTED; 1 when something changed that no
versioned expectation names (a lane or a run verdict that changed counts too); 2 when an
env cannot be built or a report is missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

from tools import compare_reports, envs

OUT = envs.REPO / "out" / "nightly"


def lane_key(lane: dict) -> tuple:
    return lane["adapter"], lane["dtype"], lane["mode"], lane["device"]


def _version_of(lane: dict, stamp: Optional[dict] = None):
    """framework -> version in the run of ``lane``: its environment (what the adapter
    reported), else the env's stamp (what pip installed)."""
    environment = lane.get("environment", {})
    installed = (stamp or {}).get("installed", {})

    def version_of(name):
        for key in (name, name.replace("_", "-"), f"{name}-cpu", f"{name}-nightly"):
            if environment.get(key):
                return str(environment[key])
            if installed.get(key):
                return installed[key]
        return None

    return version_of


def _vectors() -> dict:
    from conformance import vectorfile as vf
    from conformance.corpus import default_vectors_dir
    from conformance.vector import as_vector

    documents = vf.load_corpus(default_vectors_dir())
    return {as_vector(v).id: as_vector(v) for _, v in vf.iter_vectors(documents)}


def _holds(entry, version_of) -> Optional[bool]:
    try:
        return all(version_of(r.name) is not None and r.holds(version_of(r.name)) for r in entry.versions)
    except ValueError:
        return None


def classify(before: dict, after: dict, entries_of, vectors: dict, stamps=(None, None)) -> list[tuple]:
    """Each change between two merged reports as (lane name, vector id or None, what,
    explanation or None). ``entries_of(adapter)``: its parsed expectation entries (versions
    not evaluated); ``vectors``: id -> Vector."""
    changes = []
    old, new = compare_reports._lanes(before), compare_reports._lanes(after)
    for key in sorted(old.keys() | new.keys()):
        name = " ".join(key)
        if key not in old or key not in new:
            changes.append((name, None, "lane only in the " + ("pinned" if key in old else "nightly") + " run", None))
            continue
        a, b = old[key], new[key]
        va, vb = compare_reports._verdicts(a), compare_reports._verdicts(b)
        versioned = [e for e in entries_of(key[0]) if e.versions]
        version_a, version_b = _version_of(a, stamps[0]), _version_of(b, stamps[1])
        for vid in sorted(va.keys() | vb.keys()):
            if va.get(vid) == vb.get(vid):
                continue
            what = f"{va.get(vid, ('absent',))[0]} -> {vb.get(vid, ('absent',))[0]}"
            if va.get(vid) and vb.get(vid) and va[vid][0] == vb[vid][0]:
                what = f"{va[vid][0]}, model {va[vid][1]} -> {vb[vid][1]}"
            why = None
            vector = vectors.get(vid)
            if vector is not None and vid in vb and vb[vid][0] != "fail":
                for entry in versioned:
                    if entry.matches(vector, *key[1:]) and {_holds(entry, version_a), _holds(entry, version_b)} \
                            == {True, False}:
                        ranges = " ".join(r.text for r in entry.versions)
                        why = f"{entry.where}: {entry.verdict} {entry.model or entry.because} {ranges}".replace("  ", " ")
                        break
            changes.append((name, vid, what, why))
    return changes


def _read_dir(path: Path, adapters) -> dict:
    merged = {"lanes": [], "verdict": {}}
    for adapter in adapters:
        file = path / f"{adapter}.json"
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise envs.EnvError(f"no report {file}: {exc}") from None
        merged["lanes"].extend(data.get("lanes", []))
        merged["verdict"][file.name] = data.get("verdict")
    return merged


def _saved_stamp(directory: Path) -> Optional[dict]:
    """The env's stamp that tools/history.py saved with a spec's reports (``seconds.json``), if any."""
    try:
        return json.loads((directory / "seconds.json").read_text(encoding="utf-8")).get("stamp")
    except (OSError, ValueError, AttributeError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=envs.BACKENDS,
                        help="a Keras backend (repeatable; default all three)")
    parser.add_argument("--cache", help="the env cache (default .envs/ or $ADAFACTOR_ENVS)")
    parser.add_argument("--out", default=str(OUT), help="reports: OUT/pinned/, OUT/keras-nightly/")
    parser.add_argument("--no-refresh", action="store_true", help="keep the nightly already in the cached env")
    parser.add_argument("--pinned-python", default=sys.executable,
                        help="the Python with the pinned release (default: this one)")
    parser.add_argument("--reports", nargs=2, metavar=("PINNED", "NIGHTLY"),
                        help="run nothing: compare the <adapter>.json reports in these two directories "
                             "(e.g. out/history/keras-3.15.1-jax out/history/keras-nightly-jax)")
    parser.add_argument("gate_args", nargs="*", help="after --: passed to conformance run")
    args = parser.parse_args(argv)
    backends = args.backend or list(envs.BACKENDS)
    out = Path(args.out)
    cache = envs.cache_dir(args.cache)
    adapters = [envs.KERAS_LANES[b] for b in backends]
    stamps = [None, None]
    if args.reports:
        directories = [Path(d) for d in args.reports]
        try:
            before, after = (_read_dir(d, adapters) for d in directories)
        except envs.EnvError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        stamps = [_saved_stamp(d) for d in directories]
        for label, directory, stamp, merged in zip(("pinned", "nightly"), directories, stamps, (before, after)):
            versions = sorted({str(lane.get("environment", {}).get("keras")) for lane in merged["lanes"]})
            print(f"{label}: keras {', '.join(versions) or '?'} ({directory}; "
                  f"{'env stamp: ' + (stamp or {}).get('spec', '') if stamp else 'no env stamp'})", flush=True)
        return report_changes(before, after, stamps)
    try:
        nightly_dir, pinned_dir = out / "keras-nightly", out / "pinned"
        for backend in backends:
            spec = envs.parse_spec(f"keras-nightly:{backend}")
            env = envs.ensure(spec, cache, refresh=not args.no_refresh)
            stamps[1] = envs.read_stamp(env)
            installed = stamps[1].get("installed", {}).get("keras-nightly", "?")
            print(f"keras-nightly {installed} ({backend})", flush=True)
            envs.run_lanes(spec, env, nightly_dir, args.gate_args)
        pinned_dir.mkdir(parents=True, exist_ok=True)
        for adapter in adapters:
            report = pinned_dir / f"{adapter}.json"
            if report.exists():
                report.unlink()
            command = [args.pinned_python, "-m", "conformance", "run", "--adapter", adapter, "--json", str(report),
                       *args.gate_args]
            print(f"pinned: {' '.join(command)}", flush=True)
            subprocess.run(command, cwd=envs.REPO)
        before, after = _read_dir(pinned_dir, adapters), _read_dir(nightly_dir, adapters)
    except envs.EnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return report_changes(before, after, stamps)


def report_changes(before: dict, after: dict, stamps=(None, None), entries_of=None, vectors=None,
                   out=print) -> int:
    """Print the differences and their classification; the exit status (0 or 1)."""
    from conformance import expectations
    from conformance.adapters import registry

    if entries_of is None:
        def entries_of(adapter):
            stem = registry.ADAPTERS[adapter].expectations if adapter in registry.ADAPTERS else adapter
            path = expectations.DIRECTORY / f"{stem}.txt"
            return expectations.parse(path) if path.exists() else []
    lines = compare_reports.differences(before, after)
    for line in lines:
        out(line)
    changes = classify(before, after, entries_of, _vectors() if vectors is None else vectors, stamps)
    unexpected = [c for c in changes if c[3] is None]
    verdicts_changed = before.get("verdict") != after.get("verdict")
    for name, vid, what, why in changes:
        out(f"{'EXPECTED' if why else 'UNEXPECTED'}: {name}: {vid or ''}{': ' if vid else ''}{what}"
            + (f" ({why})" if why else ""))
    if verdicts_changed and not changes:
        unexpected.append(("run verdict", None, "", None))
    if not lines and not changes:
        out("SAME: keras-nightly agrees with the pinned release vector by vector")
        return 0
    out(f"{len(changes)} vectors or lanes changed, {len(unexpected)} not named by a versioned expectation")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
