"""The results-file protocol (issue 14, item 5; conformance/RESULTS_FILE.md): how ports in
other languages are graded.

* Version 2: several lanes (dialect, dtype, mode) in one file, several files in one run,
  one report and one verdict; version 1 files still grade as before.
* Error entries: v2 grades the class (by name only), the step and the message; v1 the
  class and step only.
* ``learning_rate_calls`` is required in v2 where the learning rate is a recorded callable;
  ``momentum`` is graded like every adapter's.
* Malformed files exit 2 with one line naming the file, lane, vector id, step and field,
  never a traceback (many cases, through ``cli.main``; one real process).
* The JSON Schemas (conformance/schemas/) accept the example files and agree with the
  loader on the malformed ones (what the schema cannot say is listed and checked apart).

The files are written from the reference's own replays (``runner.replay_states``) over a
small selection of the real corpus, so every test runs in-process in about a second.
"""

import copy
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conformance import cli, runner
from conformance import vectorfile as vf
from conformance.adapters import results_file as rf
from conformance.adapters.base import numpy_dtype
from conformance.adapters.reference import ReferenceAdapter
from conformance.applicability import skip_reason
from tests import helpers
from tests.helpers import VECTORS, gate

V = "regression/float32-update-envelope"  # valid, 2 steps, one (2, 3, 3) variable
INV = "invalid/learning_rate_int"  # raises at construction
STEP_INV = "invalid/all_gradients_none"  # raises at step index 1
CALL = "schedules/callable_counter"  # a recorded callable learning rate
MOM = "optax/arguments/momentum/0.9_float32"  # momentum kept in float32
SELECT = ("regression/", "invalid/", "torch/invalid/", CALL, MOM)
#: The lanes of the base file, in order.
LANES = (("keras", "float32", "trajectory"), ("keras", "float64", "teacher"), ("torch", "float32", "trajectory"),
         ("optax", "float32", "trajectory"))


# ----------------------------------------------------------------------------- writing files
def _array(a):
    return None if a is None else vf.encode_array(np.asarray(a).astype(np.float64))


def _state(s) -> dict:
    out = {"iterations": int(s.iterations), "r": None, "c": None, "v": None}
    for kind in s.kinds():
        out[kind.value] = [_array(a) for a in s.get(kind)]
    if s.learning_rate_calls is not None:
        out["learning_rate_calls"] = int(s.learning_rate_calls)
    for key, value in (s.flags or {}).items():
        out[key] = bool(value)
    return out


def _error_entry(adapter, vector, dtype) -> dict:
    """What the reference raises on an invalid vector, as a v2 error entry."""
    try:
        session = adapter.create(vector, dtype, "cpu")
    except Exception as exc:  # noqa: BLE001
        return {"error": type(exc).__name__, "message": str(exc)}
    for k, step in enumerate(vector.steps):
        try:
            session.step([None if g is None else g.astype(numpy_dtype(dtype)) for g in step.grads])
        except Exception as exc:  # noqa: BLE001
            return {"error": type(exc).__name__, "message": str(exc), "step": k}
    raise AssertionError(f"{vector.id}: the reference raised nothing")


@functools.lru_cache(maxsize=None)
def _lane(dialect, dtype, mode) -> str:
    adapter = ReferenceAdapter()
    vectors = {}
    for _, vector in runner.select(helpers.corpus(), SELECT):
        if vector.dialect != dialect or skip_reason(vector, dtype):
            continue
        if vector.result == "invalid":
            vectors[vector.id] = _error_entry(adapter, vector, dtype)
            continue
        run = runner.replay_states(adapter, vector, vector.path, dtype, "cpu", mode, vector.initial_state,
                                   vector.goldens)
        entry = {"steps": [_state(s) for s in run.actual]}
        if mode == "trajectory":
            entry["initial"] = _state(run.built)
        vectors[vector.id] = entry
    return json.dumps({"dialect": dialect, "dtype": dtype, "mode": mode, "vectors": vectors})


