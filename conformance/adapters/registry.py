"""The one list of registered adapters: for each, the class to load, what it needs installed,
the dialects it replays and its expectation file.

Nothing here imports a framework: ``python -m conformance list``, ``--adapter all``'s "not
installed" check and pytest collection read an entry without loading its class. Adding an
adapter is one ``AdapterEntry`` below plus its module.

    ADAPTERS["torch"].missing()     # None, or "not installed: torch (pip install -e '.[torch]')"
    ADAPTERS["torch"].dialects      # ("torch",)
    resolve("torch")                # a TorchAdapter; resolve("pkg.mod:Class") for a third-party port
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Optional

from conformance.adapters.base import Adapter, AdapterError

#: ``AdapterEntry.speaks`` for an adapter that replays every dialect of reference/dialects.
EVERY_DIALECT = None


@dataclass(frozen=True)
class AdapterEntry:
    """One registered adapter.

    ``target``: ``"package.module:Class"``, imported only by ``load``. ``requires``: the
    top-level modules it imports (checked with ``importlib.util.find_spec``, which imports
    nothing), installed by ``pip install -e '.[<extra>]'``. ``speaks``: the dialects whose
    vectors it replays (``EVERY_DIALECT``: all of reference/dialects). ``expectation_stem``:
    its file in conformance/expectations/ when not ``<name>.txt``. ``group``: the group that
    ``--adapter <group>`` runs (``all``: the main job, ``make check``; ``distributed``: the
    torch distributed lanes, ``make check-distributed``, which start several processes each).
    ``install``: the install command when the extra is the wrong advice (a package whose
    metadata would pull a different framework build: tf-keras, timm go in with --no-deps).
    """

    name: str
    target: str
    requires: tuple = ()
    extra: str = ""
    speaks: Optional[tuple] = ("keras",)
    expectation_stem: str = ""
    group: str = "all"
    install: str = ""

    @property
    def dialects(self) -> tuple:
        """The dialects whose vectors this adapter replays."""
        if self.speaks is EVERY_DIALECT:
            from reference.dialects import DIALECTS

            return tuple(DIALECTS)
        return self.speaks

    @property
    def expectations(self) -> str:
        """The stem of its expectation file, conformance/expectations/<stem>.txt."""
        return self.expectation_stem or self.name

    def missing(self) -> Optional[str]:
        """None when every required module is importable, else what is missing and how to
        install it."""
        absent = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if not absent:
            return None
        how = self.install or f"pip install -e '.[{self.extra}]'"
        return f"not installed: {', '.join(absent)} ({how})"

    def load(self) -> Adapter:
        """A new instance of the adapter class; AdapterError when it cannot be imported."""
        return load_target(self.target, self.name)


#: timm's metadata requires torchvision, whose only build for torch 2.13.0 is CUDA's (conformance/TIMM.md).
TIMM_INSTALL = "pip install --no-deps timm==1.0.31: its torchvision requirement pulls a CUDA torch (conformance/TIMM.md)"

ADAPTERS = {e.name: e for e in (
    AdapterEntry("reference", "conformance.adapters.reference:ReferenceAdapter", speaks=EVERY_DIALECT),
    # Keras 3's own Adafactor, one backend each (the backend is picked when Keras is imported).
    AdapterEntry("keras-jax", "conformance.adapters.keras_adapter:KerasJaxAdapter", ("keras", "jax"), "keras,jax"),
    AdapterEntry("keras-torch", "conformance.adapters.keras_adapter:KerasTorchAdapter", ("keras", "torch"),
                 "keras,torch"),
    AdapterEntry("keras-tensorflow", "conformance.adapters.keras_adapter:KerasTensorFlowAdapter",
                 ("keras", "tensorflow"), "keras,tensorflow"),
    # Native dialects (reference/dialects): each replays its own dialect's vectors.
    AdapterEntry("torch", "conformance.adapters.torch_adapter:TorchAdapter", ("torch",), "torch", ("torch",)),
    AdapterEntry("torch-foreach", "conformance.adapters.torch_adapter:TorchForeachAdapter", ("torch",), "torch",
                 ("torch",)),
    AdapterEntry("optax", "conformance.adapters.optax_adapter:OptaxAdapter", ("jax", "optax"), "jax", ("optax",)),
    AdapterEntry("transformers", "conformance.adapters.transformers_adapter:TransformersAdapter",
                 ("transformers", "torch"), "torch,transformers", ("transformers",)),
    # pytorch_optimizer.AdaFactor (pytorch-optimizer 4.1.0) on torch, on its own dialect's vectors.
    AdapterEntry("pytorch-optimizer", "conformance.adapters.pytorch_optimizer_adapter:PytorchOptimizerAdapter",
                 ("pytorch_optimizer", "torch"), "torch,pytorch-optimizer", ("pytorch_optimizer",)),
    # timm.optim.Adafactor (timm 1.0.31) on torch, on its own dialect's vectors (config passed straight
    # to it) and on the pytorch_optimizer vectors it maps to exactly (conformance/TIMM.md; the others
    # skip with the reason).
    AdapterEntry("timm", "conformance.adapters.timm_adapter:TimmAdapter", ("timm", "torch"), "torch,timm",
                 ("pytorch_optimizer", "timm"), install=TIMM_INSTALL),
    # timm.optim.AdafactorBigVision (timm 1.0.31) on torch, on its own dialect's vectors (conformance/TIMM.md).
    AdapterEntry("timm-bigvision", "conformance.adapters.timm_adapter:TimmBigVisionAdapter", ("timm", "torch"),
                 "torch,timm", ("timm_bigvision",), install=TIMM_INSTALL),
    # tf-keras (Keras 2) on TensorFlow, graded on the Keras spec's vectors.
    AdapterEntry("tf-keras", "conformance.adapters.tf_keras_adapter:TfKerasAdapter", ("tf_keras", "tensorflow"),
                 "tf-keras", install="pip install --no-deps tf_keras==2.21.0 next to tensorflow-cpu: its metadata "
                                     "pulls the full tensorflow wheel (conformance/TF_KERAS.md)"),
    # keras-jax with every variable sharded over a 2x2 device mesh: the same Keras code, so
    # keras-jax's known deviations.
    AdapterEntry("keras-jax-sharded", "conformance.adapters.sharded:KerasJaxShardedAdapter", ("keras", "jax"),
                 "keras,jax", expectation_stem="keras-jax"),
    # Keras's own distribution API (DeviceMesh, LayoutMap, ModelParallel) on JAX over 4 virtual
    # devices, slots laid out as Keras creates them (conformance/KERAS_DISTRIBUTION.md).
    AdapterEntry("keras-jax-distribution", "conformance.adapters.keras_distribution:KerasDistributionAdapter",
                 ("keras", "jax"), "keras,jax", expectation_stem="keras-jax"),
    # torch.optim.Adafactor on DTensor parameters over gloo ranks the lane starts itself, one
    # placement each (conformance/TORCH_DISTRIBUTED.md); about 3 min a lane on 2 cores, so a
    # group of their own (make check-distributed), not part of `all`.
    *(AdapterEntry(f"torch-dtensor-{placement}", f"conformance.adapters.torch_distributed:{cls}", ("torch",), "torch",
                   ("torch",), group="distributed")
      for placement, cls in (("replicate", "TorchDTensorAdapter"), ("shard0", "TorchDTensorShard0Adapter"),
                             ("shard-1", "TorchDTensorShardLastAdapter"), ("2d", "TorchDTensor2DAdapter"),
                             ("fsdp2", "TorchFSDP2Adapter"))),
)}
#: The groups ``--adapter <group>`` accepts, each with its adapters in registry order.
GROUPS = {g: [n for n, e in ADAPTERS.items() if e.group == g] for g in dict.fromkeys(e.group for e in ADAPTERS.values())}
assert not set(GROUPS) & set(ADAPTERS), "a group name must not be an adapter name"


def entry(name: str) -> AdapterEntry:
    """The registered adapter ``name``; AdapterError naming the known ones otherwise."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise AdapterError(f"unknown adapter {name!r}: use one of {sorted(ADAPTERS)} "
                           f"or 'package.module:ClassName'") from None


def load_target(target: str, spec: str) -> Adapter:
    """Instantiate ``"package.module:Class"`` (``spec`` names it in errors)."""
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise AdapterError(f"adapter {spec!r}: {target!r} is not 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AdapterError(f"adapter {spec!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        raise AdapterError(f"adapter {spec!r}: {module_name!r} has no {class_name!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise AdapterError(f"adapter {spec!r}: {class_name} is not a conformance.adapters.Adapter")
    return cls()


def resolve(spec: str) -> Adapter:
    """The adapter for a registered name or for ``package.module:ClassName``."""
    if spec in ADAPTERS:
        return ADAPTERS[spec].load()
    if ":" not in spec:
        entry(spec)  # raises, naming the registered adapters
    return load_target(spec, spec)


def registered(name: str) -> dict:
    """What the registry declares for ``name`` as ``Adapter`` constructor arguments
    (``dialects``, ``expectations``), so an adapter class states them in one place."""
    e = entry(name)
    return {"dialects": e.dialects, "expectations": e.expectation_stem}
