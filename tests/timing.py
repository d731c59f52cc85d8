"""A pytest plugin that writes, as the run goes, one JSON line per collected module, per
test phase and for the end of collection to the file ``ADAFACTOR_TEST_TIMING`` names (no
file: the plugin does nothing). tests/benchmark_suite.py loads it with ``-p tests.timing``
and reads the file, so a run cut short still leaves its timings.

Lines: ``{"collected": seconds since the session started, "items": n}``,
``{"module": nodeid, "seconds": s}`` (importing and collecting one module) and
``{"test": nodeid, "when": "setup"|"call"|"teardown", "seconds": s, "outcome": ...}``.
"""

from __future__ import annotations

import json
import os
import time

_PATH = os.environ.get("ADAFACTOR_TEST_TIMING")
_started = time.perf_counter()
_collecting: dict = {}


def _write(record: dict) -> None:
    if _PATH:
        with open(_PATH, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


def pytest_collectstart(collector):
    _collecting[collector.nodeid] = time.perf_counter()


def pytest_collectreport(report):
    start = _collecting.pop(report.nodeid, None)
    if start is not None and report.nodeid.endswith(".py"):
        _write({"module": report.nodeid, "seconds": time.perf_counter() - start, "outcome": report.outcome})


def pytest_collection_finish(session):
    _write({"collected": time.perf_counter() - _started, "items": len(session.items)})


def pytest_runtest_logreport(report):
    _write({"test": report.nodeid, "when": report.when, "seconds": report.duration, "outcome": report.outcome})
