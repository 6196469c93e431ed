"""PixelCNNAutoEncoder and EmbeddingConditionedPixelCNN from Python (paper sections 2.4, 3.3, 3.4).

End-to-end training (gradients reach the encoder), held-out likelihood against
the same decoder with h fixed to zero, conditioned reconstructions, embedding
conditioning with a frozen model and interpolation, location-dependent
conditioning (causality and locality), serialization, and input errors.
The likelihood and reconstruction tests train on the embedded 8x8 digits.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CHANGED, UNCHANGED, dependency_matrix, random_images, randomize_weights

import keras_pixelcnn as kp
from trainers.data import DIGITS_TRAIN_SIZE

SMALL = dict(num_layers=1, filters=4, kernel_size=3)


def randomize(model, seed=0, scale=0.3):
    """randomize_weights, keeping batch-norm variances positive (the default encoder standardizes its code)."""
    randomize_weights(model, seed, scale)
    for weight in model.weights:
        if "moving_variance" in weight.path:
            weight.assign(np.abs(weight.numpy()) + 0.5)
    return model


def digits():
    """(train, test) uint8 images of the embedded digits, [N, 8, 8, 1]."""
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images * 255.0 / 16.0).astype(np.uint8)[..., None]
    return images[:DIGITS_TRAIN_SIZE], images[DIGITS_TRAIN_SIZE:]


def mean_bits(model, images, condition=None):
    bits = model.bits_per_dim(images) if condition is None else model.bits_per_dim(images, condition)
    return float(np.mean(bits))


def train_pair(train, spatial_condition, num_layers, epochs, bottleneck_dim=10):
    """An auto-encoder and the same decoder trained with h = 0, same data, steps and seed."""
    options = dict(num_layers=num_layers, filters=16, kernel_size=3, spatial_condition=spatial_condition)
    keras.utils.set_random_seed(0)
    autoencoder = kp.PixelCNNAutoEncoder((8, 8, 1), bottleneck_dim, encoder_filters=16, **options)
    autoencoder.compile(optimizer=keras.optimizers.Adam(3e-3))
    autoencoder.fit(train, batch_size=64, epochs=epochs, verbose=0)
    keras.utils.set_random_seed(0)
    decoder = kp.ConditionalPixelCNN((8, 8, 1), condition_shape=(bottleneck_dim,), **options)
    decoder.compile(optimizer=keras.optimizers.Adam(3e-3))
    decoder.fit((train, np.zeros((len(train), bottleneck_dim), np.float32)), batch_size=64, epochs=epochs, verbose=0)
    return autoencoder, decoder


@pytest.fixture(scope="module")
def spatial_pair():
    """Spatial conditioning, one decoder layer of 3x3: each pixel sees its left neighbour and 3 pixels above."""
    train, _ = digits()
    return train_pair(train, spatial_condition=True, num_layers=1, epochs=12)


# -- end-to-end training ------------------------------------------------------------------


@pytest.mark.tensorflow_only  # tf.GradientTape
def test_gradients_reach_the_encoder_and_its_weights_change():
    images = random_images((16, 4, 4, 1))
    model = kp.PixelCNNAutoEncoder((4, 4, 1), 3, **SMALL)
    encoder_before = [w.numpy().copy() for w in model.encoder.trainable_weights]
    assert len(model.trainable_weights) == len(model.encoder.trainable_weights) + len(model.decoder.trainable_weights)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(images, batch_size=8, epochs=3, verbose=0)
    for before, weight in zip(encoder_before, model.encoder.trainable_weights):
        assert np.abs(weight.numpy() - before).max() > 1e-4, f"{weight.path} did not train"
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model.log_prob(images))
    gradients = tape.gradient(loss, model.encoder.trainable_weights)
    assert all(g is not None and float(tf.norm(g)) > 0 for g in gradients)


@pytest.mark.large  # large: fits a decoder over a frozen embedding network
def test_frozen_embedding_model_stays_fixed_while_the_decoder_trains(tmp_path):
    embedding = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(), keras.layers.Dense(5)]
    )
    embedding.save(tmp_path / "embedding.keras")
    frozen = keras.models.load_model(tmp_path / "embedding.keras")
    model = kp.EmbeddingConditionedPixelCNN((4, 4, 1), frozen, **SMALL)
    assert model.bottleneck_dim == 5 and not model.embedding_model.trainable
    assert len(model.trainable_weights) == len(model.decoder.trainable_weights)
    decoder_before = [w.numpy().copy() for w in model.decoder.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(random_images((16, 4, 4, 1)), batch_size=8, epochs=2, verbose=0)
    for weight, original in zip(model.embedding_model.weights, embedding.weights):
        np.testing.assert_array_equal(weight.numpy(), original.numpy())
    assert any(np.abs(w.numpy() - b).max() > 1e-4 for w, b in zip(model.decoder.trainable_weights, decoder_before))
    images = random_images((3, 4, 4, 1), seed=1)
    np.testing.assert_array_equal(model.encode(images), embedding(images.astype(np.float32)))
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model.log_prob(images))
    assert all(g is None for g in tape.gradient(loss, model.embedding_model.weights))


# -- the code h carries the image: likelihood and reconstructions ----------------------------

# Measured on 2 CPU cores (TF 2.21), held-out bits/dim, auto-encoder vs h = 0:
#   spatial, 1 layer, 12 epochs: 1.881 vs 2.309 (seed 0); seeds 1 and 2 give margins 0.22 and 0.50.
#   global, 2 layers, 12 epochs: 2.012 vs 2.103 (seed 0); seed 1 gives a margin of 0.11.
SPATIAL_MARGIN = 0.15
GLOBAL_MARGIN = 0.04


@pytest.mark.large  # large: trains two auto-encoders on the digits (once per module)
def test_autoencoder_beats_the_same_decoder_with_h_zero_on_held_out_digits(spatial_pair):
    _, test = digits()
    autoencoder, zero_h = spatial_pair
    ae_bits = mean_bits(autoencoder, test)
    zero_bits = mean_bits(zero_h, test, np.zeros((len(test), 10), np.float32))
    assert ae_bits < zero_bits - SPATIAL_MARGIN, (ae_bits, zero_bits)


@pytest.mark.large  # large: trains two models on the digits and compares them
def test_global_conditioning_beats_h_zero_on_held_out_digits():
    train, test = digits()
    autoencoder, zero_h = train_pair(train, spatial_condition=False, num_layers=2, epochs=12)
    ae_bits = mean_bits(autoencoder, test)
    zero_bits = mean_bits(zero_h, test, np.zeros((len(test), 10), np.float32))
    assert ae_bits < zero_bits - GLOBAL_MARGIN, (ae_bits, zero_bits)


def mean_l1(samples, targets):
    """[N, n, H, W, C] samples vs [M, H, W, C] targets -> [N, M] mean absolute pixel distance."""
    samples = np.asarray(samples, np.float64)[:, :, None]
    return np.abs(samples - np.asarray(targets, np.float64)[None, None]).mean(axis=(1, 3, 4, 5))


@pytest.mark.large  # large: trains two auto-encoders on the digits (once per module)
def test_reconstructions_are_closer_to_their_own_input(spatial_pair):
    _, test = digits()
    autoencoder, zero_h = spatial_pair
    inputs = test[:10]  # held out
    distances = mean_l1(autoencoder.reconstruct(inputs, num_samples_per_image=4, seed=0), inputs)  # [10, 10]
    own, other = np.diag(distances), distances[~np.eye(10, dtype=bool)].reshape(10, 9)
    assert np.all(own < other.mean(axis=1)), distances.round(1)
    assert own.mean() < 0.75 * other.mean(), distances.round(1)  # measured: 34 vs 62
    # The same draws from the h = 0 decoder are not tied to any input.
    unconditioned = zero_h.sample(condition=np.zeros((40, 10), np.float32), seed=0)
    distances = mean_l1(np.reshape(unconditioned, (10, 4, 8, 8, 1)), inputs)
    own, other = np.diag(distances), distances[~np.eye(10, dtype=bool)]
    assert own.mean() > 0.85 * other.mean(), distances.round(1)


@pytest.mark.large  # large: trains two auto-encoders on the digits (once per module)
def test_interpolation_runs_from_one_code_to_the_other(spatial_pair):
    _, test = digits()
    autoencoder, _ = spatial_pair
    image_a, image_b = test[0], test[1]
    images, codes = autoencoder.interpolate(image_a, image_b, steps=5, num_samples_per_step=3, seed=7)
    assert tuple(images.shape) == (5, 3, 8, 8, 1) and images.dtype == tf.uint8
    code_a, code_b = (np.asarray(autoencoder.encode(x[None]))[0] for x in (image_a, image_b))
    np.testing.assert_array_equal(codes[0], code_a)
    np.testing.assert_array_equal(codes[-1], code_b)
    np.testing.assert_allclose(codes[2], (code_a + code_b) / 2, rtol=1e-5, atol=1e-6)
    expected = autoencoder.sample(np.repeat(codes, 3, axis=0), seed=7)
    np.testing.assert_array_equal(np.reshape(images, (15, 8, 8, 1)), expected)
    distances = mean_l1(images, np.stack([image_a, image_b]))  # [5, 2]
    assert distances[0, 0] < distances[0, 1] and distances[-1, 1] < distances[-1, 0], distances


def test_interpolation_conditions_hit_both_end_points_exactly():
    rng = np.random.default_rng(0)
    h_a, h_b = rng.normal(size=(2, 7)).astype(np.float32) * 1e3
    codes = kp.interpolation_conditions(h_a, h_b, 4)
    assert codes.shape == (4, 7) and codes.dtype == np.float32
    np.testing.assert_array_equal(codes[0], h_a)
    np.testing.assert_array_equal(codes[-1], h_b)
    with pytest.raises(ValueError, match="steps: expected an int >= 2"):
        kp.interpolation_conditions(h_a, h_b, 1)
    with pytest.raises(ValueError, match="h_b: expected the shape of h_a"):
        kp.interpolation_conditions(h_a, h_b[:3], 3)


# -- location-dependent conditioning s = m(h) ----------------------------------------------


@pytest.mark.parametrize("head", ["softmax", "logistic_mixture"])
def test_spatial_autoencoder_decoder_is_exactly_causal_given_h(head):
    # The auto-encoder models p(x | h): for a fixed h the decoder must be causal in x
    # (h itself is computed from the whole image, which is what makes it a code).
    model = kp.PixelCNNAutoEncoder(
        (4, 4, 3), 3, num_layers=4, filters=12, kernel_size=3, head=head, num_mixtures=2, spatial_condition=True
    )
    randomize(model)
    code = np.asarray(model.encode(random_images((1, 4, 4, 3), seed=5)))
    deps = dependency_matrix(model.decoder, code)
    for k in range(deps.shape[0]):
        own = k if head == "softmax" else k // 3
        assert deps[k, : own + 1].max() <= UNCHANGED, f"input sub-pixel {k} leaks into outputs up to unit {own}"
        assert deps[k, own + 1 :].size == 0 or deps[k, own + 1 :].max() > CHANGED  # and it is not ignored


def localized_spatial_model(num_layers):
    """A spatial auto-encoder (8x8, 2x2 seed grid) whose code reaches only the seed cell (1, 1) of m(h)."""
    model = randomize(
        kp.PixelCNNAutoEncoder((8, 8, 1), 4, num_layers=num_layers, filters=8, kernel_size=3, spatial_condition=True)
    )
    network = model.decoder.condition_network
    kernel = network.seed_dense.kernel.numpy().reshape(4, 2, 2, network.spatial_channels)
    kernel[:, (0, 0, 1), (0, 1, 0)] = 0.0  # cells (0, 0), (0, 1), (1, 0) no longer depend on h
    network.seed_dense.kernel.assign(kernel.reshape(4, -1))
    return model


@pytest.mark.parametrize("num_layers", [1, 3])
def test_spatial_map_changes_outputs_where_it_changes(num_layers):
    model = localized_spatial_model(num_layers)
    codes = np.array([[1.0, -2.0, 0.5, 3.0], [-3.0, 1.0, 2.0, -1.0]], np.float32)
    s = np.asarray(model.decoder.condition_network(codes))
    strength = np.abs(s[0] - s[1]).max(axis=-1)  # [8, 8]: where the two codes' maps differ
    changed_map = strength > 1e-6
    assert changed_map.any() and not changed_map.all()  # the map is local: (1, 1)'s footprint only
    assert not changed_map[0].any() and not changed_map[:, 0].any()
    images = np.repeat(random_images((1, 8, 8, 1), seed=3), 2, axis=0)
    params = np.asarray(model.decoder((images, codes)))
    reference = np.asarray(model.decoder((images, codes[[0, 0]])))  # code 0 at the same batch position
    change = np.abs(params[1] - reference[1]).reshape(8, 8, -1).max(axis=-1)
    if num_layers == 1:
        # One layer: each pixel's distribution reads s at its own location only.
        assert change[changed_map].min() > CHANGED
        assert change[~changed_map].max() <= UNCHANGED
    else:
        # Deeper: the change also flows to later pixels, never to earlier ones.
        first = np.flatnonzero(changed_map.reshape(-1))[0]
        assert change.reshape(-1)[:first].max() <= UNCHANGED
        assert change[changed_map].min() > CHANGED


# -- serialization ----------------------------------------------------------------------------


def functional_encoder(dim):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs))
    return keras.Model(inputs, keras.layers.Dense(dim)(keras.layers.Flatten()(x)), name="my_encoder")


def canonical(config):
    return json.loads(json.dumps(config, default=list))  # Keras writes some shapes as tuples, reads them as lists


@pytest.mark.large  # large: fits, saves and reloads three auto-encoders
@pytest.mark.parametrize(
    "build",
    [
        lambda: kp.PixelCNNAutoEncoder((4, 4, 3), 3, num_layers=2, filters=6, kernel_size=3),
        lambda: kp.PixelCNNAutoEncoder(
            (4, 4, 3), 2, encoder=functional_encoder(2), num_layers=1, filters=6, kernel_size=3,
            head="logistic_mixture", num_mixtures=2, spatial_condition=True, skip_connections=True,
        ),
        lambda: kp.EmbeddingConditionedPixelCNN(
            (4, 4, 3),
            keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(6)]),
            num_layers=1, filters=6, kernel_size=3, spatial_condition=True,
        ),
    ],
    ids=["default_encoder", "functional_encoder_spatial_mixture", "embedding"],
)  # fmt: skip
def test_keras_file_round_trip_and_checkpoints(tmp_path, build):
    model = randomize(build())
    images = random_images((3, 4, 4, 3))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode stays on
    assert type(loaded) is type(model)
    assert canonical(loaded.get_config()) == canonical(model.get_config())
    assert loaded.encoder.trainable == model.encoder.trainable
    np.testing.assert_array_equal(loaded.encode(images), model.encode(images))
    np.testing.assert_array_equal(loaded.log_prob(images), model.log_prob(images))
    np.testing.assert_array_equal(loaded.reconstruct(images, 2, seed=3), model.reconstruct(images, 2, seed=3))
    # The trainers' checkpoints (tf.train.Checkpoint) see every weight, the encoder's included.
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    clone = type(model).from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    tf.train.Checkpoint(model=clone).restore(prefix).assert_existing_objects_matched()
    for original, restored in zip(model.weights, clone.weights):
        np.testing.assert_array_equal(original.numpy(), restored.numpy())


# -- clear errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(bottleneck_dim=0), "bottleneck_dim: expected an int >= 1, got 0"),
        (dict(bottleneck_dim=2.5), "bottleneck_dim: expected an int >= 1"),
        (dict(encoder="conv"), "encoder: expected None or a keras.Model"),
        (dict(encoder=keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])),
         r"encoder: expected outputs of shape \[batch, 3\], got shape \(None, 5\)"),
        (dict(encoder=keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Dense(3)])),
         r"encoder: expected outputs of shape \[batch, 3\], got shape \(None, 4, 4, 3\)"),
        (dict(encoder=keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])),
         r"encoder: expected a model taking float32 images \[batch, 4, 4, 1\]"),
        (dict(image_shape=(4, 4)), "image_shape: expected"),
        (dict(kernel_size=4), "kernel_size: expected an odd int >= 3"),
        (dict(encoder_filters=0), "encoder_filters: expected an int >= 1"),
    ],
)  # fmt: skip
def test_constructor_errors(kwargs, pattern):
    arguments = dict(image_shape=(4, 4, 1), bottleneck_dim=3, **SMALL)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        kp.PixelCNNAutoEncoder(**arguments)


def test_embedding_model_errors():
    with pytest.raises(ValueError, match="embedding_model: expected a keras.Model"):
        kp.EmbeddingConditionedPixelCNN((4, 4, 1), "embedding.keras", **SMALL)
    rank_3 = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Reshape((16, 1)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"embedding_model: expected outputs of shape \[batch, D\]"):
        kp.EmbeddingConditionedPixelCNN((4, 4, 1), rank_3, **SMALL)
    other_size = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"embedding_model: expected a model taking float32 images \[batch, 4, 4, 1\]"):
        kp.EmbeddingConditionedPixelCNN((4, 4, 1), other_size, **SMALL)


def test_bad_inputs_raise_clear_errors():
    model = kp.PixelCNNAutoEncoder((4, 4, 1), 3, **SMALL)
    images = random_images((2, 4, 4, 1))
    for method in (model.encode, model.log_prob, model.bits_per_dim, model.reconstruct):
        with pytest.raises(ValueError, match=r"images: expected shape \[batch, 4, 4, 1\]"):
            method(random_images((2, 5, 4, 1)))
        with pytest.raises(ValueError, match=r"images: expected pixel values in \[0, 255\]"):
            method(images.astype(np.int32) + 300)
    with pytest.raises(ValueError, match="inputs: the auto-encoder takes images alone"):
        model((images, np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match="num_samples_per_image: expected an int >= 1, got 0"):
        model.reconstruct(images, 0)
    with pytest.raises(ValueError, match="temperature: expected a finite number > 0"):
        model.reconstruct(images, 1, temperature=0.0)
    with pytest.raises(ValueError, match="steps: expected an int >= 2"):
        model.interpolate(images[0], images[1], steps=1)
    with pytest.raises(ValueError, match="image_a: expected one image, got a batch of 2"):
        model.interpolate(images, images[1], steps=3)
    with pytest.raises(ValueError, match=r"condition: expected shape \[batch, 3\]"):
        model.sample(np.zeros((2, 4), np.float32))
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="^y: "):
        model.fit(images, np.zeros(2), verbose=0)
    with pytest.raises(ValueError, match="x: the auto-encoder takes images alone"):
        model.fit((images, np.zeros(2, np.int32)), verbose=0)
