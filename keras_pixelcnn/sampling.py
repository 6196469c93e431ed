"""Autoregressive sampling: naive (a full forward pass per step) and cached (incremental).

H * W * C steps with the softmax head, H * W with the mixture head. Step s
gets uniform noise that is an integer hash of (seed, s, position in the step's
noise) (``uniform_noise``), so both samplers, which evaluate the same
parameters, yield the same images, and so do their XLA-compiled versions: the
bits come from exact integer ops, identical with and without XLA. Both run
inside tf.function (tf.while_loop, static shapes) and so export;
``sampling_function`` wraps one, XLA-compiled or not.
"""

import math

import numpy as np

_GOLDEN = 0x9E3779B9  # odd constants of the integer hash (lowbias32, C. Wellons)
_MIX_1, _MIX_2 = 0x7FEB352D, 0x846CA68B


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


def resolve_jit_compile(jit_compile):
    """``jit_compile`` of ``sample``: None (auto: XLA, which TF offers on CPU and GPU), True or False -> bool."""
    if jit_compile is None:
        return True
    if isinstance(jit_compile, (bool, np.bool_)):
        return bool(jit_compile)
    raise ValueError(f"jit_compile: expected None (auto), True or False, got {jit_compile!r}.")


def _mix(x):
    """lowbias32: a 32-bit integer hash with good avalanche, on uint32 tensors (exact under XLA too)."""
    import tensorflow as tf

    bits = tf.bitwise
    x = bits.bitwise_xor(x, bits.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(_MIX_1, tf.uint32)
    x = bits.bitwise_xor(x, bits.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(_MIX_2, tf.uint32)
    return bits.bitwise_xor(x, bits.right_shift(x, tf.constant(16, tf.uint32)))


def seed_key(seed):
    """int64 [2] seed -> a uint32 scalar key hashing all 64 + 64 bits."""
    import tensorflow as tf

    key = tf.constant(_GOLDEN, tf.uint32)
    # Unpack's kernel refuses a seed of another length at run time (served requests: grappler
    # folds the shape check of an input declared [2]).
    for part in tf.unstack(tf.cast(seed, tf.int64), num=2):
        for word in (part, tf.bitwise.right_shift(part, 32)):
            key = _mix(tf.bitwise.bitwise_xor(key, tf.cast(tf.bitwise.bitwise_and(word, 0xFFFFFFFF), tf.uint32)))
    return key


def uniform_noise(key, steps, batch_size, size):
    """Uniform noise in (0, 1) for the sampling steps ``steps``.

    Element (b, k) of step s is a function of (key, s, b * size + k) only, built
    from integer hashing (counter-based), so it is bit-identical whether the
    steps are drawn one at a time or a row at once, with or without XLA.

    Args:
      key: uint32 scalar from ``seed_key``.
      steps: int32 [S], the step indices.
      batch_size: int32 scalar B.
      size: the number of uniforms per image and step (``head.noise_size``).

    Returns:
      float32 [S, B, size], values (m + 0.5) / 2**24 for integers m (never 0 or 1).
    """
    import tensorflow as tf

    step_keys = _mix(tf.bitwise.bitwise_xor(_mix(tf.cast(steps, tf.uint32) + tf.constant(_GOLDEN, tf.uint32)), key))
    counters = tf.cast(tf.reshape(tf.range(batch_size * size), [1, batch_size, size]), tf.uint32)
    step_keys = step_keys[:, None, None]
    bits = _mix(tf.bitwise.bitwise_xor(_mix(tf.bitwise.bitwise_xor(counters, step_keys)), step_keys))
    mantissa = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32)
    return (mantissa + 0.5) * (1.0 / 2**24)


def _noise_dtype(model):
    """Noise is transformed in float64 for float64 models, else float32 (as the heads compute)."""
    return "float64" if model.compute_dtype == "float64" else "float32"


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
    key = seed_key(seed)

    def step(index, images):
        pixel, channel = index // steps_per_pixel, index % steps_per_pixel
        i, j = pixel // width, pixel % width
        inputs = images if condition is None else (images, condition)
        params = model(inputs, training=False)
        uniform = uniform_noise(key, index[None], batch_size, head.noise_size)[0]
        noise = head.noise(uniform, _noise_dtype(model))
        new_pixel = head.sample_step(params[:, i, j], images[:, i, j], channel, temperature, noise)
        at_pixel = tf.logical_and(rows == i, cols == j)[None, :, :, None]
        return index + 1, tf.where(at_pixel, new_pixel[:, None, None, :], images)

    _, images = tf.while_loop(lambda index, _: index < height * width * steps_per_pixel, step, (tf.constant(0), images))
    return tf.cast(images, tf.uint8)


def _group_columns(size, groups):
    """Indices of each colour group's features (``index % groups``): ``groups`` lists of size // groups."""
    return [list(range(group, size, groups)) for group in range(groups)]


def _masked_kernel(conv, dtype):
    """A MaskedConv2D's kernel times its mask, in ``dtype``: [kh, kw, in, out]."""
    import tensorflow as tf

    return tf.cast(conv.kernel * tf.constant(conv.mask, conv.kernel.dtype), dtype)


def _pointwise_weights(conv, groups, dtype, in_order, out_columns):
    """Per-group weights of a masked 1x1 convolution (mask "B") over group-major inputs.

    Args:
      conv: the MaskedConv2D (1x1).
      groups: G, colour groups.
      dtype: compute dtype.
      in_order: input features in group-major order.
      out_columns: G lists, each group's output features.

    Returns:
      G pairs (kernel [(g + 1) * in / G, len(out_columns[g])], bias [len(out_columns[g])]):
      group g's outputs from the inputs of groups <= g (the others are masked out).
    """
    import tensorflow as tf

    rows_per_group = len(in_order) // groups
    kernel = tf.gather(_masked_kernel(conv, dtype)[0, 0], in_order, axis=0)
    bias = tf.cast(conv.bias, dtype)
    return [
        (tf.gather(kernel[: (group + 1) * rows_per_group], columns, axis=1), tf.gather(bias, columns))
        for group, columns in enumerate(out_columns)
    ]


def _cached_weights(model, dtype):
    """Weights of the cached sampler's per-pixel work, sliced per colour group.

    Every feature axis inside a pixel is put in group-major order (group 0's
    features first), so "groups <= g" is a prefix and group g a contiguous
    block. For layer l and group g, ``horizontal[l][g]`` is one matrix taking
    the flattened window (ceil(n/2) - 1 past columns, all features, then the
    current pixel's allowed groups) to group g's fused [tanh | sigmoid] inputs.

    Returns:
      dict with ``horizontal``, ``out``, ``skip`` (per layer, per group),
      ``hidden`` and ``head`` (per group), and ``fused_order``: the fused 2p
      features of a layer in group-major [tanh | sigmoid] blocks.
    """
    import tensorflow as tf

    groups, p = model.color_channels, model.filters
    half = math.ceil(model.kernel_size / 2)
    channels = model.image_shape[-1]
    p_columns = _group_columns(p, groups)
    p_order = sum(p_columns, [])
    fused_columns = [columns + [p + c for c in columns] for columns in p_columns]
    weights = {"horizontal": [], "out": [], "skip": [], "fused_order": sum(fused_columns, [])}
    for index, block in enumerate(model.blocks):
        features = channels if index == 0 else p
        in_order = sum(_group_columns(features, groups), [])
        kernel = tf.gather(_masked_kernel(block.horizontal_conv, dtype)[0], in_order, axis=1)  # [half, F, 2p]
        past = tf.reshape(kernel[: half - 1], [(half - 1) * features, 2 * p])
        per_group = []
        for group, columns in enumerate(fused_columns):
            allowed = (group if block.first else group + 1) * (features // groups)  # mask A / B at the pixel
            per_group.append(tf.gather(tf.concat([past, kernel[half - 1, :allowed]], 0), columns, axis=1))
        weights["horizontal"].append(per_group)
        weights["out"].append(_pointwise_weights(block.horizontal_out, groups, dtype, p_order, p_columns))
        weights["skip"].append(
            None if block.skip_out is None else _pointwise_weights(block.skip_out, groups, dtype, p_order, p_columns)
        )
    weights["hidden"] = _pointwise_weights(model.head_hidden, groups, dtype, p_order, p_columns)
    weights["head"] = _pointwise_weights(
        model.head_out, groups, dtype, p_order, _group_columns(model.head.num_outputs, groups)
    )
    return weights


def sample_cached(model, batch_size, condition, temperature, seed):
    """Cached incremental sampling (Ramachandran et al. 2017) for ConditionalPixelCNN.

    Same arguments, result and random draws as ``sample_naive``, but each pixel
    computes only what it changes:

    * vertical stack, once per row: every layer keeps the last d (ceil(n/2) - 1) + 1
      rows of its input (d: its dilation rate); when row i-1 is complete its
      vertical outputs are computed for that row only, and their link into the
      horizontal stack (a 1x1 conv of the row's pre-activations), plus the
      horizontal biases and condition terms, is kept for the whole of row i;
    * horizontal stack and head, once per pixel: every layer keeps the last
      d (ceil(n/2) - 1) columns of its input in the current row and reads every
      d-th. With the softmax head's colour masks the pixel runs C sub-steps
      (unrolled): sub-step c computes only colour group c of every layer (one matmul over the gathered
      window, the gate, one matmul for the 1x1 output) and draws channel c;
      groups < c are final and reused, groups > c are not needed yet. With
      one group (C = 1, or the mixture head) that is one sub-step per pixel;
    * the condition (h, or the map s = m(h)) is computed once per sample; a
      spatial condition's per-layer terms once per row; the noise of a row's
      steps once per row (``uniform_noise``, the same bits as one step at a time).

    In the limit of many steps the work is that of one forward pass.
    """
    import tensorflow as tf

    height, width, channels = model.image_shape
    head, blocks = model.head, model.blocks
    steps_per_pixel = head.steps_per_pixel
    groups = model.color_channels
    half = math.ceil(model.kernel_size / 2)
    rates = [block.dilation_rate for block in blocks]
    dtype = model.compute_dtype
    noise_dtype = _noise_dtype(model)
    p, p2 = model.filters, 2 * model.filters
    block_size = p // groups  # features of one colour group
    spatial = model.spatial_condition
    input_features = [channels] + [p] * (len(blocks) - 1)  # of each layer's input
    h = model.condition_network(condition) if model.conditioned else None
    global_biases = [block.condition_biases(h) for block in blocks] if h is not None and not spatial else None
    weights = _cached_weights(model, dtype)
    key = seed_key(seed)

    def biases(row):
        """Per-layer (vertical, horizontal) condition terms for image row ``row``."""
        if global_biases is not None:
            return global_biases
        if not spatial:
            return [(0.0, 0.0)] * len(blocks)
        return [block.condition_biases(h[:, row][:, None]) for block in blocks]

    def scaled(pixels):
        return tf.cast(pixels, dtype) / 127.5 - 1.0

    def vertical_pass(vertical, previous_row, row):
        """Advances every layer's vertical window by image row ``row``; returns the links for row + 1."""
        new_input = scaled(previous_row[:, None])
        terms = biases(row)
        links, windows = [], []
        for index, block in enumerate(blocks):
            window = tf.concat([vertical[index][:, 1:], new_input], axis=1)
            columns = block.vertical_conv.causal_padding[1]  # the forward pass's zero columns, dilation included
            v_pre, v_out = block.vertical_row(tf.pad(window, [[0, 0], [0, 0], columns, [0, 0]]), terms[index][0])
            links.append(block.vertical_link(v_pre))
            windows.append(window)
            new_input = v_out
        return windows, links

    def first_links():
        zeros = tf.zeros([batch_size, 1, width, p2], dtype)
        return [block.vertical_link(zeros) for block in blocks]  # shift_down puts zeros above row 0

    def row_terms(links, row):
        """Everything of row ``row`` that does not depend on its own pixels: [B, W, layers * 2p], group-major."""
        terms = biases(row)
        per_layer = [
            links[index] + terms[index][1] + tf.cast(block.horizontal_conv.bias, dtype)
            for index, block in enumerate(blocks)
        ]
        fused = tf.concat(per_layer, axis=-1)[:, 0]  # the links are [B, 1, W, 2p]; the rest broadcasts
        order = [index * p2 + f for index in range(len(blocks)) for f in weights["fused_order"]]
        return tf.gather(fused, order, axis=-1)

    def past_taps(history, index):
        """Layer ``index``'s kernel taps left of the pixel from its history (the last d * (ceil(n/2) - 1) columns)."""
        if rates[index] == 1:
            return history
        columns = tf.reshape(history, [batch_size, -1, input_features[index]])[:, :: rates[index]]
        return tf.reshape(columns, [batch_size, (half - 1) * input_features[index]])

    def pointwise(blocks_in, group, kernel_bias):
        kernel, bias = kernel_bias
        inputs = blocks_in[0] if group == 0 else tf.concat(blocks_in[: group + 1], axis=-1)
        return tf.matmul(inputs, kernel) + bias

    def pixel_body(pixel_terms, noise, history):
        """One pixel: its C (or 1) sub-steps. Returns (pixel values float32 [B, C], the layers' inputs [B, F])."""
        pixel = tf.zeros([batch_size, channels], tf.float32)
        layer_inputs = [[] for _ in blocks]  # per layer: its current-pixel input, one [B, F / G] block per group
        gated = [[] for _ in blocks]
        features, hidden = [], []
        for group in range(groups):
            if groups > 1:
                layer_inputs[0] = [scaled(pixel[:, c : c + 1]) for c in range(group)]
            skips = []
            for index, block in enumerate(blocks):
                allowed = group if block.first else group + 1
                window = tf.concat([past_taps(history[index], index)] + layer_inputs[index][:allowed], axis=-1)
                offset = (index * groups + group) * 2 * block_size
                pre = tf.matmul(window, weights["horizontal"][index][group])
                pre = pre + pixel_terms[:, offset : offset + 2 * block_size]
                z_f, z_g = tf.split(pre, 2, axis=-1)
                gated[index].append(tf.tanh(z_f) * tf.sigmoid(z_g))
                out = pointwise(gated[index], group, weights["out"][index][group])
                if not block.first:
                    out = out + layer_inputs[index][group]
                if index + 1 < len(blocks):
                    layer_inputs[index + 1].append(out)
                if block.skip_out is not None:
                    skips.append(pointwise(gated[index], group, weights["skip"][index][group]))
            features.append(tf.nn.relu(tf.add_n(skips) if skips else out))
            hidden.append(tf.nn.relu(pointwise(features, group, weights["hidden"][group])))
            outputs = pointwise(hidden, group, weights["head"][group])
            if groups > 1:  # the logits of channel `group`, at its row of the head's [B, C, 256]
                params = tf.pad(outputs[:, None], [[0, 0], [group, groups - 1 - group], [0, 0]])
            else:
                params = head.params_from_outputs(outputs[:, None, None])[:, 0, 0]
            pixel = head.sample_step(params, pixel, group, temperature, noise[group])
        layer_inputs[0] = [scaled(pixel)]
        return pixel, [tf.concat(inputs, axis=-1) for inputs in layer_inputs]

    def row_body(i, previous_row, vertical, rows):
        windows, links = tf.cond(
            i > 0, lambda: vertical_pass(vertical, previous_row, i - 1), lambda: (vertical, first_links())
        )
        terms = row_terms(links, i)
        steps = i * width * steps_per_pixel + tf.range(width * steps_per_pixel)
        noise = head.noise(uniform_noise(key, steps, batch_size, head.noise_size), noise_dtype)
        noise = tf.reshape(noise, [width, steps_per_pixel, batch_size, head.noise_size])
        history = [tf.zeros([batch_size, d * (half - 1) * f], dtype) for d, f in zip(rates, input_features)]

        def step_body(j, history, pixels):
            pixel, inputs = pixel_body(tf.gather(terms, j, axis=1), tf.gather(noise, j), history)
            history = [
                tf.concat([past[:, f:], new], axis=-1)
                for past, new, f in zip(history, inputs, input_features, strict=True)
            ]
            return j + 1, history, pixels.write(j, pixel)

        pixels = tf.TensorArray(tf.float32, size=width, element_shape=[None, channels])
        _, _, pixels = tf.while_loop(lambda j, *_: j < width, step_body, (tf.constant(0), history, pixels))
        row = tf.transpose(pixels.stack(), [1, 0, 2])  # [B, W, C]
        return i + 1, row, windows, rows.write(i, row)

    previous_row = tf.zeros([batch_size, width, channels], tf.float32)
    vertical = [tf.zeros([batch_size, d * (half - 1) + 1, width, f], dtype) for d, f in zip(rates, input_features)]
    rows = tf.TensorArray(tf.float32, size=height, element_shape=[None, width, channels])
    _, _, _, rows = tf.while_loop(
        lambda i, *_: i < height, row_body, (tf.constant(0), previous_row, vertical, rows)
    )
    return tf.cast(tf.transpose(rows.stack(), [1, 0, 2, 3]), tf.uint8)


SAMPLERS = {"naive": sample_naive, "cached": sample_cached}


def sampling_function(model, method, jit_compile):
    """A tf.function (batch_size, condition, temperature, seed) -> uint8 images running ``SAMPLERS[method]``.

    Args:
      model: the PixelCNN model.
      method: a key of ``SAMPLERS``.
      jit_compile: bool; True compiles the whole sampling loop with XLA (once
        per batch size and condition shape). Checks of the arguments belong
        outside: XLA drops Assert ops.

    Returns:
      The tf.function (arguments: int32 scalar, condition or None, float32
      scalar, int64 [2]).
    """
    import tensorflow as tf

    sampler = SAMPLERS[method]
    return tf.function(
        lambda b, c, t, s: sampler(model, b, c, t, s), jit_compile=bool(jit_compile), reduce_retracing=True
    )
