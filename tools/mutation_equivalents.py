"""Why each surviving mutant of the spec survives (tools/mutation.py, reference/MUTATION.md).

A mutant is named by its file, the function or class it is in (``scope``), the source lines
it changes (``original``) and what they become (``mutated``), both with whitespace runs
collapsed, and ``nth`` when the same change occurs more than once in one scope. Line numbers
are not part of the name, so an entry survives edits elsewhere in the file; an entry that no
longer matches a survivor is listed as stale in the report.

EQUIVALENT: no input can tell the mutant from the spec; ``why`` says why in one line.
PENDING: the mutant changes what the spec computes on a path the gate does not grade yet;
``why`` names the change of the gate that will kill it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Explanation:
    file: str
    scope: str
    original: str
    mutated: str
    why: str
    nth: int = 0


E = Explanation
STEP = "reference/adafactor_step.py"
OPT = "reference/optimizer.py"
CLIP = "reference/clipping.py"
RED = "reference/reductions.py"

_UNUSED_DEFAULT = ("unreachable: Adafactor.__init__ passes every field of Hyperparameters (optimizer.py), so the "
                   "dataclass default is never read by the optimizer the gate runs")
_FROZEN = ("frozen only forbids assigning to and makes hashable the record; the spec never assigns to or hashes it, "
           "so an unfrozen one computes the same")
_RELATIVE_STEP = ("line (1) is a no-op (SPEC.md Q1): rho = min(lr, s) follows unconditionally and "
                  "min(min(lr, s), s) == min(lr, s) bit for bit, so running (1) more often changes nothing")

_SETTER = ("unreachable: the learning_rate setter; a vector fixes the learning rate at construction and the gate "
           "never assigns it")
_UNUSED_API = ("unreachable: part of the reference's Python API (Keras's) that the gate does not call: it "
               "replays a vector with build, exclude_from_weight_decay, apply, get_state and set_state")
_CONFIG = ("unreachable: get_config/from_config serialize the configuration; the gate constructs each optimizer "
           "from the vector's config and grades its steps (tests/test_arguments.py checks the round trip)")
_BEFORE_BUILD = ("unreachable: the value before build(); the gate builds every optimizer before it reads iterations "
                 "or the learning rate")
_MODULO = "a remainder of positive integers is never negative, so == 0 and <= 0 agree"
_TRUTHY_ZERO = ("the truthiness test in front already turns 0 away, so > 0 and >= 0 agree (a negative value is "
                "turned away by both)")
_DECAY_WARNING = ("decides only whether the deprecation warning for `decay` is issued; `decay` is removed from "
                  "kwargs either way and no vector passes it")
_NONE_WARNING = ("builds or decides only Keras's 'Gradients do not exist' warning; no state or result depends on it")
_CHECKS = ("unreachable: a check that rejects malformed input (an array of another dtype or shape, a wrong "
           "count); the loader refuses such a vector before the gate runs (conformance/vectorfile.py), so for "
           "every vector the original and the mutant pass the same way")
_API_MISUSE = ("unreachable: a check of how apply() is called (without variables, or with variables the optimizer "
               "was not built with); a vector always applies its gradients to the variables the optimizer was "
               "built with, so the checks pass and skip the same way")

EQUIVALENT: list[Explanation] = [
    # --- adafactor_step.py
    E(STEP, "Hyperparameters", "beta_2_decay: float = -0.8", "beta_2_decay: float = - 1.8", _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "beta_2_decay: float = -0.8", "beta_2_decay: float = - -0.19999999999999996",
      _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "epsilon_1: float = 1e-30", "epsilon_1: float = 1.0", _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "epsilon_1: float = 1e-30", "epsilon_1: float = -1.0", _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "epsilon_2: float = 1e-3", "epsilon_2: float = 1.001", _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "epsilon_2: float = 1e-3", "epsilon_2: float = -0.999", _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "clip_threshold: float = 1.0", "clip_threshold: float = 2.0", _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "clip_threshold: float = 1.0", "clip_threshold: float = 0.0", _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "relative_step: bool = True", "relative_step: bool = False", _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "@dataclass(frozen=True)", "@dataclass(frozen=False)", _FROZEN),
    E(STEP, "Slots", "@dataclass(frozen=True)", "@dataclass(frozen=False)", _FROZEN),
    E(STEP, "StepTrace", "@dataclass(frozen=True)", "@dataclass(frozen=False)", _FROZEN),
    E(STEP, "update_step", "if not learning_rate_is_callable and hyper.relative_step:",
      "if not not learning_rate_is_callable and hyper.relative_step:", _RELATIVE_STEP),
    E(STEP, "update_step", "if not learning_rate_is_callable and hyper.relative_step:",
      "if not learning_rate_is_callable or hyper.relative_step:", _RELATIVE_STEP),
    E(STEP, "update_step", "if not learning_rate_is_callable and hyper.relative_step:",
      "if learning_rate_is_callable and hyper.relative_step:", _RELATIVE_STEP),
    E(STEP, "Hyperparameters", "beta_2_decay: float = -0.8", "beta_2_decay: float = 0.8", _UNUSED_DEFAULT),
    E(STEP, "update_step", "learning_rate_is_callable: bool = False,", "learning_rate_is_callable: bool = True,",
      _RELATIVE_STEP + " (the flag decides nothing else)"),
    # --- optimizer.py
    E(OPT, "Adafactor.__init__", 'if kwargs.pop("decay", None) is not None:',
      'if not kwargs.pop("decay", None) is not None:',
      "decides only whether the deprecation warning for `decay` is printed; `decay` is removed from kwargs either "
      "way and no vector passes it"),
    E(OPT, "Adafactor.learning_rate", "if isinstance(value, schedules.LearningRateSchedule) or callable(value):",
      "if not isinstance(value, schedules.LearningRateSchedule) or callable(value):", _SETTER),
    E(OPT, "Adafactor.apply", "if variables is None:", "if not variables is None:", _API_MISUSE),
    E(OPT, "Adafactor.apply", "if not self.built:", "if not not self.built:", _API_MISUSE, nth=0),
    E(OPT, "Adafactor.apply", "if not self.built:", "if not not self.built:",
      "build() returns at once on a built optimizer, and every vector's optimizer is built before its first "
      "apply, so calling it or not changes nothing", nth=1),
    E(OPT, "Adafactor.stateless_apply", "if not self.built:", "if not not self.built:", _UNUSED_API),
    E(OPT, "Adafactor._step", "if len(active) < len(grads):", "if not len(active) < len(grads):",
      "decides only whether Keras's 'Gradients do not exist' warning is issued; no state depends on it"),
    E(OPT, "Adafactor.finalize_variable_values", "if not self.use_ema:", "if not not self.use_ema:", _UNUSED_API),
    E(OPT, "Adafactor.finalize_variable_values",
      "variables = self._variables if variables is None else list(variables)",
      "variables = self._variables if not variables is None else list(variables)", _UNUSED_API),
    E(OPT, "Adafactor.finalize_variable_values", "if len(variables) != len(self.state.average):",
      "if not len(variables) != len(self.state.average):", _UNUSED_API),
    E(OPT, "Adafactor.get_config", "if isinstance(self._learning_rate, schedules.LearningRateSchedule):",
      "if not isinstance(self._learning_rate, schedules.LearningRateSchedule):", _CONFIG),
    E(OPT, "Adafactor.from_config", 'if isinstance(config.get("learning_rate"), dict):',
      'if not isinstance(config.get("learning_rate"), dict):', _CONFIG),
    E(OPT, "Adafactor.__init__", "not isinstance(ema_overwrite_frequency, int) or ema_overwrite_frequency < 1",
      "not isinstance(ema_overwrite_frequency, int) or ema_overwrite_frequency < 0",
      "for an int, < 1 and < 0 differ only at 0, which the truthiness test in front (`ema_overwrite_frequency "
      "and ...`) already lets through"),
    E(OPT, "Adafactor.iterations", "raw = 0 if self.state is None else self.state.iterations",
      "raw = 1 if self.state is None else self.state.iterations", _BEFORE_BUILD),
    E(OPT, "Adafactor.iterations", "raw = 0 if self.state is None else self.state.iterations",
      "raw = -1 if self.state is None else self.state.iterations", _BEFORE_BUILD),
    E(OPT, "Adafactor.learning_rate",
      "return self._learning_rate(0 if self.state is None else self.state.iterations)",
      "return self._learning_rate( 1 if self.state is None else self.state.iterations)", _BEFORE_BUILD),
    E(OPT, "Adafactor.learning_rate",
      "return self._learning_rate(0 if self.state is None else self.state.iterations)",
      "return self._learning_rate( -1 if self.state is None else self.state.iterations)", _BEFORE_BUILD),
    E(OPT, "Adafactor.apply", "if len(grads) == 0: # base_optimizer.py:475-478: a no-op, not even counted",
      "if len(grads) == -1: # base_optimizer.py:475-478: a no-op, not even counted",
      "unreachable: an apply with an empty gradient list; a vector has at least one variable and every step "
      "one gradient (or null) per variable"),
    E(OPT, "Adafactor._step", "record.is_update_step = (state.iterations + 1) % n == 0",
      "record.is_update_step = (state.iterations + 1) % n <= 0", _MODULO),
    E(OPT, "Adafactor._ema", "if (self.iterations + 1) % self.ema_overwrite_frequency == 0:",
      "if (self.iterations + 1) % self.ema_overwrite_frequency <= 0:", _MODULO),
    E(OPT, "Adafactor._clip_gradients", "if self.clipnorm and self.clipnorm > 0:",
      "if self.clipnorm and self.clipnorm >= 0:", _TRUTHY_ZERO),
    E(OPT, "Adafactor._clip_gradients", "if self.global_clipnorm and self.global_clipnorm > 0:",
      "if self.global_clipnorm and self.global_clipnorm >= 0:", _TRUTHY_ZERO),
    E(OPT, "Adafactor._clip_gradients", "if self.clipvalue and self.clipvalue > 0:",
      "if self.clipvalue and self.clipvalue >= 0:", _TRUTHY_ZERO),
    E(OPT, "Adafactor.__init__", 'if kwargs.pop("decay", None) is not None:', 'if kwargs.pop("decay", None) is None:',
      _DECAY_WARNING),
    E(OPT, "Adafactor.apply", "if variables is None:", "if variables is not None:", _API_MISUSE),
    E(OPT, "Adafactor._step", "missing = [self._names[i] for i, g in enumerate(grads) if g is None]",
      "missing = [self._names[i] for i, g in enumerate(grads) if g is not None]", _NONE_WARNING),
    E(OPT, "Adafactor.finalize_variable_values",
      "variables = self._variables if variables is None else list(variables)",
      "variables = self._variables if variables is not None else list(variables)", _UNUSED_API),
    *[E(OPT, "Adafactor._step", "if len(active) < len(grads):", f"if len(active) {op} len(grads):", _NONE_WARNING)
      for op in ("==", ">", ">=", "is", "is not", "<=", "!=")],
    *[E(OPT, "Adafactor.finalize_variable_values", "if len(variables) != len(self.state.average):",
        f"if len(variables) {op} len(self.state.average):", _UNUSED_API) for op in ("==", ">", ">=", "is", "<", "<=")],
    *[E(OPT, "Adafactor.build", "if len(names) != len(variables):", f"if len(names) {op} len(variables):",
        _CHECKS) for op in (">", "is not", "<")],
    *[E(OPT, "Adafactor._check_array", "if a.dtype != self.dtype:", f"if a.dtype {op} self.dtype:", _CHECKS)
      for op in (">", "is not", "<")],
    *[E(OPT, "Adafactor._check_grads", "if len(grads) != len(self._variables):",
        f"if len(grads) {op} len(self._variables):", _CHECKS) for op in (">", "is not", "<")],
    *[E(OPT, "Adafactor._check_grads", "if g.shape != x.shape:", f"if g.shape {op} x.shape:", _CHECKS)
      for op in (">", "is not", "<")],
    *[E(OPT, "Adafactor.apply", "if len(variables) != len(self._variables) or any(",
        f"if len(variables) {op} len(self._variables) or any(", _API_MISUSE) for op in (">", "is not", "<")],
    *[E(OPT, "Adafactor.set_state", "if len(state.slots) != len(self._variables):",
        f"if len(state.slots) {op} len(self._variables):", _CHECKS) for op in (">", "is not", "<")],
    *[E(OPT, "Adafactor.set_state", "if s.v.shape != x.shape:", f"if s.v.shape {op} x.shape:", _CHECKS)
      for op in (">", "is not", "<")],
    E(OPT, "Adafactor._ema", "momentum = dtype(self.iterations != 0) * dtype(self.ema_momentum)",
      "momentum = dtype(self.iterations > 0) * dtype(self.ema_momentum)",
      "iterations is never negative, so != 0 and > 0 agree"),
    E(STEP, "update_step", "g = g.astype(x.dtype, copy=False)  # Keras casts the gradient only here, after clipping",
      "g = g.astype(x.dtype, copy=True)  # Keras casts the gradient only here, after clipping",
      "whether the cast copies: g is only read afterwards, so a copy holds the same values"),
]

_OWN_BUILD = ("the runner loads its own zero state before step 1 (conformance/runner.py initial_state), so the "
              "implementation's build() is never graded; killed once trajectory mode starts from the "
              "implementation's freshly built state and grades it against the vector's initial state (issue 12, "
              "item 10, the lead's runner change)")

PENDING: list[Explanation] = [
    E(STEP, "init_slots", "r = np.zeros(x.shape[:-1], dtype=x.dtype)", "r = np.zeros(x.shape[:- 2], dtype=x.dtype)",
      _OWN_BUILD),
    E(STEP, "init_slots", "r = np.zeros(x.shape[:-1], dtype=x.dtype)", "r = np.zeros(x.shape[:- 0], dtype=x.dtype)",
      _OWN_BUILD),
    E(STEP, "init_slots", "c = np.zeros(x.shape[:-2] + x.shape[-1:], dtype=x.dtype)",
      "c = np.zeros(x.shape[:- 3] + x.shape[-1:], dtype=x.dtype)", _OWN_BUILD),
]
