"""A layer test for each public layer and head: config round trip, output shapes, weight counts.

In the style of Keras's ``run_layer_test`` (keras/src/testing/test_case.py):
build the layer on inputs, check its output shapes and weights, rebuild it
from ``get_config`` (directly and through Keras serialization), copy the
weights and check that the copy computes the same outputs.
"""

import keras
import numpy as np
import pytest
from conftest import random_images

import keras_pixelcnn as kp


def run_layer_test(layer_class, init_kwargs, inputs, expected_output_shapes, expected_num_weights, expected_num_params):
    """Builds ``layer_class(**init_kwargs)`` on ``inputs`` (a tuple of call arguments) and checks it.

    Args:
      layer_class: a Keras layer class registered for serialization.
      init_kwargs: its constructor arguments.
      inputs: a tuple of positional call arguments (numpy arrays or None).
      expected_output_shapes: the output's shape, or a list of shapes for a tuple of outputs.
      expected_num_weights: number of weight variables (all trainable).
      expected_num_params: total number of scalars in them.

    Returns:
      The built layer.
    """
    rng = np.random.default_rng(0)
    layer = layer_class(**init_kwargs)
    outputs = layer(*inputs)
    shapes = [tuple(o.shape) for o in outputs] if isinstance(outputs, (tuple, list)) else tuple(outputs.shape)
    assert shapes == expected_output_shapes
    assert len(layer.weights) == len(layer.trainable_weights) == expected_num_weights
    assert layer.count_params() == expected_num_params
    for weight in layer.weights:  # random, so that a weight the copy loses changes its outputs
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype(weight.dtype))
    outputs = keras.tree.map_structure(np.asarray, layer(*inputs))

    config = layer.get_config()
    for clone in (
        layer_class.from_config(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)),
    ):
        assert type(clone) is layer_class
        assert clone.get_config() == config
        clone(*inputs)  # builds the weights
        clone.set_weights(layer.get_weights())
        keras.tree.map_structure(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), outputs, clone(*inputs)
        )
    return layer


IMAGES = (random_images((2, 4, 5, 3)) / 127.5 - 1.0).astype("float32")  # [B, H, W, C] features
CLASS_H = np.eye(4, dtype="float32")[[1, 3]]  # a one-hot condition h [2, 4]
SPATIAL_S = np.random.default_rng(1).normal(size=(2, 4, 5, 2)).astype("float32")  # a map s [2, H, W, 2]


@pytest.mark.parametrize(
    "kwargs, input_features, weights, params",
    [
        (dict(filters=6, kernel_size=3, color_channels=3), 3, 2, 3 * 3 * 3 * 6 + 6),
        (dict(filters=4, kernel_size=(2, 3), mask_type=None, anchor=(1, 1), use_bias=False), 3, 1, 2 * 3 * 3 * 4),
        (dict(filters=6, kernel_size=1, mask_type="A", color_channels=3), 3, 2, 3 * 6 + 6),
    ],
)
def test_masked_conv2d(kwargs, input_features, weights, params):
    inputs = (IMAGES[..., :input_features],)
    run_layer_test(kp.MaskedConv2D, kwargs, inputs, (2, 4, 5, kwargs["filters"]), weights, params)


def gated_params(p, f, kernel_size, condition_depth=0, condition_vertical=True, skip=False):
    """Scalars of a GatedBlock: the fused convolutions and Dense layers emit 2p maps."""
    half = (kernel_size + 1) // 2
    params = half * kernel_size * f * 2 * p + 2 * p  # vertical ceil(n/2) x n
    params += half * f * 2 * p + 2 * p  # horizontal 1 x ceil(n/2)
    params += 2 * p * 2 * p + 2 * p  # the vertical-to-horizontal link
    params += (p * p + p) * (2 if skip else 1)  # the 1x1 output (and skip)
    params += condition_depth * 2 * p * (2 if condition_vertical else 1)  # V_h (and V_v), no bias
    return params


