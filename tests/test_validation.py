"""The shared argument checks (keras_pixelcnn.validation) and the layers and models that use them."""

import keras
import numpy as np
import pytest

import keras_pixelcnn as kp
from keras_pixelcnn import model as model_lib
from keras_pixelcnn import validation


@pytest.mark.parametrize("value", [0, -1, True, False, 2.0, "3", None, np.bool_(True)])
def test_positive_int_refuses_bools_floats_and_small_values(value):
    with pytest.raises(ValueError, match=f"^layers: expected an int >= 1, got {value!r}"):
        validation.check_positive_int(value, "layers")


def test_checks_return_normalised_values():
    assert type(validation.check_positive_int(np.int64(3), "n")) is int
    assert validation.check_int(2, "steps", 2) == 2
    assert validation.check_rate(np.float32(0.5), "dropout") == 0.5 and validation.check_rate(0, "dropout") == 0.0
    assert validation.check_odd_kernel_size(np.int32(5)) == 5
    assert validation.check_multiple(6, "filters", 3) == 6
    assert validation.check_image_shape([4, np.int64(5), 3]) == (4, 5, 3)
    assert validation.check_condition_shape([7]) == (7,) and validation.check_condition_shape(None) is None


@pytest.mark.parametrize(
    "check, pattern",
    [
        (lambda: validation.check_int(1, "steps", 2), "steps: expected an int >= 2, got 1"),
        (lambda: validation.check_rate(1.0, "--ema_decay"), r"--ema_decay: expected a rate in \[0, 1\), got 1.0"),
        (lambda: validation.check_rate(-0.1, "dropout"), r"dropout: expected a rate in \[0, 1\)"),
        (lambda: validation.check_rate(True, "dropout"), r"dropout: expected a rate in \[0, 1\), got True"),
        (lambda: validation.check_odd_kernel_size(4), "kernel_size: expected an odd int >= 3, got 4"),
        (lambda: validation.check_odd_kernel_size(1), "kernel_size: expected an odd int >= 3, got 1"),
        (lambda: validation.check_odd_kernel_size(3.0), "kernel_size: expected an odd int >= 3, got 3.0"),
        (lambda: validation.check_odd_kernel_size(True, "--kernel_size"), "--kernel_size: expected an odd int"),
        (lambda: validation.check_multiple(8, "filters", 3), "filters: expected a positive multiple of 3, got 8"),
        (lambda: validation.check_multiple(0, "filters", 3), "filters: expected a positive multiple of 3, got 0"),
        (lambda: validation.check_image_shape((4, 4, True)), "image_shape: expected"),
        (lambda: validation.check_condition_shape((2, 2)), r"condition_shape: expected \(D,\) with D >= 1"),
    ],
)
def test_checks_name_the_argument_and_the_expectation(check, pattern):
    with pytest.raises(ValueError, match=pattern):
        check()


def test_vector_output_shape_check():
    dense = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    assert validation.check_vector_output_shape(dense, (4, 4, 1), "encoder") == 3
    assert validation.check_vector_output_shape(dense, (4, 4, 1), "encoder", dim=3) == 3
    wrong_size = r"--embedding_model: expected outputs of shape \[batch, 5\], got shape \(None, 3\)"
    with pytest.raises(ValueError, match=wrong_size):
        validation.check_vector_output_shape(dense, (4, 4, 1), "--embedding_model", dim=5)
    with pytest.raises(ValueError, match=r"encoder: expected a model taking float32 images \[batch, 8, 8, 1\] to"):
        validation.check_vector_output_shape(dense, (8, 8, 1), "encoder")
    with pytest.raises(ValueError, match=r"encoder: expected a keras.Model mapping images \[batch, 4, 4, 1\]"):
        validation.check_vector_output_shape(keras.layers.Dense(3), (4, 4, 1), "encoder")
    maps = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"encoder: expected outputs of shape \[batch, D\], got shape \(None, 4, 4"):
        validation.check_vector_output_shape(maps, (4, 4, 1), "encoder")


