"""``reference.Adafactor``: keras.optimizers.Adafactor in float64 NumPy, every constructor
argument included.

The Adafactor step itself is in ``reference/adafactor_step.py``. This module is the
machinery Keras 3's ``BaseOptimizer`` wraps around it, in Keras's order:

    apply(grads, variables)                          base_optimizer.py:466-533
      drop None gradients (all None -> ValueError)   base_optimizer.py:843-868
      g = g / loss_scale_factor                      base_optimizer.py:519-523
      _backend_apply_gradients                       base_optimizer.py:535-612
        accumulation: on micro-steps 1..N-1 acc += g, nothing else;
                      on micro-step N g = (g + acc) / N, then as below, then acc := 0
        clip (clipnorm | global_clipnorm | clipvalue) clipping.py
        weight decay  x := x - x * wd * lr            base_optimizer.py:952-959
        Adafactor step per variable                  adafactor_step.update_step
        EMA of every variable, then maybe overwrite  base_optimizer.py:596-612, 970-1006
      iterations += 1                                base_optimizer.py:532-533

Line numbers are keras 3.15.1 (``keras/src/optimizers/``). The spec is Keras with
``floatx = "float64"`` on the TensorFlow backend (the one backend that keeps float64),
in pure float64: see reference/SPEC.md for where real Keras deviates from that.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from reference import clipping, schedules
from reference.adafactor_step import Hyperparameters, StepTrace, update_step, zero_moments
from reference.state import Kind, State

@dataclass
class StepRecord:
    """What one ``apply`` call did, for golden vectors and diagnostics."""

    is_update_step: bool  # False on accumulation micro-steps that only accumulate
    learning_rate: Optional[float]  # value passed to update_step (None: no update)
    traces: list = field(default_factory=list)  # StepTrace or None per variable
    ema_overwritten: bool = False


def apply_weight_decay(x: np.ndarray, weight_decay: float, learning_rate: float) -> np.ndarray:
    """x - x * wd * lr, both scalars cast to x's dtype (base_optimizer.py:952-959)."""
    lr = x.dtype.type(learning_rate)
    wd = x.dtype.type(weight_decay)
    return np.asarray(x - x * wd * lr)


