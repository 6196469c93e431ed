"""fit/evaluate data forms, .keras round trips, and the clear errors of every entry point."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_images, randomize_weights

import keras_pixelcnn as kp


def small(**kwargs):
    defaults = dict(image_shape=(4, 4, 3), num_layers=2, filters=6, kernel_size=3)
    return kp.ConditionalPixelCNN(**{**defaults, **kwargs})


# -- fit ------------------------------------------------------------------------------


@pytest.mark.large  # large: fits on arrays, tuples and datasets (a compile each)
def test_fit_takes_images_tuples_and_datasets_and_logs_bits_per_dim():
    images = random_images((8, 4, 4, 3))
    labels = np.arange(8) % 3
    model = small(num_classes=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit((images, labels), batch_size=4, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "bits_per_dim"}
    assert history.history["loss"][1] < history.history["loss"][0]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    model.fit(dataset, epochs=1, verbose=0)
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["bits_per_dim"], np.mean(model.bits_per_dim(images, labels)), rtol=1e-4)

    unconditional = small()
    unconditional.compile(optimizer="adam")
    unconditional.fit(tf.data.Dataset.from_tensor_slices(images).batch(4), epochs=1, verbose=0)
    unconditional.fit(images, batch_size=4, epochs=1, verbose=0)
    assert unconditional.predict(images, verbose=0).shape == (8, 4, 4, 3, 256)


def test_fit_rejects_y_and_bad_data_before_training():
    model = small(num_classes=3)
    model.compile(optimizer="adam")
    images = random_images((4, 4, 4, 3))
    with pytest.raises(ValueError, match="^y: "):
        model.fit(images, np.zeros(4, int), verbose=0)
    with pytest.raises(ValueError, match="condition: .*requires"):
        model.fit(images, verbose=0)
    with pytest.raises(ValueError, match=r"images: expected pixel values in \[0, 255\]"):
        model.fit((images.astype(np.int32) * 2, np.zeros(4, int)), verbose=0)
    with pytest.raises(ValueError, match="images: expected shape"):
        model.fit(
            tf.data.Dataset.from_tensor_slices((random_images((4, 5, 4, 3)), np.zeros(4, int))).batch(2), verbose=0
        )


# -- serialization ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_class, kwargs",
    [
        (kp.ConditionalPixelCNN, dict(num_classes=3, skip_connections=True, dilation_rates=(1, 2))),
        (
            kp.ConditionalPixelCNN,
            dict(head="logistic_mixture", num_mixtures=2, condition_shape=(5,), spatial_condition=True),
        ),
        (kp.PixelCNN, dict(gated=True, dropout=0.1)),
    ],
)
def test_keras_file_round_trip_gives_identical_log_probs(tmp_path, model_class, kwargs):
    model = randomize_weights(model_class((4, 4, 3), num_layers=2, filters=6, kernel_size=3, **kwargs), scale=0.3)
    images = random_images((3, 4, 4, 3))
    condition = {"num_classes": np.array([0, 2, 1]), "condition_shape": np.ones((3, 5), "float32")}
    condition = next((v for k, v in condition.items() if k in kwargs), None)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode stays on
    assert type(loaded) is model_class
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.log_prob(images, condition), model.log_prob(images, condition))
    clone = model_class.from_config(model.get_config())
    assert clone.count_params() == model.count_params()


def symbolic_build(model, input_shape=None):
    """The reference build: one symbolic pass of ``call``, which builds each layer as it is first used."""
    images = keras.KerasTensor((None,) + model.image_shape, dtype="float32")
    condition = None
    if model.num_classes is not None:
        condition = keras.KerasTensor((None,), dtype="int32")
    elif model.condition_shape is not None:
        condition = keras.KerasTensor((None,) + model.condition_shape, dtype="float32")
    model.call(images if condition is None else (images, condition))
    model.built = True


@pytest.mark.parametrize(
    "model_class, kwargs",
    [
        (
            kp.ConditionalPixelCNN,
            dict(num_classes=3, spatial_condition=True, skip_connections=True, dilation_rates=[2, 1]),
        ),
        (kp.ConditionalPixelCNN, dict(head="logistic_mixture", num_mixtures=2, condition_shape=(5,), dropout=0.1)),
        (kp.ConditionalPixelCNN, dict(num_categories=7, condition_shape=(2,), spatial_condition=True)),
        (kp.PixelCNN, dict(gated=True, num_classes=2)),
        (kp.PixelCNNAutoEncoder, dict(bottleneck_dim=3, spatial_condition=True)),
    ],
)
def test_the_layer_by_layer_build_creates_the_weights_of_a_symbolic_pass(monkeypatch, model_class, kwargs):
    """Models build each layer from the shapes the config fixes; the same weights (paths, shapes, seeded values,
    order) as a symbolic pass of the forward pass, which on TensorFlow traces every op."""

    def make():
        keras.utils.set_random_seed(3)
        return model_class((5, 4, 3), num_layers=2, filters=6, kernel_size=3, name="model", **kwargs)

    built = make()
    monkeypatch.setattr(kp.PixelCNNBase, "build", symbolic_build)
    reference = make()
    assert [w.path for w in built.weights] == [w.path for w in reference.weights]
    for weight, expected in zip(built.weights, reference.weights):
        np.testing.assert_array_equal(weight.numpy(), expected.numpy(), err_msg=weight.path)
    assert all(layer.built for layer in built._flatten_layers())


# -- clear errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(head="gaussian"), "head: expected one of"),
        (dict(kernel_size=4), "kernel_size: expected an odd int >= 3, got 4"),
        (dict(kernel_size=1), "kernel_size: expected an odd int >= 3, got 1"),
        (dict(num_layers=0), "num_layers: expected an int >= 1, got 0"),
        (dict(filters=8), "filters: expected a positive multiple of the 3 image channels"),
        (dict(num_classes=3, condition_shape=(4,)), "num_classes, condition_shape: give one kind"),
        (dict(condition_shape=(0,)), "condition_shape: expected"),
        (dict(image_shape=(4, 4)), "image_shape: expected"),
        (dict(spatial_condition=True), "spatial_condition: requires"),
        (dict(head="logistic_mixture", num_mixtures=0), "num_mixtures: expected"),
    ],
)
def test_constructor_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        small(**kwargs)


def test_mixture_head_needs_no_channel_multiple():
    assert small(head="logistic_mixture", filters=8).filters == 8  # pixel-level masks: no colour groups


def test_masked_conv_filters_must_split_into_colour_groups():
    with pytest.raises(ValueError, match="filters: expected a multiple of color_channels=3"):
        kp.MaskedConv2D(8, 3, color_channels=3)


CLASS_MODEL = dict(num_classes=3)
VECTOR_MODEL = dict(condition_shape=(2,))
OK_IMAGES = random_images((2, 4, 4, 3))


@pytest.mark.parametrize(
    "kwargs, images, condition, pattern",
    [
        ({}, OK_IMAGES[0], None, r"images: expected a rank-4 tensor \[batch, 4, 4, 3\], got shape \(4, 4, 3\)"),
        ({}, random_images((2, 5, 4, 3)), None, r"images: expected shape \[batch, 4, 4, 3\] \(height 4\)"),
        ({}, random_images((2, 4, 4, 1)), None, r"images: expected shape \[batch, 4, 4, 3\] \(channels 3\)"),
        ({}, OK_IMAGES.astype(np.int32) - 1, None, r"images: expected pixel values in \[0, 255\], got values in \[-1"),
        ({}, OK_IMAGES / 255.0, None, "images: expected integer-valued pixels"),
        ({}, OK_IMAGES, np.array([0, 1]), "condition: this model is unconditional"),
        (
            CLASS_MODEL,
            OK_IMAGES,
            None,
            r"condition: this model is conditional and requires class ids \[batch\] in \[0, 3\)",
        ),
        (
            CLASS_MODEL,
            OK_IMAGES,
            np.array([0, 3]),
            r"condition: expected class ids in \[0, 3\), got values in \[0, 3\]",
        ),
        (CLASS_MODEL, OK_IMAGES, np.array([0, -1]), r"condition: expected class ids in \[0, 3\)"),
        (CLASS_MODEL, OK_IMAGES, np.array([0.0, 1.0]), "condition: expected integer class ids"),
        (CLASS_MODEL, OK_IMAGES, np.array([0, 1, 2]), "condition: expected 2 entries"),
        (
            VECTOR_MODEL,
            OK_IMAGES,
            np.ones((2, 3), "float32"),
            r"condition: expected shape \[batch, 2\], got shape \(2, 3\)",
        ),
        (VECTOR_MODEL, OK_IMAGES, np.ones(2, "float32"), r"condition: expected shape \[batch, 2\]"),
    ],
)
@pytest.mark.parametrize("entry", ["call", "log_prob", "bits_per_dim"])
def test_bad_inputs_raise_clear_errors(kwargs, images, condition, pattern, entry):
    model = small(**kwargs)
    with pytest.raises(ValueError, match=pattern):
        if entry == "call":
            model(images if condition is None else (images, condition))
        else:
            getattr(model, entry)(images, condition)


@pytest.mark.parametrize(
    "kwargs, call, pattern",
    [
        ({}, dict(num_samples=0), "num_samples: expected an int >= 1"),
        ({}, dict(num_samples=2, condition=np.array([1, 2])), "condition: this model is unconditional"),
        ({}, dict(num_samples=2, temperature=0.0), "temperature: expected a finite number > 0"),
        ({}, dict(num_samples=2, temperature=float("inf")), "temperature: expected a finite number > 0"),
        ({}, dict(num_samples=2, seed=[1, 2, 3]), "seed: expected None, an int or 2 ints"),
        (CLASS_MODEL, dict(), "condition: this model is conditional"),
        (CLASS_MODEL, dict(condition=np.array([5])), r"condition: expected class ids in \[0, 3\)"),
        (CLASS_MODEL, dict(condition=np.array([1, 2]), num_samples=3), "num_samples: expected None or len"),
        (CLASS_MODEL, dict(condition=np.zeros(0, int)), "condition: expected at least one entry"),
    ],
)
def test_bad_sample_arguments_raise_clear_errors(kwargs, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        small(**kwargs).sample(**call)
