"""The Keras distribution lane: Keras's Adafactor on JAX under ``keras.distribution.ModelParallel``.

This is the path a Keras user takes to shard a model, not a mesh the adapter imposes (that is
``keras-jax-sharded``, adapters/sharded.py). The adapter builds

    mesh   = keras.distribution.DeviceMesh((2, 2), ("data", "model"), devices=list_devices("cpu"))
    layout = keras.distribution.LayoutMap(mesh)     # one exact key per variable path
    keras.distribution.set_distribution(keras.distribution.ModelParallel(layout_map=layout,
                                                                         batch_dim_name="data"))

and then creates the model variables (``keras.Variable``) and ``Adafactor(...).build(...)``
under it, so every variable, slot included, gets the layout *Keras* gives it
(keras/src/backend/jax/core.py:32-37 asks ``distribution.get_variable_layout`` for every new
variable; keras/src/distribution/distribution_lib.py:759-768 answers from the LayoutMap by
``variable.path`` or replicates). Which axes the kernels split is the lane's ``split``:

    split   variable [..., n, m]          1-D [n]       adapter name
    rows    (..., "model", None)          ("model",)    keras-jax-distribution-rows
    cols    (..., None, "model")          ("model",)    keras-jax-distribution-cols
    both    (..., "data", "model")        ("model",)    keras-jax-distribution (the registered one)

each axis only where it divides by 2 (0-D variables and axes that do not divide stay
replicated; a vector with no split variable is skipped, saying so). What Keras then does to
the optimizer state (read back and checked after every step, see ``slot_layouts``):

* ``v``, the EMA and the gradient accumulators are made by ``add_variable_from_reference``
  with ``layout=reference_variable._layout`` (keras/src/optimizers/base_optimizer.py:313-325):
  they are sharded exactly as their variable is.
* ``r`` and ``c`` are made by ``add_variable(shape, name=var.name)`` with no layout
  (keras/src/optimizers/adafactor.py:111-126): their path is ``"adafactor/<var.name>"``,
  which no exact LayoutMap key matches, so ModelParallel replicates them on all four devices.
  Every device then holds the whole factored statistics, and GSPMD all-reduces the row and
  column means of the sharded gradient into them.
* ``iterations``, ``learning_rate`` and the rank < 2 r/c placeholders (``backend.Variable(0,
  name=var.name)``, adafactor.py:101-108, path ``var.name`` with no scope) are replicated.

Two consequences that a user meets (conformance/KERAS_DISTRIBUTION.md shows them): a LayoutMap
*pattern* such as ``".*kernel"`` also matches r/c's path ``"adafactor/kernel"`` and hands a
rank-1 slot the kernel's rank-2 layout (``IndexError`` in build, jax/distribution_lib.py:70), and
``".*bias"`` (or an unscoped variable named ``bias`` under an exact key) matches the scalar
placeholder's path ``"bias"`` (the same crash, adafactor.py:104). The lane therefore keys the
LayoutMap by exact paths and creates unscoped vector variables inside a layer-like name scope
(``layer/<name>``, as a Keras layer's variables always are); ``variable.name``, which weight-decay
exclusion matches, is unchanged.

The step is the Keras JAX trainer's: ``jax.jit`` of ``optimizer.stateless_apply``
(keras/src/backend/jax/trainer.py:151, inside ``train_step``) with ``out_shardings`` the
state's own ``variable.value.sharding`` (trainer.py:262-268 and ``_get_state_sharding_spec``,
trainer.py:906-933), without ``donate_argnums`` (buffer donation is a no-op on CPU). Gradients
arrive placed with their variable's sharding, as the gradient of a sharded variable is inside
the trainer's step. A recorded callable learning rate runs eagerly (``optimizer.apply`` under
the distribution), as in keras-jax. The numerics are keras-jax's Keras code, so the lane is
graded with keras-jax's expectations (``conformance/expectations/keras-jax.txt``).

``KerasDistributionLocalShardMean`` is the port that forgets its all-reduce on this engine:
every mean over a split axis of a variable-shaped tensor is taken on the local shard only
(``jax.shard_map`` with the reduced mesh axes dropped from the output, as broken.py's
``LocalShardMean`` does for the sharded lane); the gate must fail it on every sharding vector.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Optional

from conformance.adapters.base import AdapterError
from conformance.adapters.keras_adapter import KerasJaxAdapter
from conformance.adapters.sharded import DEVICES_NEEDED, request_host_devices

MESH_SHAPE = (2, 2)
MESH_AXES = ("data", "model")
SPLITS = ("rows", "cols", "both")
#: Scope for vector variables that have none (``"kernel"`` -> path ``"layer/kernel"``).
DEFAULT_SCOPE = "layer"


def layout_axes(shape, split: str) -> tuple:
    """The LayoutMap axes of a variable of ``shape`` under ``split`` (table in the module doc)."""
    shape = tuple(shape)
    axes = [None] * len(shape)
    if len(shape) >= 2:
        n, m = shape[-2], shape[-1]
        if split == "rows" and n % 2 == 0:
            axes[-2] = "model"
        elif split == "cols" and m % 2 == 0:
            axes[-1] = "model"
        elif split == "both":
            if n % 2 == 0:
                axes[-2] = "data"
            if m % 2 == 0:
                axes[-1] = "model"
    elif len(shape) == 1 and shape[0] % 2 == 0:
        axes[0] = "model"
    return tuple(axes)


def is_split(axes: tuple) -> bool:
    return any(a is not None for a in axes)


def keras_path(name: str) -> str:
    """The Keras path the lane gives a vector variable (a scope is added where it has none)."""
    return name if "/" in name else f"{DEFAULT_SCOPE}/{name}"


def _spec_tuple(sharding) -> tuple:
    """A NamedSharding's spec, padded/normalised for comparison (None for replicated dims)."""
    return tuple(sharding.spec)


