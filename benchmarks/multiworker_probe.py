"""Probe (issue 14, part 1): does Keras 3 `Model.fit` run under `tf.distribute.MultiWorkerMirroredStrategy`?

Starts two worker processes on loopback (TF_CONFIG with 127.0.0.1 ports), each fitting a one-layer model for one
epoch, and prints each worker's outcome. Bounded: 120 s per worker.

    .venv/bin/python benchmarks/multiworker_probe.py

Measured 2026-12-06 (Keras 3.15.1, TensorFlow 2.21.0, 2 CPU cores): both workers fail inside `fit` with
"ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported type ... to a Tensor" -- the known
upstream gap (keras-team/keras#20585, tensorflow/tensorflow#72388: Keras 3's fit does not support
MultiWorkerMirroredStrategy). So tfsmooth's multi-worker training needs its own distributed loop (strategy.run
over `experimental_distribute_dataset`), not `fit`.
"""

import json
import os
import subprocess
import sys

WORKER = r"""
import os
import numpy as np, tensorflow as tf, keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
ds = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int64"))).batch(16)
try:
    model.fit(ds, epochs=1, verbose=0)
    print("OK", strategy.num_replicas_in_sync, float(model.layers[0].kernel.numpy().sum()))
except Exception as err:
    print("FAILED", type(err).__name__, str(err).splitlines()[0][:200])
"""


def main():
    cluster = {"worker": ["127.0.0.1:23451", "127.0.0.1:23452"]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True))
    for index, worker in enumerate(workers):
        try:
            out, _ = worker.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            worker.kill()
            out = "TIMEOUT"
        print(f"worker {index}: {out.strip().splitlines()[-1] if out.strip() else 'no output'}")


if __name__ == "__main__":
    main()
