"""Hypothesis strategies for ``keras.optimizers.Adafactor``: configurations, shapes, values,
and whole golden-vector cases.

Everything a strategy returns prints as something a person can read and paste back: a
configuration is a plain ``dict`` of Keras constructor arguments holding only the arguments
that differ from Keras's defaults (so a shrunk failure reads as "the defaults plus this"),
schedules print as ``ExponentialDecay(initial_learning_rate=0.5, ...)``, a callable learning
rate as ``CallableLearningRate(values=(0.125,))``, and a drawn case as the Python source of
the ``conformance.generator.Case`` that reproduces it, every float written exactly. A few
``hypothesis.event`` labels (learning-rate kind, clipping, accumulation, value kinds) show up
in ``pytest --hypothesis-show-statistics``.

Public strategies
-----------------
``configs(valid=True, **overrides)``
    Keras-accepted configurations over every constructor argument. ``overrides`` pins or
    narrows an argument (``weight_decay=st.none()``, ``use_ema=True``); the pseudo-argument
    ``clipping`` picks which of ``clipnorm``/``clipvalue``/``global_clipnorm`` is set
    (``clipping=st.none()``: none). ``valid=False`` draws a configuration the constructor
    rejects, as ``Rejected(config, error, message, violation)``: exactly one violation, so
    the exception class and a fragment of its message are known.
``learning_rates(kinds=...)``, ``learning_rate_schedules()``, ``callable_learning_rates()``
    The ``learning_rate`` argument: a float, one of the six Keras schedules with sensible
    arguments, or a zero-argument callable.
``shapes()``, ``variable_sets()``
    0-D to 4-D shapes with extents 1..6 (size-1 axes included), and named variable lists.
``values(shape, kind=None, allow_subnormal=False)``
    float64 arrays: ``ordinary`` (|v| in [1e-3, 1e3], both signs), ``positive``, ``tiny``
    ([1e-150, 1e-8]), ``huge`` ([1e8, 1e100]: squares and sums of squares stay finite),
    ``zeros`` (+0.0 or -0.0), ``mixed`` (every element of any of those kinds); ``subnormal``
    only with ``allow_subnormal=True`` (accelerators flush subnormals to zero).
``cases(...)``
    A ``conformance.generator.Case`` with explicit ``inputs=`` (initial values, then 1..8 steps of
    gradients, some ``None``) and the deterministic id ``regression/fuzz-<sha256 prefix>``,
    ready for ``conformance.generator.generate_vector``.
``fuzz_cases(lane, depth, regime)``
    What the differential fuzzer draws: a case built to reach one of ``REGIMES`` (accumulation
    with a binding clip or a live schedule over >= 2 updates, an EMA overwrite, relative_step
    =False above 1/sqrt(t), weight decay while epsilon_2 binds, an update after step 8, a last
    axis longer than 64), or ``FREE`` (``cases()``), within a ``Depth`` (extents, steps).

Magnitudes are bounded on purpose (|v| <= 1e100): beyond that, float64 Adafactor itself
overflows or underflows (g*g = inf; r/mean(r)*c = 0 and then 0/0, see tests/reference/test_properties.py),
which is Keras's behaviour and has its own hand-written vectors (``special_values/*``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
from typing import NamedTuple, Optional

import numpy as np
from hypothesis import event
from hypothesis import strategies as st

from reference import schedules
from reference.optimizer import Adafactor
from conformance.generator.case import Case

MAX_DIMS = 4
MAX_EXTENT = 6
MAX_STEPS = 8
MAX_VARIABLES = 3
#: Arrays up to this size are drawn element by element (Hypothesis shrinks every element);
#: larger ones from a drawn seed (fast: a 6x6x6x6 array is 1296 elements).
ELEMENTWISE_MAX = 16

#: Keras's constructor defaults (reference.Adafactor has the same signature).
KERAS_DEFAULTS = {name: p.default for name, p in inspect.signature(Adafactor).parameters.items()
                  if p.kind is not inspect.Parameter.VAR_KEYWORD}

CLIPPERS = ("clipnorm", "clipvalue", "global_clipnorm")


# ============================================================================ small helpers
def _strategy(value) -> st.SearchStrategy:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def _is_default(name: str, value) -> bool:
    default = KERAS_DEFAULTS[name]
    if default is None or value is None:
        return default is value
    return type(value) is type(default) and value == default


def _signed(magnitudes: st.SearchStrategy) -> st.SearchStrategy:
    """A magnitude with either sign (shrinks toward positive)."""
    return st.tuples(st.booleans(), magnitudes).map(lambda t: -t[1] if t[0] else t[1])


def _float_source(v: float) -> str:
    v = float(v)
    if math.isnan(v):
        return "float('nan')"
    if math.isinf(v):
        return "float('inf')" if v > 0 else "float('-inf')"
    return repr(v)  # the shortest repr that round-trips: exact


# ============================================================================ learning rates
class CallableLearningRate:
    """A zero-argument learning rate returning ``values[0], values[1], ...`` cyclically, one
    value per call. With one value it is a constant; with several it is the stateful kind
    whose result depends on how often Keras calls it (SPEC.md Q8). Values are exact in
    float32, because Keras's TensorFlow backend casts a callable's result through float32."""

    def __init__(self, values):
        self.values = tuple(float(v) for v in values)
        if not self.values:
            raise ValueError("CallableLearningRate needs at least one value")
        self.calls = 0

    def __call__(self) -> float:
        value = self.values[self.calls % len(self.values)]
        self.calls += 1
        return value

    def fresh(self) -> "CallableLearningRate":
        return CallableLearningRate(self.values)

    @staticmethod
    def factory(values) -> "LearningRateFactory":
        return LearningRateFactory(values)

    def __repr__(self) -> str:
        return f"CallableLearningRate(values={self.values!r})"

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


class LearningRateFactory:
    """``Case.make_learning_rate``: a fresh ``CallableLearningRate`` per call."""

    def __init__(self, values):
        self.values = tuple(float(v) for v in values)

    def __call__(self) -> CallableLearningRate:
        return CallableLearningRate(self.values)

    def __repr__(self) -> str:
        return f"CallableLearningRate.factory({self.values!r})"

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


def fresh(config: dict) -> dict:
    """A copy of ``config`` that shares no state: a ``CallableLearningRate`` counts its calls,
    so it is replaced by a new one (schedules are stateless and kept). Use one per optimizer
    when a test compares two runs."""
    out = dict(config)
    lr = out.get("learning_rate")
    if isinstance(lr, CallableLearningRate):
        out["learning_rate"] = lr.fresh()
    return out


_INITIAL_LR = st.one_of(st.sampled_from([0.5, 0.1, 0.01, 1.0]), st.floats(1e-4, 2.0))
_DECAY_STEPS = st.integers(1, 10)
_BOUNDARIES = st.integers(0, 12)
SCHEDULE_NAMES = ("ExponentialDecay", "PiecewiseConstantDecay", "PolynomialDecay",
                  "InverseTimeDecay", "CosineDecay", "CosineDecayRestarts")


@st.composite
def learning_rate_schedules(draw, names=SCHEDULE_NAMES, initial=_INITIAL_LR, decay_steps=_DECAY_STEPS,
                            boundaries=_BOUNDARIES, varying: bool = False):
    """One of the six Keras schedules with arguments in their sensible ranges: positive
    rates, decay factors in (0, 1], ``t_mul >= 1`` (no finite horizon, so no NaN).
    ``initial``, ``decay_steps``, ``boundaries``: strategies of the initial rate (and of
    PiecewiseConstantDecay's values), of the decay horizon, and of PiecewiseConstantDecay's
    boundaries (fast schedules for short runs: small ones). ``varying``: no argument that
    makes the schedule constant (decay rate 1, end = initial, alpha 1, equal pieces)."""
    name = draw(st.sampled_from(names))
    init = draw(initial)
    top = 0.9 if varying else 1.0  # a factor of 1 keeps the rate constant
    if name == "ExponentialDecay":
        return schedules.ExponentialDecay(init, draw(decay_steps), draw(st.floats(0.05, top)),
                                          staircase=draw(st.booleans()))
    if name == "PiecewiseConstantDecay":
        bounds = sorted(draw(st.sets(boundaries, min_size=1, max_size=3)))
        if varying:  # each piece a factor 0.1..0.9 or 1.1..3 off the previous one
            values = [init]
            for _ in bounds:
                values.append(values[-1] * draw(st.one_of(st.floats(0.1, 0.9), st.floats(1.1, 3.0))))
        else:
            values = [draw(initial) for _ in range(len(bounds) + 1)]
        return schedules.PiecewiseConstantDecay(bounds, values)
    if name == "PolynomialDecay":
        end = init * draw(st.floats(0.0, top))
        return schedules.PolynomialDecay(init, draw(decay_steps), end_learning_rate=end,
                                         power=draw(st.floats(0.5, 3.0)), cycle=draw(st.booleans()))
    if name == "InverseTimeDecay":
        return schedules.InverseTimeDecay(init, draw(decay_steps), draw(st.floats(0.1 if varying else 0.0, 2.0)),
                                          staircase=draw(st.booleans()))
    if name == "CosineDecay":
        warmup_target = draw(st.one_of(st.none(), initial))
        return schedules.CosineDecay(init, draw(decay_steps), alpha=draw(st.floats(0.0, top)),
                                     warmup_target=warmup_target,
                                     warmup_steps=draw(st.integers(0, 5)) if warmup_target is not None else 0)
    return schedules.CosineDecayRestarts(init, draw(decay_steps), t_mul=draw(st.floats(1.0, 3.0)),
                                         m_mul=draw(st.floats(0.1, 1.0)), alpha=draw(st.floats(0.0, 0.5)))


def callable_learning_rates(max_values: int = 3) -> st.SearchStrategy:
    """A ``CallableLearningRate`` with 1 (constant) to ``max_values`` (stateful) values,
    each exact in float32."""
    value = st.one_of(st.sampled_from([2.0 ** -k for k in range(1, 11)]),
                      st.floats(2.0 ** -16, 2.0, width=32))
    return st.lists(value, min_size=1, max_size=max_values).map(CallableLearningRate)


def float_learning_rates() -> st.SearchStrategy:
    return st.one_of(st.just(0.001), st.sampled_from([0.01, 0.1, 0.5, 1.0, 2.0, 1e-5]),
                     st.floats(1e-6, 4.0))


LEARNING_RATE_KINDS = ("float", "schedule", "callable")


@st.composite
def learning_rates(draw, kinds=LEARNING_RATE_KINDS, max_callable_values: int = 3):
    """The ``learning_rate`` argument: a float, a schedule or a zero-argument callable
    (``kinds`` restricts; ``max_callable_values=1`` keeps callables stateless)."""
    kind = draw(st.sampled_from(kinds))
    if kind == "float":
        lr = draw(float_learning_rates())
        event("learning_rate: float")
    elif kind == "schedule":
        lr = draw(learning_rate_schedules())
        event(f"learning_rate: {type(lr).__name__}")
    else:
        lr = draw(callable_learning_rates(max_callable_values))
        event("learning_rate: callable" + (" (stateful)" if len(lr.values) > 1 else ""))
    return lr


# ============================================================================ configurations
#: The strategy of every argument (and of the ``clipping`` choice) when not overridden.
#: Each starts with Keras's default, so shrinking goes back to the defaults.
ARGUMENTS = {
    "learning_rate": learning_rates(),
    "beta_2_decay": st.one_of(st.just(-0.8), st.floats(-1.5, 0.0)),
    "epsilon_1": st.one_of(st.just(1e-30), st.sampled_from([0.0, 1e-10]), st.floats(1e-30, 1e-3)),
    "epsilon_2": st.one_of(st.just(1e-3), st.just(0.0), st.floats(1e-6, 0.1)),
    "clip_threshold": st.one_of(st.just(1.0), st.floats(0.05, 10.0)),
    "relative_step": st.sampled_from([True, False]),
    "weight_decay": st.one_of(st.none(), st.just(0.0), st.floats(1e-4, 0.5)),
    "clipping": st.sampled_from([None, *CLIPPERS]),
    # 0 is accepted and disables the clipper (SPEC.md section 3).
    "clipnorm": st.one_of(st.floats(0.01, 10.0), st.just(0.0)),
    "clipvalue": st.one_of(st.floats(0.01, 10.0), st.just(0.0)),
    "global_clipnorm": st.one_of(st.floats(0.01, 10.0), st.just(0.0)),
    "use_ema": st.sampled_from([False, True]),
    "ema_momentum": st.one_of(st.just(0.99), st.floats(0.0, 1.0)),
    "ema_overwrite_frequency": st.one_of(st.none(), st.integers(1, 5), st.just(0)),
    "loss_scale_factor": st.one_of(st.none(), st.sampled_from([2.0 ** k for k in (1, 7, 10, 16, -4)]),
                                   st.floats(0.01, 1e4)),
    "gradient_accumulation_steps": st.one_of(st.none(), st.integers(2, 4), st.just(0)),
    "name": st.one_of(st.just("adafactor"), st.sampled_from(["opt", "my_adafactor"])),
}
# With use_ema=False Keras checks neither EMA argument (base_optimizer.py:111-126).
_UNCHECKED_EMA = {
    "ema_momentum": st.one_of(st.just(0.99), st.floats(-1.0, 2.0)),
    "ema_overwrite_frequency": st.one_of(st.none(), st.integers(-2, 5), st.just(2.5)),
}


@st.composite
def _valid_configs(draw, overrides: dict):
    unknown = set(overrides) - set(ARGUMENTS)
    if unknown:
        raise TypeError(f"configs(): unknown overrides {sorted(unknown)}")

    def arg(name, strategy=None):
        return draw(_strategy(overrides.get(name, strategy if strategy is not None else ARGUMENTS[name])))

    config = {}

    def put(name, value):
        if not _is_default(name, value):
            config[name] = value

    put("learning_rate", arg("learning_rate"))
    for name in ("beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold", "relative_step",
                 "weight_decay"):
        put(name, arg(name))
    clipping = arg("clipping")
    if clipping is not None:
        put(clipping, arg(clipping))
    event(f"clipping: {clipping}")
    use_ema = arg("use_ema")
    put("use_ema", use_ema)
    put("ema_momentum", arg("ema_momentum", None if use_ema else _UNCHECKED_EMA["ema_momentum"]))
    put("ema_overwrite_frequency",
        arg("ema_overwrite_frequency", None if use_ema else _UNCHECKED_EMA["ema_overwrite_frequency"]))
    put("loss_scale_factor", arg("loss_scale_factor"))
    accumulation = arg("gradient_accumulation_steps")
    put("gradient_accumulation_steps", accumulation)
    event(f"gradient_accumulation_steps: {accumulation}")
    put("name", arg("name"))
    return config


class Rejected(NamedTuple):
    """A configuration Keras rejects at construction, with what it raises."""

    config: dict
    error: type  # the exception class
    message: str  # a fragment of the message
    violation: str  # which rule is broken


VIOLATIONS = ("unknown_argument", "gradient_accumulation_steps", "gradient_accumulation_steps_type",
              "ema_momentum", "ema_momentum_type", "ema_overwrite_frequency", "several_clippers",
              "learning_rate_type")


@st.composite
def _invalid_configs(draw, overrides: dict):
    config = dict(draw(_valid_configs(overrides)))
    violation = draw(st.sampled_from(VIOLATIONS))
    event(f"violation: {violation}")
    if violation == "unknown_argument":
        # base_optimizer.py:85-90 (only `decay` is tolerated, with a warning).
        key = draw(st.sampled_from(["beta_1", "amsgrad", "momentum", "epsilon", "clip_norm"]))
        config[key] = draw(st.one_of(st.floats(0.0, 1.0), st.booleans()))
        return Rejected(config, ValueError, "not recognized", violation)
    if violation == "gradient_accumulation_steps":
        # Truthy and not >= 2 (base_optimizer.py:103-109); 0 and None are accepted.
        config[violation] = draw(st.one_of(st.just(1), st.integers(-5, -1), st.floats(0.01, 1.99)))
        return Rejected(config, ValueError, "gradient_accumulation_steps", violation)
    if violation == "gradient_accumulation_steps_type":
        # `"2" >= 2` raises in Python itself, as in Keras.
        config["gradient_accumulation_steps"] = draw(st.sampled_from(["2", "4"]))
        return Rejected(config, TypeError, "not supported", violation)
    if violation.startswith("ema_"):
        # Checked only with use_ema=True (base_optimizer.py:111-126): make the other EMA
        # argument valid, so that this violation is the one that raises.
        config["use_ema"] = True
        config.pop("ema_momentum", None)
        config.pop("ema_overwrite_frequency", None)
        if violation == "ema_momentum":
            config[violation] = draw(st.one_of(st.floats(1.0, 10.0, exclude_min=True),
                                               st.floats(-10.0, 0.0, exclude_max=True)))
            return Rejected(config, ValueError, "ema_momentum", violation)
        if violation == "ema_momentum_type":
            config["ema_momentum"] = draw(st.sampled_from(["0.9", "0.5"]))
            return Rejected(config, TypeError, "not supported", violation)
        # Truthy and (not an int or < 1): every non-zero float, and negative ints.
        config[violation] = draw(st.one_of(st.integers(-5, -1), st.floats(0.01, 10.0)))
        return Rejected(config, ValueError, "ema_overwrite_frequency", violation)
    if violation == "several_clippers":
        # `is not None` is what counts (base_optimizer.py:130-138): even 0 is "set".
        chosen = draw(st.sampled_from([CLIPPERS[:2], CLIPPERS[1:], (CLIPPERS[0], CLIPPERS[2]), CLIPPERS]))
        for key in CLIPPERS:
            config.pop(key, None)
        for key in chosen:
            config[key] = draw(st.one_of(st.floats(0.01, 10.0), st.just(0.0)))
        return Rejected(config, ValueError, "Only one of", violation)
    # learning_rate: a float, a schedule or a callable; an int (even 1), a bool, None, a
    # string or a list is refused (base_optimizer.py:168-193).
    config["learning_rate"] = draw(st.one_of(st.integers(-3, 10), st.booleans(),
                                             st.sampled_from([None, "0.01", [0.01], (0.01,)])))
    return Rejected(config, ValueError, "learning_rate", violation)


def configs(valid: bool = True, **overrides) -> st.SearchStrategy:
    """Keras Adafactor configurations (``dict`` of constructor arguments that differ from the
    defaults). ``valid=False``: ``Rejected`` tuples instead. ``overrides``: a value or a
    strategy per argument name of ``ARGUMENTS`` (including the ``clipping`` choice).

    A drawn ``CallableLearningRate`` counts its calls: build each optimizer from
    ``fresh(config)`` when a test constructs more than one."""
    overrides = dict(overrides)
    return _valid_configs(overrides) if valid else _invalid_configs(overrides)


# ============================================================================ shapes, names
def shapes(min_dims: int = 0, max_dims: int = MAX_DIMS, max_extent: int = MAX_EXTENT) -> st.SearchStrategy:
    """Shapes with ``min_dims..max_dims`` axes of extent ``1..max_extent`` (size-1 axes are
    the simplest draw, so they are frequent; Keras factors them anyway, SPEC.md Q3)."""
    return st.lists(st.integers(1, max_extent), min_size=min_dims, max_size=max_dims).map(tuple)


_LAYERS = ("dense", "conv", "embedding", "norm", "head")
_PARAMETERS = ("kernel", "bias", "gamma", "scale")


@st.composite
def variable_sets(draw, min_size: int = 1, max_size: int = MAX_VARIABLES, shapes=shapes()):
    """``((name, shape), ...)``: ``min_size..max_size`` variables with distinct Keras-like
    names (``dense_0/kernel``), for ``exclude_from_weight_decay(var_names=...)``."""
    n = draw(st.integers(min_size, max_size))
    out = []
    for i in range(n):
        name = f"{draw(st.sampled_from(_LAYERS))}_{i}/{draw(st.sampled_from(_PARAMETERS))}"
        out.append((name, draw(shapes)))
    return tuple(out)


# ============================================================================ values
#: Magnitude ranges. ``huge`` stops at 1e100 so that g*g, and sums of a few thousand of them,
#: stay finite; ``tiny`` starts at 1e-150 so that g*g is still a normal number.
MAGNITUDES = {
    "ordinary": (1e-3, 1e3),
    "positive": (1e-3, 1e3),
    "tiny": (1e-150, 1e-8),
    "huge": (1e8, 1e100),
    "subnormal": (2.0 ** -1074, 2.0 ** -1022),
}
VALUE_KINDS = ("ordinary", "positive", "tiny", "huge", "zeros", "mixed")


def lane_magnitudes(lane: str = "float64") -> dict:
    """``MAGNITUDES`` clipped to what a ``lane`` implementation can hold: |v| in
    [16 sqrt(tiny), sqrt(max) / 64] of the lane, so that v*v stays normal and finite sums
    of a few thousand squares do not overflow. Without it most float32 draws of ``huge``
    (up to 1e100) overflow the lane and are discarded (``runner.representability``); the
    float64 ranges are unchanged. A range that the clip empties (float16's ``huge``)
    collapses to the clip's edge."""
    if lane == "float64":
        return dict(MAGNITUDES)
    from conformance.adapters.base import finfo

    info = finfo(lane)
    low, high = 16 * math.sqrt(float(info.tiny)), math.sqrt(float(info.max)) / 64
    out = {}
    for kind, (lo, hi) in MAGNITUDES.items():
        if kind == "subnormal":
            out[kind] = (lo, hi)
            continue
        lo, hi = min(max(lo, low), high), max(min(hi, high), low)
        out[kind] = (lo, max(lo, hi))
    return out


def _element(kind: str, allow_subnormal: bool, magnitudes=MAGNITUDES) -> st.SearchStrategy:
    if kind == "zeros":
        return st.sampled_from([0.0, -0.0])
    if kind == "mixed":
        parts = [_element(k, False, magnitudes) for k in ("ordinary", "zeros", "tiny", "huge")]
        if allow_subnormal:
            parts.append(_element("subnormal", True, magnitudes))
        return st.one_of(parts)
    lo, hi = magnitudes[kind]
    if kind == "subnormal":
        magnitude = st.floats(lo, hi, exclude_max=True, allow_subnormal=True)
    else:
        magnitude = st.floats(lo, hi)
    return magnitude if kind == "positive" else _signed(magnitude)


def _seeded(rng: np.random.Generator, size: int, kind: str, allow_subnormal: bool,
            magnitudes=MAGNITUDES) -> np.ndarray:
    if kind == "zeros":
        return np.full(size, -0.0 if rng.integers(2) else 0.0)
    if kind == "mixed":
        kinds = ["ordinary", "zeros", "tiny", "huge"] + (["subnormal"] if allow_subnormal else [])
        choice = rng.integers(len(kinds), size=size)
        out = np.empty(size)
        for index, k in enumerate(kinds):
            mask = choice == index
            out[mask] = _seeded(rng, int(mask.sum()), k, allow_subnormal, magnitudes)
        return out
    lo, hi = magnitudes[kind]
    magnitude = np.clip(np.exp(rng.uniform(np.log(lo), np.log(hi), size=size)), lo, hi)
    if kind == "subnormal":
        magnitude = np.minimum(magnitude, np.nextafter(hi, 0))
    if kind == "positive":
        return magnitude
    return magnitude * rng.choice([-1.0, 1.0], size=size)


@st.composite
def values(draw, shape, kind: Optional[str] = None, allow_subnormal: bool = False, kinds=None,
           lane: str = "float64"):
    """A float64 array of ``shape``. ``kind`` (or one drawn from ``kinds``, default
    ``VALUE_KINDS``): see the module docstring. Subnormals appear only with
    ``allow_subnormal=True`` (kind ``subnormal``, and inside ``mixed``). ``lane``: the
    magnitudes are clipped to that dtype (``lane_magnitudes``)."""
    magnitudes = lane_magnitudes(lane)
    shape = tuple(shape)
    if kind is None:
        options = tuple(kinds or VALUE_KINDS) + (("subnormal",) if allow_subnormal and kinds is None else ())
        kind = draw(st.sampled_from(options))
    if kind == "subnormal" and not allow_subnormal:
        raise ValueError("values(kind='subnormal') needs allow_subnormal=True")
    size = math.prod(shape)
    if size <= ELEMENTWISE_MAX:
        flat = draw(st.lists(_element(kind, allow_subnormal, magnitudes), min_size=size, max_size=size))
        return np.array(flat, dtype=np.float64).reshape(shape)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return _seeded(np.random.default_rng(seed), size, kind, allow_subnormal, magnitudes).reshape(shape)


#: How a seeded array (``seeded_values``) fills its elements: ``spread`` log-uniformly over the
#: kind's range (as ``_seeded``), or ``round`` from the round numbers in it (its ends, powers
#: of two and of ten): ties and exact values (RMS(x) equal to epsilon_2, equal rows), which
#: element-by-element draws reach through Hypothesis's preference for simple floats.
ARRAY_STYLES = ("spread", "spread", "spread", "round")


@functools.lru_cache(maxsize=None)
def _round_values(lo: float, hi: float) -> np.ndarray:
    candidates = {lo, hi} | {2.0 ** k for k in range(-1074, 1024)} | {10.0 ** k for k in range(-307, 309)}
    return np.array(sorted(v for v in candidates if lo <= v <= hi and v > 0))


def _seeded_round(rng: np.random.Generator, size: int, kind: str, allow_subnormal: bool,
                  magnitudes=MAGNITUDES) -> np.ndarray:
    """Like ``_seeded``, every element a round number of its kind's range."""
    if kind == "zeros":
        return _seeded(rng, size, kind, allow_subnormal, magnitudes)
    if kind == "mixed":
        kinds = ["ordinary", "zeros", "tiny", "huge"] + (["subnormal"] if allow_subnormal else [])
        choice = rng.integers(len(kinds), size=size)
        out = np.empty(size)
        for index, k in enumerate(kinds):
            mask = choice == index
            out[mask] = _seeded_round(rng, int(mask.sum()), k, allow_subnormal, magnitudes)
        return out
    lo, hi = magnitudes[kind]
    if kind == "subnormal":
        hi = float(np.nextafter(hi, 0))
    pool = _round_values(lo, hi)
    magnitude = pool[rng.integers(len(pool), size=size)] if len(pool) else np.full(size, lo)
    if kind == "positive":
        return magnitude
    return magnitude * rng.choice([-1.0, 1.0], size=size)


@functools.lru_cache(maxsize=None)
def seeded_values(shape, kind: str, allow_subnormal: bool = False, lane: str = "float64") -> st.SearchStrategy:
    """A float64 array of ``shape`` and value ``kind`` built from two draws, a seed and a
    style (``ARRAY_STYLES``), whatever its size: the differential fuzzer's arrays. Cheaper
    than ``values`` (whose small arrays Hypothesis draws, and shrinks, element by element);
    a shrunk failure keeps its array as a seed. One strategy object per argument tuple."""
    if kind == "subnormal" and not allow_subnormal:
        raise ValueError("seeded_values(kind='subnormal') needs allow_subnormal=True")
    if kind not in VALUE_KINDS and kind != "subnormal":
        raise ValueError(f"unknown value kind {kind!r}; use one of {VALUE_KINDS + ('subnormal',)}")
    shape = tuple(shape)
    size = math.prod(shape)
    magnitudes = lane_magnitudes(lane)

    def build(drawn) -> np.ndarray:
        seed, style = drawn
        fill = _seeded_round if style == "round" else _seeded
        return fill(np.random.default_rng(seed), size, kind, allow_subnormal, magnitudes).reshape(shape)

    return st.tuples(st.integers(0, 2 ** 32 - 1), st.sampled_from(ARRAY_STYLES)).map(build)


# ============================================================================ cases
def array_source(a) -> str:
    """Python source that rebuilds ``a`` bit for bit."""
    if a is None:
        return "None"
    a = np.asarray(a, dtype=np.float64)
    body = "[" + ", ".join(_float_source(v) for v in a.ravel()) + "]"
    return f"np.array({body}).reshape({tuple(a.shape)!r})"


def value_source(v) -> str:
    if isinstance(v, schedules.LearningRateSchedule):
        return f"schedules.{v!r}"
    if isinstance(v, float):
        return _float_source(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {value_source(x)}" for k, x in v.items()) + "}"
    return repr(v)


def case_source(case: Case) -> str:
    """The ``Case(...)`` call that reproduces ``case`` exactly (for tools/vector_cases.py,
    with ``import numpy as np`` and ``from reference import schedules`` in scope)."""
    initial, grads = case.inputs
    lines = [
        "Case(",
        f"    id={case.id!r},",
        f"    description={case.description!r},",
        f"    config={value_source(case.config)},",
        f"    variables={tuple(case.variables)!r},",
        f"    steps={case.steps!r},",
        f"    exclude={case.exclude!r},",
        f"    make_learning_rate={case.make_learning_rate!r},",
        "    inputs=(",
        "        [" + ", ".join(array_source(x) for x in initial) + "],",
        "        [",
    ]
    for k, row in enumerate(grads):
        lines.append("            [" + ", ".join(array_source(g) for g in row) + f"],  # step {k + 1}")
    lines += ["        ],", "    ),", ")"]
    return "\n".join(lines)


class FuzzCase(Case):
    """A ``conformance.generator.Case`` that prints as the source that rebuilds it."""

    def __repr__(self) -> str:
        return case_source(self)

    def _repr_pretty_(self, p, cycle):
        for index, line in enumerate(case_source(self).split("\n")):
            if index:
                p.break_()
            p.text(line)


def case_digest(config: dict, variables, exclude, make_learning_rate, inputs) -> str:
    """sha256 of everything that defines a case (not its id or description)."""
    h = hashlib.sha256()
    h.update(value_source(config).encode())
    h.update(repr((tuple(variables), exclude, make_learning_rate)).encode())
    initial, grads = inputs
    for a in [*initial, *(g for row in grads for g in row)]:
        if a is None:
            h.update(b"None")
        else:
            h.update(repr(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def describe(config: dict, variables, steps: int) -> str:
    shapes_ = ", ".join(f"{name} {tuple(shape)}" for name, shape in variables)
    args = ", ".join(f"{k}={value_source(v)}" for k, v in config.items()) or "Keras defaults"
    text = f"fuzz: {args}; {shapes_}; {steps} step{'s' if steps != 1 else ''}"
    return text if len(text) <= 400 else text[:397] + "..."


@st.composite
def cases(draw, config=None, variables=None, min_steps: int = 1, max_steps: int = MAX_STEPS,
          value_kinds=None, gradient_kinds=None, allow_subnormal: bool = False,
          none_gradients: bool = True, exclusion: bool = True, lane: str = "float64",
          elementwise: bool = True):
    """A ``FuzzCase`` (a ``conformance.generator.Case``) with explicit inputs.

    ``config``: a strategy of valid configurations (default ``configs()``); a callable
    learning rate becomes ``make_learning_rate``. ``variables``: a strategy of
    ``variable_sets()``. Initial values are drawn from ``value_kinds`` and each variable's
    gradients from one kind of ``gradient_kinds`` (default: every kind). Steps: ``min_steps``
    to ``max_steps``; with ``none_gradients`` some gradients are ``None`` (never all of one
    step: that is an error vector of its own). With ``exclusion`` a weight-decayed case may
    exclude a variable from the decay, by name or by identity. ``lane``: the dtype the
    case is for; value magnitudes are clipped to it (``lane_magnitudes``). ``elementwise``:
    arrays from ``values`` (small ones element by element); ``False``: from ``seeded_values``.

    The differential fuzzer draws ``fuzz_cases`` instead (below), which builds most of its
    examples to reach one named deep regime.
    """
    config = dict(draw(config if config is not None else configs()))
    variables = tuple(draw(variables if variables is not None else variable_sets()))
    steps = draw(st.integers(min_steps, max_steps))
    make_learning_rate = _pop_callable(config)
    initial, grads = draw(_inputs(variables, steps, value_kinds, gradient_kinds, allow_subnormal,
                                  none_gradients, lane, elementwise))
    exclude = draw(_exclusions(config, variables, exclusion))
    return make_case(config, variables, (initial, grads), exclude, make_learning_rate)


def _pop_callable(config: dict):
    """Move a ``CallableLearningRate`` out of ``config`` into a ``Case.make_learning_rate``."""
    if isinstance(config.get("learning_rate"), CallableLearningRate):
        return CallableLearningRate.factory(config.pop("learning_rate").values)
    return None


@st.composite
def _inputs(draw, variables, steps: int, value_kinds=None, gradient_kinds=None, allow_subnormal: bool = False,
            none_gradients: bool = True, lane: str = "float64", elementwise: bool = True):
    """``(initial values, per-step gradients)`` for ``variables`` (see ``cases``). With
    ``elementwise=False`` each variable's initial value is one ``seeded_values`` draw, all
    its gradients another (one array over the steps, split), and which gradients are None
    a third: a handful of draws per case instead of one per array (or element)."""
    initial = []
    for _, shape in variables:
        kind = draw(st.sampled_from(tuple(value_kinds or VALUE_KINDS)))
        event(f"initial values: {kind}")
        initial.append(draw(values(shape, kind, allow_subnormal=allow_subnormal, lane=lane) if elementwise
                            else seeded_values(tuple(shape), kind, allow_subnormal, lane)))
    grad_kinds = []
    for _ in variables:
        kind = draw(st.sampled_from(tuple(gradient_kinds or VALUE_KINDS)))
        event(f"gradients: {kind}")
        grad_kinds.append(kind)
    some_none = none_gradients and draw(st.booleans())
    if not elementwise:
        n = len(variables)
        absent = np.zeros((steps, n), dtype=bool)
        if some_none:  # each gradient None with probability 1/4, never all of one step
            absent = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1))).random((steps, n)) < 0.25
            for step in np.flatnonzero(absent.all(axis=1)):
                absent[step, step % n] = False
        series = [draw(seeded_values((steps, *shape), kind, allow_subnormal, lane))
                  for (_, shape), kind in zip(variables, grad_kinds)]
        grads = [[None if absent[step, i] else np.array(series[i][step], copy=True) for i in range(n)]
                 for step in range(steps)]
        return initial, grads
    grads = []
    for step in range(steps):
        present = [not (some_none and draw(st.sampled_from([False, False, False, True])))
                   for _ in variables]
        if not any(present):
            present[step % len(variables)] = True
        grads.append([draw(values(shape, kind, allow_subnormal=allow_subnormal, lane=lane)) if p else None
                      for (_, shape), kind, p in zip(variables, grad_kinds, present)])
    return initial, grads


@st.composite
def _exclusions(draw, config: dict, variables, exclusion: bool = True, keep=None):
    """``exclude_from_weight_decay`` of a weight-decayed case: ``None`` or one variable, by
    name or by index. ``keep``: an index that must not be excluded (by name: not one that
    shares its parameter name)."""
    if not (exclusion and config.get("weight_decay") and draw(st.booleans())):
        return None
    index = draw(st.integers(0, len(variables) - 1))
    by_name = draw(st.booleans())
    if keep is not None:
        if index == keep:
            return None
        if by_name and variables[index][0].split("/")[-1] == variables[keep][0].split("/")[-1]:
            return None
    if by_name:
        return {"var_names": [variables[index][0].split("/")[-1]]}
    return {"var_index": [index]}


def make_case(config: dict, variables, inputs, exclude=None, make_learning_rate=None) -> "FuzzCase":
    """The ``FuzzCase`` of drawn pieces, with its deterministic id and readable description."""
    variables = tuple(variables)
    steps = len(inputs[1])
    digest = case_digest(config, variables, exclude, make_learning_rate, inputs)
    shown = dict(config)
    if make_learning_rate is not None:
        shown["learning_rate"] = make_learning_rate()
    return FuzzCase(
        id=f"regression/fuzz-{digest[:12]}",
        description=describe(shown, variables, steps),
        config=config,
        variables=variables,
        steps=steps,
        inputs=inputs,
        exclude=exclude,
        make_learning_rate=make_learning_rate,
    )


# ============================================================================ deep regimes
#: The regimes the differential fuzzer builds examples for. Each is a branch or a length
#: that a uniformly drawn configuration almost never reaches (issue 12, item 8); its builder
#: below draws a configuration and inputs made to reach it, and ``conformance.fuzz.regimes``
#: checks on the reference, example by example, that it was reached.
REGIMES = {
    "accumulation_clip": "gradient accumulation with >= 2 real updates on which clipnorm, clipvalue or "
                         "global_clipnorm actually clips",
    "accumulation_schedule": "gradient accumulation with a schedule over >= 2 real updates: the schedule's "
                             "value changes between updates and sets the step size",
    "ema_overwrite": "use_ema with ema_overwrite_frequency >= 2, run until the overwrite fires",
    "relative_step_false_high_lr": "relative_step=False with a float learning rate above 1/sqrt(t) "
                                   "(the relative step caps it anyway)",
    "weight_decay_epsilon_2": "weight decay on a variable with 0 < RMS(x) <= epsilon_2 (epsilon_2 sets the "
                              "step size): the one regime where decaying before or after the step differs",
    "long_run": "a real update after step 8",
    "long_axis": "a variable whose last axis is longer than 64, updated",
}
FREE = "free"  # no regime: ``cases()`` as drawn for the property suite


class Depth(NamedTuple):
    """How far a profile's examples reach (``conformance.fuzz.profiles.DEPTH``)."""

    max_extent: int = MAX_EXTENT  # axes of the free draws: 1..max_extent
    max_steps: int = MAX_STEPS  # steps of the free draws
    long_steps: tuple = (9, 14)  # steps of the ``long_run`` regime
    long_axis: tuple = (65, 130)  # last axis of the ``long_axis`` regime
    max_frequency: int = 4  # ema_overwrite_frequency of the ``ema_overwrite`` regime: 2..max_frequency
    updates: tuple = (2, 3)  # real updates of the accumulation regimes


def _update_steps(n: Optional[int], steps: int) -> list:
    """0-based indices of the steps that are real updates (all of them without accumulation)."""
    if not n:
        return list(range(steps))
    return [k for k in range(steps) if (k + 1) % n == 0]


def clipper_inputs(config: dict, grads) -> list:
    """The gradients the clipper sees on each real update: unscaled by ``loss_scale_factor``,
    accumulated and averaged when ``gradient_accumulation_steps`` is set, only the
    variables that have a gradient on that micro-step (base_optimizer.py:519-585)."""
    n = config.get("gradient_accumulation_steps")
    scale = config.get("loss_scale_factor")
    accumulator, out = {}, []
    with np.errstate(all="ignore"):
        for k, row in enumerate(grads):
            g = {i: (x / scale if scale is not None else x) for i, x in enumerate(row) if x is not None}
            if not n:
                out.append(list(g.values()))
            elif (k + 1) % n == 0:
                out.append([(x + accumulator.get(i, 0.0)) / n for i, x in g.items()])
                accumulator = {}
            else:
                for i, x in g.items():
                    accumulator[i] = x + accumulator.get(i, 0.0)
    return out


def clip_statistic(clipper: str, grads: list) -> float:
    """What ``clipper`` compares with its threshold on one update (it clips when this is
    larger): the largest per-tensor norm, the global norm, or the largest magnitude."""
    with np.errstate(all="ignore"):
        if not grads:
            return 0.0
        if clipper == "clipnorm":
            return max(float(np.sqrt(np.sum(np.square(g)))) for g in grads)
        if clipper == "global_clipnorm":
            return float(np.sqrt(sum(float(np.sum(np.square(g))) for g in grads)))
        return max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)


