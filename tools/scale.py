"""Do the derived budgets hold at a realistic size? A scale vector, built on the fly and graded.

    python -m tools.scale                                  # 4096 x 16384, 3 steps, the default lanes
    python -m tools.scale --shape 64x96 --adapter reference --adapter keras-jax-sharded
    python -m tools.scale --adapter conformance.adapters.broken:LocalShardMean   # must FAIL

The corpus's vectors are small (the longest reduction is 1024 elements). This tool builds ONE
vector of realistic size (default one float32-lane variable of 4096 x 16384, 67 M elements, three
steps of seeded N(0, 1) gradients), never committed, and grades it through the gate:

* **The vector** is the generator's: a ``conformance.generator.case.Case`` through
  ``tools.generate_vectors.generate_corpus`` (the same ``generate_vector`` -> ``keras_vector``
  path, seed, flags, margins, notes and provenance as every corpus vector), the golden states
  computed by the float64 reference. At this size the JSON format itself does not fit: eleven
  variable-sized arrays of 67 M values as 16-hex-digit strings are 14 GB of text, and
  ``Vector`` decodes them by joining every string into one. So while generating, the
  generator's array encoder (``vectorfile.encode_array``) is swapped for one that writes each
  float64 array to a ``.npy`` file in a temporary store and leaves ``{"shape", "npy"}`` where
  ``{"shape", "bits"}`` would be; the rest of the vector is the generator's JSON unchanged.
  ``PackedVector`` is ``conformance.vector.Vector`` with only its array decoder replaced
  (memory-mapped, read-only float64 arrays). At small shapes ``write_corpus`` also writes the
  real JSON corpus (MANIFEST.json included, ``generate_vectors.render``) that the loader
  validates and ``python -m conformance run --vectors-dir`` replays; tests/gate/test_scale.py
  checks that both give the same arrays bit for bit.
* **The grading** is the gate's: per adapter and mode, a child process (``--worker``) does what
  the CLI's adapter child does (``conformance.cli._work``): ``registry.resolve``, the adapter's
  expectation entries, ``Policy.load()``, ``runner.run_lane`` over the vector, one lane per
  process (so ``keras-jax-sharded`` asks for its 4 virtual CPU devices before JAX starts, and
  each row's peak RSS is its own).

Budgets beyond the corpus's reach: ``conformance/tolerances.json`` has one budget per dtype and
tensor kind, derived from the corpus's honest lanes, whose longest reductions are 640 to 2048
elements, and records that reach; a longer reduction of n terms gets the budget times
sqrt(n / reach) (TOLERANCES.md, "Long reductions"). This tool measures whether that holds.
The table prints worst error / budget per tensor kind (1.0 = the whole budget).

Exit status: 0 every graded lane as expected (PASS, or FAIL for an adapter given with
``--expect-fail``), 1 otherwise, 2 on a usage or environment error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SHAPE = (4096, 16384)
TEST_SHAPE = (64, 96)
DEFAULT_STEPS = 3
DEFAULT_ADAPTERS = ("reference", "keras-jax", "keras-jax-sharded", "keras-jax-distribution", "torch-dtensor-replicate")
#: Shard lanes of torch.optim.Adafactor on DTensors raise on a factored variable split along its
#: last two axes, whatever the size (conformance/TORCH_DISTRIBUTED.md, point 1).
RAISES_BY_DESIGN = ("torch-dtensor-shard0", "torch-dtensor-shard-1", "torch-dtensor-2d", "torch-dtensor-fsdp2")
KINDS = ("variables", "update", "r", "c", "v")
STORE_DOCUMENT = "store.json"
#: Keras's arguments of the scale vector (the rest: Keras's defaults) and torch's (the torch dialect).
KERAS_CONFIG = {"learning_rate": 0.01}
TORCH_CONFIG = {"lr": 0.01}


# ----------------------------------------------------------------------------- the vector
def shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


def parse_shape(text: str) -> tuple:
    try:
        shape = tuple(int(n) for n in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: expected ROWSxCOLS, e.g. 4096x16384") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: a factored variable needs two or more axes >= 1")
    return shape


def make_case(shape, steps: int = DEFAULT_STEPS, dialect: str = "keras"):
    """The scale case: one variable of ``shape`` (N(0, 0.01^2) initial values, as the corpus's
    ``init="small"``), ``steps`` steps of N(0, 1) gradients (the corpus's ``normal()``), drawn from
    the generator's seed for the id."""
    from conformance.generator.case import Case, normal

    tag = shape_text(shape)
    if dialect == "keras":
        return Case(f"scale/{tag}", f"scale: one {tag} variable, {steps} steps (tools/scale.py, never committed)",
                    dict(KERAS_CONFIG), variables=(("dense/kernel", tuple(shape)),), steps=steps, init="small",
                    grads=normal())
    return Case(f"{dialect}/scale/{tag}", f"scale: one {tag} variable, {steps} steps (tools/scale.py)",
                dict(TORCH_CONFIG), variables=(("dense/kernel", tuple(shape)),), steps=steps, init="small",
                grads=normal(), dialect=dialect)


def generate_documents(cases) -> dict:
    """{relative path: document} of ``cases``, exactly as ``make vectors`` builds corpus files."""
    from tools.generate_vectors import generate_corpus

    return generate_corpus(list(cases))


class _NpyEncoder:
    """Stands in for ``vectorfile.encode_array`` while the generator runs: each float64 array
    goes to ``a0000.npy``, ``a0001.npy``, ... under ``directory``, the vector holds its name."""

    def __init__(self, directory: Path):
        self.directory, self.count = Path(directory), 0

    def __call__(self, a) -> dict:
        a = np.asarray(a, dtype=np.float64)
        name = f"a{self.count:04d}.npy"
        self.count += 1
        np.save(self.directory / name, a, allow_pickle=False)
        return {"shape": list(a.shape), "npy": name}


@contextlib.contextmanager
def packed_arrays(directory: Path):
    """Within the block, the generator writes arrays to ``directory`` instead of hex strings."""
    from conformance import vectorfile as vf

    saved = vf.encode_array
    vf.encode_array = _NpyEncoder(directory)
    try:
        yield
    finally:
        vf.encode_array = saved


def generate_store(directory: Path, cases) -> dict:
    """Generate ``cases`` into a packed store under ``directory``: ``store.json`` (the
    generator's documents, arrays as ``.npy`` names) and the ``.npy`` files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with packed_arrays(directory):
        documents = generate_documents(cases)
    (directory / STORE_DOCUMENT).write_text(json.dumps(documents, sort_keys=True), encoding="utf-8")
    return documents


def _packed_vector_class():
    from conformance.vector import Vector

    class PackedVector(Vector):
        """A ``Vector`` whose arrays are ``.npy`` files of a store: read-only, memory-mapped."""

        def __init__(self, raw, *, store, **kwargs):
            self.store = Path(store)
            super().__init__(raw, **kwargs)

        def _decode_all(self, objs: list) -> list:
            out = []
            for obj in objs:
                if obj is None:
                    out.append(None)
                    continue
                a = np.load(self.store / obj["npy"], mmap_mode="r", allow_pickle=False).view(np.ndarray)
                if a.dtype != np.float64 or list(a.shape) != list(obj["shape"]):
                    raise ValueError(f"{self.store / obj['npy']}: {a.dtype} {a.shape}, expected float64 "
                                     f"{obj['shape']}")
                out.append(a)
            return out

        def __reduce__(self):
            return (_rebuild_packed, (self.raw, self.file, self.path, self.dialect, str(self.store)))

    return PackedVector


def _rebuild_packed(raw, file, path, dialect, store):
    return _packed_vector_class()(raw, file=file, path=path, dialect=dialect, store=store)


def load_store(directory: Path) -> list:
    """``(relative path, PackedVector)`` of every vector of a packed store."""
    directory = Path(directory)
    documents = json.loads((directory / STORE_DOCUMENT).read_text(encoding="utf-8"))
    cls = _packed_vector_class()
    return [(relative, cls(raw, file=relative, path=directory / relative, dialect=document.get("dialect"),
                           store=directory))
            for relative, document in sorted(documents.items()) for raw in document["vectors"]]


def write_corpus(directory: Path, cases) -> Path:
    """The real JSON corpus of ``cases`` (vector files and MANIFEST.json, as ``make vectors``
    writes them) under ``directory``: for small shapes only (the format is hex text)."""
    from conformance import vectorfile as vf
    from tools.generate_vectors import render

    directory = Path(directory)
    for relative, text in render(generate_documents(cases)).items():
        vf.write_atomic(directory / relative, text)
    return directory


# ----------------------------------------------------------------------------- one lane (child)
def _peak_rss_mib() -> tuple:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def summarize(lane, vectors, policy, entries) -> list:
    """Per outcome of a LaneReport: status, reason, worst ratio, and per kind the worst error
    (lane epsilons) and worst error / budget over the steps (the budget the grader used)."""
    from conformance import runner
    from conformance.expectations import budget_factors

    by_id = {v.id: v for _, v in vectors}
    rows = []
    for outcome in lane.outcomes:
        vector = by_id[outcome.id]
        kinds = {}
        if outcome.curve:
            factors = budget_factors(entries, vector, lane.dtype, lane.mode, lane.device)
            grader = runner.grader(vector, lane.dtype, lane.mode, policy, factors)
            for kind, values in outcome.curve.items():
                # The scale vector has one variable (index 0): its budgets carry the length factor.
                ratios = [float(v) / grader.budget(kind, step, 0) for step, v in enumerate(values, 1)]
                kinds[kind] = {"error": max(float(v) for v in values), "ratio": max(ratios),
                               "budget": [grader.budget(kind, step, 0) for step in range(1, len(values) + 1)]}
        rows.append({"id": outcome.id, "status": outcome.status, "reason": outcome.reason,
                     "worst_ratio": float(outcome.worst_ratio), "kinds": kinds,
                     "first_bad_step": outcome.first_bad_step})
    return rows


def work(adapter_name: str, store: Path, dtype: str, mode: str, device: str, out: Path) -> int:
    """The child: one adapter, one lane, over the store's vectors of its dialects; the result
    as JSON to ``out``. What conformance.cli._work does for a corpus directory."""
    start = time.perf_counter()
    from conformance import expectations, runner
    from conformance.adapters.registry import resolve
    from conformance.tolerance import Policy

    adapter = resolve(adapter_name)
    result = {"adapter": adapter_name, "name": adapter.name, "dtype": dtype, "mode": mode, "device": device}
    why_not = adapter.device_available(device)
    if why_not:
        result.update(error=f"device {device!r} not available: {why_not}")
    else:
        vectors = load_store(store)
        dialects = getattr(adapter, "dialects", ("keras",))
        mine = [(r, v) for r, v in vectors if v.dialect in dialects]
        entries = expectations.for_adapter(adapter.expectations or adapter.name, ())
        expectations.check_flags(entries, {f for _, v in vectors for f in v.flags} | _corpus_flags())
        policy = Policy.load()
        lane = runner.run_lane(adapter, mine, store, dtype, device, mode, policy, entries)
        result.update(environment={k: str(v) for k, v in lane.environment.items()},
                      outcomes=summarize(lane, mine, policy, entries),
                      shapes=[list(v.shapes[0]) for _, v in mine], steps=[len(v.raw["steps"]) for _, v in mine])
    result["seconds"] = time.perf_counter() - start
    own, children = _peak_rss_mib()
    result["peak_rss_mib"], result["children_peak_rss_mib"] = own, children
    out.write_text(json.dumps(result, sort_keys=True, default=str), encoding="utf-8")
    return 0


def _corpus_flags() -> set:
    """Every flag the committed corpus carries: an adapter's expectation entries name them
    (check_flags refuses a flag no vector carries)."""
    from conformance import corpus as corpus_module
    from conformance import vectorfile as vf

    documents = vf.load_corpus(corpus_module.default_vectors_dir())
    return {f for _, v in vf.iter_vectors(documents) for f in v.flags}


# ----------------------------------------------------------------------------- the driver
def _stored(store: Path) -> list:
    try:
        documents = json.loads((Path(store) / STORE_DOCUMENT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [v for document in documents.values() for v in document["vectors"]]


def _stored_ids(store: Path) -> set:
    return {v["id"] for v in _stored(store)}


def _stored_steps(store: Path) -> set:
    return {len(v["steps"]) for v in _stored(store)}


def _tree_rss_mib(session: int) -> tuple:
    """(resident set, anonymous part of it) summed over every process in session ``session``
    (the child and what it started: torch's rank processes), MiB, from /proc. The resident set
    counts the pages of the memory-mapped golden arrays the child has touched (page cache the
    kernel can drop); the anonymous part is the memory the lane itself allocated."""
    rss = anon = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                if int(handle.read().rsplit(b")", 1)[1].split()[3]) != session:
                    continue
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("RssAnon:"):
                        anon += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return rss / 1024, anon / 1024


def _child(args: list, log: Path, env: dict | None = None, timeout: float = 3600) -> tuple:
    """Run ``python -m tools.scale ARGS`` in its own session; (exit status, seconds, peak RSS MiB:
    the largest of os.wait4's (the child's own peak) and the session's summed RSS, sampled
    every 0.2 s; peak anonymous RSS MiB of the session, sampled)."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "tools.scale", *args], cwd=REPO, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
        deadline = start + timeout
        tree = anon = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            sample = _tree_rss_mib(proc.pid)
            tree, anon = max(tree, sample[0]), max(anon, sample[1])
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, 9)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, max(usage.ru_maxrss / 1024, tree), anon


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def gpu_present() -> bool:
    """An NVIDIA GPU on this machine (no framework imported to find out)."""
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _installed(name: str) -> str | None:
    """Why a registered adapter cannot run here (a module missing), or None."""
    from conformance.adapters.registry import ADAPTERS

    if name not in ADAPTERS:
        return None
    missing = ADAPTERS[name].missing()
    return missing


