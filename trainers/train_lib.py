"""Training as a library: ``train_and_evaluate(config, model_dir, strategy=None, callbacks=None)``.

    from trainers.config import TrainConfig
    from trainers.train_lib import train_and_evaluate

    metrics = train_and_evaluate(TrainConfig(train_steps=500), "/tmp/run",
                                 callbacks=[keras.callbacks.CSVLogger("/tmp/log.csv")])

One custom loop for every tf.distribute strategy (trainers/loop.py) with
checkpoints and resume, Polyak averaging (EMA), evaluation, sample grids and
TensorBoard summaries, all under ``model_dir`` (any tf.io.gfile path: local,
gs://, ram://; layout in trainers/model_dir.py). Keras callbacks are
driven as ``fit`` drives them, with one evaluation interval (``eval_every``
steps) as one epoch:

  on_train_begin / on_train_end
  on_epoch_begin(epoch) / on_epoch_end(epoch, {loss, bits_per_dim, val_loss, val_bits_per_dim})
  on_train_batch_begin(batch) / on_train_batch_end(batch, {loss, bits_per_dim})
  on_test_begin / on_test_end({loss, bits_per_dim}) around each evaluation

``model.stop_training = True`` ends the run after the current step with a
checkpoint, a final evaluation and model.keras. A non-finite loss raises
NonFiniteLossError (the last checkpoint is from before it) unless a callback
such as TerminateOnNaN asked to stop, which ends the run without saving the
non-finite weights. SIGTERM / SIGINT (main thread only) checkpoint the current
step and raise TrainingInterrupted; run again to resume.
"""

import contextlib
import hashlib
import math
import os
import signal
import sys
import threading

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from trainers import data as data_lib
from trainers import model_dir as layout
from trainers.config import Trunk, resolve_filters, resolve_trunk
from trainers.loop import WeightAverage, make_evaluator, make_train_step, read_scalar
from trainers.precision import PRECISIONS, policy_name, resolve_mixed_precision

MONITORED = ("loss", "bits_per_dim", "val_loss", "val_bits_per_dim")  # the logs' keys
RECONSTRUCTION_ROWS = 8  # test images shown with their reconstructions at each evaluation (autoencoder, embedding)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last checkpoint is from before."""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run after checkpointing; ``signum`` is the signal's number."""

    def __init__(self, signum, step):
        super().__init__(f"Stopped by signal {signum} at step {step}; run again to resume from its checkpoint.")
        self.signum, self.step = signum, step


def load_embedding_model(path, image_shape, dataset=None):
    """The frozen embedding network at ``path``, checked against the images [batch, *image_shape] it will see."""
    if not tf.io.gfile.exists(path):
        raise ValueError(f"embedding_model: no such file: {path}.")
    try:
        embedding = keras.models.load_model(path)
    except Exception as error:  # any unreadable file is the argument's fault
        raise ValueError(
            f"embedding_model: cannot load {path} as a Keras model: {str(error).splitlines()[0][:300]}"
        ) from error
    if not isinstance(embedding, keras.Model):
        raise ValueError(f"embedding_model: expected a Keras model, got {type(embedding).__name__}.")
    try:
        embedding.compute_output_spec(keras.KerasTensor((None,) + tuple(image_shape), "float32"))
    except Exception as error:  # any failure to take the images is the argument's fault
        raise ValueError(
            f"embedding_model: {path} does not take images [batch, {', '.join(map(str, image_shape))}]"
            + (f" of dataset={dataset}" if dataset else "")
            + f": {str(error).splitlines()[0][:300]}"
        ) from error
    return embedding  # its outputs [batch, D] are checked by EmbeddingConditionedPixelCNN