def slot_layouts(session) -> list:
    """[(path, kind, shape, spec, devices)] for every model and optimizer variable of a session,
    as JAX holds them now (``variable.value.sharding``)."""
    opt = session.opt
    kinds = {}
    for i, _ in enumerate(session.variables):
        if session.factored[i]:
            kinds[id(opt._r[i])] = "r"
            kinds[id(opt._c[i])] = "c"
        kinds[id(opt._v[i])] = "v"
        if opt.use_ema:
            kinds[id(opt._model_variables_moving_average[i])] = "average"
        if opt.gradient_accumulation_steps:
            kinds[id(opt._accumulated_gradients[i])] = "accumulator"
    out = [(x.path, "variable", tuple(x.shape), _spec_tuple(x.value.sharding), len(x.value.sharding.device_set))
           for x in session.variables]
    for v in opt.variables:
        out.append((v.path, kinds.get(id(v), "other"), tuple(v.shape), _spec_tuple(v.value.sharding),
                    len(v.value.sharding.device_set)))
    return out


class KerasDistributionAdapter(KerasJaxAdapter):
    """keras-jax under keras.distribution.ModelParallel on a 2x2 DeviceMesh ("data", "model")."""

    split = "both"

    def __init__(self, x64: bool = True):
        request_host_devices()
        super().__init__(x64=x64, eager=False)
        self.name = "keras-jax-distribution" + ("" if self.split == "both" else f"-{self.split}")
        self.expectations = "keras-jax"  # the same Keras code: keras-jax's deviation models and entries
        self._mesh = None

    # ------------------------------------------------------------------ the mesh
    def device_mesh(self, device: str):
        if self._mesh is None:
            keras = self._keras()
            platform = "gpu" if device == "gpu" else "cpu"
            devices = keras.distribution.list_devices(platform)[:DEVICES_NEEDED]
            self._mesh = keras.distribution.DeviceMesh(MESH_SHAPE, MESH_AXES, devices=devices)
        return self._mesh

    def distribution_for(self, vector, device: str):
        """The ModelParallel a user would set for this vector's variables: one exact key per path."""
        keras = self._keras()
        layout_map = keras.distribution.LayoutMap(self.device_mesh(device))
        for name, shape in zip(vector.names, vector.shapes):
            axes = layout_axes(shape, self.split)
            if is_split(axes):
                layout_map[re.escape(keras_path(name))] = axes
        return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="data")

    def device_available(self, device: str) -> Optional[str]:
        reason = super().device_available(device)
        if reason:
            return reason
        import jax

        found = len(jax.devices("gpu" if device == "gpu" else "cpu"))
        if found < DEVICES_NEEDED:
            return (f"the Keras distribution lane needs {DEVICES_NEEDED} {device} devices, JAX sees {found} "
                    f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; run it in its own process)")
        return None

    def _apply_description(self) -> str:
        return ("jax.jit(optimizer.stateless_apply, out_shardings=the state's variable.value.sharding) as "
                "keras/src/backend/jax/trainer.py:262-268 compiles train_step; variables and optimizer built "
                f"under keras.distribution.ModelParallel (split={self.split})")

    def environment(self, device: str) -> dict:
        env = super().environment(device)
        mesh = self.device_mesh(device)
        env["distribution"] = (f"ModelParallel on DeviceMesh {MESH_SHAPE} {MESH_AXES} over "
                               + ", ".join(f"{d.platform}:{d.id}" for d in mesh.backend_mesh.devices.flat))
        example = {"rows": "(..., 'model', None)", "cols": "(..., None, 'model')",
                   "both": "(..., 'data', 'model')"}[self.split]
        env["layout_map"] = (f"split={self.split}: [..., n, m] -> {example}, 1-D -> ('model',), where the axis "
                             "divides by 2; slots as Keras lays them out (conformance/KERAS_DISTRIBUTION.md)")
        env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
        return env

    def unsupported(self, vector, dtype: str, device: str) -> Optional[str]:
        from conformance.vector import as_vector

        vector = as_vector(vector)
        shapes = [tuple(s) for s in vector.shapes]
        if not any(is_split(layout_axes(s, self.split)) for s in shapes):
            return (f"no variable splits under split={self.split} on the {MESH_SHAPE[0]}x{MESH_SHAPE[1]} mesh "
                    f"(shapes {shapes}): ModelParallel would replicate everything, the program keras-jax checks")
        return super().unsupported(vector, dtype, device)

    # ------------------------------------------------------------------ sessions
    def create(self, vector, dtype: str, device: str):
        from conformance.vector import as_vector

        vector = as_vector(vector)
        reason = self.device_available(device)
        if reason is not None:
            raise AdapterError(f"{self.name}: {reason}")
        keras = self._keras()
        renamed = copy.copy(vector)
        renamed.names = tuple(keras_path(n) for n in vector.names)
        # Variables and slots are made under the distribution (pooled sessions keep theirs).
        self._activate_lane(dtype)
        keras.distribution.set_distribution(self.distribution_for(renamed, device))
        return super().create(renamed, dtype, device)

    def _local_mean(self, session):
        """A replacement for the backend's mean while tracing, or None (the real one)."""
        return None

    def _compile_step(self, session):
        import jax

        opt, variables = session.opt, session.variables
        if session.dtype_name == "float64" and not jax.config.jax_enable_x64:
            raise AdapterError(f"{self.name}: float64 lane without jax_enable_x64")
        for x in variables:
            if str(x.value.dtype) != session.dtype_name:
                raise AdapterError(f"{self.name}: {x.path} is {x.value.dtype}, not {session.dtype_name}")
        # What Keras laid out at build: each later step must leave every array so.
        built = [(v.path, v.value.sharding) for v in list(variables) + list(opt.variables)]
        session.built_layouts = slot_layouts(session)
        expected = [layout_axes(x.shape, self.split) for x in variables]
        for x, axes in zip(variables, expected):
            want = tuple(axes)
            got = _spec_tuple(x.value.sharding)
            if got + (None,) * (len(want) - len(got)) != want:
                raise AdapterError(f"{self.name}: {x.path} has sharding {got}, the LayoutMap says {want}")
        session.split_variables = [i for i, axes in enumerate(expected) if is_split(axes)]
        if session.callable is not None:
            session.step_kind = "eager optimizer.apply under the distribution"
            return None  # KerasSession.step: eager optimizer.apply (a callable is called once under jit)
        session.step_kind = "jit(stateless_apply)"

        var_shardings = [x.value.sharding for x in variables]
        opt_shardings = [v.value.sharding for v in opt.variables]
        from conformance.adapters.sharded import traced_step

        jitted = jax.jit(traced_step(opt, self._local_mean(session)), out_shardings=(var_shardings, opt_shardings))

        def step(grads):
            placed = [None if g is None else jax.device_put(g, s) for g, s in zip(grads, var_shardings)]
            new_variables, new_state = jitted([v.value for v in opt.variables], placed, [x.value for x in variables])
            for x, value in zip(variables, new_variables):
                x.assign(value)
            for v, value in zip(opt.variables, new_state):
                v.assign(value)
            for (path, sharding), array in zip(built, [x.value for x in list(variables) + list(opt.variables)]):
                if not array.sharding.is_equivalent_to(sharding, array.ndim):
                    raise AdapterError(f"{self.name}: vector {session.vector_id!r}: {path} came back as "
                                       f"{array.sharding}, not as Keras laid it out ({sharding})")

        return step


