"""Adapters that die, hang or run nothing, for tests/gate/test_fail_closed.py. Each is the
reference with one way of ending badly inside ``step`` (or of running nothing); the gate
must call every one of them an ERROR (exit 2) or NOTHING CHECKED (exit 3), never a pass.

    python -m conformance run --adapter tests.gate.fail_closed_adapters:ExitsZero

``FAIL_CLOSED_PIDS`` (an environment variable naming a file): where HangsWithChild writes
its own pid and its child's, once both are running.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conformance import vectorfile as vf
from conformance.adapters.reference import ReferenceAdapter
from tests.helpers import REPO
#: A small corpus for fast runs: 3 valid Keras vectors of 2 steps, the Keras and torch invalid ones.
MINI_FILES = ("keras/regression.json", "keras/invalid.json", "torch/invalid.json")


def mini_corpus(directory: Path) -> Path:
    """Copy MINI_FILES of the real corpus to ``directory`` with a manifest of their own."""
    manifest = json.loads((REPO / "vectors" / vf.MANIFEST_NAME).read_text())
    files = {}
    for relative in MINI_FILES:
        text = (REPO / "vectors" / relative).read_text()
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(text)
        files[relative] = {"sha256": hashlib.sha256(text.encode()).hexdigest(),
                           "vectors": len(json.loads(text)["vectors"])}
    manifest["files"] = files
    manifest["total_vectors"] = sum(f["vectors"] for f in files.values())
    (directory / vf.MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return directory


class _Dying:
    def __init__(self, inner, how):
        self.inner, self.how = inner, how

    def load(self, state):
        self.inner.load(state)

    def step(self, grads):
        self.how()
        self.inner.step(grads)

    def read(self):
        return self.inner.read()

    def close(self):
        self.inner.close()


class _DiesInStep(ReferenceAdapter):
    label = "dies"

    def __init__(self):
        super().__init__()
        self.name = f"fail-closed:{type(self).__name__}"

    def die(self):
        raise NotImplementedError

    def create(self, vector, dtype, device):
        return _Dying(super().create(vector, dtype, device), self.die)


class ExitsZero(_DiesInStep):
    """os._exit(0) in step: no exception, no cleanup, exit status 0."""

    def die(self):
        os._exit(0)


class SysExitZero(_DiesInStep):
    """sys.exit(0) in step: SystemExit unwinds through the runner and the CLI."""

    def die(self):
        sys.exit(0)


class KilledBySignal(_DiesInStep):
    """The process is SIGKILLed in step (the OOM killer, a segfaulting extension)."""

    def die(self):
        os.kill(os.getpid(), signal.SIGKILL)


class Hangs(_DiesInStep):
    """Never returns from step (a deadlock, a wait on a device that never answers)."""

    def die(self):
        while True:
            time.sleep(1)


class HangsWithChild(_DiesInStep):
    """Starts a child process of its own, records both pids, then hangs in step: stopping
    the gate must stop both."""

    def die(self):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        path = os.environ.get("FAIL_CLOSED_PIDS")
        if path:
            with open(path + ".tmp", "w") as handle:
                handle.write(f"{os.getpid()} {child.pid}\n")
            os.replace(path + ".tmp", path)
        while True:
            time.sleep(1)


class ExitsAfterReport(ReferenceAdapter):
    """Runs every vector correctly, then exits 0 from an atexit hook whatever the verdict
    was: the exit status disagrees with the report it wrote."""

    def __init__(self):
        super().__init__()
        self.name = "fail-closed:ExitsAfterReport"
        import atexit

        atexit.register(lambda: os._exit(5))


class Float32Only(ReferenceAdapter):
    """An honest port that runs float32 only."""

    def __init__(self):
        super().__init__()
        self.name, self.dtypes = "fail-closed:Float32Only", ("float32",)


class KerasOnly(ReferenceAdapter):
    """The reference restricted to the Keras dialect (as a Keras port declares)."""

    def __init__(self):
        super().__init__()
        self.name, self.dialects = "fail-closed:KerasOnly", ("keras",)


class SupportsNothing(ReferenceAdapter):
    """Skips every vector with a reason: the lane runs and grades nothing."""

    def __init__(self):
        super().__init__()
        self.name = "fail-closed:SupportsNothing"

    def unsupported(self, vector, dtype, device):
        return "this port supports no configuration"


class RaisesInStep(_DiesInStep):
    """Raises FloatingPointError in step: a failure the runner grades (not a crash of the
    process), and one an ``xfail because=raises:FloatingPointError`` entry can name."""

    def die(self):
        raise FloatingPointError("simulated overflow trap")