@st.composite
def _regime_accumulation_clip(draw, lane: str, depth: Depth):
    n = draw(st.integers(2, 4))
    updates = draw(st.integers(*depth.updates))
    steps = n * updates + draw(st.integers(0, n - 1))
    clipper = draw(st.sampled_from(CLIPPERS))
    config = dict(draw(configs(gradient_accumulation_steps=n, clipping=None)))
    make_learning_rate = _pop_callable(config)
    variables = draw(variable_sets(shapes=shapes(max_extent=depth.max_extent)))
    # No zeros: an all-zero update cannot be clipped.
    inputs = draw(_inputs(variables, steps, gradient_kinds=("ordinary", "positive", "huge", "mixed", "tiny"),
                          lane=lane, elementwise=False))
    # The threshold is a fraction of the second largest statistic over the real updates:
    # the clip binds on at least two updates, and on others only if their statistic is
    # large enough (clipping on every update by the same global factor would hide a port
    # that scales all of them alike: Adafactor's update is invariant to that).
    stats = sorted((s for s in (clip_statistic(clipper, g) for g in clipper_inputs(config, inputs[1]))
                    if s > 0 and math.isfinite(s)), reverse=True)
    fraction = draw(st.floats(0.05, 0.95))
    config[clipper] = float(fraction * stats[min(1, len(stats) - 1)]) if stats else 1.0
    exclude = draw(_exclusions(config, variables))
    return make_case(config, variables, inputs, exclude, make_learning_rate)


