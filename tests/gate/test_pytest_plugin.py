"""The gate's pytest plugin (conformance/pytest_plugin.py): with an adapter named (option or
ini key) it collects the conformance suite itself, no test file in the port; its options
select lanes and vectors; tests carry markers; failures carry the CLI's details and a
reproduce line that reproduces them; nothing checked fails; with no adapter it does nothing."""

from __future__ import annotations

import importlib.metadata
import shlex
import subprocess
import sys

import pytest

import conformance
from tests.helpers import REPO

pytest_plugins = ["pytester"]


def plugin_args() -> list:
    """``-p conformance.pytest_plugin`` unless pytest loads the plugin itself (the installed
    gate's ``pytest11`` entry point): a second registration under another name would fail."""
    installed = any(ep.value.strip() == "conformance.pytest_plugin"
                    for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "conformance.pytest_plugin"]


def run(pytester, *args):
    return pytester.runpytest_inprocess(*plugin_args(), "-p", "no:cacheprovider", *args)


CLIP = ["--adafactor-vectors", "arguments/clip_threshold", "--adafactor-dtypes", "float64",
        "--adafactor-modes", "teacher"]
CLIP_IDS = ("arguments/clip_threshold/0.5", "arguments/clip_threshold/2", "arguments/clip_threshold/0.1")


# ----------------------------------------------------------------------------- collection
def test_an_adapter_on_the_command_line_collects_the_suite_without_a_test_file(pytester):
    result = run(pytester, "--adafactor-adapter", "reference", *CLIP, "-v")
    result.assert_outcomes(passed=len(CLIP_IDS) + 1)  # + the anything-graded guard
    result.stdout.fnmatch_lines([f"adafactor-conformance::test_adafactor_conformance[[]float64-teacher-{i}] PASSED*"
                                 for i in CLIP_IDS] + ["*test_adafactor_conformance[[]anything-graded] PASSED*"])


def test_the_header_names_the_adapter_its_environment_the_gate_and_the_corpus(pytester):
    from conformance import corpus

    identity = corpus.corpus_identity(corpus.default_vectors_dir())
    result = run(pytester, "--adafactor-adapter", "reference", *CLIP)
    result.stdout.fnmatch_lines([
        f"adafactor-conformance {conformance.__version__}: adapter reference (--adafactor-adapter), dtypes float64, "
        f"modes teacher, device cpu",
        "  reference on cpu: reference=*numpy=*",
        f"  corpus: *{identity['sha256']}*",
    ])


def test_ini_keys_configure_the_same_options(pytester, tmp_path):
    """Every option has an ini key; paths in them are relative to the configuration file."""
    xfail = pytester.path / "conf" / "expect.txt"
    xfail.parent.mkdir()
    xfail.write_text("skip id=arguments/clip_threshold/2  # an example skip\n")
    pytester.makepyprojecttoml("""
[tool.pytest.ini_options]
adafactor_adapter = "reference"
adafactor_dtypes = ["float64"]
adafactor_modes = "teacher"
adafactor_vectors = ["arguments/clip_threshold", "arguments/epsilon_2"]
adafactor_flags = ["CLIPPING_ACTIVE"]
adafactor_dialects = ["keras"]
adafactor_device = "cpu"
adafactor_vectors_dir = "../vectors-link"
adafactor_xfail_files = ["conf/expect.txt"]
adafactor_strict_xpass = true
""")
    (pytester.path.parent / "vectors-link").symlink_to(REPO / "vectors")
    result = run(pytester, "-v", "-rs")
    # clip_threshold/0.5 and 0.1 and epsilon_2/0.1 and 0 carry CLIPPING_ACTIVE; /2 does not (and is skipped anyway)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*adapter reference (adafactor_adapter (ini)), dtypes float64, modes teacher*",
                                 "*corpus: *vectors-link*", f"  expectations: {xfail}"])
    assert "clip_threshold/2]" not in result.stdout.str()
    # the command line overrides an ini key (float32 instead of float64)
    result = run(pytester, "--adafactor-dtypes", "float32", "-v")
    result.stdout.fnmatch_lines(["*[[]float32-teacher-arguments/clip_threshold/0.5] PASSED*"])
    assert "float64-teacher" not in result.stdout.str()


