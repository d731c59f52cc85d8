"""The pytest entry point: a port's pytest suite gets one test per vector, and failures
carry the runner's details."""

import pytest

from conformance.pytest_entry import conformance_tests
from tests.helpers import corpus_vectors

pytest_plugins = ["pytester"]

# The reference through the entry point, as a port would use it (float64, both modes).
test_reference_conforms = conformance_tests("reference", dtypes=["float64"], vectors=["arguments/", "invalid/"])


def test_entry_point_fails_a_broken_port(pytester):
    pytester.makepyfile(test_port="""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests("conformance.adapters.broken:ClipThresholdIgnored",
                              dtypes=["float64"], modes=["teacher"], vectors=["arguments/clip_threshold"])
""")
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(failed=3, passed=1)  # passed: the anything-graded guard
    result.stdout.fnmatch_lines(["*FAIL broken:ClipThresholdIgnored float64 teacher: arguments/clip_threshold/*",
                                 "*reproduce: python -m conformance run*"])


def test_entry_point_xfail_file(pytester, tmp_path):
    xfail = tmp_path / "x.txt"
    xfail.write_text("xfail id=arguments/clip_threshold/0.5 because=raises:FloatingPointError  # known (example)\n")
    pytester.makepyfile(test_port=f"""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests("tests.gate.fail_closed_adapters:RaisesInStep", dtypes=["float64"],
                              modes=["teacher"], vectors=["arguments/clip_threshold"],
                              xfail_files=[{str(xfail)!r}])
""")
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(failed=2, xfailed=1, passed=1)


def test_entry_point_runs_a_native_dialect(pytester):
    """A native adapter gets its own dialect's vectors only (here torch's shapes), and passes."""
    pytest.importorskip("torch")
    pytester.makepyfile(test_port="""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests("torch", dtypes=["float64"], modes=["teacher"], vectors=["torch/shapes/", "shapes/"])
""")
    result = pytester.runpytest_inprocess("-q")
    expected = sum(1 for _, v in corpus_vectors() if v.id.startswith("torch/shapes/"))
    result.assert_outcomes(passed=expected + 1)  # + the anything-graded guard


# ----------------------------------------------------------------------------- nothing checked
@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    from tests.gate.fail_closed_adapters import mini_corpus

    return mini_corpus(tmp_path_factory.mktemp("vectors"))


def test_entry_point_with_no_vector_selected_fails(pytester, mini):
    """No vector of the adapter's dialect selected: pytest would pass an empty
    parametrization; the anything-graded guard fails it with NOTHING CHECKED."""
    pytester.makepyfile(test_port=f"""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests("torch", vectors=["regression/"], vectors_dir={str(mini)!r})
""")
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NOTHING CHECKED: no vector selected (adapter 'torch'*dialects ?'torch'?*"])


def test_entry_point_where_every_test_skips_fails(pytester, mini):
    """Every test skipped (the port does not run the dtype asked for): the skips stay skips
    and the guard fails, saying why."""
    pytester.makepyfile(test_port=f"""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests("tests.gate.fail_closed_adapters:Float32Only", dtypes=["float64"], modes=["teacher"],
                              vectors=["regression/"], vectors_dir={str(mini)!r})
""")
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(skipped=3, failed=1)
    result.stdout.fnmatch_lines(["*NOTHING CHECKED: none of the 3 tests graded a vector "
                                 "(3 x skip: fail-closed:Float32Only does not run float64)*"])


def test_entry_point_guard_alone_replays_until_a_vector_is_graded(pytester, mini):
    """The guard run on its own (the other tests deselected, or on another xdist worker)
    grades vectors itself: it passes when one conforms, and fails when none can be graded."""
    pytester.makepyfile(test_port=f"""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests("reference", dtypes=["float64"], modes=["teacher"], vectors=["regression/"],
                              vectors_dir={str(mini)!r})
test_nothing = conformance_tests("tests.gate.fail_closed_adapters:SupportsNothing", dtypes=["float64"],
                                 modes=["teacher"], vectors=["regression/"], vectors_dir={str(mini)!r})
""")
    result = pytester.runpytest_inprocess("-q", "-k", "anything-graded")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_nothing?anything-graded?*",
                                 "NOTHING CHECKED: none of the 3 tests graded*this port supports no configuration*"])