def build_model(config, image_shape, num_classes, trunk=None, filters=None):
    """The model ``config.conditioning`` asks for.

    ConditionalPixelCNN (none, class), PixelCNNAutoEncoder or EmbeddingConditionedPixelCNN, with
    ``trunk``'s num_layers, kernel_size and dilation_rates (None: ``resolve_trunk(config, image_shape[0])``)
    and ``filters`` features per layer (None: ``resolve_filters(config, image_shape)``).
    """
    import keras_pixelcnn

    trunk = trunk or resolve_trunk(config, image_shape[0])
    filters = filters or resolve_filters(config, image_shape)
    decoder_options = dict(
        trunk._asdict(), filters=filters, head=config.head, num_mixtures=config.num_mixtures,
        dropout=config.dropout, spatial_condition=config.spatial_condition,
    )  # fmt: skip
    if config.conditioning == "autoencoder":
        return keras_pixelcnn.PixelCNNAutoEncoder(image_shape, config.bottleneck_dim, **decoder_options)
    if config.conditioning == "embedding":
        embedding = load_embedding_model(config.embedding_model, image_shape, config.dataset)
        return keras_pixelcnn.EmbeddingConditionedPixelCNN(image_shape, embedding, **decoder_options)
    return keras_pixelcnn.ConditionalPixelCNN(
        image_shape, num_classes=num_classes if config.conditioning == "class" else None, **decoder_options
    )


