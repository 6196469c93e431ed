"""Likelihood correctness of both heads against independent numpy computations."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_images, randomize_weights

import keras_pixelcnn as kp
from keras_pixelcnn.heads import (
    LogisticMixtureHead,
    SoftmaxHead,
    _tfp_mixture_log_prob,
    discretized_logistic_mixture_log_prob,
)


def np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("channels", [1, 3])
def test_softmax_log_prob_matches_numpy(channels):
    model = randomize_weights(kp.ConditionalPixelCNN((4, 3, channels), num_layers=2, filters=6, kernel_size=3))
    images = random_images((3, 4, 3, channels))
    logits = np.asarray(model(images), np.float64)  # [B, H, W, C, 256]
    expected = np.take_along_axis(np_log_softmax(logits), images[..., None].astype(int), axis=-1).sum(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(model.log_prob(images), expected, rtol=1e-5)
    np.testing.assert_allclose(model.bits_per_dim(images), -expected / (4 * 3 * channels * math.log(2)), rtol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_softmax_probabilities_of_the_last_subpixel_sum_to_one(channels):
    """Summing p(image) over the 256 values of the last sub-pixel gives p(everything before it)."""
    model = randomize_weights(kp.ConditionalPixelCNN((3, 3, channels), num_layers=2, filters=6, kernel_size=3))
    images = np.repeat(random_images((1, 3, 3, channels)), 256, axis=0)
    images[:, -1, -1, -1] = np.arange(256)
    joint = np.asarray(model.log_prob(images), np.float64)
    logits = np_log_softmax(np.asarray(model(images[:1]), np.float64))[0]  # [H, W, C, 256]
    prefix = np.take_along_axis(logits, images[0, ..., None].astype(int), axis=-1)[..., 0].ravel()[:-1].sum()
    np.testing.assert_allclose(np.logaddexp.reduce(joint), prefix, rtol=1e-5)


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def reference_mixture_log_prob(params, images, num_mixtures):
    """PixelCNN++ (Salimans et al. 2017, eqs. 2-3) evaluated directly in float64.

    p(x_c | k) = sigma((x + 1/255 - mu) / s) - sigma((x - 1/255 - mu) / s) on the
    [-1, 1] scale, with the edge bins x = -1 and x = 1 reaching -inf / +inf. The
    difference of sigmoids is evaluated in the exact identity
    sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - exp(b - a)), so that tiny
    scales do not cancel to 0 in float64 either.
    """
    channels = images.shape[-1]
    k = num_mixtures
    params = params.astype(np.float64)
    logits = params[..., :k]
    rows = params[..., k:].reshape(params.shape[:-1] + (-1, k))
    means, log_scales = rows[..., :channels, :], np.maximum(rows[..., channels : 2 * channels, :], -7.0)
    coeffs = np.tanh(rows[..., 2 * channels :, :])
    x = images.astype(np.float64) / 127.5 - 1.0  # [..., C]
    total = np_log_softmax(logits)  # [..., K]
    pair = 0
    for c in range(channels):
        mean = means[..., c, :].copy()
        for earlier in range(c):
            mean += coeffs[..., pair, :] * x[..., earlier, None]
            pair += 1
        inv_s = np.exp(-log_scales[..., c, :])
        centered = x[..., c, None] - mean
        plus, minus = inv_s * (centered + 1 / 255), inv_s * (centered - 1 / 255)
        middle = np_log_sigmoid(plus) + np_log_sigmoid(-minus) + np.log(-np.expm1(minus - plus))
        value = images[..., c, None]
        total = total + np.where(
            value == 0, np_log_sigmoid(plus), np.where(value == 255, np_log_sigmoid(-minus), middle)
        )
    return np.logaddexp.reduce(total, axis=-1).sum(axis=(1, 2))


def random_mixture_params(rng, shape, channels, k):
    head = LogisticMixtureHead(channels, k)
    params = rng.normal(0, 1.0, shape + (head.num_outputs,))
    rows = params[..., k:].reshape(shape + (-1, k))
    rows[..., channels : 2 * channels, :] = rng.uniform(-10, 0, rows[..., channels : 2 * channels, :].shape)  # tiny too
    return params.astype(np.float32)


def test_heads_configured_alike_share_one_compiled_log_prob_on_jax():
    """Heads hold no weights: equal when configured alike, and on JAX one program per shape for all of them."""
    assert SoftmaxHead(3) == SoftmaxHead(3) and hash(SoftmaxHead(3)) == hash(SoftmaxHead(3))
    assert SoftmaxHead(3) != SoftmaxHead(3, levels=16) and SoftmaxHead(1) != LogisticMixtureHead(1, 1)
    assert LogisticMixtureHead(3, 2) == LogisticMixtureHead(3, 2) != LogisticMixtureHead(3, 4)
    params, images = random_mixture_params(np.random.default_rng(0), (2, 3, 5), 3, 2), random_images((2, 3, 5, 3))
    compiles = []
    if keras.backend.backend() == "jax":
        import jax.monitoring

        def count(event, duration, **kwargs):
            if event.endswith("backend_compile_duration"):
                compiles.append(event)

        jax.monitoring.register_event_duration_secs_listener(count)
    try:
        first = LogisticMixtureHead(3, 2).log_prob(params, images)
        first_compiles = len(compiles)
        second = LogisticMixtureHead(3, 2).log_prob(params, images)  # another head, configured alike
    finally:
        if keras.backend.backend() == "jax":
            jax.monitoring.unregister_event_duration_listener(count)
    if keras.backend.backend() == "jax":
        assert (first_compiles, len(compiles)) == (1, 1)  # eagerly, op by op, this head compiled 46
    np.testing.assert_array_equal(second, first)
    op_by_op = LogisticMixtureHead.log_prob.__wrapped__(LogisticMixtureHead(3, 2), params, images)
    np.testing.assert_allclose(first, op_by_op, rtol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_mixture_log_prob_matches_the_pixelcnn_pp_formula(channels):
    rng = np.random.default_rng(0)
    k = 3
    params = random_mixture_params(rng, (4, 5, 5), channels, k)
    images = random_images((4, 5, 5, channels))
    images[0, 0] = 0
    images[0, 1] = 255
    images[1, :, :2] = 0
    images[1, :, 3:] = 255
    head = LogisticMixtureHead(channels, k)
    ours = np.asarray(head.log_prob(params, images), np.float64)
    np.testing.assert_allclose(ours, reference_mixture_log_prob(params, images, k), rtol=2e-5)


@pytest.mark.tensorflow_only  # tf.GradientTape (the keras.ops likelihood's: the test below)
def test_mixture_log_prob_with_tiny_scales_is_finite_with_finite_gradients():
    channels, k = 3, 2
    head = LogisticMixtureHead(channels, k)
    params = np.zeros((2, 2, 2, head.num_outputs), np.float32)
    params[..., k + channels * k : k + 2 * channels * k] = -30.0  # log-scales far below the clamp
    params[..., k : k + channels * k] = 0.9  # means near 242, far from 0 and close to 255
    images = np.array([0, 255, 128, 242], np.uint8)[np.arange(24) % 4].reshape(2, 2, 2, 3)
    params = tf.constant(params)
    with tf.GradientTape() as tape:
        tape.watch(params)
        log_prob = head.log_prob(params, images)
    grads = tape.gradient(log_prob, params)
    assert np.all(np.isfinite(log_prob)) and np.all(np.isfinite(grads))
    np.testing.assert_allclose(log_prob, reference_mixture_log_prob(params.numpy(), images, k), rtol=2e-5)


@pytest.mark.tensorflow_only  # tfp (TensorFlow) is the reference
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_keras_ops_mixture_likelihood_equals_tfps(dtype):
    """The likelihood JAX uses (keras.ops) is tfp's, edge bins and tiny scales included, with finite gradients."""
    head = LogisticMixtureHead(3, 4)
    rng = np.random.default_rng(1)
    params = rng.normal(0.0, 1.5, (3, 4, 5, head.num_outputs)).astype(dtype)
    params[0, 0, :, head.num_mixtures + 3 * 4 : head.num_mixtures + 6 * 4] = -30.0  # log-scales below the clamp
    images = rng.integers(0, 256, (3, 4, 5, 3))
    images[:, 1], images[:, 2, :, 0] = 0, 255  # the edge bins
    params = tf.constant(params)
    with tf.GradientTape() as tape:
        tape.watch(params)
        logits, means, log_scales, coeffs = head.split(params)
        x = tf.cast(images, logits.dtype)
        means = head.coupled_means(means, coeffs, x / 127.5 - 1.0)
        ours = discretized_logistic_mixture_log_prob(logits, means, log_scales, x)
    np.testing.assert_allclose(ours, _tfp_mixture_log_prob(logits, means, log_scales, x), rtol=1e-5)
    assert np.all(np.isfinite(tape.gradient(ours, params)))