def test_pixelcnn_arguments_checked_without_building_a_model():
    arguments = model_lib.check_pixelcnn_arguments((8, 8, 3), 2, 6, 3, "softmax", 5, num_classes=np.int64(4))
    assert arguments["color_channels"] == 3 and arguments["num_classes"] == 4 and type(arguments["num_classes"]) is int
    mixture = model_lib.check_pixelcnn_arguments((8, 8, 3), 2, 8, 3, "logistic_mixture", 2, dropout=0.5)
    assert mixture["color_channels"] == 1 and mixture["dropout"] == 0.5
    with pytest.raises(ValueError, match="filters: expected a positive multiple of the 3 image channels"):
        model_lib.check_pixelcnn_arguments((8, 8, 3), 2, 8, 3, "softmax", 5)
    with pytest.raises(ValueError, match="num_layers: expected an int >= 1, got True"):
        model_lib.check_pixelcnn_arguments((8, 8, 3), True, 6, 3, "softmax", 5)
    with pytest.raises(ValueError, match="num_mixtures: expected an int >= 1, got 0"):
        model_lib.check_pixelcnn_arguments((8, 8, 3), 2, 6, 3, "logistic_mixture", 0)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: kp.GatedBlock(6, 4), "kernel_size: expected an odd int >= 3, got 4"),
        (lambda: kp.GatedBlock(6, 1), "kernel_size: expected an odd int >= 3, got 1"),
        (lambda: kp.GatedBlock(0, 3), "filters: expected a multiple of color_channels=1"),
        (lambda: kp.GatedBlock(8, 3, color_channels=3), "filters: expected a multiple of color_channels=3"),
        (lambda: kp.GatedBlock(6, 3, dropout=1.0), r"dropout: expected a rate in \[0, 1\)"),
        (lambda: kp.GatedBlock(6, 3, color_channels=0), "color_channels: expected an int >= 1, got 0"),
        (lambda: kp.MaskedBlock(6, 2), "kernel_size: expected an odd int >= 3, got 2"),
        (lambda: kp.MaskedBlock(True, 3), "filters: expected a multiple of color_channels=1"),
        (lambda: kp.MaskedBlock(8, 3, color_channels=3), "filters: expected a multiple of color_channels=3"),
        (lambda: kp.MaskedBlock(6, 3, dropout=-0.5), r"dropout: expected a rate in \[0, 1\)"),
        (lambda: kp.MaskedConv2D(6, (3, 0)), "kernel_size: expected an int >= 1, got 0"),
        (lambda: kp.MaskedConv2D(6, (3, 3, 3)), r"kernel_size: expected an int or \(height, width\)"),
        (lambda: kp.ConditionNetwork((8, 8)), "image_shape: expected"),
        (lambda: kp.ConditionNetwork((8, 8, 1), num_classes=True), "num_classes: expected an int >= 1, got True"),
        (lambda: kp.ConditionNetwork((8, 8, 1), spatial=True, spatial_channels=0), "spatial_channels: expected"),
        (lambda: kp.make_head("logistic_mixture", 3, 0), "num_mixtures: expected an int >= 1, got 0"),
        (lambda: kp.make_head("softmax", 0, 5), "channels: expected an int >= 1, got 0"),
        (lambda: kp.ConditionalPixelCNN((4, 4, 1), num_layers=True), "num_layers: expected an int >= 1, got True"),
        (lambda: kp.GatedBlock(6, 3, dilation_rate=0), "dilation_rate: expected an int >= 1, got 0"),
        (lambda: kp.MaskedConv2D(6, 3, dilation_rate=(1, 2, 1)), r"dilation_rate: expected an int or \(rows, col"),
        (
            lambda: kp.ConditionalPixelCNN((4, 4, 1), num_layers=2, dilation_rates=(1, 2, 4)),
            r"dilation_rates: expected None or 2 ints >= 1 \(one per layer\), got \(1, 2, 4\)",
        ),
        (lambda: kp.PixelCNNAutoEncoder((4, 4, 1), 2, num_layers=1, dilation_rates=[0]), "dilation_rates: expected"),
        (lambda: kp.PixelCNN((4, 4, 1), dropout=True), r"dropout: expected a rate in \[0, 1\), got True"),
        (lambda: kp.PixelCNNAutoEncoder((4, 4, 1), True), "bottleneck_dim: expected an int >= 1, got True"),
        (lambda: kp.interpolation_conditions([0.0], [1.0], True), "steps: expected an int >= 2, got True"),
    ],
)
def test_layers_and_models_check_their_own_arguments(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
