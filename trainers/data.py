"""Image data sets as tf.data pipelines of (uint8 images [B, H, W, C], int32 labels [B]).

``open_dataset(name)`` takes:

* ``digits``: the embedded default, scikit-learn's bundled 8x8 handwritten
  digits (1797 images, 10 classes; no network). Its 0..16 grey levels are
  rescaled to 0..255 as ``round(v * 255 / 16)``; the first 1437 images (80%, in
  scikit-learn's order) train, the last 360 test.
* any tfds image data set by name (``mnist``, ``cifar10``, ``beans``, ...),
  read from ``data_dir`` (this machine cannot download). A few names have
  fixed recipes (TFDS_SPECS: CelebA's face crop, ImageNet's validation split);
  others use their ``image`` feature (fixed size) and ``label`` if present.
* ``npz:PATH``: a NumPy .npz with ``images`` [N, H, W, C] or [N, H, W] (grey),
  integers in 0..255, optional ``labels`` [N] in [0, num_classes), optional
  ``test_images`` / ``test_labels``.
* ``folder:PATH``: image files (PNG, JPEG, BMP, GIF) of one size, one
  subfolder per class (or none: no labels), with ``train/`` and ``test/``
  subfolders if present.

Without a test part, the last ceil(N / 10) images (in array order, or sorted
file order) are the test split. Labels of npz and folder data give
num_classes = max label + 1 unless ``num_classes`` is given. Images without
labels get label -1. npz and folder data are read into memory once.
"""

import dataclasses
import math
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

DEFAULT_DATASET = "digits"
DIGITS_TRAIN_SIZE = 1437
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """A tfds data set's recipe: the shape images are brought to, its labels and its splits."""

    image_shape: tuple
    num_classes: Optional[int] = None  # None: no labels (class conditioning impossible)
    train_split: str = "train"
    test_split: str = "test"


TFDS_SPECS = {
    "mnist": TfdsSpec((28, 28, 1), 10),
    "fashion_mnist": TfdsSpec((28, 28, 1), 10),
    "cifar10": TfdsSpec((32, 32, 3), 10),
    "downsampled_imagenet/32x32": TfdsSpec((32, 32, 3), None, test_split="validation"),
    "downsampled_imagenet/64x64": TfdsSpec((64, 64, 3), None, test_split="validation"),
    # CelebA: a central 140x140 crop of the 218x178 faces, resized to 64x64 (area).
    "celeb_a": TfdsSpec((64, 64, 3), None),
}


class DatasetUnavailableError(RuntimeError):
    """The tfds data set is not in data_dir (and this machine cannot download it)."""


@dataclasses.dataclass(frozen=True)
class ImageData:
    """An opened data set.

    Attributes:
      name: the ``dataset`` string it was opened from.
      image_shape: (H, W, C).
      num_classes: int, or None when the images have no labels.
      load: ``load(split)`` for split "train" or "test" -> a tf.data.Dataset of
        unbatched (uint8 image [H, W, C], int32 label) pairs; label -1 without labels.
    """

    name: str
    image_shape: tuple
    num_classes: Optional[int]
    load: Callable[[str], tf.data.Dataset]

    def split(self, split):
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}.")
        return self.load(split)