def _dialects(name: str) -> tuple:
    from conformance.adapters.registry import ADAPTERS

    return tuple(ADAPTERS[name].dialects) if name in ADAPTERS else ("keras",)


def _rows(result: dict, seconds: float, rss: float, anon: float, expect_fail: bool) -> list:
    """One table row per graded vector of a lane (the reference replays the torch vector too)."""
    base = {"adapter": result["adapter"], "dtype": result["dtype"], "mode": result["mode"],
            "device": result["device"], "expect_fail": expect_fail, "seconds": seconds, "peak_rss_mib": rss,
            "peak_anon_mib": anon}
    outcomes = result.get("outcomes") or []
    if result.get("error") or not outcomes:
        return [{**base, "vector": "-", "shape": "-", "steps": "-", "kinds": {}, "worst_ratio": 0.0,
                 "verdict": "ERROR" if result.get("error") else "SKIP (no vector of its dialects)", "ok": False,
                 "reason": "", "error": result.get("error")}]
    rows = []
    for o, shape, steps in zip(outcomes, result["shapes"], result["steps"]):
        status = o["status"]
        verdict = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}.get(status, status.upper())
        ok = verdict == "FAIL" if expect_fail else verdict in ("PASS", "MODEL")
        rows.append({**base, "vector": o["id"], "shape": shape_text(shape), "steps": steps, "kinds": o["kinds"],
                     "worst_ratio": o["worst_ratio"], "verdict": verdict, "ok": ok, "reason": o["reason"][:300],
                     "error": None})
    return rows