@st.composite
def _regime_accumulation_schedule(draw, lane: str, depth: Depth):
    n = draw(st.integers(2, 4))
    updates = draw(st.integers(*depth.updates))
    steps = n * updates + draw(st.integers(0, n - 1))
    # A schedule that still changes between the first and the last update (it counts
    # micro-steps: the updates are at iterations n-1, 2n-1, ...), starting below 1/sqrt(2)
    # so that it, not the relative step, sets rho on the second update.
    last = n * updates - 1
    schedule = draw(learning_rate_schedules(initial=st.floats(1e-3, 0.6), decay_steps=st.integers(n, last + 1),
                                            boundaries=st.integers(n - 1, last - 1), varying=True))
    config = dict(draw(configs(gradient_accumulation_steps=n, learning_rate=schedule)))
    variables = draw(variable_sets(shapes=shapes(max_extent=depth.max_extent)))
    inputs = draw(_inputs(variables, steps, lane=lane, elementwise=False))
    exclude = draw(_exclusions(config, variables))
    return make_case(config, variables, inputs, exclude, None)


@st.composite
def _regime_ema_overwrite(draw, lane: str, depth: Depth):
    frequency = draw(st.integers(2, depth.max_frequency))
    n = draw(st.one_of(st.none(), st.integers(2, 3)))
    # Keras's `iterations` counts real updates: the overwrite first fires on micro-step
    # (frequency - 1) * n + 1 (base_optimizer.py:600-612).
    first = (frequency - 1) * n + 1 if n else frequency
    steps = first + draw(st.integers(0, 3))
    config = dict(draw(configs(use_ema=True, ema_overwrite_frequency=frequency, gradient_accumulation_steps=n)))
    make_learning_rate = _pop_callable(config)
    variables = draw(variable_sets(shapes=shapes(max_extent=depth.max_extent)))
    inputs = draw(_inputs(variables, steps, lane=lane, elementwise=False))
    exclude = draw(_exclusions(config, variables))
    return make_case(config, variables, inputs, exclude, make_learning_rate)