def test_untrained_softmax_model_gives_8_bits_per_dim_on_any_backend():
    model = kp.ConditionalPixelCNN((6, 6, 3), num_layers=2, filters=12, kernel_size=3, num_classes=4)
    np.testing.assert_allclose(model.bits_per_dim(random_images((3, 6, 6, 3)), np.array([0, 1, 3])), 8.0, atol=1e-5)


def mixture_joint(head, params, values):
    """p(values) of one pixel under ``head`` for a batch of value tuples [N, C]."""
    n = len(values)
    images = np.asarray(values, np.uint8).reshape(n, 1, 1, -1)
    tiled = np.broadcast_to(params, (n, 1, 1, params.shape[-1]))
    return np.exp(np.asarray(head.log_prob(tiled, images), np.float64))


def test_mixture_channel_conditionals_sum_to_one():
    """sum_r p(r) = 1, sum_g p(r, g) = p(r), sum_b p(r, g, b) = p(r, g): each conditional normalises."""
    rng = np.random.default_rng(1)
    k = 3
    full = random_mixture_params(rng, (1,), 3, k)[0]
    rows = full[k:].reshape(-1, k)  # means r,g,b | log-scales r,g,b | coeffs (g,r), (b,r), (b,g)
    one = np.concatenate([full[:k], rows[[0, 3]].ravel()])
    two = np.concatenate([full[:k], rows[[0, 1, 3, 4, 6]].ravel()])
    heads = [LogisticMixtureHead(c, k) for c in (1, 2, 3)]
    levels = np.arange(256)
    np.testing.assert_allclose(mixture_joint(heads[0], one, levels[:, None]).sum(), 1.0, rtol=1e-5)
    for r in (0, 77, 255):
        p_r = mixture_joint(heads[0], one, [[r]])[0]
        p_rg = mixture_joint(heads[1], two, np.stack([np.full(256, r), levels], -1))
        np.testing.assert_allclose(p_rg.sum(), p_r, rtol=1e-4)
        for g in (0, 128, 255):
            p_rgb = mixture_joint(heads[2], full, np.stack([np.full(256, r), np.full(256, g), levels], -1))
            np.testing.assert_allclose(p_rgb.sum(), p_rg[g], rtol=1e-4)


