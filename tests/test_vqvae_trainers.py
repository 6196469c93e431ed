"""The two-stage trainer: a VQ-VAE run (trainers.train_vqvae), then a prior on its codes (trainers.train --latents)."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, run_main

from export.export import export_from_model_dir
from trainers import evaluate, sample, train, train_lib, train_vqvae
from trainers.config import TrainConfig, VQVAEConfig
from trainers.model_dir import read_json, write_json
from trainers.vqvae_lib import load_vqvae
from trainers.vqvae_lib import train_vqvae as train_vqvae_in


class _Interrupt(Exception):
    pass


class _Epochs(keras.callbacks.Callback):
    """Records the epochs that start and the weights they start from; raises after ``stop_after`` epochs end."""

    def __init__(self, stop_after=None):
        super().__init__()
        self.started, self.stop_after, self.ended_weights, self.first_weights = [], stop_after, None, None

    def on_epoch_begin(self, epoch, logs=None):
        self.started.append(epoch)
        if self.first_weights is None:
            self.first_weights = [np.array(w) for w in self.model.get_weights()]

    def on_epoch_end(self, epoch, logs=None):
        self.ended_weights = [np.array(w) for w in self.model.get_weights()]
        if epoch + 1 == self.stop_after:
            raise _Interrupt()  # as a kill after the epoch's backup


@pytest.mark.large  # large: three VQ-VAE runs on the digits (~8 s)
def test_an_interrupted_vqvae_run_resumes_from_its_last_epoch(tmp_path):
    """Killed after epoch 1 of 3: no model or metrics are left; the rerun starts at epoch 2 from epoch 1's weights.
    Asked for a 4th epoch, the finished run continues from its saved model; other settings are refused by name."""
    config = VQVAEConfig(num_embeddings=8, embedding_dim=2, filters=4, epochs=3, batch_size=256)
    vq_dir = str(tmp_path / "vq")
    interrupted = _Epochs(stop_after=1)
    with pytest.raises(_Interrupt):
        train_vqvae_in(config, vq_dir, callbacks=[interrupted])
    assert sorted(os.listdir(vq_dir)) == ["backup", "run_config.json"]  # no model.keras, no metrics.json
    resumed = _Epochs()
    metrics = train_vqvae_in(config, vq_dir, callbacks=[resumed])
    assert resumed.started == [1, 2] and metrics["epochs"] == 3
    for restored, saved in zip(resumed.first_weights, interrupted.ended_weights):
        np.testing.assert_array_equal(restored, saved)
    assert sorted(os.listdir(vq_dir)) == ["metrics.json", "model.keras", "run_config.json"]  # the backup is gone
    trained = load_vqvae(vq_dir).get_weights()
    extended = _Epochs()
    assert train_vqvae_in(dataclasses.replace(config, epochs=4), vq_dir, callbacks=[extended])["epochs"] == 4
    assert extended.started == [3]  # continued from the finished model, not retrained
    for restored, saved in zip(extended.first_weights, trained):
        np.testing.assert_array_equal(restored, saved)
    with pytest.raises(ValueError, match=r"model_dir: .* holds a VQ-VAE run with other settings \(num_embeddings=8 "
                                         r"there, 16 here\); use a new model_dir"):  # fmt: skip
        train_vqvae_in(dataclasses.replace(config, num_embeddings=16, epochs=5), vq_dir)
    recorded = read_json(os.path.join(vq_dir, "run_config.json"))
    del recorded["decoder_likelihood"]  # a run from before the setting existed: it trained with MSE
    write_json(os.path.join(vq_dir, "run_config.json"), recorded)
    assert train_vqvae_in(dataclasses.replace(config, epochs=4), vq_dir)["epochs"] == 4  # the same run: done
    with pytest.raises(ValueError, match=r"decoder_likelihood='mse' there, 'logistic' here"):
        train_vqvae_in(dataclasses.replace(config, decoder_likelihood="logistic", epochs=5), vq_dir)


@pytest.mark.large  # large: two trainer runs on the digits, evaluation and sampling
def test_a_vqvae_then_a_prior_on_its_codes_end_to_end(tmp_path):
    vq_dir, prior_dir = str(tmp_path / "vq"), str(tmp_path / "prior")
    vq_flags = ["--vq_num_embeddings=16", "--vq_embedding_dim=4", "--vq_filters=16", "--vq_epochs=3"]
    run_main(train_vqvae, [f"--model_dir={vq_dir}", *vq_flags])
    vq_metrics = read_json(os.path.join(vq_dir, "metrics.json"))
    assert vq_metrics["epochs"] == 3 and vq_metrics["test_mean_l1"] < 60 and vq_metrics["used"] > 0.5, vq_metrics
    run_main(train_vqvae, [f"--model_dir={vq_dir}", *vq_flags])  # done: nothing retrained
    assert read_json(os.path.join(vq_dir, "metrics.json")) == vq_metrics

    run_main(train, [f"--model_dir={prior_dir}", f"--latents={vq_dir}", *TINY, "--train_steps=20", "--eval_every=10",
                     "--samples_per_class=2"])  # fmt: skip
    recorded = read_json(os.path.join(prior_dir, "run_config.json"))
    assert recorded["num_categories"] == 16 and recorded["latents"] == vq_dir
    metrics = read_json(os.path.join(prior_dir, "metrics.json"))
    assert metrics["initial_test_bits_per_dim"] == pytest.approx(4.0, rel=1e-4)  # log2 16: uniform over codes
    assert metrics["test_bits_per_dim"] < 4.0 and metrics["dataset"] == f"latents:{vq_dir}"
    assert evaluate.evaluate(prior_dir)["bits_per_dim"] == pytest.approx(metrics["test_bits_per_dim"], rel=1e-4)
    grid = os.path.join(prior_dir, "samples", "step_00000020.png")
    assert os.path.exists(grid)
    _, images = sample.sample(prior_dir, class_ids=[3, 7], num=2, out=str(tmp_path / "s.png"))
    assert images.shape == (2, 2, 8, 8, 1) and images.dtype == np.uint8  # decoded through the VQ-VAE
    loaded = tf.saved_model.load(export_from_model_dir(prior_dir, str(tmp_path / "served")))  # a VQVAEPrior
    served = loaded.signatures["serving_default"](
        class_ids=tf.constant([3, 7]), seed=tf.constant([1, 2], tf.int64), temperature=tf.constant(1.0)
    )
    assert served["images"].dtype == tf.uint8 and served["images"].shape == (2, 8, 8, 1)
    assert served["codes"].dtype == tf.int32 and served["codes"].shape == (2, 4, 4, 1)
    mismatch = r"num_categories: the VQ-VAE in latents=.* has 16 codes, got num_categories=8"
    with pytest.raises(ValueError, match=mismatch):
        train_lib.train_and_evaluate(TrainConfig(latents=vq_dir, num_categories=8), str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"latents: no trained VQ-VAE in"):
        train_lib.train_and_evaluate(TrainConfig(latents=str(tmp_path / "none")), str(tmp_path / "bad2"))
    assert VQVAEConfig().resolved_downsample((28, 28, 1)) == 2 and VQVAEConfig().resolved_downsample((8, 8, 1)) == 1
