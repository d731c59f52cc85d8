"""The tolerance policy, derived rather than guessed.

Method (the numbers are in conformance/tolerances.json and conformance/TOLERANCES.md):

1. Honest implementations. The reference's own arithmetic is run in each lane dtype
   (float32, float16, and bfloat16 via ml_dtypes, every operation rounded to the dtype),
   once with the spec's NumPy summation and once with a plain sequential sum, the other
   order a correct port is likely to use. In float64 the NumPy-order run *is* the spec,
   so the float64 envelope comes from the sequential-sum run alone. float16 and bfloat16
   reductions accumulate in float32 in both orders and are rounded once to the lane dtype,
   as every framework reduces them (reference/reductions.py).
2. Envelope. Every ``valid`` vector the lane can represent is replayed in both modes;
   for each tensor kind (variables, update, r, c, v, average, accumulator) the normwise
   error against the float64 golden, in lane epsilons, is collected per step. The
   teacher envelope is the maximum over vectors and steps; the trajectory envelope is the
   maximum of error(k) / k, the worst accumulation rate per step.
3. Budget. ``SAFETY_FACTOR`` (4) times the envelope: a factor 2 because another honest
   implementation can err by as much in the opposite direction, and 2 more for inputs the
   corpus does not sample; never below ``FLOOR`` (2 epsilons: one rounding each way).
   Teacher-forced budgets are constant; trajectory budgets grow linearly with the step,
   ``max(teacher budget, SAFETY_FACTOR * rate * k)``.
4. Reach. A budget holds for reductions as long as the longest the envelope saw: per dtype
   and kind, ``reach`` is the longest reduction (``reduction_lengths``) among the vectors
   measured. A tensor whose reduction is longer, n > reach, gets the budget times
   ``sqrt(n / reach)``: rounding errors of a length-n sum grow like sqrt(n) u, not n u, when
   they are independent and of mean zero (Higham and Mary, "A new approach to probabilistic
   rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019, Theorem 2.4); measured on
   NumPy's float32 column mean, 9.8 / 19.7 / 47.5 eps over 640 / 4096 / 16384 rows, a
   4.85-fold growth against sqrt's 5.06 (TOLERANCES.md, "Long reductions"). Within the
   corpus's reach nothing changes.

Run ``python -m conformance.tolerance`` to re-derive (``--check`` compares with the
committed file; the test suite runs that check).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reference.state import SLOT_KINDS

SAFETY_FACTOR = 4.0
FLOOR = 2.0
DERIVED_DTYPES = ("float64", "float32", "float16", "bfloat16")
MODES = ("teacher", "trajectory")
#: The tensors a budget exists for: the variables, their update x_k - x_{k-1}, and every
#: optimizer state kind (reference.state.Kind: a new kind gets budgets when re-derived).
KINDS = ("variables", "update", *(k.value for k in SLOT_KINDS))
POLICY_PATH = Path(__file__).resolve().parent / "tolerances.json"
DOC_PATH = Path(__file__).resolve().parent / "TOLERANCES.md"


@dataclass
class Policy:
    """Budgets in lane epsilons: ``teacher[dtype][kind]`` and ``rate[dtype][kind]`` for the
    Keras spec's vectors, and the same per native dialect in ``dialects[name]`` (each
    dialect's budgets come from its own honest lanes, so a dialect's different arithmetic
    never loosens the Keras gate)."""

    teacher: dict
    rate: dict
    scale: float = 1.0  # a uniform multiplier (1 for the derived policy)
    dialects: dict = field(default_factory=dict)  # name -> {"teacher": ..., "rate": ...}
    #: Deviation models (conformance/deviations.py): name -> {"teacher": {dtype: {kind}},
    #: "rate": ...}, float64 only, derived from the spread of each model's variants.
    models: dict = field(default_factory=dict)
    #: The longest reduction the budgets were derived on: ``reach[dtype][kind]`` for the Keras
    #: spec (deviation models share it), ``dialects[name]["reach"]`` per dialect. Empty: no
    #: length scaling (a policy written before reach was recorded, or ``unlimited``).
    reach: dict = field(default_factory=dict)

    def for_models(self, names) -> "Policy":
        """The budgets a lane is graded with against the spec plus deviation models
        ``names``: per tensor, the largest of the spec's budget and the models' derived ones
        (a model's budgets are float64; other dtypes keep the spec's)."""
        teacher = {d: dict(k) for d, k in self.teacher.items()}
        rate = {d: dict(k) for d, k in self.rate.items()}
        for name in names:
            if name not in self.models:
                raise KeyError(f"no derived budget for deviation model {name!r} in {POLICY_PATH.name}; "
                               f"run python -m conformance.tolerance")
            model = self.models[name]
            for dtype, kinds in model["teacher"].items():
                for kind, value in kinds.items():
                    teacher[dtype][kind] = max(teacher[dtype][kind], value)
                    rate[dtype][kind] = max(rate[dtype][kind], model["rate"][dtype][kind])
        return Policy(teacher, rate, self.scale, reach=self.reach)

    def budget(self, dtype: str, mode: str, kind: str, step: int, dialect: str = "keras",
               length: int = 1) -> float:
        """The budget of one tensor, in lane epsilons: ``length`` is the longest reduction
        behind it (``reduction_lengths``); beyond the derivation's reach the budget grows by
        ``length_factor``."""
        teacher, rate = self.teacher, self.rate
        if dialect != "keras" and dialect in self.dialects:
            teacher, rate = self.dialects[dialect]["teacher"], self.dialects[dialect]["rate"]
        base = teacher[dtype][kind]
        if mode == "trajectory":
            base = max(base, SAFETY_FACTOR * rate[dtype][kind] * step)
        return base * self.scale * length_factor(length, self.reach_of(dtype, kind, dialect))

    def reach_of(self, dtype: str, kind: str, dialect: str = "keras"):
        """The longest reduction ``kind``'s budget in ``dtype`` was derived on (None: not
        recorded, no length scaling)."""
        reach = self.reach
        if dialect != "keras" and dialect in self.dialects:
            reach = self.dialects[dialect].get("reach", {})
        return reach.get(dtype, {}).get(kind)

    @classmethod
    def load(cls, path: Path = POLICY_PATH) -> "Policy":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        dialects = {name: {"teacher": d["budgets"]["teacher"], "rate": d["budgets"]["trajectory_rate"],
                           "reach": d.get("reach", {})}
                    for name, d in data.get("dialects", {}).items()}
        models = {name: {"teacher": m["budgets"]["teacher"], "rate": m["budgets"]["trajectory_rate"]}
                  for name, m in data.get("models", {}).items()}
        return cls(teacher=data["budgets"]["teacher"], rate=data["budgets"]["trajectory_rate"], dialects=dialects,
                   models=models, reach=data.get("reach", {}))

    @classmethod
    def unlimited(cls) -> "Policy":
        inf = {d: {k: np.inf for k in KINDS} for d in DERIVED_DTYPES}
        return cls(teacher=inf, rate=inf)


def length_factor(length: int, reach) -> float:
    """``sqrt(length / reach)`` beyond the reach, 1 within it (or with no reach recorded):
    the probabilistic growth of a sum's rounding error with its length (module docstring)."""
    if not reach or length <= reach:
        return 1.0
    return float(np.sqrt(length / reach))


