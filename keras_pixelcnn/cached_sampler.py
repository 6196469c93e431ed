"""Cached incremental sampling (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models") for the gated two-stack ConditionalPixelCNN.

Each step computes only what its new sub-pixel changes:

* vertical stack, once per row: every layer keeps the last d (ceil(n/2) - 1) + 1
  rows of its input (d: its dilation rate); when row i is complete its vertical
  outputs are computed for that row only (``GatedBlock.vertical_row``), and
  their link into the horizontal stack, plus the condition terms, is kept for
  the whole of row i + 1 (``GatedBlock.row_terms``);
* horizontal stack and head, once per pixel: every layer keeps the last
  d (ceil(n/2) - 1) columns of its input in the current row. With the softmax
  head's colour masks the pixel runs C sub-steps (unrolled): sub-step c computes
  only colour group c of every layer (``GatedBlock.pixel_group``,
  ``MaskedConv2D.pixel_group``) and draws channel c; groups < c are final and
  reused, groups > c are not needed yet. With one group (C = 1, or the mixture
  head) that is one sub-step per pixel;
* the condition (h, or the map s = m(h)) is computed once per sample; a spatial
  condition's per-layer terms once per row; the noise of a row's steps once per
  row (``uniform_noise``, the same bits as one step at a time).

In the limit of many steps the work is that of one forward pass. Inside a
pixel every feature axis is in group-major order (group 0's features first),
so "groups <= g" is a prefix and group g a contiguous block.
"""

from typing import NamedTuple

from keras import ops

from keras_pixelcnn.noise import noise_dtype, seed_key, uniform_noise


class SamplerState(NamedTuple):
    """What the row loop carries.

    windows: per layer, the last ``vertical_window_rows`` rows of its vertical input [B, r, W, F].
    links: per layer, the next row's link from the vertical stack [B, 1, W, 2p].
    images: float32 [B, H, W, C], the rows drawn so far (zeros below).
    """

    windows: list
    links: list
    images: object


class _Run(NamedTuple):
    """What one sampling call holds fixed: weights in the compute dtype, condition terms, the noise key."""

    batch_size: object
    temperature: object
    key: object
    condition: object  # h [B, D] (global) or s [B, H, W, S] (spatial), or None
    global_biases: list  # per layer (V_v h, V_h h) of a global condition, computed once; else None
    block_weights: list
    hidden_weights: list
    head_weights: list


