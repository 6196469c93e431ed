"""The training steps, driving Keras callbacks as ``fit`` does (one evaluation interval is one epoch).

  on_epoch_begin(epoch) / on_epoch_end(epoch, {loss, bits_per_dim, val_loss, val_bits_per_dim})
  on_train_batch_begin(batch) / on_train_batch_end(batch, {loss, bits_per_dim})

Each epoch ends with a checkpoint and an evaluation. SIGTERM / SIGINT (main thread
only; every worker under MultiWorkerMirroredStrategy) finish the current step,
checkpoint and raise TrainingInterrupted.
"""

import contextlib
import math
import signal
import sys
import threading

import keras
import numpy as np
import tensorflow as tf
from absl import logging

MONITORED = ("loss", "bits_per_dim", "val_loss", "val_bits_per_dim")  # the logs' keys


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last checkpoint is from before."""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run after checkpointing; ``signum`` is the signal's number."""

    def __init__(self, signum, step):
        super().__init__(f"Stopped by signal {signum} at step {step}; run again to resume from its checkpoint.")
        self.signum, self.step = signum, step


def make_callbacks(callbacks, model, config):
    """A keras CallbackList over ``callbacks`` with fit's params (epochs of ``config.eval_every`` steps)."""
    for callback in callbacks or []:
        # Every number the loop reports is lower-is-better; Keras cannot infer that for
        # "bits_per_dim" (it is no compiled metric), so monitors in "auto" mode get "min".
        if getattr(callback, "mode", None) == "auto" and getattr(callback, "monitor", None) in MONITORED:
            callback.mode = "min"
    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    callback_list.set_params(
        {"epochs": math.ceil(config.train_steps / config.eval_every), "steps": config.eval_every, "verbose": 0}
    )
    return callback_list


@contextlib.contextmanager
def stop_signals(state):
    """Yields (preemption handler or None, stop): SIGTERM / SIGINT set stop["signal"] until the block ends."""
    if isinstance(state.strategy, tf.distribute.MultiWorkerMirroredStrategy):  # SIGTERM: every worker saves
        yield tf.distribute.experimental.PreemptionCheckpointHandler(state.strategy.cluster_resolver, state.manager), {}
        return
    stop, previous = {}, {}
    if threading.current_thread() is threading.main_thread():  # SIGTERM / SIGINT: finish the step, save
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda number, _: stop.setdefault("signal", number))
    try:
        yield None, stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_steps(config, state, train_step, iterator, callbacks, evaluation, summaries):
    """Runs epochs until ``config.train_steps`` or a stop; False when a callback stopped on a non-finite loss.

    Args:
      config: the TrainConfig (train_steps, eval_every, log_every).
      state: the checkpointing.TrainingState; its step advances.
      train_step: batch -> loss (trainers/loop.py).
      iterator: the distributed training batches.
      callbacks: a CallbackList (``make_callbacks``).
      evaluation: the evaluation.Evaluation run after each epoch's checkpoint.
      summaries: the evaluation.Summaries for the training scalars.
    """
    progress = (
        keras.utils.Progbar(config.train_steps, stateful_metrics=["bits_per_dim"]) if sys.stdout.isatty() else None
    )
    with stop_signals(state) as (preemption, stop):
        while state.step < config.train_steps and not state.model.stop_training:
            epoch = state.step // config.eval_every
            callbacks.on_epoch_begin(epoch)
            losses = []
            while True:
                loss = _step(state, train_step, iterator, callbacks, preemption, epoch * config.eval_every)
                if loss is None:
                    return False
                losses.append(loss)
                if progress:
                    progress.update(state.step, [("bits_per_dim", loss)])
                if state.step % config.log_every == 0:
                    rate = state.learning_rate()
                    summaries.scalars(state.step, train_bits_per_dim=loss, loss=loss, learning_rate=rate)
                    if not progress:
                        logging.info("step %d: train bits/dim %.4f", state.step, loss)
                if (state.step % config.eval_every == 0 or state.step >= config.train_steps
                        or state.model.stop_training or "signal" in stop):  # fmt: skip
                    break
            state.save()
            if "signal" in stop:
                logging.warning(
                    "Stopped by signal %d at step %d; rerun the same command to resume.", stop["signal"], state.step
                )
                raise TrainingInterrupted(stop["signal"], state.step)
            bits, train_bits = evaluation(), float(np.mean(losses))
            callbacks.on_epoch_end(
                epoch, {"loss": train_bits, "bits_per_dim": train_bits, "val_loss": bits, "val_bits_per_dim": bits}
            )
    return True


def _step(state, train_step, iterator, callbacks, preemption, epoch_start):
    """One training step between the batch callbacks -> its loss; None when a callback stopped on a non-finite one."""
    batch_index = state.step - epoch_start
    callbacks.on_train_batch_begin(batch_index)
    batch = next(iterator)
    loss = float(preemption.run(train_step, batch) if preemption else train_step(batch))
    state.step += 1
    callbacks.on_train_batch_end(batch_index, {"loss": loss, "bits_per_dim": loss})
    if math.isfinite(loss):
        return loss
    if state.model.stop_training:  # e.g. TerminateOnNaN: stop, keep the last good checkpoint
        logging.warning("Loss is %s at step %d: stopped by a callback, nothing saved.", loss, state.step)
        return None
    raise NonFiniteLossError(
        f"Loss is {loss} at step {state.step}: stopping. The last checkpoint in {state.manager.directory} "
        "is from before the divergence; lower learning_rate or set clip_norm."
    )
