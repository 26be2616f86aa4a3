"""Top-1 agreement of the float32 and bfloat16 inference views of the shipped CIFAR-10 base model.

20 CIFAR-10 test images (the first 20) x 500 Gaussian draws at sigma = 0.25 (seeded, unclipped x + delta,
as in the counting path), labels from the float32 view vs the bfloat16 view of the old code
(`git show 4f6b8f6:tfsmooth/models/folding.py > /tmp/folding_old.py`, before issue 10) and of the new code.

    .venv/bin/python benchmarks/foundation/bf16_agreement.py [IMAGES] [OLD_FOLDING_PY]
"""
import importlib.util
import os
import sys

import numpy as np

import tfsmooth  # noqa: F401  (registers FusedBatchNormalization for loading)
from tfsmooth import data
from tfsmooth.models import folding as new

spec = importlib.util.spec_from_file_location("folding_old", sys.argv[2] if len(sys.argv) > 2 else "/tmp/folding_old.py")
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)

IMAGES = int(sys.argv[1]) if len(sys.argv) > 1 else 20
DRAWS, SIGMA = 500, 0.25
model = tfsmooth.load_model("benchmarks/results/full_gaussian_sigma0.25/base_model.keras")
ds = data.load_dataset("cifar10", "test", os.environ.get("TFSMOOTH_DATA_DIR", "../shared/data/cifar-10-batches-bin")).take(IMAGES)
images = np.stack([image.numpy() for image, _ in ds])
views = {"float32": new.InferenceView(model).model,
         "bf16_old": old.InferenceView(model, "bfloat16").model,
         "bf16_new": new.InferenceView(model, "bfloat16").model}
rng = np.random.default_rng(0)
labels = {name: [] for name in views}
max_logit_err = {name: 0.0 for name in views}
for image in images:
    noisy = (image[None] + SIGMA * rng.standard_normal((DRAWS, *image.shape))).astype(np.float32)
    logits32 = views["float32"](noisy, training=False).numpy()
    for name, view in views.items():
        logits = logits32 if name == "float32" else view(noisy, training=False).numpy()
        labels[name].append(logits.argmax(1))
        max_logit_err[name] = max(max_logit_err[name], float(np.abs(logits - logits32).max()))
labels = {name: np.concatenate(value) for name, value in labels.items()}
n = labels["float32"].size
for name in ("bf16_old", "bf16_new"):
    agree = labels[name] == labels["float32"]
    print(f"{name}: agreement with float32 {agree.mean():.5f} ({n - agree.sum()} of {n} noisy inputs differ); "
          f"max |logit - float32 logit| {max_logit_err[name]:.4f}")