class CachedSampler:
    """Samples a ConditionalPixelCNN incrementally; the same draws as ``sampling.sample_naive``.

    Args:
      model: a built ConditionalPixelCNN.

    Call:
      ``sampler(batch_size, condition, temperature, seed)`` as ``sample_naive``
      -> [B, H, W, C] of ``model.sample_dtype``.
    """

    def __init__(self, model):
        self.model = model
        self.blocks = model.blocks
        self.height, self.width, self.channels = model.image_shape
        self.groups = model.color_channels
        self.dtype = model.compute_dtype
        self.input_features = [model.input_features] + [model.filters] * (len(self.blocks) - 1)

    def __call__(self, batch_size, condition, temperature, seed):
        model = self.model
        h = model.condition_network(condition) if model.conditioned else None
        run = _Run(
            batch_size=batch_size,
            temperature=temperature,
            key=seed_key(seed),
            condition=h,
            global_biases=None if h is None or model.spatial_condition else self._biases(h),
            block_weights=[block.pixel_weights(self.dtype) for block in self.blocks],
            hidden_weights=model.head_hidden.pixel_weights(self.dtype),
            head_weights=model.head_out.pixel_weights(self.dtype),
        )
        state = ops.fori_loop(0, self.height, lambda i, state: self.row(run, i, state), self.initial_state(run))
        return ops.cast(state.images, model.sample_dtype)

    def initial_state(self, run):
        """Zero windows (zero rows above row 0), the links of an all-zero row -1, no image yet."""
        zeros = ops.zeros((run.batch_size, 1, self.width, 2 * self.model.filters), self.dtype)
        return SamplerState(
            windows=[
                ops.zeros((run.batch_size, block.vertical_window_rows, self.width, features), self.dtype)
                for block, features in zip(self.blocks, self.input_features, strict=True)
            ],
            links=[block.vertical_link(zeros) for block in self.blocks],  # shift_down puts zeros above row 0
            images=ops.zeros((run.batch_size, self.height, self.width, self.channels), "float32"),
        )

    def condition_biases(self, run, row):
        """Per layer, the (vertical, horizontal) condition terms of image row ``row``."""
        if run.condition is None:
            return [(0.0, 0.0)] * len(self.blocks)
        if run.global_biases is not None:
            return run.global_biases
        return self._biases(ops.expand_dims(ops.take(run.condition, row, axis=1), 1))  # s's row: [B, 1, W, S]

    def _biases(self, condition):
        return [block.condition_biases(condition) for block in self.blocks]

    def _first_inputs(self, values, channels):
        """The first layer's input at one pixel, channels 0 .. channels - 1: one block per channel (group-major)."""
        return [self.model.embed_inputs(values[:, c : c + 1]) for c in range(channels)]

    def row(self, run, i, state):
        """Draws image row ``i`` pixel by pixel, then advances the vertical stack past it."""
        biases = self.condition_biases(run, i)
        terms = [block.row_terms(link, bias[1]) for block, link, bias in zip(self.blocks, state.links, biases)]
        head = self.model.head
        steps_per_pixel = head.steps_per_pixel
        steps = i * self.width * steps_per_pixel + ops.arange(self.width * steps_per_pixel)
        noise = head.noise(uniform_noise(run.key, steps, run.batch_size, head.noise_size), noise_dtype(self.model))
        noise = ops.reshape(noise, (self.width, steps_per_pixel, -1, head.noise_size))
        columns = ops.arange(self.width)[None, :, None]

        def pixel_step(j, carry):
            history, row = carry
            values, inputs = self.pixel(run, [t[:, j] for t in terms], noise[j], history)
            history = [
                ops.concatenate([past[:, features:], new], axis=-1)
                for past, new, features in zip(history, inputs, self.input_features, strict=True)
            ]
            return history, ops.where(columns == j, values[:, None, :], row)

        history = [
            ops.zeros((run.batch_size, block.history_columns * features), self.dtype)
            for block, features in zip(self.blocks, self.input_features, strict=True)
        ]
        row = ops.zeros((run.batch_size, self.width, self.channels), "float32")
        _, row = ops.fori_loop(0, self.width, pixel_step, (history, row))
        images = ops.where(ops.arange(self.height)[None, :, None, None] == i, row[:, None], state.images)
        windows, links = self.vertical_pass(state.windows, row, biases)
        return SamplerState(windows, links, images)

    def vertical_pass(self, windows, row, biases):
        """Moves every layer's vertical window down by the finished ``row``; returns (windows, the next row's links)."""
        new_input = self.model.embed_inputs(row[:, None])
        new_windows, links = [], []
        for block, window, bias in zip(self.blocks, windows, biases, strict=True):
            window = ops.concatenate([window[:, 1:], new_input], axis=1)
            v_pre, new_input = block.vertical_row(window, bias[0])
            new_windows.append(window)
            links.append(block.vertical_link(v_pre))
        return new_windows, links

    def pixel(self, run, terms, noise, history):
        """One pixel: its C (or 1) sub-steps.

        Args:
          run: the call's ``_Run``.
          terms: per layer, the pixel's ``row_terms`` [B, 2p].
          noise: [steps_per_pixel, B, noise_size], the pixel's steps' noise.
          history: per layer, its input's last columns in this row.

        Returns:
          (pixel values float32 [B, C], per layer its input at this pixel [B, F], group-major).
        """
        model, head = self.model, self.model.head
        values = ops.zeros((run.batch_size, self.channels), "float32")
        current = [[] for _ in self.blocks]  # per layer: its input at this pixel, one [B, F / G] block per group
        gated = [[] for _ in self.blocks]
        features, hidden = [], []
        for group in range(self.groups):
            if self.groups > 1:
                current[0] = self._first_inputs(values, group)
            skips = []
            for index, block in enumerate(self.blocks):
                args = (run.block_weights[index], group, current[index], history[index], gated[index], terms[index])
                gated_group, out, skip = block.pixel_group(*args)
                gated[index].append(gated_group)
                if index + 1 < len(self.blocks):
                    current[index + 1].append(out)
                if skip is not None:
                    skips.append(skip)
            features.append(ops.relu(sum(skips[1:], skips[0]) if skips else out))
            hidden.append(ops.relu(model.head_hidden.pixel_group(run.hidden_weights, group, features)))
            outputs = model.head_out.pixel_group(run.head_weights, group, hidden)
            if self.groups > 1:  # the logits of channel `group`, at its row of the head's [B, C, L]
                params = ops.pad(outputs[:, None], ((0, 0), (group, self.groups - 1 - group), (0, 0)))
            else:
                params = head.params_from_outputs(outputs[:, None, None])[:, 0, 0]
            values = head.sample_step(params, values, group, run.temperature, noise[group])
        current[0] = self._first_inputs(values, self.channels)
        return values, [ops.concatenate(blocks, axis=-1) if len(blocks) > 1 else blocks[0] for blocks in current]
