"""Worker for tests/gate/test_deviations.py: how many float32 ulps real Keras's schedules on the
TensorFlow backend (which compute in float32) land from the float64 reference value rounded
once to float32, per schedule vector of the corpus. Prints JSON {vector id: worst ulps}.
Run in its own process (the Keras backend is fixed at import)."""

import json
import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = next(p for p in Path(__file__).resolve().parents if (p / "vectors").is_dir())
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from conformance import vectorfile as vf  # noqa: E402
from reference import schedules  # noqa: E402


def main() -> dict:
    worst = {}
    corpus = vf.load_corpus(REPO / "vectors")
    for _, vector in vf.iter_vectors(corpus):
        config = vector.config.get("learning_rate")
        if vector.dialect != "keras" or not isinstance(config, dict) or "class_name" not in config:
            continue
        ours, theirs = schedules.deserialize(config), keras.optimizers.schedules.deserialize(config)
        for step in range(4 * len(vector.raw["steps"]) + 8):  # the raw micro-step counter
            a, b = np.float32(ours(step)), np.float32(np.asarray(theirs(step)))
            if np.isfinite(a) and np.isfinite(b):
                ulps = abs(int(a.view(np.int32)) - int(b.view(np.int32)))
                worst[vector.id] = max(worst.get(vector.id, 0), ulps)
    return worst


if __name__ == "__main__":
    print(json.dumps(main()))
