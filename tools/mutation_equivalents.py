"""Why each surviving mutant of the spec survives (tools/mutation.py, reference/MUTATION.md).

A mutant is named by its file, the function or class it is in (``scope``), the source lines
it changes (``original``) and what they become (``mutated``), both with whitespace runs
collapsed, and ``nth`` when the same change occurs more than once in one scope. Line numbers
are not part of the name, so an entry survives edits elsewhere in the file; an entry that no
longer matches a survivor is listed as stale in the report.

EQUIVALENT: no input can tell the mutant from the spec; ``why`` says why in one line.
ACCEPTABLE_ONLY: the mutant differs from the spec only on inputs the corpus grades ``acceptable``
(non-finite gradients, which a port may guard), so the gate cannot fail on it by design.
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
           "from the vector's config and grades its steps (tests/reference/test_arguments.py checks the round trip)")
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
_ALIAS = ("whether the step's working list aliases the arrays it starts from: every entry is replaced by a new "
          "array (update_step and the EMA never write into their inputs) before apply() copies the results into "
          "the variables, so the values are the same")
_SAFE_SQRT = ("the inner where only feeds the square root that the outer where discards where l2sum <= 0 (or "
              "NaN), and l2sum is a sum of squares, never negative: wherever the outer where keeps the root, "
              "the inner one passed l2sum through unchanged")
_KEEPDIMS = ("keepdims only makes the norm a 1-element array instead of a scalar of the same value; every use "
             "broadcasts it, with the same results")
_HALF = ("float64: the float16/bfloat16 branch; for a float64 array the other branch sums (or averages) in "
         "float64 too (dtype=None) and astype(float64) is a no-op, so the bits agree. The half-precision lanes, "
         "where the branches differ, are not part of this float64 measurement")
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
      for op in (">", "<")],
    *[E(OPT, "Adafactor.apply", "if len(variables) != len(self._variables) or any(",
        f"if len(variables) {op} len(self._variables) or any(", _API_MISUSE) for op in (">", "is not", "<")],
    *[E(OPT, "Adafactor.set_state", "if state.v is None or len(state.v) != len(self._variables):",
        f"if state.v is None or len(state.v) {op} len(self._variables):", _CHECKS) for op in (">", "is not", "<")],
    *[E(OPT, "Adafactor.set_state", "if v.shape != x.shape:", f"if v.shape {op} x.shape:", _CHECKS)
      for op in (">", "<")],
    E(OPT, "Adafactor._ema", "momentum = dtype(self.iterations != 0) * dtype(self.ema_momentum)",
      "momentum = dtype(self.iterations > 0) * dtype(self.ema_momentum)",
      "iterations is never negative, so != 0 and > 0 agree"),
    E(OPT, "Adafactor._check_grads", "continue", "break", _CHECKS),
    E(OPT, "Adafactor.apply", "if len(variables) != len(self._variables) or any(",
      "if len(variables) != len(self._variables) and any(", _API_MISUSE),
    E(OPT, "Adafactor.learning_rate", "if isinstance(value, schedules.LearningRateSchedule) or callable(value):",
      "if isinstance(value, schedules.LearningRateSchedule) and callable(value):", _SETTER),
    E(OPT, "Adafactor.__init__", "relative_step=True,", "relative_step=False,",
      "the default of relative_step, a no-op in Keras (SPEC.md Q1: min(min(lr, s), s) == min(lr, s)), so no "
      "result shows it (tests/corpus/test_default_vectors.py lists it as invisible)"),
    E(OPT, "Adafactor.stateless_apply", "self.build([np.array(x, copy=True) for x in variables])",
      "self.build([np.array(x, copy=False) for x in variables])", _UNUSED_API),
    E(OPT, "Adafactor._step", "values = [np.array(x, copy=True) for x in variables]",
      "values = [np.array(x, copy=False) for x in variables]", _ALIAS),
    E(OPT, "Adafactor._ema", "values[i] = np.array(state.average[i], copy=True)",
      "values[i] = np.array(state.average[i], copy=False)", _ALIAS),
    E(OPT, "Adafactor.apply", "if not self.built:", "if self.built:", _API_MISUSE, nth=0),
    E(OPT, "Adafactor.apply", "if not self.built:", "if self.built:",
      "build() returns at once on a built optimizer, and every vector's optimizer is built before its first "
      "apply, so calling it or not changes nothing", nth=1),
    E(OPT, "Adafactor._update", "is_callable = not isinstance(self._learning_rate, float)",
      "is_callable = isinstance(self._learning_rate, float)", _RELATIVE_STEP + " (the flag decides nothing else)"),
    E(OPT, "Adafactor.stateless_apply", "if not self.built:", "if self.built:", _UNUSED_API),
    E(OPT, "Adafactor.finalize_variable_values", "if not self.use_ema:", "if self.use_ema:", _UNUSED_API),
    E(OPT, "Adafactor.build", "for i, x in enumerate(variables):", "for i, x in []:", _CHECKS),
    E(OPT, "Adafactor._check_grads", "for i, (g, x) in enumerate(zip(grads, self._variables)):",
      "for i, (g, x) in []:", _CHECKS),
    E(OPT, "Adafactor.apply", "for i, x in enumerate(self._variables):", "for i, x in []:", _CHECKS),
    E(OPT, "Adafactor.stateless_apply", "for i, x in enumerate(variables):", "for i, x in []:", _UNUSED_API),
    E(OPT, "Adafactor.set_state", "for i, (v, x) in enumerate(zip(state.v, self._variables)):",
      "for i, (v, x) in []:", _CHECKS),
    E(OPT, "Adafactor.finalize_variable_values", "for x, avg in zip(variables, self.state.average):",
      "for x, avg in []:", _UNUSED_API),
    # --- clipping.py
    *[E(CLIP, "clip_by_norm", "l2norm = np.where(l2sum > 0, np.sqrt(np.where(l2sum > 0, l2sum, 1)), l2sum)",
        "l2norm = np.where(l2sum > 0, np.sqrt(np.where(" + inner + ")), l2sum)", _SAFE_SQRT)
      for inner in ("l2sum > -1, l2sum, 1", "l2sum > 0, l2sum, 2", "l2sum > 0, l2sum, 0")],
    E(STEP, "Hyperparameters", "beta_2_decay: float = -0.8", "beta_2_decay: float = not 0.8", _UNUSED_DEFAULT),
    E(STEP, "Hyperparameters", "beta_2_decay: float = -0.8", "beta_2_decay: float = +0.8", _UNUSED_DEFAULT),
    E(CLIP, "clip_by_norm", "l2sum = reductions.total(np.square(g), keepdims=True)",
      "l2sum = reductions.total(np.square(g), keepdims=False)", _KEEPDIMS),
    E(CLIP, "clip_by_norm", "l2norm = np.where(l2sum > 0, np.sqrt(np.where(l2sum > 0, l2sum, 1)), l2sum)",
      "l2norm = np.where(l2sum > 0, np.sqrt(np.where(l2sum >= 0, l2sum, 1)), l2sum)", _SAFE_SQRT),
    E(CLIP, "clip_by_norm", "l2norm = np.where(l2sum > 0, np.sqrt(np.where(l2sum > 0, l2sum, 1)), l2sum)",
      "l2norm = np.where(l2sum > 0, np.sqrt(np.where(l2sum != 0, l2sum, 1)), l2sum)", _SAFE_SQRT),
    E(CLIP, "clip_by_global_norm", "scale = scale_for_finite + (n - n)", "scale = scale_for_finite - (n - n)",
      "n - n is +0 for a finite norm and NaN otherwise; subtracting either gives what adding does"),
    E(OPT, "Adafactor.apply", "if len(grads) == 0: # base_optimizer.py:475-478: a no-op, not even counted",
      "if len(grads) <= 0: # base_optimizer.py:475-478: a no-op, not even counted",
      "a length is never negative, so <= 0 and == 0 agree"),
    E(OPT, "Adafactor.apply", "if len(grads) == 0: # base_optimizer.py:475-478: a no-op, not even counted",
      "if len(grads) < 0: # base_optimizer.py:475-478: a no-op, not even counted",
      "unreachable: an apply with an empty gradient list; a vector has at least one variable and every step "
      "one gradient (or null) per variable"),
    E(OPT, "Adafactor.finalize_variable_values", "if len(variables) != len(self.state.average):",
      "if len(variables) is not len(self.state.average):", _UNUSED_API),
    *[E(RED, scope, "if acc is None:", mutated, _HALF) for scope in ("total", "mean", "norm")
      for mutated in ("if not acc is None:", "if acc is not None:")],
    E(RED, "norm", "def norm(x, axis=None, keepdims=False):", "def norm(x, axis=None, keepdims=True):", _KEEPDIMS),
    E(OPT, "Adafactor", "\n@classmethod", "", "the decorator of from_config: " + _CONFIG),
    E(STEP, "update_step", "g = g.astype(x.dtype, copy=False)  # Keras casts the gradient only here, after clipping",
      "g = g.astype(x.dtype, copy=True)  # Keras casts the gradient only here, after clipping",
      "whether the cast copies: g is only read afterwards, so a copy holds the same values"),
]

# The survivors the gate's own-build trajectory start and step-flag grading were to kill (init_slots
# with wrong r/c shapes) are killed since the runner grades the implementation's freshly built state.
PENDING: list[Explanation] = []

_NEGATIVE_GLOBAL = ("for a negative global_clipnorm c (arguments/global_clipnorm/-0.5) the mutant clips: the scale "
                    "c*min(1/n, 1/c) + (n - n) is c*(1/c), 1 or 1 - 2**-53 (SPEC.md Q11), for a finite norm, and "
                    "Adafactor's update does not change when every gradient is scaled alike (but through epsilon_1, "
                    "by far below rounding here); it differs only for a non-finite norm (an inf or NaN gradient, or "
                    "squares that overflow), which turns every gradient NaN: those vectors are graded acceptable")
ACCEPTABLE_ONLY: list[Explanation] = [
    E(CLIP, "clip_by_norm", "l2norm = np.where(l2sum > 0, np.sqrt(np.where(l2sum > 0, l2sum, 1)), l2sum)",
      "l2norm = np.where(l2sum != 0, np.sqrt(np.where(l2sum > 0, l2sum, 1)), l2sum)",
      "differs only where the sum of squares is NaN, i.e. for a NaN gradient (the norm becomes 1 instead of NaN, "
      "so the other elements stay finite): special_values/nan_gradient_clipnorm shows it, graded acceptable"),
    E(OPT, "Adafactor._clip_gradients", "if self.global_clipnorm and self.global_clipnorm > 0:",
      "if self.global_clipnorm and self.global_clipnorm > -1:", _NEGATIVE_GLOBAL),
    E(OPT, "Adafactor._clip_gradients", "if self.global_clipnorm and self.global_clipnorm > 0:",
      "if self.global_clipnorm and self.global_clipnorm != 0:", _NEGATIVE_GLOBAL),
]
