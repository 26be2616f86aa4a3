"""tfsmooth-only certification throughput (noisy samples/s of sample_counts), for an A/B of two trees.

ResNet-20 (fresh weights), one image, 10,000 draws per timed run at batch 400, after a traced warm-up;
prints the rates of ROUNDS runs as JSON. Run from each tree (the old one with PYTHONPATH set):

    .venv/bin/python benchmarks/foundation/counting_ab.py 3
    (cd /tmp/old && PYTHONPATH=/tmp/old /work/main/.venv/bin/python /work/main/benchmarks/foundation/counting_ab.py 3)
"""
import sys, time, json
import numpy as np
from tfsmooth import models, smoothing
import keras
keras.utils.set_random_seed(0)
smoothed = smoothing.SmoothedClassifier(models.cifar_resnet(20), 10, 0.25)
image = np.random.default_rng(0).uniform(size=(1, 32, 32, 3)).astype(np.float32)
num, batch = 10_000, 400
smoothed.sample_counts(image, 800, batch_size=batch, seed=0)  # trace
rates = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter(); smoothed.sample_counts(image, num, batch_size=batch, seed=0); rates.append(num / (time.perf_counter() - t))
print(json.dumps(rates))
