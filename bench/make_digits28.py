"""A 28x28 data set made without network: the embedded 8x8 digits upscaled, as an .npz for ``--dataset=npz:PATH``.

    python bench/make_digits28.py --out=/tmp/digits28.npz
    python bench/quality.py --dataset=npz:/tmp/digits28.npz --minutes=3

The images of ``--dataset=digits`` (trainers/data.py: grey levels 0..255, the first 1437 train, the
last 360 test) are resized to 28x28 with area interpolation (each output pixel the area-weighted mean
of the 8x8 pixels it covers, so edges between pixels get intermediate grey levels) and rounded back
to integers 0..255. The npz holds ``images``, ``labels``, ``test_images`` and ``test_labels`` (uint8
[N, 28, 28, 1], int32 [N]), keeping the digits' own train/test split.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's modules

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from trainers import data as data_lib  # noqa: E402

SIZE = 28


def upscaled(images, size=SIZE):
    """uint8 images [N, H, W, C] area-resized to [N, size, size, C], values rounded and kept in 0..255."""
    resized = tf.image.resize(tf.cast(images, tf.float32), (size, size), method="area")
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def make_digits28(path, size=SIZE):
    """Writes the upscaled digits (train and test parts) to ``path``; returns {array name: shape}."""
    digits = data_lib.open_dataset("digits")
    arrays = {}
    for split, prefix in (("train", ""), ("test", "test_")):
        images, labels = (np.stack(part) for part in zip(*digits.split(split).as_numpy_iterator()))
        arrays[prefix + "images"], arrays[prefix + "labels"] = upscaled(images, size), labels.astype(np.int32)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)
    return {name: array.shape for name, array in arrays.items()}


def main(argv):
    del argv
    shapes = make_digits28(flags.FLAGS.out, flags.FLAGS.size)
    print(f"wrote {flags.FLAGS.out}: {shapes}; use --dataset=npz:{flags.FLAGS.out}")


if __name__ == "__main__":
    flags.DEFINE_string("out", "/tmp/digits28.npz", "Where the .npz goes.")
    flags.DEFINE_integer("size", SIZE, "Height and width of the upscaled images.")
    app.run(main)