class Adafactor:
    """Float64 NumPy reference of ``keras.optimizers.Adafactor`` (keras 3.15.1).

    Same argument names, defaults and validation as Keras. Variables are float64 NumPy
    arrays that ``apply`` updates in place; gradients may be ``None`` as in Keras.
    Variable names (for ``exclude_from_weight_decay(var_names=...)``) are given to
    ``build(variables, names=[...])``; they default to ``"variable_0"``, ``"variable_1"``...

    The optimizer's state is a ``reference.state.State``: ``iterations`` is Keras's raw
    counter ``_iterations`` (micro-steps: one per non-empty ``apply``); r, c, v per variable
    in build order (r and c None for 0-D and 1-D variables); ``average`` (EMA) only with
    ``use_ema``, ``accumulator`` only with ``gradient_accumulation_steps``. The variables
    are not part of it.
    """

    # The dtype every variable and gradient must have. The spec is float64; a
    # subclass may set another NumPy float type to run the same arithmetic in it.
    dtype = np.float64

    def __init__(
        self,
        learning_rate=0.001,
        beta_2_decay=-0.8,
        epsilon_1=1e-30,
        epsilon_2=1e-3,
        clip_threshold=1.0,
        relative_step=True,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name="adafactor",
        **kwargs,
    ):
        # base_optimizer.py:85-90: `decay` is accepted with a warning, anything else fails.
        if kwargs.pop("decay", None) is not None:
            warnings.warn("Argument `decay` is no longer supported and will be ignored.")
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        # base_optimizer.py:103-109. Note the truthiness test: 0 disables accumulation.
        if gradient_accumulation_steps:
            if not gradient_accumulation_steps >= 2:
                raise ValueError(
                    "`gradient_accumulation_steps` must be an integer >= 2. "
                    f"Received: gradient_accumulation_steps={gradient_accumulation_steps}"
                )
        # base_optimizer.py:111-126: EMA arguments are checked only when use_ema is on.
        if use_ema:
            if ema_momentum > 1 or ema_momentum < 0:
                raise ValueError(
                    "`ema_momentum` must be in the range [0, 1]. "
                    f"Received: ema_momentum={ema_momentum}"
                )
            if ema_overwrite_frequency and (
                not isinstance(ema_overwrite_frequency, int) or ema_overwrite_frequency < 1
            ):
                raise ValueError(
                    "`ema_overwrite_frequency` must be an integer >= 1 or None. "
                    f"Received: ema_overwrite_frequency={ema_overwrite_frequency}"
                )
        # base_optimizer.py:130-138
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                f"global_clipnorm={global_clipnorm}"
            )
        # base_optimizer.py:168-193: a schedule, a callable, or a Python float (an int,
        # even 1, is refused). Keras keeps a float in a variable of dtype floatx; the spec
        # assumes floatx float64, so the float is kept as is (see SPEC.md, "floatx").
        if not isinstance(learning_rate, schedules.LearningRateSchedule) and not callable(
            learning_rate
        ):
            if not isinstance(learning_rate, float):
                raise ValueError(
                    "Argument `learning_rate` should be float, or an instance of "
                    "LearningRateSchedule, or a callable (that takes in the current "
                    "iteration value and returns the corresponding learning rate value). "
                    f"Received instead: learning_rate={learning_rate!r}"
                )
            learning_rate = float(learning_rate)

        self.name = name
        self._learning_rate = learning_rate
        self.hyper = Hyperparameters(
            beta_2_decay=beta_2_decay,
            epsilon_1=epsilon_1,
            epsilon_2=epsilon_2,
            clip_threshold=clip_threshold,
            relative_step=relative_step,
        )
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.use_ema = use_ema
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.loss_scale_factor = loss_scale_factor
        self.gradient_accumulation_steps = gradient_accumulation_steps

        self.built = False
        self.state: Optional[State] = None
        self.last_step: Optional[StepRecord] = None
        self._variables: list = []
        self._names: list = []
        self._exclude_ids: set = set()
        self._exclude_pattern = None

    # Adafactor's own hyperparameters, readable under their Keras names.
    beta_2_decay = property(lambda self: self.hyper.beta_2_decay)
    epsilon_1 = property(lambda self: self.hyper.epsilon_1)
    epsilon_2 = property(lambda self: self.hyper.epsilon_2)
    clip_threshold = property(lambda self: self.hyper.clip_threshold)
    relative_step = property(lambda self: self.hyper.relative_step)

    # ------------------------------------------------------------------ counters, lr
    @property
    def iterations(self) -> int:
        """Keras's ``optimizer.iterations``: real updates when accumulating
        (``_iterations // N``), else every non-empty ``apply`` (base_optimizer.py:195-202)."""
        raw = 0 if self.state is None else self.state.iterations
        if self.gradient_accumulation_steps:
            return raw // self.gradient_accumulation_steps
        return raw

    @property
    def learning_rate(self) -> float:
        """The current learning rate (base_optimizer.py:777-786). QUIRK: a schedule sees
        the raw micro-step counter, not ``iterations``; a callable is called with no
        argument, and is called again each time this property is read (once per
        weight-decayed variable, and once for the step)."""
        if isinstance(self._learning_rate, schedules.LearningRateSchedule):
            return self._learning_rate(0 if self.state is None else self.state.iterations)
        if callable(self._learning_rate):
            return self._learning_rate()
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        # base_optimizer.py:706-729
        if isinstance(value, schedules.LearningRateSchedule) or callable(value):
            self._learning_rate = value
        elif isinstance(self._learning_rate, schedules.LearningRateSchedule):
            raise TypeError(
                "This optimizer was created with a `LearningRateSchedule` object as its "
                "`learning_rate` constructor argument, hence its learning rate is not "
                "settable."
            )
        else:
            self._learning_rate = float(value)

    # ------------------------------------------------------------------ building
    def build(self, variables: Sequence[np.ndarray], names: Optional[Sequence[str]] = None):
        """Create the state for ``variables`` (zeros everywhere, iterations 0)."""
        if self.built:
            return
        variables = list(variables)
        for i, x in enumerate(variables):
            self._check_array(x, f"variables[{i}]")
            if not x.flags.writeable:
                raise ValueError(f"variables[{i}] is read-only; apply() updates variables in place")
        if names is None:
            names = [f"variable_{i}" for i in range(len(variables))]
        names = list(names)
        if len(names) != len(variables):
            raise ValueError(
                f"Got {len(names)} names for {len(variables)} variables: names={names!r}"
            )
        self._variables = variables
        self._names = names
        moments = [zero_moments(x) for x in variables]
        self.state = State(0, {
            Kind.R: [r for r, _, _ in moments],
            Kind.C: [c for _, c, _ in moments],
            Kind.V: [v for _, _, v in moments],
            Kind.AVERAGE: [np.zeros_like(x) for x in variables] if self.use_ema else None,
            Kind.ACCUMULATOR: (
                [np.zeros_like(x) for x in variables]
                if self.gradient_accumulation_steps
                else None
            ),
        })
        self.built = True

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Exclude variables (by identity) or names (``re.search`` of the names joined
        with ``|``) from weight decay (base_optimizer.py:883-921). Call it before
        ``build``, as Keras documents: Keras 3.15.1 also accepts it after build (its guard
        tests an attribute it never sets), and so does the reference, but Keras 3.16 refuses
        that order."""
        self._exclude_ids = {id(x) for x in var_list} if var_list else set()
        self._exclude_pattern = re.compile("|".join(set(var_names))) if var_names else None

    def _use_weight_decay(self, index: int) -> bool:
        # base_optimizer.py:923-950
        if id(self._variables[index]) in self._exclude_ids:
            return False
        if self._exclude_pattern is not None:
            if re.search(self._exclude_pattern, self._names[index]) is not None:
                return False
        return True

    # ------------------------------------------------------------------ input checks
    def _check_array(self, a, what: str):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what} must be a NumPy array, got {type(a).__name__}")
        if a.dtype != self.dtype:
            raise TypeError(
                f"{what} has dtype {a.dtype}; the reference runs in "
                f"{np.dtype(self.dtype).name} only"
            )

    def _check_grads(self, grads: list):
        if len(grads) != len(self._variables):
            raise ValueError(
                f"Got {len(grads)} gradients for {len(self._variables)} variables"
            )
        for i, (g, x) in enumerate(zip(grads, self._variables)):
            if g is None:
                continue
            self._check_array(g, f"grads[{i}] (variable {self._names[i]!r})")
            if g.shape != x.shape:
                raise ValueError(
                    f"grads[{i}] has shape {g.shape} but variable {i} "
                    f"({self._names[i]!r}) has shape {x.shape}"
                )

    # ------------------------------------------------------------------ the step
    def apply(self, grads, variables: Optional[Sequence[np.ndarray]] = None):
        """Apply one (micro-)step in place, as ``keras.Optimizer.apply``."""
        grads = list(grads)
        if len(grads) == 0:  # base_optimizer.py:475-478: a no-op, not even counted
            return
        if variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already "
                    "be built on a list of variables. Call `optimizer.build(variables)` first."
                )
        else:
            variables = list(variables)
            if not self.built:
                self.build(variables)
            if len(variables) != len(self._variables) or any(
                a is not b for a, b in zip(variables, self._variables)
            ):
                # base_optimizer.py:405-413 (Keras matches by identity, as here).
                raise ValueError(
                    "Unknown variable: this optimizer can only be called for the variables "
                    "it was originally built with, in the same order"
                )
        self._check_grads(grads)
        for i, x in enumerate(self._variables):
            if not x.flags.writeable:
                raise ValueError(f"variables[{i}] ({self._names[i]!r}) is read-only; "
                                 "apply() updates variables in place")
        new_values, new_state, record = self._apply_pure(self.state, grads, self._variables)
        # Only now, with nothing left that can fail, is anything written.
        for x, new in zip(self._variables, new_values):
            x[...] = new
        self.state, self.last_step = new_state, record

    def apply_gradients(self, grads_and_vars):
        grads, variables = zip(*grads_and_vars)
        self.apply(grads, variables)
        return self.iterations

    def stateless_apply(self, state: State, grads, variables):
        """Pure form of ``apply``: returns ``(new_variables, new_state, record)`` and
        modifies nothing. ``state`` must be one of this optimizer's states (e.g.
        ``opt.state``, a copy of it, or one loaded from a golden vector)."""
        if not self.built:
            self.build([np.array(x, copy=True) for x in variables])
        variables = list(variables)
        for i, x in enumerate(variables):
            self._check_array(x, f"variables[{i}]")
        grads = list(grads)
        self._check_grads(grads)
        return self._apply_pure(state, grads, variables)

    def _apply_pure(self, state: State, grads: list, variables: list):
        """The body of ``apply`` on explicit state; inputs and ``self.state`` are never
        modified, also when the step raises (e.g. under ``np.errstate(all="raise")``)."""
        saved = self.state
        self.state = state.copy()  # `iterations` and `learning_rate` read self.state
        try:
            return self._step(self.state, grads, variables)
        finally:
            self.state = saved

    def _step(self, state: State, grads: list, variables: list):
        values = [np.array(x, copy=True) for x in variables]

        # base_optimizer.py:843-868: drop None gradients; all None is an error.
        active = [i for i, g in enumerate(grads) if g is not None]
        if not active:
            raise ValueError("No gradients provided for any variable.")
        if len(active) < len(grads):
            missing = [self._names[i] for i, g in enumerate(grads) if g is None]
            warnings.warn(f"Gradients do not exist for variables {missing}.")
        g = {i: grads[i] for i in active}

        # base_optimizer.py:519-523: unscale before accumulation and clipping.
        if self.loss_scale_factor is not None:
            g = {i: g[i] / g[i].dtype.type(self.loss_scale_factor) for i in active}

        record = StepRecord(is_update_step=True, learning_rate=None, traces=[None] * len(values))
        n = self.gradient_accumulation_steps
        if n:
            # base_optimizer.py:551-585. The Nth micro-step is an update step.
            record.is_update_step = (state.iterations + 1) % n == 0
            if record.is_update_step:
                g = {i: (g[i] + state.accumulator[i]) / g[i].dtype.type(n) for i in active}
                self._update(state, g, values, record)
                # QUIRK: *every* accumulator is reset, also those of variables that
                # had no gradient this micro-step (base_optimizer.py:623-626).
                state.accumulator = [np.zeros_like(a) for a in state.accumulator]
            else:
                for i in active:
                    state.accumulator[i] = np.asarray(g[i] + state.accumulator[i])
        else:
            self._update(state, g, values, record)

        if self.use_ema:
            record.ema_overwritten = self._ema(state, values)

        state.iterations += 1  # base_optimizer.py:532-533, always last
        return values, state, record

    def _update(self, state: State, g: dict, values: list, record: StepRecord):
        """Clip, decay, step: base_optimizer.py:571-576 and 587-594."""
        active = sorted(g)
        g = dict(zip(active, self._clip_gradients([g[i] for i in active])))
        self._apply_weight_decay(active, values)
        learning_rate = self.learning_rate  # evaluated once for every variable's step
        record.learning_rate = float(learning_rate)
        is_callable = not isinstance(self._learning_rate, float)
        r, c, v = state.r, state.c, state.v
        for i in active:
            values[i], (r[i], c[i], v[i]), record.traces[i] = update_step(
                values[i],
                g[i],
                (r[i], c[i], v[i]),
                learning_rate,
                self.iterations,
                self.hyper,
                learning_rate_is_callable=is_callable,
            )

    def _clip_gradients(self, grads: list) -> list:
        """base_optimizer.py:870-881: one of the three, each only when truthy and > 0."""
        if self.clipnorm and self.clipnorm > 0:
            return [clipping.clip_by_norm(g, self.clipnorm) for g in grads]
        if self.global_clipnorm and self.global_clipnorm > 0:
            return clipping.clip_by_global_norm(grads, self.global_clipnorm)
        if self.clipvalue and self.clipvalue > 0:
            return [clipping.clip_by_value(g, self.clipvalue) for g in grads]
        return grads

    def _apply_weight_decay(self, active: list, values: list):
        """x := x - x * wd * lr, before the Adafactor step (base_optimizer.py:952-959).

        QUIRK: the decay uses the raw learning rate (the float or the schedule value), not
        Adafactor's step size alpha_t, and it runs before the step, so the step's RMS(x)
        sees the decayed variable. Only variables that received a gradient decay.
        """
        if self.weight_decay is None:
            return
        for i in active:
            if self._use_weight_decay(i):
                values[i] = apply_weight_decay(values[i], self.weight_decay, self.learning_rate)

    def _ema(self, state: State, values: list) -> bool:
        """EMA of *every* built variable, then the periodic overwrite
        (base_optimizer.py:596-612, 970-1006). Returns True when variables were
        overwritten with their averages.

        QUIRKS: the momentum is 0 while ``iterations == 0``, so the first update copies
        the variable; with accumulation the EMA updates on every micro-step, and
        ``iterations`` stays constant for N micro-steps, so it copies for the first N and
        the overwrite fires on N consecutive micro-steps.
        """
        for i, x in enumerate(values):
            dtype = x.dtype.type
            momentum = dtype(self.iterations != 0) * dtype(self.ema_momentum)
            state.average[i] = np.asarray(momentum * state.average[i] + (dtype(1) - momentum) * x)
        if self.ema_overwrite_frequency:
            if (self.iterations + 1) % self.ema_overwrite_frequency == 0:
                for i in range(len(values)):
                    values[i] = np.array(state.average[i], copy=True)
                return True
        return False

    def finalize_variable_values(self, variables=None):
        """With ``use_ema``, overwrite the variables with their averages
        (base_optimizer.py:1008-1021)."""
        if not self.use_ema:
            return
        variables = self._variables if variables is None else list(variables)
        if len(variables) != len(self.state.average):
            raise ValueError(
                f"The length of model variables ({len(variables)}) to override does not "
                f"match the length of model variables stored in the optimizer "
                f"({len(self.state.average)})."
            )
        for x, avg in zip(variables, self.state.average):
            x[...] = avg

    # ------------------------------------------------------------------ state access
    def average(self, index: int) -> np.ndarray:
        """EMA of variable ``index`` (``use_ema`` only)."""
        return self.state.average[index]

    def accumulator(self, index: int) -> np.ndarray:
        """Gradient accumulator of variable ``index`` (``gradient_accumulation_steps``)."""
        return self.state.accumulator[index]

    def get_state(self) -> State:
        """A deep copy of the optimizer's state (no variables in it)."""
        return self.state.copy()

    def set_state(self, state: State):
        """Load a complete state (for teacher-forced replays): ``iterations`` and r, c, v
        (plus ``average``/``accumulator`` where configured) per variable; a ``variables``
        kind, if present, is ignored (``apply`` updates the variables themselves), and so
        are ``flags`` (what a step did is ``last_step``, not state). Shapes must match."""
        if not self.built:
            raise ValueError("Call build(variables) before set_state()")
        if state.v is None or len(state.v) != len(self._variables):
            count = 0 if state.v is None else len(state.v)
            raise ValueError(f"State has v for {count} variables, the optimizer has {len(self._variables)}")
        for i, (v, x) in enumerate(zip(state.v, self._variables)):
            if v.shape != x.shape:
                raise ValueError(f"state.v[{i}] has shape {v.shape}, expected {x.shape}")
        self.state = state.without(Kind.VARIABLES).copy().replace(flags=None)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        """Keras's config keys (base_optimizer.py:1026-1071, adafactor.py:216-228).
        A schedule is serialized as Keras serializes it; a plain callable is returned
        as is (Keras would serialize the Python function object)."""
        if isinstance(self._learning_rate, schedules.LearningRateSchedule):
            learning_rate = schedules.serialize(self._learning_rate)
        else:
            learning_rate = self._learning_rate
        return {
            "name": self.name,
            "learning_rate": learning_rate,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm,
            "clipvalue": self.clipvalue,
            "use_ema": self.use_ema,
            "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": self.ema_overwrite_frequency,
            "loss_scale_factor": self.loss_scale_factor,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "beta_2_decay": self.beta_2_decay,
            "epsilon_1": self.epsilon_1,
            "epsilon_2": self.epsilon_2,
            "clip_threshold": self.clip_threshold,
            "relative_step": self.relative_step,
        }

    @classmethod
    def from_config(cls, config: dict) -> "Adafactor":
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"])
        return cls(**config)
