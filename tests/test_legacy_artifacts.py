"""Old artefacts keep loading: the files of tests/legacy/, written by an earlier version of this code.

tests/legacy/README.txt says which version and how. Tiny .keras models (and their log_prob and
seeded samples as computed then, in expected.npz) and a trainer's run directory (run_config.json,
model_config.json, the latest checkpoint) must load, resume, evaluate and export with today's code
and give the same numbers: log_prob and bits/dim to rtol 1e-5, seeded samples exactly (each of
jit_compile=True and False against its own stored images). Never regenerate these files to make a
test pass.
"""

import dataclasses
import functools
import json
import logging
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_main

import keras_pixelcnn as kp
from export import export as export_cli
from trainers import evaluate, train
from trainers.config import TrainConfig
from trainers.model_dir import load_model

LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "legacy")
EXPECTED = dict(np.load(os.path.join(LEGACY, "expected.npz")))

# name -> the class its .keras file must load as
MODELS = {
    "conditional_softmax": kp.ConditionalPixelCNN,
    "conditional_mixture": kp.ConditionalPixelCNN,
    "autoencoder": kp.PixelCNNAutoEncoder,
}
# The flags trainer_run/ was made with (tests/legacy/make_legacy_artifacts.py): 10 steps, ckpt-10.
TRAIN_FLAGS = [
    "--num_layers=2", "--filters=8", "--kernel_size=3", "--batch_size=16", "--train_steps=10", "--eval_every=10",
    "--eval_examples=32", "--samples_per_class=0", "--mixed_precision=none", "--ema_decay=0.9",
]  # fmt: skip


def expected(name):
    """{key: array} stored for ``name`` in expected.npz."""
    return {key.split("/", 1)[1]: value for key, value in EXPECTED.items() if key.startswith(f"{name}/")}


@functools.cache
def load(name):
    """tests/legacy/<name>.keras, loaded once per test session."""
    return keras.models.load_model(os.path.join(LEGACY, f"{name}.keras"))


def copy_of_the_run(tmp_path):
    """A writable copy of tests/legacy/trainer_run (the checked-in files stay as they are)."""
    return str(shutil.copytree(os.path.join(LEGACY, "trainer_run"), tmp_path / "run"))


@pytest.mark.parametrize("name", MODELS)
def test_keras_file_gives_the_log_prob_it_gave(name):
    model, values = load(name), expected(name)
    assert type(model) is MODELS[name]
    if name == "autoencoder":  # log p(x | h(x)), h from the encoder (moving batch-norm statistics)
        np.testing.assert_allclose(model.encode(values["images"]), values["code"], rtol=1e-5, atol=1e-6)
        log_prob = model.log_prob(values["images"])
    else:
        log_prob = model.log_prob(values["images"], values["condition"])
    np.testing.assert_allclose(log_prob, values["log_prob"], rtol=1e-5)


@pytest.mark.large  # large: compiles samplers with XLA for three models
@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "graph"])
@pytest.mark.parametrize("name", MODELS)
def test_keras_file_draws_the_samples_it_drew_for_the_same_seed(name, jit_compile):
    model, values = load(name), expected(name)
    condition = values["code"] if name == "autoencoder" else values["condition"]
    samples = model.sample(condition=condition, seed=0, jit_compile=jit_compile)
    np.testing.assert_array_equal(samples, values["sample_xla" if jit_compile else "sample_graph"])


def test_run_config_reads_into_the_settings_it_was_made_with():
    path = os.path.join(LEGACY, "trainer_run", "run_config.json")
    config = TrainConfig.from_json(path)
    flags = dict(arg[2:].split("=", 1) for arg in TRAIN_FLAGS)
    assert {name: str(getattr(config, name)) for name in flags} == flags
    with open(path) as handle:
        recorded = json.load(handle)
    fields = {field.name for field in dataclasses.fields(TrainConfig)} & set(recorded)
    assert {name: getattr(config, name) for name in fields} == {name: recorded[name] for name in fields}
    assert config.dataset == "digits" and config.conditioning == "class"


@pytest.mark.large  # large: a trainer run
def test_trainer_run_resumes_from_its_checkpoint(tmp_path, caplog):
    model_dir = copy_of_the_run(tmp_path)
    caplog.set_level(logging.INFO, logger="absl")
    run_main(train, [f"--model_dir={model_dir}", *TRAIN_FLAGS, "--train_steps=14", "--verbosity=0"])  # 0: INFO
    assert "ckpt-10: step 10, optimizer iterations 10." in caplog.text  # "Resumed from ...", not from step 0
    with open(os.path.join(model_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["step"] == 14 and np.isfinite(metrics["test_bits_per_dim"])
    assert metrics["initial_test_bits_per_dim"] != pytest.approx(8.0)  # a fresh start evaluates its 8.0 at step 0
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-14")
    assert os.path.exists(os.path.join(model_dir, "model.keras"))


def test_evaluate_and_load_model_read_the_trainer_run(tmp_path):
    model_dir = copy_of_the_run(tmp_path)
    values = expected("trainer_run")
    result = evaluate.evaluate(model_dir, max_examples=32)
    assert result["dataset"] == "digits"
    np.testing.assert_allclose(result["bits_per_dim"], values["bits_per_dim"], rtol=1e-5)
    model, source = load_model(model_dir)  # no model.keras: model_config.json and the latest checkpoint
    assert source.endswith("ckpt-10")
    np.testing.assert_allclose(model.log_prob(values["images"], values["labels"]), values["log_prob"], rtol=1e-5)


@pytest.mark.large  # large: writes and loads a SavedModel
def test_export_reads_the_trainer_run(tmp_path):
    model_dir = copy_of_the_run(tmp_path)
    values = expected("trainer_run")
    path = export_cli.export_from_model_dir(model_dir, str(tmp_path / "export"))
    signature = tf.saved_model.load(path).signatures["log_prob"]
    log_prob = signature(images=tf.constant(values["images"]), class_ids=tf.constant(values["labels"]))["log_prob"]
    np.testing.assert_allclose(log_prob, values["log_prob"], rtol=1e-5)
