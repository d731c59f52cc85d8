"""Real ``pytorch_optimizer.AdaFactor`` (pytorch-optimizer 4.1.0) on the pytorch_optimizer
dialect's vectors (reference/dialects/pytorch_optimizer.py).

``create`` builds ``AdaFactor(params, **config)`` exactly as a user would, ``config`` being
AdaFactor's own arguments: ``betas`` stored as a JSON list (given back as a tuple) and
``momentum_dtype`` as a dtype name (given back as the ``torch.dtype``). An invalid
configuration raises AdaFactor's own error there (``NegativeLRError``, ``ValueError``,
pytorch_optimizer/optimizer/adafactor.py:60-64).

Teacher forcing (``load``) writes AdaFactor's state: the group's ``step`` (one Python int per
parameter group, adafactor.py:104-105, :361) and per parameter (adafactor.py:125-140)
``RMS`` (recomputed from p on every step, :298), ``exp_avg`` in ``momentum_dtype`` when
betas[0] is set, ``exp_avg_sq_row`` [..., n] / ``exp_avg_sq_col`` [..., m] for ndim >= 2,
``exp_avg_sq`` otherwise, in the parameter dtype. At iterations 0 the state is left empty:
AdaFactor initialises it lazily on the first step (``init_group``, :125).

``read`` returns what AdaFactor holds, in the dtype it holds it (r = exp_avg_sq_row,
c = exp_avg_sq_col, v = exp_avg_sq or None for a factored parameter, momentum = exp_avg in
``momentum_dtype``, which the vector's ``state_dtypes`` declares).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from conformance.adapters.base import Adapter, AdapterError, Session, numpy_dtype, torch_gpu_problem
from conformance.adapters.torch_adapter import torch_to_numpy
from conformance.vector import Vector, as_vector
from reference.state import Kind, State

NAME = "pytorch-optimizer"
DIALECT = "pytorch_optimizer"

#: State kind -> AdaFactor's per-parameter state key (adafactor.py:125-140).
_STATE_KEYS = {Kind.R: "exp_avg_sq_row", Kind.C: "exp_avg_sq_col", Kind.V: "exp_avg_sq", Kind.MOMENTUM: "exp_avg"}


def _imports():
    try:
        import torch
        from pytorch_optimizer import AdaFactor
    except ImportError as exc:
        raise AdapterError(f"{NAME} adapter: cannot import torch/pytorch_optimizer: {exc} "
                           "(pip install --no-deps pytorch_optimizer==4.1.0)") from exc
    return torch, AdaFactor


def _registered() -> dict:
    """The registry's entry when LEAD has added it; the same values otherwise (so the adapter
    also runs as ``--adapter conformance.adapters.pytorch_optimizer_adapter:PytorchOptimizerAdapter``)."""
    try:
        from conformance.adapters.registry import registered

        return registered(NAME)
    except AdapterError:
        return {"dialects": (DIALECT,), "expectations": NAME}


class PytorchOptimizerSession(Session):
    def __init__(self, adapter: "PytorchOptimizerAdapter", vector: Vector, dtype: str, device: str):
        torch, adafactor = _imports()
        vector = as_vector(vector)
        self.torch = torch
        self.vector_id = vector.id
        self.dtype_name = dtype
        self.np_dtype = numpy_dtype(dtype)
        self.tdtype = getattr(torch, dtype)
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        config = dict(vector.config)
        if isinstance(config.get("betas"), list):
            config["betas"] = tuple(config["betas"])
        self.momentum_tdtype = torch.bfloat16  # AdaFactor's default (adafactor.py:55)
        if "momentum_dtype" in config:
            self.momentum_tdtype = getattr(torch, config["momentum_dtype"])
            config["momentum_dtype"] = self.momentum_tdtype
        self.use_momentum = (config.get("betas") or (0.9,))[0] is not None
        self.params = [torch.nn.Parameter(self._tensor(x)) for x in vector.initial]
        # An invalid configuration raises AdaFactor's own error here, uncaught.
        self.opt = adapter.optimizer(adafactor, self.params, config)
        self.iterations = 0

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
        group = self.opt.param_groups[0]
        group["step"] = self.iterations
        if self.iterations == 0:
            return  # lazy initialisation on the first step (adafactor.py:125)
        momentum = state.momentum
        for i, p in enumerate(self.params):
            entry = {"RMS": 0.0}
            if self.use_momentum:
                if momentum is None or momentum[i] is None:
                    raise AdapterError(f"vector {self.vector_id!r}: betas[0] is set but the state to load has "
                                       f"no momentum for variable {i}")
                entry["exp_avg"] = self._tensor(momentum[i], self.momentum_tdtype)
            if p.dim() >= 2:
                entry["exp_avg_sq_row"] = self._tensor(state.r[i])
                entry["exp_avg_sq_col"] = self._tensor(state.c[i])
            else:
                entry["exp_avg_sq"] = self._tensor(state.v[i])
            self.opt.state[p] = entry

    def step(self, grads: list) -> None:
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:
                raise AdapterError(f"vector {self.vector_id!r}: variable {i} has no gradient; AdaFactor skips "
                                   "the parameter (its group step still counts), which dialect vectors do not record")
            p.grad = self._tensor(g)
        self.opt.step()
        self.iterations += 1

    def read(self) -> State:
        group = self.opt.param_groups[0]
        if group.get("step", 0) != self.iterations:
            raise AdapterError(f"vector {self.vector_id!r}: the group's step is {group.get('step')}, "
                               f"the optimizer applied {self.iterations} steps")
        kinds = [Kind.R, Kind.C, Kind.V] + ([Kind.MOMENTUM] if self.use_momentum else [])
        out = {kind: [] for kind in kinds}
        mdtype = numpy_dtype(str(self.momentum_tdtype).replace("torch.", ""))
        for p in self.params:
            s = self.opt.state.get(p, {})
            factored = p.dim() >= 2
            shapes = {Kind.R: tuple(p.shape[:-1]), Kind.C: tuple(p.shape[:-2]) + tuple(p.shape[-1:]),
                      Kind.V: tuple(p.shape), Kind.MOMENTUM: tuple(p.shape)}
            present = {Kind.R: factored, Kind.C: factored, Kind.V: not factored, Kind.MOMENTUM: True}
            for kind in kinds:
                if not present[kind]:
                    out[kind].append(None)
                    continue
                tensor = s.get(_STATE_KEYS[kind])
                zeros = np.zeros(shapes[kind], mdtype if kind is Kind.MOMENTUM else self.np_dtype)
                out[kind].append(zeros if tensor is None else self._numpy(tensor))
        out[Kind.VARIABLES] = [self._numpy(p) for p in self.params]
        return State(self.iterations, out, learning_rate_calls=None)


class PytorchOptimizerAdapter(Adapter):
    """pytorch_optimizer.AdaFactor on torch: float64, float32, float16 and bfloat16, cpu and gpu."""

    def __init__(self):
        super().__init__(name=NAME, dtypes=("float64", "float32", "float16", "bfloat16"), devices=("cpu", "gpu"),
                         **_registered())

    def optimizer(self, adafactor, params: list, config: dict):
        """``AdaFactor(params, **config)`` (a subclass may build it otherwise: tests inject bugs here)."""
        return adafactor(params, **config)

    def environment(self, device: str) -> dict:
        torch, _ = _imports()
        import pytorch_optimizer

        return {"pytorch_optimizer": getattr(pytorch_optimizer, "__version__", None) or _version(),
                "torch": torch.__version__, "numpy": np.__version__,
                "device": "cpu" if device == "cpu" else (torch.cuda.get_device_name(0)
                                                         if torch.cuda.is_available() else "none")}

    def gpu_problem(self) -> Optional[str]:
        _imports()
        return torch_gpu_problem()

    def create(self, vector: Vector, dtype: str, device: str) -> Session:
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(reason)
        return PytorchOptimizerSession(self, vector, dtype, device)


def _version() -> str:
    from importlib.metadata import version

    return version("pytorch_optimizer")


__all__ = ["PytorchOptimizerAdapter", "PytorchOptimizerSession"]
