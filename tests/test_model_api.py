"""The whole Keras Model API on every model kind: *_on_batch, evaluate, predict, summary, per-image bits/dim."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_images

import keras_pixelcnn as kp

SMALL = dict(num_layers=2, filters=6, kernel_size=3)
BATCH = 4

# name -> (model factory, condition of the batch or None)
CASES = {
    "conditional_class": (lambda: kp.ConditionalPixelCNN((4, 4, 3), num_classes=3, **SMALL), np.array([0, 2, 1, 2])),
    "conditional_vector_mixture": (
        lambda: kp.ConditionalPixelCNN(
            (4, 4, 3), head="logistic_mixture", num_mixtures=2, condition_shape=(2,), **SMALL
        ),
        np.linspace(-1, 1, 2 * BATCH, dtype=np.float32).reshape(BATCH, 2),
    ),
    "pixelcnn": (lambda: kp.PixelCNN((4, 4, 3), gated=True, **SMALL), None),
    "autoencoder": (lambda: kp.PixelCNNAutoEncoder((4, 4, 3), 2, **SMALL), None),
}


def make(case):
    """A compiled model with random trainable weights (the zero-initialised head would give 8 bits/dim everywhere)."""
    factory, condition = CASES[case]
    model = factory()
    rng = np.random.default_rng(1)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(0.0, 0.2, weight.shape).astype(weight.dtype))
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    images = random_images((BATCH, 4, 4, 3))
    return model, images, condition


def inputs_of(images, condition):
    return images if condition is None else (images, condition)


def bits_per_dim_method(model, images, condition):
    return model.bits_per_dim(images) if condition is None else model.bits_per_dim(images, condition)


@pytest.mark.large  # large: fits and evaluates several models
@pytest.mark.parametrize("case", CASES)
def test_on_batch_methods_agree_with_evaluate_and_bits_per_dim(case):
    model, images, condition = make(case)
    x = inputs_of(images, condition)
    expected = float(np.mean(bits_per_dim_method(model, images, condition)))

    before = model.test_on_batch(x, return_dict=True)
    assert set(before) == {"loss", "bits_per_dim"}
    np.testing.assert_allclose(before["bits_per_dim"], expected, rtol=1e-5)
    np.testing.assert_allclose(before["loss"], expected, rtol=1e-5)  # no regularisation losses

    # Training mode (the auto-encoder's batch norm uses the batch's statistics): the loss train_on_batch reports.
    train_mode = float(np.mean(model.per_image_bits_per_dim(x, training=True)))
    trained = model.train_on_batch(x, return_dict=True)
    assert np.isfinite(trained["loss"])
    np.testing.assert_allclose(trained["loss"], train_mode, rtol=1e-5)
    np.testing.assert_allclose(trained["bits_per_dim"], train_mode, rtol=1e-5)

    assert np.mean(model.per_image_bits_per_dim(x, training=True)) < train_mode  # one small SGD step on this batch
    after = model.test_on_batch(x, return_dict=True)
    evaluated = model.evaluate(x, batch_size=BATCH, verbose=0, return_dict=True)
    np.testing.assert_allclose(evaluated["loss"], after["loss"], rtol=1e-5)
    np.testing.assert_allclose(after["loss"], np.mean(bits_per_dim_method(model, images, condition)), rtol=1e-5)

    loss, bits = model.train_on_batch(x)  # Keras's default: a list in the order of model.metrics_names
    assert np.isfinite(loss) and loss == pytest.approx(bits, rel=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_predict_and_predict_on_batch_return_the_head_parameters(case):
    model, images, condition = make(case)
    x = inputs_of(images, condition)
    expected = np.asarray(model(x))
    head_shape = (256,) if model.head.name == "softmax" else ()
    width = 3 if model.head.name == "softmax" else model.head.num_outputs
    assert expected.shape == (BATCH, 4, 4, width) + head_shape
    np.testing.assert_allclose(model.predict_on_batch(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0), expected, rtol=1e-5, atol=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(3)
    np.testing.assert_allclose(model.predict(dataset, verbose=0), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_datasets_of_every_form_train_and_evaluate(case):
    model, images, condition = make(case)
    dataset = tf.data.Dataset.from_tensor_slices(inputs_of(images, condition)).batch(2)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    evaluated = model.evaluate(dataset, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        evaluated["bits_per_dim"], np.mean(bits_per_dim_method(model, images, condition)), rtol=1e-5
    )


def recorded_traces(model):
    """A list that gains an item each time ``model.train_step`` is traced (Keras calls it only then)."""
    traces, train_step = [], model.train_step
    model.train_step = lambda *args: traces.append(1) or train_step(*args)
    return traces


# The optimizer's variables exist before the first trace (likelihood_model.OptimizerBuiltFirst): created
# inside it, on TensorFlow, they made the step trace twice and a small model's first fit twice as long.
@pytest.mark.parametrize("case", ["conditional_class", "autoencoder", "vqvae"])
@pytest.mark.parametrize("method", ["fit", "train_on_batch"])
def test_training_traces_its_step_once(case, method):
    if case == "vqvae":
        model = kp.VQVAE((4, 4, 3), num_embeddings=4, embedding_dim=2, filters=4, downsample=1)
        x = random_images((BATCH, 4, 4, 3))
    else:
        model, images, condition = make(case)
        x = inputs_of(images, condition)
    model.compile(optimizer="adam")  # make()'s SGD has no variables to create
    traces = recorded_traces(model)
    if method == "fit":
        model.fit(x, batch_size=2, epochs=2, verbose=0)
    else:
        model.train_on_batch(x)
        model.train_on_batch(x)
    assert len(traces) == 1 and model.optimizer.built


@pytest.mark.parametrize("case", CASES)
def test_summary_of_a_built_model(case):
    model, _, _ = make(case)
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert f"Total params: {model.count_params():,}" in text
    assert model.count_params() > 0


@pytest.mark.tensorflow_only  # traced in a tf.function, as the TF trainers' step
@pytest.mark.parametrize("case", CASES)
def test_per_image_bits_per_dim_is_the_loss_of_each_image(case):
    model, images, condition = make(case)
    x = inputs_of(images, condition)
    bits = model.per_image_bits_per_dim(x)
    assert bits.shape == (BATCH,) and bits.dtype == "float32"
    np.testing.assert_allclose(bits, bits_per_dim_method(model, images, condition), rtol=1e-6)
    nats = model.head.log_prob(model(x), images)
    np.testing.assert_allclose(bits, -np.asarray(nats) / (4 * 4 * 3 * np.log(2.0)), rtol=1e-5)
    np.testing.assert_allclose(model.per_image_bits_per_dim(x, params=model(x)), bits, rtol=1e-6)
    traced = tf.function(lambda *x: model.per_image_bits_per_dim(x, training=False))  # as a trainer's step calls it
    np.testing.assert_allclose(traced(*(x if condition is not None else (x,))), bits, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_on_batch_methods_refuse_targets_weights_and_bad_data(case):
    model, images, condition = make(case)
    x = inputs_of(images, condition)
    labels = np.zeros(BATCH, np.int32)
    with pytest.raises(ValueError, match="^y: "):
        model.train_on_batch(images, labels)
    with pytest.raises(ValueError, match="^y: "):
        model.test_on_batch(images, labels)
    with pytest.raises(ValueError, match="^sample_weight: not supported"):
        model.train_on_batch(x, sample_weight=np.ones(BATCH))
    with pytest.raises(ValueError, match="^class_weight: not supported"):
        model.train_on_batch(x, class_weight={0: 1.0})
    with pytest.raises(ValueError, match=r"images: expected pixel values in \[0, 255\]"):
        model.train_on_batch(inputs_of(images.astype(np.int32) + 256, condition))
    with pytest.raises(ValueError, match="x: expected images or an"):
        model.predict_on_batch((images, labels, labels))
    if condition is None:
        refused = "condition: this model is unconditional|x: the auto-encoder takes images alone"
        with pytest.raises(ValueError, match=refused):
            model.test_on_batch((images, labels))
    else:
        with pytest.raises(ValueError, match="condition: this model is conditional"):
            model.test_on_batch(images)
