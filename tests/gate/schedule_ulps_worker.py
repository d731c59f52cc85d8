"""Worker for tests/gate/test_deviations.py (real Keras on the TensorFlow backend) and
tests/frameworks/test_tf_keras.py (``tf_keras`` as the argument: tf-keras's schedules,
tf_keras/src/optimizers/schedules/learning_rate_schedule.py): how many float32 ulps the
framework's schedules, which compute in float32, land from the float64 reference value rounded
once to float32, per schedule vector of the Keras corpus. Prints JSON {vector id: worst ulps}.
Run in its own process (the Keras backend is fixed at import)."""

import json
import os
import sys
from pathlib import Path

FRAMEWORK = sys.argv[1] if len(sys.argv) > 1 else "keras"
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = next(p for p in Path(__file__).resolve().parents if (p / "vectors").is_dir())
sys.path.insert(0, str(REPO))

import importlib  # noqa: E402

import numpy as np  # noqa: E402

from conformance import vectorfile as vf  # noqa: E402
from reference import schedules  # noqa: E402


def main() -> dict:
    framework = importlib.import_module({"keras": "keras", "tf_keras": "tf_keras"}[FRAMEWORK])
    worst = {}
    corpus = vf.load_corpus(REPO / "vectors")
    for _, vector in vf.iter_vectors(corpus):
        config = vector.config.get("learning_rate")
        if vector.dialect != "keras" or not isinstance(config, dict) or "class_name" not in config:
            continue
        ours, theirs = schedules.deserialize(config), framework.optimizers.schedules.deserialize(config)
        for step in range(4 * len(vector.raw["steps"]) + 8):  # the raw micro-step counter
            value = np.asarray(theirs(step))
            assert value.dtype == np.float32, (vector.id, value.dtype)
            a, b = np.float32(ours(step)), np.float32(value)
            if np.isfinite(a) and np.isfinite(b):
                ulps = abs(int(a.view(np.int32)) - int(b.view(np.int32)))
                worst[vector.id] = max(worst.get(vector.id, 0), ulps)
    return worst


if __name__ == "__main__":
    print(json.dumps(main()))
