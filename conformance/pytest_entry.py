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
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from conformance import expectations, runner
from conformance import vectorfile as vf
from conformance.adapters import resolve
from conformance.tolerance import Policy

DEFAULT_VECTORS = Path(__file__).resolve().parent.parent / "vectors"


#: The vectors each registered adapter replays (its ``dialects`` attribute), for collection.
DEFAULT_DIALECTS = {"reference": ("keras", "torch", "optax", "transformers"), "torch": ("torch",),
                    "torch-foreach": ("torch",), "optax": ("optax",), "transformers": ("transformers",)}


def conformance_tests(adapter: str, dtypes=("float64", "float32"), modes=("teacher", "trajectory"),
                      vectors=(), flags=(), device: str = "cpu", xfail_files=(), strict: bool = False,
                      vectors_dir=DEFAULT_VECTORS, dialects=None):
    """A parametrized pytest test function over the selected vectors. ``dialects``: which
    vectors the adapter replays (``keras``, ``torch``, ``optax``, ``transformers``); by
    default the registered adapter's own (``torch`` for torch and torch-foreach, ...; every
    dialect for ``reference``), else ``("keras",)``, known without importing the framework."""
    documents = vf.load_corpus(vectors_dir)
    if dialects is None:
        dialects = DEFAULT_DIALECTS.get(adapter, ("keras",))
    selected = [(relative, vector) for relative, vector in runner.select(documents, list(vectors), list(flags))
                if vf.dialect_of(vector) in dialects]
    params = [pytest.param(dtype, mode, relative, vector, id=f"{dtype}-{mode}-{vector['id']}")
              for dtype in dtypes for mode in modes for relative, vector in selected]
    state = {}

    def setup():
        if not state:
            state["adapter"] = resolve(adapter)
            resolved = state["adapter"]
            state["entries"] = expectations.for_adapter(resolved.expectations or resolved.name, xfail_files)
            state["policy"] = Policy.load()
        return state["adapter"], state["entries"], state["policy"]

    @pytest.mark.parametrize("dtype,mode,relative,vector", params)
    def test_adafactor_conformance(dtype, mode, relative, vector):
        the_adapter, entries, policy = setup()
        why = the_adapter.device_available(device)
        if why:
            pytest.skip(f"device {device}: {why}")
        outcome = runner.run_vector(the_adapter, vector, Path(vectors_dir) / relative, dtype, device, mode,
                                    policy, entries)
        if outcome.status == "skip":
            pytest.skip(outcome.reason)
        if outcome.status == "xfail":
            pytest.xfail(outcome.reason)
        if outcome.status == "xpass":
            if strict:
                pytest.fail(f"XPASS {vector['id']}: {outcome.reason}")
            warnings.warn(f"XPASS {vector['id']}: {outcome.reason}")
        if outcome.status == "fail":
            from conformance.report import failures
            lane = runner.LaneReport(the_adapter.name, dtype, device, mode,
                                     the_adapter.environment(device), 0.0, [outcome])
            pytest.fail(failures(lane), pytrace=False)

    return test_adafactor_conformance