def build_optimizer(config, loss_scaling=False):
    """Adam (AdamW with ``weight_decay``) with the config's learning-rate schedule (wrapped for loss scaling)."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "exponential":
        learning_rate = keras.optimizers.schedules.ExponentialDecay(learning_rate, 1, config.lr_decay_rate)
    elif config.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, config.train_steps)
    if config.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def is_chief(strategy):
    """True on the worker that writes files (the only process without a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def weights_fingerprint(model):
    """A short hash of all weights: equal on every worker of a synchronous run."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.asarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


def train_and_evaluate(config, model_dir, strategy=None, callbacks=None):
    """Trains ``config``'s model in ``model_dir`` (resuming from its last checkpoint) and evaluates it.

    Args:
      config: a TrainConfig (validated here).
      model_dir: the training directory, any tf.io.gfile path.
      strategy: a tf.distribute strategy (None: the default strategy). Its
        replicas must split ``config.batch_size`` evenly.
      callbacks: keras.callbacks.Callback objects (see the module docstring).

    Returns:
      The final metrics, as written to <model_dir>/metrics.json:
      {"step", "test_bits_per_dim", "initial_test_bits_per_dim", "dataset"}.

    Raises:
      ValueError: a bad config or data, before anything is written; the message
        starts with the field at fault.
      data.DatasetUnavailableError: a tfds data set not in ``config.data_dir``.
      NonFiniteLossError, TrainingInterrupted: see the module docstring.
    """
    config = config.validate().with_absolute_paths()
    strategy = strategy or tf.distribute.get_strategy()
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"batch_size: the global batch must split evenly over {strategy.num_replicas_in_sync} replicas, "
            f"got {config.batch_size}."
        )
    data = data_lib.open_dataset(config.dataset, config.data_dir, config.num_classes)
    if config.conditioning == "class" and data.num_classes is None:
        raise ValueError(f"conditioning=class: dataset={config.dataset} has no labels; use conditioning=none.")
    data.split("test")  # fail fast, before anything is built, when tfds's files are not there
    precision = resolved_precision(config, model_dir)
    trunk = resolved_trunk(config, data.image_shape, model_dir)
    filters = resolved_filters(config, data.image_shape, model_dir)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        keras.utils.set_random_seed(config.seed)
        keras.mixed_precision.set_dtype_policy(policy_name(precision))
        run = _Run(config, model_dir, strategy, data, callbacks, precision, trunk, filters)
        return run.train()
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def _resumed_run_config(model_dir):
    """run_config.json as a dict when ``model_dir`` has a checkpoint to resume from, else {}."""
    if not tf.train.latest_checkpoint(os.path.join(model_dir, layout.CHECKPOINT_DIR)):
        return {}
    return layout.read_json(os.path.join(model_dir, layout.RUN_CONFIG), {})


def resolved_precision(config, model_dir):
    """none, bfloat16 or float16: config.mixed_precision, with "auto" resolved for this machine.

    A resumed run keeps its recorded resolution, so a checkpoint moved to other hardware trains on as it started.
    """
    recorded = _resumed_run_config(model_dir)
    if config.mixed_precision == recorded.get("mixed_precision") == "auto":
        if recorded.get("resolved_mixed_precision") in PRECISIONS[1:]:
            return recorded["resolved_mixed_precision"]
    return resolve_mixed_precision(config.mixed_precision)


def resolved_trunk(config, image_shape, model_dir):
    """config's Trunk (num_layers, kernel_size, dilation_rates) for ``image_shape``, or as recorded on resume.

    A resumed run asking what its first part asked keeps the trunk recorded then (should the
    sizing rules have changed since); one asking for a different trunk is refused, naming the
    flags that give the recorded one.
    """
    trunk = resolve_trunk(config, image_shape[0])
    recorded = _resumed_run_config(model_dir)
    previous = _recorded_trunk(recorded)
    if previous is None or previous == trunk:
        return trunk
    if all(recorded.get(field) == getattr(config, field) for field in Trunk._fields):
        return previous
    given = " ".join(
        f"--{field}={','.join(map(str, value)) if field == 'dilation_rates' else value}"
        for field, value, now in zip(Trunk._fields, previous, trunk)
        if value != now
    )
    raise ValueError(
        f"model_dir: the run in {model_dir} was started with {given} (run_config.json); pass those to resume it, "
        f"or use a new model_dir."
    )


def resolved_filters(config, image_shape, model_dir):
    """config's features per layer for ``image_shape`` (``resolve_filters``), or as recorded on resume.

    A resumed run that leaves filters to the default keeps the width its run_config.json recorded
    (should the default's rule have changed since).
    """
    recorded = _resumed_run_config(model_dir)
    if config.filters is None and recorded.get("filters") is None and isinstance(recorded.get("resolved_filters"), int):
        return recorded["resolved_filters"]
    return resolve_filters(config, image_shape)


def _recorded_trunk(recorded):
    """The Trunk run_config.json records (its resolved_* values; older files: the fields), None if unknown."""
    num_layers = recorded.get("resolved_num_layers", recorded.get("num_layers"))
    kernel_size = recorded.get("resolved_kernel_size", recorded.get("kernel_size"))
    if not isinstance(num_layers, int) or not isinstance(kernel_size, int):
        return None
    rates = recorded.get("resolved_dilation_rates") or [1] * num_layers  # files older than dilation: undilated
    return Trunk(num_layers, kernel_size, tuple(rates))


# TrainConfig fields that shape the checkpoint's variables.
_CHECKPOINT_FIELDS = (
    "conditioning", "bottleneck_dim", "spatial_condition", "filters", "head", "num_mixtures", "ema_decay",
)  # fmt: skip  (num_layers and kernel_size: resolved_trunk)


def _recorded_flags(config, model_dir):
    """["--name=value", ...] for the _CHECKPOINT_FIELDS that run_config.json records otherwise than ``config``."""
    recorded = layout.read_json(os.path.join(model_dir, layout.RUN_CONFIG), {})
    return [
        f"--{name}={recorded[name]}"
        for name in _CHECKPOINT_FIELDS
        if name in recorded and recorded[name] != getattr(config, name)
    ]


class _Run:
    """State and side effects of one training run (files written by the chief only)."""

    def __init__(self, config, model_dir, strategy, data, callbacks, precision, trunk, filters):
        self.config, self.model_dir, self.strategy, self.data = config, model_dir, strategy, data
        self.chief = is_chief(strategy)
        num_classes = data.num_classes if config.conditioning == "class" else None
        with strategy.scope():
            self.model = build_model(config, data.image_shape, num_classes, trunk, filters)  # errors name the field
            self.optimizer = build_optimizer(config, loss_scaling=precision == "float16")
            self.optimizer.build(self.model.trainable_variables)  # slots inside the strategy scope
            self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay > 0 else None
            tracked = dict(model=self.model, optimizer=self.optimizer)
            if self.average is not None:
                tracked["weight_average"] = self.average
            self.checkpoint = tf.train.Checkpoint(**tracked)
        tf.io.gfile.makedirs(model_dir)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self._checkpoint_dir(), max_to_keep=3, step_counter=self.optimizer.iterations
        )
        restored = tf.train.latest_checkpoint(os.path.join(model_dir, layout.CHECKPOINT_DIR))
        if restored:
            try:
                self.checkpoint.restore(restored).assert_existing_objects_matched()
            except (AssertionError, ValueError) as error:  # other num_layers / filters (shapes), or ema_decay on
                recorded = _recorded_flags(config, model_dir)
                why = (
                    f"; the run was started with {' '.join(recorded)} (run_config.json); pass those to resume it,"
                    if recorded
                    else " (a changed architecture or ema_decay?);"
                )
                raise ValueError(
                    f"model_dir: its checkpoint {restored} does not fit this config{why} or use a new model_dir. "
                    f"{str(error).splitlines()[0][:200]}"
                ) from error
        self.step = read_scalar(self.optimizer.iterations)
        if restored:
            logging.info("Resumed from %s: step %d, optimizer iterations %d.", restored, self.step, self.step)
        self.precision, self.trunk, self.filters = precision, trunk, filters
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs")) if self.chief else None
        self.metrics_path = os.path.join(model_dir, layout.METRICS)
        self.metrics = layout.read_json(self.metrics_path, {})
        for callback in callbacks or []:
            # Every number the loop reports is lower-is-better; Keras cannot infer that for
            # "bits_per_dim" (it is no compiled metric), so monitors in "auto" mode get "min".
            if getattr(callback, "mode", None) == "auto" and getattr(callback, "monitor", None) in MONITORED:
                callback.mode = "min"
        self.callbacks = keras.callbacks.CallbackList(callbacks, model=self.model)
        self.callbacks.set_params(
            {"epochs": math.ceil(config.train_steps / config.eval_every), "steps": config.eval_every, "verbose": 0}
        )
        self._reconstruction_inputs = self._float32_model = self.evaluator = None

    # -- the loop -----------------------------------------------------------------------------

    def train(self):
        config = self.config
        if (
            self.step >= config.train_steps
            and self.metrics.get("step") == self.step
            and tf.io.gfile.exists(os.path.join(self.model_dir, layout.FINAL_MODEL))
        ):
            logging.info("The run in %s is already at train_steps=%d: nothing to do.", self.model_dir, self.step)
            return dict(self.metrics)
        if self.chief:
            layout.write_model_config(self.model, self.model_dir)
            config.to_json(
                os.path.join(self.model_dir, layout.RUN_CONFIG),
                resolved_mixed_precision=self.precision,
                resolved_num_layers=self.trunk.num_layers,
                resolved_kernel_size=self.trunk.kernel_size,
                resolved_dilation_rates=list(self.trunk.dilation_rates),
                resolved_filters=self.filters,
            )
        # Resumed runs reshuffle from seed + step: deterministic for a given resume point.
        train_data = data_lib.train_pipeline(self.data, config.batch_size, config.seed + self.step)
        iterator = iter(self.strategy.experimental_distribute_dataset(train_data))
        train_step = make_train_step(
            self.model, self.optimizer, self.strategy, config.batch_size, config.clip_norm, config.jit_compile,
            self.average,
        )  # fmt: skip
        self.eval_data = data_lib.eval_pipeline(self.data, config.batch_size, max_examples=config.eval_examples)
        self.model.stop_training = False
        self.callbacks.on_train_begin()
        if self.step == 0:
            self.evaluate()
        preemption, stop = None, {}
        previous_handlers = {}
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):  # SIGTERM: every worker saves
            preemption = tf.distribute.experimental.PreemptionCheckpointHandler(
                self.strategy.cluster_resolver, self.manager
            )
        elif threading.current_thread() is threading.main_thread():  # SIGTERM / SIGINT: finish the step, save
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous_handlers[signum] = signal.signal(signum, lambda number, _: stop.setdefault("signal", number))
        try:
            finite = self._loop(train_step, iterator, preemption, stop)
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        if finite and self.metrics.get("step") != self.step:
            self.evaluate()  # resumed at the end of an unfinished run: finish it
        self.callbacks.on_train_end(self.metrics)
        if finite and self.chief:
            with self.served_model() as model:
                layout.save_model(model, self.model_dir)
        logging.info(
            "Done at step %d: test bits/dim %.4f, weights fingerprint %s",
            self.step, self.metrics.get("test_bits_per_dim", float("nan")), weights_fingerprint(self.model),
        )  # fmt: skip
        return dict(self.metrics)

    def _loop(self, train_step, iterator, preemption, stop):
        """Runs epochs until train_steps or a stop; False when a callback stopped on a non-finite loss."""
        config = self.config
        progress = (
            keras.utils.Progbar(config.train_steps, stateful_metrics=["bits_per_dim"]) if sys.stdout.isatty() else None
        )
        while self.step < config.train_steps and not self.model.stop_training:
            epoch = self.step // config.eval_every
            self.callbacks.on_epoch_begin(epoch)
            losses = []
            while True:
                batch_index = self.step - epoch * config.eval_every
                self.callbacks.on_train_batch_begin(batch_index)
                batch = next(iterator)
                loss = float(preemption.run(train_step, batch) if preemption else train_step(batch))
                self.step += 1
                self.callbacks.on_train_batch_end(batch_index, {"loss": loss, "bits_per_dim": loss})
                if not math.isfinite(loss):
                    if self.model.stop_training:  # e.g. TerminateOnNaN: stop, keep the last good checkpoint
                        logging.warning("Loss is %s at step %d: stopped by a callback, nothing saved.", loss, self.step)
                        return False
                    raise NonFiniteLossError(
                        f"Loss is {loss} at step {self.step}: stopping. The last checkpoint in "
                        f"{self.manager.directory} "
                        "is from before the divergence; lower learning_rate or set clip_norm."
                    )
                losses.append(loss)
                if progress:
                    progress.update(self.step, [("bits_per_dim", loss)])
                if self.step % config.log_every == 0:
                    self.summary(train_bits_per_dim=loss, loss=loss, learning_rate=self.learning_rate())
                    if not progress:
                        logging.info("step %d: train bits/dim %.4f", self.step, loss)
                if (self.step % config.eval_every == 0 or self.step >= config.train_steps or self.model.stop_training
                        or "signal" in stop):  # fmt: skip
                    break
            self.save_checkpoint()
            if "signal" in stop:
                logging.warning(
                    "Stopped by signal %d at step %d; rerun the same command to resume.", stop["signal"], self.step
                )
                raise TrainingInterrupted(stop["signal"], self.step)
            bits = self.evaluate()
            train_bits = float(np.mean(losses))
            self.callbacks.on_epoch_end(
                epoch, {"loss": train_bits, "bits_per_dim": train_bits, "val_loss": bits, "val_bits_per_dim": bits}
            )
        return True

    # -- side effects -------------------------------------------------------------------------

    @contextlib.contextmanager
    def served_model(self):
        """The model as model.keras holds it: float32, with the Polyak averages as weights when EMA is on.

        Under mixed precision that is a float32 twin of the trained model (made once, its weights
        copied in at each use). Evaluations and sample grids use it, so metrics.json is what
        evaluating model.keras gives.
        """
        with self.average.swapped_in(self.step) if self.average is not None else contextlib.nullcontext():
            if self.precision == "none":
                yield self.model
                return
            if self._float32_model is None:
                self._float32_model = layout.float32_copy(self.model)
            else:
                self._float32_model.set_weights(self.model.get_weights())
            yield self._float32_model

    def _checkpoint_dir(self):
        if self.chief:
            return os.path.join(self.model_dir, layout.CHECKPOINT_DIR)
        # Every worker takes part in a save; only the chief's copy is kept.
        return os.path.join(self.model_dir, ".worker_tmp", f"worker_{self.strategy.cluster_resolver.task_id}")

    def save_checkpoint(self):
        path = self.manager.save(checkpoint_number=self.step)
        if not self.chief:
            tf.io.gfile.rmtree(os.path.dirname(path))
        logging.info("Saved checkpoint at step %d.", self.step)

    def evaluate(self):
        """Test bits/dim with the averaged weights; updates metrics.json, summaries and the sample grid."""
        self.callbacks.on_test_begin()
        with self.served_model() as model:
            if self.evaluator is None:  # one traced evaluator: the served model is the same object every time
                self.evaluator = make_evaluator(model)
            bits = self.evaluator(self.eval_data)
            if self.chief and self.config.samples_per_class:
                self.write_samples(model)
        logging.info("step %d: test bits/dim %.4f", self.step, bits)
        self.metrics.setdefault("initial_test_bits_per_dim", bits)
        self.metrics.update(step=self.step, test_bits_per_dim=bits, dataset=self.config.dataset)
        if self.chief:
            layout.write_json(self.metrics_path, self.metrics)
            self.summary(eval_bits_per_dim=bits)
        self.callbacks.on_test_end({"loss": bits, "bits_per_dim": bits})
        return bits

    def write_samples(self, model):
        """A sample grid: one row per class (or one row), or inputs and reconstructions for auto-encoders."""
        from keras_pixelcnn.autoencoder import PixelCNNAutoEncoder
        from trainers.grids import image_grid, reconstruction_grid

        height, width, channels = self.data.image_shape
        scale = 4 if height < 16 else 1
        per_row, seed = self.config.samples_per_class, self.config.seed
        if isinstance(model, PixelCNNAutoEncoder):
            # One row per fixed test image: the input, then its sampled reconstructions.
            inputs = self.reconstruction_inputs()
            samples = model.reconstruct(inputs, per_row, seed=seed)
            self._write_grid(
                reconstruction_grid(inputs, np.asarray(samples), scale=scale), "inputs_then_reconstructions"
            )
            return
        rows = model.num_classes or 1
        if model.num_classes:
            samples = model.sample(condition=np.repeat(np.arange(rows), per_row), seed=seed)
        else:
            samples = model.sample(num_samples=per_row, seed=seed)
        grid = image_grid(np.asarray(samples).reshape(rows, per_row, height, width, channels), scale=scale)
        self._write_grid(grid, "samples_one_row_per_class")

    def _write_grid(self, grid, summary_name):
        """The grid as samples/step_<step>.png and as a TensorBoard image."""
        from trainers.grids import write_png

        tf.io.gfile.makedirs(os.path.join(self.model_dir, "samples"))
        write_png(os.path.join(self.model_dir, "samples", f"step_{self.step:08d}.png"), grid)
        with self.writer.as_default(step=self.step):
            tf.summary.image(summary_name, grid[None])

    def reconstruction_inputs(self):
        """The first RECONSTRUCTION_ROWS test images (fixed), uint8 [N, H, W, C]."""
        if self._reconstruction_inputs is None:
            split = self.data.split("test").take(RECONSTRUCTION_ROWS)
            self._reconstruction_inputs = np.stack([image.numpy() for image, _ in split])
        return self._reconstruction_inputs

    def summary(self, **scalars):
        if self.writer is None:
            return
        with self.writer.as_default(step=self.step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)

    def learning_rate(self):
        return read_scalar(getattr(self.optimizer, "inner_optimizer", self.optimizer).learning_rate)
