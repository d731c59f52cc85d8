"""The golden vectors of the native dialects, one module per dialect
(``tools/dialect_cases/<dialect>.py``, each a ``CASES`` list of ``tools.vector_cases.Case``
with ``dialect`` set and ids ``<dialect>/<file>/<topic>/<variant>``), plus any ``NOTES``
for flags of their own. tools/generate_vectors.py appends them to the Keras cases and
writes ``vectors/<dialect>/<file>.json``."""

from __future__ import annotations

import importlib

from reference.dialects import DIALECTS

#: One module of cases per native dialect (every dialect of reference/dialects but the spec's).
DIALECT_MODULES = tuple(name for name in DIALECTS if name != "keras")


def load() -> tuple[list, dict]:
    """(every dialect case, every dialect-specific flag note)."""
    cases, notes = [], {}
    for name in DIALECT_MODULES:
        module = importlib.import_module(f"tools.dialect_cases.{name}")
        for case in module.CASES:
            if case.dialect != name or not case.id.startswith(f"{name}/"):
                raise ValueError(f"tools/dialect_cases/{name}.py: case {case.id!r} must have dialect={name!r} "
                                 f"and an id starting with '{name}/'")
        cases += module.CASES
        notes.update(getattr(module, "NOTES", {}))
    return cases, notes
