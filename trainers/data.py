"""tf.data pipelines of (uint8 images [B, H, W, C], int32 labels [B]).

Datasets come from tfds by name, or from the embedded default, ``digits``:
scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; no
network needed). Its 0..16 grey levels are rescaled to 0..255 as
``round(v * 255 / 16)``; the split is fixed: the first 1437 images (80%, in
scikit-learn's order) train, the last 360 test.
"""

import dataclasses

import numpy as np
import tensorflow as tf

DEFAULT_DATASET = "digits"
DIGITS_TRAIN_SIZE = 1437


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the trainer must know about a dataset before reading it."""

    image_shape: tuple
    num_classes: int = None  # None: no labels (class conditioning impossible)
    train_split: str = "train"
    test_split: str = "test"


DATASETS = {
    "digits": DatasetSpec((8, 8, 1), 10),
    "mnist": DatasetSpec((28, 28, 1), 10),
    "fashion_mnist": DatasetSpec((28, 28, 1), 10),
    "cifar10": DatasetSpec((32, 32, 3), 10),
    "downsampled_imagenet/32x32": DatasetSpec((32, 32, 3), None, test_split="validation"),
    "downsampled_imagenet/64x64": DatasetSpec((64, 64, 3), None, test_split="validation"),
    # CelebA: a central 140x140 crop of the 218x178 faces, resized to 64x64 (area).
    "celeb_a": DatasetSpec((64, 64, 3), None),
}


class DatasetUnavailableError(RuntimeError):
    """The tfds data set is not in data_dir (and this machine cannot download it)."""


def _digits(split):
    from sklearn.datasets import load_digits  # ships its data: no network

    digits = load_digits()
    images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    part = slice(0, DIGITS_TRAIN_SIZE) if split == "train" else slice(DIGITS_TRAIN_SIZE, None)
    return tf.data.Dataset.from_tensor_slices((images[part], labels[part]))


def _fit_image(image, shape):
    """Central square crop and area resize to ``shape`` (a no-op for images already that size)."""
    height, width, _ = shape
    if image.shape[:2] == (height, width):
        return image
    if image.shape[:2] == (218, 178):  # CelebA: crop the face region first
        image = tf.image.crop_to_bounding_box(image, 39, 19, 140, 140)
    image = tf.image.resize(image, (height, width), method="area")
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _tfds(name, split, data_dir):
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load(name, split=split, data_dir=data_dir, download=False)
    except AssertionError as error:  # tfds's "could not find data in ..." (download=False fails fast)
        raise DatasetUnavailableError(
            f"--dataset={name}: not found in --data_dir={data_dir or tfds.core.constants.DATA_DIR}. "
            f"On a machine with network access run `python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{name}', data_dir='DIR').download_and_prepare()\"` and pass --data_dir=DIR."
        ) from error
    spec = DATASETS[name]

    def to_pair(example):
        image = _fit_image(example["image"], spec.image_shape)
        label = tf.cast(example["label"], tf.int32) if "label" in example else tf.constant(-1, tf.int32)
        return tf.ensure_shape(image, spec.image_shape), label

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)


def load_split(name, split, data_dir=None):
    """Unbatched (image uint8 [H, W, C], label int32) pairs; label -1 where there are none."""
    if name not in DATASETS:
        raise ValueError(f"--dataset: expected one of {sorted(DATASETS)}, got {name!r}.")
    if name == "digits":
        return _digits(split)
    spec = DATASETS[name]
    return _tfds(name, spec.train_split if split == "train" else spec.test_split, data_dir)


def train_pipeline(name, global_batch_size, seed, data_dir=None, shuffle_buffer=10_000):
    """Shuffled (deterministically, by ``seed``), repeated, batched, prefetched training data."""
    options = tf.data.Options()
    options.deterministic = True
    # DATA sharding: every worker reads the data and keeps its share of each batch,
    # which works for any number of files (FILE sharding needs >= one file per worker).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (
        load_split(name, "train", data_dir)
        .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(global_batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(options)
    )


def eval_pipeline(name, batch_size, data_dir=None, split="test", max_examples=None):
    """The evaluation split in a fixed order, batched (last batch may be smaller)."""
    dataset = load_split(name, split, data_dir)
    if max_examples:
        dataset = dataset.take(max_examples)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
