"""Corpus strength as a number: mutation testing of the spec's source through the gate.

    python -m tools.mutation                 # what `make mutation` runs: every mutant, report
    python -m tools.mutation --workers 2     # two mutants at a time (two copies of the tree)
    python -m tools.mutation --survivors-of out/mutation/results.json   # re-test those only
    python -m tools.mutation --resume out/mutation/results.json   # re-test the survivors (and any
                                             # new mutant), keep that run's kills, write the report
    python -m tools.mutation --report-only out/mutation/results.json  # re-classify, no testing

The mutation tool is cosmic-ray (pinned in constraints.txt, extra `mutation` in pyproject.toml):
its operators enumerate every mutant of the spec's source (SOURCES below) and apply each one
(``cosmic_ray.mutating.use_mutation``). The test is the conformance gate on the fixed golden
corpus, the reference adapter in float64 (teacher-forced and free-running):

    python -m conformance run --adapter reference --dtype float64

A mutant is *killed* when the gate exits non-zero. Three details keep a run affordable on one
core without changing what kills a mutant:

* The gate runs up to three times per mutant: teacher-forced on a few files of the corpus
  (QUICK_STAGES, copied byte for byte into directories with manifests of their own,
  `--vectors-dir`), and only while those pass, on the whole corpus in both modes. Vectors are
  graded independently, so a failure on a few files is a failure of the whole gate: the killed
  set is the whole gate's.
* The corpus is checked against its JSON Schema by the unmutated baseline run; the mutant runs
  (and the gate's own adapter processes) skip that step, as the gate does where jsonschema is
  not installed (conformance/vectorfile.py), because no mutant of reference/ can change a vector
  file. The loader's own checks still run.
* The copy is byte-compiled once with hash-checked .pyc files: a mutated module is recompiled
  from its source on every import (nothing is written: PYTHONDONTWRITEBYTECODE), the rest is not.

Safety: the repository is never mutated. Everything runs on a private copy of reference/,
conformance/ and vectors/ in a temporary directory (cosmic-ray writes a mutant into its file
and restores it afterwards; a killed process would leave a mutant behind, so never in place),
which is removed at the end and on SIGINT/SIGTERM. The report (reference/MUTATION.md) and
out/mutation/results.json are written through a temporary file and a rename, and only by a
complete run.

Every mutant that survives must be explained in tools/mutation_equivalents.py: EQUIVALENT
(no input can tell it from the spec, with the reason) or PENDING (a path the gate does not
grade yet, with what will kill it). The exit status is 1 when a survivor is unexplained.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("reference/adafactor_step.py", "reference/optimizer.py", "reference/clipping.py",
           "reference/reductions.py")
COPIED = ("reference", "conformance", "vectors")
DEFAULT_REPORT = REPO / "reference" / "MUTATION.md"
DEFAULT_OUT = REPO / "out" / "mutation"
GATE = ("run", "--adapter", "reference", "--dtype", "float64")
#: The fast first passes: the gate, teacher-forced, on these files of the corpus only (each a
#: directory of its own with its own MANIFEST.json, the files unchanged), in this order.
QUICK_STAGES = (("keras/defaults.json",),
                ("keras/invalid.json", "keras/combinations.json", "keras/multi_variable.json",
                 "keras/special_values.json", "keras/arguments.json"))
NO_SCHEMA_DIR = ".no-jsonschema"
NO_SCHEMA = '''"""Written by tools/mutation.py: the corpus was validated against its JSON Schema by the
unmutated baseline run, and no mutant of reference/ can change a vector file, so the mutant
runs skip that step, as the gate does where jsonschema is not installed
(conformance/vectorfile.py)."""
raise ImportError("jsonschema is hidden for the mutant runs (tools/mutation.py)")
'''


@dataclass
class Mutant:
    file: str  # repository-relative
    operator: str
    occurrence: int
    line: int  # 1-based, in the unmutated file
    scope: str  # the enclosing function or class (qualified name), "" at module level
    original: str  # the changed source lines, stripped, joined by "\n"
    mutated: str
    nth: int = 0  # among the mutants with the same scope, original and mutated lines, in source order
    outcome: str = "pending"  # killed | survived | timeout | no-mutation | incompetent
    seconds: float = 0.0
    stage: str = ""  # the last gate pass run: quick 1 | quick 2 | full (or "previous run")
    output: str = ""  # the tail of the gate's output (survivors: empty)

    @property
    def key(self) -> tuple:
        """What identifies a mutant across edits of its file (line numbers move)."""
        return (self.file, self.scope, _norm(self.original), _norm(self.mutated), self.nth)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


# ----------------------------------------------------------------------------- the copy
class Workspace:
    """A private copy of the tree the gate needs; removed on close."""

    def __init__(self, tree: Path, index: int):
        self.root = Path(tempfile.mkdtemp(prefix=f"adafactor-mutation-{index}-"))
        self.proc: Optional[subprocess.Popen] = None
        for name in COPIED:
            shutil.copytree(tree / name, self.root / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp"))
        # The quick corpora: some files of the corpus, byte for byte, with a manifest of their own.
        manifest = json.loads((self.root / "vectors" / "MANIFEST.json").read_text(encoding="utf-8"))
        self.stages = []
        for index, names in enumerate(QUICK_STAGES):
            files = {name: manifest["files"][name] for name in names if name in manifest["files"]}
            if not files:
                continue
            directory = f"quick-vectors-{index + 1}"
            for name in files:
                (self.root / directory / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.root / "vectors" / name, self.root / directory / name)
            quick = {**manifest, "files": files, "total_vectors": sum(f["vectors"] for f in files.values())}
            (self.root / directory / "MANIFEST.json").write_text(
                json.dumps(quick, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            self.stages.append(directory)
        (self.root / NO_SCHEMA_DIR / "jsonschema").mkdir(parents=True)
        (self.root / NO_SCHEMA_DIR / "jsonschema" / "__init__.py").write_text(NO_SCHEMA, encoding="utf-8")
        # Bytecode checked against each source's hash on import: a mutated module is always
        # compiled from its mutated source (and never written: PYTHONDONTWRITEBYTECODE).
        subprocess.run([sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
                        str(self.root / "reference"), str(self.root / "conformance")], check=True,
                       stdout=subprocess.DEVNULL)

    def gate(self, quick: Optional[str] = None) -> list[str]:
        """The gate command: the whole corpus, or a quick corpus (a directory) teacher-forced."""
        args = [sys.executable, "-m", "conformance", *GATE]
        if quick:
            args += ["--mode", "teacher", "--vectors-dir", quick]
        return args

    def run(self, command: list, timeout: float, schema: bool = False) -> tuple[Optional[int], str, float]:
        """(exit status or None on timeout, output tail, seconds) of a gate command in this copy;
        the gate's own adapter processes inherit the environment (no schema step unless asked)."""
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
        env.pop("PYTHONPATH", None)
        if not schema:
            env["PYTHONPATH"] = str(self.root / NO_SCHEMA_DIR)
        start = time.perf_counter()
        self.proc = subprocess.Popen(command, cwd=self.root, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
            status = self.proc.returncode
        except subprocess.TimeoutExpired:
            self.kill()
            out, _ = self.proc.communicate()
            status = None
        finally:
            self.proc = None if self.proc is None or self.proc.poll() is not None else self.proc
        return status, out.decode("utf-8", "replace")[-1500:], time.perf_counter() - start

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _imports_from(workspace: Workspace) -> str:
    """Where the copy's gate imports the spec from (must be the copy, or nothing is tested)."""
    code = "import reference, conformance; print(reference.__file__); print(conformance.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=workspace.root, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), check=True)
    return out.stdout


# ----------------------------------------------------------------------------- mutants
def enumerate_mutants(workspace: Workspace, sources) -> list[tuple[Mutant, object]]:
    """Every mutant cosmic-ray's operators make of ``sources`` (in the copy), in a stable
    order, with the cosmic-ray operator instance that applies it."""
    import cosmic_ray.plugins
    from cosmic_ray.mutating import mutate_code

    mutants = []
    for relative in sources:
        path = workspace.root / relative
        code = path.read_text(encoding="utf-8")
        scopes = _scopes(code)
        for name in sorted(cosmic_ray.plugins.operator_names()):
            cls = cosmic_ray.plugins.get_operator(name)
            if cls.arguments():
                continue  # operators that need arguments (none of the core ones do) are not configured
            operator = cls()
            occurrence = 0
            while True:
                mutated = mutate_code(code, operator, occurrence)
                if mutated is None:
                    break
                line, original, changed = _changed_lines(code, mutated)
                mutants.append((Mutant(relative, name, occurrence, line, _scope_of(scopes, line), original, changed),
                                operator))
                occurrence += 1
    seen = Counter()
    for m, _ in sorted(mutants, key=lambda e: (e[0].file, e[0].line, e[0].operator, e[0].occurrence)):
        m.nth = seen[m.key]
        seen[m.key] += 1
    return mutants


def _scopes(code: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function and class."""
    import ast

    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])  # decorators belong to it
                out.append((first, child.end_lineno, name))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(code), "")
    return out


def _scope_of(scopes, line: int) -> str:
    inside = [s for s in scopes if s[0] <= line <= s[1]]
    return max(inside, key=lambda s: s[0])[2] if inside else ""


def _changed_lines(code: str, mutated: str) -> tuple[int, str, str]:
    old, new = code.splitlines(), mutated.splitlines()
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    if not changes:
        return 0, "", ""
    first, last = changes[0], changes[-1]
    i1, i2, j1, j2 = first[1], last[2], first[3], last[4]
    return (i1 + 1, "\n".join(s.strip() for s in old[i1:i2]), "\n".join(s.strip() for s in new[j1:j2]))


def test_mutant(workspace: Workspace, mutant: Mutant, operator, timeout: float, test_command=None) -> None:
    from cosmic_ray.mutating import use_mutation

    start = time.perf_counter()
    with use_mutation(workspace.root / mutant.file, operator, mutant.occurrence) as (_, mutated):
        if mutated is None:
            mutant.outcome = "no-mutation"
            return
        if test_command is not None:  # tests of this tool only
            status, out, _ = _run_command(workspace, test_command, timeout)
            stages = [("full", status, out)]
        else:
            stages = []
            for label, quick in [*((f"quick {i + 1}", q) for i, q in enumerate(workspace.stages)), ("full", None)]:
                status, out, _ = workspace.run(workspace.gate(quick), timeout)
                stages.append((label, status, out))
                if status != 0:
                    break
    mutant.seconds = round(time.perf_counter() - start, 2)
    mutant.stage, status, out = stages[-1]
    if status is None:
        mutant.outcome, mutant.output = "timeout", f"the gate ran past {timeout:.0f} s"
    elif status == 0:
        mutant.outcome = "survived"
    else:
        mutant.outcome, mutant.output = "killed", f"exit {status}: " + out.strip().splitlines()[-1][:300] if out.strip() else f"exit {status}"


def _run_command(workspace: Workspace, command: str, timeout: float):
    start = time.perf_counter()
    workspace.proc = subprocess.Popen(command, shell=True, cwd=workspace.root, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = workspace.proc.communicate(timeout=timeout)
        status = workspace.proc.returncode
    except subprocess.TimeoutExpired:
        workspace.kill()
        out, _ = workspace.proc.communicate()
        status = None
    workspace.proc = None
    return status, out.decode("utf-8", "replace"), time.perf_counter() - start


# ----------------------------------------------------------------------------- classification
def classify(mutants: list[Mutant]) -> dict:
    """Sort the survivors into equivalent, pending (with their reasons) and unexplained."""
    from tools.mutation_equivalents import ACCEPTABLE_ONLY, EQUIVALENT, PENDING

    explained = {}
    for table, kind in ((EQUIVALENT, "equivalent"), (PENDING, "pending"), (ACCEPTABLE_ONLY, "acceptable")):
        for entry in table:
            key = (entry.file, entry.scope, _norm(entry.original), _norm(entry.mutated), entry.nth)
            if key in explained:
                raise ValueError(f"tools/mutation_equivalents.py explains {key} twice")
            explained[key] = (kind, entry.why)
    used = set()
    groups = {"equivalent": [], "pending": [], "acceptable": [], "unexplained": []}
    for m in mutants:
        if m.outcome != "survived":
            continue
        key = m.key
        kind, why = explained.get(key, ("unexplained", ""))
        used.add(key)
        groups[kind].append((m, why))
    stale = [k for k in explained if k not in used]
    return {**groups, "stale": stale}


def _norm(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines())


# ----------------------------------------------------------------------------- report
def corpus_fingerprint(tree: Path) -> tuple[int, str]:
    manifest = (tree / "vectors" / "MANIFEST.json").read_bytes()
    return json.loads(manifest)["total_vectors"], hashlib.sha256(manifest).hexdigest()[:16]


def render_report(mutants: list[Mutant], groups: dict, meta: dict) -> str:
    counts = Counter(m.outcome for m in mutants)
    equivalent, pending, unexplained = (len(groups[k]) for k in ("equivalent", "pending", "unexplained"))
    acceptable = len(groups["acceptable"])
    killed = counts["killed"] + counts["timeout"]
    tested = sum(counts[k] for k in ("killed", "timeout", "survived"))
    non_equivalent = tested - equivalent
    score = 100.0 * killed / non_equivalent if non_equivalent else 100.0
    lines = [
        "# Mutation testing of the spec",
        "",
        "<!-- written by tools/mutation.py (`make mutation`); do not edit: the explanations of survivors live "
        "in tools/mutation_equivalents.py -->",
        "",
        f"How strong the golden corpus is: every mutant that {meta['tool']} makes of the spec's source, "
        f"run through the conformance gate (`python -m conformance {' '.join(GATE)}`, teacher-forced and "
        "free-running, on the fixed corpus). A mutant is **killed** when the gate exits non-zero. Method, "
        "and why the two-pass gate and the skipped schema step change nothing: tools/mutation.py.",
        "",
        f"* sources: {', '.join(f'`{s}`' for s in meta['sources'])}",
        f"* corpus: {meta['vectors']} vectors (MANIFEST.json sha256 {meta['manifest']}...)",
        f"* operators: every core operator of {meta['tool']} ({meta['operators']} operators)",
        f"* run: {meta['seconds'] / 60:.0f} min with {meta['workers']} worker(s), python {meta['python']}, "
        f"numpy {meta['numpy']}",
        *([f"* resumed: {meta['carried']} results (kills, and survivors explained as equivalent) carried over from a complete run of "
           f"{meta['resumed_from'].get('vectors', '?')} vectors (MANIFEST.json sha256 "
           f"{meta['resumed_from'].get('manifest', '?')}...), whose survivors and any new mutant were re-tested on "
           "the corpus above; a plain `make mutation` re-tests everything."] if meta.get("resumed_from") else []),
        *([f"* note on the run resumed from: {meta['resumed_from']['note']}"]
          if (meta.get("resumed_from") or {}).get("note") else []),
        "",
        "| mutants | killed | equivalent | survived, pending a runner change | survived, seen only by acceptable "
        "vectors | survived, unexplained | not testable | score (killed / non-equivalent) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {len(mutants)} | {killed} | {equivalent} | {pending} | {acceptable} | {unexplained} | "
        f"{counts['no-mutation'] + counts['incompetent']} | {score:.1f} % ({killed} / {non_equivalent}) |",
        "",
        "Per file:",
        "",
        "| file | mutants | killed | equivalent | pending | unexplained |",
        "|---|---|---|---|---|---|",
    ]
    for source in meta["sources"]:
        mine = [m for m in mutants if m.file == source]
        k = sum(m.outcome in ("killed", "timeout") for m in mine)
        per = {g: sum(m.file == source for m, _ in groups[g]) for g in ("equivalent", "pending", "unexplained")}
        lines.append(f"| `{source}` | {len(mine)} | {k} | {per['equivalent']} | {per['pending']} | "
                     f"{per['unexplained']} |")
    if counts["timeout"]:
        lines += ["", f"{counts['timeout']} of the killed mutants made the gate run past the timeout "
                      f"({meta['timeout']:.0f} s) and count as killed."]

    def table(title, intro, rows):
        out = ["", f"## {title}", "", intro, ""]
        if not rows:
            return out + ["None."]
        out += ["| where | in | operator | original | mutant | why |", "|---|---|---|---|---|---|"]
        for m, why in sorted(rows, key=lambda r: (r[0].file, r[0].line, r[0].operator, r[0].occurrence)):
            out.append(f"| `{m.where}` | `{m.scope}` | {m.operator.split('/')[-1]} | {_cell(m.original)} | "
                       f"{_cell(m.mutated)} | "
                       f"{why or '**unexplained**'} |")
        return out

    lines += table("Survivors without an explanation",
                   "A mutant here is a gap in the corpus: add a vector that kills it, or, if no input can tell it "
                   "from the spec, explain it in tools/mutation_equivalents.py.", groups["unexplained"])
    lines += table("Survivors pending a change of the runner",
                   "Paths the gate does not grade yet (issue 12, item 10): these mutants change what the spec "
                   "computes, and the change named will kill them.", groups["pending"])
    lines += table("Survivors seen only by acceptable vectors",
                   "These change what the spec computes only for inputs the corpus grades `acceptable` (non-finite "
                   "gradients, which a port may guard: vectors/README.md), so no gate can fail on them by design.",
                   groups["acceptable"])
    lines += table("Equivalent mutants",
                   "No input can tell these from the spec: each line says why.", groups["equivalent"])
    if groups["stale"]:
        lines += ["", "## Stale explanations", "",
                  "Entries of tools/mutation_equivalents.py that matched no survivor (killed now, or the "
                  "source changed):", ""]
        lines += [f"* `{f}` `{scope}`: {_cell(o)} -> {_cell(n)}" + (f" (#{nth})" if nth else "")
                  for f, scope, o, n, nth in groups["stale"]]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return "`" + text.replace("|", "\\|").replace("\n", " ⏎ ") + "`" if text else "(deleted)"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- main
class Interrupted(Exception):
    pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="tree to copy (default: this repository)")
    parser.add_argument("--workers", type=int, default=1, help="mutants tested at a time (default 1)")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="the Markdown report")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results.json goes here")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated files to mutate")
    parser.add_argument("--survivors-of", type=Path,
                        help="re-test only the mutants that survived in this results.json (no report)")
    parser.add_argument("--resume", type=Path,
                        help="carry the kills of this complete run's results.json over, re-test every other "
                             "mutant, write the report (saying so)")
    parser.add_argument("--limit", type=int, help="test the first N mutants only (no report)")
    parser.add_argument("--report-only", type=Path, metavar="RESULTS",
                        help="test nothing: classify the mutants of this results.json with the current "
                             "explanations and write the report")
    parser.add_argument("--timeout", type=float, help="seconds per gate run (default: 10x the baseline)")
    parser.add_argument("--test-command", help=argparse.SUPPRESS)  # this tool's own tests
    args = parser.parse_args(argv)
    sources = tuple(s for s in args.sources.split(",") if s)
    partial = args.survivors_of is not None or args.limit is not None
    if args.report_only is not None:
        results = json.loads(args.report_only.read_text(encoding="utf-8"))
        mutants = [Mutant(**m) for m in results["mutants"]]
        groups = classify(mutants)
        write_atomic(args.report, render_report(mutants, groups, results["meta"]))
        print(f"wrote {args.report}: {len(groups['unexplained'])} unexplained survivors")
        return 1 if groups["unexplained"] else 0

    workspaces: list[Workspace] = []
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()
        for w in workspaces:
            w.kill()
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.perf_counter()
    try:
        workspaces.append(Workspace(args.tree, 0))
        print(f"working on a copy in {workspaces[0].root}", flush=True)
        vectors, manifest = corpus_fingerprint(workspaces[0].root)  # the corpus the mutants meet
        where = _imports_from(workspaces[0])
        if str(workspaces[0].root) not in where:
            print(f"error: the copy imports the spec from elsewhere:\n{where}", file=sys.stderr)
            return 2
        timeout = args.timeout
        if args.test_command is None:
            w = workspaces[0]
            passes = [("schema-checked gate", w.gate(), True), ("gate", w.gate(), False)]
            passes += [(f"quick pass {i + 1}", w.gate(q), False) for i, q in enumerate(w.stages)]
            for label, command, schema in passes:
                status, out, seconds = w.run(command, timeout=3600, schema=schema)
                print(f"baseline {label}: exit {status} in {seconds:.1f} s", flush=True)
                if status != 0:
                    print(f"error: the unmutated spec does not pass the {label}:\n{out}", file=sys.stderr)
                    return 2
                if label == "gate":
                    timeout = timeout or max(60.0, 10 * seconds)
        timeout = timeout or 60.0
        entries = enumerate_mutants(workspaces[0], sources)
        if args.survivors_of is not None:
            previous_results = json.loads(args.survivors_of.read_text(encoding="utf-8"))["mutants"]
            wanted = {Mutant(**m).key for m in previous_results if m["outcome"] == "survived"}
            entries = [(m, op) for m, op in entries if m.key in wanted]
        carried = []
        if args.resume is not None:
            previous_run = json.loads(args.resume.read_text(encoding="utf-8"))
            from tools.mutation_equivalents import EQUIVALENT

            # kills, and survivors explained as equivalent (a claim about the code, not the corpus)
            equivalent = {(e.file, e.scope, _norm(e.original), _norm(e.mutated), e.nth) for e in EQUIVALENT}
            killed_before = {Mutant(**m).key: m for m in previous_run["mutants"]
                             if m["outcome"] in ("killed", "timeout")
                             or (m["outcome"] == "survived" and Mutant(**m).key in equivalent)}
            for m, _ in entries:
                if m.key in killed_before:
                    m.outcome, m.stage = killed_before[m.key]["outcome"], "previous run"
                    m.output = killed_before[m.key]["output"]
                    carried.append(m)
            entries_all = entries
            entries = [(m, op) for m, op in entries if m.outcome == "pending"]
        if args.limit is not None:
            entries = entries[:args.limit]
        print(f"{len(entries)} mutants of {', '.join(sources)}; timeout {timeout:.0f} s per gate run; "
              f"{args.workers} worker(s)", flush=True)
        for index in range(1, max(1, args.workers)):
            workspaces.append(Workspace(args.tree, index))

        queue = list(reversed(entries))
        lock = threading.Lock()
        done = Counter()

        def worker(workspace: Workspace):
            while not stop.is_set():
                with lock:
                    if not queue:
                        return
                    mutant, operator = queue.pop()
                test_mutant(workspace, mutant, operator, timeout, args.test_command)
                with lock:
                    done[mutant.outcome] += 1
                    n = sum(done.values())
                    if mutant.outcome == "survived" or n % 25 == 0 or n == len(entries):
                        print(f"[{n}/{len(entries)}] {dict(done)}"
                              + (f"  survived: {mutant.where} {mutant.operator.split('/')[-1]}: "
                                 f"{mutant.original!r} -> {mutant.mutated!r}" if mutant.outcome == "survived" else ""),
                              flush=True)

        threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in workspaces]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)
        if stop.is_set():
            raise Interrupted("stopped")
    except Interrupted as exc:
        print(f"interrupted ({exc}): nothing written; the repository was never modified", file=sys.stderr)
        return 130
    finally:
        for w in workspaces:
            w.close()
        for s, handler in previous.items():
            signal.signal(s, handler)

    mutants = [m for m, _ in (entries_all if args.resume is not None else entries)]
    groups = classify(mutants)
    seconds = time.perf_counter() - started
    from importlib.metadata import version

    import numpy as np

    meta = {"tool": f"cosmic-ray {version('cosmic-ray')}", "sources": list(sources), "vectors": vectors,
            "manifest": manifest, "operators": len({m.operator for m in mutants}), "seconds": seconds,
            "workers": args.workers, "python": sys.version.split()[0], "numpy": np.__version__,
            "timeout": timeout, "carried": len(carried),
            "resumed_from": None if args.resume is None else previous_run.get("meta", {})}
    results = {"meta": meta, "mutants": [asdict(m) for m in mutants]}
    write_atomic(args.out / ("results.json" if not partial else "results-partial.json"),
                 json.dumps(results, indent=1, sort_keys=True) + "\n")
    counts = Counter(m.outcome for m in mutants)
    print(f"{len(mutants)} mutants: {dict(counts)}; survivors: {len(groups['equivalent'])} equivalent, "
          f"{len(groups['pending'])} pending a runner change, {len(groups['unexplained'])} unexplained")
    for m, _ in groups["unexplained"]:
        print(f"  unexplained: {m.where} {m.operator}#{m.occurrence}: {m.original!r} -> {m.mutated!r}")
    if not partial:
        write_atomic(args.report, render_report(mutants, groups, meta))
        print(f"wrote {args.report}")
    return 1 if groups["unexplained"] else 0


if __name__ == "__main__":
    sys.exit(main())
