"""Autoregressive sampling: naive (a full forward pass per step) and cached (incremental).

H * W * C steps with the softmax head, H * W with the mixture head. Every draw
is keyed by (seed, step index) through ``stateless_fold_in`` (see heads.py), so
both samplers, which evaluate the same parameters, yield the same images.
Both run inside tf.function (tf.while_loop, static shapes) and so export.
"""

import math

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

    _, images = tf.while_loop(lambda index, _: index < height * width * steps_per_pixel, step, (tf.constant(0), images))
    return tf.cast(images, tf.uint8)


def sample_cached(model, batch_size, condition, temperature, seed):
    """Cached incremental sampling (Ramachandran et al. 2017) for ConditionalPixelCNN.

    Same arguments, result and random draws as ``sample_naive``, but each step
    computes only what the new sub-pixel changes:

    * vertical stack, once per row: every layer keeps the last ceil(n/2) rows of
      its input; when row i-1 is complete its vertical outputs are computed for
      that row only, and their link into the horizontal stack (a 1x1 conv of the
      row's pre-activations) is kept for the whole of row i;
    * horizontal stack and head, once per step (per pixel, and per channel with
      the softmax head's colour masks): every layer keeps the last ceil(n/2) - 1
      columns of its input in the current row and computes only the current
      pixel. With colour masks the pixel's features after its last channel step
      never depend on that last channel, so those are the ones kept;
    * the condition (h, or the map s = m(h)) is computed once per sample; a
      spatial condition's per-layer terms once per row.

    In the limit of many steps the work is that of one forward pass.
    """
    import tensorflow as tf

    height, width, channels = model.image_shape
    head, blocks = model.head, model.blocks
    steps_per_pixel = head.steps_per_pixel
    half = math.ceil(model.kernel_size / 2)
    side = model.kernel_size // 2
    dtype = model.compute_dtype
    p2 = 2 * model.filters
    spatial = model.spatial_condition
    input_features = [channels] + [model.filters] * (len(blocks) - 1)  # of each layer's input
    h = model.condition_network(condition) if model.conditioned else None
    global_biases = [block.condition_biases(h) for block in blocks] if h is not None and not spatial else None

    def biases(row):
        """Per-layer (vertical, horizontal) condition terms for image row ``row``."""
        if global_biases is not None:
            return global_biases
        if not spatial:
            return [(0.0, 0.0)] * len(blocks)
        return [block.condition_biases(h[:, row][:, None]) for block in blocks]

    def scaled(pixels):
        return tf.cast(pixels, dtype) / 127.5 - 1.0

    def pad_columns(row):
        return tf.pad(row, [[0, 0], [0, 0], [side, side], [0, 0]])

    def vertical_pass(vertical, images, row):
        """Advances every layer's vertical window by image row ``row``; returns the links for row + 1."""
        new_input = pad_columns(scaled(images[:, row][:, None]))
        terms = biases(row)
        links, windows = [], []
        for index, block in enumerate(blocks):
            window = tf.concat([vertical[index][:, 1:], new_input], axis=1)
            v_pre, v_out = block.vertical_row(window, terms[index][0])
            links.append(block.link(v_pre))
            windows.append(window)
            new_input = pad_columns(v_out)
        return windows, links

    def first_links():
        zeros = tf.zeros([batch_size, 1, width, p2], dtype)
        return [block.link(zeros) for block in blocks]  # shift_down puts zeros above row 0

    def row_body(i, images, vertical):
        windows, links = tf.cond(
            i > 0, lambda: vertical_pass(vertical, images, i - 1), lambda: (vertical, first_links())
        )
        terms = biases(i)
        history = [tf.zeros([batch_size, 1, half - 1, f], dtype) for f in input_features]
        row_values = tf.zeros([batch_size, width, channels], tf.float32)

        def step_body(t, row_values, history):
            j, channel = t // steps_per_pixel, t % steps_per_pixel
            pixel = row_values[:, j]
            layer_input = scaled(pixel)[:, None, None, :]
            new_history, skips = [], []
            for index, block in enumerate(blocks):
                window = tf.concat([history[index], layer_input], axis=2)
                h_bias = terms[index][1]
                if spatial:
                    h_bias = h_bias[:, :, j][:, :, None]
                h_out, *skip = block.horizontal_pixel(window, links[index][:, :, j][:, :, None], h_bias)
                new_history.append(window[:, :, 1:])
                skips += skip
                layer_input = h_out
            features = sum(skips[1:], skips[0]) if skips else layer_input
            params = model.head_params(features)[:, 0, 0]
            index = (i * width + j) * steps_per_pixel + channel
            key = tf.random.experimental.stateless_fold_in(seed, tf.cast(index, tf.int64))
            new_pixel = head.sample_step(params, pixel, channel, temperature, key)
            at_column = (tf.range(width) == j)[None, :, None]
            row_values = tf.where(at_column, new_pixel[:, None, :], row_values)
            # The first layer's input is the pixel itself, now drawn; the features of
            # later layers never depend on the pixel's last channel, so after its last
            # step they are final.
            new_history[0] = tf.concat([history[0][:, :, 1:], scaled(new_pixel)[:, None, None, :]], axis=2)
            last = channel == steps_per_pixel - 1
            history = [tf.where(last, new, old) for new, old in zip(new_history, history)]
            return t + 1, row_values, history

        _, row_values, _ = tf.while_loop(
            lambda t, *_: t < width * steps_per_pixel, step_body, (tf.constant(0), row_values, history)
        )
        at_row = (tf.range(height) == i)[None, :, None, None]
        images = tf.where(at_row, row_values[:, None], images)
        return i + 1, images, windows

    images = tf.zeros([batch_size, height, width, channels], tf.float32)
    vertical = [tf.zeros([batch_size, half, width + 2 * side, f], dtype) for f in input_features]
    _, images, _ = tf.while_loop(lambda i, *_: i < height, row_body, (tf.constant(0), images, vertical))
    return tf.cast(images, tf.uint8)


SAMPLERS = {"naive": sample_naive, "cached": sample_cached}
