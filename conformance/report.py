"""Reports of a gate run: the console (header, summary tables, failures with a
reproduction command), JSON, JUnit XML, and an error-versus-step plot."""

from __future__ import annotations

import json
import math
import shlex
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from xml.etree import ElementTree as ET

from tabulate import tabulate

from conformance import vectorfile as vf
from conformance.outcomes import STATUSES, LaneReport


def header(reports: list[LaneReport], extra: dict) -> str:
    lines = [f"Adafactor conformance gate {extra.get('gate', '')}".rstrip()]
    for key, value in extra.items():
        if key == "gate" or (key == "xfail_files" and not value):
            continue
        if key == "corpus" and isinstance(value, dict):
            from conformance.corpus import describe

            value = describe(value)
        lines.append(f"  {key}: {value}")
    seen = set()
    for r in reports:
        key = (r.adapter, r.device)
        if key in seen:
            continue
        seen.add(key)
        env = ", ".join(f"{k}={v}" for k, v in r.environment.items())
        lines.append(f"  {r.adapter} on {r.device}: {env}")
    return "\n".join(lines)


def lane_table(reports: list[LaneReport]) -> str:
    rows = []
    for r in reports:
        c = r.counts()
        worst = max((o.worst_ratio for o in r.outcomes if o.status in ("pass", "model", "fail")), default=0.0)
        rows.append([r.adapter, r.dtype, r.mode, r.device, *(c[s] for s in STATUSES),
                     _fmt(worst), f"{r.seconds:.1f}", _conforms_cell(r)])
    return tabulate(rows, headers=["adapter", "dtype", "mode", "device", *STATUSES,
                                   "worst err/budget (pass+model+fail)", "seconds", "conforms"])


def _conforms_cell(r: LaneReport) -> str:
    if r.counts()["fail"]:
        return "NO"
    return "yes" if r.graded else "none graded"


def why_not_graded(r: LaneReport) -> str:
    """Why a lane graded no vector (empty when it graded one): the reason it did not run,
    or what became of each vector it was given (skip and xfail reasons, most common first)."""
    if r.graded:
        return ""
    if r.not_run:
        return r.not_run
    if not r.outcomes:
        return "no selected vector is of a dialect this adapter replays"
    reasons = Counter(f"{o.status}: {o.reason}" for o in r.outcomes)
    shown = "; ".join(f"{n} x {why}" for why, n in reasons.most_common(3))
    more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
    return f"all {len(r.outcomes)} vectors skipped or xfail ({shown}{more})"


def not_graded(reports: list[LaneReport]) -> list[str]:
    """One line per lane that graded nothing: adapter, dtype, mode, device and why."""
    return [f"{r.adapter} {r.dtype} {r.mode} {r.device}: {why_not_graded(r)}" for r in reports if not r.graded]


def flag_table(report: LaneReport) -> str:
    """Per flag: how many vectors carrying it ended in each status."""
    counts = defaultdict(lambda: dict.fromkeys(STATUSES, 0))
    for o in report.outcomes:
        for flag in o.flags or ["(none)"]:
            counts[flag][o.status] += 1
    rows = [[flag, *(c[s] for s in STATUSES)] for flag, c in sorted(counts.items())]
    return tabulate(rows, headers=["flag", *STATUSES])


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


#: How a reproduce line starts: the gate's module, run with the Python the user runs it with.
COMMAND = "python -m conformance"


def reproduce_command(report: LaneReport, vector_id: str, *, vectors_dir=None, xfail_files=(),
                      adapter_spec: str | None = None) -> str:
    """A command line that reruns exactly this vector in this lane: the adapter as it was
    given (a registered name, or the ``module:Class`` import spec of a port), ``--vectors-dir``
    when the corpus is not the installed one, every ``--xfail-file``, and the id as ``=ID``
    (an exact match, never a prefix of other ids)."""
    args = []
    if report.adapter.startswith("results:"):
        command = f"{COMMAND} grade"
        args += ["--results", report.environment.get("file", "?")]
    else:
        command = f"{COMMAND} run"
        args += ["--adapter", adapter_spec or report.environment.get("adapter_spec", report.adapter),
                 "--dtype", report.dtype, "--mode", report.mode, "--device", report.device]
    if vectors_dir is not None and not _is_default_corpus(vectors_dir):
        args += ["--vectors-dir", str(Path(vectors_dir).resolve())]
    for path in xfail_files:
        args += ["--xfail-file", str(Path(path).resolve())]
    args += ["--vectors", f"={vector_id}", "--verbose"]
    return command + " " + " ".join(shlex.quote(str(a)) for a in args)


def _is_default_corpus(vectors_dir) -> bool:
    from conformance.corpus import default_vectors_dir_or_none

    default = default_vectors_dir_or_none()
    return default is not None and Path(vectors_dir).resolve() == default.resolve()


