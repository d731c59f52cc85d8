"""Differential fuzzing: the reference against an adapter, on configurations and inputs
Hypothesis draws, teacher-forced, under the lane's tolerance policy.

    python -m conformance.fuzz --adapter keras-tensorflow --dtype float32 [--profile ci|dev|campaign]

Each example is a drawn ``tools.vector_cases.Case``; the generator turns it into a golden
vector with the reference (exactly as for the committed corpus) and the runner grades the
adapter on it. ``hypothesis.target`` climbs toward the largest error/budget ratio. A failing
example is written to ``out/fuzz/<id>.json``; ``python -m tools.promote FILE`` turns it into
a regression vector of the corpus.

Draws are discarded (``assume``) where the float64 reference is itself ill-conditioned, so
that no tolerance has to be loosened:
  * the expected state is not finite (overflow, NaN): there is no accuracy to compare;
  * a min/max/clip pair sits on a knife edge (flag KNIFE_EDGE): a correct port may take the
    other arm, and the normwise metric of the update then measures the branch, not the port;
  * the lane cannot represent the inputs (overflow/underflow in float32 and below).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from conformance import runner
from conformance.tolerance import Policy

OUT = Path("out") / "fuzz"


@dataclass
class FuzzResult:
    adapter: str
    dtype: str
    profile: str
    examples: int = 0
    discarded: int = 0
    seconds: float = 0.0
    failure: dict | None = None
    worst_ratio: float = 0.0
    worst_case: str = ""  # description of the example with the largest error/budget
    statuses: dict = field(default_factory=dict)
    draws: str = ""  # sha256 of every drawn example's description, in order: the sequence's fingerprint
    measured: str = ""  # sha256 of every example's error/budget ratio, in order: what the adapter measured

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


def case_to_json(case, vector: dict, command: str, seed_note: str) -> dict:
    """A drawn case as language-neutral JSON (config as Keras config, arrays as bits; a
    callable learning rate as the values it returned, in call order)."""
    from conformance import vectorfile as vf
    from reference import schedules

    config = {}
    for key, value in case.config.items():
        config[key] = schedules.serialize(value) if isinstance(value, schedules.LearningRateSchedule) else value
    if case.make_learning_rate is not None:
        config["learning_rate"] = {"callable": "recorded",
                                   "calls": [b for step in vector["steps"] for b in step.get("learning_rate_calls", [])]}
    initial, grads = case.inputs
    return {
        "format": "adafactor-fuzz-case", "version": 1,
        "id": case.id, "description": case.description,
        "config": vf.as_jsonable(config),
        "variables": [{"name": n, "shape": list(s)} for n, s in case.variables],
        "initial": [vf.encode_array(x) for x in initial],
        "grads": [[vf.encode_optional(g) for g in row] for row in grads],
        "exclude_from_weight_decay": case.exclude,
        "found_by": command, "hypothesis": seed_note,
    }


def fuzz(adapter_name: str, dtype: str = "float32", profile: str = "ci", mode: str = "teacher",
         max_examples: int | None = None, write_failures: bool = True, out: Path = OUT) -> FuzzResult:
    """Run the differential property; return statistics and the first failure (if any)."""
    from hypothesis import HealthCheck, assume, given, settings, target
    from hypothesis.errors import UnsatisfiedAssumption  # noqa: F401  (assume raises it)

    from conformance.adapters import resolve
    from conformance.fuzz import profiles
    from conformance.fuzz.strategies import cases
    from tools.generate_vectors import generate_vector

    from conformance import expectations

    adapter = resolve(adapter_name)
    policy = Policy.load()
    entries = expectations.for_adapter(adapter.name)  # known deviations stay xfail here too
    result = FuzzResult(adapter.name, dtype, profile)
    command = (f"python -m conformance.fuzz --adapter {adapter_name} --dtype {dtype} --mode {mode} "
               f"--profile {profile}")
    seen_failure: dict = {}
    fingerprint = hashlib.sha256()
    measured = hashlib.sha256()

    @settings(profiles.settings(profile, max_examples),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(case=cases(lane=dtype))
    def prop(case):
        fingerprint.update(case.description.encode() + b"\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vector = generate_vector(case)
        flags = set(vector["flags"])
        if vector["result"] != "valid" or flags & {"KNIFE_EDGE", "NONFINITE_STATE"}:
            result.discarded += 1
            assume(False)
        if runner.representability(vector, dtype):
            result.discarded += 1
            assume(False)
        outcome = runner.run_vector(adapter, vector, "<fuzz>", dtype, "cpu", mode, policy, entries)
        result.examples += 1
        measured.update(repr(outcome.worst_ratio).encode() + b"\n")
        result.statuses[outcome.status] = result.statuses.get(outcome.status, 0) + 1
        ratio = outcome.worst_ratio if outcome.worst_ratio < float("inf") else 1e300
        if outcome.status in ("pass", "fail") and outcome.worst_ratio >= result.worst_ratio:
            result.worst_ratio = outcome.worst_ratio
            per_kind = {k: round(max(v), 3) for k, v in outcome.curve.items() if v}
            result.worst_case = f"{case.description} | max normwise per tensor (eps): {per_kind}"
        if profile != "ci":
            # Not in the CI profile: target observations steer Hypothesis's generation
            # even without the target phase, and they are the adapter's last bits, which
            # differ between machines; CI must draw the same examples everywhere.
            target(min(ratio, 1e300), label="error / budget")
        if outcome.status == "fail":
            seen_failure.update(case=case, vector=vector, outcome=outcome)
        assert outcome.status != "fail", f"{case.id}: {outcome.reason}"

    start = time.perf_counter()
    try:
        prop()
    except AssertionError as exc:
        case, vector = seen_failure["case"], seen_failure["vector"]
        result.failure = {"message": str(exc), "case": case_to_json(case, vector, command, f"profile {profile}")}
        if write_failures:
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{case.id.split('/')[-1]}.json"
            from conformance import vectorfile as vf
            vf.write_atomic(path, json.dumps(result.failure["case"], indent=1, sort_keys=True) + "\n")
            result.failure["file"] = str(path)
    finally:
        result.seconds = time.perf_counter() - start
        result.draws = fingerprint.hexdigest()[:16]
        result.measured = measured.hexdigest()[:16]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Differential fuzzing of an adapter against the reference.")
    parser.add_argument("--adapter", default="reference")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--mode", default="teacher", choices=("teacher", "trajectory"))
    parser.add_argument("--profile", default=os.environ.get("ADAFACTOR_HYPOTHESIS_PROFILE", "ci"),
                        choices=("ci", "dev", "campaign"))
    parser.add_argument("--max-examples", type=int)
    parser.add_argument("--json", type=Path, help="write the statistics here")
    args = parser.parse_args(argv)
    r = fuzz(args.adapter, args.dtype, args.profile, args.mode, args.max_examples)
    print(f"{r.adapter} {r.dtype} {args.mode} profile={r.profile}: {r.examples} examples "
          f"({r.discarded} discarded) in {r.seconds:.1f} s = {r.examples_per_second:.1f} examples/s; "
          f"statuses {r.statuses}; worst error/budget {r.worst_ratio:.3g}; draws {r.draws}")
    print(f"worst example: {r.worst_case}")
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in r.__dict__.items()} | {
            "examples_per_second": r.examples_per_second}, default=str, indent=1) + "\n")
    if r.failure:
        print(f"FAILURE: {r.failure['message']}")
        if "file" in r.failure:
            print(f"written to {r.failure['file']}; promote it with: python -m tools.promote {r.failure['file']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