@st.composite
def _regime_relative_step_false_high_lr(draw, lane: str, depth: Depth):
    steps = draw(st.integers(1, depth.max_steps))
    n = draw(st.one_of(st.none(), st.integers(2, 3)))
    if n:
        steps = max(steps, n)
    updates = len(_update_steps(n, steps))
    # Above 1/sqrt(t) at the last update t = updates, so at every later t as well.
    low = 1.01 / math.sqrt(updates)
    lr = draw(st.one_of(st.sampled_from([v for v in (1.5, 2.0, 4.0) if v > low]), st.floats(low, 4.0)))
    config = dict(draw(configs(relative_step=False, learning_rate=lr, gradient_accumulation_steps=n)))
    variables = draw(variable_sets(shapes=shapes(max_extent=depth.max_extent)))
    inputs = draw(_inputs(variables, steps, lane=lane, elementwise=False))
    exclude = draw(_exclusions(config, variables))
    return make_case(config, variables, inputs, exclude, None)


@st.composite
def _regime_weight_decay_epsilon_2(draw, lane: str, depth: Depth):
    epsilon_2 = draw(st.one_of(st.just(1e-3), st.floats(1e-4, 0.1)))
    weight_decay = draw(st.one_of(st.sampled_from([0.01, 0.1]), st.floats(1e-3, 0.5)))
    config = dict(draw(configs(weight_decay=weight_decay, epsilon_2=epsilon_2)))
    make_learning_rate = _pop_callable(config)
    variables = draw(variable_sets(shapes=shapes(max_extent=depth.max_extent)))
    steps = draw(st.integers(1, depth.max_steps))
    n = config.get("gradient_accumulation_steps")
    if n:
        steps = max(steps, n)
    initial, grads = draw(_inputs(variables, steps, value_kinds=("ordinary", "positive", "tiny"), lane=lane,
                                          elementwise=False))
    # Every variable below epsilon_2 (max|x| = fraction * epsilon_2, so RMS(x) <= epsilon_2).
    fraction = draw(st.floats(0.01, 0.9))
    initial = [x * (fraction * epsilon_2 / np.max(np.abs(x)))
               if x.size and np.max(np.abs(x)) > fraction * epsilon_2 else x for x in initial]
    exclude = draw(_exclusions(config, variables, keep=0))
    return make_case(config, variables, (initial, grads), exclude, make_learning_rate)


