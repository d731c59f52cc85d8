"""timm 1.0.31's two Adafactors: ``timm.optim.Adafactor`` (lane ``timm``, ``TimmAdapter``) on its own
dialect's vectors (reference/dialects/timm.py, vectors/timm/: the config is timm's arguments,
passed straight to the optimizer; an invalid one raises timm's own error at construction) and on the
pytorch_optimizer dialect's vectors that map exactly, and ``timm.optim.AdafactorBigVision`` (lane
``timm-bigvision``, ``TimmBigVisionAdapter``) on its own dialect's vectors
(reference/dialects/timm_bigvision.py, vectors/timm_bigvision/). conformance/TIMM.md.

timm's Adafactor computes, for the arguments below, exactly what the pytorch_optimizer
dialect (reference/dialects/pytorch_optimizer.py) computes: the same relative step and
parameter scale, ``lerp_`` EMAs of ``g*g + eps`` (no V for a factored parameter), the
``rsqrt`` factors, ``||U||/sqrt(N)`` clipping and ``p - U`` (conformance/TIMM.md, with the
line of timm/optim/adafactor.py each rests on). So besides its own dialect's vectors the
``timm`` lane replays vectors/pytorch_optimizer/ through ``pytorch_optimizer_to_timm``, which
maps a vector's AdaFactor arguments to timm's and refuses (the vector is skipped, with the
reason) every vector where the two differ:

    AdaFactor (vector)                     timm.optim.Adafactor
    relative_step=True, lr ignored         lr=None          (adafactor.py:64, :102-110)
      scale_parameter, warmup_init, eps2     scale_parameter, warmup_init, eps_scale=eps2
    relative_step=False, lr,               lr=lr (timm never scales an external lr, :103)
      only with scale_parameter=False
    eps1 (1e-7 when momentum_dtype is      eps                              (:203)
      float16, pytorch_optimizer :68)
    decay_rate, clip_threshold             decay_rate, clip_threshold      (:202, :221)
    betas=(None, cap)                      betas=None, only where the cap never binds over
                                           the vector's steps (timm has no cap, :202)
    betas=(b1, cap), momentum_dtype        betas=(b1, cap), only where momentum_dtype is the
                                           lane dtype (timm keeps exp_avg in the gradient's
                                           dtype, :174, :226)
    weight_decay                           only 0 (timm decays p += p*(-wd*lr_t) after the
                                           momentum, :235-236; AdaFactor p *= 1 - wd*lr_t first)
    maximize, ams_bound, cautious          only off (timm has none of them; caution=False)
    ndim >= 2: last two axes factored      min_dim_size_to_factor=m, a per-vector m with which
                                           timm's heuristic (:113-128) picks the last two axes
                                           of every >= 2-D variable (none: skipped)

Importing ``timm`` imports torchvision (timm/layers/create_norm.py:29), which has no build for
the pinned CPU torch 2.13.0 (PyPI's torchvision is a CUDA build whose extension cannot load
there). The optimizer files themselves import only torch and their package's ``_helpers`` and
``_types``, so where ``import timm.optim`` fails the adapter loads the installed files
``timm/optim/adafactor.py`` and ``adafactor_bv.py`` (with ``_helpers.py``, ``_types.py``) as a
package of their own, unchanged: the classes are timm's code, byte for byte. The report's
environment says which way they were loaded (``timm_loaded``).

Teacher forcing (``load``) writes timm's per-parameter state (adafactor.py:169-184):
``step`` (a Python int per parameter), ``RMS`` (recomputed from p every step, :199),
``exp_avg_sq_row`` / ``exp_avg_sq_col`` (the shape without dim_row resp. dim_col, the dims
``_get_options`` picks, :113-128, :176-180) for a factored parameter,
``exp_avg_sq`` otherwise, ``exp_avg`` when betas is set, all in the parameter dtype. At
iterations 0 the state is left empty (timm initialises it on the first step, :169).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types
from pathlib import Path
from typing import Optional

import numpy as np

from conformance.adapters.base import Adapter, AdapterError, Session, numpy_dtype, torch_gpu_problem
from conformance.adapters.torch_adapter import step_with_gradients, torch_to_numpy
from conformance.vector import Vector, as_vector
from reference.state import Kind, State

NAME = "timm"
TIMM_VERSION = "1.0.31"
INSTALL = f"pip install --no-deps timm=={TIMM_VERSION}"
#: The package name the optimizer files are loaded under when ``import timm`` fails.
_DIRECT_PACKAGE = "_adafactor_timm_optim"
_LOADED: dict = {}

#: State kind -> timm.optim.Adafactor's per-parameter state key (adafactor.py:169-184).
_STATE_KEYS = {Kind.R: "exp_avg_sq_row", Kind.C: "exp_avg_sq_col", Kind.V: "exp_avg_sq", Kind.MOMENTUM: "exp_avg"}


def timm_optimizers():
    """``(torch, Adafactor, AdafactorBigVision, how)``: timm's classes, from ``timm.optim``
    where timm imports, else from its installed optimizer files (module docstring); ``how``
    says which. AdapterError when timm is not installed."""
    if _LOADED:
        return _LOADED["value"]
    try:
        import torch
    except ImportError as exc:
        raise AdapterError(f"{NAME} adapter: cannot import torch: {exc}") from exc
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise AdapterError(f"{NAME} adapter: not installed: timm ({INSTALL})")
    try:
        from timm.optim import Adafactor, AdafactorBigVision

        how = "timm.optim"
    except ImportError as exc:
        optim_dir = Path(list(spec.submodule_search_locations)[0]) / "optim"
        try:
            adafactor, bigvision = _load_optimizer_files(optim_dir)
        except Exception as inner:
            raise AdapterError(f"{NAME} adapter: import timm.optim failed ({exc}) and so did loading "
                               f"{optim_dir}/adafactor.py directly ({inner!r})") from inner
        Adafactor, AdafactorBigVision = adafactor.Adafactor, bigvision.AdafactorBigVision
        how = f"files of {optim_dir} (import timm failed: {exc})"
    _LOADED["value"] = (torch, Adafactor, AdafactorBigVision, how)
    return _LOADED["value"]


def _load_optimizer_files(optim_dir: Path):
    """timm/optim/adafactor.py and adafactor_bv.py imported as modules of a package
    ``_DIRECT_PACKAGE`` whose path is timm's optim directory, so that their relative imports
    (``._helpers``, ``._types``) load timm's own files and the package's ``__init__`` (which
    imports every timm optimizer, and timm.models through _param_groups) never runs."""
    package = sys.modules.get(_DIRECT_PACKAGE)
    if package is None:
        package = types.ModuleType(_DIRECT_PACKAGE)
        package.__path__ = [str(optim_dir)]
        package.__package__ = _DIRECT_PACKAGE
        sys.modules[_DIRECT_PACKAGE] = package
    return (importlib.import_module(f"{_DIRECT_PACKAGE}.adafactor"),
            importlib.import_module(f"{_DIRECT_PACKAGE}.adafactor_bv"))


def timm_version() -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("timm")
    except PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- the mapping
def _pytorch_optimizer_defaults() -> dict:
    """AdaFactor's constructor defaults, as the dialect class states them."""
    from reference.dialects.pytorch_optimizer import PytorchOptimizerAdaFactor

    return {name: p.default for name, p in inspect.signature(PytorchOptimizerAdaFactor.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def factoring_threshold(shapes) -> Optional[int]:
    """An ``m`` for ``min_dim_size_to_factor`` with which timm's heuristic (adafactor.py:113-128:
    dims 0, 1 when ndim > 2 and shape[0], shape[1] > m; else the last two when both > m)
    factors exactly the last two axes of every variable of ``shapes`` with ndim >= 2 (as
    AdaFactor does), or None when no m does. 0-D and 1-D variables are never factored."""
    low, high = -1, math.inf  # need low <= m < high
    for shape in shapes:
        if len(shape) < 2:
            continue
        high = min(high, min(shape[-2], shape[-1]))
        if len(shape) > 2:
            low = max(low, min(shape[0], shape[1]))
    return low if low < high else None


def pytorch_optimizer_to_timm(config: dict, shapes, steps: int, dtype: str) -> tuple:
    """``(kwargs, None)``: timm.optim.Adafactor's arguments computing exactly what
    pytorch_optimizer.AdaFactor computes for a vector's ``config`` (AdaFactor's arguments),
    variable ``shapes`` and ``steps`` in lane ``dtype``; or ``(None, reason)`` where they
    differ (the module docstring's table)."""
    known = _pytorch_optimizer_defaults()
    unknown = sorted(set(config) - set(known))
    if unknown:
        return None, f"AdaFactor arguments with no timm counterpart: {unknown}"
    a = {**known, **config}
    betas = tuple(a["betas"])
    if len(betas) != 2:
        return None, f"betas={list(betas)}: timm takes (beta1, beta2) and ignores beta2"
    if a["maximize"]:
        return None, "maximize=True: timm.optim.Adafactor has no maximize"
    if a["ams_bound"]:
        return None, "ams_bound=True: timm.optim.Adafactor has no AMS bound"
    if a["weight_decay"] != 0:
        return None, ("weight_decay != 0: timm decays p += p*(-wd*lr_t) after the update is formed "
                      "(timm/optim/adafactor.py:235-236), AdaFactor p *= 1 - wd*lr_t before it")
    if not isinstance(a["lr"], (int, float)) and a["lr"] is not None:
        return None, f"lr={a['lr']!r}: not a number"
    if a["lr"] is not None and a["lr"] < 0:
        return None, "lr < 0: AdaFactor refuses it (NegativeLRError), timm does not check"
    for name in ("eps1", "eps2"):
        if a[name] < 0:
            return None, f"{name} < 0: AdaFactor refuses it, timm does not check"
    beta1, cap = betas
    if beta1 is not None:
        if not 0.0 <= beta1 < 1.0:
            return None, "beta1 outside [0, 1): AdaFactor refuses it, timm does not check"
        if a["momentum_dtype"] != dtype:
            return None, (f"momentum_dtype={a['momentum_dtype']} in a {dtype} lane: timm keeps exp_avg in the "
                          "gradient's dtype (timm/optim/adafactor.py:174)")
    if not 0.0 <= cap < 1.0:
        return None, "beta2 outside [0, 1): AdaFactor refuses it, timm does not check"
    for t in range(1, steps + 1):
        try:
            uncapped = 1.0 - math.pow(t, a["decay_rate"])
        except (OverflowError, ValueError):
            return None, f"t**decay_rate fails at t={t}"
        if not cap >= uncapped:  # min(cap, x) is x only when x <= cap (a NaN x gives cap)
            return None, (f"the beta2 cap {cap!r} binds at step {t} (1 - t**{a['decay_rate']!r} = {uncapped!r}); "
                          "timm has no cap (timm/optim/adafactor.py:202)")
    out = dict(eps=1e-7 if a["momentum_dtype"] == "float16" else a["eps1"], eps_scale=a["eps2"],
               clip_threshold=a["clip_threshold"], decay_rate=a["decay_rate"],
               betas=None if beta1 is None else (beta1, cap), weight_decay=0.0, caution=False)
    if a["relative_step"]:
        out.update(lr=None, scale_parameter=a["scale_parameter"], warmup_init=a["warmup_init"])
    else:
        if a["scale_parameter"]:
            return None, ("relative_step=False with scale_parameter=True: AdaFactor scales lr by max(eps2, RMS(p)), "
                          "timm never scales an external lr (timm/optim/adafactor.py:102-110)")
        if a["lr"] is None:
            return None, "relative_step=False with lr=None"
        out.update(lr=float(a["lr"]), scale_parameter=False, warmup_init=False)
    m = factoring_threshold(shapes)
    if m is None:
        return None, (f"no min_dim_size_to_factor makes timm factor the last two axes of every variable {list(shapes)} "
                      "(timm/optim/adafactor.py:121-126 factors dims 0, 1 of a > 2-D variable)")
    out["min_dim_size_to_factor"] = m
    return out, None


def _registered(name: str, dialects: tuple) -> dict:
    try:
        from conformance.adapters.registry import registered

        return registered(name)
    except AdapterError:
        return {"dialects": dialects, "expectations": name}


# ----------------------------------------------------------------------------- the session
class TimmSession(Session):
    def __init__(self, adapter: "TimmAdapter", vector: Vector, dtype: str, device: str, kwargs: dict):
        torch, adafactor, _, _ = timm_optimizers()
        self.torch = torch
        self.vector_id = vector.id
        self.np_dtype = numpy_dtype(dtype)
        self.tdtype = getattr(torch, dtype)
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        self.use_momentum = kwargs.get("betas") is not None
        self.params = [torch.nn.Parameter(self._tensor(x)) for x in vector.initial]
        self.opt = adapter.optimizer(adafactor, self.params, kwargs)
        self.iterations = 0

    def _tensor(self, x):
        return self.torch.tensor(np.asarray(x, dtype=np.float64), dtype=self.tdtype, device=self.device)

    def _dims(self, p):
        """(dim_col, dim_row) timm factors p over, or None (its own ``_get_options``, adafactor.py:113-128)."""
        group = self.opt.param_groups[0]
        dims, _ = self.opt._get_options(group, p.shape, min_size_to_factor=group["min_dim_size_to_factor"])
        return dims

    def load(self, state: State) -> None:
        with self.torch.no_grad():
            for p, value in zip(self.params, state.variables):
                p.copy_(self._tensor(value))
        self.iterations = int(state.iterations)
        self.opt.state.clear()
        if self.iterations == 0:
            return  # lazy initialisation on the first step (adafactor.py:169)
        for i, p in enumerate(self.params):
            entry = {"step": self.iterations, "RMS": 0}
            if self.use_momentum:
                if state.momentum is None or state.momentum[i] is None:
                    raise AdapterError(f"vector {self.vector_id!r}: betas is set but the state to load has no "
                                       f"momentum for variable {i}")
                entry["exp_avg"] = self._tensor(state.momentum[i])
            if self._dims(p) is not None:
                entry["exp_avg_sq_row"] = self._tensor(state.r[i])
                entry["exp_avg_sq_col"] = self._tensor(state.c[i])
            else:
                entry["exp_avg_sq"] = self._tensor(state.v[i])
            self.opt.state[p] = entry

    def step(self, grads: list) -> None:
        step_with_gradients(self, grads, "timm")

    def read(self) -> State:
        kinds = [Kind.R, Kind.C, Kind.V] + ([Kind.MOMENTUM] if self.use_momentum else [])
        out = {kind: [] for kind in kinds}
        for p in self.params:
            s = self.opt.state.get(p, {})
            if s and s.get("step") != self.iterations:
                raise AdapterError(f"vector {self.vector_id!r}: timm's step is {s.get('step')}, the optimizer "
                                   f"applied {self.iterations} steps")
            dims = self._dims(p)
            factored = dims is not None
            shape = tuple(p.shape)
            dim_col, dim_row = dims if factored else (None, None)
            shapes = {Kind.R: tuple(d for j, d in enumerate(shape) if j != dim_row),
                      Kind.C: tuple(d for j, d in enumerate(shape) if j != dim_col),
                      Kind.V: shape, Kind.MOMENTUM: shape}
            present = {Kind.R: factored, Kind.C: factored, Kind.V: not factored, Kind.MOMENTUM: True}
            for kind in kinds:
                if not present[kind]:
                    out[kind].append(None)
                    continue
                tensor = s.get(_STATE_KEYS[kind])
                out[kind].append(np.zeros(shapes[kind], self.np_dtype) if tensor is None
                                 else torch_to_numpy(self.torch, tensor))
        out[Kind.VARIABLES] = [torch_to_numpy(self.torch, p) for p in self.params]
        return State(self.iterations, out, learning_rate_calls=None)


class TimmAdapter(Adapter):
    """timm.optim.Adafactor on torch (float64, float32; cpu and gpu) on the timm dialect's vectors
    (the config passed straight to it) and on the pytorch_optimizer dialect's vectors that map
    exactly (``pytorch_optimizer_to_timm``)."""

    def __init__(self):
        super().__init__(name=NAME, dtypes=("float64", "float32"), devices=("cpu", "gpu"),
                         **_registered(NAME, ("pytorch_optimizer", "timm")))

    def optimizer(self, adafactor, params: list, kwargs: dict):
        """``Adafactor(params, **kwargs)`` (a subclass may build it otherwise: tests inject bugs here)."""
        return adafactor(params, **kwargs)

    def environment(self, device: str) -> dict:
        torch, _, _, how = timm_optimizers()
        return {"timm": timm_version(), "timm_loaded": how, "torch": torch.__version__, "numpy": np.__version__,
                "device": "cpu" if device == "cpu" else (torch.cuda.get_device_name(0)
                                                         if torch.cuda.is_available() else "none")}

    def gpu_problem(self) -> Optional[str]:
        timm_optimizers()
        return torch_gpu_problem()

    def unsupported(self, vector, dtype: str, device: str) -> Optional[str]:
        reason = super().unsupported(vector, dtype, device)
        if reason is not None:
            return reason
        vector = as_vector(vector)
        if vector.dialect == "timm":
            return None
        if vector.error is not None:
            return (f"{NAME}: an invalid AdaFactor configuration ({vector.error.cls}); timm.optim.Adafactor "
                    "validates none of these arguments")
        _, reason = pytorch_optimizer_to_timm(vector.config, vector.shapes, len(vector.raw["steps"]), dtype)
        return None if reason is None else f"{NAME}: does not map: {reason}"

    def create(self, vector: Vector, dtype: str, device: str) -> Session:
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(reason)
        vector = as_vector(vector)
        if vector.dialect == "timm":
            # timm's own arguments, as they are; an invalid configuration raises timm's error here.
            return TimmSession(self, vector, dtype, device, dict(vector.config))
        kwargs, reason = pytorch_optimizer_to_timm(vector.config, vector.shapes, len(vector.raw["steps"]), dtype)
        if kwargs is None:
            raise AdapterError(f"vector {vector.id!r}: {reason}")
        return TimmSession(self, vector, dtype, device, kwargs)


# ----------------------------------------------------------------------------- AdafactorBigVision
#: State kind -> AdafactorBigVision's per-parameter state key (adafactor_bv.py:149-172).
_BV_STATE_KEYS = {Kind.R: "exp_avg_sq_r", Kind.C: "exp_avg_sq_c", Kind.V: "exp_avg_sq", Kind.MOMENTUM: "exp_avg"}


class TimmBigVisionSession(Session):
    """``AdafactorBigVision(params, **config)`` on the timm_bigvision dialect's vectors
    (reference/dialects/timm_bigvision.py): ``config`` is its own arguments, ``momentum_dtype``
    a dtype name given back as the ``torch.dtype`` (timm takes either, adafactor_bv.py:73-80;
    only the torch.dtype reaches float64). An invalid configuration raises timm's own
    ValueError here (adafactor_bv.py:82-83).

    Teacher forcing (``load``) writes timm's state (adafactor_bv.py:149-172): ``step`` a 0-d
    tensor of ``_get_scalar_dtype()`` (float32 unless torch's default dtype is float64),
    ``exp_avg_sq_r`` with the reduced axis dr kept as size 1, ``exp_avg_sq_c`` with dc kept,
    ``exp_avg_sq`` for an unfactored parameter, ``exp_avg`` in momentum_dtype; ``read`` gives
    r and c back without the kept axis (the dialect's layout)."""

    def __init__(self, adapter: "TimmBigVisionAdapter", vector: Vector, dtype: str, device: str):
        torch, _, bigvision, _ = timm_optimizers()
        self.torch = torch
        self.vector_id = vector.id
        self.np_dtype = numpy_dtype(dtype)
        self.tdtype = getattr(torch, dtype)
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        config = dict(vector.config)
        self.momentum_tdtype = torch.bfloat16  # AdafactorBigVision's default (adafactor_bv.py:65)
        if "momentum_dtype" in config:
            self.momentum_tdtype = getattr(torch, config["momentum_dtype"])
            config["momentum_dtype"] = self.momentum_tdtype
        self.use_momentum = config.get("momentum", 0.9) is not None
        self.factored_dims = sys.modules[bigvision.__module__]._factored_dims  # timm's own rule (:23-46)
        self.min_dim = config.get("min_dim_size_to_factor", 16)
        self.params = [torch.nn.Parameter(self._tensor(x)) for x in vector.initial]
        # An invalid configuration raises timm's own error here, uncaught.
        self.opt = adapter.optimizer(bigvision, self.params, config)
        self.iterations = 0

    def _tensor(self, x, dtype=None):
        return self.torch.tensor(np.asarray(x, dtype=np.float64), dtype=dtype or self.tdtype, device=self.device)

    def _dims(self, p):
        return self.factored_dims(tuple(p.shape), True, min_dim_size_to_factor=self.min_dim)

    def load(self, state: State) -> None:
        torch = self.torch
        with torch.no_grad():
            for p, value in zip(self.params, state.variables):
                p.copy_(self._tensor(value))
        self.iterations = int(state.iterations)
        self.opt.state.clear()
        if self.iterations == 0:
            return  # lazy initialisation on the first step (adafactor_bv.py:149)
        step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        for i, p in enumerate(self.params):
            entry = {"step": torch.tensor(float(self.iterations), dtype=step_dtype, device="cpu")}
            dims = self._dims(p)
            if dims is None:
                entry["exp_avg_sq"] = self._tensor(state.v[i])
            else:
                dc, dr = dims
                entry["exp_avg_sq_r"] = self._tensor(state.r[i]).unsqueeze(dr)
                entry["exp_avg_sq_c"] = self._tensor(state.c[i]).unsqueeze(dc)
            if self.use_momentum:
                if state.momentum is None or state.momentum[i] is None:
                    raise AdapterError(f"vector {self.vector_id!r}: momentum is set but the state to load has no "
                                       f"momentum for variable {i}")
                entry["exp_avg"] = self._tensor(state.momentum[i], self.momentum_tdtype)
            self.opt.state[p] = entry

    def step(self, grads: list) -> None:
        step_with_gradients(self, grads, "timm")

    def read(self) -> State:
        kinds = [Kind.R, Kind.C, Kind.V] + ([Kind.MOMENTUM] if self.use_momentum else [])
        out = {kind: [] for kind in kinds}
        mdtype = numpy_dtype(str(self.momentum_tdtype).replace("torch.", ""))
        for p in self.params:
            s = self.opt.state.get(p, {})
            if s and float(s["step"]) != self.iterations:
                raise AdapterError(f"vector {self.vector_id!r}: timm's step is {float(s['step'])}, the optimizer "
                                   f"applied {self.iterations} steps")
            dims = self._dims(p)
            shape = tuple(p.shape)
            for kind in kinds:
                if kind in (Kind.R, Kind.C) and dims is None or kind is Kind.V and dims is not None:
                    out[kind].append(None)
                    continue
                tensor = s.get(_BV_STATE_KEYS[kind])
                axis = None if kind in (Kind.V, Kind.MOMENTUM) else dims[1] if kind is Kind.R else dims[0]
                if tensor is None:
                    full = tuple(d for j, d in enumerate(shape) if j != axis)
                    out[kind].append(np.zeros(full, mdtype if kind is Kind.MOMENTUM else self.np_dtype))
                    continue
                if axis is not None:
                    tensor = tensor.squeeze(axis)
                out[kind].append(torch_to_numpy(self.torch, tensor))
        out[Kind.VARIABLES] = [torch_to_numpy(self.torch, p) for p in self.params]
        return State(self.iterations, out, learning_rate_calls=None)


class TimmBigVisionAdapter(Adapter):
    """timm.optim.AdafactorBigVision on torch (float64, float32, float16, bfloat16: its state in
    the parameter dtype, as the dialect steps; cpu and gpu) on the timm_bigvision dialect's vectors."""

    def __init__(self):
        super().__init__(name="timm-bigvision", dtypes=("float64", "float32", "float16", "bfloat16"),
                         devices=("cpu", "gpu"), **_registered("timm-bigvision", ("timm_bigvision",)))

    def optimizer(self, bigvision, params: list, config: dict):
        """``AdafactorBigVision(params, **config)`` (a subclass may build it otherwise: tests inject bugs here)."""
        return bigvision(params, **config)

    def environment(self, device: str) -> dict:
        return TimmAdapter.environment(self, device)

    def gpu_problem(self) -> Optional[str]:
        timm_optimizers()
        return torch_gpu_problem()

    def create(self, vector: Vector, dtype: str, device: str) -> Session:
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(reason)
        return TimmBigVisionSession(self, as_vector(vector), dtype, device)


__all__ = ["TimmAdapter", "TimmBigVisionAdapter", "TimmBigVisionSession", "TimmSession", "factoring_threshold",
           "pytorch_optimizer_to_timm", "timm_optimizers"]
