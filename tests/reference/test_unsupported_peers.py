"""The native dialects' tables of framework features they leave out (``UNSUPPORTED``) or now
model (``MODELLED``), reference/dialects/gaps.py: every entry complete, every cited source
line present in the installed framework (read as a file, the framework not imported; skipped
with the reason where it is not installed), the adapters' skip path (a vector that uses an
unsupported feature is skipped through ``Adapter.unsupported`` with the feature id and the
table in the reason), and the dialects' refusals. The comparisons with the real frameworks
are in test_unsupported_frameworks.py (marker ``framework``)."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.adapters.base import numpy_dtype
from reference.dialects import gaps, optax as optax_dialect, torch as torch_dialect, transformers as tf_dialect
from reference.dialects.gaps import Gap
from reference.state import Kind
from tests import helpers

MODULES = {"torch": torch_dialect, "optax": optax_dialect, "transformers": tf_dialect}
#: Adapter class of each dialect's real framework (the skip path lives there).
ADAPTERS = {"torch": "conformance.adapters.torch_adapter:TorchAdapter",
            "optax": "conformance.adapters.optax_adapter:OptaxAdapter",
            "transformers": "conformance.adapters.transformers_adapter:TransformersAdapter"}


def _entries():
    for dialect, module in MODULES.items():
        for table in ("UNSUPPORTED", "MODELLED"):
            for feature_id, gap in getattr(module, table).items():
                yield dialect, table, feature_id, gap


ENTRIES = list(_entries())
CITATIONS = [(dialect, fid, citation, needle) for dialect, _, fid, gap in ENTRIES for citation, needle in gap.evidence]


def _adapter(dialect: str):
    import importlib

    module, name = ADAPTERS[dialect].split(":")
    return getattr(importlib.import_module(module), name)()


@pytest.mark.parametrize("dialect,table,feature_id,gap", ENTRIES, ids=[f"{d}-{f}" for d, _, f, _ in ENTRIES])
def test_every_entry_is_complete(dialect, table, feature_id, gap):
    assert isinstance(gap, Gap)
    for field in ("feature", "framework", "how", "effect", "vectors"):
        assert getattr(gap, field).strip(), f"{dialect} {table}[{feature_id!r}].{field} is empty"
    assert gap.evidence, f"{dialect} {table}[{feature_id!r}] cites no source line"
    for citation, needle in gap.evidence:
        path, first, last = gaps.parse_evidence(citation)
        assert path.endswith(".py") and 0 < first <= last, citation
        assert needle.strip(), citation
    if table == "MODELLED":
        assert gap.detect is None, "a modelled feature is run, never skipped"


def test_feature_ids_are_unique_per_dialect_and_the_tables_disjoint():
    for dialect, module in MODULES.items():
        assert not set(module.UNSUPPORTED) & set(module.MODELLED), dialect


@pytest.mark.parametrize("dialect,feature_id,citation,needle", CITATIONS,
                         ids=[f"{d}-{f}-{c}" for d, f, c, _ in CITATIONS])
def test_every_citation_is_that_line_of_the_installed_framework(dialect, feature_id, citation, needle):
    path, first, last = gaps.parse_evidence(citation)
    package = path.split("/")[0]
    root = gaps.source_root(package)
    if root is None:
        pytest.skip(f"{package} is not installed: cannot check {citation} ({dialect} {feature_id!r})")
    source = root / path
    assert source.is_file(), f"{dialect} {feature_id!r}: {citation}: no file {source}"
    lines = source.read_text(encoding="utf-8").splitlines()
    assert last <= len(lines), f"{citation}: the file has {len(lines)} lines"
    cited = "\n".join(lines[first - 1:last])
    assert needle in cited, f"{dialect} {feature_id!r}: {needle!r} is not on {citation}:\n{cited}"


# ----------------------------------------------------------------------------- the skip path
def _probe(dialect: str, config: dict, exclude: dict):
    """A tiny valid vector of ``dialect`` that excludes variables as ``exclude`` says."""
    rng = np.random.default_rng(7)
    raw = helpers.build_vector(config, [rng.normal(size=(3, 2)), rng.normal(size=(2,))],
                               [[rng.normal(size=(3, 2)), rng.normal(size=(2,))]], dialect=dialect,
                               vector_id=f"{dialect}/probe/exclusion")
    raw["exclude_from_weight_decay"] = exclude
    return raw


SKIPS = [("torch", {"lr": 0.1, "weight_decay": 0.1}, {"var_index": [1]}, "param_groups"),
         ("transformers", {"lr": 0.1, "relative_step": False, "weight_decay": 0.1}, {"var_index": [1]},
          "param_groups"),
         ("optax", {"learning_rate": 0.1, "weight_decay_rate": 0.1}, {"var_names": ["dense/kernel_1"]},
          "weight_decay_mask_tree_or_callable")]


@pytest.mark.parametrize("dialect,config,exclude,feature_id", SKIPS, ids=[s[0] for s in SKIPS])
def test_a_vector_using_an_unsupported_feature_is_skipped_naming_it(dialect, config, exclude, feature_id):
    """Through the runner (``runner.run_vector``), both modes: status skip, and the reason
    names the feature id and the table. Nothing of the framework runs (the skip comes
    first), so this needs no framework."""
    raw = _probe(dialect, config, exclude)
    adapter = _adapter(dialect)
    for mode in ("teacher", "trajectory"):
        outcome = helpers.run_vector(adapter, f"{dialect}/probe.json", raw, "float64", mode)
        assert outcome.status == "skip", (mode, outcome.status, outcome.reason)
        assert f"unsupported feature {feature_id!r}" in outcome.reason, outcome.reason
        assert f"reference/dialects/{dialect}.py UNSUPPORTED" in outcome.reason, outcome.reason
    raw["exclude_from_weight_decay"] = None
    assert adapter.unsupported(raw, "float64", "cpu") is None, "the same vector without the feature runs"


def test_no_corpus_vector_is_skipped_by_a_table():
    """The tables skip nothing the corpus holds today: a vector they would skip is a gap to
    model or a vector to drop, never a silent skip."""
    from conformance.vector import as_vector

    for relative, raw in helpers.corpus_vectors():
        vector = as_vector(raw)
        if vector.dialect in MODULES:
            module = MODULES[vector.dialect]
            assert gaps.vector_skip_reason(vector.dialect, "?", module.UNSUPPORTED, vector) is None, vector.id


# ----------------------------------------------------------------------------- the dialects' refusals
@pytest.mark.parametrize("lr", [np.float32(0.1), np.array(0.1), np.array([0.1]), np.float16(0.1)],
                         ids=["float32", "0-d array", "1-element array", "float16"])
def test_torch_dialect_refuses_a_tensor_lr_by_name(lr):
    with pytest.raises(TypeError, match=r"UNSUPPORTED\['tensor_lr'\]"):
        torch_dialect.TorchAdafactor(lr=lr)


def test_torch_dialect_rejects_a_two_element_lr_as_torch_does():
    with pytest.raises(ValueError, match="^Tensor lr must be 1-element$"):
        torch_dialect.TorchAdafactor(lr=np.array([0.1, 0.2]))


@pytest.mark.parametrize("lr", [0.1, 1, np.float64(0.1)])
def test_torch_dialect_takes_python_numbers(lr):
    assert torch_dialect.TorchAdafactor(lr=lr).config["lr"] == lr


def test_torch_dialect_raises_torchs_error_on_complex_parameters():
    opt = torch_dialect.TorchAdafactor(lr=0.1)
    x = [np.ones(3, dtype=np.complex128)]
    with pytest.raises(RuntimeError, match="^Adafactor does not support complex parameters$"):
        opt.apply([np.ones(3, dtype=np.complex128)], x)
    assert np.all(x[0] == 1)


def test_optax_dialect_refuses_complex_parameters_by_name():
    opt = optax_dialect.OptaxAdafactor(learning_rate=0.1)
    x = [np.ones((3, 2), dtype=np.complex128)]
    with pytest.raises(TypeError, match=r"UNSUPPORTED\['complex_parameters'\]"):
        opt.apply([np.ones((3, 2), dtype=np.complex128)], x)


@pytest.mark.parametrize("argument,feature_id", [("learning_rate", "learning_rate_schedule"),
                                                 ("weight_decay_rate", "weight_decay_rate_schedule"),
                                                 ("weight_decay_mask", "weight_decay_mask_tree_or_callable")])
def test_optax_dialect_refuses_schedules_and_masks_by_name(argument, feature_id):
    with pytest.raises(ValueError, match=rf"UNSUPPORTED\['{feature_id}'\]"):
        optax_dialect.OptaxAdafactor(**{argument: lambda count: 0.1})


# ----------------------------------------------------------------------------- torch's step counter
def test_torch_step_counter_is_a_float32_increment_that_stops_at_2_to_the_24():
    big = 2 ** 24
    assert [torch_dialect.step_counter(i) for i in (0, 1, big - 2, big - 1, big, big + 1)] == \
        [1, 2, big - 1, big, big, big]
    assert torch_dialect.step_counter(big + 2) == big + 4  # float32(2**24 + 3) ties to even, upwards
    assert torch_dialect.step_counter(big + 4) == big + 4


def test_torch_dialect_counts_like_torch_past_2_to_the_24():
    big = 2 ** 24
    opt = torch_dialect.TorchAdafactor(lr=0.1)
    x = [np.ones((3, 2)), np.ones(2)]
    opt.build(x)
    opt.state.iterations = big - 2
    seen = []
    for _ in range(4):
        opt.apply([np.full((3, 2), 0.5), np.full(2, 0.5)], x)
        seen.append(opt.state.iterations)
    assert seen == [big - 1, big, big, big]


# ----------------------------------------------------------------------------- transformers' half lanes
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_transformers_dialect_keeps_float32_state_for_half_parameters(dtype):
    lane = numpy_dtype(dtype)
    opt = tf_dialect.TransformersAdafactor(beta1=0.9)
    x = [np.ones((3, 2), lane), np.ones(2, lane)]
    opt.build(x)
    opt.apply([np.full((3, 2), 0.5, lane), np.full(2, 0.5, lane)], x)
    assert [a.dtype for a in x] == [lane, lane]
    for kind in (Kind.R, Kind.C, Kind.V, Kind.MOMENTUM):
        assert all(a.dtype == np.float32 for a in opt.state[kind] if a is not None), kind
    assert set(tf_dialect.lane_state_dtypes(dtype)) == {Kind.R, Kind.C, Kind.V, Kind.MOMENTUM}
    assert tf_dialect.lane_state_dtypes("float32") == {}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_transformers_half_step_is_the_float32_step_rounded_once(dtype):
    """The half lane is the float32 lane's step on the widened values, rounded back."""
    lane = numpy_dtype(dtype)
    rng = np.random.default_rng(3)
    x0, g = [rng.normal(size=(4, 3)).astype(lane)], [rng.normal(size=(4, 3)).astype(lane)]
    half, single = tf_dialect.TransformersAdafactor(), tf_dialect.TransformersAdafactor()
    xh, xs = [x0[0].copy()], [x0[0].astype(np.float32)]
    half.build(xh), single.build(xs)
    for _ in range(3):
        half.apply(g, xh)
        single.apply([g[0].astype(np.float32)], xs)
        np.testing.assert_array_equal(np.asarray(xh[0], np.float64), np.asarray(xs[0].astype(lane), np.float64))
        xs[0][...] = xh[0].astype(np.float32)  # the parameter holds the rounded value
    np.testing.assert_array_equal(half.state.r[0], single.state.r[0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reference_and_transformers_adapters_declare_the_float32_state(dtype):
    from conformance.adapters.reference import ReferenceAdapter

    _, raw = next((r, v) for r, v in helpers.corpus_vectors() if v["dialect"] == "transformers")
    want = {kind: np.dtype(np.float32) for kind in (Kind.R, Kind.C, Kind.V, Kind.MOMENTUM)}
    assert ReferenceAdapter().state_dtypes(raw, dtype) == want
    assert _adapter("transformers").state_dtypes(raw, dtype) == want
    assert ReferenceAdapter().state_dtypes(raw, "float32") == {}
