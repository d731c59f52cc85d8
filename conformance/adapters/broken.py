"""Deliberately broken Adafactors, for the gate's meta tests: each is the reference with
one plausible porting mistake, and the gate must fail every one of them.

    python -m conformance run --adapter conformance.adapters.broken:ClipThresholdIgnored

Step mistakes are one-line mutations of reference/adafactor_step.py compiled into a
private module (the file itself is only read); a mutation that no longer applies raises,
so the list cannot silently go stale.
"""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import numpy as np

import reference.adafactor_step as step_module
import reference.optimizer as optimizer_module
from conformance.adapters.reference import ReferenceAdapter, ReferenceSession

STEP_SOURCE = Path(step_module.__file__)

#: name -> (what the port got wrong, original line, mutated line)
STEP_MUTATIONS = {
    "EpsilonOneAfterMean": (
        "epsilon_1 added to the second-moment estimate after the statistics, not to g*g",
        "regulated_grad_square += epsilon_1",
        "regulated_grad_square += 0 * epsilon_1  # then V += epsilon_1 in update_step",
    ),
    "BetaFromPreviousStep": (
        "beta_2 computed from step t-1",
        "beta_2_t = one - dtype(float(local_step) ** beta_2_decay)",
        "beta_2_t = one - dtype(max(float(local_step) - 1, 1.0) ** beta_2_decay)",
    ),
    "RmsOverWrongAxis": (
        "RMS(x) taken per row (over the last axis) instead of over all elements",
        "rms_x = rms(x, scratch=work)",
        "rms_x = np.sqrt(reductions.mean(np.square(x), axis=-1, keepdims=True)) if x.ndim else rms(x)",
    ),
    "ClipThresholdIgnored": (
        "update clipping with d = 1 whatever clip_threshold says",
        "clip_denominator = minmax.maximum(dtype(1.0), rms_u / dtype(clip_threshold))",
        "clip_denominator = minmax.maximum(dtype(1.0), rms_u)",
    ),
    "NoRelativeStep": (
        "rho = lr: the 1/sqrt(t) cap dropped",
        "rho_t = minmax.minimum(lr, inv_sqrt_step)",
        "rho_t = lr",
    ),
    "MeansInFloat32": (
        "float64 claimed, statistics computed in float32 (what Keras >= 3.12 does on jax/torch)",
        "def rms(x: np.ndarray, scratch: np.ndarray = None):",
        "def rms(x: np.ndarray, scratch: np.ndarray = None):\n"
        "    return np.sqrt(np.float32(reductions.mean(np.square(x).astype(np.float32))))\n\n\n"
        "def _unused(x, scratch=None):",
    ),
    "ColumnMeanOverRowsMinusOne": (
        "the column statistic c divided by rows - 1 instead of rows (a sample-variance habit): "
        "1/rows relative, which only a long column reduction makes small",
        "c = moment_update(c, reductions.mean(regulated_grad_square, axis=row), beta_2_t, one_minus_beta_2_t)",
        "rows = regulated_grad_square.shape[row]\n"
        "    c = moment_update(c, np.add.reduce(regulated_grad_square, axis=row) / max(rows - 1, 1), beta_2_t,\n"
        "                      one_minus_beta_2_t)",
    ),
}
#: Lines added after a mutation (same module), keyed like STEP_MUTATIONS.
EXTRA = {
    "EpsilonOneAfterMean": (
        "    u_t = precondition(g, v, out=work)",
        "    v = v + dtype(hyper.epsilon_1)\n    u_t = precondition(g, v, out=work)",
    ),
}