class KerasDistributionRowsAdapter(KerasDistributionAdapter):
    """Kernels split over their rows (axis -2) on the "model" mesh axis."""

    split = "rows"


class KerasDistributionColsAdapter(KerasDistributionAdapter):
    """Kernels split over their columns (axis -1) on the "model" mesh axis."""

    split = "cols"


class KerasDistributionLocalShardMean(KerasDistributionAdapter):
    """The distributed bug on this engine: every mean over a split axis of a variable-shaped
    tensor (r over the column shards, c over the row shards, RMS(u) and RMS(x) over every split
    axis) is taken over the local shard only (``jax.shard_map`` with the reduced mesh axes
    dropped from the output, ``check_vma=False``), as a port that forgets its all-reduce does.
    Layouts, slots and the jitted step are the lane's own; the gate must fail it."""

    def __init__(self):
        super().__init__()
        self.name = "keras-jax-distribution-local-shard-mean"
        self.expectations = ""  # everything it gets wrong is its own

    def _local_mean(self, session):
        from conformance.adapters.sharded import local_shard_mean

        specs = {tuple(x.shape): layout_axes(x.shape, self.split) for x in session.variables}
        return local_shard_mean(self.device_mesh(session.device).backend_mesh, specs)


# ---------------------------------------------------------------------- the order effect
def compare_with_keras_jax(ids=None, dtypes=("float64", "float32")) -> list:
    """Run each vector that splits free-running on keras-jax (one device) and on the three
    splits of this lane, from the same inputs, and return rows (split, dtype, vector id,
    normwise difference at step 1 and at the worst step in units of the lane's eps, identical?):
    the size of GSPMD's partial-sum-then-all-reduce order against one device's reduction.
    Run in a process of its own (``python -m conformance.adapters.keras_distribution``):
    the four host devices must be requested before JAX starts."""
    import numpy as np

    from conformance import replay
    from conformance import vectorfile as vf
    from conformance.corpus import default_vectors_dir
    from reference.state import Kind

    request_host_devices()
    corpus = vf.load_corpus(default_vectors_dir())
    splits = [KerasDistributionRowsAdapter(), KerasDistributionColsAdapter(), KerasDistributionAdapter()]
    if ids is None:
        ids = sorted(v["id"] for name, v in vf.iter_vectors(corpus) if name.startswith("keras/")
                     and v.get("result") == "valid" and splits[-1].unsupported(v, "float32", "cpu") is None)
    baseline = KerasJaxAdapter()

    def run(adapter, vector, dtype):
        session, states = adapter.create(vector, dtype, "cpu"), []
        for step in vector.steps:
            session.step([None if g is None else np.asarray(g, dtype) for g in replay.decode_grads(vector, step)])
            state = session.read()
            states.append([a for k in Kind for a in (state.get(k) or []) if a is not None])
        session.close()
        return states

    def normwise(a, b, eps):
        a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        d = float(np.linalg.norm(a - b))
        return 0.0 if d == 0 else d / (float(np.linalg.norm(b)) or 1.0) / eps

    vectors = {i: vf.find(corpus, i)[1] for i in ids}
    base = {(d, i): run(baseline, v, d) for d in dtypes for i, v in vectors.items()}
    rows = []
    for adapter in splits:
        for dtype in dtypes:
            eps = float(np.finfo(dtype).eps)
            for i, vector in vectors.items():
                if adapter.unsupported(vector, dtype, "cpu"):
                    continue
                got, want = run(adapter, vector, dtype), base[dtype, i]
                first = max(normwise(a, b, eps) for a, b in zip(got[0], want[0]))
                worst = max(normwise(a, b, eps) for s, t in zip(got, want) for a, b in zip(s, t))
                same = all(np.array_equal(a, b) for s, t in zip(got, want) for a, b in zip(s, t))
                rows.append((adapter.split, dtype, i, first, worst, same))
    return rows


if __name__ == "__main__":
    print(f"{'split':5}  {'dtype':7}  {'vector':40}  {'step 1 (eps)':>12}  {'worst (eps)':>12}  identical")
    for split, dtype, vid, first, worst, same in compare_with_keras_jax():
        print(f"{split:5}  {dtype:7}  {vid:40}  {first:12.3g}  {worst:12.3g}  {same}")
