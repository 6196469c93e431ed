"""The trainers with --conditioning=autoencoder|embedding, --spatial_condition, and trainers.sample --mode.

One auto-encoder run and one embedding run on the embedded digits (tiny
models, a few steps), then the evaluate / sample / export binaries on them.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app
from conftest import TINY, run_main

import keras_pixelcnn as kp
from export import export as export_cli
from trainers import embedding_model, evaluate, sample, train
from trainers.data import load_split
from trainers.model_dir import load_model

# A recipe that learns visibly in a few steps (the default cosine decay would reach 0 by step 10).
FAST = ["--eval_examples=32", "--log_every=5", "--learning_rate=0.01", "--lr_schedule=constant"]


def digit_images(ids):
    """Test-split digits by index, uint8 [len(ids), 8, 8, 1]."""
    images = np.stack([image.numpy() for image, _ in load_split("digits", "test").take(max(ids) + 1)])
    return images[ids]


def read_png(path):
    with open(path, "rb") as handle:
        return tf.io.decode_png(handle.read()).numpy()


def read_json(model_dir, name):
    with open(os.path.join(model_dir, name)) as handle:
        return json.load(handle)


def summary_tags(log_dir):
    tags = set()
    for name in os.listdir(log_dir):
        for record in tf.data.TFRecordDataset(os.path.join(log_dir, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("autoencoder") / "run")
    argv = [f"--model_dir={model_dir}", "--conditioning=autoencoder", "--bottleneck_dim=4", "--spatial_condition",
            "--samples_per_class=2", *TINY, *FAST]  # fmt: skip
    run_main(train, argv + ["--train_steps=10", "--eval_every=10"])
    run_main(train, argv + ["--train_steps=20", "--eval_every=10"])  # resumes from ckpt-10
    return model_dir


@pytest.mark.large  # large: uses an auto-encoder trainer run (built once per module)
def test_autoencoder_trainer_end_to_end(autoencoder_run, tmp_path):
    model_dir = autoencoder_run
    model, source = load_model(model_dir)
    assert source.endswith("model.keras") and type(model) is kp.PixelCNNAutoEncoder
    assert model.bottleneck_dim == 4 and model.spatial_condition and model.decoder.num_layers == 2
    run_config = read_json(model_dir, "run_config.json")
    assert run_config["conditioning"] == "autoencoder" and run_config["spatial_condition"] is True
    metrics = read_json(model_dir, "metrics.json")
    assert metrics["step"] == 20 and metrics["test_bits_per_dim"] < metrics["initial_test_bits_per_dim"] - 1.0
    # The resumed run restored the encoder with the rest (assert_existing_objects_matched): the
    # checkpoint rebuilt from model_config.json equals the final model (no EMA).
    restored, _ = load_model(model_dir, checkpoint="ckpt-20")
    images = digit_images(list(range(4)))
    np.testing.assert_allclose(restored.log_prob(images), model.log_prob(images), rtol=1e-6)
    np.testing.assert_array_equal(restored.encode(images), model.encode(images))

    # Each evaluation writes the inputs and their reconstructions: 8 rows of input, blank, 2 samples.
    grids = sorted(os.listdir(os.path.join(model_dir, "samples")))
    assert grids == ["step_00000000.png", "step_00000010.png", "step_00000020.png"]
    grid = read_png(os.path.join(model_dir, "samples", grids[-1]))
    assert grid.shape == (8 * 33 + 1, 4 * 33 + 1, 1)
    first_input = grid[1:33:4, 1:33:4]  # row 0, column 0, un-enlarged
    np.testing.assert_array_equal(first_input, digit_images([0])[0])
    assert (grid[1:33, 34:66] == 255).all()  # the blank column
    assert "inputs_then_reconstructions" in summary_tags(os.path.join(model_dir, "logs"))

    assert evaluate.evaluate(model_dir, max_examples=32)["bits_per_dim"] == pytest.approx(
        metrics["test_bits_per_dim"], rel=1e-5
    )


@pytest.mark.large  # large: uses an auto-encoder trainer run (built once per module)
def test_sample_reconstruct_and_interpolate_modes(autoencoder_run, tmp_path):
    model_dir = autoencoder_run
    model, _ = load_model(model_dir)
    out, npy = str(tmp_path / "recon.png"), str(tmp_path / "recon.npy")
    run_main(sample, [f"--model_dir={model_dir}", "--mode=reconstruct", "--image_ids=2,5,9", "--num=3", "--seed=4",
                      f"--out={out}", f"--out_npy={npy}"])  # fmt: skip
    assert read_png(out).shape == (3 * 33 + 1, 5 * 33 + 1, 1)  # input, blank, 3 reconstructions per row
    expected = model.reconstruct(digit_images([2, 5, 9]), 3, seed=4)
    np.testing.assert_array_equal(np.load(npy), expected)

    images = str(tmp_path / "mine.npy")
    np.save(images, digit_images([7, 3]))
    out, npy = str(tmp_path / "interp.png"), str(tmp_path / "interp.npy")
    run_main(sample, [f"--model_dir={model_dir}", "--mode=interpolate", f"--images={images}", "--image_ids=1,0",
                      "--steps=4", "--num=2", "--seed=1", f"--out={out}", f"--out_npy={npy}"])  # fmt: skip
    assert read_png(out).shape == (4 * 33 + 1, 2 * 33 + 1, 1)  # rows = steps, columns = samples
    grid, _ = model.interpolate(digit_images([3])[0], digit_images([7])[0], 4, 2, seed=1)
    np.testing.assert_array_equal(np.load(npy), grid)
    assert np.load(npy).shape == (4, 2, 8, 8, 1)


@pytest.mark.large  # large: uses an auto-encoder trainer run (built once per module)
@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--mode=classes"], "--mode=classes: this PixelCNNAutoEncoder is conditioned on images"),
        (["--mode=reconstruct", "--class_ids=1"], "--class_ids: only used with --mode=classes"),
        (["--mode=interpolate", "--image_ids=1,2,3"], "--image_ids: --mode=interpolate takes exactly two ids"),
        (["--mode=interpolate", "--steps=1"], "--steps: expected an int >= 2"),
        (["--mode=reconstruct", "--image_ids=0,360"], r"--image_ids: expected indices below 360"),
        (["--mode=reconstruct", "--image_ids=a"], "--image_ids: expected comma-separated integers"),
        (["--mode=reconstruct", "--images=/no/such.npy"], "--images: cannot read"),
    ],
)
def test_sample_flag_errors(autoencoder_run, argv, pattern):
    with pytest.raises(app.UsageError, match=pattern):
        run_main(sample, [f"--model_dir={autoencoder_run}", "--out=/tmp/unused.png", *argv])


@pytest.mark.large  # large: uses an auto-encoder trainer run (built once per module)
def test_export_binary_exports_the_autoencoder_from_a_checkpoint(autoencoder_run, tmp_path):
    path = export_cli.export_from_model_dir(autoencoder_run, str(tmp_path / "ae"), checkpoint="ckpt-10")
    loaded = tf.saved_model.load(path)
    assert sorted(loaded.signatures) == ["encode", "log_prob", "reconstruct", "serving_default"]
    model, _ = load_model(autoencoder_run, checkpoint="ckpt-10")
    images = digit_images([0, 1, 2])
    outputs = loaded.signatures["log_prob"](images=tf.constant(images))
    np.testing.assert_allclose(outputs["log_prob"].numpy(), model.log_prob(images), rtol=1e-5)


def test_mode_reconstruct_needs_an_encoder(tmp_path):
    model_dir = str(tmp_path / "class_run")
    run_main(train, [f"--model_dir={model_dir}", "--train_steps=1", "--eval_every=1", "--samples_per_class=0",
                     "--num_layers=1", "--filters=4", "--batch_size=8", *FAST])  # fmt: skip
    with pytest.raises(app.UsageError, match="--mode=reconstruct: needs a model with an encoder"):
        run_main(sample, [f"--model_dir={model_dir}", "--mode=reconstruct"])


# -- conditioning on a frozen embedding ---------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("embedding") / "digits_embedding.keras")
    run_main(embedding_model, [f"--embedding_out={path}", "--embedding_dim=6", "--classifier_steps=30"])
    return path


@pytest.mark.large  # large: trains a digit classifier for its embedding network (once per module)
def test_embedding_model_binary_saves_a_unit_norm_embedding(embedding_file):
    embedding = keras.models.load_model(embedding_file)
    vectors = np.asarray(embedding(digit_images(list(range(5))).astype(np.float32)))
    assert vectors.shape == (5, 6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(app.UsageError, match="--embedding_out: expected a path ending in .keras"):
        run_main(embedding_model, ["--embedding_out=/tmp/embedding.h5"])


@pytest.mark.large  # large: trains a digit classifier for its embedding network (once per module)
def test_embedding_trainer_and_interpolation_sampler(embedding_file, tmp_path):
    model_dir = str(tmp_path / "run")
    run_main(train, [f"--model_dir={model_dir}", "--conditioning=embedding", f"--embedding_model={embedding_file}",
                     "--train_steps=10", "--eval_every=10", "--samples_per_class=1", *TINY, *FAST])  # fmt: skip
    model, _ = load_model(model_dir)
    assert type(model) is kp.EmbeddingConditionedPixelCNN and model.bottleneck_dim == 6
    assert read_json(model_dir, "run_config.json")["embedding_model"] == embedding_file
    embedding = keras.models.load_model(embedding_file)  # the frozen network went through training unchanged
    for trained, original in zip(model.embedding_model.weights, embedding.weights):
        np.testing.assert_array_equal(trained.numpy(), original.numpy())
    metrics = read_json(model_dir, "metrics.json")
    assert metrics["test_bits_per_dim"] < metrics["initial_test_bits_per_dim"] - 1.0

    out, npy = str(tmp_path / "interp.png"), str(tmp_path / "interp.npy")
    run_main(sample, [f"--model_dir={model_dir}", "--mode=interpolate", "--image_ids=4,9", "--steps=3", "--num=2",
                      "--seed=2", "--temperature=0.9", f"--out={out}", f"--out_npy={npy}"])  # fmt: skip
    assert read_png(out).shape == (3 * 33 + 1, 2 * 33 + 1, 1)
    grid = np.load(npy)
    assert grid.shape == (3, 2, 8, 8, 1)
    # The end points are conditioned on the two images' embeddings by the original file's network.
    h_a, h_b = np.asarray(embedding(digit_images([4, 9]).astype(np.float32)))
    codes = np.repeat(kp.interpolation_conditions(h_a, h_b, 3), 2, axis=0)
    np.testing.assert_array_equal(codes[0], h_a)
    np.testing.assert_array_equal(codes[-1], h_b)
    expected = model.decoder.sample(condition=codes, temperature=0.9, seed=2)
    np.testing.assert_array_equal(grid.reshape(6, 8, 8, 1), expected)


@pytest.mark.large  # large: trains a digit classifier for its embedding network (once per module)
@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--conditioning=embedding"], "--embedding_model: required with --conditioning=embedding"),
        (["--conditioning=embedding", "--embedding_model=/no/such.keras"], "--embedding_model: no such file"),
        (
            ["--conditioning=class", "--embedding_model={embedding}"],
            "--embedding_model: only used with --conditioning=embedding",
        ),
        (
            ["--conditioning=embedding", "--embedding_model={other}"],
            r"--embedding_model: .* does not take images \[batch, 8, 8, 1\]",
        ),
        (["--conditioning=embedding", "--embedding_model={text}"], "--embedding_model: cannot load"),
        (["--conditioning=none", "--spatial_condition"], "--spatial_condition: needs a condition to map"),
        (["--conditioning=autoencoder", "--bottleneck_dim=0"], "--bottleneck_dim: expected an int >= 1"),
    ],
)
def test_bad_conditioning_flags_fail_before_training(embedding_file, tmp_path, argv, pattern):
    other = str(tmp_path / "other.keras")
    keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]).save(other)
    (tmp_path / "text.keras").write_text("not a model")
    argv = [a.format(embedding=embedding_file, other=other, text=tmp_path / "text.keras") for a in argv]
    with pytest.raises(app.UsageError, match=pattern):
        run_main(train, [f"--model_dir={tmp_path}/run", *argv])
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
