"""The condition h reaches every pixel, (0, 0) included, in all its forms."""

import numpy as np
import pytest
from conftest import random_images, randomize_weights

import keras_pixelcnn as kp

FORMS = {
    "class": ({"num_classes": 3}, np.array([0, 1, 2, 0])),
    "vector": ({"condition_shape": (2,)}, np.array([[1, 0], [0, 1], [-1, 2], [1, 0]], "float32")),
    "spatial_class": ({"num_classes": 3, "spatial_condition": True}, np.array([0, 1, 2, 0])),
    "spatial_vector": (
        {"condition_shape": (2,), "spatial_condition": True},
        np.array([[1, 0], [0, 1], [-1, 2], [1, 0]], "float32"),
    ),
}


@pytest.mark.parametrize("model_class", [kp.ConditionalPixelCNN, kp.PixelCNN])
@pytest.mark.parametrize("head", ["softmax", "logistic_mixture"])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_different_conditions_change_every_pixel(form, head, model_class):
    kwargs, condition = FORMS[form]
    model = randomize_weights(
        model_class((4, 5, 3), num_layers=2, filters=12, kernel_size=3, head=head, num_mixtures=2, **kwargs)
    )
    images = np.repeat(random_images((1, 4, 5, 3)), 4, axis=0)  # the same image four times
    out = np.asarray(model((images, condition)))
    # Compared at the same batch position: CPU kernels may round a row differently at another.
    reference = np.asarray(model((images, np.repeat(condition[:1], 4, axis=0))))
    per_pixel = lambda a, b: np.abs(a - b).reshape(4, 5, -1).max(axis=-1)
    np.testing.assert_array_equal(out[3], reference[3])  # same condition -> same output
    for other in (1, 2):
        assert per_pixel(out[other], reference[other]).min() > 1e-4, "some pixel ignores the condition"
    assert np.abs(out[1, 0, 0] - reference[1, 0, 0]).max() > 1e-4  # pixel (0, 0) is conditioned too


def test_spatial_map_has_the_image_size_and_is_applied_per_location():
    net = kp.ConditionNetwork((5, 7, 3), num_classes=4, spatial=True, spatial_channels=8)
    s = net(np.array([0, 3]))
    assert tuple(s.shape) == (2, 5, 7, 8)
    assert np.abs(np.asarray(s[0]) - np.asarray(s[1])).max() > 0
