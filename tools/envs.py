"""Cached virtual environments that run the gate against other framework versions.

    python -m tools.envs list                                  # known specs; which are built
    python -m tools.envs create keras==3.11.3:torch            # build (or find) the env
    python -m tools.envs create keras-nightly:torch --refresh  # newest nightly in its env
    python -m tools.envs run keras-nightly:torch --out out/envs   # its lanes, JSON reports
    python -m tools.envs run torch==2.6.0 --adapter torch -- --dtype float64

A spec is ``<requirement>[:<backend>]``:

* ``keras==X`` or ``keras-nightly`` with a backend (``jax``, ``torch``, ``tensorflow``): Keras
  on that backend, the backend pinned as in constraints.txt; its lane is ``keras-<backend>``;
* ``torch==X`` (lanes ``torch``, ``torch-foreach``), ``optax==X`` (``optax``, jax pinned),
  ``transformers==X`` (``transformers``, torch pinned).

Each spec gets its own venv under the cache directory (default ``.envs/`` in the checkout,
``--cache DIR`` or ``ADAFACTOR_ENVS``), named after the spec. Inside: the frameworks (torch
first and alone, as the CPU build ``torch==<pin>+cpu``, and every later pip call constrained
to it, so that nothing pulls a CUDA build), the gate's runtime dependencies, and the gate
itself installed editable with ``--no-deps`` (the checkout's code, vectors and expectation
files). A stamp file (``.adafactor-env.json``) records the install steps: a second
``create`` with the same steps does nothing; different steps (or no stamp: an interrupted
build) rebuild the env from scratch. ``--refresh`` upgrades the unpinned requirements
(``keras-nightly``) in place and restamps.

``run`` writes one report per lane adapter, ``<out>/<env name>/<adapter>.json``
(``conformance run --json``) and its output, ``<adapter>.log``, and prints each adapter's verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".envs"
STAMP = ".adafactor-env.json"
#: What the gate itself needs at run time (pyproject.toml's dependencies); installed in every
#: env, unpinned, so that pip picks versions compatible with the frameworks.
GATE_DEPENDENCIES = ("numpy", "tabulate", "ml_dtypes")
BACKENDS = ("jax", "torch", "tensorflow")
#: The lanes each kind of spec runs.
KERAS_LANES = {b: f"keras-{b}" for b in BACKENDS}
NATIVE_LANES = {"torch": ("torch", "torch-foreach"), "optax": ("optax",), "transformers": ("transformers",)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


class EnvError(RuntimeError):
    """A spec that cannot be built or run (exit 2)."""


def pins(path: Path = REPO / "constraints.txt") -> dict:
    """{distribution: version} of the ``name==version`` lines of constraints.txt."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        name, sep, version = line.partition("==")
        if sep and name.strip() and version.strip():
            found[name.strip().lower()] = version.strip()
    return found


@dataclass(frozen=True)
class Step:
    """One pip call: ``install`` (``upgrade``: newest of the unpinned ones; ``no_deps``) or
    ``uninstall``."""

    action: str
    requirements: tuple
    upgrade: bool = False
    no_deps: bool = False
    index: str = ""  # the only index this step installs from

    def as_json(self) -> dict:
        data = {"action": self.action, "requirements": list(self.requirements), "upgrade": self.upgrade,
                "no_deps": self.no_deps}
        return dict(data, index=self.index) if self.index else data


@dataclass(frozen=True)
class EnvSpec:
    """A named environment: its pip steps (in order) and the gate lanes it runs."""

    name: str
    steps: tuple
    lanes: tuple
    spec: str = ""  # as written on the command line
    constraints: tuple = ()  # applied to every install step (the CPU torch pin)

    def stamp(self) -> dict:
        return {"name": self.name, "spec": self.spec, "steps": [s.as_json() for s in self.steps],
                "constraints": list(self.constraints), "gate": str(REPO)}

    @property
    def refreshable(self) -> bool:
        return any(s.upgrade for s in self.steps)


#: Where CPU builds of other torch versions come from (the pinned one lies in pip's find-links).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _torch_steps(torch_version: str, pinned: str = "") -> tuple[list, tuple]:
    """torch first and alone, as the CPU build; every later step constrained to it. The
    pinned version as ``==X+cpu``; any other (``2.6.0``, a series ``2.6.*``) from the
    PyTorch CPU index only, whose builds are all CPU ones."""
    if torch_version == pinned or "+" in torch_version:
        cpu = torch_version if "+" in torch_version else f"{torch_version}+cpu"
        return [Step("install", (f"torch=={cpu}",))], (f"torch=={cpu}",)
    return [Step("install", (f"torch=={torch_version}",), index=TORCH_CPU_INDEX)], (f"torch=={torch_version}",)


