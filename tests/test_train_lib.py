"""trainers.train_lib.train_and_evaluate from Python: config, callbacks, EMA, resume, ram:// model dirs."""

import csv
import json
import os
import shutil
import threading
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

from trainers import evaluate, sample, train_lib
from trainers.config import PRESETS, TrainConfig, resolve_dilation_rates, resolve_filters, resolve_trunk
from trainers.loop import WeightAverage, make_evaluator
from trainers.model_dir import load_model

TINY = TrainConfig(num_layers=2, filters=8, batch_size=16, samples_per_class=0, eval_examples=32, log_every=5)


def read_json(path):
    with tf.io.gfile.GFile(path) as handle:
        return json.load(handle)


class Recorder(keras.callbacks.Callback):
    """Records every hook it sees; sets ``model.stop_training`` after batch end number ``stop_at``."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.stop_at, self.events, self.batch_ends = stop_at, [], 0

    def on_train_begin(self, logs=None):
        self.events.append(("train_begin", None))

    def on_train_end(self, logs=None):
        self.events.append(("train_end", None))

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, dict(logs)))

    def on_train_batch_end(self, batch, logs=None):
        self.batch_ends += 1
        self.events.append(("batch_end", batch, dict(logs)))
        if self.batch_ends == self.stop_at:
            self.model.stop_training = True

    def on_test_end(self, logs=None):
        self.events.append(("test_end", dict(logs)))


@pytest.mark.large  # large: two trainer runs, 30 steps and three evaluations
def test_train_and_evaluate_returns_the_final_metrics_and_resumes(tmp_path):
    model_dir = str(tmp_path / "run")
    metrics = train_lib.train_and_evaluate(TINY.replace(train_steps=20, eval_every=10), model_dir)
    assert metrics == read_json(os.path.join(model_dir, "metrics.json"))
    assert metrics["step"] == 20 and metrics["test_bits_per_dim"] < metrics["initial_test_bits_per_dim"]
    assert {"model.keras", "model_config.json", "run_config.json", "checkpoints", "logs"} <= set(os.listdir(model_dir))
    assert TrainConfig.from_json(os.path.join(model_dir, "run_config.json")) == TINY.replace(
        train_steps=20, eval_every=10
    )

    recorder = Recorder()
    metrics = train_lib.train_and_evaluate(TINY.replace(train_steps=30, eval_every=10), model_dir, callbacks=[recorder])
    assert metrics["step"] == 30
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-30")
    assert [e[1] for e in recorder.events if e[0] == "epoch_begin"] == [2]  # resumed in epoch 2 (steps 20..30)
    assert sum(e[0] == "batch_end" for e in recorder.events) == 10


def test_a_checkpoint_of_another_config_is_refused_by_name(tmp_path):
    model_dir = str(tmp_path / "run")
    train_lib.train_and_evaluate(TINY.replace(train_steps=2, eval_every=2), model_dir)
    with pytest.raises(ValueError, match="model_dir: its checkpoint .*ckpt-2 does not fit this config"):
        train_lib.train_and_evaluate(TINY.replace(train_steps=4, eval_every=2, ema_decay=0.9), model_dir)
    # A run resumed under other defaults is told the flags its first part recorded.
    # (2 layers of 3x3 on 8 rows: dilation_rates=auto dilated them.)
    with pytest.raises(ValueError, match=r"started with --num_layers=2 --dilation_rates=1,2 \(run_config.json\); pass"):
        train_lib.train_and_evaluate(TINY.replace(train_steps=4, eval_every=2, num_layers=3), model_dir)


def test_callbacks_see_the_keras_hooks_and_stop_training_checkpoints(tmp_path):
    model_dir = str(tmp_path / "run")
    recorder = Recorder(stop_at=30)
    metrics = train_lib.train_and_evaluate(
        TINY.replace(train_steps=100, eval_every=20), model_dir, callbacks=[recorder]
    )
    assert metrics["step"] == 30
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-30")
    assert os.path.exists(os.path.join(model_dir, "model.keras"))
    kinds = [event[0] for event in recorder.events]
    assert kinds[0] == "train_begin" and kinds[-1] == "train_end" and kinds.count("batch_end") == 30
    assert [e[1] for e in recorder.events if e[0] == "epoch_begin"] == [0, 1]
    batch_logs = next(e[2] for e in recorder.events if e[0] == "batch_end")
    assert set(batch_logs) == {"loss", "bits_per_dim"} and np.isfinite(batch_logs["loss"])
    epoch_logs = [e[2] for e in recorder.events if e[0] == "epoch_end"]
    assert len(epoch_logs) == 2
    assert set(epoch_logs[0]) == {"loss", "bits_per_dim", "val_loss", "val_bits_per_dim"}
    tests = [e[1] for e in recorder.events if e[0] == "test_end"]
    assert len(tests) == 3  # at step 0, 20 and 30
    assert tests[-1]["bits_per_dim"] == pytest.approx(metrics["test_bits_per_dim"])
    assert epoch_logs[-1]["val_bits_per_dim"] == pytest.approx(metrics["test_bits_per_dim"])


def test_stock_keras_callbacks(tmp_path):
    log = str(tmp_path / "log.csv")
    seen = []
    stopper = keras.callbacks.EarlyStopping(monitor="val_bits_per_dim", min_delta=10.0, patience=0)
    metrics = train_lib.train_and_evaluate(
        TINY.replace(train_steps=50, eval_every=5), str(tmp_path / "run"),
        callbacks=[keras.callbacks.CSVLogger(log), stopper,
                   keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))],
    )  # fmt: skip
    assert metrics["step"] == 10  # epoch 0 improves on inf, epoch 1 does not improve by 10 bits: stop
    assert seen == [0, 1] and stopper.stopped_epoch == 1
    with open(log) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert float(rows[-1]["val_bits_per_dim"]) == pytest.approx(metrics["test_bits_per_dim"], rel=1e-5)


def _diverging_after(monkeypatch, good_steps):
    real = train_lib.make_train_step

    def diverging(*args, **kwargs):
        step, calls = real(*args, **kwargs), {"n": 0}

        def wrapped(batch):
            calls["n"] += 1
            loss = step(batch)
            return loss if calls["n"] <= good_steps else loss * float("nan")

        return wrapped

    monkeypatch.setattr(train_lib, "make_train_step", diverging)


def test_terminate_on_nan_stops_without_saving_the_nan_weights(tmp_path, monkeypatch):
    model_dir = str(tmp_path / "run")
    _diverging_after(monkeypatch, good_steps=4)
    metrics = train_lib.train_and_evaluate(
        TINY.replace(train_steps=50, eval_every=3), model_dir, callbacks=[keras.callbacks.TerminateOnNaN()]
    )
    assert metrics["step"] == 3  # the last evaluation, before the divergence
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-3")


def test_a_nan_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    model_dir = str(tmp_path / "run")
    _diverging_after(monkeypatch, good_steps=4)
    with pytest.raises(train_lib.NonFiniteLossError, match="Loss is nan at step 5"):
        train_lib.train_and_evaluate(TINY.replace(train_steps=50, eval_every=3), model_dir)
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-3")


def test_the_evaluator_traces_once_and_averages_over_every_image():
    import keras_pixelcnn as kp

    model = kp.ConditionalPixelCNN((4, 4, 1), num_layers=1, filters=4, kernel_size=3, num_classes=2)
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 1), dtype=np.uint8)
    labels = np.arange(10, dtype=np.int32) % 2
    evaluate = make_evaluator(model)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)  # batches of 4, 4 and 2
    for _ in range(2):
        expected = np.mean(model.per_image_bits_per_dim((images, labels), training=False))
        assert evaluate(dataset) == pytest.approx(expected, rel=1e-5)
    assert evaluate.batch_bits.experimental_get_tracing_count() == 1


def test_weight_average_copies_first_then_warms_its_decay_up():
    weight = tf.Variable(1.0)
    average = WeightAverage(types.SimpleNamespace(trainable_variables=[weight]), decay=0.99)
    average.update(1)  # the first update copies
    assert average.averages[0].numpy() == pytest.approx(1.0)
    weight.assign(0.0)
    average.update(2)  # d = min(0.99, 3 / 12) = 0.25
    assert average.averages[0].numpy() == pytest.approx(0.25)
    average.update(1000)  # warmed up: d = 0.99
    assert average.averages[0].numpy() == pytest.approx(0.25 * 0.99)


def test_no_private_keras_optimizer_attributes_are_used():
    for folder in ("trainers", "keras_pixelcnn", "tests"):
        for name in os.listdir(os.path.join(REPO_ROOT, folder)):
            if not name.endswith(".py") or name == "test_train_lib.py":
                continue
            text = open(os.path.join(REPO_ROOT, folder, name)).read()
            for private in ("_model_variables_moving_average", "_trainable_variables"):
                assert private not in text, f"{folder}/{name} uses {private}"


def test_the_dtype_policy_is_restored_and_threads_can_train(tmp_path):
    errors = []

    def run():
        try:
            train_lib.train_and_evaluate(TINY.replace(train_steps=2, eval_every=2, mixed_precision="bfloat16"),
                                         str(tmp_path / "run"))  # fmt: skip
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    thread = threading.Thread(target=run)  # no signal handlers off the main thread
    thread.start()
    thread.join()
    assert not errors, errors
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.large  # large: a trainer run, evaluation, sampling and export on ram://
def test_a_ram_filesystem_round_trip(tmp_path):
    import keras_pixelcnn

    model_dir = "ram://pixelcnn-test/run"
    metrics = train_lib.train_and_evaluate(TINY.replace(train_steps=4, eval_every=2, samples_per_class=1), model_dir)
    names = set(tf.io.gfile.listdir(model_dir))
    assert {"model.keras", "metrics.json", "run_config.json", "model_config.json", "checkpoints", "samples"} <= names
    assert read_json(f"{model_dir}/metrics.json") == metrics
    result = evaluate.evaluate(model_dir, max_examples=32)
    assert result["bits_per_dim"] == pytest.approx(metrics["test_bits_per_dim"], rel=1e-5)
    out, samples = sample.sample(model_dir, class_ids=[1, 2], num=2, seed=1)
    assert out == f"{model_dir}/samples/classes.png" and tf.io.gfile.exists(out) and samples.shape == (2, 2, 8, 8, 1)
    model, _ = load_model(model_dir)
    path = keras_pixelcnn.export_saved_model(model, "ram://pixelcnn-test/export")
    assert path == "ram://pixelcnn-test/export/1"
    loaded = tf.saved_model.load(path)
    images = loaded.signatures["serving_default"](
        class_ids=tf.constant([1, 2]), seed=tf.constant([1, 0], tf.int64), temperature=tf.constant(1.0)
    )["images"]
    np.testing.assert_array_equal(images, model.sample(condition=np.array([1, 2]), seed=(1, 0)))
    assert not [name for name in tf.io.gfile.listdir("ram://pixelcnn-test/export") if name != "1"]


# -- TrainConfig -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"train_steps": 0}, "train_steps: expected an int >= 1"),
        ({"num_layers": True}, "num_layers: expected an int >= 1, got True"),
        ({"head": "gaussian"}, "head: expected one of"),
        ({"learning_rate": 0.0}, "learning_rate: expected a number > 0"),
        ({"ema_decay": 1.0}, "ema_decay: expected a value in \\[0, 1\\)"),
        ({"dropout": -0.1}, "dropout: expected a rate in"),
        ({"weight_decay": -1e-4}, "weight_decay: expected a number >= 0"),
        ({"conditioning": "embedding"}, "embedding_model: required with conditioning=embedding"),
        ({"spatial_condition": True, "conditioning": "none"}, "spatial_condition: needs a condition"),
        ({"dataset": "no_such_dataset_xyz"}, "dataset: 'no_such_dataset_xyz' is neither"),
        ({"dataset": "npz:"}, "dataset: expected a path after 'npz:'"),
        ({"batch_size": 0}, "batch_size: the global batch must split evenly"),
        ({"config": "cifar100"}, "config: expected None or one of"),
        ({"dilation_rates": "1,2", "num_layers": 6}, "dilation_rates: expected auto, none or 6 comma-separated ints"),
        ({"dilation_rates": "1,2,x,1,2,4", "num_layers": 6}, "dilation_rates: expected auto, none or 6"),
        ({"dilation_rates": "1,0,1,1,1,1", "num_layers": 6}, "dilation_rates: expected auto, none or 6"),
        ({"dilation_rates": "1,0"}, r"dilation_rates: expected auto, none or comma-separated ints >= 1 \(one per "
                                    r"layer\), got '1,0'"),
        ({"num_layers": 0}, "num_layers: expected an int >= 1"),
        ({"kernel_size": 4}, "kernel_size: expected an odd number >= 3, got 4"),
    ],
)
def test_train_config_validation_names_the_field(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**changes).validate()


def test_presets_are_the_papers_settings():
    for name, dataset in [("cifar10", "cifar10"), ("imagenet32", "downsampled_imagenet/32x32"),
                          ("imagenet64", "downsampled_imagenet/64x64")]:  # fmt: skip
        preset = PRESETS[name].validate()
        assert (preset.num_layers, preset.filters, preset.kernel_size, preset.batch_size) == (20, 384, 5, 128)
        assert (preset.head, preset.conditioning, preset.dataset, preset.config) == ("softmax", "none", dataset, name)
        assert (preset.train_steps, preset.learning_rate, preset.ema_decay) == (200_000, 1e-3, 0.9995)
    assert PRESETS["cifar10"].dropout == 0.5 and PRESETS["imagenet32"].dropout == 0.0
    assert {(preset.weight_decay, preset.clip_norm) for preset in PRESETS.values()} == {(0.0, 0.0)}  # Adam, no clip
    assert {preset.dilation_rates for preset in PRESETS.values()} == {"none"}  # the paper's undilated trunk


def test_weight_decay_selects_adamw():
    assert type(train_lib.build_optimizer(TrainConfig(weight_decay=0.0))) is keras.optimizers.Adam
    optimizer = train_lib.build_optimizer(TrainConfig(weight_decay=0.1))
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == 0.1


def test_the_schedule_is_traced_once_per_step_and_updates_as_keras_s_own():
    """AdamW's weight decay asks for the rate once per variable: OncePerStep traces it once."""
    cosine = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=5)
    grads = [tf.constant(np.full(shape, 0.5, np.float32)) for shape in ((3, 2), (2,), (4,))]

    def train(schedule):
        variables = [tf.Variable(np.ones(g.shape, np.float32)) for g in grads]
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.3)
        step = tf.function(lambda: optimizer.apply_gradients(zip(grads, variables)))
        cosines = sum(op.type == "Cos" for op in step.get_concrete_function().graph.get_operations())
        for _ in range(3):
            step()
        return cosines, [v.numpy() for v in variables], float(optimizer.learning_rate)

    (raw_cosines, raw, raw_rate), (cosines, once, rate) = train(cosine), train(train_lib.OncePerStep(cosine))
    assert (raw_cosines, cosines) == (4, 1)  # one per variable plus Adam's own; then one in all
    for expected, got in zip(raw, once):
        np.testing.assert_array_equal(got, expected)
    assert rate == raw_rate == pytest.approx(float(cosine(3)))  # eagerly: the rate at the current step
    once = train_lib.OncePerStep(cosine)
    graph = tf.function(lambda: (once(tf.constant(1)), once(tf.constant(4)))).get_concrete_function().graph
    assert sum(op.type == "Cos" for op in graph.get_operations()) == 2  # another step is traced anew
    schedules = keras.optimizers.schedules
    restored = schedules.deserialize(schedules.serialize(train_lib.OncePerStep(cosine)))
    assert isinstance(restored, train_lib.OncePerStep) and float(restored(2)) == pytest.approx(float(cosine(2)))