def reduction_lengths(state) -> dict:
    """Per (kind, variable index) of ``state`` (a ``reference.state.State``, any dialect's):
    the number of terms of the longest sum its value went through in a step, read off the
    state's own shapes so that every dialect's factoring is covered (optax factors its two
    largest axes, Keras its last two). A factored ``r`` drops the axis it is a mean over, so
    that axis's length is ``x.size / r.size`` (``c`` likewise); ``v = r c / mean(r)`` of a
    factored variable is as long as the longer of the two; an unfactored ``v`` and the
    accumulator are elementwise (1); the variables, their update, the EMA average and the
    momentum come after RMS(x) and RMS(U), sums over the whole variable (``x.size``)."""
    lengths = {}
    for i, x in enumerate(state.variables):
        n = max(int(np.size(x)), 1)
        r, c = _nth(state.r, i), _nth(state.c, i)
        factored = r is not None and c is not None and np.size(r) > 0 and np.size(c) > 0
        rows = n // max(int(np.size(c)), 1) if factored else 1
        cols = n // max(int(np.size(r)), 1) if factored else 1
        lengths.update({("variables", i): n, ("update", i): n, ("average", i): n, ("momentum", i): n,
                        ("accumulator", i): 1, ("r", i): cols, ("c", i): rows,
                        ("v", i): max(rows, cols) if factored else 1})
    return lengths


def _nth(items, i):
    return None if items is None or i >= len(items) else items[i]


def _longest(vectors) -> dict:
    """Per kind, the longest reduction among ``vectors`` (``reduction_lengths`` of each
    vector's initial state)."""
    reach = {k: 1 for k in KINDS}
    for vector in vectors:
        for (kind, _), n in reduction_lengths(vector.initial_state).items():
            reach[kind] = max(reach[kind], n)
    return reach


