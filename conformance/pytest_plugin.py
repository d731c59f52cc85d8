"""The gate as a pytest plugin: ``pytest --adafactor-adapter mypkg.port:MyAdapter``.

Installed with the gate (entry point ``pytest11``), it is loaded into every pytest run of the
environment, and does nothing there until an adapter is named, on the command line or in the
port's pytest configuration::

    # the port's pyproject.toml
    [tool.pytest.ini_options]
    adafactor_adapter = "mypkg.port:MyAdapter"
    adafactor_dtypes = ["float32"]
    adafactor_xfail_files = ["conformance-expectations.txt"]

Then ``pytest`` collects one test per vector, dtype and mode (ids like
``float32-teacher-arguments/clipnorm/0.5``) under the node ``adafactor-conformance``, plus the
``anything-graded`` guard (NOTHING CHECKED is never success: conformance/pytest_entry.py). No
test file is needed in the port. Each test is marked ``adafactor`` and with its dtype and mode
(``-m "float32 and teacher"``, ``-m "not adafactor"``). A failing vector fails with the same
details as the CLI and a ``python -m conformance run ...`` line that reproduces it (the
adapter's import spec, the corpus when not the installed one, every expectation file).

Options (command line; the ini key of the same name without dashes, ``adafactor_<name>``,
is the default the command line overrides): see ``OPTIONS`` below and conformance/PORTING.md.
Relative paths in ini keys are relative to the configuration file's directory; on the
command line, to the current directory. ``adafactor_xfail_files`` and ``--adafactor-xfail-file``
add up; every other command-line option replaces its ini key.

``conformance.pytest_entry.conformance_tests(...)`` (a test module of the port's own) reads
these options as its defaults; where a collected module defines one, the plugin's own
collection steps aside (no test runs twice).

This module imports nothing heavy: pytest, the standard library. The gate itself (NumPy, the
runner, the corpus) is imported only once an adapter is named.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

#: The gate's choices, repeated here so that this module imports nothing of the gate's
#: (conformance/adapters/base.py DTYPES and DEVICES, conformance/cli.py MODES).
DTYPES = ("float64", "float32", "float16", "bfloat16")
MODES = ("teacher", "trajectory")
DEVICES = ("cpu", "gpu")
DEFAULT_DTYPES = ("float64", "float32")
#: The collector node that holds the tests the plugin collects itself.
NODE = "adafactor-conformance"
#: The marker every conformance test carries; each also carries its dtype and mode.
MARKER = "adafactor"
MARKERS = {MARKER: "a test of the Adafactor conformance gate (conformance/pytest_plugin.py)",
           **{d: f"an Adafactor conformance test of the {d} lane" for d in DTYPES},
           **{m: f"an Adafactor conformance test in {m} mode" for m in MODES}}

#: name: (ini type, help). The command-line option is ``--adafactor-<name with dashes>``,
#: the ini key ``adafactor_<name>``.
OPTIONS = {
    "adapter": ("string", "the adapter: a registered name (reference, keras-jax, ...) or an import spec "
                          "package.module:Class of the port; setting it collects the conformance tests"),
    "dtypes": ("args", f"lane dtypes, comma- or space-separated, from {','.join(DTYPES)} "
                       f"(default {','.join(DEFAULT_DTYPES)})"),
    "modes": ("args", "teacher and/or trajectory (default both)"),
    "vectors": ("args", "only vectors whose id starts with a PATTERN, fnmatches it (* ? [) or equals it (=ID); "
                        "default every vector"),
    "flags": ("args", "only vectors carrying every one of these flags (python -m conformance list shows them)"),
    "dialects": ("args", "the vector dialects the adapter replays (default: a registered adapter's own, "
                         "else keras)"),
    "device": ("string", "cpu or gpu (default cpu)"),
    "vectors_dir": ("string", "the golden-vector corpus (default: the one the installed gate carries)"),
    "xfail_files": ("args", "skip/xfail expectation files (format: conformance/expectations.py)"),
    "strict_xpass": ("bool", "fail, rather than warn on, a vector an xfail entry expected to fail that passes"),
}
#: What the command-line help shows as the value.
_METAVARS = {"adapter": "SPEC", "dtypes": "DTYPES", "modes": "MODES", "vectors": "PATTERN", "flags": "FLAG",
             "dialects": "DIALECTS", "device": "DEVICE", "vectors_dir": "DIR", "xfail_files": "FILE"}
#: Command-line spellings that differ from ``--adafactor-<name>``.
_FLAGS = {"xfail_files": "--adafactor-xfail-file"}


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--adafactor-" + name.replace("_", "-"))


def pytest_addoption(parser):
    group = parser.getgroup("adafactor-conformance", "Adafactor conformance gate (conformance/PORTING.md)")
    for name, (kind, text) in OPTIONS.items():
        dest = "adafactor_" + name
        if kind == "bool":
            group.addoption(_flag(name), action="store_true", default=None, dest=dest, help=text)
        elif kind == "args":
            group.addoption(_flag(name), action="append", default=None, dest=dest, metavar=_METAVARS[name],
                            help=text + " (repeatable)")
        else:
            group.addoption(_flag(name), default=None, dest=dest, metavar=_METAVARS[name], help=text)
        parser.addini(dest, text, type=kind, default=False if kind == "bool" else None)


@dataclass(frozen=True)
class Settings:
    """The resolved options. ``vectors_dir`` None: the installed corpus."""

    adapter: Optional[str] = None
    dtypes: tuple = DEFAULT_DTYPES
    modes: tuple = MODES
    vectors: tuple = ()
    flags: tuple = ()
    dialects: Optional[tuple] = None
    device: str = "cpu"
    vectors_dir: Optional[Path] = None
    xfail_files: tuple = ()
    strict_xpass: bool = False
    #: Where each value came from, for messages: {name: "--adafactor-dtypes" | "adafactor_dtypes (ini)"}.
    sources: dict = field(default_factory=dict, compare=False)

    def check(self) -> None:
        """ValueError naming the option when a value is not one the gate knows."""
        for name, allowed in (("dtypes", DTYPES), ("modes", MODES)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad:
                raise ValueError(f"{self.sources.get(name, name)}: unknown {name[:-1]} {bad}; "
                                 f"choose from {list(allowed)}")
            if not getattr(self, name):
                raise ValueError(f"{self.sources.get(name, name)}: no {name} given")
        if self.device not in DEVICES:
            raise ValueError(f"{self.sources.get('device', 'device')}: unknown device {self.device!r}; "
                             f"choose from {list(DEVICES)}")


def _split(values) -> tuple:
    return tuple(v.strip() for value in values for v in str(value).split(",") if v.strip())


def read_settings(config) -> Settings:
    """The options of ``config``: the command line over the ini keys over the defaults."""
    base = Path(config.inipath).parent if getattr(config, "inipath", None) else Path(config.rootpath)
    here = Path(config.invocation_params.dir)
    found, sources = {}, {}
    for name, (kind, _) in OPTIONS.items():
        dest = "adafactor_" + name
        cli = config.getoption(dest, None)
        ini = config.getini(dest)
        if kind == "args":
            cli_values, ini_values = _split(cli or ()), _split(ini or ())
            if name == "xfail_files":  # they add up, each relative to where it was given
                value = tuple(base / p for p in ini_values) + tuple(here / p for p in cli_values)
                if value:
                    found[name], sources[name] = value, _flag(name)
                continue
            if cli:
                found[name], sources[name] = cli_values, _flag(name)
            elif ini_values:
                found[name], sources[name] = ini_values, f"{dest} (ini)"
        elif kind == "bool":
            if cli or ini:
                found[name], sources[name] = True, _flag(name) if cli else f"{dest} (ini)"
        else:
            if cli:
                found[name], sources[name] = (here / cli if name == "vectors_dir" else cli.strip()), _flag(name)
            elif ini and str(ini).strip():
                found[name] = base / str(ini).strip() if name == "vectors_dir" else str(ini).strip()
                sources[name] = f"{dest} (ini)"
    return Settings(**found, sources=sources)


# ----------------------------------------------------------------------------- the active config
#: The configs of the pytest runs in progress, innermost last (pytester runs pytest in pytest):
#: ``conformance_tests`` reads its defaults from the innermost.
_CONFIGS: list = []


def current_settings() -> Settings:
    """The options of the innermost pytest run that loaded this plugin (defaults outside one)."""
    return read_settings(_CONFIGS[-1]) if _CONFIGS else Settings()


def pytest_configure(config):
    _CONFIGS.append(config)
    settings = read_settings(config)
    if not settings.adapter:
        return  # nothing else, in every pytest run of an environment where the gate is installed
    try:
        settings.check()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    register_markers(config)
    config.pluginmanager.register(_Suite(config, settings), "adafactor-conformance-suite")


def pytest_unconfigure(config):
    if config in _CONFIGS:
        _CONFIGS.remove(config)


def register_markers(config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


# ----------------------------------------------------------------------------- with an adapter
class _Suite:
    """The hooks of a run with an adapter named: the report header and the collection."""

    def __init__(self, config, settings: Settings):
        self.config = config
        self.settings = settings

    def vectors_dir(self) -> Path:
        return self.settings.vectors_dir or default_vectors_dir()

    def pytest_report_header(self, config):
        s = self.settings
        import conformance

        lines = [f"adafactor-conformance {getattr(conformance, '__version__', '(unversioned)')}: "
                 f"adapter {s.adapter} ({s.sources.get('adapter')}), dtypes {','.join(s.dtypes)}, "
                 f"modes {','.join(s.modes)}, device {s.device}"]
        try:
            from conformance.adapters import resolve

            adapter = resolve(s.adapter)
            env = ", ".join(f"{k}={v}" for k, v in adapter.environment(s.device).items())
            lines.append(f"  {adapter.name} on {s.device}: {env or '(no environment reported)'}")
        except Exception as exc:  # every test reports it again, as an error
            lines.append(f"  adapter {s.adapter!r} cannot be loaded: {exc}")
        try:
            lines.append(f"  corpus: {describe_corpus(self.vectors_dir())}")
        except Exception as exc:
            lines.append(f"  corpus: {exc}")
        if s.vectors or s.flags or s.dialects:
            dialects = list(s.dialects) if s.dialects else "the adapter's own"
            lines.append(f"  selection: vectors {list(s.vectors)}, flags {list(s.flags)}, dialects {dialects}")
        for path in s.xfail_files:
            lines.append(f"  expectations: {path}")
        return lines

    def pytest_itemcollected(self, item):
        """Mark every conformance test (the plugin's own and ``conformance_tests``'s) with
        ``adafactor`` and its dtype and mode, for ``-m``; the anything-graded guard with every
        dtype and mode of its selection, so that ``-m float32`` keeps it. (Only here, with an
        adapter named: a run without one registers no marker, whatever it collects.)"""
        function = getattr(item, "function", None)
        if getattr(function, "_adafactor_conformance", None) is None:
            return
        item.add_marker(MARKER)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("vector") is None:  # the guard: kept by any selection of a lane it guards
            lanes = getattr(function, "_adafactor_lanes", ())
        else:
            lanes = (params["dtype"], params["mode"])
        for name in lanes:
            item.add_marker(name)

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector):
        report = yield
        if isinstance(collector, pytest.Session) and report.passed:
            report.result.append(ConformanceModule.from_parent(
                collector, path=Path(collector.config.rootpath) / NODE, nodeid=NODE))
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session, config, items):
        """Where a collected module calls ``conformance_tests`` itself, that module is the
        port's conformance suite: the plugin's own collection steps aside."""
        mine = [i for i in items if getattr(getattr(i, "function", None), "_adafactor_conformance", None) == "plugin"]
        if mine and any(getattr(getattr(i, "function", None), "_adafactor_conformance", None) == "explicit"
                        for i in items):
            items[:] = [i for i in items if i not in set(mine)]
            config.hook.pytest_deselected(items=mine)


class ConformanceModule(pytest.Module):
    """The tests the plugin collects itself: a module made in memory, not read from a file."""

    def _getobj(self):
        from conformance.pytest_entry import conformance_tests

        s = read_settings(self.config)
        module = types.ModuleType("adafactor_conformance")
        module.__file__ = str(self.path)
        module.test_adafactor_conformance = conformance_tests(
            s.adapter, dtypes=s.dtypes, modes=s.modes, vectors=s.vectors, flags=s.flags, device=s.device,
            xfail_files=s.xfail_files, strict=s.strict_xpass, vectors_dir=s.vectors_dir, dialects=s.dialects,
            _origin="plugin")
        return module

    def istestfunction(self, obj, name):  # whatever the port's python_functions
        return name == "test_adafactor_conformance"

    def istestclass(self, obj, name):
        return False


# ----------------------------------------------------------------------------- the corpus
def default_vectors_dir() -> Path:
    """The corpus the installed gate carries (conformance.corpus), else the checkout's vectors/."""
    try:
        from conformance import corpus
    except ImportError:
        return Path(__file__).resolve().parent.parent / "vectors"
    try:
        return corpus.default_vectors_dir()
    except FileNotFoundError as exc:
        raise pytest.UsageError(f"{exc} (--adafactor-vectors-dir / adafactor_vectors_dir)") from None


def describe_corpus(vectors_dir) -> str:
    try:
        from conformance import corpus
    except ImportError:
        return str(vectors_dir)
    identity = corpus.corpus_identity(vectors_dir)
    describe = getattr(corpus, "describe", None)
    return describe(identity) if describe else f"{identity} at {vectors_dir}"