def test_a_bad_option_value_is_a_usage_error_naming_it(pytester):
    result = run(pytester, "--adafactor-adapter", "reference", "--adafactor-modes", "teacher,sideways")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--adafactor-modes: unknown mode [[]'sideways'[]]; choose from*"])


def test_markers_select_by_dtype_and_mode(pytester):
    args = ["--adafactor-adapter", "reference", "--adafactor-vectors", "arguments/clip_threshold/0.5",
            "--strict-markers"]
    result = run(pytester, *args, "-m", "float32 and trajectory", "-v")
    result.assert_outcomes(passed=2)  # the vector, and the guard: it stays in any selection of its lanes
    result.stdout.fnmatch_lines(["*[[]float32-trajectory-arguments/clip_threshold/0.5] PASSED*",
                                 "*[[]anything-graded] PASSED*"])
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    result = run(pytester, *args, "-m", "not adafactor")
    result.assert_outcomes(passed=1)  # the port's own test only
    result = run(pytester, *args, "-m", "adafactor and float64")
    result.assert_outcomes(passed=3)  # 2 modes + the guard


def test_an_explicit_conformance_tests_module_reads_the_options_and_replaces_the_plugins_collection(pytester):
    pytester.makepyfile(test_port="""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests()
""")
    result = run(pytester, "--adafactor-adapter", "reference", *CLIP, "-v")
    result.assert_outcomes(passed=len(CLIP_IDS) + 1)  # once, not twice
    result.stdout.fnmatch_lines(["test_port.py::test_port[[]float64-teacher-arguments/clip_threshold/0.5] PASSED*"])
    assert "adafactor-conformance::" not in result.stdout.str()


def test_an_adapter_that_cannot_be_loaded_errors_every_test(pytester):
    result = run(pytester, "--adafactor-adapter", "nosuchmodule:Port", *CLIP)
    result.stdout.fnmatch_lines(["*adapter 'nosuchmodule:Port' cannot be loaded*"])
    result.assert_outcomes(failed=len(CLIP_IDS) + 1)
    result.stdout.fnmatch_lines(["*cannot import 'nosuchmodule'*"])


# ----------------------------------------------------------------------------- failures
PORT = """
from conformance.adapters.broken import BetaFromPreviousStep


class MyPort(BetaFromPreviousStep):
    '''A port that computes beta_2 from step t-1.'''
"""


