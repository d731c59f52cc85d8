"""Differential fuzzing: the reference against an adapter, on configurations and inputs
Hypothesis draws, under the lane's tolerance policy.

    python -m conformance.fuzz --adapter keras-tensorflow --dtype float32 [--profile ci|dev|campaign]
                               [--mode teacher|trajectory|both]

Each example is a drawn ``conformance.generator.Case``; the generator turns it into a golden
vector with the reference (exactly as for the committed corpus), decoded once into a
``conformance.vector.Vector``, and the runner grades the adapter on it. The examples are split into quotas (``profiles.quotas``): most are built to
reach one deep regime each (``strategies.REGIMES``: accumulation with a binding clip or a
schedule, an EMA overwrite, relative_step=False above 1/sqrt(t), weight decay while
epsilon_2 binds, runs past step 8, a last axis longer than 64), the rest are drawn freely;
``regimes.reached`` checks on the reference which regimes each example really reaches, and
every run prints the counts (also as Hypothesis events, ``regime: NAME``). The CI profile
grades teacher-forced; ``dev`` and ``campaign`` draw teacher-forced or free-running
(trajectory) per example and reach further (``profiles.DEPTH``). Outside the CI profile
``hypothesis.target`` climbs toward the largest error/budget ratio, and each adapter and
dtype has its own example database (``profiles.database_path``).

A failing example is written to ``out/fuzz/<id>.json``; ``python -m tools.promote FILE``
turns it into a regression vector of the corpus.

Draws are discarded (``assume``) where the float64 reference is itself ill-conditioned, so
that no tolerance has to be loosened:
  * the expected state is not finite (overflow, NaN): there is no accuracy to compare;
  * a min/max/clip pair sits on a knife edge (flag KNIFE_EDGE): a correct port may take the
    other arm, and the normwise metric of the update then measures the branch, not the port;
  * the lane cannot represent the inputs (overflow/underflow in float32 and below:
    ``applicability.skip_reason``, the gate's own rules).

Only ``pass``, ``model`` (passed under a named deviation model) and ``acceptable`` are
passes; ``fail`` fails the run; every other status (``xfail``, ``xpass``, ``skip``, ...) is
counted and printed but checks nothing. A run in which no example was checked (every draw
discarded, every example skipped or excused) exits 3 and prints NOTHING CHECKED.
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

from conformance import applicability, runner
from conformance.tolerance import Policy

OUT = Path("out") / "fuzz"
#: Statuses that are passes: graded and within budget (``model``: within the budget of a
#: named deviation model, ``acceptable``: an acceptable vector). ``fail`` is checked too.
#: Any other status (xfail, xpass, skip, or one a later runner adds) checks nothing.
PASSING = ("pass", "model", "acceptable")
CHECKED = PASSING + ("fail",)
EXIT_OK, EXIT_FAILURE, EXIT_NOTHING_CHECKED = 0, 1, 3


@dataclass
class FuzzResult:
    adapter: str
    dtype: str
    profile: str
    mode: str = "teacher"  # teacher | trajectory | both (drawn per example)
    examples: int = 0  # drawn and run through the adapter (not discarded)
    discarded: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this process (all threads): comparable on a busy machine
    failure: dict | None = None
    worst_ratio: float = 0.0
    worst_case: str = ""  # description of the example with the largest error/budget
    statuses: dict = field(default_factory=dict)
    modes: dict = field(default_factory=dict)  # examples per grading mode
    quotas: dict = field(default_factory=dict)  # examples asked of each regime (``profiles.quotas``)
    regimes: dict = field(default_factory=dict)  # checked examples that reach each regime
    regimes_run: dict = field(default_factory=dict)  # examples (any status) that reach each regime
    built: dict = field(default_factory=dict)  # examples run of each quota
    on_target: dict = field(default_factory=dict)  # checked examples of each regime's quota that reach it
    configurations: int = 0  # distinct configurations among the examples
    max_steps: int = 0  # the longest example
    one_step: int = 0  # examples of a single step
    max_last_axis: int = 0  # the longest last axis of any example's variables
    draws: str = ""  # sha256 of every drawn example's description, in order: the sequence's fingerprint
    measured: str = ""  # sha256 of every example's error/budget ratio, in order: what the adapter measured
    error: str = ""  # Hypothesis gave up (e.g. Unsatisfiable: every draw discarded)
    events: dict = field(default_factory=dict)  # Hypothesis's own event counts (generate phase, valid examples)
    statistics: str = ""  # Hypothesis's statistics report, one block per quota

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0

    @property
    def checked(self) -> int:
        """Examples whose own verdict was graded: pass, model, acceptable or fail."""
        return sum(n for status, n in self.statuses.items() if status in CHECKED)

    @property
    def passed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status in PASSING)

    @property
    def not_passing(self) -> dict:
        """Examples that ran but are no pass: xfail, xpass, skip, ... (fail excluded)."""
        return {s: n for s, n in sorted(self.statuses.items()) if s not in CHECKED}

    @property
    def nothing_checked(self) -> bool:
        return self.failure is None and self.checked == 0

    @property
    def exit_code(self) -> int:
        if self.failure:
            return EXIT_FAILURE
        return EXIT_NOTHING_CHECKED if self.nothing_checked else EXIT_OK

    def to_json(self) -> dict:
        return {**self.__dict__, "checked": self.checked, "passed": self.passed,
                "not_passing": self.not_passing, "nothing_checked": self.nothing_checked,
                "examples_per_second": self.examples_per_second}

    def summary(self) -> str:
        """What every run prints: counts, statuses, regimes, the verdict line."""
        from conformance.fuzz.regimes import format_counts

        lines = [
            f"{self.adapter} {self.dtype} {self.mode} profile={self.profile}: {self.examples} examples "
            f"({self.discarded} discarded, {self.configurations} distinct configurations, {self.one_step} of "
            f"one step, up to {self.max_steps} steps, last axis up to {self.max_last_axis}) in {self.seconds:.1f} s = "
            f"{self.examples_per_second:.1f} examples/s; draws {self.draws}",
            f"statuses {dict(sorted(self.statuses.items()))}; checked {self.checked} (passed {self.passed}); "
            f"not a pass: {self.not_passing or 'none'}; modes {dict(sorted(self.modes.items()))}",
            f"regimes reached (checked/run): {format_counts(self.regimes, self.regimes_run)}",
            f"examples built for a regime that reach it checked (of those built): "
            f"{format_counts(self.on_target, self.built)}",
            f"worst error/budget {self.worst_ratio:.3g}: {self.worst_case or '-'}",
        ]
        if self.error:
            lines.append(f"Hypothesis: {self.error}")
        if self.failure:
            lines.append(f"FAILURE: {self.failure['message']}")
        elif self.nothing_checked:
            lines.append(f"NOTHING CHECKED: no example was graded ({self.examples} run, {self.discarded} "
                         f"discarded, statuses {dict(sorted(self.statuses.items()))})")
        return "\n".join(lines)


def case_to_json(case, vector, command: str, seed_note: str) -> dict:
    """A drawn case as language-neutral JSON (config as Keras config, arrays as bits; a
    callable learning rate as the values it returned, in call order)."""
    from conformance import vectorfile as vf
    from reference import schedules

    config = {}
    for key, value in case.config.items():
        config[key] = schedules.serialize(value) if isinstance(value, schedules.LearningRateSchedule) else value
    if case.make_learning_rate is not None:
        config["learning_rate"] = {"callable": "recorded",
                                   "calls": [vf.float_to_bits(v) for v in vector.learning_rate_calls]}
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


def fuzz(adapter_name: str, dtype: str = "float32", profile: str = "ci", mode: str | None = None,
         max_examples: int | None = None, write_failures: bool = True, out: Path = OUT,
         database_root: Path | str = ".hypothesis", regimes=None, shrink: bool = True) -> FuzzResult:
    """Run the differential property; return statistics and the first failure (if any).

    ``mode``: ``teacher``, ``trajectory`` or ``both`` (drawn per example); default the
    profile's (``profiles.MODES``). ``max_examples``: the total, split into regime quotas
    (``profiles.quotas``). ``database_root``: where ``dev`` and ``campaign`` keep their
    example databases, one per adapter, dtype and regime. ``regimes``: only these quotas
    (names of ``strategies.REGIMES`` or ``strategies.FREE``). ``shrink=False``: report the
    first failing example as drawn (faster; the meta tests use it)."""
    from hypothesis import HealthCheck, assume, event, given, settings, target
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    from conformance import expectations
    from conformance.adapters import resolve
    from conformance.fuzz import profiles
    from conformance.fuzz.regimes import reached
    from conformance.fuzz.strategies import fuzz_cases, value_source
    from conformance.generator import generate_vector
    from conformance.vector import as_vector

    mode = mode or profiles.MODES[profile]
    if mode not in ("teacher", "trajectory", "both"):
        raise ValueError(f"unknown mode {mode!r}: use teacher, trajectory or both")
    modes = ("teacher", "trajectory") if mode == "both" else (mode,)
    adapter = resolve(adapter_name)
    policy = Policy.load()
    # Known deviations stay xfail here too, from the adapter's expectation file (keras-jax-sharded
    # declares keras-jax's), as in the gate (conformance/cli.py).
    entries = expectations.for_adapter(adapter.expectations or adapter.name)
    result = FuzzResult(adapter.name, dtype, profile, mode)
    quotas = profiles.quotas(profile, max_examples)
    if regimes is not None:
        quotas = {name: n for name, n in quotas.items() if name in set(regimes)}
    result.quotas = dict(quotas)
    depth = profiles.DEPTH[profile]
    seen_failure: dict = {}
    fingerprint = hashlib.sha256()
    measured = hashlib.sha256()
    configurations = set()

    def command(example_mode: str) -> str:
        return (f"python -m conformance.fuzz --adapter {adapter_name} --dtype {dtype} --mode {example_mode} "
                f"--profile {profile}")

    def property_for(regime: str, n: int):
        @settings(profiles.settings(profile, n, database=profiles.database_path(
                      profile, adapter_name, dtype, regime, database_root), shrink=shrink),
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large, HealthCheck.large_base_example])
        @given(case=fuzz_cases(lane=dtype, depth=depth, regime=regime),
               example_mode=st.sampled_from(modes) if len(modes) > 1 else st.just(modes[0]))
        def prop(case, example_mode):
            fingerprint.update(case.description.encode() + (b"" if len(modes) == 1 else example_mode.encode())
                               + b"\n")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vector = as_vector(generate_vector(case))
            if vector.result != "valid" or set(vector.flags) & {"KNIFE_EDGE", "NONFINITE_STATE"}:
                result.discarded += 1
                assume(False)
            if applicability.skip_reason(vector, dtype):
                result.discarded += 1
                assume(False)
            outcome = runner.run_vector(adapter, vector, "<fuzz>", dtype, "cpu", example_mode, policy, entries)
            result.examples += 1
            result.modes[example_mode] = result.modes.get(example_mode, 0) + 1
            configurations.add(value_source(case.config) + repr(case.make_learning_rate))
            result.max_steps = max(result.max_steps, case.steps)
            result.one_step += case.steps == 1
            result.max_last_axis = max([result.max_last_axis] + [s[-1] for _, s in case.variables if len(s)])
            measured.update(repr(outcome.worst_ratio).encode() + b"\n")
            result.statuses[outcome.status] = result.statuses.get(outcome.status, 0) + 1
            event(f"status: {outcome.status}")
            result.built[regime] = result.built.get(regime, 0) + 1
            hits = reached(case)
            if regime in hits and outcome.status in CHECKED:
                result.on_target[regime] = result.on_target.get(regime, 0) + 1
            for name in sorted(hits):
                event(f"regime: {name}")
                result.regimes_run[name] = result.regimes_run.get(name, 0) + 1
                if outcome.status in CHECKED:
                    result.regimes[name] = result.regimes.get(name, 0) + 1
            ratio = outcome.worst_ratio if outcome.worst_ratio < float("inf") else 1e300
            if outcome.status in ("pass", "model", "fail") and outcome.worst_ratio >= result.worst_ratio:
                result.worst_ratio = outcome.worst_ratio
                per_kind = {k: round(max(v), 3) for k, v in outcome.curve.items() if v}
                result.worst_case = (f"{case.description} [{example_mode}] | max normwise per tensor (eps): "
                                     f"{per_kind}")
            if profile != "ci":
                # Not in the CI profile: target observations steer Hypothesis's generation
                # even without the target phase, and they are the adapter's last bits, which
                # differ between machines; CI must draw the same examples everywhere.
                target(min(ratio, 1e300), label="error / budget")
            if outcome.status == "fail":
                seen_failure.update(case=case, vector=vector, outcome=outcome, mode=example_mode)
            assert outcome.status != "fail", f"{case.id} [{example_mode}]: {outcome.reason}"

        return prop

    def run_quota(regime: str, n: int) -> None:
        """One quota, with Hypothesis's statistics (its events included) collected."""
        collected = []
        try:
            from hypothesis.statistics import collector, describe_statistics
        except ImportError:  # pragma: no cover - a Hypothesis without the hook: no events
            collector = None
        try:
            if collector is None:  # pragma: no cover
                property_for(regime, n)()
            else:
                with collector.with_value(collected.append):
                    property_for(regime, n)()
        finally:
            for stats in collected:
                result.statistics += f"quota {regime} ({n} examples):\n{describe_statistics(stats)}\n"
                for case in stats.get("generate-phase", {}).get("test-cases", []):
                    if case.get("status") == "valid":
                        for name in case.get("events", []):
                            result.events[name] = result.events.get(name, 0) + 1

    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        for regime, n in quotas.items():
            if n <= 0:
                continue
            try:
                run_quota(regime, n)
            except Unsatisfiable as exc:  # every draw of this quota discarded: counted below
                result.error += f"{regime}: {str(exc).splitlines()[0]} "
    except AssertionError as exc:
        if not seen_failure:
            raise
        case, vector = seen_failure["case"], seen_failure["vector"]
        result.failure = {"message": str(exc), "mode": seen_failure["mode"],
                          "case": case_to_json(case, vector, command(seen_failure["mode"]), f"profile {profile}")}
        if write_failures:
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{case.id.split('/')[-1]}.json"
            from conformance import vectorfile as vf
            vf.write_atomic(path, json.dumps(result.failure["case"], indent=1, sort_keys=True) + "\n")
            result.failure["file"] = str(path)
    finally:
        result.seconds = time.perf_counter() - start
        result.cpu_seconds = time.process_time() - cpu_start
        result.draws = fingerprint.hexdigest()[:16]
        result.measured = measured.hexdigest()[:16]
        result.configurations = len(configurations)
        result.error = result.error.strip()
    return result


