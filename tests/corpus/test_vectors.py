"""The golden-vector corpus: fresh (regenerates to the same bytes), well-formed (JSON
Schema via the jsonschema library, flags defined, manifest sha256 and counts), loadable
with clear errors, and replayed by the reference at 0 ulp."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conformance import replay
from conformance import vectorfile as vf
from tests import helpers
from tests.helpers import VECTORS
from tools import generate_vectors as gen


@pytest.fixture(scope="module")
def validated_corpus():
    """The corpus, validated against the JSON Schema too (the gate trusts the manifest's
    sha256 for it: these tests are where the schema is checked)."""
    return vf.load_corpus(VECTORS, validate_schema=True)


# ----------------------------------------------------------------------------- freshness
def test_corpus_is_fresh():
    """Regenerating gives the committed bytes. On failure the message lists the changed
    vector ids. (Bit-exact for this NumPy and libm; see vectors/README.md.)"""
    problems = gen.compare_with(gen.build_outputs(VECTORS / "README.md"), VECTORS)
    assert not problems, "vectors/ is stale; run `make vectors`:\n" + "\n".join(problems)


def test_regeneration_is_byte_identical(tmp_path):
    shutil.copy(VECTORS / "README.md", tmp_path / "README.md")
    gen.main(["--out", str(tmp_path)])
    first = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    gen.main(["--out", str(tmp_path)])
    second = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert first == second
    assert not [p for p in tmp_path.rglob("*.tmp")], "temporary files left behind"


def test_freshness_check_names_changed_ids(tmp_path):
    shutil.copytree(VECTORS, tmp_path / "v")
    path = tmp_path / "v" / "keras" / "arguments.json"
    doc = json.loads(path.read_text())
    doc["vectors"][3]["steps"][0]["expected"]["variables"][0]["bits"][0] = "0000000000000000"
    path.write_text(vf.dumps(doc))
    problems = gen.compare_with(gen.build_outputs(VECTORS / "README.md"), tmp_path / "v")
    assert any(doc["vectors"][3]["id"] in p for p in problems), problems
    assert gen.main(["--check", "--out", str(tmp_path / "v")]) == 1


def test_generator_rejects_duplicate_ids():
    from tools.vector_cases import CASES

    with pytest.raises(ValueError, match="duplicate case ids"):
        gen.generate_corpus([CASES[0], CASES[0]])


# ----------------------------------------------------------------------------- lint
def test_schema_is_valid_json_schema():
    import jsonschema

    schema = json.loads(vf.SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_file_validates_and_matches_manifest(validated_corpus):
    corpus = validated_corpus
    manifest = vf.load_manifest(VECTORS)
    assert set(corpus) == set(manifest["files"])
    assert manifest["total_vectors"] == sum(len(d["vectors"]) for d in corpus.values())
    ids = [v["id"] for _, v in vf.iter_vectors(corpus)]
    assert len(ids) == len(set(ids)), "vector ids must be unique across the corpus"
    for relative, doc in corpus.items():
        for vector in doc["vectors"]:
            assert set(vector["flags"]) <= set(doc["notes"]), vector["id"]
            parts = vector["id"].split("/")
            # Keras ids are <file>/...; a dialect's are <dialect>/<file>/... in vectors/<dialect>/
            expected = parts[0] if doc["dialect"] == "keras" else f"{parts[0]}/{parts[1]}"
            assert expected == (Path(relative).stem if doc["dialect"] == "keras"
                                else f"{Path(relative).parent.name}/{Path(relative).stem}"), vector["id"]


def test_corpus_is_small():
    """Every process of the gate loads the whole corpus (schema version 2's initial states
    brought it to 8.2 MiB; the pytorch_optimizer, timm and peer-gap vectors of issue 15 to 9
    MiB: 379 vectors load in 1.4 s on the 2-core machine while it ran the scale tool). A vector
    too large for this belongs to the scale tool (tools/scale.py), not the corpus."""
    total = sum(p.stat().st_size for p in VECTORS.rglob("*.json"))
    assert total < 10 * 1024 * 1024, f"corpus is {total} bytes"


def test_every_argument_is_exercised():
    table = (VECTORS / "README.md").read_text()
    vectors = [v for _, v in helpers.corpus_vectors()]
    for name, default in gen.DEFAULTS.items():
        assert any(v["config"].get(name, default) != default for v in vectors if v["result"] != "invalid"), name
        assert f"| {name}" in table


# ----------------------------------------------------------------------------- loader errors
def _write(tmp_path, text, name="bad.json"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _good_text():
    return (VECTORS / "keras" / "invalid.json").read_text()


def test_loader_truncated_file(tmp_path):
    path = _write(tmp_path, _good_text()[:500])
    with pytest.raises(vf.VectorFormatError, match=r"bad\.json: invalid JSON.*truncated"):
        vf.load_file(path)


def test_loader_invalid_json(tmp_path):
    path = _write(tmp_path, "{not json")
    with pytest.raises(vf.VectorFormatError, match=r"bad\.json: invalid JSON at line 1"):
        vf.load_file(path)


def test_loader_unknown_schema_version(tmp_path):
    doc = json.loads(_good_text())
    doc["schema_version"] = 3
    path = _write(tmp_path, json.dumps(doc))
    with pytest.raises(vf.VectorFormatError, match=r"bad\.json: unknown schema_version 3"):
        vf.load_file(path)


def test_loader_refuses_the_old_version_naming_file_and_version(tmp_path):
    """A version-1 file (no initial state) is refused with the file, the version, what
    version 2 added and how to regenerate; so is a version-1 manifest."""
    doc = json.loads(_good_text())
    doc["schema_version"] = 1
    path = _write(tmp_path, json.dumps(doc))
    with pytest.raises(vf.VectorFormatError, match=r"bad\.json: schema_version 1 is an old version of this format "
                                                   r"\(version 2 adds each vector's initial_state.*make vectors"):
        vf.load_file(path)
    shutil.copytree(VECTORS, tmp_path / "v")
    manifest = json.loads((tmp_path / "v" / vf.MANIFEST_NAME).read_text())
    manifest["schema_version"] = 1
    (tmp_path / "v" / vf.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(vf.VectorFormatError, match=r"MANIFEST\.json: schema_version 1 is an old version"):
        vf.load_corpus(tmp_path / "v")


def test_loader_missing_field_names_vector(tmp_path):
    doc = json.loads(_good_text())
    victim = doc["vectors"][2]
    del victim["description"]
    path = _write(tmp_path, json.dumps(doc))
    with pytest.raises(vf.VectorFormatError) as info:
        vf.load_file(path)
    assert "bad.json" in str(info.value) and victim["id"] in str(info.value)
    assert "description" in str(info.value)


def test_loader_shape_disagrees_with_data(tmp_path):
    doc = json.loads((VECTORS / "keras" / "shapes.json").read_text())
    victim = doc["vectors"][1]
    victim["variables"][0]["initial"]["shape"] = [99]
    path = _write(tmp_path, json.dumps(doc))
    with pytest.raises(vf.VectorFormatError) as info:
        vf.load_file(path)
    assert victim["id"] in str(info.value) and "shape [99]" in str(info.value)


def test_loader_without_jsonschema_warns_once_and_still_checks(tmp_path, monkeypatch, capsys):
    """jsonschema is a test dependency: without it (a bare GPU image) vectors still load,
    with one warning, and the loader's own checks (array sizes, flags) still name the vector."""
    import sys

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema -> ImportError
    monkeypatch.setattr(vf, "_WARNED_NO_SCHEMA", False)
    assert vf.load_file(VECTORS / "keras" / "invalid.json")["vectors"]
    vf.load_file(VECTORS / "keras" / "shapes.json")
    assert capsys.readouterr().err.count("jsonschema is not installed") == 1
    doc = json.loads((VECTORS / "keras" / "shapes.json").read_text())
    victim = doc["vectors"][1]
    victim["variables"][0]["initial"]["shape"] = [99]
    with pytest.raises(vf.VectorFormatError) as info:
        vf.load_file(_write(tmp_path, json.dumps(doc)))
    assert victim["id"] in str(info.value) and "shape [99]" in str(info.value)


