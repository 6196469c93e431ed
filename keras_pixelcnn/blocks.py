"""One layer of a PixelCNN: the gated two-stack block, and the original single stack.

Gated block (paper Figure 2, eqs. 2, 4, 5), for p = ``filters`` and n = ``kernel_size``:

    v_pre = Conv_{ceil(n/2) x n}(v)                          vertical: rows <= i
    v_out = gate(v_pre + V_v h)
    h_pre = MaskedConv_{1 x ceil(n/2)}(h) + Dense(shift_down(v_pre)) + V_h h
    h_gated = gate(h_pre)
    h_out = h + MaskedConv_{1x1}(h_gated)                     (no residual in layer 0)
    skip  = MaskedConv_{1x1}(h_gated)                         (optional)

where gate(z) = tanh(z_f) * sigmoid(z_g) on the two halves of the fused 2p maps.
The vertical stack sees the current row; it reaches the horizontal stack only
through ``shift_down`` (rows < i), once per layer, and nothing flows back from
horizontal to vertical, so there is neither a leak nor a blind spot.
"""

import math

import keras
from keras import ops

from keras_pixelcnn.masked_conv import MaskedConv2D, group_major
from keras_pixelcnn.validation import check_multiple, check_odd_kernel_size, check_positive_int, check_rate


def gate(x):
    """tanh(first half) * sigmoid(second half) along the last axis."""
    x_f, x_g = ops.split(x, 2, axis=-1)
    return ops.tanh(x_f) * ops.sigmoid(x_g)


def shift_down(x):
    """Moves a [B, H, W, F] map one row down (row 0 becomes zeros)."""
    padded = ops.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))
    # ops.slice, not padded[:, :-1]: in TF the gradient of a strided slice (StridedSliceGrad)
    # is ~20x slower than that of a Slice (a Pad); it was ~9% of a training step.
    return ops.slice(padded, (0, 0, 0, 0), ops.shape(x))


def _check_block_arguments(filters, kernel_size, color_channels, dropout):
    """The arguments both blocks share -> (filters, kernel_size, color_channels, dropout), normalised."""
    color_channels = check_positive_int(color_channels, "color_channels")
    filters = check_multiple(
        filters,
        "filters",
        color_channels,
        f"a multiple of color_channels={color_channels} (one feature group per colour channel)",
    )
    return filters, check_odd_kernel_size(kernel_size), color_channels, check_rate(dropout, "dropout")