def test_run_config_json_round_trip_partial_files_and_absolute_paths(tmp_path, monkeypatch):
    config = TrainConfig(dataset="npz:data/x.npz", embedding_model="e.keras", conditioning="embedding")
    assert TrainConfig.from_json(config.to_json()) == config
    path = str(tmp_path / "run_config.json")
    config.to_json(path)
    assert TrainConfig.from_json(path) == config
    # A file of an older trainer: fewer keys, nulls for unused ones, and a key that is no field.
    old = {"dataset": "digits", "conditioning": "class", "seed": 3, "bottleneck_dim": None, "data_dir": None,
           "config": None, "spatial_condition": False, "embedding_model": None, "retired_key": 1}  # fmt: skip
    # Older runs: Adam, undilated.
    assert TrainConfig.from_json(json.dumps(old)) == TrainConfig(seed=3, weight_decay=0.0, dilation_rates="none")
    monkeypatch.chdir(tmp_path)
    absolute = config.with_absolute_paths()
    assert absolute.dataset == f"npz:{tmp_path}/data/x.npz" and absolute.embedding_model == f"{tmp_path}/e.keras"
    assert TrainConfig(dataset="npz:gs://bucket/x.npz").with_absolute_paths().dataset == "npz:gs://bucket/x.npz"


