"""The vector-building core: a ``Case`` in, a golden vector (a JSON-ready dict, format
vectors/README.md) out, by running the reference on the case's inputs.

``tools/generate_vectors.py`` drives it over the whole corpus and writes the files; the
differential fuzzer (conformance/fuzz) builds one vector per drawn example with it.

    case.py       the Case type, its seed and the inputs it draws
    keras.py      a Keras case through reference.Adafactor (the spec)
    dialects.py   a native dialect's case through reference/dialects/
    encoding.py   states (initial, expected) and state dtypes as JSON
    flags.py      what every flag means; the flags of special gradient values
"""

from __future__ import annotations

import numpy as np

from conformance import vectorfile as vf
from conformance.generator.case import Case, draw_inputs, seed_for
from conformance.generator.keras import expect_error, keras_vector

__all__ = ["Case", "generate_vector", "seed_for", "draw_inputs", "CORPUS_VERSION"]

#: The corpus's version, written to MANIFEST.json as ``corpus_version`` and printed by
#: ``python -m conformance --version`` and in every report. MAJOR.MINOR.PATCH: MAJOR is the
#: vector files' ``schema_version``; MINOR goes up whenever what a grade can depend on
#: changes (a vector added, removed or regenerated with other values, a field added to the
#: vectors); PATCH when only text no grade reads changes (descriptions, notes, provenance).
#: Rule and history: vectors/README.md, "Corpus version".
CORPUS_VERSION = "2.4.0"


def generate_vector(case: Case) -> dict:
    """The golden vector of ``case`` (a dict ready for ``vectorfile.dumps``). Raises
    AssertionError where the reference does not raise the error an invalid case declares."""
    seed = seed_for(case.id)
    initial, grads = draw_inputs(case, np.random.default_rng(seed))
    vector = {
        "id": case.id,
        "description": case.description,
        "seed": seed,
        "variables": [{"name": name, "initial": vf.encode_array(x)}
                      for (name, _), x in zip(case.variables, initial)],
        "exclude_from_weight_decay": case.exclude,
        "error": case.error,
    }
    if case.dialect == "keras":
        vector = keras_vector(case, vector, initial, grads)
    else:
        from conformance.generator.dialects import dialect_vector

        vector = dialect_vector(case, vector, initial, grads, expect_error)
    vector["config_integers"] = vf.config_integers(vector["config"])
    return vector
