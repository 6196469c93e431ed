"""Exact causality of the whole model, by perturbation.

Changing input sub-pixel k must leave every output for sub-pixels <= k unchanged
(softmax head: channel granularity; mixture head: pixel granularity, since its
parameters for a pixel must not see any of that pixel's channels). With enough
layers the gated model must also see *every* earlier sub-pixel: no blind spot,
no lost rows. Weights are random (the default zero-initialised head would hide
every dependency) and dependencies are collected over a few base images so that
an inactive ReLU cannot hide one.
"""

import numpy as np
import pytest
from conftest import CHANGED, UNCHANGED, dependency_matrix, randomize_weights

import keras_pixelcnn as kp


def unit_of(k, model):
    """The output unit holding sub-pixel k's own distribution."""
    return k if model.head.name == "softmax" else k // model.image_shape[-1]


CONDITIONING = {
    "none": ({}, None),
    "class": ({"num_classes": 3}, np.array([2])),
    "spatial_vector": (
        {"condition_shape": (4,), "spatial_condition": True},
        np.array([[0.5, -1.0, 2.0, 0.1]], "float32"),
    ),
}


@pytest.mark.parametrize("conditioning", sorted(CONDITIONING))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("head", ["softmax", "logistic_mixture"])
def test_gated_model_is_exactly_causal_and_sees_all_context(head, channels, conditioning):
    kwargs, condition = CONDITIONING[conditioning]
    model = kp.ConditionalPixelCNN(
        (5, 5, channels), num_layers=5, filters=24, kernel_size=3, head=head, num_mixtures=2, **kwargs
    )
    randomize_weights(model)
    deps = dependency_matrix(model, condition)
    n = deps.shape[0]
    for k in range(n):
        own = unit_of(k, model)
        assert deps[k, : own + 1].max() <= UNCHANGED, f"input sub-pixel {k} leaks into outputs up to unit {own}"
        # 5 layers of 3x3 cover the whole 5x5 past: every later unit depends on k.
        later = deps[k, own + 1 :]
        assert later.size == 0 or later.min() > CHANGED, f"output units after {own} ignore input sub-pixel {k}"


def _pixel_dependency(model, target, source):
    height, width, _ = model.image_shape
    deps = dependency_matrix(model)
    return deps[source[0] * width + source[1], target[0] * width + target[1]]


def test_gated_stacks_remove_the_blind_spot():
    model = randomize_weights(kp.ConditionalPixelCNN((5, 5, 1), num_layers=3, filters=12, kernel_size=3))
    target = (2, 1)
    for source in [(1, 3), (1, 1), (2, 0)]:  # above-right, above, left
        assert _pixel_dependency(model, target, source) > CHANGED, f"{target} does not see {source}"


def test_single_stack_pixelcnn_is_causal_but_has_the_blind_spot():
    model = randomize_weights(kp.PixelCNN((5, 5, 1), num_layers=5, filters=12, kernel_size=3))
    deps = dependency_matrix(model)
    for k in range(deps.shape[0]):
        assert deps[k, : k + 1].max() <= UNCHANGED
    target = (2, 1)
    assert deps[1 * 5 + 3, 2 * 5 + 1] <= UNCHANGED, "the single stack should miss (i-1, j+2)"
    assert deps[1 * 5 + 1, 2 * 5 + 1] > CHANGED and deps[2 * 5 + 0, 2 * 5 + 1] > CHANGED, target


@pytest.mark.parametrize("gated", [False, True])
def test_single_stack_colour_masks_are_causal(gated):
    model = randomize_weights(kp.PixelCNN((4, 4, 3), num_layers=3, filters=12, kernel_size=3, gated=gated))
    deps = dependency_matrix(model, num_bases=1)
    for k in range(deps.shape[0]):
        assert deps[k, : k + 1].max() <= UNCHANGED
    # channel order R -> G -> B within a pixel: G and B of pixel 0 see R of pixel 0.
    assert deps[0, 1] > CHANGED and deps[0, 2] > CHANGED and deps[1, 2] > CHANGED


@pytest.mark.parametrize("channels", [1, 3])
def test_dilated_gated_model_is_causal_and_reaches_further(channels):
    """Dilation 1, 2, 4 with 3x3 kernels: still exactly causal, and the last pixel sees the top row.

    float64: at this shape float32 convolutions differ by ~5e-7 between batch rows even undilated.
    """
    image_shape = (9, 5, channels)
    deps = {}
    for rates in [None, (1, 2, 4)]:
        model = kp.ConditionalPixelCNN(image_shape, num_layers=3, filters=6 * channels, kernel_size=3,
                                       dilation_rates=rates, dtype="float64")  # fmt: skip
        deps[rates] = dependency_matrix(randomize_weights(model), num_bases=2)
    for k in range(deps[None].shape[0]):
        assert deps[(1, 2, 4)][k, : k + 1].max() <= UNCHANGED, f"input sub-pixel {k} leaks"
    last = deps[None].shape[0] - 1  # the bottom-right pixel's last channel
    top = 2 * channels  # pixel (0, 2), straight above the image's bottom row's centre
    # Undilated, 3 layers reach 4 rows up (3 + the link's shift); dilated 8 (1 + 2 + 4 + 1).
    assert deps[None][top, last] <= UNCHANGED
    assert deps[(1, 2, 4)][top, last] > CHANGED
