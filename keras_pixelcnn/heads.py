"""Output distributions over 8-bit sub-pixels: the likelihood and one sampling step.

A head turns the network's last 1x1 convolution (``num_outputs(C)`` maps) into
per-pixel distribution parameters, scores images under them (``log_prob``) and
draws one sampling step from them (``sample_step``). Heads hold no weights.

Sampling steps and their randomness:
  * ``steps_per_pixel`` steps per pixel: C for the softmax head (one channel per
    step, R -> G -> B), 1 for the mixture head (all channels, coupled in the head).
  * Step s (raster order over steps) gets ``noise_size`` uniforms in (0, 1)
    that depend only on (seed, s) (``sampling.uniform_noise``: integer hashing,
    bit-identical with and without XLA), so the same seed gives the same images
    however the network that produces the parameters is evaluated. ``noise``
    turns them into the head's Gumbel / logistic noise, ``sample_step`` uses it.
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from keras_pixelcnn.validation import check_positive_int

PIXEL_LEVELS = 256


def _float(x):
    """float64 stays float64 (exact tests); anything else (bf16, fp16, fp32) becomes float32."""
    return x if ops.dtype(x) == "float64" else ops.cast(x, "float32")


def _gumbel(uniform):
    """Standard Gumbel noise -log(-log(u)) from uniforms in (0, 1) (any float dtype)."""
    return -ops.log(-ops.log(uniform))


def _logistic(uniform):
    """Standard logistic noise log(u) - log(1 - u) from uniforms in (0, 1)."""
    return ops.log(uniform) - ops.log1p(-uniform)


def _one_program_on_jax(method):
    """A head method run as one XLA program per input shape and head configuration under JAX.

    Heads hold no weights, so a method is a pure function of its tensors and the head's
    configuration (``static_argnums=0``: equal heads share their programs). Eagerly, JAX
    compiles every op at a new shape on its own: a 2-layer mixture model's first ``log_prob``
    (its trunk's ops already compiled) took 49 programs, and 3 with its head as one. Inside an
    enclosing ``jax.jit`` (fit, the samplers) the program is inlined. TensorFlow, whose eager
    ops are not compiled and whose graphs trace the method as it is, and symbolic
    ``KerasTensor`` inputs run the method unchanged.
    """

    @functools.wraps(method)
    def run(self, *tensors):
        if keras.backend.backend() != "jax" or any(isinstance(t, keras.KerasTensor) for t in tensors):
            return method(self, *tensors)
        return _jax_jit(method)(self, *(_jax_argument(t) for t in tensors))

    return run


@functools.cache
def _jax_jit(function):
    import jax

    return jax.jit(function, static_argnums=0)


def _jax_argument(tensor):
    """What ``jax.jit`` takes: JAX and numpy arrays (tracers included) as they are, other array-likes via numpy."""
    import jax

    return tensor if isinstance(tensor, (jax.Array, np.ndarray, np.generic)) else np.asarray(tensor)


class _Head:
    """Heads configured alike are equal and hash alike (``_one_program_on_jax`` keys programs on them)."""

    def _config(self):
        raise NotImplementedError

    def __eq__(self, other):
        return type(self) is type(other) and self._config() == other._config()

    def __hash__(self):
        return hash((type(self), self._config()))


class SoftmaxHead(_Head):
    """L-way categorical per sub-pixel (L = 256 intensities, or K codes); channels autoregressive R -> G -> B.

    Parameters: logits [B, H, W, C, L]. The network's ``L * C`` output maps
    are grouped by ``index % C`` (the colour-mask convention), so they reshape
    to [..., L, C] and are transposed to [..., C, L].

    Args:
      channels: C.
      levels: L, the values of a sub-pixel: 256 for 8-bit images, K for K-category codes.
    """

    name = "softmax"
    pixel_level_masks = False  # the network itself is colour-masked

    def __init__(self, channels, levels=PIXEL_LEVELS):
        self.channels = check_positive_int(channels, "channels")
        self.levels = check_positive_int(levels, "levels")
        self.steps_per_pixel = self.channels
        self.noise_size = self.levels  # one Gumbel per level

    def _config(self):
        return self.channels, self.levels

    def noise(self, uniform, dtype):
        """Uniforms [..., L] in (0, 1) -> Gumbel noise [..., L] in ``dtype``."""
        return _gumbel(ops.cast(uniform, dtype))

    @property
    def num_outputs(self):
        return self.levels * self.channels

    def params_from_outputs(self, outputs):
        """[B, H, W, L C] -> logits [B, H, W, C, L]."""
        shape = ops.shape(outputs)
        logits = ops.reshape(outputs, (shape[0], shape[1], shape[2], self.levels, self.channels))
        return ops.transpose(logits, (0, 1, 2, 4, 3))

    @property
    def output_order(self):
        """The network's output maps in channel-major order: int [L C], map ``level * C + c`` at ``c * L + level``.

        A 1x1 convolution whose kernel columns are taken in this order emits the logits already
        laid out as [..., C, L] (``params_from_ordered_outputs``): permuting the kernel is
        cheaper than transposing the [B, H, W, C, L] logits and their gradient.
        """
        return np.arange(self.levels * self.channels).reshape(self.levels, self.channels).T.reshape(-1)

    def params_from_ordered_outputs(self, outputs):
        """[B, H, W, L C] in ``output_order`` -> logits [B, H, W, C, L]."""
        shape = ops.shape(outputs)
        return ops.reshape(outputs, (shape[0], shape[1], shape[2], self.channels, self.levels))

    @_one_program_on_jax
    def log_prob(self, params, images):
        """Log-likelihood in nats of integer-valued images [B, H, W, C] -> [B].

        log p(x) = logit[x] - logsumexp(logits) per sub-pixel, with logits [B, H, W, C, L].
        """
        logits = _float(params)
        # The target logit as a one-hot product rather than a gather from log_softmax: no
        # [..., 256] log_softmax tensor, and an elementwise gradient instead of a scatter
        # (take_along_axis's gradient, UnsortedSegmentSum in TF, was ~6% of a training step).
        one_hot = ops.one_hot(ops.cast(images, "int32"), self.levels, dtype=logits.dtype)
        per_subpixel = ops.sum(logits * one_hot, axis=-1) - ops.logsumexp(logits, axis=-1)  # [B, H, W, C]
        return ops.sum(per_subpixel, axis=(1, 2, 3))

    def sample_step(self, pixel_params, pixel, channel, temperature, noise):
        """Draws channel ``channel`` of one pixel.

        Args:
          pixel_params: logits [B, C, L] at the pixel.
          pixel: current values [B, C] (float, 0..L-1).
          channel: int scalar, the channel drawn.
          temperature: float scalar > 0, divides the logits.
          noise: this step's ``noise(uniform)``, [B, L].

        Returns:
          [B, C]: ``pixel`` with ``channel`` replaced by the draw (Gumbel-max).
        """
        logits = ops.take(_float(pixel_params), channel, axis=1)
        logits = logits / ops.cast(temperature, logits.dtype)
        value = ops.cast(ops.argmax(logits + ops.cast(noise, logits.dtype), axis=-1), "float32")
        is_channel = ops.arange(self.channels) == channel
        return ops.where(is_channel[None, :], value[:, None], pixel)


class LogisticMixtureHead(_Head):
    """PixelCNN++ discretized logistic mixture (Salimans et al. 2017, eqs. 2-3).

    Parameters per pixel, P = K * (1 + 2C + C(C-1)/2), in this order (the
    component index k runs fastest inside each row):

        [0, K)                     mixture logits pi_k (one indicator per pixel)
        rows 0 .. C-1              means mu_{c,k} (in [-1, 1] pixel scale)
        rows C .. 2C-1             log-scales log s_{c,k} (clamped below at -7)
        rows 2C .. 2C+C(C-1)/2-1   coupling coefficients, tanh-squashed, for the
                                   pairs (c, c') with c' < c in the order
                                   (1,0), (2,0), (2,1): a, b, c of the paper

    where row r occupies ``[K + r K, K + (r + 1) K)``. The mean of channel c is
    mu_{c,k} + sum_{c'<c} coeff_{c,c',k} x_{c'} with x the actual earlier values
    in [-1, 1], e.g. mu_g + a r and mu_b + b r + c g. Each channel value is a
    logistic of that mean and scale, discretised to 256 bins of width 2/255 with
    the edge bins 0 and 255 extending to -inf and +inf. On TensorFlow the likelihood
    is built from tfp distributions (QuantizedDistribution over a Logistic shifted
    by -0.5, in 0..255 units, and MixtureSameFamily); on other backends it is the
    same formula in keras.ops.
    """

    name = "logistic_mixture"
    pixel_level_masks = True  # parameters must not see any channel of the current pixel
    min_log_scale = -7.0

    def __init__(self, channels, num_mixtures):
        self.channels = check_positive_int(channels, "channels")
        self.num_mixtures = check_positive_int(num_mixtures, "num_mixtures")
        self.steps_per_pixel = 1
        self.num_coeffs = self.channels * (self.channels - 1) // 2
        self.noise_size = num_mixtures + channels  # a Gumbel per component, a logistic per channel

    def _config(self):
        return self.channels, self.num_mixtures

    def noise(self, uniform, dtype):
        """Uniforms [..., K + C] in (0, 1) -> [..., K + C] in ``dtype``: K Gumbel, then C logistic."""
        uniform = ops.cast(uniform, dtype)
        k = self.num_mixtures
        return ops.concatenate([_gumbel(uniform[..., :k]), _logistic(uniform[..., k:])], axis=-1)

    @property
    def num_outputs(self):
        return self.num_mixtures * (1 + 2 * self.channels + self.num_coeffs)

    output_order = None  # the parameters are the outputs as they come

    def params_from_outputs(self, outputs):
        return outputs

    def split(self, params):
        """params [..., P] -> the mixture's parts.

        Returns:
          (logits [..., K], means [..., C, K], log_scales [..., C, K], coeffs [..., C(C-1)/2, K]).
        """
        params = _float(params)
        k, c = self.num_mixtures, self.channels
        logits = params[..., :k]
        rows = ops.reshape(params[..., k:], tuple(ops.shape(params)[:-1]) + (2 * c + self.num_coeffs, k))
        means = rows[..., :c, :]
        log_scales = ops.maximum(rows[..., c : 2 * c, :], self.min_log_scale)
        coeffs = ops.tanh(rows[..., 2 * c :, :])
        return logits, means, log_scales, coeffs

    def coupled_means(self, means, coeffs, x):
        """Channel means given the earlier channels' values x [..., C] in [-1, 1] -> [..., C, K]."""
        coupled, pair = [means[..., 0, :]], 0
        for c in range(1, self.channels):
            mean = means[..., c, :]
            for earlier in range(c):
                mean = mean + coeffs[..., pair, :] * x[..., earlier, None]
                pair += 1
            coupled.append(mean)
        return ops.stack(coupled, axis=-2)

    @_one_program_on_jax
    def log_prob(self, params, images):
        """Log-likelihood in nats of integer-valued images [B, H, W, C] -> [B].

        tfp's distributions on TensorFlow; the same formula in keras.ops elsewhere
        (``discretized_logistic_mixture_log_prob``; tfp's JAX substrate does not
        import with the jax pinned here), pinned to tfp's in tests/test_likelihood.py.
        """
        logits, means, log_scales, coeffs = self.split(params)
        images = ops.cast(images, logits.dtype)
        means = self.coupled_means(means, coeffs, images / 127.5 - 1.0)
        if keras.backend.backend() == "tensorflow":
            return _tfp_mixture_log_prob(logits, means, log_scales, images)
        return discretized_logistic_mixture_log_prob(logits, means, log_scales, images)

    def sample_step(self, pixel_params, pixel, channel, temperature, noise):
        """Draws all channels of one pixel (``pixel`` and ``channel`` unused: one step per pixel).

        ``noise`` is this step's ``noise(uniform)``, [B, K + C]. The indicator is
        a Gumbel-max draw from logits / temperature; each channel is
        mean + s * temperature * (logistic noise), rounded to its bin (ceil(y - 0.5),
        the QuantizedDistribution convention) and clipped to 0..255; later
        channels' means use the earlier channels' drawn values.

        Returns:
          [B, C] float values in 0..255.
        """
        logits, means, log_scales, coeffs = self.split(pixel_params)
        k, dtype = self.num_mixtures, logits.dtype
        temperature = ops.cast(temperature, dtype)
        noise = ops.cast(noise, dtype)
        component = ops.one_hot(ops.argmax(logits / temperature + noise[:, :k], axis=-1), k, dtype=dtype)  # [B, K]
        pick = lambda t: ops.sum(t * component[..., None, :], axis=-1)  # [B, rows, K] -> [B, rows]
        means, scales, coeffs = pick(means), ops.exp(pick(log_scales)) * temperature, pick(coeffs)
        values, pair = [], 0
        for c in range(self.channels):
            mean = means[:, c]
            for earlier in range(c):
                mean = mean + coeffs[:, pair] * (values[earlier] / 127.5 - 1.0)
                pair += 1
            y = 127.5 * (mean + scales[:, c] * noise[:, k + c] + 1.0)
            values.append(ops.clip(ops.ceil(y - 0.5), 0.0, PIXEL_LEVELS - 1.0))
        return ops.cast(ops.stack(values, axis=-1), "float32")


def _tfp_mixture_log_prob(logits, means, log_scales, images):
    """tfp's log-likelihood of the mixture (TensorFlow): arguments as ``discretized_logistic_mixture_log_prob``."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfd, tfb = tfp.distributions, tfp.bijectors
    # [-1, 1] -> 0..255 units; components to the batch axis, channels to the event.
    locs = tf.linalg.matrix_transpose(127.5 * (means + 1.0))
    scales = tf.linalg.matrix_transpose(127.5 * tf.exp(log_scales))
    channel = tfd.QuantizedDistribution(
        tfd.TransformedDistribution(tfd.Logistic(locs, scales), tfb.Shift(tf.constant(-0.5, locs.dtype))),
        low=0.0,
        high=float(PIXEL_LEVELS - 1),
    )
    pixel = tfd.Independent(channel, reinterpreted_batch_ndims=1)
    mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=logits), pixel)
    return tf.reduce_sum(mixture.log_prob(images), axis=[1, 2])


def discretized_logistic_mixture_log_prob(logits, means, log_scales, images):
    """Log-likelihood in nats of images under a discretized logistic mixture, in keras.ops.

    Channel value x in 0..255 of a component with mean m and scale s (0..255 units,
    m = 127.5 (mean + 1), s = 127.5 exp(log_scale)) has probability
    F(x + 0.5) - F(x - 0.5), F the logistic CDF, with F(-0.5) := 0 and F(255.5) := 1
    (the edge bins reach to -inf and +inf). With a = (x + 0.5 - m) / s and
    b = (x - 0.5 - m) / s, sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)),
    so its log is log_sigmoid(a) + log_sigmoid(-b) + log(-expm1(-1 / s)): no
    cancellation in either tail.

    Args:
      logits: [B, H, W, K] mixture logits.
      means: [B, H, W, C, K] coupled means in [-1, 1] scale.
      log_scales: [B, H, W, C, K].
      images: [B, H, W, C] values 0..255 (the float dtype of ``logits``).

    Returns:
      [B] log-likelihoods.
    """
    x = images[..., None]  # [B, H, W, C, 1]
    inverse_scale = ops.exp(-log_scales) / 127.5
    centred = x - 127.5 * (means + 1.0)
    upper = ops.where(x < PIXEL_LEVELS - 1, ops.log_sigmoid((centred + 0.5) * inverse_scale), 0.0)
    lower = ops.where(x > 0, ops.log_sigmoid(-(centred - 0.5) * inverse_scale), 0.0)
    interior = ops.logical_and(x > 0, x < PIXEL_LEVELS - 1)
    width = ops.where(interior, ops.log(-ops.expm1(-inverse_scale)), 0.0)
    per_component = ops.sum(upper + lower + width, axis=-2)  # [B, H, W, K]: the channels of one pixel
    per_pixel = ops.logsumexp(ops.log_softmax(logits, axis=-1) + per_component, axis=-1)
    return ops.sum(per_pixel, axis=(1, 2))


HEADS = ("softmax", "logistic_mixture")


def make_head(name, channels, num_mixtures, num_categories=None):
    """The head called ``name`` (one of ``HEADS``).

    Args:
      name: "softmax" or "logistic_mixture".
      channels: C >= 1, the image channels.
      num_mixtures: K >= 1, the mixture's components (unused by the softmax head).
      num_categories: None for 8-bit intensities, else the categories of each
        sub-position (softmax head only).

    Returns:
      A ``SoftmaxHead`` or ``LogisticMixtureHead``; ValueError for an unknown name or a bad argument.
    """
    if name == "softmax":
        return SoftmaxHead(channels, PIXEL_LEVELS if num_categories is None else num_categories)
    if name == "logistic_mixture":
        if num_categories is not None:
            raise ValueError(
                "num_categories: the logistic_mixture head models ordered 8-bit intensities; use head='softmax' "
                f"for {num_categories} categories."
            )
        return LogisticMixtureHead(channels, num_mixtures)
    raise ValueError(f"head: expected one of {HEADS}, got {name!r}.")


def mask_color_groups(head):
    """The colour groups the network's masks need under ``head``: 1 where it masks whole pixels, else its C."""
    return 1 if head.pixel_level_masks else head.channels


def bits_per_dim(log_prob_nats, image_shape):
    """Nats per image [B] -> bits per sub-pixel [B]."""
    return -log_prob_nats / (math.prod(image_shape) * math.log(2.0))