def model_summary(reports: list[LaneReport]) -> str:
    """One line per lane and deviation model: how many vectors conform only under it, and
    the worst error/budget under the model. Empty when no vector needed a model."""
    lines = []
    for r in reports:
        by_model = defaultdict(list)
        for o in r.outcomes:
            if o.status == "model":
                by_model[o.model].append(o.model_ratio or 0.0)
        for name, ratios in sorted(by_model.items()):
            lines.append(f"  {r.adapter} {r.dtype} {r.mode}: {len(ratios)} vectors conform under deviation model "
                         f"{name} (worst {_fmt(max(ratios))} of its budget)")
    return ("graded under deviation models (conformance/deviations.py):\n" + "\n".join(lines)) if lines else ""


def failures(report: LaneReport, limit: int = 20, *, vectors_dir=None, xfail_files=(),
             adapter_spec: str | None = None) -> str:
    """The failing and xpassing vectors of a lane (at most ``limit``), each with its first
    failures and a reproduce line (``reproduce_command``, given the run's corpus and
    expectation files)."""
    lines = []
    bad = [o for o in report.outcomes if o.status in ("fail", "xpass")]
    for o in bad[:limit]:
        lines.append(f"{o.status.upper()} {report.adapter} {report.dtype} {report.mode}: {o.id} ({o.file})")
        lines.append(f"    {o.reason}")
        for f in o.failures[:3]:
            if f.kind == "exception":
                lines.append("    " + f.message.strip().replace("\n", "\n    "))
                continue
            lines.append(
                f"    step {f.step}, {f.kind}[{f.variable}] {f.variable_name!r}, element {f.element}: "
                f"expected {f.expected!r}, got {f.actual!r} ({_fmt(f.ulp)} ulp in {report.dtype}; "
                f"normwise {_fmt(f.normwise)} eps, budget {_fmt(f.budget)} eps)")
        lines.append("    reproduce: " + reproduce_command(report, o.id, vectors_dir=vectors_dir, xfail_files=xfail_files,
                                                         adapter_spec=adapter_spec))
    if len(bad) > limit:
        lines.append(f"... and {len(bad) - limit} more (see the JSON report)")
    for entry in report.unused_expectations:
        lines.append(f"warning: expectation matched nothing in this lane: {entry}")
    return "\n".join(lines)


def to_json(reports: list[LaneReport], extra: dict, skipped: str | None = None, verdict: str | None = None,
            exit_status: int | None = None, errors=()) -> dict:
    """The JSON report; ``skipped`` says why an adapter ran no lane (``--if-available``).
    ``verdict`` is the run's (CONFORMS, DOES NOT CONFORM, NOTHING CHECKED, ERROR) with its
    ``exit_status``; ``conforms`` is true only for CONFORMS. ``not_graded`` lists the lanes
    that graded nothing, with why; ``errors`` the adapter processes that could not run."""
    if verdict is None:
        verdict = ("DOES NOT CONFORM" if any(r.counts()["fail"] for r in reports)
                   else "CONFORMS" if any(r.graded for r in reports) else "NOTHING CHECKED")
    data = {
        "format": "adafactor-conformance-report",
        "version": 1,
        "run": extra,
        "verdict": verdict,
        "conforms": verdict == "CONFORMS",
        "graded": sum(r.graded for r in reports),
        "not_graded": not_graded(reports),
        "errors": list(errors),
        "lanes": [r.to_json() for r in reports],
    }
    if exit_status is not None:
        data["exit_status"] = exit_status
    if skipped:
        data["skipped"] = skipped
    return data


def write_json(path: Path, reports: list[LaneReport], extra: dict, skipped: str | None = None, **verdict) -> None:
    """Written atomically (a temporary file and a rename): never half a report."""
    vf.write_atomic(Path(path), json.dumps(to_json(reports, extra, skipped, **verdict), indent=1,
                                           sort_keys=True) + "\n")


def run_properties(info: dict) -> dict:
    """The run facts every JUnit suite carries as properties: the gate's version and the
    corpus's version and sha256 (a CI log then says what a port was checked against)."""
    corpus = info.get("corpus") or {}
    found = {"gate_version": info.get("gate"), "corpus_version": corpus.get("corpus_version"),
             "corpus_sha256": corpus.get("sha256"), "vectors_dir": corpus.get("path")}
    return {k: str(v) for k, v in found.items() if v is not None}


