"""The gate as pytest tests: ``conformance_tests(...)``, for a port that wants its conformance
suite in a test module of its own. Most ports need no module: the plugin
(conformance/pytest_plugin.py, ``pytest --adafactor-adapter mypkg.port:MyAdapter`` or the
``adafactor_adapter`` ini key) collects the same tests itself. In a module::

    # test_adafactor_conformance.py
    from conformance.pytest_entry import conformance_tests

    test_conformance = conformance_tests("mypkg.port:MyAdapter", dtypes=["float32"])

Every argument left out is the plugin's option (``--adafactor-dtypes``, the ``adafactor_dtypes``
ini key, ...), else its default; ``conformance_tests()`` with no argument is the plugin's suite.

This collects one test per vector, dtype and mode (ids like
``float32-teacher-arguments/clipnorm/0.5``; ``-k float32-teacher`` selects a lane), each
marked ``adafactor`` and with its dtype and mode where the plugin is active (an adapter named
by ``--adafactor-adapter`` or the ini key). A vector that deviates fails with the runner's failure details and a command that
reproduces it (the adapter as given, a ``module:Class`` import spec included, the corpus when
not the installed one, every expectation file); skip/xfail entries (the adapter's expectation
file and ``xfail_files``) become pytest skips and xfails; an unexpected pass warns, or fails
with ``strict=True``.

Nothing checked is never success: one more test, ``anything-graded`` (collected last),
fails with NOTHING CHECKED and why when no vector was graded (run and compared, its verdict
not replaced by a skip or xfail): no vector of the adapter's dialects selected, every test
skipped (a dtype or device the adapter does not run), every vector xfail. Where the other
tests ran elsewhere or were deselected (pytest-xdist, ``-k``), it replays the selection
itself until one vector is graded.
"""

from __future__ import annotations

import inspect
import warnings
from collections import Counter
from pathlib import Path

import pytest

from conformance import expectations, runner
from conformance import vectorfile as vf
from conformance.adapters import ADAPTERS, resolve
from conformance.pytest_plugin import Settings, current_settings, default_vectors_dir
from conformance.tolerance import Policy

#: The checkout's corpus (kept for callers of 1.0; the default is now the installed corpus,
#: conformance.corpus.default_vectors_dir()).
DEFAULT_VECTORS = Path(__file__).resolve().parent.parent / "vectors"
#: The id of the test that fails when no vector was graded.
GUARD_ID = "anything-graded"


