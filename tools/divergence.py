"""The cross-framework divergence report: how far each native Adafactor lands from the Keras
spec on the spec's own vectors, and which of its differences accounts for how much.

    python -m tools.divergence                  # print the tables, write conformance/DIVERGENCE.md
    python -m tools.divergence --check          # exit 1 if conformance/DIVERGENCE.md is stale
    python -m tools.divergence --no-frameworks  # dialect references only (no torch/jax/transformers)

For every valid Keras vector whose configuration maps onto the framework's arguments
(``reference/dialects/<dialect>.py: from_keras``; schedules, clipping, EMA, accumulation,
loss scaling and None gradients do not map), the same initial variables and gradients are
run through:

  * the dialect's reference (float64), the framework as we read its source;
  * "Keras + one difference": the Keras stages (``reference/dialects/keras.py``) with exactly
    the stages of one entry of the dialect's ``DIFFERENCES`` replaced by the dialect's own
    (bound to the dialect's arguments as ``from_keras`` maps them), so each difference is
    measured alone (``keras_plus``);
  * the real framework through the adapter the registry (conformance/adapters/registry.py)
    lists for that dialect (float64, CPU, free-running), when installed: the residue against
    the dialect reference says how well the dialect explains it.

Distance = ``conformance.metrics.relative_error``: max |x - x_spec| / max |x_spec| over the
variables after the last step (normwise relative, float64). The table lists the median and the largest distance over the
mapped vectors; a difference "matters" on a vector when it alone moves the result by more
than 1e-12 relative.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from tabulate import tabulate

from conformance import vectorfile as vf
from conformance.metrics import relative_error
from reference.dialects import DIALECTS, DialectOptimizer, optimizer_class, stages_module
from reference.dialects.keras import KerasDialect
from reference.state import Kind

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "conformance" / "DIVERGENCE.md"
NATIVE = tuple(d for d in DIALECTS if d != "keras")
MATTERS = 1e-12


def _distance(x: list, spec: list) -> float:
    """Normwise relative distance of the variables ``x`` from ``spec`` (the one comparison
    helper, conformance.metrics.relative_error)."""
    return relative_error(x, spec)


def _run(opt: DialectOptimizer, initial, grads) -> list:
    variables = [np.array(x, dtype=np.float64) for x in initial]
    opt.build(variables)
    with np.errstate(all="ignore"):
        for row in grads:
            opt.apply(row, variables)
    return variables


def keras_plus(dialect: str, keras_config: dict, native_config: dict, stages: tuple) -> DialectOptimizer:
    """The Keras step of ``keras_config`` with the named ``stages`` replaced by the dialect's
    own (the dialect built from ``native_config``, so each replaced stage carries the
    dialect's arguments); the rest, and the learning rate, stay Keras's."""
    keras = KerasDialect(**_keras_step_config(keras_config))
    native = optimizer_class(dialect)(**native_config).stages
    keras.stages = keras.stages.replace(**{name: getattr(native, name) for name in stages})
    return keras


def _keras_step_config(config: dict) -> dict:
    keys = ("learning_rate", "beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold", "relative_step",
            "weight_decay")
    out = {k: config[k] for k in keys if k in config}
    out["learning_rate"] = float(out.get("learning_rate", 0.001))
    return out


def native_adapter(dialect: str):
    """The registered adapter (conformance.adapters.ADAPTERS) that runs the real framework of
    ``dialect``: the first entry, in registry order, that speaks only that dialect, else the
    first that speaks it among others (timm: its own dialect and pytorch_optimizer's); None
    when there is none or it is not installed."""
    from conformance.adapters import ADAPTERS, AdapterError

    entries = ([e for e in ADAPTERS.values() if e.speaks == (dialect,)]
               or [e for e in ADAPTERS.values() if e.speaks and dialect in e.speaks])
    if not entries or entries[0].missing() is not None:
        return None
    try:
        return entries[0].load()
    except AdapterError:
        return None


def _real(dialect: str, vector, native_config: dict, initial, grads):
    """The real framework, free-running from the dialect's zero state, or None."""
    from conformance.adapters import AdapterError
    from conformance.vector import as_vector

    adapter = native_adapter(dialect)
    if adapter is None:
        return None
    synthetic = as_vector(dict(vector.raw, config=native_config, dialect=dialect), dialect=dialect)
    variables = [np.array(x, dtype=np.float64) for x in initial]
    start = optimizer_class(dialect)(**native_config).zero_state(variables)
    start.values[Kind.VARIABLES] = variables
    try:
        session = adapter.create(synthetic, "float64", "cpu")
        session.load(start)
        for row in grads:
            session.step([np.array(g, dtype=np.float64) for g in row])
        return [np.asarray(x, dtype=np.float64) for x in session.read().variables]
    except AdapterError:
        return None


def mapped_vectors(documents, dialect: str):
    """(vector, native config, initial variables, grads) of every valid Keras vector whose
    configuration ``from_keras`` maps onto the dialect's arguments."""
    module = stages_module(dialect)
    for relative, vector in vf.iter_vectors(documents):
        if vector.dialect != "keras" or vector.result != "valid" or vector.exclude_from_weight_decay:
            continue
        config = vector.config
        if isinstance(config.get("learning_rate"), dict):
            continue
        native = module.from_keras(config)
        if native is None:
            continue
        grads = [step.grads for step in vector.steps]
        if any(g is None for row in grads for g in row):
            continue
        yield vector, native, vector.initial, grads


def measure(dialect: str, documents, frameworks: bool) -> dict:
    differences = stages_module(dialect).DIFFERENCES
    rows = {"dialect": [], "real": [], "residue": [], "alone": {name: [] for name in differences}}
    for vector, native, initial, grads in mapped_vectors(documents, dialect):
        spec = runner_final(vector)
        ours = _run(optimizer_class(dialect)(**native), initial, grads)
        rows["dialect"].append(_distance(ours, spec))
        for name, (stages, _) in differences.items():
            rows["alone"][name].append(_distance(_run(keras_plus(dialect, vector.config, native, stages),
                                                      initial, grads), spec))
        if frameworks:
            real = _real(dialect, vector, native, initial, grads)
            if real is not None:
                rows["real"].append(_distance(real, spec))
                rows["residue"].append(_distance(real, ours))
    return rows


def runner_final(vector) -> list:
    """The golden variables after the vector's last step."""
    return list(vector.steps[-1].expected.variables)


def _stat(values, fn):
    finite = [v for v in values if np.isfinite(v)]
    if not values:
        return "-"
    if not finite:
        return "inf"
    return f"{fn(finite):.2g}" + ("" if len(finite) == len(values) else f" ({len(values) - len(finite)} inf)")


def report(frameworks: bool = True) -> str:
    documents = vf.load_corpus(REPO / "vectors")
    parts = []
    summary = []
    for dialect in NATIVE:
        module = stages_module(dialect)
        cls = optimizer_class(dialect)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = measure(dialect, documents, frameworks)
        n = len(rows["dialect"])
        summary.append([cls.framework, n, _stat(rows["dialect"], np.median),
                        _stat(rows["dialect"], max), _stat(rows["real"], np.median), _stat(rows["real"], max),
                        _stat(rows["residue"], max)])
        table = []
        for name, (methods, why) in module.DIFFERENCES.items():
            alone = rows["alone"][name]
            matters = sum(1 for d in alone if d > MATTERS)
            table.append([name, f"{matters}/{n}", _stat(alone, np.median), _stat(alone, max), why])
        parts.append(f"### {cls.framework}\n\n"
                     f"{n} Keras vectors map (`from_keras` in reference/dialects/{dialect}.py).\n\n"
                     + tabulate(table, headers=["difference (alone, on top of Keras)", "matters on",
                                                "median", "max", "source"], tablefmt="github") + "\n"
                     + gaps_table(dialect, cls.framework))
    head = tabulate(summary, headers=["framework", "vectors", "dialect ref: median", "max", "real: median", "max",
                                      "real vs dialect ref: max"], tablefmt="github")
    return head + "\n\n" + "\n".join(parts)


def gaps_table(dialect: str, framework: str) -> str:
    """The dialect's features outside the vectors (reference/dialects/gaps.py): its
    ``UNSUPPORTED`` entries, then its ``MODELLED`` ones, as one table; "" when it has none.
    Static text from the dialect module, the same with or without the frameworks."""
    from reference.dialects.gaps import rows

    module = stages_module(dialect)
    unsupported, modelled = getattr(module, "UNSUPPORTED", {}), getattr(module, "MODELLED", {})
    if not unsupported and not modelled:
        return ""
    body = rows(unsupported, "unsupported") + rows(modelled, "modelled")
    return (f"\n{framework}'s features outside the vectors (`UNSUPPORTED` and `MODELLED` in "
            f"reference/dialects/{dialect}.py; a vector that uses an unsupported one the vector format can "
            f"express is skipped by the {dialect} adapter, the reason naming the feature id; citations are "
            f"checked against the installed framework by tests/reference/test_unsupported_peers.py):\n\n"
            + tabulate(body, headers=["feature", "what the framework does", "in the dialect", "evidence",
                                      "effect", "vectors"], tablefmt="github") + "\n")


BEGIN = "<!-- divergence: generated by python -m tools.divergence, do not edit -->"
END = "<!-- end of divergence -->"


def render(frameworks: bool) -> str:
    """The document with its generated block replaced. The report runs first (minutes with the
    frameworks) and the file is read after it, so edits made to the hand-written parts while it
    ran are kept."""
    block = report(frameworks)
    text = OUT.read_text(encoding="utf-8") if OUT.exists() else f"# Divergence\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if conformance/DIVERGENCE.md is stale")
    parser.add_argument("--no-frameworks", action="store_true", help="dialect references only")
    args = parser.parse_args(argv)
    text = render(not args.no_frameworks)
    if args.check:
        fresh = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("divergence report is fresh" if fresh else "conformance/DIVERGENCE.md is stale: run python -m tools.divergence")
        return 0 if fresh else 1
    vf.write_atomic(OUT, text)
    print(text.split(BEGIN, 1)[1].split(END, 1)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
