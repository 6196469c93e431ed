"""Training as a library: ``train_and_evaluate(config, model_dir, strategy=None, callbacks=None)``.

    from trainers.config import TrainConfig
    from trainers.train_lib import train_and_evaluate

    metrics = train_and_evaluate(TrainConfig(train_steps=500), "/tmp/run",
                                 callbacks=[keras.callbacks.CSVLogger("/tmp/log.csv")])

One custom loop for every tf.distribute strategy with checkpoints and resume,
Polyak averaging (EMA), evaluation, sample grids and TensorBoard summaries, all
under ``model_dir`` (any tf.io.gfile path: local, gs://, ram://; layout in
trainers/model_dir.py). The parts, each in its module:

  checkpointing.TrainingState  model, optimizer, weight average; restore, save
  loop.make_train_step         the distributed train step (and the evaluator)
  step_loop.run_steps          the steps, driving the callbacks, checkpointing each epoch
  evaluation.Evaluation        test bits/dim of the model as saved, metrics.json, grids, summaries

Keras callbacks are driven as ``fit`` drives them, with one evaluation interval
(``eval_every`` steps) as one epoch:

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

import hashlib
import os
import weakref

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from trainers import data as data_lib
from trainers import model_dir as layout
from trainers.checkpointing import TrainingState
from trainers.config import Trunk, resolve_filters, resolve_trunk
from trainers.evaluation import Evaluation, ServedModel, Summaries
from trainers.loop import make_train_step
from trainers.precision import PRECISIONS, policy_name, resolve_mixed_precision
from trainers.step_loop import NonFiniteLossError, TrainingInterrupted, make_callbacks, run_steps

__all__ = ["NonFiniteLossError", "TrainingInterrupted", "build_model", "build_optimizer", "train_and_evaluate"]


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
    if config.num_categories is not None:  # a prior over code grids (conditioning none or class)
        decoder_options["num_categories"] = config.num_categories
    if config.conditioning == "autoencoder":
        return keras_pixelcnn.PixelCNNAutoEncoder(image_shape, config.bottleneck_dim, **decoder_options)
    if config.conditioning == "embedding":
        embedding = load_embedding_model(config.embedding_model, image_shape, config.dataset)
        return keras_pixelcnn.EmbeddingConditionedPixelCNN(image_shape, embedding, **decoder_options)
    return keras_pixelcnn.ConditionalPixelCNN(
        image_shape, num_classes=num_classes if config.conditioning == "class" else None, **decoder_options
    )


@keras.saving.register_keras_serializable(package="trainers")
class OncePerStep(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule``, traced once per traced step however often the optimizer asks for the rate.

    Keras's AdamW asks once per variable in its weight decay (84 times a step for an 8-layer
    model), each request tracing the schedule again: 1-2 s of a run's start-up on this CPU.
    Every request of one step passes the same iteration variable (it advances after the
    update), so the first value serves them all; another step argument is traced anew.
    Eagerly, each call is computed.

    Args:
      schedule: a keras.optimizers.schedules.LearningRateSchedule.
    """

    def __init__(self, schedule):
        self.schedule = schedule
        self._traced = weakref.WeakKeyDictionary()  # graph -> (step, the rate traced for it)

    def __call__(self, step):
        if tf.executing_eagerly():
            return self.schedule(step)
        graph = tf.compat.v1.get_default_graph()
        traced = self._traced.get(graph)
        if traced is None or traced[0] is not step:
            traced = self._traced[graph] = (step, self.schedule(step))
        return traced[1]

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.optimizers.schedules.deserialize(config["schedule"]))