# ----------------------------------------------------------------------------- derivation
def _sequential_accumulate(x, axis=None, keepdims=False):
    """A left-to-right sum in the accumulator dtype of x (reference.reductions.accumulator:
    float32 for float16/bfloat16, as real frameworks sum them; x's own dtype otherwise),
    not yet rounded back to x's dtype."""
    from reference import reductions

    acc = reductions.accumulator(x.dtype)
    if axis is None:
        flat = x.reshape(-1)
        total = np.cumsum(flat, dtype=acc)[-1] if flat.size else acc.type(0)
        return np.reshape(total, (1,) * x.ndim) if keepdims else total
    total = np.take(np.cumsum(x, axis=axis, dtype=acc), -1, axis=axis)
    return np.expand_dims(total, axis) if keepdims else total


def _sequential_sum(x, axis=None, keepdims=False):
    x = np.asarray(x)
    return np.asarray(_sequential_accumulate(x, axis, keepdims)).astype(x.dtype)[()]


def _sequential_mean(x, axis=None, keepdims=False):
    """The sequential sum divided once by the count, both in the accumulator dtype, rounded
    once to x's dtype (as reference.reductions.mean)."""
    x = np.asarray(x)
    count = x.size if axis is None else x.shape[axis]
    total = _sequential_accumulate(x, axis, keepdims)
    return np.asarray(total / total.dtype.type(count)).astype(x.dtype)[()]


@contextlib.contextmanager
def summation_order(order: str):
    """Temporarily make the reference sum in ``order`` ("numpy" or "sequential")."""
    from reference import reductions

    saved = reductions.total, reductions.mean
    if order == "sequential":
        reductions.total, reductions.mean = _sequential_sum, _sequential_mean
    try:
        yield
    finally:
        reductions.total, reductions.mean = saved


def measure(documents_dir: Path, dtypes=DERIVED_DTYPES, dialect: str = "keras") -> tuple:
    """Per dtype, mode, kind: the list of (normwise, step) samples of honest lanes, over the
    valid vectors of one dialect; and per dtype the reach (``_longest``) of the vectors each
    dtype's lanes measured."""
    from conformance import runner
    from conformance import vectorfile as vf
    from conformance.adapters.reference import ReferenceAdapter

    documents = vf.load_corpus(documents_dir)
    vectors = [(rel, v) for rel, v in vf.iter_vectors(documents)
               if v.result == "valid" and v.dialect == dialect]
    adapter = ReferenceAdapter()
    by_id = {v.id: v for _, v in vectors}
    samples = {d: {m: {k: [] for k in KINDS} for m in MODES} for d in dtypes}
    measured = {d: {} for d in dtypes}  # the vectors each dtype's envelope saw: its reach
    for dtype in dtypes:
        orders = ("sequential",) if dtype == "float64" else ("numpy", "sequential")
        for order in orders:
            with summation_order(order):
                for mode in MODES:
                    report = runner.run_lane(adapter, vectors, documents_dir, dtype, "cpu", mode,
                                             Policy.unlimited(), [])
                    for outcome in report.outcomes:
                        if outcome.curve:
                            measured[dtype][outcome.id] = by_id[outcome.id]
                        for kind, values in outcome.curve.items():
                            samples[dtype][mode][kind].extend(
                                (float(v), step) for step, v in enumerate(values, 1))
    return samples, {d: _longest(measured[d].values()) for d in dtypes}


def measure_model(documents_dir: Path, name: str) -> dict:
    """Per mode and kind: (normwise, step) samples of every other variant of deviation model
    ``name`` against the model proper, over the valid Keras vectors, in float64 (the only
    lane a model grades). A model with one variant has no open choice: no samples."""
    from conformance import deviations, runner
    from conformance import vectorfile as vf

    chosen = deviations.model(name)
    documents = vf.load_corpus(documents_dir)
    vectors = [(rel, v) for rel, v in vf.iter_vectors(documents)
               if v.result == "valid" and v.dialect == "keras"]
    samples = {m: {k: [] for k in KINDS} for m in MODES}
    unlimited = Policy.unlimited()
    for mode in MODES:
        expected = {}
        for variant in chosen.variants[1:]:
            adapter = deviations.adapter(name, variant.name)
            for relative, vector in vectors:
                path = f"{documents_dir}/{relative}"
                goldens, start = vector.goldens, vector.initial_state
                if vector.id not in expected:
                    expected[vector.id] = deviations.expected_states(name, vector, path, mode, start, goldens)
                with np.errstate(all="ignore"):
                    run = runner.replay_states(adapter, vector, path, "float64", "cpu", mode, start, goldens)
                grade = runner.grader(vector, "float64", mode, unlimited).replay(run, start, goldens,
                                                                                 expected[vector.id])
                for kind, values in grade.curve.items():
                    samples[mode][kind].extend((float(v), step) for step, v in enumerate(values, 1))
    return samples