def v2(lanes=LANES) -> dict:
    """A conforming version-2 file (a fresh copy)."""
    return {"format": rf.RESULTS_FORMAT, "schema_version": 2, "implementation": "reference (test port)",
            "device": "cpu", "lanes": [json.loads(_lane(*lane)) for lane in lanes]}


def v1(dtype="float32", mode="trajectory") -> dict:
    """A conforming version-1 file of the Keras vectors (class-only error entries)."""
    lane = json.loads(_lane("keras", dtype, mode))
    for entry in lane["vectors"].values():
        if "error" in entry:
            entry.pop("message")
            entry.setdefault("step", None)
        for state in entry.get("steps", []):
            state.pop("learning_rate_calls", None)  # v1: optional everywhere
    return {"format": rf.RESULTS_FORMAT, "schema_version": 1, "implementation": "reference (test port, v1)",
            "dtype": dtype, "mode": mode, "device": "cpu", "vectors": lane["vectors"]}


def grade(tmp_path, *files, extra=(), name="results{}.json"):
    """``python -m conformance grade`` in-process over ``files`` (dicts, or text)."""
    args = ["grade", "--vectors-dir", str(VECTORS)]
    for pattern in SELECT:
        args += ["--vectors", pattern]
    for i, data in enumerate(files):
        path = tmp_path / name.format(i or "")
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        args += ["--results", str(path)]
    return cli.main([*args, *map(str, extra)])