def main(argv=None) -> int:
    from conformance.fuzz import profiles

    parser = argparse.ArgumentParser(description="Differential fuzzing of an adapter against the reference.")
    parser.add_argument("--adapter", default="reference")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--mode", choices=("teacher", "trajectory", "both"),
                        help="how examples are graded (default: the profile's; dev and campaign draw both)")
    parser.add_argument("--profile", default=os.environ.get("ADAFACTOR_HYPOTHESIS_PROFILE", "ci"),
                        choices=tuple(profiles.EXAMPLES))
    parser.add_argument("--max-examples", type=int, help="in all, split into the regime quotas")
    parser.add_argument("--json", type=Path, help="write the statistics here")
    parser.add_argument("--hypothesis-statistics", action="store_true",
                        help="also print Hypothesis's own statistics per quota (its events: regimes, statuses, ...)")
    args = parser.parse_args(argv)
    r = fuzz(args.adapter, args.dtype, args.profile, args.mode, args.max_examples)
    if args.hypothesis_statistics:
        print(r.statistics)
    print(r.summary())
    if args.json:
        args.json.write_text(json.dumps(r.to_json(), default=str, indent=1) + "\n")
    if r.failure and "file" in r.failure:
        print(f"written to {r.failure['file']}; promote it with: python -m tools.promote {r.failure['file']}")
    return r.exit_code


if __name__ == "__main__":
    sys.exit(main())