def test_loader_undefined_flag(tmp_path):
    doc = json.loads(_good_text())
    doc["vectors"][0]["flags"].append("NOT_A_FLAG")
    path = _write(tmp_path, json.dumps(doc))
    with pytest.raises(vf.VectorFormatError, match="NOT_A_FLAG"):
        vf.load_file(path)


def test_loader_sha256_mismatch(tmp_path):
    shutil.copytree(VECTORS, tmp_path / "v")
    target = tmp_path / "v" / "keras" / "invalid.json"
    target.write_text(target.read_text().replace("rejected at construction", "rejected at build", 1))
    with pytest.raises(vf.VectorFormatError, match=r"invalid\.json: sha256 .* does not match MANIFEST"):
        vf.load_corpus(tmp_path / "v")


def test_loader_count_mismatch(tmp_path):
    shutil.copytree(VECTORS, tmp_path / "v")
    manifest = json.loads((tmp_path / "v" / "MANIFEST.json").read_text())
    manifest["files"]["keras/invalid.json"]["vectors"] += 1
    (tmp_path / "v" / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(vf.VectorFormatError, match="MANIFEST.json says"):
        vf.load_corpus(tmp_path / "v")


def test_loader_missing_file(tmp_path):
    with pytest.raises(vf.VectorFormatError, match="cannot read"):
        vf.load_file(tmp_path / "absent.json")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    path.write_text("old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(vf.os, "replace", boom)
    with pytest.raises(OSError):
        vf.write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, OSError])
