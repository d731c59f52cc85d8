"""Worker for tests/frameworks/test_tf_keras.py: how many float32 ulps tf-keras's schedules
(tf_keras/src/optimizers/schedules/learning_rate_schedule.py, float32 for a Python float
initial_learning_rate) land from the float64 reference value rounded once to float32, per
schedule vector of the Keras corpus. Prints JSON {vector id: worst ulps}."""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = next(p for p in Path(__file__).resolve().parents if (p / "vectors").is_dir())
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402

from conformance import vectorfile as vf  # noqa: E402
from reference import schedules  # noqa: E402


def main() -> dict:
    worst = {}
    corpus = vf.load_corpus(REPO / "vectors")
    for _, vector in vf.iter_vectors(corpus):
        config = vector.config.get("learning_rate")
        if vector.dialect != "keras" or not isinstance(config, dict) or "class_name" not in config:
            continue
        ours, theirs = schedules.deserialize(config), tf_keras.optimizers.schedules.deserialize(config)
        for step in range(4 * len(vector.raw["steps"]) + 8):
            value = np.asarray(theirs(step))
            assert value.dtype == np.float32, (vector.id, value.dtype)
            a, b = np.float32(ours(step)), np.float32(value)
            if np.isfinite(a) and np.isfinite(b):
                ulps = abs(int(a.view(np.int32)) - int(b.view(np.int32)))
                worst[vector.id] = max(worst.get(vector.id, 0), ulps)
    return worst


if __name__ == "__main__":
    print(json.dumps(main()))
