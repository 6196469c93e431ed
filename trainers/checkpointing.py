"""A run's trainable state (model, optimizer, weight average) and its checkpoints: restore and save."""

import os

import tensorflow as tf
from absl import logging

from trainers import model_dir as layout
from trainers.loop import WeightAverage, read_scalar

# TrainConfig fields that shape the checkpoint's variables.
_CHECKPOINT_FIELDS = (
    "conditioning", "bottleneck_dim", "spatial_condition", "filters", "head", "num_mixtures", "ema_decay",
    "num_categories",
)  # fmt: skip  (num_layers and kernel_size: train_lib.resolved_trunk)


def is_chief(strategy):
    """True on the worker that writes files (the only process without a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


class TrainingState:
    """The model, its optimizer and weight average, checkpointed in <model_dir>/checkpoints/.

    Created inside the strategy's scope from ``model`` and ``optimizer`` (the optimizer's
    slots are built here), it resumes from the directory's latest checkpoint if there is
    one. ``step`` is the optimizer's step count, which the training loop advances.

    Args:
      config: the run's TrainConfig (``ema_decay``; the fields named when a checkpoint does not fit).
      model_dir: the training directory.
      strategy: the tf.distribute strategy (every worker takes part in a save; the chief's copy is kept).
      model, optimizer: built under ``strategy.scope()``.

    Raises:
      ValueError: the checkpoint does not fit the model (naming the flags it was started with).
    """

    def __init__(self, config, model_dir, strategy, model, optimizer):
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.chief = is_chief(strategy)
        with strategy.scope():
            optimizer.build(model.trainable_variables)  # slots inside the strategy scope
            self.average = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
            tracked = dict(model=model, optimizer=optimizer)
            if self.average is not None:
                tracked["weight_average"] = self.average
            checkpoint = tf.train.Checkpoint(**tracked)
        tf.io.gfile.makedirs(model_dir)
        directory = os.path.join(model_dir, layout.CHECKPOINT_DIR)
        if not self.chief:  # every worker takes part in a save; only the chief's copy is kept
            directory = os.path.join(model_dir, ".worker_tmp", f"worker_{strategy.cluster_resolver.task_id}")
        self.manager = tf.train.CheckpointManager(
            checkpoint, directory, max_to_keep=3, step_counter=optimizer.iterations
        )
        restored = tf.train.latest_checkpoint(os.path.join(model_dir, layout.CHECKPOINT_DIR))
        if restored:
            try:
                checkpoint.restore(restored).assert_existing_objects_matched()
            except (AssertionError, ValueError) as error:  # other num_layers / filters (shapes), or ema_decay on
                raise ValueError(_mismatch_message(config, model_dir, restored, error)) from error
        self.step = read_scalar(optimizer.iterations)
        if restored:
            logging.info("Resumed from %s: step %d, optimizer iterations %d.", restored, self.step, self.step)

    def save(self):
        """Checkpoints the current step (a worker's own copy is removed once written)."""
        path = self.manager.save(checkpoint_number=self.step)
        if not self.chief:
            tf.io.gfile.rmtree(os.path.dirname(path))
        logging.info("Saved checkpoint at step %d.", self.step)

    def learning_rate(self):
        return read_scalar(getattr(self.optimizer, "inner_optimizer", self.optimizer).learning_rate)


def _mismatch_message(config, model_dir, restored, error):
    """Why the checkpoint ``restored`` does not fit ``config``'s model, naming the flags it was started with."""
    recorded = layout.read_json(os.path.join(model_dir, layout.RUN_CONFIG), {})
    flags = [
        f"--{name}={recorded[name]}"
        for name in _CHECKPOINT_FIELDS
        if name in recorded and recorded[name] != getattr(config, name)
    ]
    why = (
        f"; the run was started with {' '.join(flags)} (run_config.json); pass those to resume it,"
        if flags
        else " (a changed architecture or ema_decay?);"
    )
    return (
        f"model_dir: its checkpoint {restored} does not fit this config{why} or use a new model_dir. "
        f"{str(error).splitlines()[0][:200]}"
    )