# ----------------------------------------------------------------------------- conforming files
def test_a_version_2_file_grades_every_lane_in_one_report(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert grade(tmp_path, v2(), extra=["--json", out]) == cli.EXIT_OK, capsys.readouterr()
    text = capsys.readouterr().out
    assert "CONFORMS" in text and "reference (test port)" in text
    report = json.loads(out.read_text())
    lanes = {(lane["adapter"], lane["dtype"], lane["mode"]) for lane in report["lanes"]}
    assert lanes == {("results:results.json", "float32", "trajectory"), ("results:results.json", "float64", "teacher"),
                     ("results:results.json[torch]", "float32", "trajectory"),
                     ("results:results.json[optax]", "float32", "trajectory")}
    graded = {o["id"] for lane in report["lanes"] for o in lane["outcomes"] if o["status"] == "pass"}
    assert {V, INV, STEP_INV, CALL, MOM, "torch/invalid/lr_negative/construction"} <= graded


def test_several_files_one_verdict(tmp_path, capsys):
    """v1 and v2 files together: every lane in one report; one failing lane fails the run;
    the same lane in two files is an error."""
    first = v2(LANES[1:])
    second = v1()  # keras float32 trajectory, the lane the v2 file leaves out
    assert grade(tmp_path, first, second) == cli.EXIT_OK, capsys.readouterr()
    bits = second["vectors"][V]["steps"][1]["variables"][0]["bits"]
    bits[0] = vf.float_to_bits(float(np.float32(vf.bits_to_float(bits[0])) * np.float32(1 + 2**-10)))
    assert grade(tmp_path, first, second) == cli.EXIT_NONCONFORMING
    out = capsys.readouterr().out
    assert f"FAIL results:results1.json float32 trajectory: {V}" in out and "DOES NOT CONFORM" in out
    assert grade(tmp_path, v2(LANES[:1]), v1()) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "results1.json: duplicate lane: " in err and "results.json: lane 0 (keras float32 trajectory) grades " \
        "the same keras float32 trajectory lane on cpu" in err, err


def test_a_lane_that_lacks_vectors_fails_them_unless_allow_partial(tmp_path, capsys):
    data = v2(LANES[:1])
    del data["lanes"][0]["vectors"][V]
    assert grade(tmp_path, data) == cli.EXIT_NONCONFORMING
    assert f"{V}" in capsys.readouterr().out
    assert grade(tmp_path, data, extra=["--allow-partial"]) == cli.EXIT_OK


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("change,v2_code,v1_code,says", [
    ({}, 0, 0, None),
    ({"message": "learning rate must be a float"}, 1, 0, "lacks 'learning_rate'"),
    ({"error": "TypeError"}, 1, 1, "raised TypeError"),
    ({"error": "Exception"}, 1, 1, "raised Exception"),  # a base class's name is not the class
    ({"error": "ValueErrorSubclass"}, 1, 1, "raised ValueErrorSubclass"),
    ({"step": 0}, 1, 1, None),  # the vector raises at construction
], ids=["as-reported", "message", "class", "base-class-name", "other-name", "step"])
def test_error_entries(tmp_path, capsys, change, v2_code, v1_code, says):
    """v2: the class name must equal the vector's error class, the step match and the
    message contain message_contains; v1 files carry no message, so only class and step."""
    data = v2(LANES[:1])
    entry = data["lanes"][0]["vectors"][INV]
    entry.update(change)
    if "step" in change:  # a construction vector has no steps: step 0 is out of range
        assert grade(tmp_path, data) == cli.EXIT_ERROR
        assert f"vector '{INV}': field 'step' 0: the vector has no steps" in capsys.readouterr().err
        return
    assert grade(tmp_path, data) == v2_code
    out = capsys.readouterr().out
    if says:
        assert INV in out and says in out, out
    old = v1()
    old["vectors"][INV].update({k: v for k, v in change.items() if k != "message"})
    assert grade(tmp_path, old) == v1_code


def test_a_reported_class_matches_by_its_name_only():
    """The stand-in exception of a reported error derives from PortError and Exception; those
    names must not match a vector's error class (the port named neither)."""
    from conformance.grading import error_problems
    from conformance.vector import ExpectedError

    raised = rf._port_error("KeyError", "boom")
    assert error_problems(ExpectedError("KeyError", "boom", "construction"), raised) == []
    for base in ("Exception", "PortError", "BaseException", "LookupError"):
        assert error_problems(ExpectedError(base, "boom", "construction"), raised), base


def test_an_error_at_the_wrong_step_fails(tmp_path, capsys):
    data = v2(LANES[:1])
    entry = data["lanes"][0]["vectors"][STEP_INV]
    assert entry["step"] == 1
    entry["step"] = 0
    assert grade(tmp_path, data) == cli.EXIT_NONCONFORMING
    assert "raised at step 0, expected at step 1" in capsys.readouterr().out
    del entry["step"]  # at construction
    assert grade(tmp_path, data) == cli.EXIT_NONCONFORMING
    assert "raised at construction, expected at step" in capsys.readouterr().out


# ----------------------------------------------------------------------------- calls, momentum
def test_learning_rate_calls_is_required_in_v2_where_the_rate_is_a_recorded_callable(tmp_path, capsys):
    data = v2(LANES[:1])
    steps = data["lanes"][0]["vectors"][CALL]["steps"]
    vector = next(v for _, v in runner.select(helpers.corpus(), [CALL]))
    calls = [len(step.learning_rate_calls) for step in vector.steps]
    assert [s["learning_rate_calls"] for s in steps] == list(np.cumsum(calls))  # cumulative, not per step
    steps[3]["learning_rate_calls"] += 1
    assert grade(tmp_path, data) == cli.EXIT_NONCONFORMING
    assert "learning_rate_calls" in capsys.readouterr().out
    del steps[3]["learning_rate_calls"]
    assert grade(tmp_path, data) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert f"lane 0 (keras float32 trajectory): vector '{CALL}' step 4: field 'learning_rate_calls' missing" in err
    # Version 1 as before: a state without it is graded without it.
    old = v1()
    assert "learning_rate_calls" not in old["vectors"][CALL]["steps"][3]
    assert grade(tmp_path, old) == cli.EXIT_OK


def test_momentum_is_graded(tmp_path, capsys):
    data = v2(LANES[3:])
    state = data["lanes"][0]["vectors"][MOM]["steps"][4]
    bits = state["momentum"][0]["bits"]
    bits[0] = vf.float_to_bits(float(np.float32(vf.bits_to_float(bits[0])) * np.float32(1.01)))
    assert grade(tmp_path, data) == cli.EXIT_NONCONFORMING
    assert "momentum" in capsys.readouterr().out
    del state["momentum"]
    assert grade(tmp_path, data) == cli.EXIT_NONCONFORMING
    assert "missing from the implementation's state" in capsys.readouterr().out


# ----------------------------------------------------------------------------- malformed files
def _lane0(d):
    return d["lanes"][0]


def _vec(d, vector_id=V, lane=0):
    return d["lanes"][lane]["vectors"][vector_id]


def _set(path_fn, key, value):
    def tamper(d):
        path_fn(d)[key] = value
    return tamper


def _del(path_fn, key):
    def tamper(d):
        del path_fn(d)[key]
    return tamper


def _step(n, vector_id=V):
    return lambda d: _vec(d, vector_id)["steps"][n - 1]


def _duplicate_lane(d):
    d["lanes"].insert(1, copy.deepcopy(d["lanes"][0]))


def _reshape(d):
    _step(1)(d)["variables"][0]["shape"] = [18]


def _not_float32(d):
    bits = _step(2)(d)["variables"][0]["bits"]
    bits[0] = vf.float_to_bits(vf.bits_to_float(bits[0]) * (1 + 2**-40))


def _short_bits(d):
    _step(1)(d)["variables"][0]["bits"].pop()


L0 = "lane 0 (keras float32 trajectory)"
#: (id, tamper, what the message must say, kind). kind: "structure" (the JSON Schema and
#: load_results refuse it), "beyond-schema" (load_results refuses what the schema cannot
#: say), "corpus" (only the check against the corpus refuses it: schema and load_results
#: accept it). Each message also names the file.
MALFORMED = [
    ("unknown-top-field", lambda d: d.update(lane=[]),
     ["field 'lane' is not a field of a version-2 results file"], "structure"),
    ("no-implementation", _del(lambda d: d, "implementation"), ["field 'implementation' missing"], "structure"),
    ("implementation-number", _set(lambda d: d, "implementation", 5),
     ["field 'implementation' must be a non-empty string"], "structure"),
    ("implementation-blank", _set(lambda d: d, "implementation", "  "),
     ["field 'implementation' must be a non-empty string"], "structure"),
    ("device", _set(lambda d: d, "device", "tpu"), ["field 'device': 'tpu' is unknown"], "structure"),
    ("no-device", _del(lambda d: d, "device"), ["field 'device' missing"], "structure"),
    ("lanes-object", _set(lambda d: d, "lanes", {}), ["field 'lanes' must be a non-empty list"], "structure"),
    ("lanes-empty", _set(lambda d: d, "lanes", []), ["field 'lanes' must be a non-empty list of lanes, not an empty"],
     "structure"),
    ("lane-string", lambda d: d["lanes"].append("float32"), ["lane 1: a lane must be an object, not a string"],
     "structure"),
    ("lane-dtype", _set(_lane0, "dtype", "float8"), ["lane 0: field 'dtype': 'float8' is unknown"], "structure"),
    ("lane-mode-missing", _del(_lane0, "mode"), ["lane 0: field 'mode' missing"], "structure"),
    ("lane-dialect", _set(_lane0, "dialect", "jax"), ["lane 0: field 'dialect': 'jax' is unknown"], "structure"),
    ("lane-dialect-null", _set(_lane0, "dialect", None), ["lane 0: field 'dialect': None is unknown"], "structure"),
    ("lane-unknown-field", _set(_lane0, "vector", {}), ["lane 0: field 'vector' is not a field of a lane"],
     "structure"),
    ("lane-vectors-list", _set(_lane0, "vectors", []), [f"{L0}: field 'vectors' must be an object"], "structure"),
    ("duplicate-lane", _duplicate_lane,
     ["lane 1: duplicate lane: lane 0 is also keras float32 trajectory"], "beyond-schema"),
    ("entry-list", lambda d: _lane0(d)["vectors"].update({V: []}), [f"{L0}: vector '{V}': must be an object"],
     "structure"),
    ("entry-unknown-field", _set(_vec, "stpes", []), [f"vector '{V}': field 'stpes' is not a field of a vector's"],
     "structure"),
    ("steps-object", _set(_vec, "steps", {}), [f"vector '{V}': 'steps' must be a list"], "structure"),
    ("state-number", lambda d: _vec(d)["steps"].__setitem__(1, 3),
     [f"{L0}: vector '{V}' step 2: a state must be an object"], "structure"),
    ("state-missing-r", _del(_step(1), "r"), [f"vector '{V}' step 1: field 'r' missing"], "structure"),
    ("iterations-string", _set(_step(1), "iterations", "1"),
     [f"vector '{V}' step 1: field 'iterations' must be an integer"], "structure"),
    ("iterations-negative", _set(_step(1), "iterations", -1),
     [f"vector '{V}' step 1: field 'iterations' must be an integer >= 0"], "structure"),
    ("iterations-float", _set(_step(1), "iterations", 1.0),  # JSON Schema: 1.0 is an integer
     [f"vector '{V}' step 1: field 'iterations' must be an integer"], "beyond-schema"),
    ("calls-string", _set(_step(2), "learning_rate_calls", "3"),
     [f"vector '{V}' step 2: field 'learning_rate_calls' must be an integer"], "structure"),
    ("calls-null", _set(_step(2), "learning_rate_calls", None),
     [f"vector '{V}' step 2: field 'learning_rate_calls' must be an integer"], "structure"),
    ("flag-string", _set(_step(1), "is_update_step", "yes"),
     [f"vector '{V}' step 1: field 'is_update_step' must be a boolean"], "structure"),
    ("state-unknown-field", _set(_step(1), "momentun", None),
     [f"vector '{V}' step 1: field 'momentun' is not a field of a state"], "structure"),
    ("variables-object", _set(_step(1), "variables", {}),
     [f"vector '{V}' step 1: field 'variables' must be a list of arrays"], "structure"),
    ("array-without-bits", lambda d: _step(1)(d)["variables"][0].pop("bits"),
     [f"vector '{V}' step 1: field variables[0]: an array is"], "structure"),
    ("array-shape-string", _set(lambda d: _step(1)(d)["variables"][0], "shape", "5x3"),
     [f"vector '{V}' step 1: field variables[0]: 'shape' must be a list of integers"], "structure"),
    ("bits-not-hex", lambda d: _step(2)(d)["v"][0]["bits"].__setitem__(0, "zz" * 8),
     [f"vector '{V}' step 2: field v[0]: bits[0] = 'zzzzzzzzzzzzzzzz' is not 16 hex digits"], "structure"),
    ("bits-number", lambda d: _step(2)(d)["v"][0]["bits"].__setitem__(0, 1.5),
     [f"vector '{V}' step 2: field v[0]: bits[0] = 1.5 is not 16 hex digits"], "structure"),
    ("bits-count", _short_bits, [f"vector '{V}' step 1: field variables[0]: shape [2, 3, 3] holds 18 values, "
                                 f"'bits' has 17"], "beyond-schema"),
    ("error-without-message", _del(lambda d: _vec(d, INV), "message"),
     [f"vector '{INV}': field 'message' missing"], "structure"),
    ("message-without-error", _set(_vec, "message", "oops"),
     [f"vector '{V}': field 'message' without 'error'"], "structure"),
    ("error-number", _set(lambda d: _vec(d, INV), "error", 5),
     [f"vector '{INV}': 'error' must be the name of an error class"], "structure"),
    ("error-step-string", _set(lambda d: _vec(d, STEP_INV), "step", "1"),
     [f"vector '{STEP_INV}': field 'step' must be the 0-based index"], "structure"),
    ("error-step-null", _set(lambda d: _vec(d, STEP_INV), "step", None),
     [f"vector '{STEP_INV}': field 'step' is null"], "structure"),
    ("unknown-id", lambda d: _lane0(d)["vectors"].update({"no/such/vector": {"steps": []}}),
     [f"{L0}: vector id 'no/such/vector' is not in the corpus: unknown vector id"], "corpus"),
    ("other-dialect", lambda d: _lane0(d)["vectors"].update(
        {"torch/invalid/lr_negative/construction": {"error": "ValueError", "message": "x"}}),
     [f"{L0}: vector 'torch/invalid/lr_negative/construction' is a torch vector, but the lane's dialect is keras"],
     "corpus"),
    ("extra-step", lambda d: _vec(d)["steps"].append(_vec(d)["steps"][-1]),
     [f"{L0}: vector '{V}' step 3: extra steps (the file holds 3, the vector has 2 steps)"], "corpus"),
    ("error-step-range", _set(lambda d: _vec(d, STEP_INV), "step", 5),
     [f"{L0}: vector '{STEP_INV}': field 'step' 5 is not a step index of the vector (0 to 1)"], "corpus"),
    ("shape", _reshape, [f"{L0}: vector '{V}' step 1: field variables[0] has shape [18], the vector's has [2, 3, 3]"],
     "corpus"),
    ("array-count", lambda d: _step(2)(d)["v"].append(None),
     [f"{L0}: vector '{V}' step 2: field 'v' holds 2 arrays for the vector's 1 variables"], "corpus"),
    ("not-float32", _not_float32, [f"{L0}: vector '{V}' step 2: field variables[0] element [0, 0, 0] holds",
                                   "which is not a float32 value"], "corpus"),
    ("calls-missing", _del(_step(1, CALL), "learning_rate_calls"),
     [f"{L0}: vector '{CALL}' step 1: field 'learning_rate_calls' missing"], "corpus"),
]


def _one_line_error(capsys, path) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and str(path) in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_file_exits_2_with_one_line_naming_where(tmp_path, capsys, case):
    _, tamper, says, _ = case
    data = v2(LANES[:1])
    tamper(data)
    assert grade(tmp_path, data) == cli.EXIT_ERROR
    line = _one_line_error(capsys, tmp_path / "results.json")
    for text in says:
        assert text in line, line


@pytest.mark.parametrize("text,says", [
    ("{", "invalid JSON at line 1"),
    ('{"format": "adafactor-conformance-results", "schema_version": 2, "lanes": [', "invalid JSON at line 1"),
    ('{"format": "adafactor-conformance-results", "schema_version": 2, "x": NaN}', "bare NaN token"),
    ("[]", "not a version-1 results file, nor a version-2 one"),
    ('{"format": "adafactor-conformance-results", "schema_version": 3}', "schema_version=3"),
    ('{"format": "adafactor-conformance-results", "schema_version": true}', "schema_version=True"),
    ('{"format": "something else", "schema_version": 2}', "format='something else'"),
    ('{"format": "adafactor-conformance-results", "schema_version": 1, "mode": "teacher", "vectors": {}}',
     "missing field 'dtype'"),
    ('{"format": "adafactor-conformance-results", "schema_version": 1, "dtype": "float32", "mode": "teacher", '
     '"vectors": {"regression/float32-update-envelope": {"steps": [{"iterations": 1}]}}}',
     "vector 'regression/float32-update-envelope' step 1: field 'variables' missing"),
], ids=["bad-json", "truncated", "bare-nan", "not-an-object", "version-3", "version-bool", "format", "v1-no-dtype",
        "v1-state"])
def test_unparseable_and_unknown_files_exit_2(tmp_path, capsys, text, says):
    assert grade(tmp_path, text) == cli.EXIT_ERROR
    assert says in _one_line_error(capsys, tmp_path / "results.json")


def test_unreadable_files_exit_2(tmp_path, capsys):
    missing = tmp_path / "nowhere.json"
    assert cli.main(["grade", "--vectors-dir", str(VECTORS), "--results", str(missing)]) == cli.EXIT_ERROR
    assert "cannot read" in _one_line_error(capsys, missing)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    assert cli.main(["grade", "--vectors-dir", str(VECTORS), "--results", str(binary)]) == cli.EXIT_ERROR
    assert "not UTF-8" in _one_line_error(capsys, binary)


@pytest.mark.subprocess
def test_the_real_cli_prints_one_line_and_no_traceback(tmp_path):
    data = v2(LANES[:1])
    _set(_step(1), "iterations", "one")(data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    done = gate("grade", "--results", path, "--vectors-dir", VECTORS, "--vectors", "regression/")
    assert done.returncode == cli.EXIT_ERROR, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{path}: {L0}: vector '{V}' step 1: field 'iterations' must be an integer" in done.stderr


# ----------------------------------------------------------------------------- the JSON Schemas
jsonschema = pytest.importorskip("jsonschema")


@functools.lru_cache(maxsize=None)
def _validator(version):
    schema = json.loads(rf.schema_path(version).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _schema_valid(data) -> bool:
    """Whether the schema of the file's version accepts it (a file of no known version: neither)."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version not in (1, 2) or isinstance(version, bool):
        return any(_validator(v).is_valid(data) for v in (1, 2)) and False
    return _validator(version).is_valid(data)


def _loads(tmp_path, data) -> bool:
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(data))
    try:
        rf.load_results(path)
    except rf.ResultsFileError:
        return False
    return True


def _documented_example() -> dict:
    text = (Path(rf.__file__).resolve().parent.parent / "RESULTS_FILE.md").read_text()
    section = text.split("## A minimal example", 1)[1]
    return json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))


def test_the_schemas_ship_in_the_package_and_accept_the_example_files(tmp_path, capsys):
    for version in rf.VERSIONS:
        assert rf.schema_path(version).is_file()
    example = _documented_example()
    for data in (v2(), v1(), v1("float64", "teacher"), example):
        assert _schema_valid(data), [e.message for e in _validator(data["schema_version"]).iter_errors(data)][:3]
        assert _loads(tmp_path, data)
    # The documented example grades (with --allow-partial: it holds two vectors).
    path = tmp_path / "example.json"
    path.write_text(json.dumps(example))
    code = cli.main(["grade", "--vectors-dir", str(VECTORS), "--results", str(path), "--allow-partial",
                     "--vectors", "regression/float32-beta2-decay-cancellation", "--vectors", "invalid/learning_rate_int"])
    assert code == cli.EXIT_OK, capsys.readouterr()


def test_the_schema_and_the_loader_agree_on_malformed_files(tmp_path):
    """Structural faults: both refuse. What a JSON Schema cannot say (bits per shape, 1.0 as
    an integer, lanes unique by dialect, dtype and mode): the schema accepts, the loader
    refuses. What needs the corpus: both accept; the gate refuses before grading (tested above)."""
    for name, tamper, _, kind in MALFORMED:
        data = v2(LANES[:1])
        tamper(data)
        schema, loader = _schema_valid(data), _loads(tmp_path, data)
        want = {"structure": (False, False), "beyond-schema": (True, False), "corpus": (True, True)}[kind]
        assert (schema, loader) == want, (name, kind, schema, loader)
    # Version 1: the same faults where v1 has them; its unknown fields are ignored by both.
    for name, tamper, loader_too in [
            ("v1-unknown-field", lambda d: d.update(extra=1), True),
            ("v1-error-step-string", lambda d: d["vectors"][STEP_INV].update(step="1"), False),
            ("v1-state-missing-v", lambda d: d["vectors"][V]["steps"][0].pop("v"), False),
            ("v1-bits", lambda d: d["vectors"][V]["steps"][0]["r"][0]["bits"].__setitem__(0, "x"), False),
            ("v1-device", lambda d: d.update(device=None), False),
            ("v1-implementation", lambda d: d.update(implementation=3), False),
            ("v1-calls", lambda d: d["vectors"][V]["steps"][0].update(learning_rate_calls="2"), False)]:
        data = v1()
        tamper(data)
        assert (_schema_valid(data), _loads(tmp_path, data)) == (loader_too, loader_too), name


def test_the_schema_knows_every_dialect_of_the_corpus():
    """A new dialect (reference/dialects) must be a lane dialect of results files too."""
    import json

    from reference.dialects import DIALECTS

    from tests.helpers import REPO

    schema = json.loads((REPO / "conformance" / "schemas" / "results.v2.schema.json").read_text())
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "dialect" in node and isinstance(node["dialect"], dict) and "enum" in node["dialect"]:
                found.append(node["dialect"]["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert found and all(sorted(e) == sorted(DIALECTS) for e in found), (found, list(DIALECTS))
