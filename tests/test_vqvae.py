"""The VQ-VAE: straight-through gradients, the commitment loss, the EMA codebook, encode/decode round trips."""

import keras
import numpy as np
import pytest
from conftest import randomize_weights
from test_autoencoder import digits

import keras_pixelcnn as kp


def test_the_straight_through_gradient_alone_trains_the_encoder():
    """With no commitment loss only the decoder's loss reaches the encoder, through z_q -> z_e."""
    model = kp.VQVAE((8, 8, 1), num_embeddings=8, embedding_dim=4, filters=8, downsample=1, commitment_cost=0.0)
    before = [w.copy() for w in model.encoder.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(digits()[0][:16], batch_size=16, epochs=1, verbose=0)
    moved = [np.abs(a - b).max() for a, b in zip(model.encoder.get_weights(), before)]
    assert min(moved) > 0, moved


def test_the_commitment_loss_is_in_model_losses():
    model = kp.VQVAE((8, 8, 1), num_embeddings=8, embedding_dim=4, filters=8, downsample=1, commitment_cost=0.5)
    images = digits()[0][:4]
    model(images)
    z_e = np.asarray(model.encoder(images))
    z_q = np.asarray(model.quantizer.lookup(model.quantizer.codes(z_e)))
    assert len(model.losses) == 1
    np.testing.assert_allclose(float(model.losses[0]), 0.5 * np.mean((z_e - z_q) ** 2), rtol=1e-5)


def _quantizer(restart_below):
    quantizer = kp.VectorQuantizer(6, 2, decay=0.5, restart_below=restart_below, seed=1)
    quantizer.build((None, 2))
    quantizer.codebook.assign(np.arange(12, dtype="float32").reshape(6, 2) * 10.0)
    return quantizer


def test_codebook_updates_move_only_the_codes_used():
    quantizer = _quantizer(restart_below=0.0)
    before = np.asarray(quantizer.codebook)
    z_e = np.array([[1.0, 2.0], [2.0, 1.0], [41.0, 49.0]], "float32")  # nearest codes: 0, 0, 2
    _, codes = quantizer(z_e, training=True)
    np.testing.assert_array_equal(np.asarray(codes), [0, 0, 2])
    after = np.asarray(quantizer.codebook)
    np.testing.assert_array_equal(after[[1, 3, 4, 5]], before[[1, 3, 4, 5]])
    for code, mean in ((0, [1.5, 1.5]), (2, [41.0, 49.0])):  # EMA means (Laplace-smoothed counts)
        np.testing.assert_allclose(after[code], mean, rtol=1e-3)
    quantizer(z_e, training=False)
    np.testing.assert_array_equal(np.asarray(quantizer.codebook), after)  # inference never updates


def test_long_unused_codes_restart_at_encoder_outputs():
    quantizer = _quantizer(restart_below=0.01)
    z_e = np.array([[1.0, 2.0], [2.0, 1.0], [41.0, 49.0]], "float32")
    quantizer(z_e, training=True)
    after = np.asarray(quantizer.codebook)
    for code in (1, 3, 4, 5):  # never used: restarted at one of the batch's vectors
        assert any(np.array_equal(after[code], row) for row in z_e), (code, after[code])


@pytest.fixture(scope="module")
def trained():
    train, test = digits()
    keras.utils.set_random_seed(0)
    model = kp.VQVAE((8, 8, 1), num_embeddings=32, embedding_dim=8, filters=32, downsample=1, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(4e-3))
    history = model.fit(train, batch_size=64, epochs=8, verbose=0).history["loss"]
    return model, history, test


def test_a_trained_toy_reconstructs_round_trips_and_uses_its_codebook(trained):
    model, history, test = trained
    assert history[-1] < 0.25 * history[0], history
    codes = np.asarray(model.encode(test))
    assert codes.shape == (len(test), 4, 4, 1) and codes.dtype == np.int32
    images = np.asarray(model.decode(codes))
    assert images.shape == test.shape and images.dtype == np.uint8
    assert np.abs(images.astype(float) - test).mean() < 25  # measured: 16.0-16.6 (of 255), TF and JAX
    assert (np.asarray(model.encode(images)) == codes).mean() > 0.85  # measured: 0.915-0.925
    usage = model.codebook_usage(test)
    assert usage["used"] > 0.75 and usage["perplexity"] > 10, usage  # measured: 0.91-1.0, 18.5-19.5


def test_the_vqvae_saves_and_loads(trained, tmp_path):
    model, _, test = trained
    model.save(tmp_path / "vq.keras")
    loaded = keras.models.load_model(tmp_path / "vq.keras")
    codes = np.asarray(model.encode(test[:8]))
    np.testing.assert_array_equal(np.asarray(loaded.encode(test[:8])), codes)
    np.testing.assert_array_equal(np.asarray(loaded.decode(codes)), np.asarray(model.decode(codes)))
    assert loaded.get_config() == model.get_config()


def test_a_vqvae_prior_decodes_its_prior_samples_and_scores_images_by_their_codes(trained, tmp_path):
    vqvae, _, test = trained
    prior = kp.ConditionalPixelCNN(vqvae.code_shape, num_layers=2, filters=8, kernel_size=3, num_classes=10,
                                   num_categories=32)  # fmt: skip
    randomize_weights(prior, scale=0.3)
    model = kp.VQVAEPrior(vqvae, prior)
    labels = np.array([1, 7, 7], np.int32)
    images, codes = (np.asarray(x) for x in model.sample_codes(condition=labels, seed=3))
    np.testing.assert_array_equal(codes, np.asarray(prior.sample(condition=labels, seed=3)))
    np.testing.assert_array_equal(images, np.asarray(vqvae.decode(codes)))
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8 and codes.std() > 0
    np.testing.assert_allclose(np.asarray(model.log_prob(test[:3], labels)),
                               np.asarray(prior.log_prob(vqvae.encode(test[:3]), labels)), rtol=1e-6)  # fmt: skip
    model.save(tmp_path / "code_prior.keras")
    loaded = keras.models.load_model(tmp_path / "code_prior.keras")
    np.testing.assert_array_equal(np.asarray(loaded.sample(condition=labels, seed=3)), images)


def test_vqvae_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"image_shape: height and width must be divisible by 2\^downsample=4"):
        kp.VQVAE((6, 8, 1), downsample=2)
    with pytest.raises(ValueError, match=r"num_embeddings: expected an int >= 2, got 1"):
        kp.VQVAE((8, 8, 1), num_embeddings=1)
    model = kp.VQVAE((8, 8, 1), num_embeddings=8, embedding_dim=4, filters=8, downsample=1)
    with pytest.raises(ValueError, match=r"codes: expected codes in \[0, 8\), got values in \[8, 8\]"):
        model.decode(np.full((1, 4, 4, 1), 8))
    with pytest.raises(ValueError, match=r"codes: expected shape \[batch, 4, 4, 1\]"):
        model.decode(np.zeros((1, 8, 8, 1), np.int32))
    with pytest.raises(ValueError, match=r"images: expected pixel values in \[0, 255\]"):
        model.encode(np.full((1, 8, 8, 1), 300))