def write_junit(path: Path, reports: list[LaneReport], verdict: str | None = None, problems=(),
                info: dict | None = None) -> None:
    """One test case per vector and lane. A run whose verdict is ERROR or NOTHING CHECKED
    gets one more suite, ``gate``, whose ``verdict`` case is an error naming the problems,
    so a dashboard that counts JUnit cases never shows such a run green. ``info`` (the run's
    facts, cli._run_info): the gate and corpus versions, as properties of every suite, and
    the corpus and expectation files the reproduce lines name."""
    info = info or {}
    properties = run_properties(info)
    context = {"vectors_dir": (info.get("corpus") or {}).get("path"), "xfail_files": info.get("xfail_files", ())}
    suites = ET.Element("testsuites")

    def add_properties(suite):
        if properties:
            holder = ET.SubElement(suite, "properties")
            for name, value in properties.items():
                ET.SubElement(holder, "property", name=name, value=value)

    for r in reports:
        c = r.counts()
        suite = ET.SubElement(suites, "testsuite", name=f"{r.adapter}.{r.dtype}.{r.mode}.{r.device}",
                              tests=str(len(r.outcomes)), failures=str(c["fail"] + c["xpass"]),
                              skipped=str(c["skip"] + c["xfail"]), time=f"{r.seconds:.3f}")
        add_properties(suite)
        for o in r.outcomes:
            case = ET.SubElement(suite, "testcase", classname=f"{r.adapter}.{r.dtype}.{r.mode}", name=o.id)
            if o.status in ("fail", "xpass"):
                failure = ET.SubElement(case, "failure", message=o.reason[:500])
                failure.text = f"{o.reason}\nreproduce: {reproduce_command(r, o.id, **context)}"
            elif o.status in ("skip", "xfail"):
                ET.SubElement(case, "skipped", message=f"{o.status}: {o.reason}"[:500])
    if verdict in ("ERROR", "NOTHING CHECKED"):
        suite = ET.SubElement(suites, "testsuite", name="gate", tests="1", failures="0", errors="1",
                              skipped="0", time="0")
        add_properties(suite)
        case = ET.SubElement(suite, "testcase", classname="gate", name="verdict")
        error = ET.SubElement(case, "error", message=f"{verdict}: {'; '.join(problems)}"[:500])
        error.text = "\n".join([verdict, *problems])
    ET.indent(suites)
    vf.write_atomic(Path(path), ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")


PLOTTED = ("pass", "fail")  # the outcomes whose error curves the plot draws


def budget_curves(reports: list[LaneReport], dtype: str, policy, steps: int) -> dict:
    """The variables' budget per step (1..steps) that the plotted vectors of the ``dtype``
    lanes were graded with: one curve per mode and dialect among them (each dialect has
    budgets of its own, tolerance.Policy.budget), keyed (mode, dialect)."""
    curves = {}
    for r in reports:
        if r.dtype != dtype:
            continue
        for o in r.outcomes:
            if o.status in PLOTTED and (r.mode, o.dialect) not in curves:
                curves[(r.mode, o.dialect)] = [policy.budget(dtype, r.mode, "variables", k, o.dialect)
                                               for k in range(1, steps + 1)]
    return dict(sorted(curves.items()))


def write_plot(path: Path, reports: list[LaneReport]) -> str | None:
    """Error versus step, one panel per lane dtype: per adapter and mode, the largest
    normwise error of the variables over the vectors graded pass or fail (xfail,
    acceptable and skipped vectors are left out), in lane epsilons, with the budgets those
    vectors were graded with (per mode and dialect). Returns None on success, else why no
    plot was written (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib) - no plot written"
    from conformance.tolerance import Policy

    policy = Policy.load()
    dtypes = sorted({r.dtype for r in reports}, key=lambda d: ["float64", "float32", "float16", "bfloat16"].index(d))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    styles = {"teacher": "--", "trajectory": ":"}
    for ax, dtype in zip(axes[0], dtypes):
        longest = 1
        for r in (r for r in reports if r.dtype == dtype):
            worst: dict[int, float] = {}
            for o in r.outcomes:
                if o.status not in PLOTTED:
                    continue
                for step, value in enumerate(o.curve.get("variables", []), 1):
                    if math.isfinite(value):
                        worst[step] = max(worst.get(step, 0.0), value)
            if worst:
                steps = sorted(worst)
                longest = max(longest, steps[-1])
                ax.plot(steps, [max(worst[s], 1e-2) for s in steps], marker=".", label=f"{r.adapter} {r.mode}")
        shades = {}  # one grey per dialect, black for Keras
        for (mode, dialect), budgets in budget_curves(reports, dtype, policy, longest).items():
            shade = shades.setdefault(dialect, str(min(0.15 * len(shades), 0.6)))
            ax.plot(range(1, longest + 1), budgets, styles.get(mode, "-"), color=shade, linewidth=1,
                    label=f"budget ({dialect}, {mode})")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(f"max normwise error of the variables ({dtype} epsilons)")
        ax.set_title(f"{dtype}: error versus step (floor 1e-2 = exact)")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:  # atomically, as the other reports: a temporary file and a rename
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format=path.suffix.lstrip(".").lower() or "png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)
    return None