def _derive_model(documents_dir: Path, name: str) -> dict:
    """Budgets of one deviation model, as for the honest lanes: SAFETY_FACTOR times the
    envelope of its variants' spread (teacher), the worst rate per step (trajectory)."""
    from conformance import deviations

    samples = measure_model(documents_dir, name)
    teacher, rate, envelope = {}, {}, {}
    for kind in KINDS:
        t = np.array([v for v, _ in samples["teacher"][kind]] or [0.0])
        r = np.array([v / step for v, step in samples["trajectory"][kind]] or [0.0])
        t, r = t[np.isfinite(t)], r[np.isfinite(r)]
        top_t = float(t.max()) if t.size else 0.0
        top_r = float(r.max()) if r.size else 0.0
        teacher[kind] = _sig_up(max(FLOOR, SAFETY_FACTOR * top_t))
        rate[kind] = _sig_up(top_r)
        envelope[kind] = {"samples": len(samples["teacher"][kind]), "teacher_max": _sig(top_t),
                          "trajectory_rate_max": _sig(top_r)}
    chosen = deviations.model(name)
    return {"summary": chosen.summary, "source": chosen.source,
            "variants": [v.name for v in chosen.variants],
            "budgets": {"teacher": {"float64": teacher}, "trajectory_rate": {"float64": rate}},
            "envelopes": {"float64": envelope}}


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _sig_up(x: float, digits: int = 4) -> float:
    """Round up to ``digits`` significant digits (budgets never shrink by rounding)."""
    if x <= 0 or not np.isfinite(x):
        return float(x)
    exponent = int(np.floor(np.log10(x))) - digits + 1
    return float(f"{np.ceil(x / 10.0**exponent) * 10.0**exponent:.{digits}g}")


def derive(documents_dir: Path) -> dict:
    from conformance import deviations
    from reference.dialects import DIALECTS

    policy = _derive_one(documents_dir, "keras")
    dialects = {}
    for name in DIALECTS:
        if name != "keras":
            one = _derive_one(documents_dir, name)
            dialects[name] = {"budgets": one["budgets"], "envelopes": one["envelopes"], "reach": one["reach"]}
    return {
        "format": "adafactor-conformance-tolerances",
        "version": 1,
        "units": "normwise error max|actual - golden| / max|golden|, in epsilons of the lane dtype",
        "safety_factor": SAFETY_FACTOR,
        "floor": FLOOR,
        "method": "conformance/tolerance.py docstring; conformance/TOLERANCES.md",
        "budgets": policy["budgets"],
        "envelopes": policy["envelopes"],
        "reach": policy["reach"],
        "length_scaling": "budget * sqrt(n / reach) for a reduction of n > reach terms (tolerance.py, step 4)",
        "dialects": dialects,
        "models": {name: _derive_model(documents_dir, name) for name in sorted(deviations.MODELS)},
    }


def _derive_one(documents_dir: Path, dialect: str) -> dict:
    from scipy import stats

    samples, reach = measure(documents_dir, dialect=dialect)
    teacher, rate, statistics = {}, {}, {}
    for dtype, by_mode in samples.items():
        teacher[dtype], rate[dtype], statistics[dtype] = {}, {}, {}
        for kind in KINDS:
            t = np.array([v for v, _ in by_mode["teacher"][kind]] or [0.0])
            r = np.array([v / step for v, step in by_mode["trajectory"][kind]] or [0.0])
            finite_t, finite_r = t[np.isfinite(t)], r[np.isfinite(r)]
            teacher[dtype][kind] = _sig_up(max(FLOOR, SAFETY_FACTOR * float(finite_t.max())))
            rate[dtype][kind] = _sig_up(float(finite_r.max()))
            statistics[dtype][kind] = {
                "samples": len(by_mode["teacher"][kind]),
                "teacher_median": _sig(float(np.median(finite_t))),
                "teacher_p99": _sig(float(stats.scoreatpercentile(finite_t, 99))),
                "teacher_max": _sig(float(finite_t.max())),
                "trajectory_rate_max": _sig(float(finite_r.max())),
            }
    return {"budgets": {"teacher": teacher, "trajectory_rate": rate}, "envelopes": statistics, "reach": reach}


