"""Shared pytest configuration: the Hypothesis profile, the test markers, the corpus
fixtures and the marker guards. tests/README.md says how to use the markers.

Hypothesis profile
    ``ADAFACTOR_HYPOTHESIS_PROFILE`` (``ci`` by default, ``dev``, ``campaign``) selects one
    of the profiles that conformance/fuzz/profiles.py defines (the one definition; see its
    docstring for what each holds). A value that names no profile is a usage error.

Markers (registered in pyproject.toml, ``--strict-markers``)
    ``framework``: needs a real framework (torch, JAX, Keras, TensorFlow, optax,
    transformers) in-process or in a child process. ``subprocess``: starts a child
    process. ``slow``: one of the tests that take most of the suite's time (over about
    5 s each on the 2-core CI machine). Most tests get theirs here, from ``MODULE_MARKS``,
    ``TEST_MARKS`` and ``FIXTURE_MARKS``, so that the test modules need not repeat them; a
    test module may also mark a test itself.

Guards
    A test that starts a child process without the ``subprocess`` marker, or imports a
    framework without the ``framework`` marker, gets an error at teardown naming what it
    did. A framework already imported by an earlier test cannot be seen; ``pytest -m "not
    framework"`` imports none, so that run checks every test it selects.

Order and background jobs
    The child processes that test modules declare with tests/background.py start after
    collection, one at a time, in the order the selected tests need them, so they run on
    the second core while the pytest process runs other tests; the modules that wait for
    them run last, and the directories run in ``DIRECTORY_ORDER`` (``run_order``).

Collection
    A module whose every test carries a marker that ``-m`` deselects is not imported at all
    (``pytest_ignore_collect``): ``-m "not framework"`` does not pay for importing torch or
    TensorFlow at collection.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests import background, helpers

pytest_plugins = ["pytester"]  # tests of pytest plugins and of this file's hooks

REPO = helpers.REPO
FRAMEWORKS = ("torch", "jax", "tensorflow", "keras", "optax", "transformers", "flax")

_FRAMEWORK = ("framework",)
_FRAMEWORK_SUBPROCESS = ("framework", "subprocess")
_SLOW_FRAMEWORK_SUBPROCESS = ("framework", "subprocess", "slow")

#: Markers of every test of a module (by file stem).
MODULE_MARKS = {
    "test_dialect_torch": _FRAMEWORK,          # imports torch at module level
    "test_dialect_transformers": _FRAMEWORK,   # imports torch and transformers at module level
    "test_fail_closed": ("subprocess",),       # the gate's CLI and its supervised children
    "test_keras_adapters": _SLOW_FRAMEWORK_SUBPROCESS,
    "test_keras_injected": _SLOW_FRAMEWORK_SUBPROCESS,
    "test_keras_tf_crosscheck": _SLOW_FRAMEWORK_SUBPROCESS,
    "test_sharded": _FRAMEWORK,                # imports keras and jax at module level
}

#: Markers of single tests: ``"<file stem>::<test function>"`` (fnmatch patterns; the
#: parametrisation is left out).
TEST_MARKS = {
    "test_arguments::test_get_config_matches_keras": _SLOW_FRAMEWORK_SUBPROCESS,
    "test_bad_input::test_*_match_real_keras": _SLOW_FRAMEWORK_SUBPROCESS,
    "test_bad_input::test_the_gate_exits_2_*": ("subprocess",),
    "test_deviations::test_real_tensorflow_schedules_stay_within_the_models_ulps": _SLOW_FRAMEWORK_SUBPROCESS,
    "test_deviations::test_the_model_itself_conforms_under_its_entry_and_not_without": ("slow",),
    "test_dialect_optax::test_gate_passes_on_the_optax_vectors*": _SLOW_FRAMEWORK_SUBPROCESS,
    "test_dialect_optax::test_xla_cpu_keeps_a_bfloat16_momentum_product_in_float32": _FRAMEWORK_SUBPROCESS,
    "test_dialect_torch::test_gate_cli_conforms_on_the_torch_vectors": ("subprocess", "slow"),
    "test_dialect_transformers::test_real_transformers_conforms_on_its_vectors": ("subprocess", "slow"),
    "test_fuzzing::test_keras_adapters_survive_fuzzing": _SLOW_FRAMEWORK_SUBPROCESS,
    "test_fuzzing::test_ci_profile_draws_do_not_depend_on_loaded_modules": ("subprocess", "slow"),
    "test_fuzzing::test_ci_profile_draws_do_not_depend_on_what_the_adapter_measures": ("slow",),
    "test_fuzzing::test_failing_example_is_promoted_to_a_regression_vector": ("slow",),
    "test_fuzzing::test_reference_float32_lane_survives_ci_profile": ("slow",),
    "test_fuzzing::test_ci_profile_is_deterministic": ("slow",),
    "test_fuzzing::test_fuzzed_magnitudes_fit_the_lane": ("slow",),
    "test_gate::test_tolerance_policy_is_fresh": ("slow",),
    "test_vectors::test_freshness_check_names_changed_ids": ("slow",),
    "test_vectors::test_regeneration_is_byte_identical": ("slow",),
    "test_oracle::test_errors_within_a_priori_bounds": ("slow",),
    "test_gate::test_honest_low_precision_lanes_conform": ("slow",),
    "test_gate::test_reference_adapter_is_exact_in_float64": ("slow",),
    "test_gate::test_split_by_dtype_merges_lanes_and_a_crash_is_an_error": ("subprocess", "slow"),
    "test_gate::test_cli_*": ("subprocess",),
    "test_gate::test_results_file_*": ("subprocess",),
    "test_gate::test_parallel_adapters_merge_into_one_report": ("subprocess",),
    "test_gate::test_gpu_lanes_skip_adapters_that_see_no_gpu": ("subprocess",),
    "test_half_precision::test_matches_torch_within_one_ulp": _FRAMEWORK,
    "test_half_precision::test_matches_jax_within_one_ulp": _FRAMEWORK_SUBPROCESS,
    "test_pytest_entry::test_entry_point_runs_a_native_dialect": _FRAMEWORK,
    "test_sharded::test_sharded_*": ("subprocess",),
    "test_sharded::test_gate_fails_a_port_that_reduces_over_its_local_shard_only": ("subprocess",),
    "test_mutation_tool::test_every_mutant_killed": ("subprocess", "slow"),
    "test_mutation_tool::test_resume_carries_kills_and_retests_the_rest": ("subprocess", "slow"),
    "test_mutation_tool::test_unexplained_survivor_fails_and_is_listed": ("subprocess", "slow"),
    "test_mutation_tool::test_mutants_are_real_and_applied_to_the_copy_only": ("subprocess", "slow"),
    "test_mutation_tool::test_interrupted_run_leaves_the_tree_alone": ("subprocess", "slow"),
}

#: Markers of every test that uses a fixture (by fixture name; module-scoped fixtures that
#: run a real framework in a child process: ``slow`` on every test that uses one, since any
#: of them selected alone pays for the whole child).
FIXTURE_MARKS = {
    "keras_configs": _SLOW_FRAMEWORK_SUBPROCESS,
    "keras_errors": _SLOW_FRAMEWORK_SUBPROCESS,
    "keras_results": _SLOW_FRAMEWORK_SUBPROCESS,
    "real_optax": _SLOW_FRAMEWORK_SUBPROCESS,
    "real_optax_momentum": _SLOW_FRAMEWORK_SUBPROCESS,
}


def _load_hypothesis_profile():
    try:
        from conformance.fuzz import profiles
    except ImportError:  # hypothesis is a test extra; the rest of the suite runs without it
        return None
    try:
        return profiles.load(root=REPO / ".hypothesis")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


HYPOTHESIS_PROFILE = _load_hypothesis_profile()


def pytest_report_header(config):
    if HYPOTHESIS_PROFILE is None:
        return None
    return f"hypothesis profile: {HYPOTHESIS_PROFILE} (ADAFACTOR_HYPOTHESIS_PROFILE)"


# ----------------------------------------------------------------------------- markers
def marks_of(stem: str, function: str, fixtures=()) -> set:
    """The markers this file gives test ``function`` of module ``stem`` using ``fixtures``:
    from the tables, and ``subprocess`` (with ``framework`` where the job requires one) for
    a test that waits for a background job (tests/background.py)."""
    marks = set(MODULE_MARKS.get(stem, ()))
    for job in background.jobs_of(fixtures):
        marks.add("subprocess")
        if set(job.requires) & set(FRAMEWORKS):
            marks.add("framework")
    for pattern, names in TEST_MARKS.items():
        if fnmatch.fnmatchcase(f"{stem}::{function}", pattern):
            marks.update(names)
    for fixture in fixtures:
        marks.update(FIXTURE_MARKS.get(fixture, ()))
    return marks


#: The order the test directories run in (tests/ itself first): the framework tests last.
DIRECTORY_ORDER = ("", "reference", "corpus", "gate", "fuzz", "frameworks")


def run_order(items) -> list:
    """``items`` grouped by module as collected, the modules ordered by directory
    (``DIRECTORY_ORDER``), and the modules whose tests wait for a background job
    (tests/background.py) after all the others, so that the jobs run while the rest does."""
    tests = Path(__file__).resolve().parent
    waits = {item.path for item in items if background.jobs_of(getattr(item, "fixturenames", ()))}

    def key(item):
        path = Path(str(item.path)).resolve()
        parts = path.relative_to(tests).parts if path.is_relative_to(tests) else ("?", path.name)
        directory = parts[0] if len(parts) > 1 else ""
        rank = DIRECTORY_ORDER.index(directory) if directory in DIRECTORY_ORDER else len(DIRECTORY_ORDER)
        return item.path in waits, rank

    return sorted(items, key=key)


def pytest_collection_modifyitems(config, items):
    for item in items:
        stem = Path(str(item.path)).stem
        function = getattr(item, "originalname", None) or item.name.split("[")[0]
        for name in sorted(marks_of(stem, function, getattr(item, "fixturenames", ()))):
            item.add_marker(name)
    items[:] = run_order(items)


def _deselected_whole(markexpr: str, marks: set, registered: list) -> bool:
    """Whether ``markexpr`` deselects every test that carries ``marks``, whatever other
    registered markers it carries."""
    try:
        from _pytest.mark.expression import Expression

        expression = Expression.compile(markexpr)
    except Exception:  # a private pytest API or an expression pytest will report itself
        return False
    # Only the markers the expression names can change its value: trying the others would
    # cost 2**len(registered) evaluations for nothing.
    named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", markexpr)) - {"and", "or", "not"}
    others = [name for name in registered if name not in marks and name in named]
    for values in itertools.product((False, True), repeat=len(others)):
        present = marks | {name for name, value in zip(others, values) if value}
        if expression.evaluate(lambda name, **_: name in present):
            return False
    return True


def pytest_ignore_collect(collection_path, config):
    """Do not import a module whose every test ``-m`` deselects (``MODULE_MARKS``)."""
    markexpr = config.option.markexpr
    marks = set(MODULE_MARKS.get(Path(str(collection_path)).stem, ()))
    if not markexpr or not marks or collection_path.suffix != ".py":
        return None
    registered = [line.split(":")[0].strip() for line in config.getini("markers")]
    return True if _deselected_whole(markexpr, marks, registered) else None


# ----------------------------------------------------------------------------- background jobs
_QUEUE = pytest.StashKey()

def pytest_collection_finish(session):
    """Queue the background jobs (tests/background.py) that the selected tests use, in the
    order of their first use."""
    if session.config.option.collectonly:
        return
    order = []
    for item in session.items:
        for job in background.jobs_of(getattr(item, "fixturenames", ())):
            if job not in order and not job.missing():
                order.append(job)
    if order:
        session.config.stash[_QUEUE] = background.Queue(order)


def pytest_sessionfinish(session):
    queue = session.config.stash.get(_QUEUE, None)
    if queue is not None:
        queue.stop()


# ----------------------------------------------------------------------------- guards
@pytest.fixture(autouse=True)
def _marker_guard(request, monkeypatch):
    """Fails a test at teardown that starts a child process without ``subprocess`` or
    imports a framework without ``framework`` (see the module docstring)."""
    node = request.node
    spawned = []
    if node.get_closest_marker("subprocess") is None:
        original = subprocess.Popen.__init__
        main = threading.main_thread()

        def recording_init(self, args, *rest, **kwargs):
            if threading.current_thread() is main and not background.starting():  # not a background job
                spawned.append(args)
            original(self, args, *rest, **kwargs)

        monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    check_frameworks = node.get_closest_marker("framework") is None
    before = {name for name in FRAMEWORKS if name in sys.modules}
    yield
    problems = []
    if spawned:
        command = spawned[0] if isinstance(spawned[0], str) else " ".join(map(str, spawned[0]))
        problems.append(f"started {len(spawned)} child process(es) (first: {command[:200]!r}) "
                        "without the `subprocess` marker")
    if check_frameworks:
        imported = sorted(name for name in FRAMEWORKS if name in sys.modules and name not in before)
        if imported:
            problems.append(f"imported {', '.join(imported)} without the `framework` marker")
    if problems:
        pytest.fail(f"{node.nodeid}: " + "; ".join(problems) + ": add the marker (tests/conftest.py "
                    "MODULE_MARKS/TEST_MARKS/FIXTURE_MARKS, or @pytest.mark.<name> on the test)", pytrace=False)


# ----------------------------------------------------------------------------- the corpus
@pytest.fixture(scope="session")
def corpus() -> dict:
    """The golden corpus, ``{relative path: document}``, loaded once per test process
    (``tests.helpers.corpus``); read-only."""
    return helpers.corpus()


@pytest.fixture(scope="session")
def corpus_vectors() -> tuple:
    """Every corpus vector as ``(relative path, vector)``, loaded once per test process
    (``tests.helpers.corpus_vectors``); read-only."""
    return helpers.corpus_vectors()
