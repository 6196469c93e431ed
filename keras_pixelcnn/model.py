"""PixelCNN models: the Gated/Conditional PixelCNN and the original single-stack PixelCNN.

Both share everything but their trunk (``PixelCNNBase``):

  * ``model(images)`` / ``model((images, condition))`` -> the head's parameters:
    softmax logits [B, H, W, C, 256] or mixture parameters [B, H, W, P];
  * Keras's Model API (``fit``, ``evaluate``, ``predict``, ``train_on_batch``, ...)
    with the loss built in (bits per dimension; ``LikelihoodModel``),
    ``log_prob``, ``bits_per_dim`` and ``sample``;
  * get_config/from_config and ``.keras`` saving.

Images are [B, H, W, C] integers in [0, 255] (uint8, or floats holding whole
numbers); the network sees them rescaled to [-1, 1]. With ``num_categories=K``
the inputs are integer codes in [0, K) instead, which the first layer embeds. The condition is integer
class ids [B] (``num_classes``) or floats [B, D] (``condition_shape=(D,)``).
"""

import keras
import numpy as np
from keras import ops

from keras_pixelcnn.blocks import GatedBlock, MaskedBlock
from keras_pixelcnn.conditioning import ConditionNetwork
from keras_pixelcnn.heads import make_head, mask_color_groups
from keras_pixelcnn.likelihood_model import LikelihoodModel, split_inputs
from keras_pixelcnn.masked_conv import MaskedConv2D
from keras_pixelcnn.validation import (
    check_condition,
    check_condition_shape,
    check_dilation_rates,
    check_image_shape,
    check_images,
    check_int,
    check_multiple,
    check_odd_kernel_size,
    check_optional_positive_int,
    check_positive_int,
    check_rate,
)


def check_pixelcnn_arguments(
    image_shape,
    num_layers,
    filters,
    kernel_size,
    head,
    num_mixtures,
    num_classes=None,
    condition_shape=None,
    spatial_condition=False,
    dropout=0.0,
    num_categories=None,
):
    """Checks a PixelCNN model's arguments together (``PixelCNNBase`` and any binary building one).

    Here, not in validation.py, because the colour groups depend on the head (validation.py
    stays below heads.py, which uses its checks).

    Args: as ``PixelCNNBase``.

    Returns:
      dict of the normalised arguments (ints, floats, tuples) plus ``color_channels``:
      the colour groups of the masks (C for the softmax head, 1 for the mixture head).
    """
    image_shape = check_image_shape(image_shape)
    if num_categories is not None:
        num_categories = check_int(num_categories, "num_categories", 2)
    color_channels = mask_color_groups(make_head(head, image_shape[-1], num_mixtures, num_categories))
    filters = check_multiple(
        filters,
        "filters",
        color_channels,
        f"a positive multiple of the {color_channels} image channels "
        "(the softmax head's colour masks split features into one group per channel)",
    )
    if num_classes is not None and condition_shape is not None:
        raise ValueError(
            f"num_classes, condition_shape: give one kind of condition, got num_classes={num_classes!r} "
            f"and condition_shape={condition_shape!r}."
        )
    if spatial_condition and num_classes is None and condition_shape is None:
        raise ValueError(
            "spatial_condition: requires num_classes or condition_shape (a condition to map), got neither."
        )
    return dict(
        image_shape=image_shape,
        num_layers=check_positive_int(num_layers, "num_layers"),
        filters=filters,
        kernel_size=check_odd_kernel_size(kernel_size),
        head=head,
        num_mixtures=check_positive_int(num_mixtures, "num_mixtures"),
        num_classes=check_optional_positive_int(num_classes, "num_classes"),
        condition_shape=check_condition_shape(condition_shape),
        spatial_condition=bool(spatial_condition),
        dropout=check_rate(dropout, "dropout"),
        num_categories=num_categories,
        color_channels=color_channels,
    )


def deserialized_config(config, *object_keys):
    """A copy of a model config with its dtype policy and the Keras objects under ``object_keys`` rebuilt."""
    config = dict(config)
    for key in ("dtype",) + object_keys:
        if isinstance(config.get(key), dict):
            deserialize = keras.dtype_policies.deserialize if key == "dtype" else keras.saving.deserialize_keras_object
            config[key] = deserialize(config[key])
    return config


