"""The pytest entry point: a port's pytest suite gets one test per vector, and failures
carry the runner's details."""

import pytest

from conformance.pytest_entry import conformance_tests

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
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*FAIL broken:ClipThresholdIgnored float64 teacher: arguments/clip_threshold/*",
                                 "*reproduce: python -m conformance run*"])


def test_entry_point_xfail_file(pytester, tmp_path):
    xfail = tmp_path / "x.txt"
    xfail.write_text("xfail id=arguments/clip_threshold/0.5  # known: threshold ignored (example)\n")
    pytester.makepyfile(test_port=f"""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests("conformance.adapters.broken:ClipThresholdIgnored", dtypes=["float64"],
                              modes=["teacher"], vectors=["arguments/clip_threshold"],
                              xfail_files=[{str(xfail)!r}])
""")
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(failed=2, xfailed=1)


def test_entry_point_runs_a_native_dialect(pytester):
    """A native adapter gets its own dialect's vectors only (here torch's shapes), and passes."""
    pytest.importorskip("torch")
    pytester.makepyfile(test_port="""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests("torch", dtypes=["float64"], modes=["teacher"], vectors=["torch/shapes/", "shapes/"])
""")
    result = pytester.runpytest_inprocess("-q")
    from conformance import vectorfile as vf
    from conformance.pytest_entry import DEFAULT_VECTORS

    docs = vf.load_corpus(DEFAULT_VECTORS)
    expected = sum(1 for _, v in vf.iter_vectors(docs) if v["id"].startswith("torch/shapes/"))
    result.assert_outcomes(passed=expected)