def test_atomic_write_removes_its_temporary_file_when_interrupted(tmp_path, monkeypatch, interrupt):
    """Ctrl-C (KeyboardInterrupt), SIGTERM under the generator (SystemExit) or an error while
    the text is written: the old file stays and no .NAME.json.XXXX.tmp is left."""
    path = tmp_path / "f.json"
    path.write_text("old")
    real_fdopen = vf.os.fdopen

    class Interrupted:
        def __init__(self, *args, **kwargs):
            self.handle = real_fdopen(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[:3])
            raise interrupt()

    monkeypatch.setattr(vf.os, "fdopen", Interrupted)
    with pytest.raises(interrupt):
        vf.write_atomic(path, "new text")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_generator_sigterm_raises_so_temporary_files_are_removed():
    """While the generator writes, SIGTERM becomes SystemExit (write_atomic's cleanup runs);
    the previous handler is restored afterwards."""
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        with gen._sigterm_as_exit():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
    assert signal.getsignal(signal.SIGTERM) == before


def _litter(directory, name, age_s):
    import os
    import time

    tmp = directory / name
    tmp.write_text("{half a fi")
    os.utime(tmp, (time.time() - age_s, time.time() - age_s))
    return tmp


def test_generator_removes_stale_temporary_files_and_reports_young_ones(tmp_path, capsys):
    (tmp_path / "keras").mkdir()
    stale = _litter(tmp_path / "keras", ".shapes.json.k2j4h1x0.tmp", 3600)
    manifest = _litter(tmp_path, ".MANIFEST.json.a1b2c3d4.tmp", 3600)
    young = _litter(tmp_path / "keras", ".arguments.json.zz99yy88.tmp", 1)
    keep = tmp_path / "keras" / "shapes.json"
    keep.write_text("{}")
    removed = gen.remove_stale_temporary_files(tmp_path)
    assert sorted(removed) == sorted([stale, manifest])
    assert not stale.exists() and not manifest.exists() and young.exists() and keep.exists()
    err = capsys.readouterr().err
    assert "removed" in err and str(stale) in err and "another writer may be running" in err


