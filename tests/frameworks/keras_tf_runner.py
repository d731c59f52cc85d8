"""Run keras.optimizers.Adafactor on the TensorFlow backend in float64 and print every
step's complete state as JSON. Used by test_keras_tf_crosscheck.py in a subprocess, so
that the Keras backend is chosen before Keras is imported and never leaks into other
tests.

Input (stdin): a JSON list of cases, as built by test_keras_tf_crosscheck.py. Output
(stdout, last line): a JSON object {case id: {"versions": ..., "steps": [...]}}.
Floats travel as repr() strings parsed back by float(), so they are exact.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

keras.config.set_floatx("float64")


class PowerOfTwoCounter:
    """A stateful zero-argument learning rate: 2**-(6 + calls % 3). Its values are exact
    in float32 (Keras's TF backend casts a Python float through float32), and since it
    changes on every call it shows how many times Keras calls it per step."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        value = 2.0 ** -(6 + self.calls % 3)
        self.calls += 1
        return value


def encode(a):
    if a is None:
        return None
    return [repr(float(v)) for v in np.asarray(a, dtype=np.float64).ravel()]


def run_case(case):
    config = dict(case["config"])
    lr = config.get("learning_rate")
    if isinstance(lr, dict) and "callable" in lr:
        config["learning_rate"] = PowerOfTwoCounter()
    elif isinstance(lr, dict):
        config["learning_rate"] = keras.optimizers.schedules.deserialize(lr)
    opt = keras.optimizers.Adafactor(**config)
    variables = [
        keras.Variable(np.array(init, dtype=np.float64).reshape(shape), dtype="float64", name=name)
        for init, shape, name in zip(case["init"], case["shapes"], case["names"])
    ]
    if case.get("exclude_names"):
        opt.exclude_from_weight_decay(var_names=case["exclude_names"])
    if case.get("exclude_index"):
        opt.exclude_from_weight_decay(var_list=[variables[i] for i in case["exclude_index"]])
    schedule = config.get("learning_rate")
    is_schedule = isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    steps = []
    for step_grads in case["grads"]:
        grads = [
            None if g is None else tf.constant(np.array([float(s) for s in g]).reshape(shape), tf.float64)
            for g, shape in zip(step_grads, case["shapes"])
        ]
        record = {}
        if is_schedule:
            # What update_step will receive: the schedule at the raw counter, in float32.
            value = schedule(opt._iterations)
            record["schedule_dtype"] = value.dtype.name
            record["learning_rate"] = repr(float(value.numpy()))
        opt.apply(grads, variables)
        record["iterations_raw"] = int(opt._iterations.numpy())
        record["variables"] = [encode(v.numpy()) for v in variables]
        n = len(variables)
        record["r"] = [encode(opt._r[i].numpy()) if len(variables[i].shape) >= 2 else None for i in range(n)]
        record["c"] = [encode(opt._c[i].numpy()) if len(variables[i].shape) >= 2 else None for i in range(n)]
        record["v"] = [encode(opt._v[i].numpy()) for i in range(n)]
        record["dtypes"] = sorted({v.dtype for v in variables} | {opt._v[i].dtype for i in range(n)})
        if opt.use_ema:
            record["average"] = [encode(a.numpy()) for a in opt._model_variables_moving_average]
        if opt.gradient_accumulation_steps:
            record["accumulator"] = [encode(a.numpy()) for a in opt._accumulated_gradients]
        steps.append(record)
    return {"steps": steps}


def main():
    cases = json.loads(sys.stdin.read())
    out = {
        "_versions": {"keras": keras.__version__, "tensorflow": tf.__version__, "numpy": np.__version__},
        "_backend": keras.backend.backend(),
        "_floatx": keras.config.floatx(),
    }
    for case in cases:
        out[case["id"]] = run_case(case)
    sys.stdout.write("\n" + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