def test_auto_dilation_reaches_the_top_row_only_where_it_has_to():
    assert resolve_dilation_rates("auto", 8, 6, 3) == (1,) * 6  # the embedded digits: the paper's trunk
    assert resolve_dilation_rates("auto", 28, 6, 3) == (1, 2, 4, 8, 16, 1)
    assert resolve_dilation_rates("auto", 28, 8, 5) == (1, 2, 4, 1, 2, 4, 1, 2)
    assert resolve_dilation_rates("none", 28, 3, 3) == (1, 1, 1)
    assert resolve_dilation_rates("2,1,3", 28, 3, 3) == (2, 1, 3)
    for height, layers, kernel in [(16, 4, 3), (32, 15, 5), (64, 20, 5), (64, 6, 7), (9, 3, 3)]:
        rates = resolve_dilation_rates("auto", height, layers, kernel)
        assert 1 + kernel // 2 * sum(rates) >= height - 1 and max(rates) < height, (height, layers, kernel)
        if 1 + kernel // 2 * layers >= height - 1:
            assert set(rates) == {1}
    # Too few layers to reach: the longest cycle they hold (one layer: no rate helps).
    assert resolve_dilation_rates("auto", 64, 3, 7) == (1, 2, 4)
    assert resolve_dilation_rates("auto", 64, 1, 3) == (1,)


