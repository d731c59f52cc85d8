"""Real ``tf_keras.optimizers.Adafactor`` (tf-keras 2.x: Keras 2 on TensorFlow), graded on
the Keras spec's vectors (dialect keras).

The adapter runs tf-keras as a user does: ``Adafactor(**config)`` with the Python floats
as given, a serialized schedule through ``tf_keras.optimizers.schedules.deserialize``, a
recorded callable passed as the callable it is, variables made with ``tf.Variable`` in the
lane dtype (under the vector's name scope, so ``dense/kernel`` is what a Dense layer's
kernel is called), ``exclude_from_weight_decay`` before ``build``, then one
``optimizer.apply_gradients`` per step. ``tf_keras.backend.floatx()`` is left at its
default, float32, as a user who builds float64 variables but never calls ``set_floatx``
leaves it: that is where the learning rate lives (below). Eager, CPU: tf-keras compiles
its update step with XLA only when TensorFlow sees a GPU (tf_keras/src/optimizers/
optimizer.py:58-67), so on this lane it is TensorFlow's eager CPU kernels.

What tf-keras 2.21.0 does differently from Keras 3 (the spec), file:line in
tf_keras/src/optimizers/ (each is named in conformance/expectations/tf-keras.txt and
conformance/TF_KERAS.md):

* constructor: no ``loss_scale_factor`` and no ``gradient_accumulation_steps``
  (adafactor.py:68-86; optimizer.py:137-149 raises TypeError for any other keyword), so
  vectors that set them are skipped (``unsupported``); at their defaults (None, 0) the
  adapter leaves them out.
* the learning rate: a float is stored in a ``tf.Variable`` of dtype ``floatx()``
  (optimizer.py:399-404), float32, and cast to the variable dtype each step
  (adafactor.py:158, optimizer.py:744); a schedule keeps its own dtype, float32 for a
  Python float ``initial_learning_rate`` (optimizer.py:388-396, 636-644); a zero-argument
  callable is not called per step: it is the variable's initial value, called once when
  the optimizer is constructed (optimizer.py:399-404, ``tf.Variable`` calls a callable
  ``initial_value``), and its value is used for every step.
* ``epsilon_2`` and ``weight_decay`` go through ``tf.cast`` of a Python float, which makes a
  float32 tensor first (adafactor.py:159, optimizer.py:745).
* EMA: the average is built as a copy of the variable (optimizer.py:427-429) and updated
  with ``ema_momentum`` from the first step on (optimizer.py:1402-1417; Keras 3 copies
  the variable on the first step); only the variables that have a gradient are averaged
  and overwritten (optimizer.py:1435-1450 gets ``var_list`` from the filtered
  ``grads_and_vars``, optimizer.py:718-725).
* validation: only ``clipnorm`` with ``global_clipnorm`` is refused, with "At most one of"
  (optimizer.py:97-102); unknown keywords are a TypeError (optimizer.py:145-149); the
  learning rate is not type-checked (optimizer.py:399-404).
* arithmetic: ``rsqrt`` where Keras 3 divides by ``sqrt`` (adafactor.py:170, 177, 207).

State moves in and out as Keras 3's: ``iterations`` (int64 variable), r and c of factored
variables (the rank < 2 placeholders are int ``tf.Variable(0)``, adafactor.py:123-127, not
reported), v, and the EMA average, every array in the dtype tf-keras holds it in (the
runner checks it against the lane). Two translations, both documented in
conformance/TF_KERAS.md:

* the EMA average at iteration 0: tf-keras's is the variable it was built from
  (optimizer.py:427-429), the spec's is a zeros placeholder that is never read (Keras 3
  copies on the first step). Loading a state at iteration 0 sets the average to the loaded
  variables (what tf-keras's build makes of them); reading at iteration 0 reports an average
  equal to its variable, bit for bit, as the spec's zeros (anything else is reported as
  held). From step 1 on the average is loaded and read verbatim, and the tf-keras-ema model
  grades what the seed does.
* ``learning_rate_calls`` counts the calls the steps make, as the spec counts them, from
  the count a load sets: tf-keras's one call at construction is made before any step
  (Keras 3 makes none there), and its steps make none.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np

from conformance import replay
from conformance.adapters.base import Adapter, AdapterError, Session, numpy_dtype
from conformance.adapters.registry import registered
from conformance.vector import as_vector
from reference.state import Kind, State

#: Keras 3 constructor arguments tf-keras's Adafactor does not take (adafactor.py:68-86).
UNSUPPORTED = ("loss_scale_factor", "gradient_accumulation_steps")


def _modules():
    """(tensorflow, tf_keras), imported on first use, TensorFlow's C++ log quietened."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError as exc:  # the registry's requires= normally says so first
        raise AdapterError(f"tf-keras: cannot import tf_keras/tensorflow: {exc} "
                           f"(pip install -e '.[tf-keras]')") from exc
    # tf-keras logs one warning per step for a None gradient (utils.py:81-87).
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return tf, tf_keras