def check_dataset_name(name):
    """Raises ValueError (naming ``dataset``) unless ``name`` is a form open_dataset takes; reads no data."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset: expected a non-empty string, got {name!r}.")
    if name == "digits" or name in TFDS_SPECS:
        return
    for prefix in ("npz:", "folder:"):
        if name.startswith(prefix):
            if not name[len(prefix) :]:
                raise ValueError(f"dataset: expected a path after {prefix!r}, got {name!r}.")
            return
    tfds = _import_tfds()
    try:
        tfds.builder_cls(name.split(":")[0].split("/")[0])
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"dataset: {name!r} is neither 'digits', 'npz:PATH', 'folder:PATH' nor a tfds data set name."
        ) from None


def absolute_dataset(name):
    """``name`` with the path of an ``npz:`` or ``folder:`` data set made absolute (URLs are kept)."""
    for prefix in ("npz:", "folder:"):
        if name.startswith(prefix) and "://" not in name:
            return prefix + os.path.abspath(os.path.expanduser(name[len(prefix) :]))
    return name


def open_dataset(name, data_dir=None, num_classes=None, num_categories=None):
    """Opens the data set ``name`` (see the module docstring).

    Args:
      name: ``digits``, a tfds name, ``npz:PATH`` or ``folder:PATH``.
      data_dir: tfds data directory (None: tfds's default).
      num_classes: npz / folder data: the number of classes (None: max label + 1).
      num_categories: npz data: its 'images' are integer codes in [0, num_categories) (int32 pairs).

    Returns:
      An ImageData.

    Raises:
      ValueError: a bad name or bad files; the message starts with ``dataset``
        (or ``num_classes``) and names the path and what was expected.

    A tfds data set's files are first read by ``split()``, which raises
    DatasetUnavailableError when they are not in ``data_dir``.
    """
    check_dataset_name(name)
    if num_classes is not None and not name.startswith(("npz:", "folder:")):
        raise ValueError(f"num_classes: only used with npz:PATH or folder:PATH data sets, got dataset={name}.")
    if num_categories is not None and not name.startswith("npz:"):
        raise ValueError(f"num_categories: only used with npz:PATH data of integer codes, got dataset={name}.")
    if name == "digits":
        digits = _require("sklearn.datasets", "scikit-learn").load_digits()  # ships its data: no network
        images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)[..., None]
        labels = digits.target.astype(np.int32)
        train, test = slice(0, DIGITS_TRAIN_SIZE), slice(DIGITS_TRAIN_SIZE, None)
        return in_memory(name, (images[train], labels[train]), (images[test], labels[test]), 10)
    if name.startswith("npz:"):
        return _npz(name, num_classes, num_categories)
    if name.startswith("folder:"):
        return _folder(name, num_classes)
    return _tfds_data(name, data_dir)


def load_split(name, split, data_dir=None):
    """Unbatched (image uint8 [H, W, C], label int32) pairs of ``split`` of ``name``; label -1 where there are none."""
    return open_dataset(name, data_dir).split(split)


def train_pipeline(data, global_batch_size, seed, shuffle_buffer=10_000):
    """Shuffled (deterministically, by ``seed``), repeated, batched, prefetched training data of an ImageData."""
    options = _pipeline_options()
    options.deterministic = True
    # DATA sharding: every worker reads the data and keeps its share of each batch,
    # which works for any number of files (FILE sharding needs >= one file per worker).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (
        data.split("train")
        .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(global_batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(options)
    )


def eval_pipeline(data, batch_size, split="test", max_examples=None):
    """``split`` of an ImageData in a fixed order, batched (the last batch may be smaller)."""
    dataset = data.split(split)
    if max_examples:
        dataset = dataset.take(max_examples)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_pipeline_options())


def _pipeline_options():
    """tf.data options of both pipelines: no autotuning model.

    With it, deleting a run's training iterator waited 0.5-2 s on a busy CPU (up to a
    fifth of the trainer tests' wall time on 2 cores). These pipelines have nothing for
    it to tune but the prefetch depth, which TensorFlow's legacy prefetch autotuner still
    grows; tfds's parallel map keeps TensorFlow's default parallelism.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


# -- in-memory data: digits, npz, folders ----------------------------------------------------------


def in_memory(name, train, test, num_classes):
    """An ImageData over numpy (images uint8 [N, H, W, C], labels int32 [N]) pairs."""
    parts = {"train": train, "test": test}
    return ImageData(
        name, train[0].shape[1:], num_classes, lambda split: tf.data.Dataset.from_tensor_slices(parts[split])
    )


def check_images(images, source):
    """Integer images [N, H, W, C] or [N, H, W] in 0..255 -> uint8 [N, H, W, C]; ValueError naming ``source``."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(
            f"{source}: expected integer images with values 0..255 (e.g. uint8), got dtype {images.dtype}."
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"{source}: expected images [N, H, W, C] or [N, H, W], got shape {images.shape}.")
    if images.shape[0] == 0:
        raise ValueError(f"{source}: no images (shape {images.shape}).")
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        raise ValueError(f"{source}: expected values in 0..255, got values from {low} to {high}.")
    return images.astype(np.uint8)


def check_codes(codes, source, num_categories):
    """Integer codes [N, h, w(, C)] in [0, num_categories) -> int32 [N, h, w, C]; ValueError naming ``source``."""
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{source}: expected integer codes for num_categories={num_categories}, got {codes.dtype}.")
    if codes.ndim == 3:
        codes = codes[..., None]
    if codes.ndim != 4 or codes.shape[0] == 0:
        raise ValueError(f"{source}: expected codes [N, h, w, C] or [N, h, w] with N >= 1, got shape {codes.shape}.")
    low, high = codes.min(), codes.max()
    if low < 0 or high >= num_categories:
        raise ValueError(
            f"{source}: expected codes in [0, num_categories={num_categories}), got values from {low} to {high}."
        )
    return codes.astype(np.int32)


def _check_labels(labels, count, source):
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{source}: expected integer class labels, got dtype {labels.dtype}.")
    if labels.shape != (count,):
        raise ValueError(f"{source}: expected one label per image, shape ({count},), got shape {labels.shape}.")
    if labels.min() < 0:
        raise ValueError(f"{source}: expected labels >= 0, got {labels.min()}.")
    return labels.astype(np.int32)


def _split_off_test(images, labels):
    """The last ceil(N / 10) images are the test split."""
    if len(images) < 2:
        raise ValueError("need at least 2 images to split off a test part, got 1")
    cut = len(images) - math.ceil(len(images) / 10)
    if labels is None:
        return (images[:cut], None), (images[cut:], None)
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def _arrays_data(name, source, train, test, num_classes):
    """Checks label presence and range across both parts, then an ImageData (labels -1 when absent)."""
    (train_images, train_labels), (test_images, test_labels) = train, test
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            f"dataset={name}: train and test images differ in size: "
            f"{train_images.shape[1:]} vs {test_images.shape[1:]}."
        )
    if (train_labels is None) != (test_labels is None):
        raise ValueError(f"dataset={name}: {source} gives labels for only one of the train and test images.")
    if train_labels is None:
        if num_classes is not None:
            raise ValueError(f"num_classes: given, but {source} has no labels.")
        train_labels, test_labels = (np.full(len(x), -1, np.int32) for x in (train_images, test_images))
    else:
        largest = int(max(train_labels.max(), test_labels.max()))
        if num_classes is not None and largest >= num_classes:
            raise ValueError(f"dataset={name}: {source} has label {largest}, expected labels in [0, {num_classes}).")
        num_classes = num_classes or largest + 1
    return in_memory(name, (train_images, train_labels), (test_images, test_labels), num_classes)


def _npz(name, num_classes, num_categories=None):
    path = name[len("npz:") :]
    try:
        with tf.io.gfile.GFile(path, "rb") as handle, np.load(handle) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise ValueError(f"dataset={name}: cannot read {path} as a NumPy .npz file: {error}") from error
    if "images" not in arrays:
        raise ValueError(f"dataset={name}: {path} has no 'images' array (found {sorted(arrays)}).")
    parts = []
    for prefix in ("", "test_"):
        if prefix + "images" not in arrays:
            if prefix + "labels" in arrays:
                raise ValueError(f"dataset={name}: {path} has '{prefix}labels' but no '{prefix}images'.")
            continue
        source = f"dataset={name}: {path} '{prefix}images'"
        if num_categories is None:
            images = check_images(arrays[prefix + "images"], source)
        else:
            images = check_codes(arrays[prefix + "images"], source, num_categories)
        labels = arrays.get(prefix + "labels")
        if labels is not None:
            labels = _check_labels(labels, len(images), f"dataset={name}: {path} '{prefix}labels'")
        parts.append((images, labels))
    if len(parts) == 1:
        try:
            parts = _split_off_test(*parts[0])
        except ValueError as error:
            raise ValueError(f"dataset={name}: {path}: {error}.") from None
    return _arrays_data(name, path, parts[0], parts[1], num_classes)


def _image_files(directory, name):
    """(class names, [(file path, class name or None)]) of one folder: class subfolders, or images directly."""
    entries = sorted(tf.io.gfile.listdir(directory))
    subfolders = [e.rstrip("/") for e in entries if tf.io.gfile.isdir(os.path.join(directory, e))]
    images = [e for e in entries if e.lower().endswith(IMAGE_EXTENSIONS)]
    if subfolders and images:
        raise ValueError(
            f"dataset={name}: {directory} holds both image files and class subfolders; expected one or the other."
        )
    if not subfolders:
        return [], [(os.path.join(directory, image), None) for image in images]
    files = []
    for folder in subfolders:
        for entry in sorted(tf.io.gfile.listdir(os.path.join(directory, folder))):
            if entry.lower().endswith(IMAGE_EXTENSIONS):
                files.append((os.path.join(directory, folder, entry), folder))
    return subfolders, files


def _read_images(files, name):
    """Decodes image files of one size into uint8 [N, H, W, C]."""
    images, first = [], None
    for path, _ in files:
        try:
            with tf.io.gfile.GFile(path, "rb") as handle:
                image = tf.io.decode_image(handle.read(), expand_animations=False).numpy()
        except (tf.errors.OpError, ValueError) as error:
            raise ValueError(f"dataset={name}: cannot decode {path} as an image: {str(error)[:200]}") from None
        if first is None:
            first = (path, image.shape)
        elif image.shape != first[1]:
            raise ValueError(
                f"dataset={name}: expected images of one size, but {path} is {image.shape} "
                f"and {first[0]} is {first[1]}."
            )
        images.append(image)
    return np.stack(images)


def _folder(name, num_classes):
    root = name[len("folder:") :]
    if not tf.io.gfile.isdir(root):
        raise ValueError(f"dataset={name}: {root} is not a directory.")
    has_parts = all(tf.io.gfile.isdir(os.path.join(root, part)) for part in ("train", "test"))
    listed = (
        {part: _image_files(os.path.join(root, part), name) for part in ("train", "test")}
        if has_parts
        else {"all": _image_files(root, name)}
    )
    if len({bool(classes) for classes, _ in listed.values()}) > 1:
        raise ValueError(
            f"dataset={name}: {root}/train and {root}/test must both hold class subfolders or both hold images."
        )
    class_names = sorted(set().union(*(classes for classes, _ in listed.values())))
    parts = []
    for part, (_, files) in listed.items():
        if not files:
            raise ValueError(
                f"dataset={name}: no images ({', '.join(IMAGE_EXTENSIONS)}) in "
                f"{os.path.join(root, part) if has_parts else root}."
            )
        images = _read_images(files, name)
        labels = np.array([class_names.index(c) for _, c in files], np.int32) if class_names else None
        parts.append((images, labels))
    if not has_parts:
        try:
            parts = _split_off_test(*parts[0])
        except ValueError as error:
            raise ValueError(f"dataset={name}: {root}: {error}.") from None
    return _arrays_data(name, root, parts[0], parts[1], num_classes)


# -- tfds ---------------------------------------------------------------------------------------


def _require(module, package):
    """Imports ``module``, or says which extra installs ``package``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{package} is needed for training data: pip install 'keras-pixelcnn[train]' (it installs {package})."
        ) from error