@pytest.mark.subprocess
def test_a_failing_port_fails_with_the_clis_details_and_a_reproduce_line_that_reproduces_it(pytester, tmp_path):
    from tests.gate.fail_closed_adapters import mini_corpus

    vectors = mini_corpus(tmp_path / "vectors")
    pytester.makepyfile(myport=PORT)
    pytester.syspathinsert()
    xfail = pytester.path / "expect.txt"
    xfail.write_text("skip id=invalid/learning_rate_string  # an example entry\n")
    result = run(pytester, "--adafactor-adapter", "myport:MyPort", "--adafactor-vectors-dir", str(vectors),
                 "--adafactor-xfail-file", "expect.txt", "--adafactor-dtypes", "float64",
                 "--adafactor-modes", "teacher", "--adafactor-vectors", "regression/")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.lines
    failing = [line for line in out if line.startswith("FAIL ")]
    assert failing, result.stdout.str()
    first = failing[0]
    assert first.startswith("FAIL broken:BetaFromPreviousStep float64 teacher: regression/")
    details = out[out.index(first) + 1:out.index(first) + 3]
    reproduce = next(line for line in out[out.index(first):] if line.strip().startswith("reproduce: "))
    command = shlex.split(reproduce.split("reproduce: ", 1)[1])
    assert command[:3] == ["python", "-m", "conformance"]
    assert command[command.index("--adapter") + 1] == "myport:MyPort"  # the import spec, not the name
    assert command[command.index("--vectors-dir") + 1] == str(vectors.resolve())
    assert command[command.index("--xfail-file") + 1] == str(xfail.resolve())
    vector_id = first.split(": ", 1)[1].split(" (")[0]
    assert command[command.index("--vectors") + 1] == f"={vector_id}"

    rerun = subprocess.run([sys.executable, *command[1:]], cwd=pytester.path, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    lines = rerun.stdout.splitlines()
    assert first in lines and all(d in lines for d in details), (details, rerun.stdout)
    assert sum(line.startswith("FAIL ") for line in lines) == 1  # exactly that vector


def test_an_xfail_file_makes_xfails_and_a_strict_xpass_fails(pytester, tmp_path):
    xfail = tmp_path / "x.txt"
    xfail.write_text("xfail id=arguments/clip_threshold/0.5 because=raises:FloatingPointError  # known (example)\n")
    args = ["--adafactor-vectors", "arguments/clip_threshold", "--adafactor-dtypes", "float64",
            "--adafactor-modes", "teacher", "--adafactor-xfail-file", str(xfail)]
    result = run(pytester, "--adafactor-adapter", "tests.gate.fail_closed_adapters:RaisesInStep", *args)
    result.assert_outcomes(failed=2, xfailed=1, passed=1)
    result = run(pytester, "--adafactor-adapter", "reference", *args, "--adafactor-strict-xpass")
    result.assert_outcomes(failed=1, passed=3)
    result.stdout.fnmatch_lines(["XPASS reference float64 teacher: arguments/clip_threshold/0.5*",
                                 "*reproduce: python -m conformance run --adapter reference*--xfail-file*"])


# ----------------------------------------------------------------------------- nothing checked
def test_nothing_checked_fails_the_run(pytester):
    result = run(pytester, "--adafactor-adapter", "tests.gate.fail_closed_adapters:Float32Only", *CLIP)
    result.assert_outcomes(skipped=len(CLIP_IDS), failed=1)
    result.stdout.fnmatch_lines(["*NOTHING CHECKED: none of the 3 tests graded a vector "
                                 "(3 x skip: fail-closed:Float32Only does not run float64)*"])
    result = run(pytester, "--adafactor-adapter", "reference", "--adafactor-vectors", "no/such/vector")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NOTHING CHECKED: no vector selected (adapter 'reference'*"])


# ----------------------------------------------------------------------------- no adapter, no effect
def test_with_no_adapter_the_plugin_changes_nothing(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    without = pytester.runpytest_inprocess("-p", "no:conformance.pytest_plugin", "-p", "no:cacheprovider",
                                           "--collect-only", "-q")
    with_plugin = run(pytester, "--collect-only", "-q")
    assert with_plugin.stdout.lines[:-1] == without.stdout.lines[:-1]  # all but "collected in 0.01s"
    result = run(pytester, "-v")
    result.assert_outcomes(passed=2)
    assert not [line for line in result.stdout.lines if "adafactor" in line and not line.startswith("plugins:")]
    config = pytester.parseconfigure(*plugin_args())
    assert config.pluginmanager.get_plugin("adafactor-conformance-suite") is None


def test_with_no_adapter_no_marker_is_registered_or_added(pytester):
    """Not even to an explicit conformance_tests module's tests: a run without an adapter
    named keeps its registered markers as they are (this repository's tests/conftest.py
    does work exponential in their number)."""
    pytester.makepyfile(test_port="""
from conformance.pytest_entry import conformance_tests
test_port = conformance_tests("reference", dtypes=["float64"], modes=["teacher"],
                              vectors=["arguments/clip_threshold/0.5"])
""")
    pytester.makeconftest("""
def pytest_collection_finish(session):
    names = {line.split(":")[0] for line in session.config.getini("markers")}
    print("REGISTERED", sorted(names & {"adafactor", "float64", "float32", "teacher", "trajectory"}))
    print("ON ITEMS", sorted({m.name for item in session.items for m in item.iter_markers()} - {"parametrize"}))
""")
    result = run(pytester, "-s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["REGISTERED []", "ON ITEMS []"])


@pytest.mark.subprocess
def test_importing_the_plugin_imports_nothing_heavy():
    """It is imported into every pytest run of an environment where the gate is installed."""
    code = ("import sys, conformance.pytest_plugin; "
            "print([m for m in ('numpy', 'conformance.runner', 'conformance.pytest_entry', 'reference') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_porting_md_documents_every_option_and_ini_key():
    from conformance.pytest_plugin import OPTIONS, _flag

    text = (REPO / "conformance" / "PORTING.md").read_text()
    for name in OPTIONS:
        assert f"`{_flag(name)}" in text and f"`adafactor_{name}`" in text, name
