"""Hypothesis profiles for the property suite and the differential fuzzer.

* ``ci``: derandomized (the same examples every run, so CI is never flaky), bounded, no
  example database, and no ``target`` phase; what ``make test`` runs. Targeting climbs on
  the *measured* error of the implementation under test, so with it the examples drawn
  after the first few depend on the last bits an adapter computes, which differ between
  machines (instruction sets, library builds): a derandomized run then draws different
  examples on different machines. Without it the sequence depends on the seed alone,
  once ``stable_constants`` (below) is in force.
* ``dev``: random, a few hundred examples, the default local database.
* ``campaign``: random, many examples, a persistent database in ``.hypothesis/campaign``
  that remembers every failure across runs (overnight runs).

Select with ``ADAFACTOR_HYPOTHESIS_PROFILE`` (tests) or ``--profile`` (the fuzz CLI).
"""

from __future__ import annotations

from hypothesis import Phase
from hypothesis import settings as _settings
from hypothesis.database import DirectoryBasedExampleDatabase

EXAMPLES = {"ci": 60, "dev": 300, "campaign": 20000}

#: Every phase but ``target`` (see the module docstring).
CI_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)


def settings(profile: str, max_examples: int | None = None) -> _settings:
    """A ``hypothesis.settings`` object for the differential fuzzer."""
    if profile not in EXAMPLES:
        raise ValueError(f"unknown profile {profile!r}; use one of {sorted(EXAMPLES)}")
    n = max_examples or EXAMPLES[profile]
    if profile == "ci":
        stable_constants()
        return _settings(max_examples=n, derandomize=True, database=None, deadline=None, print_blob=True,
                         phases=CI_PHASES)
    if profile == "dev":
        return _settings(max_examples=n, deadline=None, print_blob=True)
    return _settings(max_examples=n, deadline=None, print_blob=True,
                     database=DirectoryBasedExampleDatabase(".hypothesis/campaign"))


_EMPTY_CONSTANTS = None


def stable_constants() -> bool:
    """Stop Hypothesis from mixing constants found in the source of *loaded local modules*
    into generated values, so that a derandomized run draws the same examples whatever
    else the process has imported. Returns whether the hook was found.

    Hypothesis (6.155.2, hypothesis/internal/conjecture/providers.py:325-380 and 765-800)
    draws, with probability 0.05 per choice, a constant collected from every non-library
    module in ``sys.modules``; which modules those are depends on how the process was
    started (the CLI, ``pytest tests/test_fuzzing.py``, or the whole suite), and editing
    any of them changes the draws. We found this when the same CI-profile fuzz drew
    different examples under ``pytest tests/`` than under ``pytest tests/test_fuzzing.py``.
    Hypothesis's own global constants (fixed per Hypothesis version) stay in use. This
    patches a private function: if a future Hypothesis renames it, nothing is patched, the
    return value says so, and tests/test_fuzzing.py fails loudly.
    """
    global _EMPTY_CONSTANTS
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover
        return False
    if not hasattr(providers, "_get_local_constants") or not hasattr(providers, "Constants"):
        return False
    if _EMPTY_CONSTANTS is None:
        _EMPTY_CONSTANTS = providers.Constants()
    if getattr(providers._get_local_constants, "__name__", "") != "_no_local_constants":
        def _no_local_constants():
            return _EMPTY_CONSTANTS

        providers._get_local_constants = _no_local_constants
        providers.CONSTANTS_CACHE.cache.clear()
    return True