def test_the_default_trunk_is_sized_to_the_images():
    default = TrainConfig()
    assert resolve_trunk(default, 8) == ((6, 3, (1,) * 6))  # the embedded digits: the paper's trunk
    assert resolve_trunk(default, 28) == (8, 5, (1, 2, 4, 1, 2, 4, 1, 2))  # BUILD_NOTES: "A trunk for 28x28"
    assert resolve_trunk(default, 12) == (8, 5, (1,) * 8)  # 8 x 5x5 sees 17 rows up: no dilation needed
    assert resolve_trunk(default.replace(num_layers=4), 8) == (4, 3, (1, 2, 1, 2))  # given values are kept
    assert resolve_trunk(default.replace(kernel_size=7, dilation_rates="none"), 28) == (8, 7, (1,) * 8)
    for preset in PRESETS.values():
        assert resolve_trunk(preset, 32) == (20, 5, (1,) * 20)
    with pytest.raises(ValueError, match=r"dilation_rates: expected auto, none or 8 comma-separated .*num_layers=8"):
        resolve_trunk(default.replace(dilation_rates="1,2,4"), 28)  # the count is checked once it is known


def _tall_npz(tmp_path):
    """An npz data set of 12x5 grey images in 3 classes: taller than the small trunk sees."""
    images = np.random.default_rng(0).integers(0, 256, (48, 12, 5, 1), dtype=np.uint8)
    labels = np.arange(48) % 3
    path = str(tmp_path / "tall.npz")
    np.savez(path, images=images, labels=labels, test_images=images[:16], test_labels=labels[:16])
    return f"npz:{path}"


