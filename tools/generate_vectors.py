"""Generate the golden-vector corpus from tools/vector_cases.py.

    python -m tools.generate_vectors              # (re)write vectors/ (what `make vectors` runs)
    python -m tools.generate_vectors --check      # regenerate in memory, compare with vectors/
    python -m tools.generate_vectors --out DIR    # write somewhere else

Output is byte-for-byte deterministic: no dates, sorted keys, per-case seeds derived
from the case id. Every file is written through a temporary file and a rename, and
MANIFEST.json (sha256 and vector count of every file) is written last, so an interrupted
run leaves either the old corpus or one whose manifest check fails loudly. An interrupted
write (Ctrl-C, SIGTERM) removes its temporary file; one left by a killed run
(``.NAME.json.XXXXXXXX.tmp``) is removed by the next run once it is a minute old, and
``--check`` (and the freshness test) reports any as a difference.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from tabulate import tabulate

import reference
from conformance import replay
from conformance import vectorfile as vf
from reference import Adafactor, schedules
from tools import dialect_cases, dialect_vectors
from tools.gradient_flags import special_value_flags
from tools.vector_cases import CASES, Case

GENERATOR_VERSION = "1.0.0"
DIALECT = "keras"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "vectors"
KNIFE_EDGE = 2.0**-40  # margins below this can flip with float64 rounding differences
#: A temporary file older than this is litter of a killed run; a younger one may belong to a
#: writer that is still running (another `make vectors` in the same checkout), so it is left.
STALE_AFTER_S = 60.0

NOTES = {
    "SCALAR": "has a 0-D variable (unfactored)",
    "VECTOR": "has a 1-D variable (unfactored)",
    "FACTORED": "has a variable with >= 2 axes (factored over its last two axes)",
    "SIZE_ONE_AXIS": "has a factored variable with a size-1 axis among its last two: Keras still factors it",
    "BATCH_AXES": "has a variable with >= 3 axes: the leading axes are batch axes of the factored statistics",
    "MULTI_VARIABLE": "the optimizer holds several variables",
    "LONG_REDUCTION": "a reduction spans >= 8 elements: NumPy's pairwise summation differs from a sequential "
                      "sum there, so a correct port may differ in the last bits",
    "LONG_RUN": ">= 30 steps",
    "RELATIVE_STEP_BINDS": "at some step 1/sqrt(t) < learning_rate, so the relative step sets rho",
    "EPSILON_2_BINDS": "at some step RMS(x) <= epsilon_2, so epsilon_2 sets the step size",
    "EPSILON_1_SIGNIFICANT": "some g*g < 2**20 * epsilon_1: epsilon_1 changes the result visibly; in float16 "
                             "epsilon_1 (1e-30) rounds to 0, so float16 lanes may differ",
    "CLIPPING_ACTIVE": "at some step RMS(U) > clip_threshold, so the update is clipped",
    "KNIFE_EDGE": "some min/max/clip input pair is within 2**-40 (relative) of switching without being "
                  "exactly tied: a port may take the other arm; min, max and the clip are continuous, so "
                  "values differ only by rounding",
    "NONE_GRADIENT": "some gradient is None (Keras skips that variable)",
    "WEIGHT_DECAY": "weight_decay is not None: the decay runs (reading the learning rate), even at 0.0",
    "WEIGHT_DECAY_EXCLUSION": "exclude_from_weight_decay is used",
    "WEIGHT_DECAY_NOTHING_TO_DECAY": "weight_decay is set (not None) but at some update step every variable "
                                     "with a gradient is excluded from it: nothing decays",
    "CLIPNORM": "clipnorm is set",
    "CLIPVALUE": "clipvalue is set",
    "GLOBAL_CLIPNORM": "global_clipnorm is set",
    "EMA": "use_ema is on",
    "EMA_OVERWRITE": "ema_overwrite_frequency is set",
    "EMA_OVERWRITE_FREQUENCY_ZERO": "use_ema with ema_overwrite_frequency=0, which Keras's truthiness test "
                                    "treats as off (base_optimizer.py:600)",
    "LOSS_SCALE": "loss_scale_factor is set",
    "ACCUMULATION": "gradient_accumulation_steps is set",
    "SCHEDULE": "the learning rate is a Keras schedule (Keras on TensorFlow computes it in float32)",
    "CALLABLE_LEARNING_RATE": "the learning rate is a zero-argument callable, recorded per call",
    "NONFINITE_GRADIENT": "a gradient holds NaN or +-inf (result acceptable: a port that guards them may differ)",
    "SQUARE_OVERFLOW": "a finite gradient whose square overflows to inf (result acceptable)",
    "SUBNORMAL_GRADIENT": "gradients are subnormal; accelerators that flush them differ (result acceptable)",
    "NONFINITE_STATE": "the expected state holds NaN or inf",
    "INVALID_CONFIGURATION": "the configuration must be rejected at construction",
    "INVALID_STEP": "a step must be rejected",
    "REGRESSION": "promoted from a failing fuzz example (tools/promote.py); the description says what found it",
    "DEFAULT_ARGUMENTS": "the config lists only the arguments given: an argument it leaves out is not passed to "
                         "the constructor, so the implementation's own default is used and graded",
    "SQUARE_UNDERFLOW": "a nonzero finite gradient whose square underflows to 0 in float64 (a zero norm for "
                        "clipnorm/global_clipnorm); lanes that cannot hold the gradient skip the vector",
}

# Keras's defaults, for the coverage table (an argument counts where it differs).
DEFAULTS = {name: p.default for name, p in __import__("inspect").signature(Adafactor).parameters.items()
            if name != "kwargs"}


def seed_for(case_id: str) -> int:
    return zlib.crc32(case_id.encode("utf-8"))


# ----------------------------------------------------------------------------- inputs
def draw_inputs(case: Case, rng: np.random.Generator):
    if case.inputs is not None:
        initial, grads = case.inputs
        return ([np.array(x, dtype=np.float64) for x in initial],
                [[None if g is None else np.array(g, dtype=np.float64) for g in row] for row in grads])
    initial = []
    for _, shape in case.variables:
        if case.init == "zeros":
            initial.append(np.zeros(shape))
        elif case.init == "ones":
            initial.append(np.ones(shape))
        elif case.init == "small":
            initial.append(np.asarray(rng.normal(size=shape) * 0.01))
        elif case.init == "tiny":
            initial.append(np.asarray(rng.normal(size=shape) * 1e-5))
        elif case.init == "below_epsilon_2":  # RMS(x) ~ 5.6e-4 < 1e-3, every |x| normal in float16
            initial.append(np.asarray(rng.choice((-1.0, 1.0), size=shape) * rng.uniform(1e-4, 9e-4, size=shape)))
        else:
            initial.append(np.asarray(rng.normal(size=shape), dtype=np.float64))
    grads = []
    for step in range(case.steps):
        row = []
        for index, (_, shape) in enumerate(case.variables):
            if (step, index) in case.none_at:
                row.append(None)
            elif getattr(case.grads, "needs_var", False):
                row.append(np.asarray(case.grads(rng, step, shape, var=index), dtype=np.float64))
            else:
                row.append(np.asarray(case.grads(rng, step, shape), dtype=np.float64))
        grads.append(row)
    return initial, grads


class CallRecorder:
    """Wraps a callable learning rate and logs every value it returns."""

    def __init__(self, fn):
        self.fn, self.log = fn, []

    def __call__(self):
        value = float(self.fn())
        self.log.append(value)
        return value


def _config_json(case: Case, opt: Adafactor | None) -> dict:
    if opt is None:  # invalid at construction: record the arguments as given
        return vf.as_jsonable(dict(case.config))
    config = opt.get_config()
    if case.make_learning_rate is not None:
        config["learning_rate"] = {"callable": "recorded"}
    if case.given_only:  # only the arguments given: a replay leaves the others to the implementation
        config = {key: value for key, value in config.items()
                  if key in case.config or (key == "learning_rate" and case.make_learning_rate is not None)}
    return vf.as_jsonable(config)


def _margin(a: float, b: float):
    m = abs(a - b) / max(abs(a), abs(b)) if max(abs(a), abs(b)) > 0 else 0.0
    return float(f"{m:.3g}") if np.isfinite(m) else None


# ----------------------------------------------------------------------------- one vector
def generate_vector(case: Case) -> dict:
    seed = seed_for(case.id)
    rng = np.random.default_rng(seed)
    initial, grads = draw_inputs(case, rng)
    names = [name for name, _ in case.variables]
    vector = {
        "id": case.id,
        "description": case.description,
        "seed": seed,
        "variables": [{"name": n, "initial": vf.encode_array(x)} for n, x in zip(names, initial)],
        "exclude_from_weight_decay": case.exclude,
        "error": case.error,
    }
    if case.dialect != DIALECT:
        return dialect_vectors.generate_dialect_vector(case, vector, initial, grads, _expect_error)
    flags = set(case.flags)

    config = dict(case.config)
    recorder = None
    if case.make_learning_rate is not None:
        recorder = CallRecorder(case.make_learning_rate())
        config["learning_rate"] = recorder
    try:
        opt = Adafactor(**config)
    except Exception as exc:  # an invalid vector must fail exactly as declared
        _expect_error(case, exc, "construction")
        vector.update(config=_config_json(case, None), steps=[], result="invalid",
                      flags=sorted(flags | {"INVALID_CONFIGURATION"}))
        return vector
    if case.error and case.error["at"] == "construction":
        raise AssertionError(f"case {case.id}: expected {case.error['class']} at construction")

    variables = [x.copy() for x in initial]
    replay.build(opt, variables, names, case.exclude)
    steps = []

    def on_step(index, expected):
        calls = recorder.log[len(_calls_so_far):] if recorder else []
        _calls_so_far.extend(calls)
        record = opt.last_step
        step = {"grads": [vf.encode_optional(g) for g in grads[index]],
                "expected": replay.encode_expected(expected),
                "margins": _margins(opt, record, expected)}
        if recorder is not None:
            step["learning_rate_calls"] = [vf.float_to_bits(v) for v in calls]
        steps.append(step)
        _derive_step_flags(flags, opt, record, grads[index], expected)

    _calls_so_far: list = []
    try:
        replay.run_steps(opt, variables, grads, on_step)
    except Exception as exc:
        _expect_error(case, exc, "step")
        failing = len(steps)
        assert failing == case.error.get("step"), f"case {case.id}: failed at step {failing}"
        steps.append({"grads": [vf.encode_optional(g) for g in grads[failing]], "expected": None,
                      "margins": None})
        flags.add("INVALID_STEP")
    else:
        if case.error:
            raise AssertionError(f"case {case.id}: expected {case.error['class']} during the steps")

    _derive_case_flags(flags, case, opt, grads)
    vector.update(config=_config_json(case, opt), steps=steps, flags=sorted(flags))
    if case.error:
        vector["result"] = "invalid"
    elif flags & {"NONFINITE_GRADIENT", "SQUARE_OVERFLOW", "SUBNORMAL_GRADIENT"}:
        vector["result"] = "acceptable"
    else:
        vector["result"] = "valid"
    return vector


def _expect_error(case: Case, exc: Exception, at: str) -> None:
    error = case.error
    if not error or error["at"] != at or type(exc).__name__ != error["class"] \
            or error["message_contains"] not in str(exc):
        raise AssertionError(f"case {case.id}: unexpected {type(exc).__name__} at {at}: {exc}") from exc


def _margins(opt: Adafactor, record, expected) -> dict | None:
    traces = record.traces
    live = [t for t in traces if t is not None]
    if not live:
        return None
    t0 = live[0]
    return {
        "relative_step": _margin(t0.learning_rate, t0.inv_sqrt_step),
        "epsilon_2": [None if t is None else _margin(t.rms_x, opt.epsilon_2) for t in traces],
        "clip_threshold": [None if t is None else _margin(t.rms_u / opt.clip_threshold, 1.0)
                           for t in traces],
    }


def _derive_step_flags(flags: set, opt: Adafactor, record, grads, expected) -> None:
    active = [i for i, t in enumerate(record.traces) if t is not None]
    if opt.weight_decay is not None and active and not any(opt._use_weight_decay(i) for i in active):
        flags.add("WEIGHT_DECAY_NOTHING_TO_DECAY")
    for t in record.traces:
        if t is None:
            continue
        if t.inv_sqrt_step < t.learning_rate:
            flags.add("RELATIVE_STEP_BINDS")
        if t.rms_x <= opt.epsilon_2:  # a tie counts: epsilon_2 is then (one of) the max's arms
            flags.add("EPSILON_2_BINDS")
        if t.clip_denominator > 1.0:
            flags.add("CLIPPING_ACTIVE")
        pairs = [(t.learning_rate, t.inv_sqrt_step), (t.rms_x, opt.epsilon_2),
                 (t.rms_u / opt.clip_threshold, 1.0)]
        for a, b in pairs:
            m = _margin(a, b)
            if m is not None and m < KNIFE_EDGE and a != b:
                flags.add("KNIFE_EDGE")
    for key in ("variables", "v", "r", "c", "average", "accumulator"):
        for a in expected[key] or []:
            if a is not None and not np.all(np.isfinite(a)):
                flags.add("NONFINITE_STATE")


def _derive_case_flags(flags: set, case: Case, opt: Adafactor, grads) -> None:
    shapes = [shape for _, shape in case.variables]
    for shape in shapes:
        if len(shape) == 0:
            flags.add("SCALAR")
        elif len(shape) == 1:
            flags.add("VECTOR")
        else:
            flags.add("FACTORED")
            if 1 in shape[-2:]:
                flags.add("SIZE_ONE_AXIS")
            if len(shape) >= 3:
                flags.add("BATCH_AXES")
        size = int(np.prod(shape, dtype=np.int64))
        if size >= 8 or (len(shape) >= 1 and shape[-1] >= 8):
            flags.add("LONG_REDUCTION")
    if len(shapes) > 1:
        flags.add("MULTI_VARIABLE")
        if sum(int(np.prod(s, dtype=np.int64)) for s in shapes) >= 8 and opt.global_clipnorm:
            flags.add("LONG_REDUCTION")
    if case.steps >= 30:
        flags.add("LONG_RUN")
    if case.none_at or any(g is None for row in grads for g in row):
        # none_at for generated inputs; explicit inputs (fuzzed and regression cases) carry
        # their None gradients in the arrays themselves.
        flags.add("NONE_GRADIENT")
    for g in (g for row in grads for g in row if g is not None):
        flags |= special_value_flags(g)
        with np.errstate(under="ignore"):
            if np.any(np.isfinite(g) & (g != 0) & (g * g == 0)):
                flags.add("SQUARE_UNDERFLOW")
        if np.any(np.isfinite(g) & (g * g < 2.0**20 * opt.epsilon_1)):
            flags.add("EPSILON_1_SIGNIFICANT")
    config_flags = {
        "weight_decay": "WEIGHT_DECAY", "clipnorm": "CLIPNORM", "clipvalue": "CLIPVALUE",
        "global_clipnorm": "GLOBAL_CLIPNORM", "use_ema": "EMA", "ema_overwrite_frequency": "EMA_OVERWRITE",
        "loss_scale_factor": "LOSS_SCALE", "gradient_accumulation_steps": "ACCUMULATION",
    }
    for key, flag in config_flags.items():
        if opt.get_config().get(key):
            flags.add(flag)
    if opt.weight_decay is not None:
        # Keras tests `weight_decay is None` (base_optimizer.py:952), not truthiness: 0.0
        # runs the decay, and reads the learning rate (a callable is called).
        flags.add("WEIGHT_DECAY")
    if case.exclude:
        flags.add("WEIGHT_DECAY_EXCLUSION")
    if opt.use_ema and opt.ema_overwrite_frequency == 0:
        flags.add("EMA_OVERWRITE_FREQUENCY_ZERO")
    if isinstance(opt._learning_rate, schedules.LearningRateSchedule):
        flags.add("SCHEDULE")
    if case.make_learning_rate is not None:
        flags.add("CALLABLE_LEARNING_RATE")
    if case.given_only:
        flags.add("DEFAULT_ARGUMENTS")


# ----------------------------------------------------------------------------- corpus
def all_cases() -> list:
    """The Keras cases (tools/vector_cases.py) and the dialect cases (tools/dialect_cases/)."""
    return list(CASES) + dialect_cases.load()[0]


def generate_corpus(cases=None) -> dict[str, dict]:
    """{relative path: document} for every vector file."""
    cases = all_cases() if cases is None else cases
    notes = {**NOTES, **dialect_vectors.NOTES, **dialect_cases.load()[1]}
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate case ids in tools/vector_cases.py: {duplicates}")
    by_file: dict[str, list] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in cases:
            by_file.setdefault((case.dialect, case.file), []).append(generate_vector(case))
    provenance = {
        "generator": "tools/generate_vectors.py",
        "generator_version": GENERATOR_VERSION,
        "reference_version": reference.__version__,
        "spec": f"keras {reference.KERAS_VERSION}",
        "numpy": np.__version__,
    }
    documents = {}
    for (dialect, name), vectors in sorted(by_file.items()):
        used = sorted({f for v in vectors for f in v["flags"]})
        if dialect == DIALECT:
            what, spec = "keras.optimizers.Adafactor", provenance["spec"]
        else:
            from reference.dialects import optimizer_class

            cls = optimizer_class(dialect)
            what = getattr(cls, "framework", dialect)
            spec = getattr(cls, "spec", f"reference/dialects/{dialect}.py")
        missing = [flag for flag in used if flag not in notes]
        if missing:
            raise ValueError(f"{dialect}/{name}.json: flags without a note: {missing}")
        documents[f"{dialect}/{name}.json"] = {
            "format": vf.FORMAT_NAME,
            "schema_version": vf.SCHEMA_VERSION,
            "dialect": dialect,
            "description": f"Golden vectors for {what}: {name.replace('_', ' ')}",
            "provenance": {**provenance, "spec": spec},
            "notes": {flag: notes[flag] for flag in used},
            "vectors": vectors,
        }
    return documents


def render(documents: dict[str, dict]) -> dict[str, str]:
    """{relative path: file text} including MANIFEST.json."""
    texts = {path: vf.dumps(doc) for path, doc in documents.items()}
    manifest = {
        "format": vf.FORMAT_NAME,
        "schema_version": vf.SCHEMA_VERSION,
        "total_vectors": sum(len(d["vectors"]) for d in documents.values()),
        "files": {path: {"sha256": _sha256(text), "vectors": len(documents[path]["vectors"])}
                  for path, text in texts.items()},
    }
    texts[vf.MANIFEST_NAME] = vf.dumps(manifest)
    return texts


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def coverage_table(documents: dict[str, dict]) -> str:
    dialect_counts = Counter(d["dialect"] for d in documents.values() for _ in d["vectors"])
    per_dialect = tabulate(sorted(dialect_counts.items()), headers=["dialect", "vectors"], tablefmt="github")
    vectors = [v for d in documents.values() if d["dialect"] == DIALECT for v in d["vectors"]]
    rows = []
    for name, default in DEFAULTS.items():
        count = sum(v["config"].get(name, default) != default for v in vectors)
        rows.append([name, repr(default), count])
    arguments = tabulate(rows, headers=["argument", "Keras default", "vectors with another value"],
                         tablefmt="github")
    flag_counts = Counter(f for v in vectors for f in v["flags"])
    results = Counter(v["result"] for v in vectors)
    flags = tabulate(sorted(flag_counts.items()), headers=["flag", "vectors"], tablefmt="github")
    summary = ", ".join(f"{results[r]} {r}" for r in ("valid", "acceptable", "invalid"))
    return (f"{per_dialect}\n\nKeras (the spec): {len(vectors)} vectors: {summary}.\n\n{arguments}\n\n{flags}\n"
            f"\nThe dialects' own coverage: see tools/dialect_cases/<dialect>.py and each file's notes.\n")


COVERAGE_BEGIN = "<!-- coverage: generated by tools/generate_vectors.py, do not edit -->"
COVERAGE_END = "<!-- end of coverage -->"


def readme_with_coverage(readme: str, documents: dict[str, dict]) -> str:
    if COVERAGE_BEGIN not in readme or COVERAGE_END not in readme:
        raise ValueError("vectors/README.md lacks the coverage markers")
    head, rest = readme.split(COVERAGE_BEGIN, 1)
    _, tail = rest.split(COVERAGE_END, 1)
    return f"{head}{COVERAGE_BEGIN}\n{coverage_table(documents)}{COVERAGE_END}{tail}"


def build_outputs(readme_source: Path) -> dict[str, str]:
    documents = generate_corpus()
    texts = render(documents)
    texts["README.md"] = readme_with_coverage(readme_source.read_text(encoding="utf-8"), documents)
    return texts


def write_outputs(texts: dict[str, str], out: Path) -> None:
    remove_stale_temporary_files(out)
    with _sigterm_as_exit():
        for path, text in texts.items():
            if path != vf.MANIFEST_NAME:
                vf.write_atomic(out / path, text)
        vf.write_atomic(out / vf.MANIFEST_NAME, texts[vf.MANIFEST_NAME])  # last


def remove_stale_temporary_files(out: Path, now: float | None = None) -> list[Path]:
    """Remove the temporary files killed runs left in ``out`` (older than STALE_AFTER_S);
    say which, and name any younger one that is left alone. Returns the removed paths."""
    now = time.time() if now is None else now
    removed = []
    for tmp in vf.stale_temporary_files(out):
        try:
            age = now - tmp.stat().st_mtime
        except FileNotFoundError:  # its writer just renamed or removed it
            continue
        if age < STALE_AFTER_S:
            print(f"note: {tmp} is {age:.0f} s old: another writer may be running; left in place",
                  file=sys.stderr)
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
        print(f"removed {tmp}: a temporary file left by an interrupted run", file=sys.stderr)
    return removed


@contextlib.contextmanager
def _sigterm_as_exit():
    """While files are written, SIGTERM raises SystemExit (as Ctrl-C raises
    KeyboardInterrupt), so write_atomic removes its temporary file before the process ends."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def compare_with(texts: dict[str, str], directory: Path) -> list[str]:
    """Human-readable differences between freshly generated texts and a directory."""
    import json

    problems = []
    for path, text in sorted(texts.items()):
        target = directory / path
        old = target.read_text(encoding="utf-8") if target.exists() else None
        if old == text:
            continue
        if old is None:
            problems.append(f"{path}: missing (run `make vectors`)")
            continue
        if path.endswith(".json") and path != vf.MANIFEST_NAME:
            try:
                old_vectors = {v["id"]: v for v in json.loads(old)["vectors"]}
            except (ValueError, KeyError, TypeError):
                problems.append(f"{path}: unreadable committed file")
                continue
            new_vectors = {v["id"]: v for v in json.loads(text)["vectors"]}
            changed = sorted(i for i in new_vectors if i in old_vectors and new_vectors[i] != old_vectors[i])
            added = sorted(set(new_vectors) - set(old_vectors))
            removed = sorted(set(old_vectors) - set(new_vectors))
            detail = "; ".join(f"{label}: {', '.join(ids)}" for label, ids in
                               (("changed", changed), ("added", added), ("removed", removed)) if ids)
            problems.append(f"{path}: differs ({detail or 'file-level fields'})")
        else:
            problems.append(f"{path}: differs")
    known = set(texts)
    for stray in sorted(p for p in directory.rglob("*.json") if "schema" not in p.parts):
        relative = stray.relative_to(directory).as_posix()
        if relative not in known:
            problems.append(f"{relative}: not produced by the generator (stale file?)")
    for tmp in vf.stale_temporary_files(directory):
        problems.append(f"{tmp.relative_to(directory).as_posix()}: temporary file left by an interrupted "
                        "write (`make vectors` removes it)")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: vectors/)")
    parser.add_argument("--check", action="store_true",
                        help="regenerate in memory and compare with --out; exit 1 on any difference")
    args = parser.parse_args(argv)
    readme_source = args.out / "README.md" if (args.out / "README.md").exists() else DEFAULT_OUT / "README.md"
    texts = build_outputs(readme_source)
    if args.check:
        problems = compare_with(texts, args.out)
        for p in problems:
            print(p)
        print("vectors are fresh" if not problems else f"{len(problems)} difference(s): run `make vectors`")
        return 1 if problems else 0
    write_outputs(texts, args.out)
    total = sum(1 for p in texts if p.endswith(".json")) - 1
    print(f"wrote {total} vector files and {vf.MANIFEST_NAME} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
