"""The gate as pytest tests, for ports whose CI is pytest.

In the port's test suite:

    # test_adafactor_conformance.py
    from conformance.pytest_entry import conformance_tests

    test_conformance = conformance_tests("mypkg.port:MyAdapter", dtypes=["float32"])

This collects one test per vector, dtype and mode (ids like
``float32-teacher-arguments/clipnorm/0.5``). A vector that deviates fails with the
runner's failure details and a command that reproduces it; skip/xfail entries (the
adapter's expectation file and ``xfail_files``) become pytest skips and xfails; an
unexpected pass warns, or fails with ``strict=True``.

Nothing checked is never success: one more test, ``anything-graded`` (collected last),
fails with NOTHING CHECKED and why when no vector was graded (run and compared, its verdict
not replaced by a skip or xfail): no vector of the adapter's dialects selected, every test
skipped (a dtype or device the adapter does not run), every vector xfail. Where the other
tests ran elsewhere or were deselected (pytest-xdist, ``-k``), it replays the selection
itself until one vector is graded.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pytest

from conformance import expectations, runner
from conformance import vectorfile as vf
from conformance.adapters import ADAPTERS, resolve
from conformance.tolerance import Policy

DEFAULT_VECTORS = Path(__file__).resolve().parent.parent / "vectors"
#: The id of the test that fails when no vector was graded.
GUARD_ID = "anything-graded"


def conformance_tests(adapter: str, dtypes=("float64", "float32"), modes=("teacher", "trajectory"),
                      vectors=(), flags=(), device: str = "cpu", xfail_files=(), strict: bool = False,
                      vectors_dir=DEFAULT_VECTORS, dialects=None):
    """A parametrized pytest test function over the selected vectors. ``dialects``: which
    vectors the adapter replays (``keras``, ``torch``, ``optax``, ``transformers``); by
    default the registered adapter's own (``ADAPTERS[name].dialects``: ``torch`` for torch and
    torch-foreach, ...; every dialect for ``reference``), else ``("keras",)``, known without
    importing the framework."""
    documents = vf.load_corpus(vectors_dir)
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
        if outcome.status == "xpass":
            if strict:
                pytest.fail(f"XPASS {vector.id}: {outcome.reason}")
            warnings.warn(f"XPASS {vector.id}: {outcome.reason}")
        if outcome.status == "fail":
            from conformance.report import failures
            lane = runner.LaneReport(the_adapter.name, dtype, device, mode,
                                     the_adapter.environment(device), 0.0, [outcome])
            pytest.fail(failures(lane), pytrace=False)

    return test_adafactor_conformance