@pytest.mark.large  # large: a trainer run of an 8 x 5x5 trunk, its resume and two refused ones
def test_the_sized_trunk_is_recorded_and_a_resume_must_ask_for_it(tmp_path):
    config = TrainConfig(dataset=_tall_npz(tmp_path), filters=4, batch_size=8, train_steps=2, eval_every=2,
                         samples_per_class=0, eval_examples=16)  # fmt: skip
    model_dir = str(tmp_path / "run")
    train_lib.train_and_evaluate(config, model_dir)
    recorded = read_json(os.path.join(model_dir, "run_config.json"))
    assert (recorded["num_layers"], recorded["kernel_size"], recorded["dilation_rates"]) == (None, None, "auto")
    assert (recorded["resolved_num_layers"], recorded["resolved_kernel_size"]) == (8, 5)
    assert recorded["resolved_dilation_rates"] == [1] * 8
    model = load_model(model_dir)[0]
    assert (model.num_layers, model.kernel_size) == (8, 5)
    # Asking for the same trunk is accepted: the run restores its checkpoint into it (already at train_steps).
    assert train_lib.train_and_evaluate(config.replace(num_layers=8, kernel_size=5), model_dir)["step"] == 2
    with pytest.raises(ValueError, match=r"started with --num_layers=8 --dilation_rates=1,1,1,1,1,1,1,1 \(run_config"):
        train_lib.train_and_evaluate(config.replace(train_steps=4, num_layers=6), model_dir)
    # A run of an older trainer (6 x 3x3 by default, no resolved_* keys): the new defaults would build
    # another trunk, so the resume names the flags of the old one. (The refusal reads run_config.json
    # before anything is built: a copy of this run with the old file stands in for a trained old run.)
    old = str(tmp_path / "old")
    shutil.copytree(model_dir, old)
    recorded = read_json(os.path.join(old, "run_config.json"))
    for key in ("resolved_num_layers", "resolved_kernel_size", "resolved_dilation_rates", "dilation_rates"):
        del recorded[key]
    recorded.update(num_layers=6, kernel_size=3)
    with open(os.path.join(old, "run_config.json"), "w") as handle:
        json.dump(recorded, handle)
    with pytest.raises(ValueError, match=r"started with --num_layers=6 --kernel_size=3 --dilation_rates=1,1,1,1,1,1 "):
        train_lib.train_and_evaluate(config.replace(train_steps=4), old)


