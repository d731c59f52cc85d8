"""The adapter registry (conformance/adapters/registry.py) and the adapter protocol's own
example (conformance/adapters/base.py): every registered adapter loads as the class its
entry names and declares the entry's dialects and expectation file; a missing framework is
a "not installed" reason naming the pip extra; the documented example adapter conforms."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

from conformance import expectations
from conformance.adapters import ADAPTERS, REGISTRY, AdapterEntry, AdapterError, base, resolve
from conformance.adapters.registry import registered
from tests.helpers import REPO, run_lane, select


def test_every_entry_loads_as_declared(monkeypatch):
    """Loading imports no framework (the adapters import theirs when they run), so every
    entry is checked whatever is installed."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # the sharded adapter asks for 4 host devices
    for name, entry in ADAPTERS.items():
        adapter = entry.load()
        assert adapter.name == name
        assert adapter.dialects == entry.dialects, name
        assert (adapter.expectations or adapter.name) == entry.expectations, name
        assert REGISTRY[name] == entry.target
        assert type(adapter).__name__ == entry.target.split(":")[1]
    assert ADAPTERS["reference"].dialects == ("keras", "torch", "optax", "transformers", "pytorch_optimizer",
                                              "timm_bigvision", "timm")
    assert ADAPTERS["keras-jax-sharded"].expectations == "keras-jax"


def test_every_expectation_file_belongs_to_a_registered_adapter():
    stems = {path.stem for path in expectations.DIRECTORY.glob("*.txt")}
    assert stems and stems <= {entry.expectations for entry in ADAPTERS.values()}, stems


def test_a_missing_framework_names_the_module_and_the_pip_extra():
    entry = AdapterEntry("fake", "fake_port.adapter:FakeAdapter", requires=("numpy", "no_such_framework_xyz"),
                         extra="fake")
    assert entry.missing() == "not installed: no_such_framework_xyz (pip install -e '.[fake]')"
    assert AdapterEntry("np", "x:Y", requires=("numpy",)).missing() is None
    with pytest.raises(AdapterError, match="cannot import 'fake_port.adapter'"):
        entry.load()


def test_unknown_names_and_targets_are_clear_errors():
    with pytest.raises(AdapterError, match=r"unknown adapter 'no-such-adapter': use one of \[.*'reference'"):
        resolve("no-such-adapter")
    with pytest.raises(AdapterError, match="'conformance.adapters.base' has no 'Nope'"):
        resolve("conformance.adapters.base:Nope")
    with pytest.raises(AdapterError, match="Session is not a conformance.adapters.Adapter"):
        resolve("conformance.adapters.base:Session")
    with pytest.raises(AdapterError, match="unknown adapter"):
        registered("no-such-adapter")


def _documented_example() -> dict:
    """Execute the code block (after ``::``, up to the first unindented line) of
    conformance/adapters/base.py's docstring; return its names."""
    lines = []
    for line in inspect.getdoc(base).split("::\n", 1)[1].splitlines():
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line)
    namespace: dict = {}
    exec(compile(textwrap.dedent("\n".join(lines)), "<conformance/adapters/base.py example>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("mode", ["teacher", "trajectory"])
def test_the_documented_example_adapter_conforms(mode):
    adapter = _documented_example()["MyAdapter"]()
    vectors = select(["defaults/", "shapes/"])
    lane = run_lane(adapter, vectors, "float64", mode)
    assert lane.graded == len(vectors) > 20, lane.counts()
    assert lane.counts()["pass"] == len(vectors), [(o.id, o.status, o.reason) for o in lane.outcomes
                                                    if o.status != "pass"]


@pytest.mark.subprocess
def test_listing_and_loading_adapters_imports_no_framework():
    """The registry and every adapter class load without importing a framework (each
    imports its own when it runs), so ``list`` and ``--adapter all``'s checks stay fast."""
    script = ("import sys\nfrom conformance.adapters import ADAPTERS\nfor e in ADAPTERS.values(): e.load()\n"
              "print(sorted(m for m in ('torch', 'jax', 'keras', 'tensorflow', 'optax', 'transformers') "
              "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_groups_split_the_registry_and_the_main_job_leaves_the_distributed_lanes_out():
    """``--adapter all`` (make check) runs group ``all``; the torch distributed lanes, which
    start several processes each, are group ``distributed`` (make check-distributed)."""
    from conformance.adapters.registry import GROUPS

    assert set(GROUPS) == {"all", "distributed"}
    assert sorted(n for names in GROUPS.values() for n in names) == sorted(ADAPTERS)
    assert GROUPS["distributed"] and all(n.startswith("torch-dtensor-") for n in GROUPS["distributed"])
    assert "reference" in GROUPS["all"] and not set(GROUPS["all"]) & set(GROUPS["distributed"])


def test_a_group_cannot_be_combined_with_other_adapters(capsys):
    from conformance import cli

    assert cli.main(["run", "--adapter", "distributed", "--adapter", "reference"]) == cli.EXIT_ERROR
    assert "a group" in capsys.readouterr().err
