"""The test suite's own machinery: the one definition of the Hypothesis profiles
(conformance/fuzz/profiles.py), the markers tests/conftest.py gives, its guards and its
collection shortcut, the background jobs of tests/background.py, and the shared corpus of
tests/helpers.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import background, conftest, helpers

hypothesis = pytest.importorskip("hypothesis")
from conformance.fuzz import profiles  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- profiles
@pytest.fixture
def restore_profile():
    yield
    profiles.load(conftest.HYPOTHESIS_PROFILE, root=REPO / ".hypothesis")


def test_the_profile_variable_selects_ci_by_default_and_refuses_unknown_names():
    assert profiles.selected({}) == "ci"
    assert profiles.selected({profiles.PROFILE_VARIABLE: ""}) == "ci"
    assert profiles.selected({profiles.PROFILE_VARIABLE: "dev"}) == "dev"
    with pytest.raises(ValueError, match=r"ADAFACTOR_HYPOTHESIS_PROFILE='nightly': use one of ci, dev, campaign"):
        profiles.selected({profiles.PROFILE_VARIABLE: "nightly"})


def test_the_ci_profile_is_deterministic_and_bounded(restore_profile, tmp_path):
    from hypothesis import HealthCheck, Phase, settings

    assert profiles.load("ci", root=tmp_path) == "ci"
    active = settings.default
    assert active.derandomize and active.database is None and active.deadline is None
    assert active.max_examples == profiles.PROPERTY_EXAMPLES["ci"] == 100
    assert Phase.target not in active.phases and HealthCheck.too_slow in active.suppress_health_check
    assert not list(tmp_path.iterdir())  # ci keeps no example database


def test_dev_and_campaign_draw_randomly_into_their_own_databases(restore_profile, tmp_path):
    """Whatever profile was active before: each starts from Hypothesis's defaults."""
    from hypothesis import settings

    for name in ("dev", "campaign"):
        profiles.load("ci", root=tmp_path)
        profiles.load(name, root=tmp_path)
        active = settings.default
        assert not active.derandomize, name
        assert active.max_examples == profiles.PROPERTY_EXAMPLES[name], name
        assert Path(active.database.path) == tmp_path / name / "properties", name
        assert not active.suppress_health_check, name


def test_the_fuzzer_and_the_property_suite_share_the_ci_settings():
    fuzz = profiles.settings("ci", 7)
    prop = hypothesis.settings.get_profile("ci")
    for field in ("derandomize", "database", "deadline", "phases", "suppress_health_check", "print_blob"):
        assert getattr(fuzz, field) == getattr(prop, field), field
    assert fuzz.max_examples == 7


def test_the_active_profile_is_the_one_the_variable_names():
    assert conftest.HYPOTHESIS_PROFILE == profiles.selected()
    assert hypothesis.settings.default.max_examples == profiles.PROPERTY_EXAMPLES[conftest.HYPOTHESIS_PROFILE]


# ----------------------------------------------------------------------------- markers
def test_markers_come_from_module_test_and_fixture_tables():
    assert conftest.marks_of("test_dialect_torch", "test_anything") == {"framework"}
    assert conftest.marks_of("test_bad_input", "test_constructor_errors_match_real_keras") == {
        "framework", "subprocess", "slow"}
    assert conftest.marks_of("test_bad_input", "test_the_gate_exits_2_naming_file_and_vector") == {"subprocess"}
    assert conftest.marks_of("test_schedules", "test_float32_keras_matches", ["tmp_path", "keras_results"]) == {
        "framework", "subprocess", "slow"}
    assert conftest.marks_of("test_schedules", "test_round_trip", ["tmp_path"]) == set()


def test_a_test_waiting_for_a_background_job_is_marked_by_the_job(tmp_path):
    background.Job(f"plain-{tmp_path.name}", [sys.executable, "-c", "pass"], fixtures=(f"plain_{tmp_path.name}",))
    background.Job(f"keras-{tmp_path.name}", [sys.executable, "-c", "pass"], fixtures=(f"keras_{tmp_path.name}",),
                   requires=("keras", "tensorflow"))
    assert conftest.marks_of("test_x", "test_y", [f"plain_{tmp_path.name}"]) == {"subprocess"}
    assert conftest.marks_of("test_x", "test_y", [f"keras_{tmp_path.name}", "tmp_path"]) == {"subprocess", "framework"}