def render_markdown_table(policy: dict) -> str:
    """The Keras table, then one per native dialect (their own kinds only)."""
    out = [_render_one(policy, KINDS)]
    for name, one in policy.get("dialects", {}).items():
        kinds = [k for k in KINDS if any(one["envelopes"][d][k]["samples"] for d in DERIVED_DTYPES)]
        out.append(f"\nDialect `{name}` (its own vectors, vectors/{name}/):\n\n" + _render_one(one, kinds))
    out.append("\nReach: the longest reduction (terms) each budget was derived on; beyond it a budget grows by "
               "sqrt(n / reach) (\"Long reductions\" above):\n")
    out.append(_render_reach(policy))
    if policy.get("models"):
        out.append("\nDeviation models (conformance/deviations.py), float64, graded with the larger of "
                   "this and the spec's budget; variants: the model proper first, then its open choices:\n")
        out.append(_render_models(policy["models"]))
    return "\n".join(out)


def _render_models(models: dict) -> str:
    from tabulate import tabulate

    rows = []
    for name, m in models.items():
        for kind in KINDS:
            e = m["envelopes"]["float64"][kind]
            if not e["samples"]:
                continue
            teacher = m["budgets"]["teacher"]["float64"][kind]
            rate = m["budgets"]["trajectory_rate"]["float64"][kind]
            rows.append([name, kind, e["samples"], e["teacher_max"], teacher, e["trajectory_rate_max"],
                         f"max({teacher:g}, {_sig(SAFETY_FACTOR * rate):g}*k)"])
        if not any(m["envelopes"]["float64"][k]["samples"] for k in KINDS):
            rows.append([name, "(all)", 0, "-", "spec's", "-", "spec's: an exact emulation, one variant"])
    return tabulate(rows, headers=["model", "tensor", "samples", "variant spread max", "teacher budget",
                                   "rate/step", "trajectory budget at step k"], tablefmt="github")


def _render_reach(policy: dict) -> str:
    from tabulate import tabulate

    kinds = [k for k in KINDS if k != "accumulator"]  # elementwise: always 1
    rows = []
    for name, one in [("keras (and the deviation models)", policy), *policy.get("dialects", {}).items()]:
        for dtype in DERIVED_DTYPES:
            reach = one.get("reach", {}).get(dtype, {})
            rows.append([name, dtype, *[reach.get(k, "-") for k in kinds]])
    return tabulate(rows, headers=["budgets of", "dtype", *kinds], tablefmt="github")


def _render_one(policy: dict, kinds) -> str:
    from tabulate import tabulate

    rows = []
    for dtype in DERIVED_DTYPES:
        for kind in kinds:
            s = policy["envelopes"][dtype][kind]
            rows.append([dtype, kind, s["teacher_median"], s["teacher_p99"], s["teacher_max"],
                         policy["budgets"]["teacher"][dtype][kind], s["trajectory_rate_max"],
                         f"max({policy['budgets']['teacher'][dtype][kind]:g}, "
                         f"{_sig(SAFETY_FACTOR * policy['budgets']['trajectory_rate'][dtype][kind]):g}*k)"])
    return tabulate(rows, headers=["dtype", "tensor", "median", "p99", "max", "teacher budget",
                                   "rate/step", "trajectory budget at step k"], tablefmt="github")


TABLE_BEGIN = "<!-- tolerance table: generated by python -m conformance.tolerance, do not edit -->"
TABLE_END = "<!-- end of tolerance table -->"


def main(argv=None) -> int:
    from conformance import vectorfile as vf

    parser = argparse.ArgumentParser(description="Derive the tolerance policy from honest lanes.")
    parser.add_argument("--check", action="store_true", help="compare with the committed policy")
    parser.add_argument("--vectors", type=Path, default=Path(__file__).resolve().parent.parent / "vectors")
    args = parser.parse_args(argv)
    policy = derive(args.vectors)
    text = vf.dumps(policy)
    doc = DOC_PATH.read_text(encoding="utf-8")
    head, rest = doc.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    new_doc = f"{head}{TABLE_BEGIN}\n{render_markdown_table(policy)}\n{TABLE_END}{tail}"
    if args.check:
        stale = [p.name for p, t in ((POLICY_PATH, text), (DOC_PATH, new_doc))
                 if not p.exists() or p.read_text(encoding="utf-8") != t]
        print("tolerances are fresh" if not stale else f"stale: {stale}; run python -m conformance.tolerance")
        return 1 if stale else 0
    vf.write_atomic(POLICY_PATH, text)
    vf.write_atomic(DOC_PATH, new_doc)
    print(f"wrote {POLICY_PATH} and {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