@pytest.mark.large  # large: three trainer runs
def test_dilation_is_resolved_recorded_kept_on_resume_and_saved(tmp_path):
    config = TINY.replace(dataset=_tall_npz(tmp_path), train_steps=2, eval_every=2, dilation_rates="auto")
    model_dir = str(tmp_path / "run")
    train_lib.train_and_evaluate(config, model_dir)  # 2 layers of 3x3 on 12 rows: auto dilates
    recorded = read_json(os.path.join(model_dir, "run_config.json"))
    assert (recorded["dilation_rates"], recorded["resolved_dilation_rates"]) == ("auto", [1, 2])
    assert load_model(model_dir)[0].dilation_rates == (1, 2)
    # A resume keeps the recorded resolution (here edited, as a later rule of "auto" might resolve otherwise).
    recorded["resolved_dilation_rates"] = [2, 1]
    with open(os.path.join(model_dir, "run_config.json"), "w") as handle:
        json.dump(recorded, handle)
    train_lib.train_and_evaluate(config.replace(train_steps=4), model_dir)
    assert load_model(model_dir)[0].dilation_rates == (2, 1)
    explicit = str(tmp_path / "explicit")
    train_lib.train_and_evaluate(config.replace(dilation_rates="none"), explicit)
    assert read_json(os.path.join(explicit, "run_config.json"))["resolved_dilation_rates"] == [1, 1]


def test_the_default_width_is_resolved_from_the_channels():
    default = TrainConfig()
    assert default.filters is None
    assert [resolve_filters(default, (8, 8, c)) for c in (1, 2, 3, 4)] == [32, 32, 33, 32]  # softmax: C groups
    assert resolve_filters(default.replace(head="logistic_mixture"), (8, 8, 3)) == 32  # pixel-level masks
    assert resolve_filters(default.replace(filters=48), (8, 8, 3)) == 48  # a given width is kept
    with pytest.raises(ValueError, match="filters: expected an int >= 1, got 0"):
        default.replace(filters=0).validate()


