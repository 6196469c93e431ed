"""What every model here shares with Keras's Model API: its data forms, its built-in loss, per-image bits/dim.

A model here maps inputs -- images [B, H, W, C], or an (images, condition)
pair -- to the head's parameters and learns by maximum likelihood: the loss is
built in and there are no targets. ``LikelihoodModel`` reads every batch Keras
hands to ``train_step`` / ``test_step`` / ``predict_step`` as the model's inputs:

  * fit / evaluate / predict with arrays: ``x=images`` or ``x=(images, condition)``;
  * tf.data datasets of images, or of (images, condition) pairs;
  * ``train_on_batch`` / ``test_on_batch`` / ``predict_on_batch`` with the same ``x``
    (Keras packs these as (x, None, None) and (x,)).

A 2-tuple of data is always (images, condition), never (x, y): ``y``,
``sample_weight`` and ``class_weight`` are refused with a clear error.
"""

import keras
import numpy as np
from keras import ops

from keras_pixelcnn.heads import bits_per_dim


def split_inputs(inputs, name="inputs"):
    """A model's inputs -> (images, condition or None).

    Args:
      inputs: images, (images,) or (images, condition).
      name: the argument's name for the error message.

    Returns:
      (images, condition), condition None when ``inputs`` holds images alone.
    """
    while isinstance(inputs, (tuple, list)) and len(inputs) == 1:
        inputs = inputs[0]
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != 2:
            raise ValueError(
                f"{name}: expected images or an (images, condition) pair, got a sequence of {len(inputs)} items."
            )
        return inputs[0], inputs[1]
    return inputs, None


def _batch_inputs(data):
    """A batch as Keras hands it to a step -> the model's inputs as (images, condition or None)."""
    if isinstance(data, tuple) and len(data) == 3 and data[1] is None and data[2] is None:
        data = data[0]  # train_on_batch / test_on_batch pack (x, y=None, sample_weight=None)
    return split_inputs(data)


class OptimizerBuiltFirst(keras.Model):
    """A Keras Model whose ``fit`` and ``train_on_batch`` create the optimizer's variables first.

    Keras does so under a tf.distribute strategy and on JAX. On TensorFlow without a strategy
    it creates them in the first traced step, behind lifted initializers, and tf.function then
    traces the step a second time: a small model's first ``fit`` took 2.0-2.2x as long
    (BUILD_NOTES, "First fit").
    """

    def _build_optimizer(self):
        if keras.backend.backend() == "tensorflow" and self.built and self.optimizer and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def fit(self, *args, **kwargs):
        self._build_optimizer()
        return super().fit(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._build_optimizer()
        return super().train_on_batch(*args, **kwargs)


class LikelihoodModel(OptimizerBuiltFirst):
    """Base class of the PixelCNN models and the auto-encoder: Keras's Model API with a built-in loss.

    Subclasses set ``head`` and ``image_shape``, and implement ``call(inputs, training)``
    (-> the head's parameters) and ``_check_inputs(images, condition, name)``
    (ValueError for inputs the model does not take).

    Metrics: ``loss`` and ``bits_per_dim`` (the batch mean of
    ``per_image_bits_per_dim``; the loss adds any regularisation losses).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bits_per_dim_tracker = keras.metrics.Mean(name="bits_per_dim")

    def _check_inputs(self, images, condition, name="inputs"):
        """Raises ValueError unless (images, condition) is what this model takes."""
        raise NotImplementedError

    # -- the loss ----------------------------------------------------------------------

    def per_image_bits_per_dim(self, inputs, training=False, params=None):
        """The negative log-likelihood of each image of a batch, in bits per sub-pixel.

        The one place the per-image loss is computed: ``fit``'s loss is its batch
        mean; a custom training step or evaluator reduces it as it needs (e.g. a
        sum divided by the global batch size under a distribution strategy).

        Args:
          inputs: what the model takes: images [B, H, W, C] (integers 0..255),
            or (images, condition) for a conditional model.
          training: the forward pass's mode (dropout, batch normalization).
          params: the head's parameters ``self(inputs, training=training)`` when
            they are already computed (``compute_loss`` receives them); None
            runs the forward pass.

        Returns:
          float32 [B].
        """
        images, _ = split_inputs(inputs)
        if params is None:
            params = self(inputs, training=training)
        return bits_per_dim(self.head.log_prob(params, images), self.image_shape)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The batch mean of ``per_image_bits_per_dim`` (logged as ``bits_per_dim``) plus regularisation losses.

        Bits per dimension, so that learning rates carry across image sizes.
        """
        loss = ops.mean(self.per_image_bits_per_dim(x, params=y_pred))
        self.bits_per_dim_tracker.update_state(loss)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    # -- the data forms --------------------------------------------------------------------

    def _check_data(self, x, y=None, sample_weight=None, class_weight=None):
        """Fails before any step on targets, weights, or data the model does not take."""
        if y is not None:
            raise ValueError(
                f"y: {type(self).__name__} learns from its inputs alone (the loss is built in); "
                "pass a condition as x=(images, condition), got y."
            )
        for name, value in (("sample_weight", sample_weight), ("class_weight", class_weight)):
            if value is not None:
                raise ValueError(f"{name}: not supported (every image counts once in the built-in loss), got one.")
        spec = getattr(x, "element_spec", None)
        images, condition = split_inputs(spec if spec is not None else x, name="x")
        if images is None or not hasattr(images, "shape") and not isinstance(images, (list, np.ndarray)):
            return  # generators and other sources are checked by their batches' shapes
        self._check_inputs(images, condition, name="x")

    def fit(self, x=None, y=None, sample_weight=None, class_weight=None, **kwargs):
        self._check_data(x, y, sample_weight, class_weight)
        return super().fit(x, **kwargs)

    def evaluate(self, x=None, y=None, sample_weight=None, **kwargs):
        self._check_data(x, y, sample_weight)
        return super().evaluate(x, **kwargs)

    def predict(self, x, **kwargs):
        self._check_data(x)
        return super().predict(x, **kwargs)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        self._check_data(x, y, sample_weight, class_weight)
        return super().train_on_batch(x, return_dict=return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._check_data(x, y, sample_weight)
        return super().test_on_batch(x, return_dict=return_dict)

    def predict_on_batch(self, x):
        self._check_data(x)
        return super().predict_on_batch(x)

    def train_step(self, *args):
        *state, data = args  # TF/torch: (data,); JAX: (state, data)
        return super().train_step(*state, (_batch_inputs(data),))

    def test_step(self, *args):
        *state, data = args
        return super().test_step(*state, (_batch_inputs(data),))

    def predict_step(self, *args):
        *state, data = args
        return super().predict_step(*state, (_batch_inputs(data),))
