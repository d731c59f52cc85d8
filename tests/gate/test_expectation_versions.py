"""Version ranges in expectation entries (conformance/expectations.py): parsed, PEP 440
ordered, applied against the installed versions (here a fake ``version_of``), an entry stale
for the installed version reported naming it, a malformed range an error naming file and
line; and the recorded fact that keras-team/keras#23223 (the float64 keras-torch deviation)
starts with Keras 3.12."""

import pytest

from conformance import expectations, runner
from conformance.adapters.reference import ReferenceAdapter
from conformance.tolerance import Policy
from tests import helpers

NIGHTLY = "3.16.0.dev2026102704"


def _versions(**installed):
    return lambda name: installed.get(name.replace("-", "_"))


def _write(tmp_path, text, name="x.txt"):
    path = tmp_path / name
    path.write_text("# header\n" + text)
    return path


# ----------------------------------------------------------------------------- parsing
def test_a_range_is_parsed_off_the_selectors(tmp_path):
    (entry,) = expectations.parse(_write(tmp_path, "skip id=arguments/ keras>=3.12,<3.16 dtype=float64  # why\n"))
    assert entry.selectors == {"id": "arguments/", "dtype": "float64"}
    (rng,) = entry.versions
    assert rng.name == "keras" and rng.text == "keras>=3.12,<3.16" and len(rng.clauses) == 2
    assert entry.where.endswith("x.txt:2") and entry.source == entry.where


def test_several_frameworks_and_model_entries(tmp_path):
    (entry,) = expectations.parse(_write(
        tmp_path, "model keras-float32-means-torch dtype=float64 keras>=3.12 torch<2.14  # r\n"))
    assert entry.model == "keras-float32-means-torch"
    assert [r.name for r in entry.versions] == ["keras", "torch"]


@pytest.mark.parametrize("spec,yes,no", [
    (">=3.12", ["3.12", "3.12.0", "3.12.4", "3.15.1", NIGHTLY, "4.0"], ["3.11.3", "3.12.0rc1", "3.12.0.dev5"]),
    ("<3.16", ["3.15.1", "3.0.0", "3.16.0.dev0"[:0] + "3.15.99"], [NIGHTLY, "3.16.0", "3.16.0rc1", "3.16"]),
    ("<3.16.0rc1", ["3.16.0.dev3", "3.16.0a1", "3.15.1"], ["3.16.0rc1", "3.16.0"]),
    ("<=3.12", ["3.12.0", "3.11.3"], ["3.12.1", "3.12.0.post1"]),
    (">3.12", ["3.12.1", "3.13.0.dev1"], ["3.12.0", "3.12.0.post2", "3.11.9"]),
    ("==3.12.*", ["3.12.0", "3.12.4", "3.12.0.dev1", "3.12"], ["3.13.0", "3.1.2"]),
    ("!=3.12.*", ["3.13.0", "3.11.3"], ["3.12.1"]),
    ("==3.12", ["3.12.0", "3.12"], ["3.12.1"]),
    ("~=3.12", ["3.12.0", "3.15.1", NIGHTLY], ["3.11.3", "4.0.0"]),
    ("~=3.12.1", ["3.12.1", "3.12.4"], ["3.13.0", "3.12.0"]),
    ("<2.14", ["2.13.0+cpu", "2.13.0"], ["2.14.0", "2.14.0+cpu", "2.14.0rc1"]),
    (">=2.5,<2.14", ["2.5.0", "2.13.1+cpu"], ["2.4.1", "2.14.0"]),
    ("!=3.12.0", ["3.12.1", "3.12.0.post1"], ["3.12", "3.12.0+local"]),
])
def test_pep440_order(spec, yes, no):
    rng = expectations.parse_range("keras" + spec)
    assert [v for v in yes if not rng.holds(v)] == []
    assert [v for v in no if rng.holds(v)] == []