@st.composite
def _regime_long_run(draw, lane: str, depth: Depth):
    steps = draw(st.integers(*depth.long_steps))
    config = dict(draw(configs()))
    n = config.get("gradient_accumulation_steps")
    if n:
        steps = max(steps, n * math.ceil(9 / n))  # a real update after step 8
    make_learning_rate = _pop_callable(config)
    variables = draw(variable_sets(shapes=shapes(max_extent=depth.max_extent)))
    inputs = draw(_inputs(variables, steps, lane=lane, elementwise=False))
    exclude = draw(_exclusions(config, variables))
    return make_case(config, variables, inputs, exclude, make_learning_rate)


@st.composite
def long_axis_shapes(draw, extent=(65, 130), max_extent: int = MAX_EXTENT):
    """A shape whose last axis is ``extent[0]..extent[1]`` long: 1-D, 2-D or 3-D."""
    last = draw(st.integers(*extent))
    lead = draw(st.lists(st.integers(1, min(4, max_extent)), min_size=0, max_size=2))
    return (*lead, last)


@st.composite
def _regime_long_axis(draw, lane: str, depth: Depth):
    config = dict(draw(configs()))
    make_learning_rate = _pop_callable(config)
    long = ("long/kernel", draw(long_axis_shapes(depth.long_axis, depth.max_extent)))
    others = draw(variable_sets(min_size=0, max_size=MAX_VARIABLES - 1,
                                shapes=shapes(max_extent=depth.max_extent)))
    variables = (long, *others)
    steps = draw(st.integers(1, depth.max_steps))
    n = config.get("gradient_accumulation_steps")
    if n:
        steps = max(steps, n)
    initial, grads = draw(_inputs(variables, steps, lane=lane, elementwise=False))
    exclude = draw(_exclusions(config, variables))
    return make_case(config, variables, (initial, grads), exclude, make_learning_rate)