def build_optimizer(config, loss_scaling=False):
    """Adam (AdamW with ``weight_decay``) with the config's learning-rate schedule (wrapped for loss scaling)."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "exponential":
        learning_rate = OncePerStep(keras.optimizers.schedules.ExponentialDecay(learning_rate, 1, config.lr_decay_rate))
    elif config.lr_schedule == "cosine":
        learning_rate = OncePerStep(keras.optimizers.schedules.CosineDecay(learning_rate, config.train_steps))
    if config.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


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
      RuntimeError: Keras runs another backend than TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"train_and_evaluate: needs the tensorflow backend (KERAS_BACKEND=tensorflow: tf.distribute, "
            f"tf.train.Checkpoint); this process runs {keras.backend.backend()!r}. On JAX, train with model.fit "
            "(keras.distribution.DataParallel for several devices)."
        )
    config = config.validate().with_absolute_paths()
    strategy = strategy or tf.distribute.get_strategy()
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"batch_size: the global batch must split evenly over {strategy.num_replicas_in_sync} replicas, "
            f"got {config.batch_size}."
        )
    data, decoder = _open_data(config)
    if decoder is not None:  # a prior over a VQ-VAE's codes: its codebook's size is the number of categories
        if config.num_categories not in (None, decoder.num_embeddings):
            raise ValueError(
                f"num_categories: the VQ-VAE in latents={config.latents} has {decoder.num_embeddings} codes, "
                f"got num_categories={config.num_categories}."
            )
        config = config.replace(num_categories=decoder.num_embeddings)
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
        return _train(config, model_dir, strategy, data, callbacks, precision, trunk, filters, decoder)
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


def _open_data(config):
    """(the ImageData to train on, the VQVAE decoding its codes or None): config.latents' codes, else config.dataset."""
    if config.latents:
        from trainers.vqvae_lib import latent_dataset

        return latent_dataset(config.latents)
    return data_lib.open_dataset(config.dataset, config.data_dir, config.num_classes, config.num_categories), None


def _train(config, model_dir, strategy, data, callbacks, precision, trunk, filters, decoder=None):
    """The run itself, once its config is resolved: the parts of the module docstring, in order."""
    num_classes = data.num_classes if config.conditioning == "class" else None
    with strategy.scope():
        model = build_model(config, data.image_shape, num_classes, trunk, filters)  # errors name the field
        optimizer = build_optimizer(config, loss_scaling=precision == "float16")
    state = TrainingState(config, model_dir, strategy, model, optimizer)  # resumes from the last checkpoint
    callbacks = make_callbacks(callbacks, model, config)
    summaries = Summaries(model_dir, state.chief)
    served = ServedModel(state, precision)
    evaluation = Evaluation(config, model_dir, data, state, served, summaries, callbacks, decoder)
    metrics = evaluation.metrics
    if state.step >= config.train_steps and metrics.get("step") == state.step and _has_final_model(model_dir):
        logging.info("The run in %s is already at train_steps=%d: nothing to do.", model_dir, state.step)
        return dict(metrics)
    if state.chief:
        _write_run_config(config, model_dir, model, precision, trunk, filters)
    # Resumed runs reshuffle from seed + step: deterministic for a given resume point.
    train_data = data_lib.train_pipeline(data, config.batch_size, config.seed + state.step)
    iterator = iter(strategy.experimental_distribute_dataset(train_data))
    train_step = make_train_step(
        model, optimizer, strategy, config.batch_size, config.clip_norm, config.jit_compile, state.average
    )
    model.stop_training = False
    callbacks.on_train_begin()
    if state.step == 0:
        evaluation()
    finite = run_steps(config, state, train_step, iterator, callbacks, evaluation, summaries)
    if finite and metrics.get("step") != state.step:
        evaluation()  # resumed at the end of an unfinished run: finish it
    callbacks.on_train_end(metrics)
    if finite and state.chief:
        with served() as final:
            layout.save_model(final, model_dir)
    logging.info(
        "Done at step %d: test bits/dim %.4f, weights fingerprint %s",
        state.step, metrics.get("test_bits_per_dim", float("nan")), weights_fingerprint(model),
    )  # fmt: skip
    return dict(metrics)


def _has_final_model(model_dir):
    return tf.io.gfile.exists(os.path.join(model_dir, layout.FINAL_MODEL))


def _write_run_config(config, model_dir, model, precision, trunk, filters):
    """model_config.json and run_config.json: the config plus what this run resolved."""
    layout.write_model_config(model, model_dir)
    config.to_json(
        os.path.join(model_dir, layout.RUN_CONFIG),
        resolved_mixed_precision=precision,
        resolved_num_layers=trunk.num_layers,
        resolved_kernel_size=trunk.kernel_size,
        resolved_dilation_rates=list(trunk.dilation_rates),
        resolved_filters=filters,
    )