def test_every_table_names_registered_markers_only(pytestconfig):
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    tables = [*conftest.MODULE_MARKS.values(), *conftest.TEST_MARKS.values(), *conftest.FIXTURE_MARKS.values()]
    assert {"framework", "subprocess", "slow"} <= registered
    assert set().union(*map(set, tables)) <= registered


@pytest.mark.parametrize("expression,deselected", [
    ("not framework", True), ("not framework and not slow", True), ("subprocess and not framework", True),
    ("framework", False), ("not slow", False), ("not framework or slow", False), ("not subprocess", False),
])
def test_a_module_is_skipped_only_when_every_test_of_it_is_deselected(expression, deselected):
    registered = ["framework", "subprocess", "slow", "hypothesis"]
    assert conftest._deselected_whole(expression, {"framework"}, registered) is deselected


# ----------------------------------------------------------------------------- guards and collection
GUARDED_CONFTEST = """
from tests.conftest import _marker_guard, pytest_collection_modifyitems, pytest_ignore_collect  # noqa: F401

def pytest_configure(config):
    for name in ("framework", "subprocess", "slow"):
        config.addinivalue_line("markers", f"{name}: test")
"""

GUARDED_TESTS = """
import subprocess, sys, types
import pytest

def test_spawns_unmarked():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

@pytest.mark.subprocess
def test_spawns_marked():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_imports_a_framework_unmarked():
    sys.modules["flax"] = types.ModuleType("flax")

@pytest.mark.framework
def test_imports_a_framework_marked():
    sys.modules.pop("flax", None)
    sys.modules["flax"] = types.ModuleType("flax")

def test_does_neither():
    pass

def test_starts_a_background_job_unmarked():
    from tests import background
    background.Job("guarded-{tag}", [sys.executable, "-c", "pass"]).result()

def teardown_module(module):
    sys.modules.pop("flax", None)
"""


@pytest.mark.subprocess
def test_the_guards_fail_a_test_missing_its_marker(pytester):
    assert "flax" not in sys.modules  # the simulated framework must be new to the process
    pytester.makeconftest(GUARDED_CONFTEST)
    pytester.makepyfile(test_guarded=GUARDED_TESTS.replace("{tag}", pytester.path.name))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, errors=2)
    result.stdout.fnmatch_lines([
        "*test_spawns_unmarked*started 1 child process*without the `subprocess` marker*",
        "*test_imports_a_framework_unmarked*imported flax without the `framework` marker*",
    ])


def test_a_module_the_mark_expression_deselects_is_not_imported(pytester):
    """test_dialect_torch.py carries ``framework`` as a whole (MODULE_MARKS): with
    ``-m "not framework"`` it is not imported, so its import error never happens."""
    pytester.makeconftest(GUARDED_CONFTEST)
    pytester.makepyfile(test_dialect_torch="raise ImportError('imported although deselected')\n",
                        test_plain="def test_one():\n    pass\n")
    pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-m", "not framework").assert_outcomes(passed=1)
    pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider").assert_outcomes(errors=1)


# ----------------------------------------------------------------------------- the shared corpus
def test_the_corpus_fixture_is_loaded_once_per_process(corpus, corpus_vectors):
    assert corpus is helpers.corpus() and corpus_vectors is helpers.corpus_vectors()
    assert len(corpus_vectors) == sum(len(document["vectors"]) for document in corpus.values()) > 100
    relative, vector = corpus_vectors[0]
    assert helpers.vector(vector["id"]) == (relative, vector)
    with pytest.raises(KeyError, match="'no/such/vector'"):
        helpers.vector("no/such/vector")


def test_normwise_is_the_gates_relative_error_in_epsilons():
    golden = np.array([1.0, -2.0, 4.0])
    assert helpers.normwise(golden, golden) == 0.0
    assert helpers.normwise(golden + [0.0, 0.0, 2.0 ** -50], golden) == 1.0  # 2**-50 / 4 = 2**-52
    assert helpers.normwise(golden + [0.0, 0.0, 2.0 ** -21], golden, "float32") == 1.0
    assert helpers.normwise(np.array([np.nan, 1.0]), np.array([0.5, 1.0])) == np.inf


# ----------------------------------------------------------------------------- background jobs
def _python(code: str) -> list:
    return [sys.executable, "-c", code]


