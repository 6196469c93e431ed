"""PixelCNNs over grids of K-category codes (``num_categories``): the prior of a VQ-VAE's codes.

The first layer embeds each code; the softmax head has K outputs per
sub-position; causality, the samplers' equality and the likelihood hold as for
8-bit images.
"""

import keras
import numpy as np
import pytest
from conftest import CHANGED, UNCHANGED, dependency_matrix, randomize_weights

import keras_pixelcnn as kp
from keras_pixelcnn.sampling import sampling_function

K = 11


def codes(shape, seed=0, k=K):
    return np.random.default_rng(seed).integers(0, k, shape).astype(np.int32)


def code_model(channels=1, dtype="float64", **kwargs):
    model = kp.ConditionalPixelCNN((4, 5, channels), num_layers=3, filters=6, kernel_size=3, num_categories=K,
                                   dtype=dtype, **kwargs)  # fmt: skip
    return randomize_weights(model, seed=channels, scale=0.3)


@pytest.mark.parametrize("channels", [1, 3])
def test_code_model_is_exactly_causal_and_sees_all_context(channels):
    model = randomize_weights(
        kp.ConditionalPixelCNN((4, 4, channels), num_layers=4, filters=6 * channels, kernel_size=3,
                               num_categories=K, num_classes=2)  # fmt: skip
    )
    deps = dependency_matrix(model, condition=np.array([1]))
    for k in range(deps.shape[0]):
        assert deps[k, : k + 1].max() <= UNCHANGED, f"input code {k} leaks into outputs up to {k}"
        later = deps[k, k + 1 :]
        assert later.size == 0 or later.min() > CHANGED, f"outputs after {k} ignore input code {k}"


@pytest.mark.parametrize(
    "channels, kwargs, condition",
    [
        (1, {"num_classes": 3}, np.array([2, 0])),
        (3, {"condition_shape": (2,), "spatial_condition": True}, np.array([[1.0, -1.0], [0.5, 2.0]], "float32")),
        (1, {"skip_connections": True, "dilation_rates": (1, 2, 1)}, None),
    ],
    ids=["class", "rgb_spatial_vector", "unconditional_dilated"],
)
def test_cached_equals_naive_for_codes(channels, kwargs, condition):
    model = code_model(channels, **kwargs)
    args = (2, condition, np.float32(0.9), np.array([4, 7], np.int64))
    naive = np.asarray(sampling_function(model, "naive", jit_compile=False)(*args))
    cached = np.asarray(sampling_function(model, "cached", jit_compile=False)(*args))
    np.testing.assert_array_equal(cached, naive)
    assert naive.dtype == np.int32 and naive.min() >= 0 and naive.max() < K and naive.std() > 0


def test_same_seed_same_codes_and_xla_equals_graph():
    model = code_model(num_classes=3)
    classes = np.array([0, 1, 2])
    first = np.asarray(model.sample(condition=classes, seed=5))
    np.testing.assert_array_equal(np.asarray(model.sample(condition=classes, seed=5, jit_compile=False)), first)
    assert not np.array_equal(np.asarray(model.sample(condition=classes, seed=6)), first)
    assert first.shape == (3, 4, 5, 1) and first.dtype == np.int32


@pytest.mark.parametrize("channels", [1, 3])
def test_code_log_prob_is_the_softmax_over_k(channels):
    model = code_model(channels)
    x = codes((2, 4, 5, channels))
    logits = np.asarray(model(x), np.float64)  # [B, H, W, C, K]
    assert logits.shape == (2, 4, 5, channels, K)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.take_along_axis(log_softmax, x[..., None], axis=-1).sum(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(np.asarray(model.log_prob(x)), expected, rtol=1e-10)
    untrained = kp.ConditionalPixelCNN((4, 5, channels), num_layers=1, filters=6, num_categories=K)
    np.testing.assert_allclose(untrained.bits_per_dim(x), np.log2(K), rtol=1e-6)  # zero head: uniform over K


def test_code_model_fits_saves_and_reloads(tmp_path):
    model = kp.ConditionalPixelCNN((4, 5, 1), num_layers=2, filters=8, kernel_size=3, num_categories=K, num_classes=2)
    x, labels = np.repeat(codes((2, 4, 5, 1)), 8, axis=0), np.arange(16) % 2
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit((x, labels), batch_size=8, epochs=5, verbose=0).history["bits_per_dim"]
    assert history[-1] < history[0] < np.log2(K) + 1e-3
    model.save(tmp_path / "prior.keras")
    loaded = keras.models.load_model(tmp_path / "prior.keras")
    assert loaded.num_categories == K and loaded.get_config()["num_categories"] == K
    np.testing.assert_array_equal(loaded.log_prob(x[:2], labels[:2]), model.log_prob(x[:2], labels[:2]))
    np.testing.assert_array_equal(loaded.sample(condition=[0, 1], seed=1), model.sample(condition=[0, 1], seed=1))


def test_code_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"num_categories: the logistic_mixture head models ordered 8-bit"):
        kp.ConditionalPixelCNN((4, 4, 1), head="logistic_mixture", num_categories=K)
    with pytest.raises(ValueError, match=r"num_categories: expected an int >= 2, got 1"):
        kp.ConditionalPixelCNN((4, 4, 1), num_categories=1)
    model = kp.ConditionalPixelCNN((4, 5, 1), num_layers=1, filters=4, num_categories=K)
    with pytest.raises(ValueError, match=r"images: expected codes in \[0, 11\), got values in \[11, 11\]"):
        model.log_prob(np.full((1, 4, 5, 1), K))
    with pytest.raises(ValueError, match=r"images: expected codes in \[0, 11\), got values in \[-1, -1\]"):
        model.bits_per_dim(np.full((1, 4, 5, 1), -1))
    with pytest.raises(ValueError, match=r"images: expected integer codes in \[0, 11\), got dtype float32"):
        model.log_prob(np.zeros((1, 4, 5, 1), np.float32))
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"images: expected codes in \[0, 11\)"):
        model.fit(np.full((2, 4, 5, 1), 12), epochs=1, verbose=0)