def parse_spec(text: str, constraints: Optional[dict] = None) -> EnvSpec:
    """The EnvSpec of ``keras==3.11.3:torch``, ``keras-nightly:jax``, ``torch==2.6.0``,
    ``optax==0.2.4``, ``transformers==4.40.0``; EnvError for anything else."""
    pinned = pins() if constraints is None else constraints
    requirement, _, backend = text.partition(":")
    requirement = requirement.strip()
    match = _NAME.match(requirement)
    if not match:
        raise EnvError(f"spec {text!r}: expected <requirement>[:<backend>], e.g. keras==3.11.3:torch")
    dist, rest = match.group(0).lower(), requirement[match.end():]
    if rest and not rest.startswith("=="):
        raise EnvError(f"spec {text!r}: pin one version with ==, e.g. {dist}==1.2.3")
    version = rest[2:]
    if rest and not re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*?(\.\*)?", version):
        raise EnvError(f"spec {text!r}: {version!r} is not a version (or a series such as 2.5.*)")

    def pin(name):
        if name not in pinned:
            raise EnvError(f"spec {text!r}: constraints.txt pins no {name}")
        return f"{name}=={pinned[name]}"

    steps, extra = [], ()
    if dist in ("keras", "keras-nightly"):
        if backend not in BACKENDS:
            raise EnvError(f"spec {text!r}: Keras needs a backend: {requirement}:<{'|'.join(BACKENDS)}>")
        if dist == "keras" and not version:
            raise EnvError(f"spec {text!r}: pin the release (keras==X.Y.Z) or use keras-nightly")
        if dist == "keras-nightly" and version:
            requirement = f"keras-nightly=={version}"
        if backend == "torch":
            steps, extra = _torch_steps(pinned.get("torch", ""), pinned.get("torch", ""))
            frameworks = ()
        elif backend == "jax":
            frameworks = (pin("jax"), pin("jaxlib"))
        else:
            frameworks = (pin("tensorflow-cpu"),)
        steps.append(Step("install", frameworks + GATE_DEPENDENCIES))
        if backend == "tensorflow":
            # TensorFlow depends on a keras release; remove it before installing the one wanted
            # (after would delete the files a keras-nightly shares with it).
            steps.append(Step("uninstall", ("keras", "keras-nightly")))
        steps.append(Step("install", (requirement,), upgrade=not version))
        label = f"keras-{(version or 'nightly').replace('.*', '.x')}-{backend}"
        return EnvSpec(label, tuple(steps), (KERAS_LANES[backend],), text, extra)
    if backend:
        raise EnvError(f"spec {text!r}: only Keras specs take a backend")
    if not version:
        raise EnvError(f"spec {text!r}: pin the version, e.g. {dist}==1.2.3")
    if dist == "torch":
        steps, extra = _torch_steps(version, pinned.get("torch", ""))
        steps.append(Step("install", GATE_DEPENDENCIES))
    elif dist == "transformers":
        steps, extra = _torch_steps(pinned.get("torch", ""), pinned.get("torch", ""))
        steps.append(Step("install", (requirement,) + GATE_DEPENDENCIES))
    elif dist == "optax":
        steps.append(Step("install", (pin("jax"), pin("jaxlib"), requirement) + GATE_DEPENDENCIES))
    else:
        raise EnvError(f"spec {text!r}: no lanes for {dist}; use keras, keras-nightly, torch, optax or transformers")
    return EnvSpec(f"{dist}-{version.replace('.*', '.x')}", tuple(steps), NATIVE_LANES[dist], text, extra)


