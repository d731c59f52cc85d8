"""Shared pytest configuration: the Hypothesis profiles of the property suite.

Select a profile with the environment variable ``ADAFACTOR_HYPOTHESIS_PROFILE`` (default
``ci``); the profile applies to every Hypothesis test under tests/ (today
tests/test_properties.py):

``ci`` (default; what ``make test`` and CI run)
    ``derandomize=True``: the examples are a fixed function of each test, so every run
    draws the same ones and CI cannot flake; ``max_examples=100``; ``database=None``: no
    example database is read or written; ``deadline=None`` (a timing deadline would make a
    slow machine fail); ``print_blob=True`` (a failure prints ``@reproduce_failure``);
    the timing-based ``too_slow`` health check is off, since it is the one check whose
    outcome depends on the machine; no ``target`` phase: targeting climbs on measured
    values whose last bits differ between machines (SIMD reductions), which would make the
    "fixed" sequence machine-dependent; and no constants harvested from loaded local modules
    (``stable_constants``), which would make the sequence depend on what else the process
    imported (conformance/fuzz/profiles.py).
``dev`` (local exploration)
    random examples (a new sample every run), ``max_examples=500``, Hypothesis's default
    local database in ``.hypothesis/examples`` (failures are replayed first next time).
``campaign`` (long fuzzing runs, e.g. overnight)
    random, ``max_examples=20000``, a persistent ``DirectoryBasedExampleDatabase`` at
    ``.hypothesis/campaign`` (ignored by git: ``.hypothesis/``) that keeps every failing
    and interesting example across runs.

    ADAFACTOR_HYPOTHESIS_PROFILE=dev .venv/bin/python -m pytest tests/test_properties.py
    ADAFACTOR_HYPOTHESIS_PROFILE=campaign .venv/bin/python -m pytest tests/test_properties.py -x

Tests that are heavier than the rest ask for a fraction of the profile's ``max_examples``
(``examples(fraction)`` in tests/test_properties.py), so the profiles scale them too.
Add ``--hypothesis-show-statistics`` to see examples, discards and run time per test.
"""

import os
from pathlib import Path

import pytest

try:
    from hypothesis import HealthCheck, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    from conformance.fuzz.profiles import CI_PHASES
except ImportError:  # hypothesis is a test extra; the rest of the suite runs without it
    settings = None

PROFILE_VARIABLE = "ADAFACTOR_HYPOTHESIS_PROFILE"
PROFILES = ("ci", "dev", "campaign")
REPO = Path(__file__).resolve().parent.parent

if settings is not None:
    settings.register_profile(
        "ci", max_examples=100, derandomize=True, database=None, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow], phases=CI_PHASES)
    settings.register_profile("dev", max_examples=500, deadline=None, print_blob=True)
    settings.register_profile(
        "campaign", max_examples=20000, deadline=None, print_blob=True,
        database=DirectoryBasedExampleDatabase(str(REPO / ".hypothesis" / "campaign")))
    _profile = os.environ.get(PROFILE_VARIABLE, "ci") or "ci"
    if _profile not in PROFILES:
        raise pytest.UsageError(f"{PROFILE_VARIABLE}={_profile!r}: use one of {', '.join(PROFILES)}")
    settings.load_profile(_profile)
    if _profile == "ci":
        # The same examples whatever the process imported (conformance/fuzz/profiles.py).
        from conformance.fuzz.profiles import stable_constants

        stable_constants()


def pytest_report_header(config):
    if settings is None:
        return None
    return f"hypothesis profile: {os.environ.get(PROFILE_VARIABLE, 'ci') or 'ci'} ({PROFILE_VARIABLE})"
