"""XLA-compiled sampling (``jit_compile``) draws exactly the images of the graph samplers.

Images are compared in float64, where the XLA and TF kernels' parameters agree
to ~1e-15 and no draw can land on the other side of a boundary; the random bits
themselves come from integer hashing and are compared bit for bit.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_images, randomize_weights
from test_autoencoder import randomize
from test_fast_sampling import make_model

import keras_pixelcnn as kp
from keras_pixelcnn.noise import normalize_seed, seed_key, uniform_noise

# (head, channels, conditioning, image size, kernel, layers, skip)
CONFIGS = [
    ("softmax", 3, "class", (4, 5), 3, 2, False),
    ("softmax", 1, "spatial_vector", (5, 4), 5, 2, True),
    ("softmax", 3, "none", (3, 4), 5, 3, True),
    ("logistic_mixture", 3, "vector", (4, 5), 3, 3, True),
    ("logistic_mixture", 1, "spatial_class", (5, 3), 3, 2, False),
    ("logistic_mixture", 3, "spatial_vector", (3, 4), 5, 1, False),
]


def _sample(model, condition, **kwargs):
    if condition is None:
        return np.asarray(model.sample(num_samples=2, **kwargs))
    return np.asarray(model.sample(condition=condition, **kwargs))


@pytest.mark.large  # large: compiles samplers with XLA
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_xla_cached_equals_graph_cached(config):
    model, condition = make_model(*config)
    graph = _sample(model, condition, seed=(3, 9), temperature=0.9, jit_compile=False)
    xla = _sample(model, condition, seed=(3, 9), temperature=0.9, jit_compile=True)
    np.testing.assert_array_equal(xla, graph)
    assert graph.std() > 0
    np.testing.assert_array_equal(_sample(model, condition, seed=(3, 9), temperature=0.9), xla)  # None = XLA


@pytest.mark.large  # large: compiles samplers with XLA
@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[3]], ids=lambda c: "-".join(map(str, c)))
def test_xla_naive_equals_xla_cached(config):
    model, condition = make_model(*config)
    naive = _sample(model, condition, seed=5, method="naive", jit_compile=True)
    np.testing.assert_array_equal(naive, _sample(model, condition, seed=5, method="cached", jit_compile=True))
    np.testing.assert_array_equal(naive, _sample(model, condition, seed=5, method="naive", jit_compile=False))


def test_single_stack_pixelcnn_xla_equals_graph():
    model = kp.PixelCNN((3, 4, 3), num_layers=2, filters=6, kernel_size=3, num_classes=2, dtype="float64")
    randomize_weights(model, seed=1, scale=0.3)
    classes = np.array([1, 0, 1])
    graph = np.asarray(model.sample(condition=classes, seed=2, jit_compile=False))
    np.testing.assert_array_equal(np.asarray(model.sample(condition=classes, seed=2, jit_compile=True)), graph)


@pytest.mark.large  # large: compiles samplers with XLA
@pytest.mark.parametrize("spatial", [False, True])
def test_autoencoder_reconstruct_and_interpolate_xla_equal_graph(spatial):
    model = kp.PixelCNNAutoEncoder(
        (5, 4, 1), 3, num_layers=2, filters=4, kernel_size=3, encoder_filters=4, spatial_condition=spatial,
        dtype="float64",
    )
    randomize(model, seed=2)
    images = random_images((2, 5, 4, 1), seed=1)
    graph = np.asarray(model.reconstruct(images, 2, seed=4, jit_compile=False))
    np.testing.assert_array_equal(np.asarray(model.reconstruct(images, 2, seed=4, jit_compile=True)), graph)
    np.testing.assert_array_equal(np.asarray(model.reconstruct(images, 2, seed=4)), graph)
    assert graph.std() > 0
    line_graph, codes = model.interpolate(images[0], images[1], steps=3, seed=1, jit_compile=False)
    line_xla, _ = model.interpolate(images[0], images[1], steps=3, seed=1, jit_compile=True)
    np.testing.assert_array_equal(np.asarray(line_xla), np.asarray(line_graph))


@pytest.mark.large  # large: compiles samplers with XLA
@pytest.mark.parametrize("bad", ["auto", 1, 0, "True", [True]])
def test_bad_jit_compile_values_are_refused(bad):
    model, condition = make_model("softmax", 1, "class", (2, 2), 3, 1, False)
    with pytest.raises(ValueError, match=r"jit_compile: expected None \(auto\), True or False"):
        model.sample(condition=condition, jit_compile=bad)
    autoencoder = kp.PixelCNNAutoEncoder((4, 4, 1), 2, num_layers=1, filters=4, kernel_size=3, encoder_filters=4)
    with pytest.raises(ValueError, match="jit_compile"):
        autoencoder.reconstruct(random_images((1, 4, 4, 1)), jit_compile=bad)


@pytest.mark.large  # large: compiles samplers with XLA
@pytest.mark.tensorflow_only  # tf.function(jit_compile=True); test_backends compares the bits across backends
def test_uniform_noise_is_counter_based_and_identical_under_xla():
    key = seed_key(tf.constant(normalize_seed(7)))
    steps = tf.range(10, 16)
    rows = uniform_noise(key, steps, 3, 256).numpy()
    singles = np.stack([uniform_noise(key, tf.constant([s]), 3, 256).numpy()[0] for s in range(10, 16)])
    np.testing.assert_array_equal(rows, singles)  # a row at once == one step at a time
    xla = tf.function(lambda k, s: uniform_noise(k, s, 3, 256), jit_compile=True)(key, steps).numpy()
    np.testing.assert_array_equal(xla, rows)
    np.testing.assert_array_equal(uniform_noise(key, steps, 5, 256).numpy()[:, :3], rows)  # batch-size independent
    assert rows.min() > 0.0 and rows.max() < 1.0
    assert abs(rows.mean() - 0.5) < 0.02 and abs(rows.var() - 1 / 12) < 0.01
    assert abs(np.corrcoef(rows[:, :, :-1].ravel(), rows[:, :, 1:].ravel())[0, 1]) < 0.05
    keys = {int(seed_key(tf.constant(normalize_seed(s)))) for s in [0, 1, (0, 1), (2**40, 0), (-1, 0), (0, 2**40)]}
    assert len(keys) == 6