def mutated_update_step(name: str):
    _, old, new = STEP_MUTATIONS[name]
    source = STEP_SOURCE.read_text(encoding="utf-8")
    edits = [(old, new)] + ([EXTRA[name]] if name in EXTRA else [])
    for before, after in edits:
        if source.count(before) != 1:
            raise RuntimeError(f"mutation {name}: {before!r} no longer occurs exactly once in {STEP_SOURCE}")
        source = source.replace(before, after)
    module = types.ModuleType(f"adafactor_step_{name}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(source, f"<mutant {name}>", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module.update_step


@contextlib.contextmanager
def _patched(obj, attribute, value):
    saved = getattr(obj, attribute)
    setattr(obj, attribute, value)
    try:
        yield
    finally:
        setattr(obj, attribute, saved)


class _MutantSession(ReferenceSession):
    def __init__(self, vector, dtype, step_function):
        super().__init__(vector, dtype)
        self.step_function = step_function

    def step(self, grads):
        with _patched(optimizer_module, "update_step", self.step_function):
            super().step(grads)


class _StepMutant(ReferenceAdapter):
    mutation = ""

    def __init__(self):
        super().__init__()
        self.dialects = ("keras",)  # the mutations are of the Keras step
        self.name = f"broken:{self.mutation}"
        self._step = mutated_update_step(self.mutation)

    def create(self, vector, dtype, device):
        return _MutantSession(vector, dtype, self._step)


def _make(name):
    return type(name, (_StepMutant,), {"mutation": name, "__doc__": STEP_MUTATIONS[name][0]})


EpsilonOneAfterMean = _make("EpsilonOneAfterMean")
BetaFromPreviousStep = _make("BetaFromPreviousStep")
RmsOverWrongAxis = _make("RmsOverWrongAxis")
ClipThresholdIgnored = _make("ClipThresholdIgnored")
NoRelativeStep = _make("NoRelativeStep")
MeansInFloat32 = _make("MeansInFloat32")
ColumnMeanOverRowsMinusOne = _make("ColumnMeanOverRowsMinusOne")


class _DecayAfterUpdate(optimizer_module.Adafactor):
    def _apply_weight_decay(self, active, values):
        pass

    def _update(self, state, g, values, record):
        super()._update(state, g, values, record)
        optimizer_module.Adafactor._apply_weight_decay(self, sorted(g), values)


class WeightDecayAfterUpdate(ReferenceAdapter):
    """weight decay applied after the Adafactor step instead of before it"""

    def __init__(self):
        super().__init__()
        self.name = "broken:WeightDecayAfterUpdate"
        self.dialects = ("keras",)

    def create(self, vector, dtype, device):
        session = ReferenceSession(vector, dtype)
        session.opt.__class__ = type("Adafactor_decay_after", (_DecayAfterUpdate, session.opt.__class__), {})
        return session


ALL = [EpsilonOneAfterMean, BetaFromPreviousStep, RmsOverWrongAxis, ClipThresholdIgnored, NoRelativeStep,
       MeansInFloat32, WeightDecayAfterUpdate, ColumnMeanOverRowsMinusOne]


class _NoisySession(ReferenceSession):
    def read(self):
        state = super().read()
        state.v = [np.where(v != 0, np.nextafter(v, np.asarray(np.inf, dtype=v.dtype)), v) for v in state.v]
        return state


class OneUlpNoise(ReferenceAdapter):
    """Not broken: the reference with every variable moved up by one ulp after each step,
    inside every tolerance. Its measured errors differ from the reference's in the last
    bits, as a correct port's do from machine to machine (tests/fuzz/test_fuzzing.py uses it to
    show that the CI profile draws the same examples whatever the adapter measures)."""

    def __init__(self):
        super().__init__()
        self.name = "one-ulp-noise"
        self.dialects = ("keras",)

    def create(self, vector, dtype, device):
        return _NoisySession(vector, dtype)


class CrashesOnStart(ReferenceAdapter):
    """Not a numerical bug: a port whose setup raises (an import-time failure, a missing
    driver). The gate must report an ERROR for it, never a silent pass (tests/gate/test_gate.py)."""

    def __init__(self):
        super().__init__()
        self.name = "crashes-on-start"

    def environment(self, device):
        raise RuntimeError("simulated failure while setting the port up")


def _local_shard_sharded_adapter():
    from conformance.adapters.sharded import KerasJaxShardedAdapter

    return KerasJaxShardedAdapter


class LocalShardMean(_local_shard_sharded_adapter()):
    """The distributed bug: Keras's Adafactor on the sharded lane's mesh, but every mean over
    a sharded axis of a variable-shaped tensor (r over the column shards, c over the row
    shards, RMS(u) and RMS(x) over all four) is taken over the local shard only, as a port
    that forgets the all-reduce computes it: ``jax.shard_map`` over the local block with the
    reduced mesh axes dropped from the output spec (``check_vma=False``), so each device goes
    on with its own partial mean. Elementwise work is untouched; the gate must fail it on the
    vectors whose variables split (vectors/keras/sharding.json)."""

    def __init__(self):
        super().__init__()
        self.name = "keras-jax-local-shard-mean"
        self.expectations = ""  # no known deviations: everything it gets wrong is its own

    def _local_mean(self, session):
        from conformance.adapters.sharded import local_shard_mean, variable_spec

        specs = {tuple(x.shape): variable_spec(tuple(x.shape)) for x in session.variables}
        return local_shard_mean(self.mesh(session.device), specs)
