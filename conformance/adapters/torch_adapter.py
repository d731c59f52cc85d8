"""Real ``torch.optim.Adafactor`` on the torch dialect's vectors (reference/dialects/torch.py).

``create`` builds ``torch.optim.Adafactor(params, **config)`` exactly as a user would, the
vector's ``config`` being torch's own arguments (``eps`` stored as a JSON list, given back
as a tuple). Teacher forcing (``load``) writes torch's own per-parameter state
(torch/optim/_adafactor.py:95-113): ``step`` (a 0-d tensor of ``_get_scalar_dtype()``),
``row_var`` [..., n, 1] and ``col_var`` [..., 1, m] for dim > 1, ``variance`` otherwise.
At iterations 0 the state is left empty: torch initialises it lazily on the first step.

``read`` returns what torch holds, in the dtype torch holds it (the runner checks it against
the lane): r = row_var squeezed on its last axis, c = col_var squeezed on its row axis,
v = variance (None for a factored parameter, which has none). ``TorchForeachAdapter`` forces
``foreach=True`` (``_multi_tensor_adafactor``); plain ``TorchAdapter`` takes the vector's
``foreach`` (None: the single-tensor loop, torch's default for Adafactor).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from conformance.adapters.base import Adapter, AdapterError, Session, numpy_dtype, torch_gpu_problem
from conformance.adapters.registry import registered
from conformance.vector import Vector, as_vector
from reference.state import Kind, State


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is in the venv
        raise AdapterError(f"torch adapter: cannot import torch: {exc}") from exc
    return torch


class TorchSession(Session):
    def __init__(self, adapter: "TorchAdapter", vector: Vector, dtype: str, device: str):
        torch = _torch()
        vector = as_vector(vector)
        self.torch = torch
        self.adapter = adapter
        self.vector_id = vector.id
        self.dtype_name = dtype
        self.np_dtype = numpy_dtype(dtype)
        self.tdtype = getattr(torch, dtype)  # the lane dtypes are torch dtype names
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        config = dict(vector.config)
        if isinstance(config.get("eps"), list):
            config["eps"] = tuple(config["eps"])
        if adapter.force_foreach:
            config["foreach"] = True
        self.params = [torch.tensor(np.asarray(x, dtype=np.float64), dtype=self.tdtype, device=self.device,
                                    requires_grad=True)
                       for x in vector.initial]
        # An invalid configuration raises torch's own error here, uncaught.
        self.opt = torch.optim.Adafactor(self.params, **config)
        self.iterations = 0

    # ------------------------------------------------------------------ plumbing
    def _tensor(self, x):
        """A lane-dtype tensor of ``x`` (a NumPy array of any lane dtype, widened exactly to
        float64 first: torch.tensor does not take ml_dtypes' bfloat16)."""
        return self.torch.tensor(np.asarray(x, dtype=np.float64), dtype=self.tdtype, device=self.device)

    def _numpy(self, t) -> np.ndarray:
        return torch_to_numpy(self.torch, t)

    # ------------------------------------------------------------------ protocol
    def load(self, state: State) -> None:
        torch = self.torch
        from torch.optim.optimizer import _get_scalar_dtype

        with torch.no_grad():
            for p, value in zip(self.params, state.variables):
                p.copy_(self._tensor(value))
        self.iterations = int(state.iterations)
        self.opt.state.clear()
        if self.iterations == 0:
            return  # torch creates its state lazily on the first step (_adafactor.py:95)
        for i, p in enumerate(self.params):
            entry = {"step": torch.tensor(float(self.iterations), dtype=_get_scalar_dtype())}
            if p.dim() > 1:
                entry["row_var"] = self._tensor(state.r[i])[..., :, None].contiguous()
                entry["col_var"] = self._tensor(state.c[i])[..., None, :].contiguous()
            else:
                entry["variance"] = self._tensor(state.v[i])
            self.opt.state[p] = entry

    def step(self, grads: list) -> None:
        """One step; torch's step counter goes to float32(step + 1), which stops at 2**24
        (reference/dialects/torch.py step_counter, MODELLED["step_float32_freeze"])."""
        from reference.dialects.torch import step_counter

        expected = step_counter(self.iterations)
        step_with_gradients(self, grads, "torch")
        self.iterations = expected

    def read(self) -> State:
        """torch's state; ``iterations`` is torch's own ``step``, a float32 counter that stops
        at 2**24 (``step``), and every parameter's must be it."""
        r, c, v = [], [], []
        for i, p in enumerate(self.params):
            s = self.opt.state.get(p, {})
            if s and int(s["step"].item()) != self.iterations:
                raise AdapterError(f"vector {self.vector_id!r}: parameter {i} has step {s['step'].item()}, "
                                   f"expected {self.iterations}")
            if p.dim() > 1:
                row, col = s.get("row_var"), s.get("col_var")
                r.append(np.zeros(tuple(p.shape[:-1]), self.np_dtype) if row is None else self._numpy(row[..., 0]))
                c.append(np.zeros(tuple(p.shape[:-2]) + (p.shape[-1],), self.np_dtype) if col is None
                         else self._numpy(col[..., 0, :]))
                v.append(None)
            else:
                var = s.get("variance")
                r.append(None)
                c.append(None)
                v.append(np.zeros(tuple(p.shape), self.np_dtype) if var is None else self._numpy(var))
        return State(self.iterations, {Kind.VARIABLES: [self._numpy(p) for p in self.params],
                                       Kind.R: r, Kind.C: c, Kind.V: v}, learning_rate_calls=None)


def torch_to_numpy(torch, t) -> np.ndarray:
    """A NumPy copy of tensor ``t`` in the dtype it holds (bfloat16 as ml_dtypes.bfloat16,
    which ``Tensor.numpy`` does not produce), so the runner sees the dtype really used."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.float().numpy().astype(numpy_dtype("bfloat16"))
    return np.array(t.numpy(), copy=True)


def step_with_gradients(session, grads: list, framework: str) -> None:
    """Set every parameter's .grad (in the lane dtype) and take one optimizer step; shared by
    the torch, transformers and timm sessions (all count steps per parameter)."""
    for i, (p, g) in enumerate(zip(session.params, grads)):
        if g is None:
            raise AdapterError(f"vector {session.vector_id!r}: variable {i} has no gradient; {framework} "
                               "counts steps per parameter, which dialect vectors do not record")
        p.grad = session._tensor(g)
    session.opt.step()
    session.iterations += 1


class TorchAdapter(Adapter):
    """torch.optim.Adafactor, single-tensor path unless the vector asks for foreach."""

    force_foreach = False

    def unsupported(self, vector: Vector, dtype: str, device: str) -> Optional[str]:
        """Also skips a vector that uses a feature the torch dialect names unsupported
        (reference/dialects/torch.py UNSUPPORTED, ``detect``), saying which."""
        from reference.dialects import torch as dialect
        from reference.dialects.gaps import vector_skip_reason

        return (super().unsupported(vector, dtype, device)
                or vector_skip_reason("torch", "torch.optim.Adafactor", dialect.UNSUPPORTED, as_vector(vector)))

    def __init__(self):
        super().__init__(name="torch", dtypes=("float64", "float32", "float16", "bfloat16"),
                         devices=("cpu", "gpu"), **registered("torch"))

    def environment(self, device: str) -> dict:
        torch = _torch()
        return {"torch": torch.__version__, "numpy": np.__version__,
                "device": "cpu" if device == "cpu" else (torch.cuda.get_device_name(0)
                                                         if torch.cuda.is_available() else "none"),
                "path": "foreach (_multi_tensor_adafactor)" if self.force_foreach
                else "single-tensor (_single_tensor_adafactor) unless the vector sets foreach"}

    def gpu_problem(self) -> Optional[str]:
        _torch()
        return torch_gpu_problem()

    def create(self, vector: Vector, dtype: str, device: str) -> Session:
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(reason)
        return TorchSession(self, vector, dtype, device)


class TorchForeachAdapter(TorchAdapter):
    """torch.optim.Adafactor with foreach=True (_multi_tensor_adafactor, _adafactor.py:454-599)."""

    force_foreach = True

    def __init__(self):
        super().__init__()
        self.name = "torch-foreach"
