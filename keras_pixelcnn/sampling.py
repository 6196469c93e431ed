"""Naive autoregressive sampling: one full forward pass per sampling step.

H * W * C passes with the softmax head, H * W with the mixture head. Every draw
is keyed by (seed, step index) through ``stateless_fold_in`` (see heads.py), so
a faster sampler that evaluates the same parameters yields the same images.
"""

import numpy as np


def normalize_seed(seed):
    """None -> a fresh random seed; int s -> [s, 0]; [2] ints pass through. Returns int64 [2]."""
    if seed is None:
        return np.random.randint(0, 2**31 - 1, size=2).astype(np.int64)
    array = np.asarray(seed)
    if array.ndim == 0 and np.issubdtype(array.dtype, np.integer):
        return np.array([int(array), 0], np.int64)
    if array.shape == (2,) and np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    raise ValueError(f"seed: expected None, an int or 2 ints, got {seed!r}.")


def sample_naive(model, batch_size, condition, temperature, seed):
    """Samples images from ``model`` (TensorFlow; runs inside tf.function).

    Args:
      model: a built PixelCNN model (ConditionalPixelCNN or PixelCNN).
      batch_size: int32 scalar tensor B.
      condition: raw condition [B] / [B, D], or None.
      temperature: float32 scalar > 0.
      seed: int64 [2] stateless seed.

    Returns:
      uint8 [B, H, W, C].
    """
    import tensorflow as tf

    height, width, channels = model.image_shape
    head = model.head
    steps_per_pixel = head.steps_per_pixel
    images = tf.zeros([batch_size, height, width, channels], tf.float32)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]

    def step(index, images):
        pixel, channel = index // steps_per_pixel, index % steps_per_pixel
        i, j = pixel // width, pixel % width
        inputs = images if condition is None else (images, condition)
        params = model(inputs, training=False)
        key = tf.random.experimental.stateless_fold_in(seed, tf.cast(index, tf.int64))
        new_pixel = head.sample_step(params[:, i, j], images[:, i, j], channel, temperature, key)
        at_pixel = tf.logical_and(rows == i, cols == j)[None, :, :, None]
        return index + 1, tf.where(at_pixel, new_pixel[:, None, None, :], images)

    _, images = tf.while_loop(
        lambda index, _: index < height * width * steps_per_pixel, step, (tf.constant(0), images)
    )
    return tf.cast(images, tf.uint8)
