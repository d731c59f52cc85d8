"""The torch distributed lanes: ``torch.optim.Adafactor`` on DTensor parameters, across processes.

Each lane is one placement of the torch dialect's vectors (``vectors/torch/``, the ones the
``torch`` adapter replays) over a ``torch.distributed`` process group that the lane starts
itself, once, when its first vector runs: ``world`` worker processes
(``conformance/adapters/torch_distributed_worker.py``), ``init_method=file://`` in a private
temporary directory, gloo on CPU (NCCL, one GPU per rank, with ``--device gpu`` where there
are enough GPUs). The adapter process is the coordinator only: it sends every rank the same
command and grades what rank 0 gathers.

    lane                             mesh   each variable [..., n, m]           engine
    torch-dtensor-replicate          2      Replicate()                         torch.optim.Adafactor on DTensors
    torch-dtensor-shard0             2      Shard(0)                            torch.optim.Adafactor on DTensors
    torch-dtensor-shard-1            2      Shard(-1)                           torch.optim.Adafactor on DTensors
    torch-dtensor-2d                 2x2    (Shard(0), Shard(-1))               torch.optim.Adafactor on DTensors
    torch-dtensor-fsdp2              2      Shard(0) by fully_shard             FSDP2 module, forward + backward

A dimension is split only where every rank along its mesh dimension gets at least one element
(uneven splits allowed: (5, 3) over 2 ranks is 3 + 2 rows); a variable with nothing to split
(0-D, or size-1 axes) stays replicated (FSDP2: ``ignored_params``), and a vector none of whose
variables splits is skipped with that reason (replicated, it is the Replicate lane's program).
The 2-D mesh splits both axes or neither. (FSDP2 with ``shard_placement_fn`` returning
Shard(-1) is not a lane: torch 2.13.0's fully_shard refuses uneven sharding on a dimension other
than 0 with NotImplementedError, and the torch vectors' last axes are 3 and 5.)

What a lane does per vector: ``create`` builds the variables as ``nn.Parameter(distribute_tensor
(x, mesh, placements))`` on every rank (each rank takes its own shard of the full array it was
sent) and ``torch.optim.Adafactor(params, **config)``; ``load`` (teacher forcing) copies the
golden variables into the DTensors and writes torch's per-parameter state in the layout torch
itself creates (``new_zeros`` / ``zeros_like`` of the DTensor parameter,
torch/optim/_adafactor.py:95-113: Replicate row_var/col_var, a variance sharded like its
parameter); ``step`` gives each rank its shard of the gradient (FSDP2 lanes: the module's
forward ``sum_i <p_i, G_i>`` and ``backward``, so the gradient arrives through FSDP's all-gather
and reduce-scatter); ``read`` gathers every variable and state tensor (``full_tensor()``) and
rank 0 sends them back. After each step the lane checks that every variable meant to be split
really is (its placements), so a lane cannot pass by running replicated.

An exception on the ranks (torch's own) is raised here as the same builtin class, with rank 0's
message and the innermost frames of where it was raised (``path:line``), so an expectation entry
``xfail ... because=raises:RuntimeError`` can name it. Conformance/TORCH_DISTRIBUTED.md says what
each placement does to the numerics.

Unregistered variants for the meta tests (tests/frameworks/test_torch_distributed.py):
``OutOfPlacePort`` (torch's single-tensor algorithm with the in-place ops on reduction results
written out of place: a DTensor port that works under Shard) and ``LocalShardMean`` (the same
port taking every reduction over the local shard only, ``to_local()``, the bug the lane exists
to catch), both on Shard(0) unless a subclass says otherwise.
"""

from __future__ import annotations

import atexit
import builtins
import os
import pickle
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

import numpy as np

from conformance.adapters.base import Adapter, AdapterError, Session, numpy_dtype
from conformance.adapters.torch_distributed_worker import is_split, split_dims
from conformance.vector import Vector, as_vector
from reference.state import Kind, State

#: placement -> (mesh shape, what each variable gets, in words)
PLACEMENTS = {
    "replicate": ((2,), "Replicate()"),
    "shard0": ((2,), "Shard(0)"),
    "shard-1": ((2,), "Shard(-1)"),
    "2d": ((2, 2), "(Shard(0), Shard(-1)) on a 2x2 mesh ('rows', 'cols')"),
    "fsdp2": ((2,), "Shard(0), by FSDP2 fully_shard"),
}
#: seconds a rank may take to answer one command (the gate's --timeout still bounds a vector)
REPLY_TIMEOUT = float(os.environ.get("ADAFACTOR_DTENSOR_REPLY_TIMEOUT", "120"))