@pytest.mark.parametrize(
    "kwargs, condition, weights, params",
    [
        (dict(filters=6, kernel_size=3, first=True, color_channels=3), None, 8, gated_params(6, 3, 3)),
        (
            dict(filters=6, kernel_size=5, color_channels=3, conditioned=True, skip=True, dropout=0.2),
            CLASS_H,
            12,
            gated_params(6, 6, 5, condition_depth=4, skip=True),
        ),
        (
            dict(filters=4, kernel_size=3, conditioned=True, condition_vertical=False),
            SPATIAL_S,
            9,
            gated_params(4, 4, 3, condition_depth=2, condition_vertical=False),
        ),
    ],
)
def test_gated_block(kwargs, condition, weights, params):
    p = kwargs["filters"]
    output_shapes = [(2, 4, 5, p)] * (3 if kwargs.get("skip") else 2)
    inputs = (IMAGES, IMAGES, condition) if kwargs.get("first") else (IMAGES[..., :1].repeat(p, -1),) * 2 + (condition,)
    run_layer_test(kp.GatedBlock, kwargs, inputs, output_shapes, weights, params)


@pytest.mark.parametrize(
    "kwargs, condition, weights, params",
    [
        (dict(filters=6, kernel_size=3, first=True, color_channels=3), None, 2, 3 * 3 * 3 * 6 + 6),
        (dict(filters=6, kernel_size=5, color_channels=3, gated=True, conditioned=True), CLASS_H, 3,
         5 * 5 * 6 * 12 + 12 + 4 * 12),
        (dict(filters=3, kernel_size=3, conditioned=True, dropout=0.5), SPATIAL_S, 3, 3 * 3 * 3 * 3 + 3 + 2 * 3),
    ],
)  # fmt: skip
def test_masked_block(kwargs, condition, weights, params):
    features = 3 if kwargs.get("first") else kwargs["filters"]
    inputs = (IMAGES[..., :1].repeat(features, -1), condition)
    run_layer_test(kp.MaskedBlock, kwargs, inputs, (2, 4, 5, kwargs["filters"]), weights, params)


@pytest.mark.parametrize(
    "kwargs, condition, output_shape, weights, params",
    [
        (dict(image_shape=(4, 5, 3), num_classes=4), np.array([1, 3]), (2, 4), 0, 0),
        (dict(image_shape=(4, 5, 3)), CLASS_H, (2, 4), 0, 0),
        # A Dense to a 1 x 2 grid of 8 maps, then two 3x3 stride-2 transposed convolutions, cropped to 4 x 5.
        (
            dict(image_shape=(4, 5, 3), num_classes=4, spatial=True, spatial_channels=8),
            np.array([0, 2]),
            (2, 4, 5, 8),
            6,
            (4 * 16 + 16) + 2 * (3 * 3 * 8 * 8 + 8),
        ),
    ],
)
def test_condition_network(kwargs, condition, output_shape, weights, params):
    run_layer_test(kp.ConditionNetwork, kwargs, (condition,), output_shape, weights, params)


@pytest.mark.parametrize(
    "name, channels, mixtures, num_outputs, params_shape",
    [
        ("softmax", 3, 5, 256 * 3, (2, 4, 5, 3, 256)),
        ("softmax", 1, 5, 256, (2, 4, 5, 1, 256)),
        ("logistic_mixture", 3, 2, 2 * (1 + 2 * 3 + 3), (2, 4, 5, 20)),
        ("logistic_mixture", 1, 4, 4 * 3, (2, 4, 5, 12)),
    ],
)
def test_heads(name, channels, mixtures, num_outputs, params_shape):
    """Heads hold no weights: their "config" is (name, C, K), their size the network outputs they read."""
    head = kp.make_head(name, channels, mixtures)
    assert head.name == name and head.num_outputs == num_outputs
    assert head.steps_per_pixel == (channels if name == "softmax" else 1)
    outputs = np.random.default_rng(2).normal(size=(2, 4, 5, num_outputs)).astype("float32")
    params = head.params_from_outputs(outputs)
    assert tuple(params.shape) == params_shape
    images = random_images((2, 4, 5, channels))
    log_prob = np.asarray(head.log_prob(params, images))
    assert log_prob.shape == (2,) and np.all(np.isfinite(log_prob)) and np.all(log_prob < 0)
    clone = kp.make_head(head.name, head.channels, mixtures)
    np.testing.assert_array_equal(clone.log_prob(clone.params_from_outputs(outputs), images), log_prob)
