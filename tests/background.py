"""Child processes that a test module declares once and the session starts early, so that
they run on a second core while other tests run in the pytest process (pytest itself uses
one core; the CI machine has two).

A module declares a job at import time::

    KERAS_CONFIGS = background.Job("keras-get-config", [sys.executable, "-c", SCRIPT, ...],
                                   env=..., fixtures=("keras_configs",), timeout=300)

(``requires``: modules it needs; it is not queued where one is missing) and its fixture
waits for it: ``done = KERAS_CONFIGS.result()`` (a
``subprocess.CompletedProcess``, as ``subprocess.run(..., capture_output=True, text=True)``
returns). After collection, tests/conftest.py puts every job whose ``fixtures`` a selected
test uses on a ``Queue``, in the order the tests come; the queue's thread runs them one at a
time. A job asked for before its turn starts at once. Jobs that no selected test uses never
start, and a queued job still running when the session ends is killed.

``timeout`` counts from the job's start, as ``subprocess.run``'s does: past it, ``result()``
kills the child and raises ``subprocess.TimeoutExpired``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Every job declared in this process, by name.
JOBS: dict = {}

_starting = threading.local()


def starting() -> bool:
    """Whether this thread is starting a job's child process now (tests/conftest.py's
    guard does not count it: the tests that use a job get ``subprocess`` from the job)."""
    return getattr(_starting, "active", False)


def jobs_of(fixtures) -> list:
    """The jobs that a test using ``fixtures`` waits for."""
    fixtures = set(fixtures)
    return [job for job in JOBS.values() if fixtures & set(job.fixtures)]


class Job:
    """One child process, run at most once per session."""

    def __init__(self, name: str, args, *, env: dict | None = None, input: str | None = None,
                 cwd: Path | str = REPO, timeout: float = 600, fixtures=(), requires=()):
        if name in JOBS and JOBS[name].args != list(map(str, args)):
            raise ValueError(f"background job {name!r} is declared twice with different commands")
        self.name, self.args = name, list(map(str, args))
        self.env, self.input, self.cwd, self.timeout = env, input, cwd, timeout
        self.fixtures, self.requires = tuple(fixtures), tuple(requires)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._process: subprocess.Popen | None = None
        self._started_at: float | None = None
        self._output: tuple | None = None
        JOBS[name] = self

    def missing(self) -> list:
        """The modules of ``requires`` that are not installed (the job is not queued then)."""
        return [name for name in self.requires if importlib.util.find_spec(name) is None]

    @property
    def started(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        """Start the child and a thread that collects its output (once)."""
        with self._lock:
            if self._process is not None:
                return
            self._started_at = time.monotonic()
            _starting.active = True
            try:
                self._process = subprocess.Popen(
                    self.args, cwd=self.cwd, env=None if self.env is None else dict(self.env), text=True,
                    stdin=subprocess.PIPE if self.input is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            finally:
                _starting.active = False
        threading.Thread(target=self._communicate, name=f"background-{self.name}", daemon=True).start()

    def _communicate(self) -> None:
        try:
            self._output = self._process.communicate(self.input)
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the job finished within ``timeout`` seconds (it must have started)."""
        return self._done.wait(timeout)

    def result(self) -> subprocess.CompletedProcess:
        """The finished child (started now if it has not been); ``TimeoutExpired`` past
        ``timeout`` seconds from its start, the child killed."""
        self.start()
        left = self.timeout - (time.monotonic() - self._started_at)
        if not self._done.wait(max(left, 0)):
            self.kill()
            raise subprocess.TimeoutExpired(self.args, self.timeout)
        stdout, stderr = self._output
        return subprocess.CompletedProcess(self.args, self._process.returncode, stdout, stderr)

    def kill(self) -> None:
        """Kill the child if it is still running."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._done.wait(10)


class Queue:
    """Runs jobs one at a time, in order, on a thread of its own (a job already started,
    by ``result()``, is not started again: it is waited for)."""

    def __init__(self, jobs):
        self.jobs = list(jobs)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background-jobs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for job in self.jobs:
            if self._stopped.is_set():
                return
            job.start()
            job.wait(job.timeout)

    def stop(self) -> None:
        """Start no further job and kill this queue's jobs still running."""
        self._stopped.set()
        for job in self.jobs:
            job.kill()


def environment(**extra) -> dict:
    """This process's environment with ``extra`` added (for ``Job(env=...)``)."""
    return {**os.environ, **extra}