def conformance_tests(adapter: str | None = None, dtypes=None, modes=None, vectors=None, flags=None,
                      device: str | None = None, xfail_files=None, strict: bool | None = None, vectors_dir=None,
                      dialects=None, *, _origin: str = "explicit"):
    """A parametrized pytest test function over the selected vectors. Each argument left
    None is the plugin's option (conformance/pytest_plugin.py), else its default: dtypes
    float64 and float32, both modes, every vector, cpu, the installed corpus. ``dialects``:
    which vectors the adapter replays (``keras``, ``torch``, ``optax``, ``transformers``); by
    default the registered adapter's own (``ADAPTERS[name].dialects``: ``torch`` for torch and
    torch-foreach, ...; every dialect for ``reference``), else ``("keras",)``, known without
    importing the framework."""
    given = current_settings()
    explicit = {"dtypes": dtypes, "modes": modes, "vectors": vectors, "flags": flags, "dialects": dialects}
    settings = Settings(
        adapter=adapter or given.adapter,
        **{k: given.__dict__[k] if v is None else (tuple(v.split(",")) if isinstance(v, str) else tuple(v))
           for k, v in explicit.items()},
        device=device or given.device,
        vectors_dir=given.vectors_dir if vectors_dir is None else Path(vectors_dir),
        xfail_files=given.xfail_files if xfail_files is None else tuple(Path(p) for p in xfail_files),
        strict_xpass=given.strict_xpass if strict is None else bool(strict),
        sources=given.sources)
    settings.check()
    if not settings.adapter:
        raise ValueError("conformance_tests(): no adapter: pass one (a registered name or 'package.module:Class') "
                         "or set --adafactor-adapter / the adafactor_adapter ini key")
    adapter, dtypes, modes, device = settings.adapter, settings.dtypes, settings.modes, settings.device
    vectors, flags, xfail_files, strict = settings.vectors, settings.flags, settings.xfail_files, settings.strict_xpass
    vectors_dir = settings.vectors_dir or default_vectors_dir()
    documents = vf.load_corpus(vectors_dir)
    dialects = settings.dialects
    if dialects is None:
        dialects = ADAPTERS[adapter].dialects if adapter in ADAPTERS else ("keras",)
    selected = [(relative, vector) for relative, vector in runner.select(documents, list(vectors), list(flags))
                if vector.dialect in dialects]
    cases = [(dtype, mode, relative, vector) for dtype in dtypes for mode in modes for relative, vector in selected]
    params = [pytest.param(*case, id=f"{case[0]}-{case[1]}-{case[3].id}") for case in cases]
    params.append(pytest.param(None, None, None, None, id=GUARD_ID))
    state = {}
    graded = {"count": 0}

    def setup():
        if not state:  # all or nothing: an error here is raised again by every test
            resolved = resolve(adapter)
            entries = expectations.for_adapter(resolved.expectations or resolved.name, xfail_files)
            everything = list(vf.iter_vectors(documents))
            expectations.check_flags(entries, {f for _, v in everything for f in v.flags})
            for dtype in dtypes:
                for mode in modes:
                    expectations.check_lane(entries, [v for _, v in everything if v.dialect in dialects],
                                            dtype, mode, device)
            state.update(adapter=resolved, entries=entries, policy=Policy.load())
        return state["adapter"], state["entries"], state["policy"]

    def grade(dtype, mode, relative, vector):
        """(outcome, None), or (None, why) when the device cannot be used."""
        the_adapter, entries, policy = setup()
        why = the_adapter.device_available(device)
        if why:
            return None, f"device {device}: {why}"
        outcome = runner.run_vector(the_adapter, vector, Path(vectors_dir) / relative, dtype, device, mode,
                                    policy, entries)
        if outcome.status not in runner.UNGRADED:
            graded["count"] += 1
        return outcome, None

    def guard():
        if graded["count"]:
            return
        what = (f"adapter {adapter!r}, dtypes {list(dtypes)}, modes {list(modes)}, vectors {list(vectors)}, "
                f"flags {list(flags)}, dialects {list(dialects)}, {vectors_dir}")
        if not cases:
            pytest.fail(f"NOTHING CHECKED: no vector selected ({what})", pytrace=False)
        reasons = Counter()
        for case in cases:  # none graded in this process: replay until one is
            outcome, why = grade(*case)
            if graded["count"]:
                return
            reasons[why or f"{outcome.status}: {outcome.reason}"] += 1
        shown = "; ".join(f"{n} x {why}" for why, n in reasons.most_common(3))
        pytest.fail(f"NOTHING CHECKED: none of the {len(cases)} tests graded a vector ({shown}) ({what})",
                    pytrace=False)

    @pytest.mark.parametrize("dtype,mode,relative,vector", params)
    def test_adafactor_conformance(dtype, mode, relative, vector):
        if vector is None:
            return guard()
        outcome, why = grade(dtype, mode, relative, vector)
        if why:
            pytest.skip(why)
        the_adapter = state["adapter"]
        if outcome.status == "skip":
            pytest.skip(outcome.reason)
        if outcome.status == "xfail":
            pytest.xfail(outcome.reason)
        if outcome.status == "xpass" and not strict:
            warnings.warn(f"XPASS {vector.id}: {outcome.reason}")
        if outcome.status == "fail" or (outcome.status == "xpass" and strict):
            lane = runner.LaneReport(the_adapter.name, dtype, device, mode,
                                     the_adapter.environment(device), 0.0, [outcome])
            pytest.fail(failure_text(lane, adapter_spec=adapter, vectors_dir=vectors_dir, xfail_files=xfail_files),
                        pytrace=False)

    test_adafactor_conformance._adafactor_conformance = _origin  # the plugin marks and deduplicates by it
    test_adafactor_conformance._adafactor_lanes = tuple(dtypes) + tuple(modes)  # the guard's markers
    return test_adafactor_conformance


def failure_text(lane, *, adapter_spec: str, vectors_dir, xfail_files) -> str:
    """The CLI's failure details (conformance.report.failures) for one lane, whose reproduce
    line names the adapter as given, the corpus and every expectation file."""
    from conformance import report

    context = {"vectors_dir": vectors_dir, "xfail_files": tuple(xfail_files), "adapter_spec": adapter_spec}
    if "adapter_spec" in inspect.signature(report.failures).parameters:
        return report.failures(lane, **context)
    lane.environment = {**lane.environment, "adapter_spec": adapter_spec}  # a gate before 1.1
    return report.failures(lane)
