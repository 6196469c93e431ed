"""The masks themselves: exact values, and causality from the first step whatever the raw kernel holds."""

import numpy as np
import pytest

import keras_pixelcnn as kp
from keras_pixelcnn.masked_conv import group_features, group_major


def test_colour_mask_a_and_b_at_the_current_pixel():
    # 3x3 kernel, 3 input channels (R, G, B), 6 output features (groups 0,1,2,0,1,2).
    mask_a = kp.causal_mask((3, 3), (1, 1), 3, 6, "A", color_channels=3)
    mask_b = kp.causal_mask((3, 3), (1, 1), 3, 6, "B", color_channels=3)
    for mask in (mask_a, mask_b):
        assert np.all(mask[0] == 1) and np.all(mask[1, 0] == 1)  # the row above, the pixel to the left
        assert np.all(mask[1, 2] == 0) and np.all(mask[2] == 0)  # right of it, rows below
    group_out = np.arange(6) % 3
    np.testing.assert_array_equal(mask_a[1, 1], (np.arange(3)[:, None] < group_out[None, :]).astype(np.float32))
    np.testing.assert_array_equal(mask_b[1, 1], (np.arange(3)[:, None] <= group_out[None, :]).astype(np.float32))
    assert mask_a[1, 1, :, 0].sum() == 0  # R sees no channel of the current pixel
    assert list(mask_a[1, 1, :, 2]) == [1, 1, 0]  # B sees R and G


def test_pixel_level_and_unmasked_kernels():
    pixel_a = kp.causal_mask((1, 3), (0, 2), 4, 4, "A")
    np.testing.assert_array_equal(pixel_a[0, 2], 0)  # no channel of the current pixel
    np.testing.assert_array_equal(pixel_a[0, :2], 1)
    np.testing.assert_array_equal(kp.causal_mask((1, 3), (0, 2), 4, 4, "B")[0, 2], 1)
    np.testing.assert_array_equal(kp.causal_mask((2, 3), (1, 1), 4, 4, None), 1)  # the vertical stack


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_mask_is_applied_in_the_forward_pass(mask_type):
    """With the raw kernel all ones, outputs still ignore every masked input."""
    layer = kp.MaskedConv2D(3, 3, mask_type=mask_type, color_channels=3)
    layer.build((None, 4, 4, 3))
    layer.kernel.assign(np.ones(layer.kernel.shape, "float32"))
    base = np.zeros((1, 4, 4, 3), "float32")
    out = np.asarray(layer(base))
    for k in range(4 * 4 * 3):
        i, j, c = np.unravel_index(k, (4, 4, 3))
        poked = base.copy()
        poked[0, i, j, c] = 1.0
        changed = np.asarray(layer(poked))[0] != out[0]  # [H, W, 3]
        order = (np.arange(16)[:, None] * 3 + np.arange(3)[None, :]).reshape(4, 4, 3)
        limit = k if mask_type == "A" else k - 1  # outputs at sub-pixels <= limit must not change
        assert not np.any(changed & (order <= limit)), f"input sub-pixel {k} leaks"


def test_anchor_sets_the_padding():
    assert kp.MaskedConv2D(4, (1, 3), anchor=(0, 2)).causal_padding == ((0, 0), (2, 0))
    assert kp.MaskedConv2D(4, (2, 5), mask_type=None, anchor=(1, 2)).causal_padding == ((1, 0), (2, 2))
    assert kp.MaskedConv2D(4, 5).causal_padding == ((2, 2), (2, 2))
    with pytest.raises(ValueError, match="anchor: expected a position inside kernel"):
        kp.MaskedConv2D(4, 3, anchor=(3, 0))
    with pytest.raises(ValueError, match="mask_type: expected one of"):
        kp.MaskedConv2D(4, 3, mask_type="C")


def randomized(layer, inputs, seed=0):
    layer(inputs)  # builds the kernel
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
    return layer


def test_output_row_is_the_call_at_the_windows_last_row():
    """The vertical stack's sampler step: one row from the (kh - 1) dy + 1 rows ending at it."""
    images = np.random.default_rng(1).normal(size=(2, 6, 5, 3)).astype("float32")
    conv = randomized(kp.MaskedConv2D(6, (2, 3), mask_type=None, anchor=(1, 1), dilation_rate=2), images)
    full = np.asarray(conv(images))
    padded = np.pad(images, ((0, 0), (2, 0), (0, 0), (0, 0)))  # the zero rows above row 0
    for row in range(6):
        np.testing.assert_allclose(conv.output_row(padded[:, row : row + 3]), full[:, row : row + 1], atol=1e-5)
    with pytest.raises(ValueError, match="output_row: expected a kernel anchored at its last row"):
        randomized(kp.MaskedConv2D(6, 3, mask_type=None), images).output_row(padded[:, :3])


@pytest.mark.parametrize("mask_type", [None, "B"])
def test_output_order_permutes_the_outputs(mask_type):
    images = np.random.default_rng(2).normal(size=(1, 3, 3, 3)).astype("float32")
    conv = randomized(kp.MaskedConv2D(6, 1, mask_type=mask_type, color_channels=3), images)
    order = np.array([5, 2, 0, 4, 1, 3])
    np.testing.assert_allclose(conv(images, output_order=order), np.asarray(conv(images))[..., order], atol=1e-6)


def test_group_major_orders_features_group_by_group():
    # Features 0..5 in 3 colour groups (index % 3): group-major is 0, 3 | 1, 4 | 2, 5.
    features = np.arange(12).reshape(2, 6)
    np.testing.assert_array_equal(group_major(features, 3), [[0, 3, 1, 4, 2, 5], [6, 9, 7, 10, 8, 11]])
    np.testing.assert_array_equal(group_major(features.T, 3, axis=0), np.asarray(group_major(features, 3)).T)
    np.testing.assert_array_equal(group_features(features, 1, 3), [[1, 4], [7, 10]])
    assert group_major(features, 1) is features