class Pool:
    """The ``world`` worker processes of one lane, started once and kept for the lane."""

    def __init__(self, placement: str, engine: str, device: str):
        mesh_shape, _ = PLACEMENTS[placement]
        self.world = int(np.prod(mesh_shape))
        self.backend = "nccl" if device == "gpu" else "gloo"
        self.directory = tempfile.mkdtemp(prefix="adafactor-dtensor-")
        init_file = os.path.join(self.directory, "rendezvous")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.stderr_files = []
        self.procs = []
        self.replies = []
        started = time.perf_counter()
        for rank in range(self.world):
            err = open(os.path.join(self.directory, f"rank{rank}.stderr"), "w+b")
            self.stderr_files.append(err)
            proc = subprocess.Popen(
                [sys.executable, "-m", "conformance.adapters.torch_distributed_worker", str(rank), str(self.world),
                 init_file, self.backend, "x".join(map(str, mesh_shape)), placement, engine],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env, cwd=root)
            self.procs.append(proc)
            replies: queue.Queue = queue.Queue()
            threading.Thread(target=_reader, args=(proc.stdout, replies), daemon=True).start()
            self.replies.append(replies)
        atexit.register(self.close)
        self.info = self._collect("start")
        self.startup_s = time.perf_counter() - started

    def _collect(self, command: str) -> list:
        out = []
        for rank, replies in enumerate(self.replies):
            try:
                reply = replies.get(timeout=REPLY_TIMEOUT)
            except queue.Empty:
                self.close()
                raise AdapterError(f"torch distributed lane: rank {rank} did not answer {command!r} within "
                                   f"{REPLY_TIMEOUT:.0f} s{self._stderr_tail(rank)}") from None
            if reply is None:
                self.close()
                raise AdapterError(f"torch distributed lane: rank {rank} exited during {command!r}"
                                   f"{self._stderr_tail(rank)}")
            out.append(reply)
        return out

    def _stderr_tail(self, rank: int) -> str:
        try:
            f = self.stderr_files[rank]
            f.flush()
            f.seek(0)
            text = f.read().decode("utf-8", "replace").strip().splitlines()
            return (": " + " | ".join(line for line in text[-6:])) if text else ""
        except Exception:  # noqa: BLE001
            return ""

    def call(self, command: str, payload=None):
        """Send ``command`` to every rank; rank 0's payload, or the ranks' error raised here."""
        for proc in self.procs:
            try:
                pickle.dump((command, payload), proc.stdin)
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.close()
                raise AdapterError(f"torch distributed lane: a rank exited before {command!r}") from None
        replies = self._collect(command)
        errors = [(rank, r) for rank, r in enumerate(replies) if r[0] == "error"]
        if errors:
            _, (_, name, message, where) = errors[0]
            ranks = ", ".join(str(rank) for rank, _ in errors)
            raise _rebuild(name, f"{message} [ranks {ranks} of {self.world}; raised at {' <- '.join(where)}]")
        return replies[0][1]

    def close(self) -> None:
        for proc in getattr(self, "procs", []):
            if proc.poll() is None:
                try:
                    pickle.dump(("exit", None), proc.stdin)
                    proc.stdin.close()
                except (BrokenPipeError, OSError, ValueError):
                    pass
        deadline = time.time() + 10
        for proc in getattr(self, "procs", []):
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        for f in getattr(self, "stderr_files", []):
            f.close()
        self.stderr_files = []
        shutil.rmtree(getattr(self, "directory", ""), ignore_errors=True)


def _reader(stream, replies: queue.Queue) -> None:
    while True:
        try:
            replies.put(pickle.load(stream))
        except Exception:  # noqa: BLE001 - EOF or a broken stream: the rank is gone
            replies.put(None)
            return


