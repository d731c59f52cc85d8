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

__all__ = ["Case", "generate_vector", "seed_for", "draw_inputs"]


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
        return keras_vector(case, vector, initial, grads)
    from conformance.generator.dialects import dialect_vector

    return dialect_vector(case, vector, initial, grads, expect_error)