@pytest.mark.large  # large: three trainer runs (grey, RGB and RGBA own data)
@pytest.mark.parametrize("channels, filters", [(1, 32), (3, 33), (4, 32)])
def test_a_default_flag_run_trains_on_own_data_of_any_channels(tmp_path, channels, filters):
    from conftest import run_main

    from trainers import train

    rng = np.random.default_rng(channels)
    path = str(tmp_path / "own.npz")
    np.savez(path, images=rng.integers(0, 256, (40, 4, 4, channels), dtype=np.uint8), labels=np.arange(40) % 2)
    model_dir = str(tmp_path / "run")
    # The model's flags are all defaults (RGB used to fail: "--filters: expected a positive multiple of the 3 ...").
    run_main(train, [f"--model_dir={model_dir}", f"--dataset=npz:{path}", "--train_steps=2", "--eval_every=2",
                     "--samples_per_class=0"])  # fmt: skip
    metrics = read_json(os.path.join(model_dir, "metrics.json"))
    assert metrics["step"] == 2 and np.isfinite(metrics["test_bits_per_dim"])
    recorded = read_json(os.path.join(model_dir, "run_config.json"))
    assert (recorded["filters"], recorded["resolved_filters"]) == (None, filters)
    model = load_model(model_dir)[0]
    assert model.image_shape == (4, 4, channels) and model.filters == filters
    # A resume that leaves filters to the default keeps the recorded width.
    recorded["resolved_filters"] = filters + channels
    with open(os.path.join(model_dir, "run_config.json"), "w") as handle:
        json.dump(recorded, handle)
    assert train_lib.resolved_filters(TrainConfig(), (4, 4, channels), model_dir) == filters + channels
    assert train_lib.resolved_filters(TrainConfig(filters=8), (4, 4, channels), model_dir) == 8


@pytest.mark.large  # large: a trainer run, evaluation, sampling and an export of a code prior
def test_a_prior_trains_on_npz_codes_and_evaluates_samples_and_exports(tmp_path):
    """--dataset=npz: of integer codes with --num_categories: a prior over any tokenizer's grids."""
    from conftest import TINY, run_main

    from export.export import export_from_model_dir
    from trainers import train

    k, rng = 20, np.random.default_rng(0)
    labels = np.arange(120) % 2
    codes = np.where(labels[:, None, None] == 0, 3, 15) + rng.integers(0, 3, (120, 5, 6))  # a class's band of codes
    path = str(tmp_path / "codes.npz")
    np.savez(path, images=codes, labels=labels)
    model_dir = str(tmp_path / "prior")
    flags = [f"--dataset=npz:{path}", f"--num_categories={k}", "--train_steps=40", "--eval_every=20",
             "--samples_per_class=2", "--learning_rate=0.01"]  # fmt: skip
    run_main(train, [f"--model_dir={model_dir}", *TINY, *flags])
    metrics = read_json(os.path.join(model_dir, "metrics.json"))
    assert metrics["initial_test_bits_per_dim"] == pytest.approx(np.log2(k), rel=1e-4)  # uniform over the K codes
    assert metrics["test_bits_per_dim"] < 0.6 * np.log2(k), metrics  # it learns the bands
    assert os.path.exists(os.path.join(model_dir, "samples", "step_00000040.png"))
    assert evaluate.evaluate(model_dir)["bits_per_dim"] == pytest.approx(metrics["test_bits_per_dim"], rel=1e-4)
    _, samples = sample.sample(model_dir, class_ids=[0, 1], num=3, out=str(tmp_path / "s.png"))
    assert samples.shape == (2, 3, 5, 6, 1) and samples.dtype == np.int32 and samples.max() < k
    assert samples[0].mean() < 10 < samples[1].mean()  # each class draws from its band
    loaded = tf.saved_model.load(export_from_model_dir(model_dir, str(tmp_path / "export")))
    served = loaded.signatures["serving_default"](
        class_ids=tf.constant([0, 1], tf.int32), seed=tf.constant([1, 2], tf.int64), temperature=tf.constant(1.0)
    )["images"]
    assert served.dtype == tf.int32 and served.shape == (2, 5, 6, 1)
    with pytest.raises(ValueError, match=r"expected codes in \[0, num_categories=20\), got values from 20 to 20"):
        np.savez(path, images=np.full((10, 5, 6), 20), labels=np.arange(10) % 2)
        train_lib.train_and_evaluate(TrainConfig(dataset=f"npz:{path}", num_categories=k), str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"num_categories: only used with npz:PATH data of integer codes"):
        train_lib.train_and_evaluate(TrainConfig(num_categories=k), str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"num_categories: code grids train with conditioning=none or class"):
        TrainConfig(num_categories=k, conditioning="autoencoder").validate()
