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
  * "Keras + one difference": the Keras stages (``reference/dialects/base.py``) with exactly
    the methods of one entry of the dialect's ``DIFFERENCES`` taken from the dialect, so each
    difference is measured alone;
  * the real framework through its adapter (float64, CPU, free-running), when installed: the
    residue against the dialect reference says how well the dialect explains it.

Distance = max |x - x_spec| / max |x_spec| over the variables after the last step
(normwise relative, float64). The table lists the median and the largest distance over the
mapped vectors; a difference "matters" on a vector when it alone moves the result by more
than 1e-12 relative.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

import numpy as np
from tabulate import tabulate

from conformance import replay
from conformance import vectorfile as vf
from reference.dialects import DialectOptimizer, KerasStage, optimizer_class
from reference.dialects.keras import KerasStages

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "conformance" / "DIVERGENCE.md"
NATIVE = ("torch", "optax", "transformers")
ADAPTERS = {"torch": "torch", "optax": "optax", "transformers": "transformers"}
MATTERS = 1e-12


def _distance(x: list, spec: list) -> float:
    scale = max(float(np.max(np.abs(s))) if s.size else 0.0 for s in spec)
    err = max(float(np.max(np.abs(a - s))) if s.size else 0.0 for a, s in zip(x, spec))
    if not np.isfinite(err):
        return float("inf")
    return err / scale if scale > 0 else err


def _run(opt: DialectOptimizer, initial, grads) -> list:
    variables = [np.array(x, dtype=np.float64) for x in initial]
    opt.build(variables)
    with np.errstate(all="ignore"):
        for row in grads:
            opt.apply(row, variables)
    return variables


def hybrid(dialect: str, keras_config: dict, native_config: dict, methods: tuple) -> DialectOptimizer:
    """Keras's stages with ``methods`` taken from the dialect's stage class. Attributes: the
    Keras values, plus the dialect's own attributes that Keras does not have."""
    keras_opt = KerasStages(**_keras_step_config(keras_config))
    native_stage = optimizer_class(dialect)(**native_config).stage
    namespace = {}
    for name in methods:
        value = getattr(type(native_stage), name)
        namespace[name] = value
    cls = type(f"KerasPlus_{dialect}", (KerasStage,), namespace)
    stage = object.__new__(cls)
    stage.__dict__.update({k: v for k, v in native_stage.__dict__.items() if k not in keras_opt.stage.__dict__})
    stage.__dict__.update(keras_opt.stage.__dict__)
    keras_opt.stage = stage
    return keras_opt


def _keras_step_config(config: dict) -> dict:
    keys = ("learning_rate", "beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold", "relative_step",
            "weight_decay")
    out = {k: config[k] for k in keys if k in config}
    out["learning_rate"] = float(out.get("learning_rate", 0.001))
    return out


def _real(dialect: str, vector: dict, native_config: dict, initial, grads):
    """The real framework, free-running from the vector's initial state, or None."""
    from conformance import runner
    from conformance.adapters import AdapterError, resolve

    try:
        adapter = resolve(ADAPTERS[dialect])
    except AdapterError:
        return None
    synthetic = dict(vector, config=native_config, dialect=dialect)
    try:
        session = adapter.create(synthetic, "float64", "cpu")
        session.load(runner.initial_state(synthetic))
        for row in grads:
            session.step(row)
        return [np.asarray(x, dtype=np.float64) for x in session.read().variables]
    except AdapterError:
        return None


def mapped_vectors(documents, dialect: str):
    module = importlib.import_module(f"reference.dialects.{dialect}")
    for relative, vector in vf.iter_vectors(documents):
        if vf.dialect_of(vector) != "keras" or vector["result"] != "valid" or vector["exclude_from_weight_decay"]:
            continue
        config = vector["config"]
        if isinstance(config.get("learning_rate"), dict):
            continue
        native = module.from_keras(config)
        if native is None:
            continue
        grads = [replay.decode_grads(vector, s) for s in vector["steps"]]
        if any(g is None for row in grads for g in row):
            continue
        yield vector, native, replay.initial_variables(vector), grads


def measure(dialect: str, documents, frameworks: bool) -> dict:
    module = importlib.import_module(f"reference.dialects.{dialect}")
    differences = module.DIFFERENCES
    rows = {"dialect": [], "real": [], "residue": [], "alone": {name: [] for name in differences}}
    for vector, native, initial, grads in mapped_vectors(documents, dialect):
        spec = runner_final(vector)
        ours = _run(optimizer_class(dialect)(**native), initial, grads)
        rows["dialect"].append(_distance(ours, spec))
        for name, (methods, _) in differences.items():
            rows["alone"][name].append(_distance(_run(hybrid(dialect, vector["config"], native, methods),
                                                      initial, grads), spec))
        if frameworks:
            real = _real(dialect, vector, native, initial, grads)
            if real is not None:
                rows["real"].append(_distance(real, spec))
                rows["residue"].append(_distance(real, ours))
    return rows


def runner_final(vector: dict) -> list:
    last = vector["steps"][-1]["expected"]
    return replay.decode_expected(vector, last)["variables"]


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
        module = importlib.import_module(f"reference.dialects.{dialect}")
        cls = optimizer_class(dialect)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = measure(dialect, documents, frameworks)
        n = len(rows["dialect"])
        summary.append([getattr(cls, "framework", dialect), n, _stat(rows["dialect"], np.median),
                        _stat(rows["dialect"], max), _stat(rows["real"], np.median), _stat(rows["real"], max),
                        _stat(rows["residue"], max)])
        table = []
        for name, (methods, why) in module.DIFFERENCES.items():
            alone = rows["alone"][name]
            matters = sum(1 for d in alone if d > MATTERS)
            table.append([name, f"{matters}/{n}", _stat(alone, np.median), _stat(alone, max), why])
        parts.append(f"### {getattr(cls, 'framework', dialect)}\n\n"
                     f"{n} Keras vectors map (`from_keras` in reference/dialects/{dialect}.py).\n\n"
                     + tabulate(table, headers=["difference (alone, on top of Keras)", "matters on",
                                                "median", "max", "source"], tablefmt="github") + "\n")
    head = tabulate(summary, headers=["framework", "vectors", "dialect ref: median", "max", "real: median", "max",
                                      "real vs dialect ref: max"], tablefmt="github")
    return head + "\n\n" + "\n".join(parts)


BEGIN = "<!-- divergence: generated by python -m tools.divergence, do not edit -->"
END = "<!-- end of divergence -->"


def render(frameworks: bool) -> str:
    text = OUT.read_text(encoding="utf-8") if OUT.exists() else f"# Divergence\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{report(frameworks)}{END}{tail}"


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
