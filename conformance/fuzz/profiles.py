"""Hypothesis profiles for the property suite and the differential fuzzer.

* ``ci``: derandomized (the same examples every run, so CI is never flaky), bounded, no
  example database, and no ``target`` phase; what ``make test`` runs. Targeting climbs on
  the *measured* error of the implementation under test, so with it the examples drawn
  after the first few depend on the last bits an adapter computes, which differ between
  machines (instruction sets, library builds): a derandomized run then draws different
  examples on different machines. Without it the sequence depends on the seed alone,
  once ``stable_constants`` (below) is in force. Teacher-forced only.
* ``dev``: random, a few hundred examples, teacher-forced and free-running (trajectory)
  drawn per example, larger shapes and longer runs (``DEPTH``).
* ``campaign``: random, many examples, deeper still (overnight runs).

``dev`` and ``campaign`` keep one example database per adapter, dtype and regime under
``.hypothesis/<profile>/<adapter>-<dtype>/<regime>`` (``database_path``), so a failure found
on one adapter or dtype replays first on that one only, on every later run.

Every profile splits its examples into quotas (``quotas``): 30 % drawn freely, the rest
shared equally by the deep regimes of ``strategies.REGIMES``, each built to bind.

The same three names are registered as Hypothesis profiles for the property suite
(``register``, ``load``; tests/conftest.py loads the one ``ADAFACTOR_HYPOTHESIS_PROFILE``
names): ``PROPERTY_EXAMPLES`` examples per property test, the property suite's example
database under ``.hypothesis/<profile>/properties`` outside ``ci``, and otherwise the
settings the fuzzer gets from ``settings``. This module is the one definition of the
profiles; nothing else registers any.

Select with ``ADAFACTOR_HYPOTHESIS_PROFILE`` (tests; the fuzz CLI's default) or
``--profile`` (the fuzz CLI).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import HealthCheck, Phase
from hypothesis import settings as _settings
from hypothesis.database import DirectoryBasedExampleDatabase

from conformance.fuzz.strategies import FREE, REGIMES, Depth

#: The environment variable naming the profile of the test suite (and the fuzz CLI's default).
PROFILE_VARIABLE = "ADAFACTOR_HYPOTHESIS_PROFILE"
#: Examples per differential fuzzing run (``conformance.fuzz.differential.fuzz``).
EXAMPLES = {"ci": 60, "dev": 300, "campaign": 20000}
#: Examples per property test (tests/reference/test_properties.py; its heavier tests ask for a fraction).
PROPERTY_EXAMPLES = {"ci": 100, "dev": 500, "campaign": 20000}
#: How examples are graded: ``both`` draws teacher-forced or trajectory per example.
MODES = {"ci": "teacher", "dev": "both", "campaign": "both"}
#: How far the examples reach (shapes, steps; see ``strategies.Depth``).
DEPTH = {
    "ci": Depth(max_extent=6, max_steps=8, long_steps=(9, 14), long_axis=(65, 130), max_frequency=4,
                updates=(2, 3)),
    "dev": Depth(max_extent=12, max_steps=16, long_steps=(9, 40), long_axis=(65, 520), max_frequency=8,
                 updates=(2, 5)),
    "campaign": Depth(max_extent=16, max_steps=24, long_steps=(9, 64), long_axis=(65, 1030), max_frequency=10,
                      updates=(2, 8)),
}
#: Share of each profile's examples drawn without a regime (``strategies.FREE``).
FREE_SHARE = 0.3

#: What every profile starts from: Hypothesis's own defaults, whatever profile is loaded.
_BASE = _settings.get_profile("default")

#: Every phase but ``target`` (see the module docstring).
CI_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)


def quotas(profile: str, max_examples: int | None = None) -> dict:
    """``{regime: examples}``: ``FREE_SHARE`` of the total drawn freely, the rest split
    equally between the deep regimes (the first ones get the remainder). 60 examples:
    18 free and 6 per regime."""
    if profile not in EXAMPLES:
        raise ValueError(f"unknown profile {profile!r}; use one of {sorted(EXAMPLES)}")
    total = max_examples or EXAMPLES[profile]
    free = round(total * FREE_SHARE)
    each, extra = divmod(total - free, len(REGIMES))
    out = {FREE: free}
    for index, name in enumerate(REGIMES):
        out[name] = each + (1 if index < extra else 0)
    return out


def database_path(profile: str, adapter: str, dtype: str, regime: str = FREE,
                  root: Path | str = ".hypothesis") -> Path | None:
    """Where ``dev`` and ``campaign`` keep the examples of one adapter, dtype and regime
    (``None`` for ``ci``, which keeps none). An adapter given as ``module:Class`` becomes a
    file-name-safe string."""
    if profile == "ci":
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", adapter)
    return Path(root) / profile / f"{safe}-{dtype}" / regime


def settings(profile: str, max_examples: int | None = None, database: Path | str | None = None,
             shrink: bool = True) -> _settings:
    """A ``hypothesis.settings`` object for the differential fuzzer. ``database``: the
    example database directory of ``dev`` and ``campaign`` (``database_path``); the CI
    profile never has one. ``shrink=False``: no shrink phase."""
    if profile not in EXAMPLES:
        raise ValueError(f"unknown profile {profile!r}; use one of {sorted(EXAMPLES)}")
    n = max_examples or EXAMPLES[profile]
    if profile == "ci":
        stable_constants()
        phases = CI_PHASES if shrink else tuple(p for p in CI_PHASES if p is not Phase.shrink)
        # too_slow is the one health check whose outcome depends on the machine.
        return _settings(_BASE, max_examples=n, derandomize=True, database=None, deadline=None, print_blob=True,
                         phases=phases, suppress_health_check=[HealthCheck.too_slow])
    if database is None:
        database = Path(".hypothesis") / profile / "default"
    phases = tuple(Phase) if shrink else tuple(p for p in Phase if p is not Phase.shrink)
    return _settings(_BASE, max_examples=n, deadline=None, print_blob=True, phases=phases,
                     database=DirectoryBasedExampleDatabase(str(database)))


def selected(environ=None) -> str:
    """The profile ``ADAFACTOR_HYPOTHESIS_PROFILE`` names: ``ci`` when it is unset or empty;
    a ``ValueError`` naming the value when it names no profile."""
    environ = os.environ if environ is None else environ
    name = environ.get(PROFILE_VARIABLE) or "ci"
    if name not in EXAMPLES:
        raise ValueError(f"{PROFILE_VARIABLE}={name!r}: use one of {', '.join(EXAMPLES)}")
    return name


def register(root: Path | str = ".hypothesis") -> None:
    """Register ``ci``, ``dev`` and ``campaign`` as Hypothesis profiles for the property
    suite: ``settings(profile, PROPERTY_EXAMPLES[profile])``, with the example database of
    ``dev`` and ``campaign`` at ``<root>/<profile>/properties``."""
    for name in EXAMPLES:
        database = None if name == "ci" else Path(root) / name / "properties"
        _settings.register_profile(name, parent=settings(name, PROPERTY_EXAMPLES[name], database=database))


def load(profile: str | None = None, root: Path | str = ".hypothesis") -> str:
    """Register the profiles (``register``) and make ``profile`` (default: ``selected()``)
    Hypothesis's default settings; returns its name. For ``ci`` also ``stable_constants()``,
    so the derandomized examples do not depend on what the process imported."""
    name = selected() if profile is None else profile
    if name not in EXAMPLES:
        raise ValueError(f"unknown profile {name!r}; use one of {sorted(EXAMPLES)}")
    register(root)
    _settings.load_profile(name)
    if name == "ci":
        stable_constants()
    return name


_EMPTY_CONSTANTS = None


def stable_constants() -> bool:
    """Stop Hypothesis from mixing constants found in the source of *loaded local modules*
    into generated values, so that a derandomized run draws the same examples whatever
    else the process has imported. Returns whether the hook was found.

    Hypothesis (6.155.2, hypothesis/internal/conjecture/providers.py:325-380 and 765-800)
    draws, with probability 0.05 per choice, a constant collected from every non-library
    module in ``sys.modules``; which modules those are depends on how the process was
    started (the CLI, ``pytest tests/fuzz/test_fuzzing.py``, or the whole suite), and editing
    any of them changes the draws. We found this when the same CI-profile fuzz drew
    different examples under ``pytest tests/`` than under ``pytest tests/fuzz/test_fuzzing.py``.
    Hypothesis's own global constants (fixed per Hypothesis version) stay in use. This
    patches a private function: if a future Hypothesis renames it, nothing is patched, the
    return value says so, and tests/fuzz/test_fuzzing.py fails loudly.
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
