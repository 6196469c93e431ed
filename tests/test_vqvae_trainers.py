"""The two-stage trainer: a VQ-VAE run (trainers.train_vqvae), then a prior on its codes (trainers.train --latents)."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, run_main

from export.export import export_from_model_dir
from trainers import evaluate, sample, train, train_lib, train_vqvae
from trainers.config import TrainConfig, VQVAEConfig
from trainers.model_dir import read_json


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
    assert metrics["test_bits_per_dim"] < 4.0
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
