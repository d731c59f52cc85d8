"""Real ``transformers.optimization.Adafactor`` on the transformers dialect's vectors
(reference/dialects/transformers.py).

``create`` builds ``Adafactor(params, **config)`` exactly as a user would, ``config`` being
transformers' own arguments (``eps`` stored as a JSON list, given back as a tuple); an
invalid configuration raises transformers' own ValueError there (optimization.py:1155-1158).
Teacher forcing (``load``) writes transformers' per-parameter state (optimization.py:1230-1242):
``step`` (a Python int), ``RMS`` (recomputed from p on every step, :1257), ``exp_avg_sq_row``
[..., n] / ``exp_avg_sq_col`` [..., m] for ndim >= 2, ``exp_avg_sq`` otherwise, and
``exp_avg`` when ``beta1`` is set. At iterations 0 the state is left empty: transformers
initialises it lazily on the first step.

``read`` returns what transformers holds, in the dtype it holds it (r = exp_avg_sq_row,
c = exp_avg_sq_col, v = exp_avg_sq or None for a factored parameter, momentum = exp_avg).
All four lane dtypes run: float16/bfloat16 parameters are stepped through a float32 copy and
their statistics and momentum kept in float32 (:1220-1221, :1237-1238, :1252-1254), which
``TransformersAdapter.state_dtypes`` declares to the runner.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from conformance.adapters.base import Adapter, AdapterError, Session, numpy_dtype, torch_gpu_problem
from conformance.adapters.registry import registered
from conformance.adapters.torch_adapter import step_with_gradients, torch_to_numpy
from conformance.vector import Vector, as_vector
from reference.state import Kind, State

#: Lanes whose parameters transformers steps in float32 (optimization.py:1253-1254).
HALF_DTYPES = ("float16", "bfloat16")

#: State kind -> transformers' per-parameter state key (optimization.py:1230-1242).
_STATE_KEYS = {Kind.R: "exp_avg_sq_row", Kind.C: "exp_avg_sq_col", Kind.V: "exp_avg_sq", Kind.MOMENTUM: "exp_avg"}


def _imports():
    try:
        import torch
        from transformers.optimization import Adafactor
    except ImportError as exc:  # pragma: no cover - both are in the venv
        raise AdapterError(f"transformers adapter: cannot import torch/transformers: {exc}") from exc
    return torch, Adafactor


class TransformersSession(Session):
    def __init__(self, adapter: "TransformersAdapter", vector: Vector, dtype: str, device: str):
        torch, adafactor = _imports()
        vector = as_vector(vector)
        self.torch = torch
        self.adapter = adapter
        self.vector_id = vector.id
        self.dtype_name = dtype
        self.np_dtype = numpy_dtype(dtype)
        self.tdtype = getattr(torch, dtype)
        # transformers computes half-precision parameters in float32 and keeps their
        # statistics and momentum in float32 (optimization.py:1220-1221, 1237-1238, 1253-1254,
        # 1291-1292); the runner expects that dtype for them (TransformersAdapter.state_dtypes).
        self.state_tdtype = torch.float32 if dtype in HALF_DTYPES else self.tdtype
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        config = dict(vector.config)
        if isinstance(config.get("eps"), list):
            config["eps"] = tuple(config["eps"])
        self.use_momentum = config.get("beta1") is not None
        self.params = [torch.nn.Parameter(self._tensor(x)) for x in vector.initial]
        # An invalid configuration raises transformers' own error here, uncaught.
        self.opt = adafactor(self.params, **config)
        self.iterations = 0

    # ------------------------------------------------------------------ plumbing
    def _tensor(self, x, dtype=None):
        return self.torch.tensor(np.asarray(x, dtype=np.float64), dtype=dtype or self.tdtype, device=self.device)

    def _numpy(self, t) -> np.ndarray:
        return torch_to_numpy(self.torch, t)

    # ------------------------------------------------------------------ protocol
    def load(self, state: State) -> None:
        with self.torch.no_grad():
            for p, value in zip(self.params, state.variables):
                p.copy_(self._tensor(value))
        self.iterations = int(state.iterations)
        self.opt.state.clear()
        if self.iterations == 0:
            return  # lazy initialisation on the first step (optimization.py:1230)
        momentum = state.momentum
        for i, p in enumerate(self.params):
            entry = {"step": self.iterations, "RMS": 0}
            if p.dim() >= 2:
                entry["exp_avg_sq_row"] = self._tensor(state.r[i], self.state_tdtype)
                entry["exp_avg_sq_col"] = self._tensor(state.c[i], self.state_tdtype)
            else:
                entry["exp_avg_sq"] = self._tensor(state.v[i], self.state_tdtype)
            if self.use_momentum:
                if momentum is None or momentum[i] is None:
                    raise AdapterError(f"vector {self.vector_id!r}: beta1 is set but the state to load has "
                                       f"no momentum for variable {i}")
                entry["exp_avg"] = self._tensor(momentum[i], self.state_tdtype)
            self.opt.state[p] = entry

    def step(self, grads: list) -> None:
        step_with_gradients(self, grads, "transformers")

    def read(self) -> State:
        kinds = [Kind.R, Kind.C, Kind.V] + ([Kind.MOMENTUM] if self.use_momentum else [])
        out = {kind: [] for kind in kinds}
        for i, p in enumerate(self.params):
            s = self.opt.state.get(p, {})
            if s and s["step"] != self.iterations:
                raise AdapterError(f"vector {self.vector_id!r}: parameter {i} has step {s['step']}, "
                                   f"the optimizer applied {self.iterations} steps")
            factored = p.dim() >= 2
            shapes = {Kind.R: tuple(p.shape[:-1]), Kind.C: tuple(p.shape[:-2]) + tuple(p.shape[-1:]),
                      Kind.V: tuple(p.shape), Kind.MOMENTUM: tuple(p.shape)}
            present = {Kind.R: factored, Kind.C: factored, Kind.V: not factored, Kind.MOMENTUM: True}
            for kind in kinds:
                if not present[kind]:
                    out[kind].append(None)
                    continue
                tensor = s.get(_STATE_KEYS[kind])
                zeros = np.zeros(shapes[kind], np.float32 if self.dtype_name in HALF_DTYPES else self.np_dtype)
                out[kind].append(zeros if tensor is None else self._numpy(tensor))
        out[Kind.VARIABLES] = [self._numpy(p) for p in self.params]
        return State(self.iterations, out, learning_rate_calls=None)


class TransformersAdapter(Adapter):
    """transformers.optimization.Adafactor (PyTorch), float64, float32, float16 and bfloat16
    (the half lanes computed in float32 by transformers itself), cpu and gpu."""

    def __init__(self):
        super().__init__(name="transformers", dtypes=("float64", "float32", "float16", "bfloat16"), devices=("cpu", "gpu"),
                         **registered("transformers"))

    def environment(self, device: str) -> dict:
        torch, _ = _imports()
        import transformers

        return {"transformers": transformers.__version__, "torch": torch.__version__, "numpy": np.__version__,
                "device": "cpu" if device == "cpu" else (torch.cuda.get_device_name(0)
                                                         if torch.cuda.is_available() else "none")}

    def gpu_problem(self) -> Optional[str]:
        _imports()
        return torch_gpu_problem()

    def state_dtypes(self, vector: Vector, dtype: str) -> dict:
        """transformers keeps the statistics and momentum of float16/bfloat16 parameters in
        float32 and steps those parameters in float32 (optimization.py:1220-1221, 1237-1240,
        1253-1254, 1291-1292)."""
        from reference.dialects.transformers import lane_state_dtypes

        return {**super().state_dtypes(vector, dtype), **lane_state_dtypes(dtype)}

    def unsupported(self, vector: Vector, dtype: str, device: str) -> Optional[str]:
        """Also skips a vector that uses a feature the transformers dialect names unsupported
        (reference/dialects/transformers.py UNSUPPORTED, ``detect``), saying which."""
        from reference.dialects import transformers as dialect
        from reference.dialects.gaps import vector_skip_reason

        return (super().unsupported(vector, dtype, device)
                or vector_skip_reason("transformers", "transformers.optimization.Adafactor", dialect.UNSUPPORTED,
                                      as_vector(vector)))

    def create(self, vector: Vector, dtype: str, device: str) -> Session:
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(reason)
        return TransformersSession(self, vector, dtype, device)


__all__ = ["TransformersAdapter", "TransformersSession"]