def test_agrees_with_packaging_where_installed():
    packaging = pytest.importorskip("packaging.specifiers")
    versions = ["3.0.0", "3.11.3", "3.12", "3.12.0", "3.12.0rc1", "3.12.0.dev2", "3.12.0.post1", "3.12.4",
                "3.15.1", NIGHTLY, "3.16.0", "3.16.0a1", "1!1.0", "2.13.0+cpu"]
    specs = [">=3.12", "<3.16", "<=3.12", ">3.12", "==3.12.*", "~=3.12", "~=3.12.0", "!=3.12.0", ">=3.11,<3.13",
             "<3.16.0rc1", ">3.12.0rc1", "==3.12"]
    for spec in specs:
        ours = expectations.parse_range("keras" + spec)
        theirs = packaging.SpecifierSet(spec)
        for v in versions:
            assert ours.holds(v) == theirs.contains(v, prereleases=True), (spec, v)


@pytest.mark.parametrize("word,message", [
    ("keras>=3.x", "not a PEP 440 version"),
    ("keras>=", "has no version"),
    ("keras>=3.12,", "does not start with"),
    ("keras>=3.12,3.16", "does not start with"),
    ("keras>3.*", r"\.\* only after"),
    ("keras~=3", "at least two release numbers"),
    ("keras>=3.12+cpu", "public versions"),
    ("keras===3.12", "not a PEP 440 version"),
    ("keras=>3.12", "version range such as"),
])
def test_a_malformed_range_names_file_and_line(tmp_path, word, message):
    path = _write(tmp_path, f"skip id=arguments/ {word}  # why\n", "bad.txt")
    with pytest.raises(expectations.ExpectationError, match=rf"bad\.txt:2: .*{message}"):
        expectations.parse(path)


def test_one_range_per_framework(tmp_path):
    path = _write(tmp_path, "skip id=arguments/ keras>=3.12 keras<3.16  # why\n", "bad.txt")
    with pytest.raises(expectations.ExpectationError, match=r"bad\.txt:2: one version range per framework"):
        expectations.parse(path)


# ----------------------------------------------------------------------------- applying
def test_an_entry_applies_where_its_range_holds(tmp_path):
    path = _write(tmp_path, "skip id=a/ keras>=3.12  # new in 3.12\n"
                            "skip id=b/ keras<3.12  # fixed in 3.12\n"
                            "skip id=c/  # every version\n"
                            "skip id=d/ keras>=3.12 torch<2.14  # both\n")
    for keras, torch, kept in [("3.11.3", "2.13.0+cpu", ["b/", "c/"]),
                               ("3.12.0", "2.13.0+cpu", ["a/", "c/", "d/"]),
                               (NIGHTLY, "2.14.0", ["a/", "c/"])]:
        entries = expectations.applicable(expectations.parse(path), _versions(keras=keras, torch=torch))
        assert [e.selectors["id"] for e in entries] == kept, keras


def test_an_applying_entry_names_the_versions_it_was_checked_against(tmp_path):
    path = _write(tmp_path, "skip id=a/ keras>=3.12 torch<2.14  # r\nskip id=b/  # r\n")
    versioned, plain = expectations.applicable(expectations.parse(path), _versions(keras="3.15.1", torch="2.13.0+cpu"))
    assert versioned.source.endswith("x.txt:2 (keras>=3.12 torch<2.14: keras 3.15.1, torch 2.13.0+cpu)")
    assert plain.source.endswith("x.txt:3")


def test_a_framework_not_installed_is_an_error_naming_the_line(tmp_path):
    path = _write(tmp_path, "skip id=a/ kears>=3.12  # typo\n", "bad.txt")
    with pytest.raises(expectations.ExpectationError, match=r"bad\.txt:2: kears>=3\.12: kears is not installed"):
        expectations.applicable(expectations.parse(path), _versions(keras="3.15.1"))


def test_an_unparsable_installed_version_is_an_error_naming_the_line(tmp_path):
    path = _write(tmp_path, "skip id=a/ keras>=3.12  # r\n", "bad.txt")
    with pytest.raises(expectations.ExpectationError, match=r"bad\.txt:2: .*installed keras"):
        expectations.applicable(expectations.parse(path), _versions(keras="nightly-build"))


def test_installed_version_reads_the_distribution_of_a_module():
    import importlib.metadata

    import numpy

    assert expectations.installed_version("numpy") == numpy.__version__
    assert expectations.installed_version("no-such-framework-here") is None
    # the module `attr` comes from the distribution `attrs` (as `keras` from keras-nightly)
    pytest.importorskip("attr")
    assert expectations.installed_version("attr") == importlib.metadata.version("attrs")


