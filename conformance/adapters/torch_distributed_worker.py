"""One rank of the torch distributed lane (conformance/adapters/torch_distributed.py).

Started by the lane, ``world`` of them at once, as

    python -m conformance.adapters.torch_distributed_worker RANK WORLD INIT_FILE BACKEND MESH PLACEMENT ENGINE

Each joins the process group (``init_method=file://INIT_FILE``, gloo on CPU, NCCL on GPUs),
builds the device mesh, then obeys the commands the lane sends on stdin (pickled tuples) and
answers each on its original stdout (pickled; the worker's own fd 1 is pointed at stderr so
that nothing torch prints can corrupt the protocol):

    ("create", spec)   the vector's variables as DTensors (or an FSDP2 module's parameters) and
                       ``torch.optim.Adafactor(params, **config)`` (or the engine's own step)
    ("load", state)    full arrays in; each rank keeps its shard (torch's own state layout)
    ("step", grads)    full gradients in; each rank's grad is its shard; one optimizer step
    ("read", None)     every variable and state tensor gathered (``full_tensor``) to rank 0
    ("close", None), ("exit", None)

Every rank answers every command: ``("ok", payload)`` (payload only from rank 0) or
``("error", class name, message, where)``, ``where`` being the innermost frames of the raise
as ``path:line`` relative to site-packages. Nothing here grades anything.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback


def _site(frame) -> str:
    path = frame.filename.replace(os.sep, "/")
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{frame.lineno}"


def _where(exc: BaseException, frames: int = 5) -> list[str]:
    """Where ``exc`` was raised, innermost first: the frame that raised the original error
    (following ``raise ... from`` causes, e.g. DTensor's sharding-propagation error re-raised by
    its dispatcher), then the innermost ``frames`` frames of ``exc`` itself."""
    out = [_site(f) for f in reversed(traceback.extract_tb(exc.__traceback__)[-frames:])]
    cause, seen = exc.__cause__, 0
    while cause is not None and seen < 8:
        inner = traceback.extract_tb(cause.__traceback__)
        if inner and _site(inner[-1]) not in out:
            out.insert(0, _site(inner[-1]))
        cause, seen = cause.__cause__, seen + 1
    return out


def _message(exc: BaseException) -> str:
    """The error's first line, plus the op DTensor names when it re-raises a sharding error
    (the op's full argument specs are left out)."""
    lines = str(exc).splitlines() or [""]
    out = lines[0]
    for line in lines[1:]:
        if line.startswith("Sharding propagation failed for "):
            out += " (" + line.split("(", 1)[0].strip() + ")"
            break
    return out


# ----------------------------------------------------------------------------- placements
def split_dims(shape, placement: str, mesh_shape) -> list:
    """Per mesh dimension, the tensor dimension it shards (or None: replicated) for a variable
    of ``shape`` under ``placement``; a dimension is split only where every rank along that
    mesh dimension gets at least one element (uneven splits are allowed, as DTensor allows)."""
    ndim = len(shape)
    wanted = {"replicate": [None], "shard0": [0], "shard-1": [ndim - 1], "2d": [0, ndim - 1],
              "fsdp2": [0]}[placement]
    if placement == "2d" and ndim < 2:
        return [None, None]
    dims = []
    for mesh_size, dim in zip(mesh_shape, wanted):
        dims.append(dim if dim is not None and ndim >= 1 and shape[dim] >= mesh_size else None)
    if placement == "2d" and None in dims:
        return [None, None]  # both axes or neither: a 2-D mesh lane tests the two-way split
    return dims


def is_split(dims) -> bool:
    return any(d is not None for d in dims)


# ----------------------------------------------------------------------------- a port
def _contiguous_strides(shape) -> tuple:
    strides, acc = [], 1
    for size in reversed(shape):
        strides.append(acc)
        acc *= max(size, 1)
    return tuple(reversed(strides))


def _rms(t, local_shard: bool) -> float:
    from torch.distributed.tensor import DTensor

    if local_shard and isinstance(t, DTensor):
        t = t.to_local()
    norm = t.norm(2)
    if isinstance(norm, DTensor):
        # DTensor.item() of a partial norm is the LOCAL partial (torch/distributed/tensor/
        # _sharding_prop.py:745 skips the redistribution for aten._local_scalar_dense):
        # reduce it explicitly.
        norm = norm.full_tensor()
    return norm.item() / (t.numel() ** 0.5)


def _mean_square(grad, dim: int, local_shard: bool):
    """mean(g*g, dim, keepdim) as torch computes it (norm, square, divide). ``local_shard``:
    over this rank's shard of ``dim`` only, the result then claimed to be the whole (the
    sharded reduced axis becomes Replicate with each rank's own partial mean)."""
    import torch
    from torch.distributed.tensor import DTensor, Replicate, Shard

    if not (local_shard and isinstance(grad, DTensor)):
        return torch.norm(grad, dim=dim, keepdim=True).square().div(grad.size(dim))
    g = grad.to_local()
    m = torch.norm(g, dim=dim, keepdim=True).square().div(g.size(dim))
    axis = dim % grad.ndim
    placements = [Replicate() if isinstance(pl, Shard) and pl.dim == axis else pl for pl in grad.placements]
    shape = list(grad.shape)
    shape[axis] = 1
    return DTensor.from_local(m, grad.device_mesh, placements, run_check=False, shape=torch.Size(shape),
                              stride=_contiguous_strides(shape))


def port_step(p, grad, state, *, lr, beta2_decay, eps1, eps2, d, weight_decay, maximize, local_shard):
    """Torch's _single_tensor_adafactor (torch/optim/_adafactor.py:368-426) with every
    in-place operation on a reduction's result written out of place (``square()``,
    ``div()``, ``clamp()``, ``rsqrt()``), so that DTensor can redistribute the partial norms it
    produces; the state updates (``lerp_``, ``mul_``, ``add_``) stay in place as in torch.
    ``local_shard=True`` is the broken port: every reduction over a split axis (the row and
    column means, RMS(x), RMS(u)) is taken over this rank's shard only (``to_local()``), as a
    port that forgets its all-reduce computes it."""
    import torch

    grad = -grad if maximize else grad
    step_t = state["step"]
    step_t += 1
    step_float = step_t.item()
    if eps1 is None:
        eps1 = torch.finfo(p.dtype).eps
    one_minus_beta2_t = step_float ** beta2_decay
    rho_t = min(lr, 1 / (step_float ** 0.5))
    alpha = max(eps2, _rms(p, local_shard)) * rho_t
    if weight_decay != 0:
        p.mul_(1 - lr * weight_decay)
    if grad.dim() > 1:
        row_var, col_var = state["row_var"], state["col_var"]
        row_var.lerp_(_mean_square(grad, -1, local_shard), one_minus_beta2_t)
        col_var.lerp_(_mean_square(grad, -2, local_shard), one_minus_beta2_t)
        var_estimate = (row_var @ col_var).div(row_var.mean(dim=-2, keepdim=True).clamp(min=eps1))
    else:
        variance = state["variance"]
        variance.lerp_(grad * grad, one_minus_beta2_t)
        var_estimate = variance.clone()
    update = var_estimate.clamp(min=eps1 * eps1).rsqrt().mul(grad)
    denom = max(1.0, _rms(update, local_shard) / d)
    p.add_(update, alpha=-alpha / denom)


# ----------------------------------------------------------------------------- the rank
class Rank:
    def __init__(self, rank: int, world: int, init_file: str, backend: str, mesh_shape, placement: str, engine: str):
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        torch.set_num_threads(1)
        self.torch, self.dist = torch, dist
        self.rank, self.world, self.placement, self.engine = rank, world, placement, engine
        self.mesh_shape = tuple(mesh_shape)
        self.device_type = "cuda" if backend == "nccl" else "cpu"
        if self.device_type == "cuda":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
        names = ("rows", "cols")[:len(self.mesh_shape)] if len(self.mesh_shape) > 1 else ("shard",)
        self.mesh = init_device_mesh(self.device_type, self.mesh_shape, mesh_dim_names=names)
        self.session = None

    # -------------------------------------------------------------- helpers
    def placements(self, dims):
        from torch.distributed.tensor import Replicate, Shard

        return [Replicate() if d is None else Shard(d) for d in dims]

    def distribute(self, full, placements):
        from torch.distributed.tensor import distribute_tensor

        # Every rank holds the full array (the vector), so each takes its own shard locally.
        return distribute_tensor(full, self.mesh, placements, src_data_rank=None)

    def tensor(self, array):
        import numpy as np

        return self.torch.tensor(np.asarray(array, dtype=np.float64), dtype=self.tdtype, device=self.device_type)

    def numpy(self, t):
        from torch.distributed.tensor import DTensor

        if isinstance(t, DTensor):
            t = t.full_tensor()
        t = t.detach().cpu()
        if t.dtype == self.torch.bfloat16:
            t = t.float()
        return t.numpy().copy()

    # -------------------------------------------------------------- commands
    def create(self, spec):
        torch = self.torch
        self.session = None
        self.tdtype = getattr(torch, spec["dtype"])
        config = dict(spec["config"])
        if isinstance(config.get("eps"), list):
            config["eps"] = tuple(config["eps"])
        shapes = [tuple(s) for s in spec["shapes"]]
        dims = [split_dims(s, self.placement, self.mesh_shape) for s in shapes]
        full = [self.tensor(x) for x in spec["initial"]]
        module = None
        if self.engine == "fsdp2":
            from torch.distributed.fsdp import fully_shard
            from torch.distributed.tensor import Shard

            module = Variables([torch.nn.Parameter(x.clone()) for x in full])
            params = [getattr(module, f"p{i}") for i in range(len(full))]
            ignored = {p for p, dd in zip(params, dims) if not is_split(dd)}
            by_id = {id(p): dd for p, dd in zip(params, dims)}
            fully_shard(module, mesh=self.mesh, ignored_params=ignored or None,
                        shard_placement_fn=lambda p: Shard(by_id[id(p)][0]))
            params = [getattr(module, f"p{i}") for i in range(len(full))]
        else:
            params = [torch.nn.Parameter(self.distribute(x, self.placements(dd))) for x, dd in zip(full, dims)]
        self.session = {"params": params, "dims": dims, "module": module, "config": config, "iterations": 0}
        if self.engine in ("port", "port-local-shard"):
            self.session["opt"] = None
            self.session["state"] = {}
            self.session["hyper"] = self._port_hyper(config)
        else:
            # An invalid configuration raises torch's own error here.
            self.session["opt"] = torch.optim.Adafactor(params, **config)
        return None

    def _port_hyper(self, config):
        # Validation is torch's: construct it once and throw it away.
        self.torch.optim.Adafactor([self.torch.nn.Parameter(self.torch.zeros(1))], **config)
        eps1, eps2 = config.get("eps", (None, 1e-3))
        return dict(lr=config.get("lr", 1e-2), beta2_decay=config.get("beta2_decay", -0.8), eps1=eps1, eps2=eps2,
                    d=config.get("d", 1.0), weight_decay=config.get("weight_decay", 0.0),
                    maximize=config.get("maximize", False))

    def _state_of(self, p):
        s = self.session
        return s["state"].setdefault(p, {}) if s["opt"] is None else s["opt"].state[p]

    def _new_state(self, p, iterations, r=None, c=None, v=None):
        """The per-parameter state as torch lays it out (torch/optim/_adafactor.py:95-113):
        ``new_zeros`` / ``zeros_like`` of the (DTensor) parameter, so the placements are the
        ones torch itself picks, then filled with the golden values."""
        from torch.distributed.tensor import DTensor
        from torch.optim.optimizer import _get_scalar_dtype

        torch = self.torch
        entry = {"step": torch.tensor(float(iterations), dtype=_get_scalar_dtype())}

        def filled(template, value):
            if isinstance(template, DTensor):
                template.copy_(self.distribute(self.tensor(value).reshape(template.shape), template.placements))
            else:
                template.copy_(self.tensor(value).reshape(template.shape))
            return template

        if p.dim() > 1:
            row_shape, col_shape = list(p.shape), list(p.shape)
            row_shape[-1] = 1
            col_shape[-2] = 1
            entry["row_var"] = filled(p.detach().new_zeros(row_shape), r)
            entry["col_var"] = filled(p.detach().new_zeros(col_shape), c)
        else:
            entry["variance"] = filled(torch.zeros_like(p.detach(), memory_format=torch.preserve_format), v)
        return entry

    def load(self, state):
        from torch.distributed.tensor import DTensor

        s = self.session
        with self.torch.no_grad():
            for p, value in zip(s["params"], state["variables"]):
                full = self.tensor(value)
                if isinstance(p, DTensor):
                    p.copy_(self.distribute(full, p.placements))
                else:
                    p.copy_(full)
            s["iterations"] = int(state["iterations"])
            store = s["state"] if s["opt"] is None else s["opt"].state
            store.clear()
            if s["iterations"] == 0 and s["opt"] is not None:
                return None  # torch creates its state lazily on the first step
            for i, p in enumerate(s["params"]):
                store[p] = self._new_state(p, s["iterations"], state["r"][i], state["c"][i], state["v"][i])
        return None

    def step(self, grads):
        from torch.distributed.tensor import DTensor

        torch = self.torch
        s = self.session
        params = s["params"]
        for p in params:
            p.grad = None
        if s["module"] is not None:
            # FSDP2: the gradient arrives through backward (all-gather in the pre-forward hook,
            # reduce-scatter in the post-backward hook); every rank computes the same G, so
            # FSDP's data-parallel average is G.
            loss = s["module"]([self.tensor(g) for g in grads])
            loss.backward()
        else:
            for p, g in zip(params, grads):
                full = self.tensor(g)
                p.grad = self.distribute(full, p.placements) if isinstance(p, DTensor) else full
        if s["opt"] is not None:
            s["opt"].step()
        else:
            with torch.no_grad():
                for p in params:
                    st = s["state"]
                    if p not in st:
                        st[p] = self._new_state_zero(p)
                    port_step(p, p.grad, st[p], local_shard=self.engine == "port-local-shard", **s["hyper"])
        s["iterations"] += 1
        return None

    def _new_state_zero(self, p):
        import numpy as np

        shape = tuple(p.shape)
        return self._new_state(p, 0, np.zeros(shape[:-1]), np.zeros(shape[:-2] + shape[-1:]), np.zeros(shape))

    def read(self, _):
        from torch.distributed.tensor import DTensor

        s = self.session
        store = s["state"] if s["opt"] is None else s["opt"].state
        out = {"variables": [], "r": [], "c": [], "v": [], "steps": [], "placements": [], "grad_placements": []}
        for p in s["params"]:
            out["variables"].append(self.numpy(p))
            out["placements"].append(repr(tuple(p.placements)) if isinstance(p, DTensor) else "local")
            out["grad_placements"].append(repr(tuple(p.grad.placements)) if isinstance(p.grad, DTensor)
                                          else ("none" if p.grad is None else "local"))
            st = store.get(p, {})
            out["steps"].append(None if "step" not in st else float(st["step"].item()))
            row, col, var = st.get("row_var"), st.get("col_var"), st.get("variance")
            out["r"].append(None if row is None else self.numpy(row)[..., 0])
            out["c"].append(None if col is None else self.numpy(col)[..., 0, :])
            out["v"].append(None if var is None else self.numpy(var))
            out.setdefault("state_placements", []).append(
                {k: repr(tuple(t.placements)) for k, t in st.items() if isinstance(t, DTensor)})
        return out if self.rank == 0 else None

    def describe(self, _):
        import torch

        return {"torch": torch.__version__, "backend": self.dist.get_backend(), "world": self.world,
                "mesh": repr(self.mesh), "pid": os.getpid()}


def _variables_module():
    import torch

    class Variables(torch.nn.Module):
        """A module whose parameters are the vector's variables; its loss is sum_i <p_i, G_i>,
        so that backward gives each parameter exactly the vector's gradient G_i."""

        def __init__(self, params):
            super().__init__()
            for i, p in enumerate(params):
                self.register_parameter(f"p{i}", p)
            self.count = len(params)

        def forward(self, constants):
            return sum((getattr(self, f"p{i}") * g).sum() for i, g in enumerate(constants))

    return Variables


def Variables(params):  # noqa: N802 - a class built on first use (torch is imported lazily)
    return _variables_module()(params)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rank, world, init_file, backend, mesh, placement, engine = argv
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    inp = sys.stdin.buffer
    try:
        worker = Rank(int(rank), int(world), init_file, backend, [int(x) for x in mesh.split("x")], placement, engine)
        pickle.dump(("ok", worker.describe(None)), out)
    except BaseException as exc:  # noqa: BLE001 - reported to the lane, which stops
        pickle.dump(("error", type(exc).__name__, _message(exc), _where(exc)), out)
        out.flush()
        return 1
    out.flush()
    handlers = {"create": worker.create, "load": worker.load, "step": worker.step, "read": worker.read,
                "describe": worker.describe}
    while True:
        try:
            command, payload = pickle.load(inp)
        except EOFError:
            break
        if command == "exit":
            break
        if command == "close":
            worker.session = None
            reply = ("ok", None)
        else:
            try:
                reply = ("ok", handlers[command](payload))
            except Exception as exc:  # noqa: BLE001 - the implementation's error, for the lane to grade
                reply = ("error", type(exc).__name__, _message(exc), _where(exc))
        pickle.dump(reply, out)
        out.flush()
    try:
        worker.dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