def _expand_condition(bias):
    """A global bias [B, F] broadcast over H and W; a spatial one passes through."""
    return bias[:, None, None, :] if len(bias.shape) == 2 else bias


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class GatedBlock(keras.layers.Layer):
    """One Gated PixelCNN layer over a (vertical, horizontal) pair of stacks.

    Args:
      filters: p, the features of each stack (the fused convolutions emit 2p).
      kernel_size: n, odd >= 3: the vertical stack reads ceil(n/2) x n, the
        horizontal stack 1 x ceil(n/2).
      first: the first layer: mask "A" on the horizontal convolution and no
        residual connection (the input is the image itself).
      color_channels: colour groups for the horizontal masks (1 = pixel level).
      conditioned: whether a condition (h [B, D] or s [B, H, W, S]) is added.
      condition_vertical: whether it is added to the vertical gate too; False
        in the last layer, whose vertical output is unused.
      skip: whether to emit a skip output.
      dropout: rate in [0, 1) applied to the gated horizontal features.
      dilation_rate: d >= 1: both stacks' taps d rows / columns apart, so the
        vertical stack reaches d * (ceil(n/2) - 1) rows up (1 = the paper's block).

    Raises ValueError unless filters is a positive multiple of color_channels,
    kernel_size an odd int >= 3 and dilation_rate an int >= 1.

    Call:
      ``block(v, h, condition=None, training=None)`` with v, h [B, H, W, F]
      returns (v_out, h_out), or (v_out, h_out, skip) with ``skip=True``,
      each [B, H, W, p].
    """

    def __init__(
        self,
        filters,
        kernel_size,
        first=False,
        color_channels=1,
        conditioned=False,
        condition_vertical=True,
        skip=False,
        dropout=0.0,
        dilation_rate=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.color_channels, self.dropout = _check_block_arguments(
            filters, kernel_size, color_channels, dropout
        )
        self.dilation_rate = check_positive_int(dilation_rate, "dilation_rate")
        self.first = bool(first)
        self.conditioned = bool(conditioned)
        self.condition_vertical = bool(condition_vertical)
        self.skip = bool(skip)
        half = math.ceil(self.kernel_size / 2)
        p2 = 2 * self.filters
        self.vertical_conv = MaskedConv2D(
            p2,
            (half, self.kernel_size),
            mask_type=None,
            anchor=(half - 1, self.kernel_size // 2),
            dilation_rate=self.dilation_rate,
            name="vertical",
            dtype=self.dtype_policy,
        )
        self.horizontal_conv = MaskedConv2D(
            p2,
            (1, half),
            mask_type="A" if self.first else "B",
            color_channels=self.color_channels,
            anchor=(0, half - 1),
            dilation_rate=(1, self.dilation_rate),
            name="horizontal",
            dtype=self.dtype_policy,
        )
        self.link = keras.layers.Dense(p2, name="vertical_to_horizontal", dtype=self.dtype_policy)
        self.horizontal_out = MaskedConv2D(
            self.filters, 1, color_channels=self.color_channels, name="horizontal_out", dtype=self.dtype_policy
        )
        self.skip_out = (
            MaskedConv2D(self.filters, 1, color_channels=self.color_channels, name="skip_out", dtype=self.dtype_policy)
            if self.skip
            else None
        )
        self.vertical_condition = (
            keras.layers.Dense(p2, use_bias=False, name="vertical_condition", dtype=self.dtype_policy)
            if conditioned and condition_vertical
            else None
        )
        self.horizontal_condition = (
            keras.layers.Dense(p2, use_bias=False, name="horizontal_condition", dtype=self.dtype_policy)
            if conditioned
            else None
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy) if self.dropout else None

    def build(self, v_shape, h_shape=None, condition_shape=None):
        h_shape = v_shape if h_shape is None else h_shape
        self.vertical_conv.build(v_shape)
        self.horizontal_conv.build(h_shape)
        self.link.build(tuple(v_shape[:-1]) + (2 * self.filters,))
        gated_shape = tuple(h_shape[:-1]) + (self.filters,)
        self.horizontal_out.build(gated_shape)
        if self.skip_out is not None:
            self.skip_out.build(gated_shape)
        if self.vertical_condition is not None:
            self.vertical_condition.build(condition_shape)
        if self.horizontal_condition is not None:
            self.horizontal_condition.build(condition_shape)

    def condition_biases(self, condition):
        """(V_v h, V_h h), each broadcastable to [B, H, W, 2p]; 0.0 where not conditioned."""
        return tuple(
            0.0 if dense is None else _expand_condition(dense(condition))
            for dense in (self.vertical_condition, self.horizontal_condition)
        )

    def call(self, v, h, condition=None, training=None):
        v_bias, h_bias = self.condition_biases(condition)
        v_pre = self.vertical_conv(v)
        v_out = gate(v_pre + v_bias)
        link = self.vertical_link(shift_down(v_pre))
        return (v_out,) + self._horizontal(self.horizontal_conv(h), link, h_bias, h, training)

    def vertical_link(self, v_pre):
        """The 1x1 link ``self.link`` (a Dense) from the vertical stack: [B, H, W, 2p] -> [B, H, W, 2p].

        Computed as a 1x1 convolution with the Dense's own weights: TF then fuses the bias add
        into the convolution, which a Dense's tensordot (reshape, matmul, reshape, bias add) prevents.
        """
        kernel = ops.cast(self.link.kernel, v_pre.dtype)
        return ops.conv(v_pre, kernel[None, None], padding="valid") + ops.cast(self.link.bias, v_pre.dtype)

    def _horizontal(self, h_conv, link, h_bias, h, training=None):
        """The horizontal stack after its convolution: gate, 1x1 output, residual, skip."""
        h_gated = gate(h_conv + link + h_bias)
        if self.dropout_layer is not None:
            h_gated = self.dropout_layer(h_gated, training=training)
        h_out = self.horizontal_out(h_gated)
        if not self.first:
            h_out = h_out + h
        if self.skip_out is None:
            return (h_out,)
        return h_out, self.skip_out(h_gated)

    # -- one row, one pixel at a time: the cached sampler's steps (inference only) ------------

    @property
    def vertical_window_rows(self):
        """Rows of its input the vertical stack reads for one output row: d (ceil(n/2) - 1) + 1."""
        return self.dilation_rate * (math.ceil(self.kernel_size / 2) - 1) + 1

    @property
    def history_columns(self):
        """Columns left of the pixel the horizontal stack reads: d (ceil(n/2) - 1)."""
        return self.horizontal_conv.history_columns

    def vertical_row(self, window, v_bias):
        """The vertical stack for one row from the ``vertical_window_rows`` rows ending at it.

        Args:
          window: [B, vertical_window_rows, W, F], the layer's vertical input (zero rows above row 0).
          v_bias: the vertical condition term for that row (broadcastable to [B, 1, W, 2p]).

        Returns:
          (v_pre [B, 1, W, 2p], v_out [B, 1, W, p]): the pre-activation feeds the
          link into the next row's horizontal stack; v_out the next layer.
        """
        v_pre = self.vertical_conv.output_row(window)
        return v_pre, gate(v_pre + v_bias)

    def row_terms(self, link, h_bias):
        """What a row's horizontal pre-activations get beyond the convolution: [B, W, 2p], group-major.

        Args:
          link: ``vertical_link`` of the previous row's v_pre, [B, 1, W, 2p].
          h_bias: the horizontal condition term (broadcastable to [B, 1, W, 2p]).
        """
        return group_major((link + h_bias)[:, 0], self.color_channels)

    def pixel_weights(self, dtype):
        """The weights ``pixel_group`` uses, in ``dtype`` (computed once per sampling run)."""
        return {
            "horizontal": self.horizontal_conv.pixel_weights(dtype),
            "out": self.horizontal_out.pixel_weights(dtype),
            "skip": None if self.skip_out is None else self.skip_out.pixel_weights(dtype),
        }

    def pixel_group(self, weights, group, current, history, gated, row_terms):
        """Colour group ``group`` of this layer's horizontal stack at one pixel.

        Args:
          weights: ``pixel_weights(dtype)``.
          group: g, a Python int.
          current: the pixel's input so far, [B, F / G] blocks of groups 0.. (group-major).
          history: [B, history_columns * F], the input's last columns in this row.
          gated: this layer's gated blocks of groups < g at this pixel.
          row_terms: [B, 2p], the pixel's ``row_terms``.

        Returns:
          (gated [B, p / G], out [B, p / G], skip [B, p / G] or None) of group g.
        """
        size = 2 * self.filters // self.color_channels
        pre = self.horizontal_conv.pixel_group(weights["horizontal"], group, current, history)
        gated = list(gated) + [gate(pre + row_terms[:, group * size : (group + 1) * size])]
        out = self.horizontal_out.pixel_group(weights["out"], group, gated)
        if not self.first:
            out = out + current[group]
        skip = None if self.skip_out is None else self.skip_out.pixel_group(weights["skip"], group, gated)
        return gated[-1], out, skip

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            first=self.first,
            color_channels=self.color_channels,
            conditioned=self.conditioned,
            condition_vertical=self.condition_vertical,
            skip=self.skip,
            dropout=self.dropout,
            dilation_rate=self.dilation_rate,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class MaskedBlock(keras.layers.Layer):
    """One layer of the original single-stack PixelCNN (van den Oord et al. 2016a).

    An n x n masked convolution (mask "A" in the first layer, "B" after), the
    condition added before the nonlinearity, ReLU or the gated unit, and a
    residual connection after the first layer. Its receptive field has the
    blind spot that the gated two-stack block removes; kept for ablations.

    Args:
      filters: output features (the gated unit's convolution emits twice as many);
        a positive multiple of ``color_channels``.
      kernel_size: n, odd >= 3: the n x n masked convolution.
      first: the first layer: mask "A" and no residual connection.
      color_channels: colour groups for the masks (1 = pixel level).
      conditioned: whether a condition (h [B, D] or s [B, H, W, S]) is added.
      gated: the gated unit tanh * sigmoid instead of ReLU.
      dropout: rate in [0, 1) applied to the layer's output features.

    Call:
      ``block(x, condition=None, training=None)`` with x [B, H, W, F] returns
      [B, H, W, filters].
    """

    def __init__(
        self, filters, kernel_size, first=False, color_channels=1, conditioned=False, gated=False, dropout=0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.color_channels, self.dropout = _check_block_arguments(
            filters, kernel_size, color_channels, dropout
        )
        self.first = bool(first)
        self.conditioned = bool(conditioned)
        self.gated = bool(gated)
        width = 2 * self.filters if self.gated else self.filters
        self.conv = MaskedConv2D(
            width,
            self.kernel_size,
            mask_type="A" if first else "B",
            color_channels=self.color_channels,
            name="conv",
            dtype=self.dtype_policy,
        )
        self.condition_dense = (
            keras.layers.Dense(width, use_bias=False, name="condition", dtype=self.dtype_policy)
            if conditioned
            else None
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy) if self.dropout else None

    def build(self, x_shape, condition_shape=None):
        self.conv.build(x_shape)
        if self.conditioned:
            self.condition_dense.build(condition_shape)

    def call(self, x, condition=None, training=None):
        pre = self.conv(x)
        if self.conditioned:
            pre = pre + _expand_condition(self.condition_dense(condition))
        out = gate(pre) if self.gated else ops.relu(pre)
        if self.dropout_layer is not None:
            out = self.dropout_layer(out, training=training)
        return out if self.first else out + x

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            first=self.first,
            color_channels=self.color_channels,
            conditioned=self.conditioned,
            gated=self.gated,
            dropout=self.dropout,
        )
        return config
