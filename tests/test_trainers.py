"""The train / evaluate / sample binaries, end to end, in-process and as subprocesses."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from conftest import REPO_ROOT as ROOT
from conftest import TINY, parse_flags, run_main, subprocess_env

from trainers import evaluate, sample, train, train_lib
from trainers.model_dir import load_model

FLAGS = flags.FLAGS


def fixed_batch_bits(model, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (4, 8, 8, 1)).astype(np.uint8)
    return np.asarray(model.bits_per_dim(images, np.array([0, 3, 5, 9])))


@pytest.mark.large  # large: 120 trainer steps, evaluate and sample
def test_trainer_end_to_end_on_the_embedded_digits(tmp_path):
    model_dir = str(tmp_path / "run")
    run_main(train, [f"--model_dir={model_dir}", "--train_steps=120", "--eval_every=60", *TINY, "--batch_size=32"])
    names = set(os.listdir(model_dir))
    assert {
        "model.keras",
        "model_config.json",
        "run_config.json",
        "metrics.json",
        "checkpoints",
        "logs",
        "samples",
    } <= names
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    assert metrics["step"] == 120
    assert metrics["initial_test_bits_per_dim"] == pytest.approx(8.0, abs=1e-5)
    assert metrics["test_bits_per_dim"] < 4.5, metrics  # far below the untrained 8.0
    grids = sorted(os.listdir(os.path.join(model_dir, "samples")))
    assert grids == ["step_00000000.png", "step_00000060.png", "step_00000120.png"]
    grid = tf.io.decode_png(open(os.path.join(model_dir, "samples", grids[-1]), "rb").read()).numpy()
    assert grid.shape == (10 * 33 + 1, 8 * 33 + 1, 1)  # one row per class, 8 per row, 8x8 enlarged 4x
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-120")
    assert any(name.startswith("events") for name in os.listdir(os.path.join(model_dir, "logs")))

    result = evaluate.evaluate(model_dir)
    assert result["dataset"] == "digits" and result["bits_per_dim"] == pytest.approx(
        metrics["test_bits_per_dim"], rel=1e-5
    )
    out = str(tmp_path / "grid.png")
    run_main(sample, [f"--model_dir={model_dir}", "--class_ids=1,7", "--num=3", f"--out={out}", "--seed=3"])
    assert tf.io.decode_png(open(out, "rb").read()).shape == (2 * 33 + 1, 3 * 33 + 1, 1)
    with pytest.raises(app.UsageError, match="--class_ids: expected ids in"):
        run_main(sample, [f"--model_dir={model_dir}", "--class_ids=12"])


@pytest.mark.parametrize(
    "dataset, shape",
    # large: cifar10 is a second tfds data set through the trainer
    [("mnist", (28, 28, 1)), pytest.param("cifar10", (32, 32, 3), marks=pytest.mark.large)],
    ids=["mnist", "cifar10"],
)  # fmt: skip
def test_trainer_reads_tfds_datasets(tmp_path, monkeypatch, dataset, shape):
    import tensorflow_datasets as tfds

    batches = []  # what reaches the train step: (images, labels) of every step
    real_make_train_step = train_lib.make_train_step

    def recording(*args, **kwargs):
        step = real_make_train_step(*args, **kwargs)
        return lambda batch: batches.append([np.asarray(x) for x in batch]) or step(batch)

    monkeypatch.setattr(train_lib, "make_train_step", recording)
    model_dir = str(tmp_path / dataset)
    with tfds.testing.mock_data(num_examples=40):
        run_main(
            train,
            [
                f"--model_dir={model_dir}",
                f"--dataset={dataset}",
                "--train_steps=2",
                "--eval_every=2",
                "--num_layers=1",
                "--filters=6",
                "--batch_size=8",
                "--samples_per_class=0",
                "--eval_examples=8",
                "--conditioning=class",
            ],
        )
    assert len(batches) == 2
    for images, labels in batches:
        assert images.dtype == np.uint8 and images.shape == (8, *shape)
        assert images.min() < 64 and images.max() > 192  # mock pixels span 0..255, not rescaled
        assert labels.dtype == np.int32 and labels.shape == (8,)
        assert labels.min() >= 0 and labels.max() < 10 and len(set(labels.tolist())) > 1
    model, _ = load_model(model_dir)
    assert model.image_shape == shape and model.num_classes == 10
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    assert metrics["step"] == 2 and metrics["dataset"] == dataset
    assert np.isfinite(metrics["test_bits_per_dim"]) and 0 < metrics["test_bits_per_dim"] < 9


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--batch_size=0"], "--batch_size: the global batch must split evenly"),
        (["--dataset=downsampled_imagenet/32x32", "--conditioning=class"], "--conditioning=class: .* has no labels"),
        (["--dataset=mnist", "--data_dir={tmp}/empty"], "--dataset=mnist: not found in --data_dir="),
        (["--kernel_size=4"], "--kernel_size: expected an odd number"),
        (["--num_layers=3", "--dilation_rates=1,2"], "--dilation_rates: expected auto, none or 3 comma-sep"),
        (["--ema_decay=1.5"], "--ema_decay: expected a value in"),
    ],
)
def test_bad_flags_fail_before_training(tmp_path, argv, pattern):
    argv = [a.format(tmp=tmp_path) for a in argv]
    started = time.time()
    with pytest.raises(app.UsageError, match=pattern):
        run_main(train, [f"--model_dir={tmp_path}/run", *argv])
    assert time.time() - started < 30  # no download retries
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize("argv, pattern", [(["--dataset=imagenet"], "dataset"), (["--head=gaussian"], "head")])
def test_unknown_dataset_or_head_is_a_flag_error(argv, pattern):
    with pytest.raises(flags.IllegalFlagValueError, match=pattern):
        run_main(train, ["--model_dir=/tmp/unused", *argv])


@pytest.mark.large  # large: a trainer run to a NaN loss, then a load of its checkpoint
def test_nan_loss_stops_with_a_message_and_a_usable_checkpoint(tmp_path, monkeypatch, caplog):
    model_dir = str(tmp_path / "run")

    real_make_train_step = train_lib.make_train_step

    def diverging(*args, **kwargs):
        step = real_make_train_step(*args, **kwargs)
        calls = {"n": 0}

        def wrapped(batch):
            calls["n"] += 1
            loss = step(batch)
            return loss if calls["n"] < 5 else loss * float("nan")

        return wrapped

    monkeypatch.setattr(train_lib, "make_train_step", diverging)
    with pytest.raises(SystemExit) as exit_info:
        run_main(
            train, [f"--model_dir={model_dir}", "--train_steps=50", "--eval_every=3", "--samples_per_class=0", *TINY]
        )
    assert exit_info.value.code == 1
    assert "Loss is nan at step 5" in caplog.text
    model, source = load_model(model_dir)  # no model.keras: the last checkpoint
    assert source.endswith("ckpt-3")
    assert np.all(np.isfinite(fixed_batch_bits(model)))
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))


def _wait_for_checkpoint(model_dir, process, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        if latest:
            return latest
        if process.poll() is not None:
            raise AssertionError(f"trainer exited early: {process.stderr.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.large  # large: a trainer subprocess, killed, then resumed
def test_resume_after_sigkill_restores_step_optimizer_and_weights(tmp_path, caplog):
    model_dir = str(tmp_path / "run")
    argv = [
        sys.executable,
        "-m",
        "trainers.train",
        f"--model_dir={model_dir}",
        "--eval_every=10",
        "--samples_per_class=0",
        "--eval_examples=32",
        *TINY,
    ]
    process = subprocess.Popen(
        argv + ["--train_steps=100000"], env=subprocess_env(), stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        _wait_for_checkpoint(model_dir, process)
    finally:
        process.kill()
        process.wait(timeout=60)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    step = int(latest.rsplit("-", 1)[1])
    before, _ = load_model(model_dir, checkpoint=latest)
    expected = fixed_batch_bits(before)

    # The resume runs in this process (a second TensorFlow start-up would only cost time).
    caplog.set_level(logging.INFO, logger="absl")
    run_main(train, argv[3:] + [f"--train_steps={step}", "--verbosity=0"])  # 0: INFO
    assert f"Resumed from {latest}: step {step}, optimizer iterations {step}." in caplog.text
    assert json.load(open(os.path.join(model_dir, "metrics.json")))["step"] == step
    after, _ = load_model(model_dir)  # the final model written by the resumed run
    np.testing.assert_array_equal(fixed_batch_bits(after), expected)


@pytest.mark.large  # large: a trainer subprocess stopped by SIGTERM
def test_sigterm_checkpoints_then_exits(tmp_path):
    model_dir = str(tmp_path / "run")
    argv = [
        sys.executable,
        "-m",
        "trainers.train",
        f"--model_dir={model_dir}",
        "--eval_every=1000",
        "--log_every=5",
        "--train_steps=100000",
        "--samples_per_class=0",
        "--eval_examples=32",
        *TINY,
    ]
    process = subprocess.Popen(argv, env=subprocess_env(), stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 240
    for line in process.stderr:  # wait until training steps run
        if "step 5: train bits/dim" in line or time.time() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Stopped by signal 15" in err
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert latest is not None and int(latest.rsplit("-", 1)[1]) >= 5


def test_presets_fill_only_the_flags_not_given():
    parse_flags(train, ["--model_dir=/tmp/unused", "--config=cifar10", "--num_layers=3"])
    config = train.config_from_flags()
    assert config.num_layers == 3  # given explicitly
    assert (config.filters, config.kernel_size, config.batch_size, config.dataset) == (384, 5, 128, "cifar10")


def test_train_flags_are_train_configs_fields():
    """Each TrainConfig setting is one flag with the field's default, help and choices (defined once)."""
    import dataclasses

    from trainers.config import TrainConfig

    fields = [field for field in dataclasses.fields(TrainConfig) if field.name != "config"]
    assert len(fields) == 31
    for field in fields:
        flag = flags.FLAGS[field.name]
        assert flag.default == field.default and flag.help.endswith(field.metadata["help"]), field.name
        if field.metadata["choices"]:
            assert flag.parser.enum_values == list(field.metadata["choices"]), field.name
    parse_flags(train, ["--model_dir=/tmp/unused", "--filters=48", "--head=logistic_mixture", "--ema_decay=0.5"])
    assert train.config_from_flags() == TrainConfig(filters=48, head="logistic_mixture", ema_decay=0.5)
    with pytest.raises(flags.IllegalFlagValueError, match="head"):
        parse_flags(train, ["--model_dir=/tmp/unused", "--head=gaussian"])