def _import_tfds():
    return _require("tensorflow_datasets", "tensorflow-datasets")


def _fit_image(image, shape):
    """Central square crop and area resize to ``shape`` (a no-op for images already that size)."""
    height, width, _ = shape
    if image.shape[:2] == (height, width):
        return image
    if image.shape[:2] == (218, 178):  # CelebA: crop the face region first
        image = tf.image.crop_to_bounding_box(image, 39, 19, 140, 140)
    image = tf.image.resize(image, (height, width), method="area")
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _tfds_spec(name, data_dir):
    """TFDS_SPECS[name], or a spec read from the builder's features (a fixed-size ``image``, ``label`` if any)."""
    if name in TFDS_SPECS:
        return TFDS_SPECS[name]
    tfds = _import_tfds()
    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    image = features["image"] if "image" in features else None
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) != 3 or None in shape or getattr(image, "dtype", None) != tf.uint8:
        raise ValueError(
            f"dataset={name}: expected a tfds image data set with a uint8 'image' feature of fixed size "
            f"[H, W, C], got features {list(features)}" + (f" ('image' {shape})" if image is not None else "") + "."
        )
    label = features["label"] if "label" in features else None
    num_classes = getattr(label, "num_classes", None)
    splits = builder.info.splits
    test_split = "validation" if "test" not in splits and "validation" in splits else "test"
    return TfdsSpec(tuple(shape), num_classes, test_split=test_split)


def _tfds_data(name, data_dir):
    tfds = _import_tfds()
    spec = _tfds_spec(name, data_dir)

    def to_pair(example):
        image = _fit_image(example["image"], spec.image_shape)
        label = tf.cast(example["label"], tf.int32) if spec.num_classes else tf.constant(-1, tf.int32)
        return tf.ensure_shape(image, spec.image_shape), label

    def load(split):
        try:
            dataset = tfds.load(name, split=spec.train_split if split == "train" else spec.test_split,
                                data_dir=data_dir, download=False)  # fmt: skip
        except AssertionError as error:  # tfds's "could not find data in ..." (download=False fails fast)
            raise DatasetUnavailableError(
                f"dataset={name}: not found in data_dir={data_dir or tfds.core.constants.DATA_DIR}. "
                f"On a machine with network access run `tfds build {name} --data_dir=DIR` and pass data_dir=DIR."
            ) from error
        return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)

    return ImageData(name, spec.image_shape, spec.num_classes, load)