# ----------------------------------------------------------------------------- installing
@dataclass
class Installer:
    """What touches the disk and the network: a venv and pip calls. Tests pass a fake."""

    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))

    def create_venv(self, path: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)

    def pip(self, python: Path, args: list) -> None:
        self.log(f"  pip {' '.join(args)}")
        done = subprocess.run([str(python), "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        if done.returncode:
            raise EnvError(f"pip {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}")

    def versions(self, python: Path) -> dict:
        """{distribution: version} of everything installed in the env."""
        code = ("import importlib.metadata as m, json; "
                "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))")
        done = subprocess.run([str(python), "-c", code], stdout=subprocess.PIPE, text=True, check=True)
        return json.loads(done.stdout)


def python_of(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def read_stamp(path: Path) -> Optional[dict]:
    try:
        return json.loads((path / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path, data: dict) -> None:
    tmp = path / f"{STAMP}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path / STAMP)


def ensure(spec: EnvSpec, cache: Path = DEFAULT_CACHE, *, refresh: bool = False,
           installer: Optional[Installer] = None) -> Path:
    """The env of ``spec`` under ``cache``, built if its stamp does not record these steps;
    ``refresh``: upgrade its unpinned requirements. Returns the env's directory."""
    installer = installer or Installer()
    path = Path(cache) / spec.name
    python = python_of(path)
    wanted = spec.stamp()
    stamp = read_stamp(path)
    current = stamp is not None and {k: v for k, v in stamp.items() if k in wanted} == wanted
    if current and not (refresh and spec.refreshable):
        installer.log(f"{spec.name}: cached ({path})")
        return path
    constraint_args = []
    if not current:
        installer.log(f"{spec.name}: building in {path}")
        if path.exists():
            shutil.rmtree(path)
        Path(cache).mkdir(parents=True, exist_ok=True)
        installer.create_venv(path)
    if spec.constraints:
        constraint_file = path / "constraints.txt"
        constraint_file.write_text("\n".join(spec.constraints) + "\n", encoding="utf-8")
        constraint_args = ["-c", str(constraint_file)]
    steps = [s for s in spec.steps if s.upgrade] if current else list(spec.steps)
    for step in steps:
        if step.action == "uninstall":
            installer.pip(python, ["uninstall", "-y", *step.requirements])
            continue
        args = ["install", "-q"] + (["--upgrade"] if step.upgrade else []) + (["--no-deps"] if step.no_deps else []) \
            + (["--index-url", step.index] if step.index else [])
        first_torch = len(step.requirements) == 1 and step.requirements[0].startswith("torch==")
        installer.pip(python, args + ([] if first_torch else constraint_args) + list(step.requirements))
    if not current:
        installer.pip(python, ["install", "-q", "--no-deps", "-e", str(REPO)])
    versions = installer.versions(python)
    torch = versions.get("torch")
    if torch is not None and "+cpu" not in torch:
        raise EnvError(f"{spec.name}: torch {torch} is not the CPU build; remove {path}")
    _write_stamp(path, dict(wanted, installed=versions))
    return path


# ----------------------------------------------------------------------------- running
def run_logged(command: list, log_path: Path) -> int:
    """Run ``command`` in the checkout, its output (stdout and stderr) printed as it comes and
    kept in ``log_path``: where an adapter process dies before its report, the log says why
    (an ImportError of the release, a traceback). Returns the exit status."""
    with open(log_path, "w", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace")
        for line in process.stdout:
            sys.stdout.write(line)
            log_file.write(line)
        sys.stdout.flush()
        return process.wait()


def run_lanes(spec: EnvSpec, env: Path, out: Path, gate_args=(), adapters=None, *, runner=None,
              log=None) -> dict:
    """Run each lane adapter of ``spec`` (or ``adapters``) with the env's Python, one
    ``conformance run`` each, writing ``out/<adapter>.json`` and its output to
    ``out/<adapter>.log``. Returns {adapter: exit status}."""
    log = log or (lambda line: print(line, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    codes = {}
    for adapter in adapters or spec.lanes:
        report, output = out / f"{adapter}.json", out / f"{adapter}.log"
        for stale in (report, output):
            if stale.exists():
                stale.unlink()  # never read a previous run's report or log as this one's
        command = [str(python_of(env)), "-m", "conformance", "run", "--adapter", adapter, "--json", str(report),
                   *gate_args]
        log(f"{spec.name}: {' '.join(command)}")
        codes[adapter] = runner(command) if runner else run_logged(command, output)
    return codes


def cache_dir(arg: Optional[str]) -> Path:
    return Path(arg or os.environ.get("ADAFACTOR_ENVS") or DEFAULT_CACHE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="the cache directory (default .envs/ in the checkout, or $ADAFACTOR_ENVS)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the built envs and their installed frameworks")
    for name in ("create", "run", "path"):
        p = sub.add_parser(name, help={"create": "build the env of a spec (cached)",
                                       "run": "build, then run its lanes writing JSON reports",
                                       "path": "print the env's directory"}[name])
        p.add_argument("spec", help="e.g. keras==3.11.3:torch, keras-nightly:jax, torch==2.6.0")
        if name != "path":
            p.add_argument("--refresh", action="store_true", help="upgrade unpinned requirements (keras-nightly)")
        if name == "run":
            p.add_argument("--out", default=str(REPO / "out" / "envs"), help="reports go to OUT/<env name>/")
            p.add_argument("--adapter", action="append", help="a lane adapter (default: the spec's lanes)")
            p.add_argument("gate_args", nargs="*", help="after --: passed to conformance run")
    args = parser.parse_args(argv)
    cache = cache_dir(args.cache)
    try:
        if args.command == "list":
            for path in sorted(cache.glob("*/")) if cache.is_dir() else []:
                stamp = read_stamp(path)
                if stamp is None:
                    print(f"{path.name}: incomplete (rebuilt on next use)")
                    continue
                installed = stamp.get("installed", {})
                names = [n for n in ("keras", "keras-nightly", "jax", "torch", "tensorflow-cpu", "optax",
                                     "transformers") if n in installed]
                print(f"{path.name}: " + ", ".join(f"{n} {installed[n]}" for n in names))
            return 0
        spec = parse_spec(args.spec)
        if args.command == "path":
            print(cache / spec.name)
            return 0
        env = ensure(spec, cache, refresh=args.refresh)
        if args.command == "create":
            print(env)
            return 0
        codes = run_lanes(spec, env, Path(args.out) / spec.name, args.gate_args, args.adapter)
        for adapter, code in codes.items():
            print(f"{spec.name} {adapter}: exit {code}")
        return max(codes.values())
    except EnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
