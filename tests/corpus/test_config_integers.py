"""Corpus 2.1.0 (issue 14, item 5): every vector says which config numbers are JSON integers
(``config_integers``), for readers whose JSON parser cannot tell ``1`` from ``1.0``, and
MANIFEST.json names the corpus (``corpus_version``). Format: vectors/README.md, "Numbers" and
"Corpus version"."""

import json

import pytest

from conformance import vectorfile as vf
from conformance.generator import CORPUS_VERSION
from tests.helpers import VECTORS


def _js_view(config):
    """What JSON.parse gives: one number type (Python floats), booleans kept."""
    return json.loads(json.dumps(config), parse_int=float)


def _pointer_get(document, pointer):
    node = document
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _retype(document, integers):
    """A JavaScript reader's rebuild of the exact config: the listed numbers become integers."""
    def walk(node, where):
        if isinstance(node, dict):
            return {k: walk(v, f"{where}/{k.replace('~', '~0').replace('/', '~1')}") for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}/{i}") for i, v in enumerate(node)]
        if where in integers:
            assert isinstance(node, float) and node.is_integer(), where
            return int(node)
        return node
    return walk(document, "")


def test_config_integers_of_nested_and_top_level_values():
    config = {"learning_rate": {"class_name": "PiecewiseConstantDecay",
                                "config": {"boundaries": [3, 6.0], "values": [1.0, 0.5, 0.1], "name": None}},
              "gradient_accumulation_steps": 2, "use_ema": True, "ema_momentum": 0.9, "odd/key~": 1}
    assert vf.config_integers(config) == ["/gradient_accumulation_steps", "/learning_rate/config/boundaries/0",
                                          "/odd~1key~0"]
    assert vf.config_integers({"learning_rate": 1.0, "relative_step": False}) == []


def test_every_vector_lists_its_config_integers_and_a_reader_can_rebuild_the_config(corpus):
    """The whole corpus: present everywhere, equal to the integers of the config, and enough
    for a single-number-type reader to get every config back with its exact JSON types."""
    seen = set()
    for _, vector in vf.iter_vectors(corpus):
        listed = vector.raw["config_integers"]
        assert listed == sorted(listed) and listed == vf.config_integers(vector.config), vector.id
        assert vector.config_integers == frozenset(listed)
        for pointer in listed:
            value = _pointer_get(vector.config, pointer)
            assert type(value) is int, (vector.id, pointer)
        rebuilt = _retype(_js_view(vector.config), set(listed))
        assert json.dumps(rebuilt, sort_keys=True) == json.dumps(vector.config, sort_keys=True), vector.id
        seen.update(listed)
    # The cases that need it: an integer learning rate (invalid in Keras), integer counts,
    # and integers nested in schedule configs.
    assert {"/learning_rate", "/gradient_accumulation_steps", "/ema_overwrite_frequency",
            "/learning_rate/config/decay_steps"} <= seen
    invalid = [v for _, v in vf.iter_vectors(corpus) if v.id == "invalid/learning_rate_int"]
    assert invalid and invalid[0].raw["config_integers"] == ["/learning_rate"]


def test_loader_refuses_config_integers_that_disagree_with_the_config(tmp_path):
    doc = json.loads((VECTORS / "keras" / "defaults.json").read_text())
    victim = next(v for v in doc["vectors"] if "/gradient_accumulation_steps" in v["config_integers"])
    victim["config_integers"] = []
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(vf.VectorFormatError) as info:
        vf.load_file(path, validate_schema=False)
    message = str(info.value)
    assert "bad.json" in message and victim["id"] in message and "config_integers = []" in message
    assert "/gradient_accumulation_steps" in message


def test_config_integers_is_optional_for_readers(tmp_path):
    """Additive in schema version 2: a vector without it still loads (and validates)."""
    doc = json.loads((VECTORS / "keras" / "defaults.json").read_text())
    for vector in doc["vectors"]:
        del vector["config_integers"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    vf.load_file(path, validate_schema=True)


def test_manifest_names_the_corpus_version(tmp_path):
    import shutil

    manifest = json.loads((VECTORS / vf.MANIFEST_NAME).read_text())
    assert manifest["corpus_version"] == CORPUS_VERSION
    assert CORPUS_VERSION.split(".")[0] == str(vf.SCHEMA_VERSION) == str(manifest["schema_version"])
    shutil.copytree(VECTORS, tmp_path / "v")
    for bad in ("2.1", "3.0.0", 210, "2.x.0"):
        manifest["corpus_version"] = bad
        (tmp_path / "v" / vf.MANIFEST_NAME).write_text(json.dumps(manifest))
        with pytest.raises(vf.VectorFormatError, match=r"MANIFEST\.json: corpus_version .* is not MAJOR\.MINOR"):
            vf.load_corpus(tmp_path / "v")
