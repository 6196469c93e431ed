"""Sampling: shapes, determinism by seed, and draws that follow the model."""

import numpy as np
import pytest
from conftest import randomize_weights

import keras_pixelcnn as kp


@pytest.fixture(scope="module")
def models():
    built = {}
    for head in ("softmax", "logistic_mixture"):
        for channels in (1, 3):
            model = kp.ConditionalPixelCNN(
                (3, 4, channels), num_layers=2, filters=6, kernel_size=3, head=head, num_mixtures=2, num_classes=3
            )
            built[head, channels] = randomize_weights(model, scale=0.3)
    return built


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("head", ["softmax", "logistic_mixture"])
def test_samples_shape_dtype_and_seed_determinism(models, head, channels):
    model = models[head, channels]
    classes = np.array([0, 2, 1])
    first = np.asarray(model.sample(condition=classes, seed=7))
    assert first.shape == (3, 3, 4, channels) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, model.sample(condition=classes, seed=7))
    np.testing.assert_array_equal(first, model.sample(condition=classes, seed=[7, 0]))  # int s means [s, 0]
    assert not np.array_equal(first, model.sample(condition=classes, seed=8))
    assert not np.array_equal(first, model.sample(condition=classes, seed=None))


def _peaked(model, values):
    """Makes the head ignore the network and put (almost) all mass on ``values`` (one per channel)."""
    out = model.head_out
    out.kernel.assign(np.zeros(out.kernel.shape, "float32"))
    bias = np.zeros(out.bias.shape, "float32")
    channels = model.image_shape[-1]
    if model.head.name == "softmax":
        for c, v in enumerate(values):
            bias[v * channels + c] = 50.0  # output index = level * C + channel
    else:
        k = model.num_mixtures
        bias[:k] = [50.0] + [0.0] * (k - 1)  # component 0
        for c, v in enumerate(values):
            bias[k + c * k] = v / 127.5 - 1.0  # mean of component 0, channel c
            bias[k + (channels + c) * k] = -7.0  # tiny scale
    out.bias.assign(bias)


@pytest.mark.parametrize("head", ["softmax", "logistic_mixture"])
def test_samples_follow_a_peaked_distribution_per_channel(head):
    model = kp.ConditionalPixelCNN((3, 3, 3), num_layers=1, filters=6, kernel_size=3, head=head, num_mixtures=2)
    _peaked(model, [200, 3, 97])
    samples = np.asarray(model.sample(num_samples=2, seed=0)).astype(int)
    error = np.abs(samples - np.array([200, 3, 97]))
    if head == "softmax":
        assert error.max() == 0
    else:  # a logistic of scale e^-7 (0.12 levels) lands one level off ~3% of the time
        assert error.max() <= 1 and (error == 0).mean() > 0.8


def test_mixture_samples_use_the_drawn_earlier_channels():
    """Red spread wide, green = mu_g + a * red with a -> 1 (tanh(20)) and a tiny scale: green tracks red."""
    model = kp.ConditionalPixelCNN(
        (2, 2, 3), num_layers=1, filters=6, kernel_size=3, head="logistic_mixture", num_mixtures=1
    )
    _peaked(model, [0, 0, 0])
    bias = model.head_out.bias.numpy()  # K = 1: [logit, mu_r, mu_g, mu_b, log s_r, log s_g, log s_b, a, b, c]
    bias[1], bias[2], bias[4], bias[7] = 0.0, 0.0, 0.0, 20.0
    model.head_out.bias.assign(bias)
    samples = np.asarray(model.sample(num_samples=8, seed=0)).astype(int)
    red, green = samples[..., 0], samples[..., 1]
    assert red.std() > 20
    assert np.abs(green - red).max() <= 1


def test_temperature_sharpens_samples(models):
    model = models["softmax", 1]
    classes = np.zeros(16, int)
    cold = np.asarray(model.sample(condition=classes, temperature=0.05, seed=1)).astype(float)
    hot = np.asarray(model.sample(condition=classes, temperature=1.0, seed=1)).astype(float)
    assert cold.std(axis=0).mean() < hot.std(axis=0).mean()


def test_unconditional_sampling_needs_num_samples():
    model = kp.ConditionalPixelCNN((2, 2, 1), num_layers=1, filters=4, kernel_size=3)
    assert np.asarray(model.sample(num_samples=5, seed=0)).shape == (5, 2, 2, 1)
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(seed=0)