@st.composite
def _regime_free(draw, lane: str, depth: Depth):
    return draw(cases(variables=variable_sets(shapes=shapes(max_extent=depth.max_extent)),
                      max_steps=depth.max_steps, lane=lane, elementwise=False))


_BUILDERS = {
    FREE: _regime_free,
    "accumulation_clip": _regime_accumulation_clip,
    "accumulation_schedule": _regime_accumulation_schedule,
    "ema_overwrite": _regime_ema_overwrite,
    "relative_step_false_high_lr": _regime_relative_step_false_high_lr,
    "weight_decay_epsilon_2": _regime_weight_decay_epsilon_2,
    "long_run": _regime_long_run,
    "long_axis": _regime_long_axis,
}


@st.composite
def fuzz_cases(draw, lane: str = "float64", depth: Depth = Depth(), regime: Optional[str] = None):
    """A case built to reach ``regime`` (``FREE`` or one of ``REGIMES``; ``None``: the regime
    is drawn first). ``conformance.fuzz.regimes.reached`` says which regimes the case
    really reaches. The differential fuzzer gives every regime its own quota of examples
    (``conformance.fuzz.profiles.quotas``) rather than drawing it, so that the count per
    regime does not depend on how Hypothesis happens to distribute its choices."""
    if regime is None:
        regime = draw(st.sampled_from((FREE, *REGIMES)))
    elif regime not in _BUILDERS:
        raise ValueError(f"unknown regime {regime!r}; use one of {sorted(_BUILDERS)}")
    event(f"regime drawn: {regime}")
    return draw(_BUILDERS[regime](lane, depth))