def test_for_adapter_reads_versions_in_this_process(tmp_path):
    path = _write(tmp_path, "skip id=a/ numpy>=1  # r\nskip id=b/ numpy<1  # r\n")
    entries = expectations.for_adapter("no-such-adapter", [path])
    assert [e.selectors["id"] for e in entries] == ["a/"]


# ----------------------------------------------------------------------------- stale, per version
@pytest.fixture(scope="module")
def shapes():
    return helpers.select(["shapes/defaults/"])


def _lane(entries, vectors):
    return runner.run_lane(ReferenceAdapter(), vectors, helpers.VECTORS, "float64", "cpu", "teacher", Policy.load(),
                           entries)


def test_a_stale_entry_is_reported_naming_the_installed_version(tmp_path, shapes):
    path = _write(tmp_path, "skip id=does/not/exist keras>=3.12  # gone since\n"
                            "skip id=also/not keras<3.12  # only before 3.12\n")
    entries = expectations.applicable(expectations.parse(path), _versions(keras="3.15.1"))
    unused = _lane(entries, shapes).unused_expectations
    assert len(unused) == 1 and "does/not/exist" in unused[0] and "keras 3.15.1" in unused[0], unused
    entries = expectations.applicable(expectations.parse(path), _versions(keras="3.11.3"))
    unused = _lane(entries, shapes).unused_expectations
    assert len(unused) == 1 and "also/not" in unused[0] and "keras 3.11.3" in unused[0], unused


def test_a_range_that_excludes_the_version_neither_applies_nor_is_reported(tmp_path, shapes):
    path = _write(tmp_path, "skip id=shapes/defaults/ keras>=3.12  # since 3.12\n")
    lane = _lane(expectations.applicable(expectations.parse(path), _versions(keras="3.11.3")), shapes)
    assert lane.counts()["skip"] == 0 and lane.counts()["pass"] == len(shapes) and not lane.unused_expectations
    lane = _lane(expectations.applicable(expectations.parse(path), _versions(keras=NIGHTLY)), shapes)
    assert lane.counts()["skip"] == len(shapes)
    assert all(f"keras {NIGHTLY}" in o.reason for o in lane.outcomes)


# ----------------------------------------------------------------------------- the recorded facts
def _models(adapter, **installed):
    return [e.model for e in expectations.for_adapter(adapter, version_of=_versions(**installed)) if e.model]


@pytest.mark.parametrize("keras,applies", [("3.11.3", False), ("3.12.0", True), ("3.15.1", True), (NIGHTLY, True)])
def test_keras_23223_starts_with_keras_3_12_on_torch(keras, applies):
    """Measured (conformance/HISTORY.md): with Keras 3.11.3 the keras-torch float64 lanes
    pass the spec; from 3.12.0 they need the float32-means model."""
    models = _models("keras-torch", keras=keras, torch="2.13.0+cpu")
    assert ("keras-float32-means-torch" in models) == applies
    assert "keras-torch-decay-once-per-apply" in models  # no range: every version


def _only_newer(entry, pinned) -> bool:
    """Whether every range of ``entry`` admits only versions above the pinned one (an entry
    for a newer release, e.g. ``keras>=3.16.0.dev0``): such an entry need not apply to the pins."""
    return bool(entry.versions) and all(
        pinned(r.name) is not None and any(c.op in (">=", ">", "==", "~=")
                                           and not c.holds(expectations.Version.parse(pinned(r.name)))
                                           for c in r.clauses)
        for r in entry.versions)


def test_every_shipped_file_parses_and_applies_to_the_pinned_versions():
    """Every entry applies to the pinned versions (constraints.txt), except those written for
    newer releases only; there must be at least one of those (the Keras nightly's)."""
    pinned = _versions(keras="3.15.1", torch="2.13.0", jax="0.10.2", tensorflow="2.21.0", optax="0.2.8",
                       transformers="5.23.0")
    newer = 0
    for path in sorted(expectations.DIRECTORY.glob("*.txt")):
        if path.name == "tf-keras.txt":  # another framework's versions
            continue
        entries = expectations.parse(path)
        expected = [e for e in entries if not _only_newer(e, pinned)]
        newer += len(entries) - len(expected)
        assert expectations.applicable(entries, pinned) == expected, path.name
    assert newer >= 2