def _fmt_kind(v) -> str:
    if v is None:
        return "-"
    return f"{v['ratio']:.3g} ({v['error']:.3g}/{v['budget'][-1]:.4g})"


def render_table(rows: list) -> str:
    from tabulate import tabulate

    body = []
    for r in rows:
        body.append([r["adapter"], f"{r['dtype']} {r['mode']}" + ("" if r["device"] == "cpu" else f" {r['device']}"),
                     r["vector"], r["steps"], *[_fmt_kind(r["kinds"].get(k)) for k in KINDS],
                     f"{r['worst_ratio']:.3g}" if np.isfinite(r["worst_ratio"]) else "inf",
                     r["verdict"] + (" (expected)" if r["expect_fail"] and r["ok"] else ""),
                     f"{r['seconds']:.1f}", f"{r['peak_rss_mib'] / 1024:.2f} ({r['peak_anon_mib'] / 1024:.2f})"])
    headers = ["adapter", "lane", "vector (dialect/shape)", "steps", *[f"{k} ratio (err/budget eps)" for k in KINDS],
               "worst", "verdict", "seconds", "peak RSS GiB (anonymous)"]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def budget_note(dtype: str, dialect: str = "keras", shape=DEFAULT_SHAPE) -> str:
    """The budgets that apply to a ``shape`` variable (teacher; trajectory at step k), from the
    committed policy: the table's, times sqrt(n / reach) for a reduction of n terms longer
    than the corpus's (tolerance.py, step 4)."""
    from conformance.tolerance import SAFETY_FACTOR, Policy, length_factor, reduction_lengths
    from reference.state import Kind, State

    policy = Policy.load()
    teacher, rate = policy.teacher, policy.rate
    if dialect != "keras":
        teacher, rate = policy.dialects[dialect]["teacher"], policy.dialects[dialect]["rate"]
    zeros = lambda s: np.broadcast_to(np.float64(0), s)  # noqa: E731 - shapes only, no memory
    values = {Kind.VARIABLES: [zeros(shape)]}
    if len(shape) >= 2:  # factored: r drops the last axis, c the one before it
        values[Kind.R], values[Kind.C] = [zeros(shape[:-1])], [zeros(shape[:-2] + shape[-1:])]
    lengths = reduction_lengths(State(iterations=0, values=values))
    parts = []
    for kind in KINDS:
        n = lengths.get((kind, 0), 1)
        reach = policy.reach_of(dtype, kind, dialect)
        f = length_factor(n, reach)
        scaled = f" x{f:.3g} (n {n}, reach {reach})" if f > 1 else ""
        parts.append(f"{kind} {teacher[dtype][kind]:g}{scaled} (trajectory max({teacher[dtype][kind]:g}, "
                     f"{SAFETY_FACTOR * rate[dtype][kind]:.4g}*k){scaled})")
    return (f"{dialect} {dtype} budgets for a {shape_text(shape)} variable, lane epsilons: the table's "
            f"(tolerances.json), times sqrt(n / reach) for a reduction of n terms beyond the corpus's "
            f"reach: " + "; ".join(parts))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=parse_shape, default=DEFAULT_SHAPE,
                        help=f"variable shape ROWSxCOLS (default {shape_text(DEFAULT_SHAPE)})")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"steps (default {DEFAULT_STEPS})")
    parser.add_argument("--adapter", action="append", default=[],
                        help="adapter name or module:Class (repeatable; default: "
                             f"{', '.join(DEFAULT_ADAPTERS)} where installed, and keras-jax on the GPU where one is)")
    parser.add_argument("--expect-fail", action="append", default=[], metavar="ADAPTER",
                        help="an adapter that must FAIL (a deliberately broken port; repeatable; also graded)")
    parser.add_argument("--dtype", default="float32", help="lane dtype (default float32)")
    parser.add_argument("--mode", default="teacher,trajectory", help="modes (default teacher,trajectory)")
    parser.add_argument("--store", type=Path, help="keep the generated store here, and reuse the vectors it "
                                                    "already holds for this shape and steps (default: a temporary "
                                                    "directory, removed at the end)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child (default 1800)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dialects", default="keras", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # one adapter, one lane
        return work(args.worker, args.store, args.dtype, args.mode, args.device, args.out)
    if args.generate:  # the store
        start = time.perf_counter()
        generate_store(args.store, [make_case(args.shape, args.steps, d) for d in args.dialects.split(",")])
        own, _ = _peak_rss_mib()
        args.out.write_text(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mib": own}))
        return 0

    modes = [m for m in args.mode.split(",") if m]
    adapters, expect_fail = list(args.adapter), list(args.expect_fail)
    skipped = []
    if not adapters and not expect_fail:
        for name in DEFAULT_ADAPTERS:
            why = _installed(name)
            (skipped.append((name, why)) if why else adapters.append(name))
        skipped += [(name, "raises by design at any size: a factored variable split along its last two axes "
                           "(RuntimeError, aten.pow_ on a _NormPartial; conformance/TORCH_DISTRIBUTED.md)")
                    for name in RAISES_BY_DESIGN[:1]]
    gpu = gpu_present()
    lanes = [(a, "cpu", False) for a in adapters] + [(a, "cpu", True) for a in expect_fail]
    if gpu and not args.adapter and not expect_fail:
        lanes.append(("keras-jax", "gpu", False))
    # The Keras vector always; the torch dialect's too where a torch lane (torch-dtensor-*) is graded.
    dialects = sorted({"keras"} | {d for name, _, _ in lanes for d in _dialects(name) if d == "torch"})

    print(f"tools.scale: one {shape_text(args.shape)} variable, {args.steps} steps, {args.dtype}, "
          f"{', '.join(modes)}; {os.cpu_count()} CPUs")
    print("GPU: " + ("present: keras-jax also runs with --device gpu" if gpu else
                     "none on this machine: no GPU lane run"))
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    for dialect in dialects:
        print(budget_note(args.dtype, dialect, args.shape))

    store = args.store or Path(tempfile.mkdtemp(prefix="adafactor-scale-"))
    keep = args.store is not None
    rows = []
    try:
        store.mkdir(parents=True, exist_ok=True)
        gen_out = store / "generate.json"
        wanted = {make_case(args.shape, args.steps, d).id for d in dialects}
        if keep and _stored_ids(store) >= wanted and _stored_steps(store) == {args.steps}:
            print(f"reusing the vector(s) {', '.join(sorted(wanted))} of {store} (generated earlier by this tool)")
            code = None
        else:
            code, seconds, rss, anon = _child(
                ["--generate", "--store", str(store), "--shape", shape_text(args.shape), "--steps", str(args.steps),
                 "--dialects", ",".join(dialects), "--out", str(gen_out)], store / "generate.log", timeout=args.timeout)
        if code:
            print(f"generating the vector failed (exit {code}):\n{_tail(store / 'generate.log')}")
            return 2
        size = sum(p.stat().st_size for p in store.glob("*.npy"))
        if code is not None:
            print(f"generated {', '.join(dialects)} vector(s) by the float64 reference in {seconds:.1f} s, peak RSS "
                  f"{rss / 1024:.2f} GiB (anonymous {anon / 1024:.2f} GiB); store {size / 2**30:.2f} GiB of float64 "
                  f"arrays in {store}")
        for name, device, must_fail in lanes:
            for mode in modes:
                tag = f"{len(rows):02d}"
                out = store / f"lane{tag}.json"
                code, seconds, rss, anon = _child(["--worker", name, "--store", str(store), "--dtype", args.dtype,
                                             "--mode", mode, "--device", device, "--out", str(out)],
                                            store / f"lane{tag}.log", timeout=args.timeout)
                if code != 0 or not out.exists():
                    result = {"adapter": name, "dtype": args.dtype, "mode": mode, "device": device,
                              "error": f"exit {code}: {_tail(store / f'lane{tag}.log', 6)}"}
                else:
                    result = json.loads(out.read_text(encoding="utf-8"))
                    rss = max(rss, result["peak_rss_mib"], result.get("children_peak_rss_mib", 0.0))
                for row in _rows(result, seconds, rss, anon, must_fail):
                    rows.append(row)
                    print(f"  {name} {args.dtype} {mode}{'' if device == 'cpu' else ' ' + device} {row['vector']}: "
                          f"{row['verdict']} worst {row['worst_ratio']:.3g} of budget, {seconds:.1f} s, "
                          f"{rss / 1024:.2f} GiB (anonymous {anon / 1024:.2f})"
                          + (f" [{row['error']}]" if row["error"] else ""), flush=True)
    finally:
        if not keep:
            shutil.rmtree(store, ignore_errors=True)
    print()
    print(render_table(rows))
    for r in rows:
        if (r["reason"] or r["error"]) and (not r["ok"] or r["expect_fail"]):
            print(f"{r['adapter']} {r['mode']} {r['vector']}: {r['reason'] or r['error']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, sort_keys=True, default=float), encoding="utf-8")
    bad = [r for r in rows if not r["ok"]]
    if any(r["verdict"] == "ERROR" for r in rows):
        return 2
    print("every lane as expected" if not bad else f"NOT as expected: {', '.join(r['adapter'] for r in bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
