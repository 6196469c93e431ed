"""The cached sampler draws exactly what the naive sampler draws, and its per-step parameters are the forward pass's.

Equality of images is checked in float64, where the two paths' parameters agree
to ~1e-15 and no draw can land on the other side of a boundary; the per-step
check compares parameters directly (teacher forcing: the sampler is fed a given
image instead of its own draws).
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_images, randomize_weights

import keras_pixelcnn as kp
from keras_pixelcnn.sampling import sample_cached, sampling_function

CONDITIONS = {
    "none": ({}, None),
    "class": ({"num_classes": 3}, np.array([2, 0])),
    "vector": ({"condition_shape": (3,)}, np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -0.5]], "float32")),
    "spatial_class": ({"num_classes": 3, "spatial_condition": True}, np.array([1, 2])),
    "spatial_vector": (
        {"condition_shape": (3,), "spatial_condition": True},
        np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]], "float32"),
    ),
}

# (head, channels, conditioning, image size, kernel, layers, skip): pairwise coverage,
# receptive fields both smaller and larger than the image.
PAIRWISE = [
    ("softmax", 3, "none", (5, 7), 3, 2, False),
    ("logistic_mixture", 3, "class", (5, 7), 5, 4, True),
    ("softmax", 1, "vector", (4, 4), 5, 1, False),
    ("logistic_mixture", 1, "spatial_class", (6, 3), 3, 4, False),
    ("softmax", 3, "spatial_vector", (6, 3), 5, 2, True),
    ("logistic_mixture", 3, "none", (4, 4), 3, 1, True),
    ("softmax", 1, "class", (6, 3), 3, 4, True),
    ("logistic_mixture", 1, "vector", (5, 7), 5, 2, False),
]
FULL_GRID = [
    (head, channels, conditioning, size, kernel, layers, skip)
    for head, channels, conditioning, size, kernel, layers in itertools.product(
        ["softmax", "logistic_mixture"], [1, 3], sorted(CONDITIONS), [(5, 7), (3, 4)], [3, 5], [1, 3]
    )
    for skip in [layers == 3]
]


def make_model(head, channels, conditioning, size, kernel, layers, skip, dtype="float64", dilation_rates=None):
    kwargs, condition = CONDITIONS[conditioning]
    model = kp.ConditionalPixelCNN(
        size + (channels,),
        num_layers=layers,
        filters=6,
        kernel_size=kernel,
        head=head,
        num_mixtures=2,
        skip_connections=skip,
        dilation_rates=dilation_rates,
        dtype=dtype,
        **kwargs,
    )
    return randomize_weights(model, seed=layers + kernel, scale=0.3), condition


def assert_same_images(config, temperature=1.0, seed=(5, 11), dilation_rates=None):
    model, condition = make_model(*config, dilation_rates=dilation_rates)
    args = (2, condition, np.float32(temperature), np.array(seed, np.int64))
    naive = np.asarray(sampling_function(model, "naive", jit_compile=False)(*args))
    cached = np.asarray(sampling_function(model, "cached", jit_compile=False)(*args))
    np.testing.assert_array_equal(cached, naive)
    assert naive.std() > 0  # the draws are not degenerate


@pytest.mark.large  # large: compiles both samplers for the pairwise grid of configurations
@pytest.mark.parametrize("config", PAIRWISE, ids=lambda c: "-".join(map(str, c)))
def test_cached_equals_naive(config):
    assert_same_images(config)


@pytest.mark.slow
@pytest.mark.large  # large: the full grid of 160 configurations (3 minutes); run with -m slow
@pytest.mark.parametrize("config", FULL_GRID, ids=lambda c: "-".join(map(str, c)))
def test_cached_equals_naive_full_grid(config):
    assert_same_images(config, temperature=0.8)


@pytest.mark.parametrize(
    "config, rates",
    [pytest.param(("softmax", 3, "spatial_class", (6, 5), 3, 3, False), (1, 2, 3),
                  marks=pytest.mark.large),  # large: 90 naive sampling steps of a 3-layer model (~8 s)
     (("logistic_mixture", 1, "class", (7, 6), 5, 3, True), (2, 1, 3))],
    ids=["softmax", "mixture"],
)  # fmt: skip
def test_cached_equals_naive_with_dilation(config, rates):
    assert_same_images(config, dilation_rates=rates)


def test_public_api_default_is_cached_and_matches_naive():
    model, condition = make_model("softmax", 3, "class", (4, 5), 3, 2, False)
    assert model.sampling_methods[0] == "cached"
    default = model.sample(condition=condition, seed=3, temperature=0.9)
    np.testing.assert_array_equal(default, model.sample(condition=condition, seed=3, temperature=0.9, method="naive"))
    np.testing.assert_array_equal(default, model.sample(condition=condition, seed=3, temperature=0.9, method="cached"))
    with pytest.raises(ValueError, match=r"method: expected one of \('cached', 'naive'\)"):
        model.sample(condition=condition, method="fast")
    single = kp.PixelCNN((3, 3, 1), num_layers=1, filters=4, kernel_size=3)
    with pytest.raises(ValueError, match=r"method: expected one of \('naive',\) for PixelCNN"):
        single.sample(num_samples=1, method="cached")


class TeacherForcedHead:
    """Wraps a head: records every step's parameters and 'draws' the given image's values."""

    def __init__(self, head, images):
        self.head, self.images, self.steps = head, images, []

    def __getattr__(self, name):
        return getattr(self.head, name)

    def sample_step(self, pixel_params, pixel, channel, temperature, key):
        width, channels = self.images.shape[2], self.images.shape[3]
        index = len(self.steps)
        i, j = divmod(index // self.head.steps_per_pixel, width)
        self.steps.append(((i, j, int(channel)), np.asarray(pixel_params)))
        target = tf.constant(self.images[:, i, j], tf.float32)
        if self.head.steps_per_pixel == 1:
            return target
        return tf.where(tf.range(channels)[None, :] == channel, target, pixel)


@pytest.mark.tensorflow_only  # eager TF loops run the body once per step; under JAX it is traced once
@pytest.mark.parametrize(
    "config",
    [("softmax", 3, "spatial_class", (4, 5), 3, 2, True), ("logistic_mixture", 3, "vector", (5, 4), 5, 3, False)],
    ids=["softmax", "mixture"],
)
def test_each_cached_step_has_the_forward_pass_parameters(config):
    model, condition = make_model(*config, dtype="float32")
    height, width, channels = model.image_shape
    images = random_images((2, height, width, channels), seed=4)
    full = np.asarray(model(images if condition is None else (images, condition)))
    recorder = TeacherForcedHead(model.head, images)
    model.head = recorder
    try:  # eager: the while loops run step by step in Python, so the recorder sees every step in order
        sample_cached(
            model,
            2,
            None if condition is None else tf.constant(condition),
            tf.constant(1.0),
            tf.constant([0, 0], tf.int64),
        )
    finally:
        model.head = recorder.head
    assert len(recorder.steps) == height * width * model.head.steps_per_pixel
    for (i, j, channel), params in recorder.steps:
        if model.head.name == "softmax":  # the row for the channel being drawn
            np.testing.assert_allclose(params[:, channel], full[:, i, j, channel], rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_allclose(params, full[:, i, j], rtol=1e-4, atol=1e-5)
