"""The distributed training step, evaluation, and the Polyak average of the weights.

One custom loop serves every strategy (default, MirroredStrategy,
MultiWorkerMirroredStrategy): Keras 3 ``fit`` fails under
MultiWorkerMirroredStrategy on TF 2.21 (keras-team/keras#20585), and one loop
keeps the three paths identical.

Loss scaling across replicas: each replica's loss is the sum of its examples'
bits/dim divided by the *global* batch size (``tf.nn.compute_average_loss``);
the Keras optimizer all-reduces gradients with SUM, so the applied gradient is
exactly the single-device gradient of the global batch mean.
"""

import contextlib

import tensorflow as tf


def read_scalar(value):
    """A Python number from a scalar tensor or (possibly mirrored) variable."""
    return tf.convert_to_tensor(value).numpy().item()


def model_inputs(model, images, labels):
    return (images, labels) if model.conditioned else images


def make_train_step(model, optimizer, strategy, global_batch_size, clip_norm=0.0, jit_compile=False, average=None):
    """A tf.function ``step(distributed_batch) -> mean loss (bits/dim) of the global batch``.

    Args:
      model: a PixelCNN model created under ``strategy.scope()``.
      optimizer: a Keras optimizer (optionally a LossScaleOptimizer) built on
        ``model.trainable_variables`` under the same scope.
      strategy: the tf.distribute strategy.
      global_batch_size: examples per step over all replicas.
      clip_norm: > 0 clips the *global* gradient (after the all-reduce) to this norm.
      jit_compile: XLA-compile the forward and backward pass of each replica
        (the optimizer update, which all-reduces, stays outside XLA).
      average: a WeightAverage to update after each step, or None.
    """
    variables = model.trainable_variables
    num_replicas = strategy.num_replicas_in_sync

    def loss_and_grads(images, labels):
        with tf.GradientTape() as tape:
            per_example = model.per_image_bits_per_dim(model_inputs(model, images, labels), training=True)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled_loss = optimizer.scale_loss(loss)
        return loss, tape.gradient(scaled_loss, variables)

    if jit_compile:
        loss_and_grads = tf.function(loss_and_grads, jit_compile=True, autograph=False)

    def replica_step(images, labels):
        loss, grads = loss_and_grads(images, labels)
        if clip_norm > 0:
            # Clip the global gradient: sum the replicas' parts first, then hand the
            # optimizer 1/N of the clipped sum, which its own SUM all-reduce restores.
            context = tf.distribute.get_replica_context()
            grads = [tf.convert_to_tensor(g) for g in grads]  # gathers give IndexedSlices, which cannot be scaled
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads) if num_replicas > 1 else grads
            grads, _ = tf.clip_by_global_norm(grads, clip_norm)
            grads = [g / num_replicas for g in grads]
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    @tf.function(autograph=False)  # no Python control flow on tensors: tracing skips the conversion
    def train_step(batch):
        per_replica = strategy.run(replica_step, args=batch)
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        if average is not None:
            average.update(optimizer.iterations)
        return loss

    return train_step


def make_evaluator(model):
    """``evaluate(dataset) -> mean bits/dim`` over all images of an (images, labels) dataset.

    The step is traced once, for any batch size (the last batch of an evaluation is usually
    smaller); ``evaluate.batch_bits`` is that tf.function.
    """

    @tf.function(autograph=False)
    def batch_bits(images, labels):
        bits = model.per_image_bits_per_dim(model_inputs(model, images, labels), training=False)
        return tf.reduce_sum(bits), tf.shape(images)[0]

    def evaluate(dataset):
        batch_bits.get_concrete_function(*dataset.element_spec)  # batch size None: one trace fits every batch
        total, count = 0.0, 0
        for images, labels in dataset:
            bits, n = batch_bits(images, labels)
            total, count = total + float(bits), count + int(n)
        return total / max(count, 1)

    evaluate.batch_bits = batch_bits
    return evaluate


class WeightAverage(tf.Module):
    """Polyak averages of a model's trainable weights (``average = d * average + (1 - d) * weight``).

    Our own variables rather than the Keras optimizer's ``use_ema`` (whose averages
    are private attributes). Create it under the strategy's scope; it is tracked by
    ``tf.train.Checkpoint(..., weight_average=average)``. The first update copies
    the weights (as Keras's optimizer EMA does); after that the decay warms up as
    in ``tf.train.ExponentialMovingAverage(num_updates=step)``: d = min(decay,
    (1 + step) / (10 + step)). Without the warm-up the average of a short run is
    mostly its initial weights (0.999^271 = 0.76 of it after 271 steps).

    Args:
      model: the model whose ``trainable_variables`` are averaged.
      decay: in (0, 1), the decay once warmed up.
    """

    def __init__(self, model, decay):
        super().__init__(name="weight_average")
        self.decay = float(decay)
        self._model_variables = lambda: model.trainable_variables  # a function: not tracked twice
        self.averages = [
            tf.Variable(tf.zeros_like(v), trainable=False, name="average") for v in model.trainable_variables
        ]

    def update(self, step):
        """Folds the current weights in; ``step`` is the optimizer's iteration count after the update (>= 1)."""
        step = tf.cast(step, tf.float32)
        decay = tf.cast(step > 1, tf.float32) * tf.minimum(self.decay, (1.0 + step) / (10.0 + step))
        for average, variable in zip(self.averages, self._model_variables()):
            average.assign(decay * average + (1.0 - decay) * tf.cast(variable, average.dtype))

    @contextlib.contextmanager
    def swapped_in(self, step):
        """Temporarily puts the averages in the model's variables (a no-op before the first ``step``)."""
        if step == 0:
            yield
            return
        variables = self._model_variables()
        backup = [tf.identity(v) for v in variables]
        for variable, average in zip(variables, self.averages):
            variable.assign(average)
        try:
            yield
        finally:
            for variable, value in zip(variables, backup):
                variable.assign(value)