@pytest.mark.large  # large: a trainer run and two evaluations (the fast tier keeps WeightAverage's unit test)
def test_ema_weights_are_what_gets_evaluated_and_saved(tmp_path):
    from trainers.config import TrainConfig
    from trainers.loop import WeightAverage

    model_dir = str(tmp_path / "run")
    run_main(
        train,
        [
            f"--model_dir={model_dir}",
            "--train_steps=6",
            "--eval_every=6",
            "--ema_decay=0.8",
            "--samples_per_class=0",
            "--eval_examples=32",
            *TINY,
        ],
    )
    config = TrainConfig.from_json(os.path.join(model_dir, "run_config.json"))
    raw = train_lib.build_model(config, (8, 8, 1), 10)
    average = WeightAverage(raw, config.ema_decay)
    tf.train.Checkpoint(model=raw, weight_average=average).restore(
        tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    ).expect_partial().assert_existing_objects_matched()
    final, _ = load_model(model_dir)
    averages = [a.numpy() for a in average.averages]  # in trainable_weights order
    assert len(averages) == len(final.trainable_weights) == len(raw.trainable_weights)
    for weight, average in zip(final.trainable_weights, averages):
        np.testing.assert_allclose(weight.numpy(), average, rtol=1e-6)
    assert any(not np.allclose(w.numpy(), a) for w, a in zip(raw.trainable_weights, averages))
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    averaged_bits = evaluate.evaluate(model_dir, max_examples=32)["bits_per_dim"]  # model.keras
    assert averaged_bits == pytest.approx(metrics["test_bits_per_dim"], rel=1e-5)
    raw_bits = evaluate.evaluate(model_dir, max_examples=32, checkpoint="ckpt-6")["bits_per_dim"]
    assert abs(raw_bits - averaged_bits) > 1e-4  # a checkpoint holds the raw weights (BUILD_NOTES, Known limits)


@pytest.mark.large  # large: a trainer run per precision and option (XLA among them)
@pytest.mark.parametrize(
    "argv",
    [
        ["--mixed_precision=bfloat16"],
        ["--mixed_precision=float16"],
        ["--jit_compile"],
        ["--lr_schedule=cosine", "--clip_norm=0.5", "--dropout=0.2", "--head=logistic_mixture", "--num_mixtures=2"],
    ],
)
def test_paper_scale_options_train(tmp_path, argv):
    import keras

    model_dir = str(tmp_path / "run")
    try:
        run_main(
            train,
            [
                f"--model_dir={model_dir}",
                "--train_steps=4",
                "--eval_every=4",
                "--samples_per_class=1",
                "--eval_examples=32",
                *TINY,
                *argv,
            ],
        )
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    assert metrics["step"] == 4 and np.isfinite(metrics["test_bits_per_dim"])
    assert metrics["test_bits_per_dim"] < metrics["initial_test_bits_per_dim"] + 0.5