class PixelCNNBase(LikelihoodModel):
    """What every PixelCNN here shares; subclasses define ``_make_trunk`` and ``_trunk``.

    Args:
      image_shape: (H, W, C) of the images, C >= 1.
      num_layers: layers of the trunk, >= 1.
      filters: features per layer (p); a multiple of C for the softmax head,
        whose colour masks split features into C groups.
      kernel_size: odd, >= 3.
      head: "softmax" or "logistic_mixture".
      num_mixtures: K, logistic components of the mixture head.
      num_classes: condition on integer class ids in [0, num_classes).
      condition_shape: (D,): condition on float vectors [B, D].
      spatial_condition: map the condition through the deconvolutional
        network m(h) and add it as a location-dependent bias (paper eq. 5).
      dropout: dropout rate inside each layer (training only).
      num_categories: None (default) for 8-bit images; K >= 2 for grids of
        integer codes in [0, K) (e.g. a VQ-VAE's): the first layer embeds each
        code (a learned ``filters``-wide embedding, not a rescaled intensity),
        the softmax head has K outputs per sub-position and samples are int32.
        The mixture head refuses it.

    The arguments are checked by ``check_pixelcnn_arguments``.
    """

    def __init__(
        self,
        image_shape,
        num_layers=8,
        filters=64,
        kernel_size=5,
        head="softmax",
        num_mixtures=5,
        num_classes=None,
        condition_shape=None,
        spatial_condition=False,
        dropout=0.0,
        num_categories=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        arguments = check_pixelcnn_arguments(
            image_shape,
            num_layers,
            filters,
            kernel_size,
            head,
            num_mixtures,
            num_classes,
            condition_shape,
            spatial_condition,
            dropout,
            num_categories,
        )
        self.image_shape = arguments["image_shape"]
        self.num_categories = arguments["num_categories"]
        self.head = make_head(head, self.image_shape[-1], arguments["num_mixtures"], self.num_categories)
        self.color_channels = arguments["color_channels"]
        self.num_layers = arguments["num_layers"]
        self.filters = arguments["filters"]
        self.kernel_size = arguments["kernel_size"]
        self.num_mixtures = arguments["num_mixtures"]
        self.num_classes = arguments["num_classes"]
        self.condition_shape = arguments["condition_shape"]
        self.spatial_condition = arguments["spatial_condition"]
        self.dropout = arguments["dropout"]
        self.conditioned = self.num_classes is not None or self.condition_shape is not None
        self.input_embedding = (
            keras.layers.Embedding(self.num_categories, self.filters, name="input_embedding", dtype=self.dtype_policy)
            if self.num_categories is not None
            else None
        )

        self.condition_network = (
            ConditionNetwork(
                self.image_shape,
                self.num_classes,
                spatial=self.spatial_condition,
                name="condition",
                dtype=self.dtype_policy,
            )
            if self.conditioned
            else None
        )
        self._make_trunk()
        self.head_hidden = MaskedConv2D(
            self.filters, 1, color_channels=self.color_channels, name="head_hidden", dtype=self.dtype_policy
        )
        # Zero-initialised: an untrained model predicts the uniform distribution (8 bits/dim, softmax head).
        self.head_out = MaskedConv2D(
            self.head.num_outputs,
            1,
            color_channels=self.color_channels,
            kernel_initializer="zeros",
            name="head_out",
            dtype=self.dtype_policy,
        )
        self.head_out.build((None, None, None, self.filters))  # here, as always: its weights keep their paths
        self._sample_functions = {}
        self.build()

    # -- construction -------------------------------------------------------------

    def _make_trunk(self):
        """Creates the layers (``self._add_blocks``)."""
        raise NotImplementedError

    def _add_blocks(self, blocks):
        # One attribute per block, not a list: Keras 3 lists of layers are invisible
        # to tf.train.Checkpoint, which the trainers use.
        self._block_names = []
        for block in blocks:
            setattr(self, block.name, block)
            self._block_names.append(block.name)

    @property
    def blocks(self):
        """The trunk's layers, in order."""
        return [getattr(self, name) for name in self._block_names]

    def _trunk(self, x, condition, training):
        """Scaled images [B, H, W, C] and h or s -> features [B, H, W, filters]."""
        raise NotImplementedError

    def _build_trunk(self, input_shape, condition_shape):
        """Builds the trunk's layers for inputs ``input_shape`` and h or s of ``condition_shape``."""
        raise NotImplementedError

    def build(self, input_shape=None):
        """Creates every weight: each layer's build gets the shapes its call will see (they follow from the config).

        The weights a symbolic pass of ``call`` would create (test_api.py), without its cost: on
        TensorFlow it traces every op of the forward pass, half the time of building a model.
        """
        height, width, _ = self.image_shape
        condition_shape = None
        if self.conditioned:
            raw = (None,) if self.num_classes is not None else (None,) + self.condition_shape
            self.condition_network.build(raw)
            condition_shape = self.condition_network.compute_output_shape(raw)
        if self.input_embedding is not None:
            self.input_embedding.build((None,) + self.image_shape)
        self._build_trunk((None, height, width, self.input_features), condition_shape)
        self.head_hidden.build((None, height, width, self.filters))
        self.built = True

    # -- forward pass ---------------------------------------------------------------

    def _check_inputs(self, images, condition, name="inputs"):
        """Raises ValueError unless images [B, H, W, C] and condition fit this model (messages name each)."""
        check_images(images, self.image_shape, name="images", num_categories=self.num_categories)
        check_condition(
            condition,
            self.num_classes,
            self.condition_shape,
            batch_size=tuple(images.shape)[0] if hasattr(images, "shape") else None,
        )

    def call(self, inputs, training=None):
        """Images [B, H, W, C] or (images, condition) -> the head's parameters (see the module docstring)."""
        images, condition = split_inputs(inputs)
        self._check_inputs(images, condition)
        h = self.condition_network(condition) if self.conditioned else None
        return self.head_params(self._trunk(self.embed_inputs(images), h, training))

    @property
    def sample_dtype(self):
        """What ``sample`` returns: uint8 images, or int32 codes with ``num_categories``."""
        return "uint8" if self.num_categories is None else "int32"

    @property
    def input_features(self):
        """The first layer's input features: C intensities, or C ``filters``-wide code embeddings."""
        channels = self.image_shape[-1]
        return channels if self.input_embedding is None else channels * self.input_embedding.output_dim

    def embed_inputs(self, values):
        """The first layer's input from raw values [..., C]: intensities in [-1, 1], or code embeddings [..., E C].

        A code's E = ``filters`` embedding features are interleaved by channel (feature e C + c
        belongs to channel c), the colour masks' grouping.
        """
        if self.input_embedding is None:
            return ops.cast(values, self.compute_dtype) / 127.5 - 1.0
        embedded = self.input_embedding(ops.cast(values, "int32"))  # [..., C, E]
        shape = ops.shape(embedded)
        rank = len(embedded.shape)
        embedded = ops.transpose(embedded, tuple(range(rank - 2)) + (rank - 1, rank - 2))  # [..., E, C]
        return ops.reshape(embedded, tuple(shape[:-2]) + (shape[-1] * shape[-2],))

    def head_params(self, features):
        """Trunk features [B, h, w, filters] -> the head's parameters at those pixels."""
        hidden = ops.relu(self.head_hidden(ops.relu(features)))
        if self.head.output_order is None:
            return self.head.params_from_outputs(self.head_out(hidden))
        # The softmax head's logits straight in [..., C, 256] order: no transpose of them or their gradient.
        outputs = self.head_out(hidden, output_order=self.head.output_order)
        return self.head.params_from_ordered_outputs(outputs)

    # -- likelihood -----------------------------------------------------------------

    def log_prob(self, images, condition=None):
        """Log-likelihood in nats of each image: [B, H, W, C] (+ condition) -> float32 [B]."""
        self._check_inputs(images, condition)
        params = self(images if condition is None else (images, condition), training=False)
        return self.head.log_prob(params, images)

    def bits_per_dim(self, images, condition=None):
        """Negative log-likelihood in bits per sub-pixel of each image -> float32 [B]."""
        self._check_inputs(images, condition)
        return self.per_image_bits_per_dim(images if condition is None else (images, condition))

    # -- sampling -----------------------------------------------------------------

    # Sampling methods this model offers (keras_pixelcnn.sampling.SAMPLERS); the first is the default.
    sampling_methods = ("naive",)

    def sample(self, num_samples=None, condition=None, temperature=1.0, seed=None, method=None, jit_compile=None):
        """Draws images autoregressively.

        Args:
          num_samples: number of images; required for unconditional models,
            optional (must equal len(condition)) for conditional ones.
          condition: class ids [B] or floats [B, D] for conditional models.
          temperature: > 0; divides the logits (softmax, mixture weights) and
            multiplies the logistic scales.
          seed: int, two ints, or None for a fresh seed. Draws are keyed by
            (seed, step index): the same seed gives the same images, whatever
            the method and jit_compile (exactly in float64; in float32, XLA's
            rounding can rarely flip a draw that sits on a boundary).
          method: None for the model's default; "cached" (ConditionalPixelCNN's
            default: incremental, each step computes only what the new
            sub-pixel changes) or "naive" (a full forward pass per step: H W C
            passes with the softmax head, H W with the mixture head; the reference).
          jit_compile: None (auto: XLA, which TensorFlow and JAX offer on CPU
            and GPU), True (XLA: the whole sampling loop is one compiled program,
            tf.function(jit_compile=True) or jax.jit; the first call per batch
            size compiles it, ~1-3 s for small models) or False (TensorFlow: a
            graph, op by op; JAX: the ops outside the loops run eagerly, and the
            loops, which JAX always compiles, are compiled afresh at every call).

        Returns:
          uint8 tensor [B, H, W, C] (int32 codes with ``num_categories``).
        """
        from keras_pixelcnn.noise import normalize_seed
        from keras_pixelcnn.sampling import resolve_jit_compile, sampling_function

        method = self.sampling_methods[0] if method is None else method
        if method not in self.sampling_methods:
            raise ValueError(
                f"method: expected one of {self.sampling_methods} for {type(self).__name__}, got {method!r}."
            )

        if self.conditioned:
            check_condition(condition, self.num_classes, self.condition_shape)
            batch_size = int(np.shape(condition)[0])
            if num_samples is not None and num_samples != batch_size:
                raise ValueError(
                    f"num_samples: expected None or len(condition)={batch_size} for a conditional model, "
                    f"got {num_samples!r}."
                )
        else:
            check_condition(condition, None, None)
            if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
                raise ValueError(f"num_samples: expected an int >= 1 for an unconditional model, got {num_samples!r}.")
            batch_size = int(num_samples)
        if batch_size < 1:
            raise ValueError(f"condition: expected at least one entry, got {batch_size}.")
        if not np.isscalar(temperature) or not 0 < temperature < np.inf:
            raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}.")
        jit_compile = resolve_jit_compile(jit_compile)
        key = f"{method}_xla" if jit_compile else method  # string keys: the dict is tracked (SavedModel export)
        if key not in self._sample_functions:
            self._sample_functions[key] = sampling_function(self, method, jit_compile)
        if condition is not None:
            condition = ops.convert_to_tensor(condition, "int32" if self.num_classes is not None else "float32")
        return self._sample_functions[key](
            np.int32(batch_size), condition, np.float32(temperature), normalize_seed(seed)
        )

    # -- serialization ------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "image_shape": self.image_shape,
            "num_layers": self.num_layers,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "head": self.head.name,
            "num_mixtures": self.num_mixtures,
            "num_classes": self.num_classes,
            "condition_shape": self.condition_shape,
            "spatial_condition": self.spatial_condition,
            "dropout": self.dropout,
            "num_categories": self.num_categories,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**deserialized_config(config))


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class ConditionalPixelCNN(PixelCNNBase):
    """Gated PixelCNN with vertical and horizontal stacks, optionally conditional.

    van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
    Decoders": ``num_layers`` GatedBlocks (blocks.py); the first uses mask "A".
    Unconditional when neither ``num_classes`` nor ``condition_shape`` is given.

    Args (beyond PixelCNNBase):
      skip_connections: sum 1x1 skip outputs of every layer into the head's
        input instead of using the last horizontal output.
      dilation_rates: None (the paper: every layer 1) or one int >= 1 per
        layer: layer l's taps are ``dilation_rates[l]`` pixels apart, which
        widens the receptive field at no cost in weights or multiply-adds (with
        kernel n, the vertical stack reaches sum_l d_l * (ceil(n/2) - 1) rows up;
        TF runs dilated convolutions through SpaceToBatch on CPU and GPU, which
        costs 10-20% of a training step).

    Example:
      model = ConditionalPixelCNN((28, 28, 1), num_layers=12, filters=64, num_classes=10)
      model.compile(optimizer="adam")
      model.fit((images, labels), batch_size=32, epochs=10)
      samples = model.sample(condition=[0, 1, 2], seed=0)   # uint8 [3, 28, 28, 1]
    """

    sampling_methods = ("cached", "naive")

    def __init__(self, image_shape, *args, skip_connections=False, dilation_rates=None, **kwargs):
        self.skip_connections = bool(skip_connections)
        self._dilation_rates = dilation_rates  # checked against num_layers in _make_trunk
        super().__init__(image_shape, *args, **kwargs)

    def _make_trunk(self):
        self.dilation_rates = check_dilation_rates(self._dilation_rates, self.num_layers)
        self._add_blocks(
            GatedBlock(
                self.filters,
                self.kernel_size,
                first=index == 0,
                color_channels=self.color_channels,
                conditioned=self.conditioned,
                condition_vertical=index < self.num_layers - 1,
                skip=self.skip_connections,
                dropout=self.dropout,
                dilation_rate=self.dilation_rates[index],
                name=f"gated_{index}",
                dtype=self.dtype_policy,
            )
            for index in range(self.num_layers)
        )

    def _build_trunk(self, input_shape, condition_shape):
        for block in self.blocks:
            block.build(input_shape, input_shape, condition_shape)
            input_shape = tuple(input_shape[:-1]) + (self.filters,)

    def _trunk(self, x, condition, training):
        v = h = x
        skips = []
        for block in self.blocks:
            v, h, *skip = block(v, h, condition, training=training)
            skips += skip
        return sum(skips[1:], skips[0]) if self.skip_connections else h

    def get_config(self):
        return {
            **super().get_config(),
            "skip_connections": self.skip_connections,
            "dilation_rates": list(self.dilation_rates),
        }


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class PixelCNN(PixelCNNBase):
    """The original single-stack masked PixelCNN (blind spot and all), for ablations.

    ``num_layers`` n x n masked convolutions (mask "A" first, "B" after) with
    ReLU units, or gated units with ``gated=True``; residual connections after
    the first layer; conditioning as in ConditionalPixelCNN. Same constructor
    arguments and methods as ConditionalPixelCNN, plus ``gated``.
    """

    def __init__(self, image_shape, *args, gated=False, **kwargs):
        self.gated = bool(gated)
        super().__init__(image_shape, *args, **kwargs)

    def _make_trunk(self):
        self._add_blocks(
            MaskedBlock(
                self.filters,
                self.kernel_size,
                first=index == 0,
                color_channels=self.color_channels,
                conditioned=self.conditioned,
                gated=self.gated,
                dropout=self.dropout,
                name=f"masked_{index}",
                dtype=self.dtype_policy,
            )
            for index in range(self.num_layers)
        )

    def _build_trunk(self, input_shape, condition_shape):
        for block in self.blocks:
            block.build(input_shape, condition_shape)
            input_shape = tuple(input_shape[:-1]) + (self.filters,)

    def _trunk(self, x, condition, training):
        for block in self.blocks:
            x = block(x, condition, training=training)
        return x

    def get_config(self):
        return {**super().get_config(), "gated": self.gated}