def _rebuild(name: str, message: str) -> BaseException:
    """The ranks' exception as the same builtin class (RuntimeError, ValueError, ...);
    a class that is not a builtin becomes a RuntimeError naming it."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001
            pass
    return RuntimeError(f"{name}: {message}")


class DTensorSession(Session):
    def __init__(self, adapter: "TorchDTensorAdapter", vector: Vector, dtype: str, device: str):
        self.adapter = adapter
        self.pool = adapter.pool(device)
        self.vector_id = vector.id
        self.np_dtype = numpy_dtype(dtype)
        self.shapes = [tuple(s) for s in vector.shapes]
        mesh_shape, _ = PLACEMENTS[adapter.placement]
        self.dims = [split_dims(s, adapter.placement, mesh_shape) for s in self.shapes]
        self.iterations = 0
        self.pool.call("create", {"dtype": dtype, "config": dict(vector.config), "shapes": self.shapes,
                                  "initial": [np.asarray(x, dtype=np.float64) for x in vector.initial]})

    def load(self, state: State) -> None:
        self.iterations = int(state.iterations)
        self.pool.call("load", {"iterations": self.iterations,
                                "variables": [np.asarray(x, dtype=np.float64) for x in state.variables],
                                "r": [None if a is None else np.asarray(a, np.float64) for a in state.r],
                                "c": [None if a is None else np.asarray(a, np.float64) for a in state.c],
                                "v": [None if a is None else np.asarray(a, np.float64) for a in state.v]})

    def step(self, grads: list) -> None:
        for i, g in enumerate(grads):
            if g is None:
                raise AdapterError(f"vector {self.vector_id!r}: variable {i} has no gradient; torch counts steps "
                                   "per parameter, which dialect vectors do not record")
        from reference.dialects.torch import step_counter

        self.pool.call("step", [np.asarray(g, dtype=np.float64) for g in grads])
        self.iterations = step_counter(self.iterations)  # torch's float32 step stops at 2**24

    def read(self) -> State:
        out = self.pool.call("read")
        for i, (dims, placements) in enumerate(zip(self.dims, out["placements"])):
            if is_split(dims) and "Shard" not in placements:
                raise AdapterError(f"vector {self.vector_id!r}: variable {i} {self.shapes[i]} should be split "
                                   f"({dims}) but holds placements {placements}: the lane would not test a "
                                   "sharded step")
        for i, step in enumerate(out["steps"]):
            if step is not None and int(step) != self.iterations:
                raise AdapterError(f"vector {self.vector_id!r}: parameter {i} has step {step}, the optimizer "
                                   f"applied {self.iterations} steps")
        r, c, v = [], [], []
        for i, shape in enumerate(self.shapes):
            if len(shape) > 1:
                r.append(np.zeros(shape[:-1], self.np_dtype) if out["r"][i] is None else out["r"][i])
                c.append(np.zeros(shape[:-2] + shape[-1:], self.np_dtype) if out["c"][i] is None else out["c"][i])
                v.append(None)
            else:
                r.append(None)
                c.append(None)
                v.append(np.zeros(shape, self.np_dtype) if out["v"][i] is None else out["v"][i])
        self.adapter.last_placements = out
        return State(self.iterations, {Kind.VARIABLES: list(out["variables"]), Kind.R: r, Kind.C: c, Kind.V: v},
                     learning_rate_calls=None)

    def close(self) -> None:
        pool = self.adapter._pool
        if pool is not None and pool.procs:
            try:
                pool.call("close")
            except Exception:  # noqa: BLE001 - the next vector's create reports a dead pool
                pass


class TorchDTensorAdapter(Adapter):
    """torch.optim.Adafactor on DTensor parameters over a gloo (or NCCL) process group."""

    placement = "replicate"
    engine = "optim"  # optim: torch.optim.Adafactor; fsdp2: the same through fully_shard; port*: the meta ports
    registry_name = "torch-dtensor-replicate"

    def __init__(self):
        from conformance.adapters.registry import ADAPTERS

        name = self.registry_name
        if name in ADAPTERS:
            e = ADAPTERS[name]
            dialects, stem = e.dialects, e.expectation_stem
        else:  # not registered (yet): the torch dialect, conformance/expectations/<name>.txt
            dialects, stem = ("torch",), ""
        super().__init__(name=name, dtypes=("float64", "float32", "float16", "bfloat16"), devices=("cpu", "gpu"),
                         dialects=dialects, expectations=stem)
        self._pool: Optional[Pool] = None
        self._device = None
        self.last_placements = None

    # -------------------------------------------------------------- the process group
    def pool(self, device: str) -> Pool:
        if self._pool is not None and (not self._pool.procs or self._device != device):
            self._pool.close()
            self._pool = None
        if self._pool is None:
            engine = {"optim": "fsdp2" if self.placement.startswith("fsdp2") else "optim"}.get(self.engine, self.engine)
            self._pool = Pool(self.placement, engine, device)
            self._device = device
        return self._pool

    @property
    def world(self) -> int:
        return int(np.prod(PLACEMENTS[self.placement][0]))

    def gpu_problem(self) -> Optional[str]:
        import torch

        if not torch.cuda.is_available():
            return f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)"
        if torch.cuda.device_count() < self.world:
            return (f"the {self.name} lane needs {self.world} CUDA devices (one NCCL rank each), torch sees "
                    f"{torch.cuda.device_count()}")
        return None

    def environment(self, device: str) -> dict:
        import torch

        pool = self.pool(device)
        info = pool.info[0][1]
        mesh_shape, words = PLACEMENTS[self.placement]
        return {"torch": torch.__version__, "numpy": np.__version__,
                "processes": f"{pool.world} ranks ({pool.backend}, init_method=file://, pids "
                             f"{', '.join(str(r[1]['pid']) for r in pool.info)}; started in {pool.startup_s:.1f} s)",
                "mesh": info["mesh"], "placement": words,
                "engine": {"optim": "torch.optim.Adafactor on DTensor parameters",
                           "port": "out-of-place port of _single_tensor_adafactor on DTensors (meta test)",
                           "port-local-shard": "port with reductions over the local shard only (meta test: must fail)",
                           }.get(self.engine if not self.placement.startswith("fsdp2") else "",
                                 "FSDP2 fully_shard module, forward + backward, torch.optim.Adafactor"),
                "device": "cpu" if device == "cpu" else f"{pool.world} x {torch.cuda.get_device_name(0)}"}

    def unsupported(self, vector, dtype: str, device: str) -> Optional[str]:
        vector = as_vector(vector)
        mesh_shape, words = PLACEMENTS[self.placement]
        shapes = [tuple(s) for s in vector.shapes]
        if self.placement != "replicate" and not any(is_split(split_dims(s, self.placement, mesh_shape))
                                                     for s in shapes):
            return (f"no variable splits under {words} over {'x'.join(map(str, mesh_shape))} ranks (shapes {shapes}: "
                    "0-D variables have no axis, an axis of size < the ranks along it is not split); replicated it "
                    "is the torch-dtensor-replicate lane's program")
        return super().unsupported(vector, dtype, device)

    def create(self, vector: Vector, dtype: str, device: str) -> Session:
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(reason)
        return DTensorSession(self, as_vector(vector), dtype, device)


class TorchDTensorShard0Adapter(TorchDTensorAdapter):
    placement, registry_name = "shard0", "torch-dtensor-shard0"


class TorchDTensorShardLastAdapter(TorchDTensorAdapter):
    placement, registry_name = "shard-1", "torch-dtensor-shard-1"


class TorchDTensor2DAdapter(TorchDTensorAdapter):
    placement, registry_name = "2d", "torch-dtensor-2d"


class TorchFSDP2Adapter(TorchDTensorAdapter):
    placement, registry_name = "fsdp2", "torch-dtensor-fsdp2"


# ----------------------------------------------------------------------------- meta-test ports
class OutOfPlacePort(TorchDTensorAdapter):
    """A DTensor port of torch's single-tensor Adafactor with out-of-place ops on the
    reductions' results (conformance/adapters/torch_distributed_worker.py: port_step), on Shard(0).
    Not registered; graded with torch-dtensor-shard0's expectation file minus nothing: it must pass."""

    placement, engine, registry_name = "shard0", "port", "torch-dtensor-port-shard0"


class LocalShardMean(TorchDTensorAdapter):
    """The broken port: every reduction over a split axis taken over the local shard only."""

    placement, engine, registry_name = "shard0", "port-local-shard", "torch-dtensor-local-shard-mean"


class LocalShardMeanShardLast(LocalShardMean):
    placement, registry_name = "shard-1", "torch-dtensor-local-shard-mean-shard-1"


# Lanes without their expectation files (no conformance/expectations/<name>.txt exists), so that
# the tests see every vector graded, the ones the files xfail or skip included.
class BareShard0(TorchDTensorShard0Adapter):
    registry_name = "torch-dtensor-shard0-bare"


class BareShardLast(TorchDTensorShardLastAdapter):
    registry_name = "torch-dtensor-shard-1-bare"


class BareFSDP2(TorchFSDP2Adapter):
    registry_name = "torch-dtensor-fsdp2-bare"
