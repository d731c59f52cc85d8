"""What a native dialect does not model: its framework's features outside the vectors.

Each native dialect module (``reference/dialects/{torch,optax,transformers}.py``) lists the
features of its framework that it leaves out in ``UNSUPPORTED`` and the ones a dialect or
adapter once left out and now models in ``MODELLED``: feature id -> ``Gap`` (what the
framework does, why the dialect does not or how it does, the framework source lines that
say so, the measured size of the effect, and whether the vector format can express the
feature at all). ``tools/divergence.py`` renders the tables into conformance/DIVERGENCE.md;
tests/reference/test_unsupported_peers.py checks every cited line against the installed
framework and re-measures the effects.

Where the vector format can express an unsupported feature, ``Gap.detect(vector)`` says
whether a vector uses it, and the framework's adapter skips that vector through the one skip
mechanism the gate has (``Adapter.unsupported``) with ``skip_reason``'s text, which names
the feature id and the table. Where it cannot (``detect`` None), no vector reaches the
adapter with it, and the entry says why (``vectors``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


@dataclass(frozen=True)
class Gap:
    #: What the framework offers, as a user writes it.
    feature: str
    #: What the framework does with it.
    framework: str
    #: Unsupported: why the dialect leaves it out. Modelled: how (which function).
    how: str
    #: ((path:line or path:first-last, a string found on those lines), ...); the path is
    #: relative to the directory holding the framework's top-level package (site-packages).
    evidence: tuple
    #: The measured size of the effect (float64 unless it says otherwise), or why none is.
    effect: str
    #: Whether and how the vector format can express the feature.
    vectors: str
    #: For a feature the vectors can express: vector -> True when the vector uses it.
    detect: Optional[Callable] = None


def skip_reason(dialect: str, framework: str, feature_id: str, gap: Gap) -> str:
    """The skip text of a vector that uses an unsupported feature: names the feature id and
    the table it is in."""
    return (f"{framework}: unsupported feature {feature_id!r} (reference/dialects/{dialect}.py UNSUPPORTED): "
            f"{gap.how}")


def vector_skip_reason(dialect: str, framework: str, table: dict, vector) -> Optional[str]:
    """The skip reason of the first entry of ``table`` (an ``UNSUPPORTED``) whose ``detect``
    says ``vector`` uses it, or None."""
    for feature_id, gap in table.items():
        if gap.detect is not None and gap.detect(vector):
            return skip_reason(dialect, framework, feature_id, gap)
    return None


def source_root(package: str) -> Optional[Path]:
    """The directory that holds ``package`` (site-packages), where ``Gap.evidence`` paths
    start; None when it is not installed. Finds it without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent.parent


def parse_evidence(citation: str) -> tuple:
    """("torch/optim/_adafactor.py:84-85") -> ("torch/optim/_adafactor.py", 84, 85)."""
    path, _, lines = citation.rpartition(":")
    first, _, last = lines.partition("-")
    return path, int(first), int(last or first)


def has_exclusion(vector) -> bool:
    """Whether the vector excludes variables from weight decay (by index or by name)."""
    exclude = vector.exclude_from_weight_decay or {}
    return bool(exclude.get("var_index") or exclude.get("var_names"))


def rows(table: dict, status: str) -> list:
    """Rows of the DIVERGENCE.md table of one dialect's gaps: feature id, what the framework
    does, status and why or how, evidence, effect, vectors."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    return [[cell(f"`{fid}`: {g.feature}"), cell(g.framework), cell(f"**{status}**: {g.how}"),
             cell(", ".join(c for c, _ in g.evidence)), cell(g.effect), cell(g.vectors)] for fid, g in table.items()]


__all__ = ["Gap", "has_exclusion", "parse_evidence", "rows", "skip_reason", "source_root", "vector_skip_reason"]
