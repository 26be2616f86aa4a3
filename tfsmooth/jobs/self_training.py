"""Self-training (Salman et al. 2019, Sec. 4.2, after Carmon et al. 2019): a teacher's pseudo-labels.

`pseudo_label` writes the teacher's top-1 label of every image of a split to an `.npz`;
`tfsmooth.jobs.train` reads it back with `load_pseudo_labels` and trains on those images
(`pseudo_labeled_data`), checking that the labels belong to the same images.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from tfsmooth import checks, data, files
from tfsmooth.models.io import load_base_model


def parse_source(source: str):
    """"DATASET[:SPLIT]" -> (dataset, split) for self-training images; split defaults to "train".

    DATASET is any `tfsmooth.data.check_dataset_name` form; as "tfds:NAME" holds a colon itself, only
    a last ":train" / ":test" is taken as the split ("tfds:fashion_mnist:train" -> ("tfds:fashion_mnist",
    "train"), "tfds:fashion_mnist" -> the same).

    Raises:
        ValueError: an unknown data set, or a split other than "train" (the test split is what
            certify and attack evaluate, so its images must not be trained on, even unlabeled).
    """
    source = str(source)
    head, _, tail = source.rpartition(":")
    if head and tail in data.SPLITS:
        name, split = head, tail
    else:
        try:
            name, split = data.check_dataset_name(source), "train"
        except ValueError:
            name, _, split = source.partition(":")
    try:
        data.check_dataset_name(name)
    except ValueError as err:
        raise ValueError(f"unlabeled must be DATASET[:SPLIT]; got {source!r}: {err}") from None
    if split != "train":
        raise ValueError(f"unlabeled must name a train split (test images are what certify and attack evaluate); "
                         f"got {source!r}")
    return name, split


@dataclasses.dataclass(frozen=True)
class PseudoLabelConfig:
    """Configuration of `pseudo_label` (self-training; Salman et al. 2019, Sec. 4.2, after Carmon et al.).

    Attributes:
        teacher: path of the teacher base classifier (`.keras`).
        dataset, split, data_dir: the images to label (`tfsmooth.data.load_dataset`).
        batch: images per forward pass.
    """

    teacher: str
    dataset: str = "cifar10"
    split: str = "train"
    batch: int = 1000
    data_dir: Optional[str] = None

    def __post_init__(self):
        checks.check_count(self.batch, "batch")
        data.check_dataset_name(self.dataset)
        if self.split not in data.SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")


def pseudo_label(config: PseudoLabelConfig, out: str) -> int:
    """Writes the teacher's top-1 label of every image of a split to an `.npz` file.

    The file holds `label` (int64 [N], in data set order), `dataset`, `split`, `data_source` (the files
    the images came from, `tfsmooth.data.data_source`) and `teacher` (str); read it with
    `load_pseudo_labels` (no pickle). The teacher labels clean images (no noise).

    Returns:
        N, the number of labeled images.

    Raises:
        ValueError / FileNotFoundError: `out` not ending in ".npz", a missing or unloadable teacher,
            a bad data set; then `out` is not written.
    """
    if not str(out).endswith(".npz"):
        raise ValueError(f"out must be a .npz file, got {out!r}")
    teacher = load_base_model(config.teacher)
    images = data.load_dataset(config.dataset, config.split, config.data_dir).map(lambda x, _: x)
    logits = teacher.predict(images.batch(config.batch), verbose=0)
    labels = np.argmax(logits, axis=1).astype(np.int64)
    files.atomic_write(os.fspath(out), lambda p: np.savez(p, label=labels, dataset=np.array(config.dataset), split=np.array(config.split),
                               data_source=np.array(data.data_source(config.dataset, config.data_dir)),
                               teacher=np.array(os.path.abspath(config.teacher))))
    return len(labels)


PSEUDO_LABEL_KEYS = ("label", "dataset", "split", "data_source")
"""The arrays `load_pseudo_labels` reads from a pseudo-labels `.npz` (`pseudo_label` also stores `teacher`)."""


def load_pseudo_labels(path: str, source: str, num_classes: int, count: int, data_source: str) -> np.ndarray:
    """Reads pseudo-labels written by `pseudo_label` and checks they belong to `source`.

    Args:
        path: the `.npz` file.
        source: "DATASET:SPLIT" the labels must have been computed for.
        num_classes: labels must lie in [0, num_classes).
        count: number of images of the source; one label each.
        data_source: `tfsmooth.data.data_source` of the images the labels are attached to; label i
            belongs to image i only if the labels were computed on the same files.

    Returns:
        int64 [count].

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: a file that is not such an `.npz` (e.g. a bare `.npy` array, or one lacking a key
            of `PSEUDO_LABEL_KEYS`), or labels of another source, data source, count or range.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pseudo-labels file not found: {path}")
    found = files.read_npz(path, PSEUDO_LABEL_KEYS, "a pseudo-labels .npz written by `tfsmooth pseudo-label` (a zip "
                           "of label int64 [N] and str dataset, split, data_source)", "tfsmooth pseudo-label")
    labels, origin = found["label"], f"{found['dataset']}:{found['split']}"
    if origin != source:
        raise ValueError(f"{path} labels {origin}, but the unlabeled source is {source}")
    if str(found["data_source"]) != data_source:
        raise ValueError(f"{path} labels the {source} images of {str(found['data_source'])!r}, but they are read "
                         f"from {data_source!r} now (--data-dir / ${data.DATA_DIR_ENV_VAR}); label i must belong to "
                         f"image i of the same files: rerun `tfsmooth pseudo-label` on them")
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path} must hold {count} integer labels for {source}, got {labels.dtype} {labels.shape}")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def pseudo_labeled_data(unlabeled: str, pseudo_labels: str, data_dir, num_classes: int):
    """The unlabeled images (their true labels dropped) zipped with the teacher's labels.

    Args:
        unlabeled: "DATASET[:SPLIT]" (`parse_source`).
        pseudo_labels: the `.npz` of `pseudo_label` for those images.
        data_dir: the run's data directory, passed on where it applies (`tfsmooth.data.takes_data_dir`).
        num_classes: K, the labels' range.

    Returns:
        A `tf.data.Dataset` of (image float32 [H, W, C] in [0, 1], label int64).

    Raises:
        ValueError / FileNotFoundError: as `parse_source` and `load_pseudo_labels`.
    """
    name, split = parse_source(unlabeled)
    data_dir = data_dir if data.takes_data_dir(name) else None
    images = data.load_dataset(name, split, data_dir).map(lambda x, _: x)
    labels = load_pseudo_labels(pseudo_labels, unlabeled, num_classes, int(images.cardinality()),
                                data.data_source(name, data_dir))
    return tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(labels))