def test_a_logistic_decoder_trains_and_decodes_its_means():
    """decoder_likelihood="logistic": a mean and a log-scale per sub-pixel, a falling NLL, decode: the rounded means."""
    train, test = digits()
    keras.utils.set_random_seed(0)
    model = kp.VQVAE((8, 8, 1), num_embeddings=16, embedding_dim=4, filters=16, downsample=1,
                     decoder_likelihood="logistic", seed=0)  # fmt: skip
    assert model(test[:2]).shape == (2, 8, 8, 2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(train, batch_size=64, epochs=4, verbose=0).history["loss"]
    assert history[-1] < history[0] - 0.3, history  # nats per sub-pixel; measured: 3.30 -> 2.66
    codes = np.asarray(model.encode(test[:8]))
    means = np.asarray(model.decoder(model.quantizer.lookup(codes[..., 0])))[..., :1]
    expected = np.clip(np.round((means + 1.0) * 127.5), 0, 255)
    np.testing.assert_array_equal(np.asarray(model.decode(codes)), expected)  # the compiled decode: the same
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model)).decoder_likelihood == (
        "logistic"
    )
    with pytest.raises(ValueError, match=r"decoder_likelihood: expected one of \('mse', 'logistic'\), got 'l2'"):
        kp.VQVAE((8, 8, 1), decoder_likelihood="l2")