@pytest.mark.tensorflow_only  # TF's float32 sum is exact here; XLA's is 1e-6 off (the next test, any backend)
def test_untrained_softmax_model_gives_exactly_8_bits_per_dim():
    model = kp.ConditionalPixelCNN((6, 6, 3), num_layers=2, filters=12, kernel_size=3, num_classes=4)
    images = random_images((3, 6, 6, 3))
    np.testing.assert_allclose(model.bits_per_dim(images, np.array([0, 1, 3])), 8.0, atol=1e-6)


@pytest.mark.large  # large: trains 150 steps
def test_small_model_overfits_a_fixed_batch_below_4_bits_per_dim():
    keras.utils.set_random_seed(1)
    rows, cols = np.mgrid[0:6, 0:6]
    images = np.stack(
        [(rows * 40) % 256, (cols * 40) % 256, ((rows + cols) * 20) % 256, 255 - (rows * cols * 7) % 256], 0
    )[..., None].astype(np.uint8)
    model = kp.ConditionalPixelCNN((6, 6, 1), num_layers=3, filters=32, kernel_size=3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = float(np.mean(model.bits_per_dim(images)))
    # 150 steps on the same batch, as one epoch: 150 one-step epochs took 2.8x as long (each epoch's
    # data iterator and callbacks), for the same weights.
    history = model.fit(np.tile(images, (150, 1, 1, 1)), batch_size=4, shuffle=False, verbose=0)
    after = float(np.mean(model.bits_per_dim(images)))
    assert before == pytest.approx(8.0, abs=1e-5)
    assert after < 4.0, f"bits/dim after 150 steps: {after}"
    assert history.history["bits_per_dim"][-1] == pytest.approx(history.history["loss"][-1], rel=1e-5)