@pytest.mark.subprocess
def test_a_job_returns_what_subprocess_run_returns(tmp_path):
    code = "import sys; print(sys.stdin.read().upper()); print('warning', file=sys.stderr); sys.exit(3)"
    job = background.Job(f"echo-{tmp_path.name}", _python(code), input="hello", timeout=120)
    assert not job.started
    done = job.result()
    expected = subprocess.run(_python(code), input="hello", capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (expected.returncode, expected.stdout, expected.stderr)
    assert (done.returncode, done.stdout) == (3, "HELLO\n") and job.result().stdout == "HELLO\n"


@pytest.mark.subprocess
def test_a_job_past_its_timeout_is_killed_and_raises(tmp_path):
    job = background.Job(f"sleeper-{tmp_path.name}", _python("import time; time.sleep(60)"), timeout=1)
    with pytest.raises(subprocess.TimeoutExpired):
        job.result()
    assert job._process.poll() is not None


@pytest.mark.subprocess
def test_a_queue_runs_its_jobs_one_at_a_time_in_order(tmp_path):
    log = tmp_path / "log"
    code = ("import sys, time; open(sys.argv[1], 'a').write(sys.argv[2] + ' start\\n'); time.sleep(0.3); "
            "open(sys.argv[1], 'a').write(sys.argv[2] + ' end\\n')")
    jobs = [background.Job(f"{name}-{tmp_path.name}", [*_python(code), log, name], timeout=120) for name in "ab"]
    queue = background.Queue(jobs)
    assert jobs[0].wait(120) and jobs[1].wait(120)
    queue.stop()
    assert log.read_text().split("\n")[:-1] == ["a start", "a end", "b start", "b end"]
    assert [job.result().returncode for job in jobs] == [0, 0]


BACKGROUND_TESTS = """
import sys
import pytest
from tests import background

USED = background.Job("used-{tag}", [sys.executable, "-c", "print('used')"], fixtures=("used_output",))
UNUSED = background.Job("unused-{tag}", [sys.executable, "-c", "print('unused')"], fixtures=("unused_output",))
MISSING = background.Job("missing-{tag}", [sys.executable, "-c", "print('missing')"], fixtures=("used_output",),
                         requires=("no_such_module_anywhere",))

@pytest.fixture(scope="module")
def used_output():
    return USED.result().stdout

@pytest.fixture(scope="module")
def unused_output():
    return UNUSED.result().stdout

def test_the_used_job_runs_before_any_test_asks_for_it():
    assert USED.wait(120)
    assert not UNUSED.started and not MISSING.started

def test_the_used_job_ran_in_the_background(used_output):
    assert used_output == "used\\n"

def test_deselected(unused_output):
    pass
"""


@pytest.mark.subprocess
def test_the_session_queues_the_jobs_of_the_selected_tests_only(pytester, tmp_path):
    """The used job starts after collection (before any test asks for it); the job of a
    deselected test and a job whose module is not installed never start."""
    pytester.makeconftest(GUARDED_CONFTEST.replace(
        "pytest_ignore_collect  # noqa: F401",
        "pytest_ignore_collect, pytest_collection_finish, pytest_sessionfinish  # noqa: F401"))
    pytester.makepyfile(test_background=BACKGROUND_TESTS.replace("{tag}", tmp_path.name))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-k", "not deselected")
    result.assert_outcomes(passed=2, deselected=1)


def test_the_run_order_is_by_directory_with_the_modules_that_wait_for_jobs_last(tmp_path):
    class Item:
        def __init__(self, relative, fixtures=()):
            self.path, self.fixturenames = helpers.REPO / "tests" / relative, list(fixtures)

    background.Job(f"order-{tmp_path.name}", [sys.executable, "-c", "pass"], fixtures=(f"waits_{tmp_path.name}",))
    items = [Item("frameworks/test_a.py"), Item("reference/test_b.py", [f"waits_{tmp_path.name}"]),
             Item("reference/test_b.py"), Item("reference/test_c.py"), Item("gate/test_d.py"), Item("test_top.py"),
             Item("frameworks/test_a.py")]
    order = [(str(item.path.relative_to(helpers.REPO / "tests")), item.fixturenames != [])
             for item in conftest.run_order(items)]
    assert order == [("test_top.py", False), ("reference/test_c.py", False), ("gate/test_d.py", False),
                     ("frameworks/test_a.py", False), ("frameworks/test_a.py", False),
                     ("reference/test_b.py", True), ("reference/test_b.py", False)]
