"""Hypothesis profiles for the property suite and the differential fuzzer.

* ``ci``: derandomized (the same examples every run, so CI is never flaky), bounded, no
  example database; what ``make test`` runs.
* ``dev``: random, a few hundred examples, the default local database.
* ``campaign``: random, many examples, a persistent database in ``.hypothesis/campaign``
  that remembers every failure across runs (overnight runs).

Select with ``ADAFACTOR_HYPOTHESIS_PROFILE`` (tests) or ``--profile`` (the fuzz CLI).
"""

from __future__ import annotations

from hypothesis import settings as _settings
from hypothesis.database import DirectoryBasedExampleDatabase

EXAMPLES = {"ci": 60, "dev": 300, "campaign": 20000}


def settings(profile: str, max_examples: int | None = None) -> _settings:
    """A ``hypothesis.settings`` object for the differential fuzzer."""
    if profile not in EXAMPLES:
        raise ValueError(f"unknown profile {profile!r}; use one of {sorted(EXAMPLES)}")
    n = max_examples or EXAMPLES[profile]
    if profile == "ci":
        return _settings(max_examples=n, derandomize=True, database=None, deadline=None, print_blob=True)
    if profile == "dev":
        return _settings(max_examples=n, deadline=None, print_blob=True)
    return _settings(max_examples=n, deadline=None, print_blob=True,
                     database=DirectoryBasedExampleDatabase(".hypothesis/campaign"))