class TfKerasSession(Session):
    """One ``tf_keras.optimizers.Adafactor`` with its variables, for one vector and dtype."""

    def __init__(self, adapter: "TfKerasAdapter", vector, dtype: str):
        vector = as_vector(vector)
        tf, tf_keras = _modules()
        self.tf = tf
        self.dtype_name = dtype
        self.dtype = numpy_dtype(dtype)
        self.callable = None
        config = adapter.constructor_arguments(vector)
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            if lr.get("callable") == "recorded":
                self.callable = replay.RecordedCallable(vector.learning_rate_calls, vector.id)
                config["learning_rate"] = self.callable
            else:
                config["learning_rate"] = tf_keras.optimizers.schedules.deserialize(lr)
        with tf.device("/CPU:0"):
            # Invalid configurations raise tf-keras's own error here, uncaught.
            self.opt = adapter.optimizer_class(tf_keras)(**config)
            self.variables = []
            for full_name, initial in zip(vector.names, vector.initial):
                scope, _, name = full_name.rpartition("/")
                value = initial.astype(self.dtype)
                if scope:
                    with tf.name_scope(scope):
                        variable = tf.Variable(value, dtype=dtype, name=name)
                else:
                    variable = tf.Variable(value, dtype=dtype, name=name)
                self.variables.append(variable)
            exclude = vector.exclude_from_weight_decay
            if exclude:
                self.opt.exclude_from_weight_decay(
                    var_list=[self.variables[i] for i in exclude.get("var_index", [])] or None,
                    var_names=exclude.get("var_names") or None)
            self.opt.build(self.variables)
        self.factored = [len(v.shape) >= 2 for v in self.variables]
        # learning_rate_calls as the spec counts them: the calls the steps make, from the
        # count a load sets. tf-keras's one call, at construction (optimizer.py:399-404), is
        # made before any step: not counted (Keras 3 makes none there).
        self.step_calls = 0

    def _slots(self) -> dict:
        opt = self.opt
        out = {Kind.R: [r if f else None for r, f in zip(opt._r, self.factored)],
               Kind.C: [c if f else None for c, f in zip(opt._c, self.factored)],
               Kind.V: list(opt._v)}
        if opt.use_ema:
            out[Kind.AVERAGE] = list(opt._model_variables_moving_average)
        return out

    def load(self, state: State) -> None:
        with self.tf.device("/CPU:0"):
            for x, value in zip(self.variables, state.variables):
                x.assign(np.asarray(value, dtype=self.dtype))
            self.opt.iterations.assign(int(state.iterations))
            for kind, variables in self._slots().items():
                values = state.get(kind)
                if kind is Kind.AVERAGE and int(state.iterations) == 0:
                    values = state.variables  # tf-keras's average at iteration 0 (optimizer.py:427-429)
                if values is None:
                    continue
                for variable, value in zip(variables, values):
                    if variable is not None:
                        variable.assign(np.asarray(value, dtype=self.dtype))
        if self.callable is not None:
            self.callable.position = self.step_calls = state.learning_rate_calls

    def step(self, grads: list) -> None:
        tf = self.tf
        with tf.device("/CPU:0"):
            pairs = [(None if g is None else tf.constant(np.asarray(g, dtype=self.dtype), dtype=self.dtype_name), x)
                     for g, x in zip(grads, self.variables)]
            before = None if self.callable is None else self.callable.position
            self.opt.apply_gradients(pairs)
            if self.callable is not None:
                self.step_calls += self.callable.position - before

    def read(self) -> State:
        values = {Kind.VARIABLES: [np.array(x.numpy(), copy=True) for x in self.variables]}
        for kind, variables in self._slots().items():
            values[kind] = [None if v is None else np.array(v.numpy(), copy=True) for v in variables]
        iterations = int(self.opt.iterations.numpy())
        if iterations == 0 and Kind.AVERAGE in values:
            # The inverse of load's translation: at iteration 0 tf-keras's average is the
            # variable it was built from (optimizer.py:427-429), which the spec writes as its
            # zeros placeholder. Only an average equal to its variable bit for bit is
            # translated; anything else is reported as held (a broken build stays visible).
            values[Kind.AVERAGE] = [np.zeros_like(a) if np.array_equal(a, x) else a
                                    for a, x in zip(values[Kind.AVERAGE], values[Kind.VARIABLES])]
        return State(iterations, values, self.step_calls)


class TfKerasAdapter(Adapter):
    """``tf_keras.optimizers.Adafactor`` on TensorFlow's CPU kernels, float64 and float32."""

    def __init__(self):
        super().__init__(name="tf-keras", dtypes=("float64", "float32"), devices=("cpu",),
                         unsupported_arguments=UNSUPPORTED, **registered("tf-keras"))

    def optimizer_class(self, tf_keras):
        """The optimizer class to construct (a test subclass swaps in a broken one)."""
        return tf_keras.optimizers.Adafactor

    def constructor_arguments(self, vector) -> dict:
        """The vector's configuration less the arguments tf-keras lacks, where they are at
        Keras 3's defaults (None, or 0 for gradient_accumulation_steps: both mean off);
        ``unsupported`` skips the vectors that set them."""
        config = dict(as_vector(vector).config)
        for name in UNSUPPORTED:
            if name in config and config[name] in (None, 0):
                del config[name]
        return config

    def environment(self, device: str) -> dict:
        tf, tf_keras = _modules()
        return {"tf_keras": tf_keras.__version__, "tensorflow": tf.__version__, "numpy": np.__version__,
                "floatx": f"{tf_keras.backend.floatx()} (tf-keras's default, left as is: the learning "
                          f"rate variable's dtype)",
                "oneDNN": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default (on)"),
                "device": device, "apply": "eager optimizer.apply_gradients, one per step (no XLA on CPU)"}

    def unsupported(self, vector, dtype: str, device: str) -> Optional[str]:
        reason = super().unsupported(vector, dtype, device)
        if reason is not None and any(name in reason for name in UNSUPPORTED):
            reason += " (tf_keras/src/optimizers/adafactor.py:68-86 has no such argument)"
        return reason

    def create(self, vector, dtype: str, device: str) -> Session:
        if device != "cpu":
            raise AdapterError(f"{self.name}: runs on cpu only")
        return TfKerasSession(self, vector, dtype)


__all__ = ["TfKerasAdapter", "TfKerasSession", "UNSUPPORTED"]