def test_freshness_check_reports_temporary_file_litter(tmp_path):
    """`--check` and the freshness test list a temporary file a killed run left behind (the
    texts compared are the directory's own, so the litter is the only difference)."""
    shutil.copytree(VECTORS, tmp_path / "v")
    texts = {p.relative_to(tmp_path / "v").as_posix(): p.read_text(encoding="utf-8")
             for p in (tmp_path / "v").rglob("*") if p.is_file() and "schema" not in p.parts}
    assert gen.compare_with(texts, tmp_path / "v") == []
    _litter(tmp_path / "v" / "keras", ".shapes.json.k2j4h1x0.tmp", 0)
    problems = gen.compare_with(texts, tmp_path / "v")
    assert problems == ["keras/.shapes.json.k2j4h1x0.tmp: temporary file left by an interrupted write "
                        "(`make vectors` removes it)"]


def test_corpus_has_no_temporary_file_litter():
    assert vf.stale_temporary_files(VECTORS) == [], "remove them or run `make vectors`"


def test_loader_refuses_duplicate_ids_across_files(tmp_path):
    shutil.copytree(VECTORS, tmp_path / "v")
    source = tmp_path / "v" / "keras" / "invalid.json"
    copy = tmp_path / "v" / "keras" / "invalid_copy.json"
    copy.write_text(source.read_text())
    manifest = json.loads((tmp_path / "v" / "MANIFEST.json").read_text())
    manifest["files"]["keras/invalid_copy.json"] = dict(manifest["files"]["keras/invalid.json"])
    manifest["total_vectors"] += manifest["files"]["keras/invalid.json"]["vectors"]
    (tmp_path / "v" / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(vf.VectorFormatError) as info:
        vf.load_corpus(tmp_path / "v", validate_schema=False)
    assert "invalid_copy.json" in str(info.value) and "keras/invalid.json" in str(info.value)
    assert "duplicate vector id" in str(info.value) and info.value.vector_id.startswith("invalid/")


def test_loader_refuses_a_vector_file_the_manifest_omits(tmp_path):
    shutil.copytree(VECTORS, tmp_path / "v")
    (tmp_path / "v" / "keras" / "forgotten.json").write_text((VECTORS / "keras" / "invalid.json").read_text())
    with pytest.raises(vf.VectorFormatError, match=r"forgotten\.json: a vector file that MANIFEST\.json does not list"):
        vf.load_corpus(tmp_path / "v", validate_schema=False)


def test_loader_validates_the_same_bytes_once_per_process(tmp_path, monkeypatch):
    """load_corpus trusts the manifest for the JSON Schema unless asked, runs the semantic
    checks on bytes it has not checked in this process, and a schema-less pass does not
    stand in for the schema."""
    small = ("keras/invalid.json", "keras/regression.json")  # a small corpus: the schema step is slow
    manifest = json.loads((VECTORS / "MANIFEST.json").read_text())
    manifest["files"] = {name: manifest["files"][name] for name in small}
    manifest["total_vectors"] = sum(entry["vectors"] for entry in manifest["files"].values())
    for name in small:
        (tmp_path / "v" / "keras").mkdir(parents=True, exist_ok=True)
        shutil.copy(VECTORS / name, tmp_path / "v" / name)
    (tmp_path / "v" / "MANIFEST.json").write_text(json.dumps(manifest))
    calls = {"validate": 0, "check_document": 0}
    real_validate, real_check = vf.validate, vf.check_document

    def counting(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(vf, "_VALIDATED", {})
    monkeypatch.setattr(vf, "validate", counting("validate", real_validate))
    monkeypatch.setattr(vf, "check_document", counting("check_document", real_check))
    files = len(small)
    vf.load_corpus(tmp_path / "v")  # the default: the manifest vouches for the schema
    assert calls == {"validate": 0, "check_document": files}
    vf.load_corpus(tmp_path / "v", validate_schema=False)
    assert calls == {"validate": 0, "check_document": files}
    vf.load_corpus(tmp_path / "v", validate_schema=True)  # the schema has not run on these bytes yet
    assert calls["validate"] == files
    vf.load_corpus(tmp_path / "v", validate_schema=True)
    assert calls["validate"] == files
    # other bytes are validated again: a damaged vector with a matching manifest is refused
    path = tmp_path / "v" / "keras" / "invalid.json"
    doc = json.loads(path.read_text())
    doc["vectors"][-1]["steps"][0]["grads"].pop()
    path.write_text(vf.dumps(doc))
    manifest["files"]["keras/invalid.json"]["sha256"] = vf.sha256_of(path)
    (tmp_path / "v" / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(vf.VectorFormatError, match="gradients for 2 variables"):
        vf.load_corpus(tmp_path / "v", validate_schema=False)


def test_float_encoding_is_exact_for_specials():
    values = np.array([0.0, -0.0, np.inf, -np.inf, 5e-324, 1.7976931348623157e308, 0.1])
    decoded = vf.decode_array(vf.encode_array(values))
    assert decoded.view(np.int64).tolist() == values.view(np.int64).tolist()
    assert np.isnan(vf.decode_array(vf.encode_array([np.nan]))[0])
    assert vf.float_to_bits(1.0) == "3ff0000000000000"


# ----------------------------------------------------------------------------- the Vector type
def _bits(a) -> list:
    return [vf.float_to_bits(x) for x in np.asarray(a, dtype=np.float64).ravel()]


def test_vectors_decode_every_field_of_the_json(corpus):
    """Each loaded Vector's typed fields say what its JSON says: names, shapes, error,
    initial state (variables from ``variables[i].initial``), every step's gradients,
    expected state, learning rate, step flags and the cumulative count of recorded calls."""
    from conformance.vector import Vector
    from reference.state import Kind

    for relative, vector in vf.iter_vectors(corpus):
        raw = vector.raw
        assert isinstance(vector, Vector) and vector.file == relative and vector.id == raw["id"]
        assert vector.dialect == corpus[relative]["dialect"] and vector["dialect"] == vector.dialect
        assert vector.names == tuple(v["name"] for v in raw["variables"])
        assert [_bits(x) for x in vector.initial] == [v["initial"]["bits"] for v in raw["variables"]]
        if raw["error"] is None:
            assert vector.error is None
        else:
            assert (vector.error.cls, vector.error.at, vector.error.message_contains, vector.error.step) == \
                (raw["error"]["class"], raw["error"]["at"], raw["error"]["message_contains"], raw["error"].get("step"))
        assert {str(k): str(d) for k, d in vector.state_dtypes.items()} == raw["state_dtypes"]
        start = vector.initial_state
        if raw["initial_state"] is None:
            assert start is None and vector.rms_floor is None
            continue
        assert vf.float_to_bits(vector.rms_floor) == raw["rms_floor"]
        assert start.variables is not None and all(a is b for a, b in zip(start.variables, vector.initial))
        for k in Kind:
            if k is not Kind.VARIABLES:
                recorded = raw["initial_state"].get(k.value)
                assert (start.get(k) is None) == (recorded is None), (vector.id, k)
                for a, e in zip(start.get(k) or [], recorded or []):
                    assert (a is None) == (e is None) and (a is None or _bits(a) == e["bits"]), (vector.id, k)
        calls = 0
        for step, raw_step in zip(vector.steps, raw["steps"], strict=True):
            assert [None if g is None else _bits(g) for g in step.grads] == \
                [None if g is None else g["bits"] for g in raw_step["grads"]]
            calls += len(raw_step.get("learning_rate_calls", []))
            assert [vf.float_to_bits(x) for x in step.learning_rate_calls] == raw_step.get("learning_rate_calls", [])
            e = raw_step["expected"]
            if e is None:
                assert step.expected is None
                continue
            state = step.expected
            assert (state.iterations, state.learning_rate_calls) == (e["iterations"], calls)
            assert state.flags == {"is_update_step": e["is_update_step"], "ema_overwritten": e["ema_overwritten"]}
            assert step.learning_rate == (None if e["learning_rate"] is None else vf.bits_to_float(e["learning_rate"]))
            for k in Kind:
                recorded = e.get(k.value)
                assert (state.get(k) is None) == (recorded is None), (vector.id, step.index, k)
                assert [None if a is None else _bits(a) for a in state.get(k) or []] == \
                    [None if a is None else a["bits"] for a in recorded or []], (vector.id, step.index, k)


def test_vector_arrays_are_decoded_once_and_read_only(corpus):
    """Every lane of a process shares one decoding: the arrays cannot be changed by mistake."""
    _, vector = vf.find(corpus, "shapes/defaults/tall")
    assert vector.steps is vector.steps and vector.initial_state is vector.initial_state
    for array in (vector.initial[0], vector.initial_state.v[0], vector.steps[0].grads[0],
                  vector.steps[0].expected.r[0]):
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0.0
    copy = vector.initial_state.copy()
    copy.v[0][...] = 1.0  # a copy is the caller's own
    assert not vector.initial_state.v[0].any()


def test_vectors_pickle_and_copy_as_their_json(corpus):
    """A pickled or deep-copied Vector is rebuilt from a copy of its JSON: the same fields,
    its own arrays, decoded again and read-only (another process, or a test that damages a
    copy, never shares or inherits a decoding)."""
    import copy
    import pickle

    _, vector = vf.find(corpus, "optax/arguments/momentum/0.501_bfloat16")
    vector.steps  # noqa: B018 - decoded here
    for twin in (pickle.loads(pickle.dumps(vector)), copy.deepcopy(vector)):
        assert (twin.id, twin.file, twin.path, twin.dialect, twin.state_dtypes) == \
            (vector.id, vector.file, vector.path, vector.dialect, vector.state_dtypes)
        assert twin.raw == vector.raw and twin.raw is not vector.raw and "steps" not in twin.__dict__
        assert not twin.steps[0].expected.momentum[0].flags.writeable
        assert _bits(twin.steps[-1].expected.momentum[0]) == _bits(vector.steps[-1].expected.momentum[0])


def test_in_memory_vectors_are_checked_when_decoded():
    """A vector built in memory skips the loader; decoding its steps still refuses a
    missing or misshapen gradient, naming the vector, and a version-1 vector (no initial
    state) is refused with what version 2 added."""
    from conformance.vector import as_vector

    raw = json.loads((VECTORS / "keras" / "arguments.json").read_text())["vectors"][0]
    assert as_vector(raw).steps[0].grads[0].shape == tuple(raw["variables"][0]["initial"]["shape"])
    short = {**raw, "steps": [{**raw["steps"][0], "grads": raw["steps"][0]["grads"][:1]}]}
    with pytest.raises(vf.VectorFormatError, match=rf"{raw['id']}.*steps\[0\] holds 1 gradients for 2 variables"):
        as_vector(short).steps
    grads = [dict(raw["steps"][0]["grads"][0], shape=raw["steps"][0]["grads"][0]["shape"][::-1])]
    turned = {**raw, "steps": [{**raw["steps"][0], "grads": grads + raw["steps"][0]["grads"][1:]}]}
    with pytest.raises(vf.VectorFormatError, match=r"steps\[0\]\.grads\[0\] has shape \[3, 5\], variable 0 has"):
        as_vector(turned).steps
    old = {key: value for key, value in raw.items() if key not in ("initial_state", "state_dtypes", "rms_floor")}
    with pytest.raises(vf.VectorFormatError, match=r"no initial_state: a vector of schema version 1\?"):
        as_vector(old)
    vector = as_vector(raw)
    assert as_vector(vector) is vector


# ----------------------------------------------------------------------------- replay
ALL = helpers.corpus_vectors()


@pytest.mark.parametrize("relative,vector", ALL, ids=[v["id"] for _, v in ALL])
def test_reference_replays_vector_bit_exactly(relative, vector):
    """valid and acceptable vectors at 0 ulp; invalid ones raise the recorded error."""
    problems = replay.check_reference(vector, VECTORS / relative)
    assert not problems, f"{vector['id']}: " + "; ".join(problems[:10])
