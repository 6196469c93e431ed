"""PixelCNN auto-encoder (paper sections 2.4, 3.4) and conditioning on a frozen embedding (section 3.3).

``PixelCNNAutoEncoder`` owns an encoder (any Keras model; a small convolutional
one by default) that maps an image x to a code h of ``bottleneck_dim`` floats,
and a ``ConditionalPixelCNN`` decoder with ``condition_shape=(bottleneck_dim,)``
that models p(x | h). Both are trained end to end by maximum likelihood: the
loss is the decoder's bits per dimension of x given h = encoder(x), and its
gradient reaches the encoder through h. h conditions the decoder globally
(V^T h in every gate), or through a location-dependent map s = m(h)
(``spatial_condition=True``, paper eq. 5).

``EmbeddingConditionedPixelCNN`` is the same model with a *frozen* encoder: the
embedding network of another model (paper section 3.3: a face-embedding network
and portraits). h = f(x) is computed on the fly inside the forward pass, in
inference mode and under ``stop_gradient``; only the decoder trains. The
embedding network is part of the model (its architecture in the config, its
weights in the ``.keras`` file and in checkpoints), so a saved model needs no
other file to encode new images.

Encoder convention: the encoder receives the images as float32 [B, H, W, C]
holding the raw pixel values 0..255 (not rescaled), and returns [B, D] floats.
The default encoder rescales to [-1, 1] itself (a ``Rescaling`` layer).

Custom encoders are serialized with ``keras.saving.serialize_keras_object``:
use a functional or Sequential model (or a registered subclass that holds its
layers as attributes -- Keras 3 lists of layers are invisible to
``tf.train.Checkpoint``, which the trainers use).
"""

import keras
import numpy as np
from keras import ops

from keras_pixelcnn.likelihood_model import LikelihoodModel, split_inputs
from keras_pixelcnn.model import ConditionalPixelCNN, deserialized_config
from keras_pixelcnn.validation import (
    check_image_shape,
    check_images,
    check_int,
    check_positive_int,
    check_vector_output_shape,
)


def default_encoder(image_shape, bottleneck_dim, filters=32, dtype=None, name="encoder"):
    """A small convolutional encoder: images 0..255 [B, H, W, C] -> h [B, bottleneck_dim].

    Rescaling to [-1, 1]; a 3x3 convolution (``filters``, ReLU); two stride-2
    3x3 convolutions (``2 * filters``, ReLU); flatten; a linear Dense layer to
    ``bottleneck_dim``; a batch normalization without offset whose gains start
    at 0.1. An 8x8 image becomes a 2x2 grid before the Dense layer, a 32x32
    image an 8x8 grid.

    Why the normalization: an unconstrained code drifted in training (every
    image's gradient first pushes h the same way, as a free bias of the gates)
    until the gates saturated and the decoder stalled at the pixel marginals
    (about 3 bits/dim on the digits). Standardizing over the batch removes the
    common part of h, and the small initial gain lets the decoder learn as if
    h were 0 while the code grows where it helps. Codes use the batch's
    statistics in training and the moving averages (momentum 0.9) otherwise.

    Args:
      image_shape: (H, W, C).
      bottleneck_dim: D, the size of the code h.
      filters: width of the first convolution.
      dtype: the layers' dtype policy (None: the global policy).
      name: the model's name.

    Returns:
      A functional ``keras.Model``.
    """
    inputs = keras.Input(tuple(image_shape), dtype="float32", name="images")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, dtype=dtype, name="rescale")(inputs)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", dtype=dtype, name="conv_0")(x)
    for index in (1, 2):
        x = keras.layers.Conv2D(
            2 * filters, 3, strides=2, padding="same", activation="relu", dtype=dtype, name=f"conv_{index}"
        )(x)
    x = keras.layers.Flatten(dtype=dtype, name="flatten")(x)
    x = keras.layers.Dense(bottleneck_dim, use_bias=False, dtype=dtype, name="code")(x)  # the batch norm centres it
    code = keras.layers.BatchNormalization(
        center=False, gamma_initializer=keras.initializers.Constant(0.1), momentum=0.9, dtype=dtype, name="standardize"
    )(x)
    return keras.Model(inputs, code, name=name)


def interpolation_conditions(h_a, h_b, steps):
    """Codes on the line from ``h_a`` to ``h_b``: row t is (1 - w_t) h_a + w_t h_b, w = linspace(0, 1, steps).

    Args:
      h_a, h_b: float [D] (or [1, D]) codes of the two end points.
      steps: int >= 2, rows of the result, end points included.

    Returns:
      float32 [steps, D]; the first row is exactly ``h_a`` and the last exactly ``h_b``.
    """
    h_a = np.asarray(h_a, np.float64).reshape(-1)
    h_b = np.asarray(h_b, np.float64).reshape(-1)
    if h_a.shape != h_b.shape:
        raise ValueError(f"h_b: expected the shape of h_a {h_a.shape}, got {h_b.shape}.")
    steps = check_int(steps, "steps", 2)  # the end points included
    weights = np.linspace(0.0, 1.0, steps)[:, None]
    return ((1.0 - weights) * h_a + weights * h_b).astype(np.float32)


# The sampling methods below still call it by this name (kept while their jit_compile change is in flight).
_check_positive_int = check_positive_int


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class PixelCNNAutoEncoder(LikelihoodModel):
    """An encoder x -> h and a Conditional PixelCNN decoder p(x | h), trained end to end.

    Args:
      image_shape: (H, W, C) of the images.
      bottleneck_dim: D, the size of the code h (the paper used 10 and 100).
      encoder: a Keras model mapping float32 images [B, H, W, C] with values
        0..255 to [B, D]; None for ``default_encoder(image_shape, D, encoder_filters)``.
      num_layers, filters, kernel_size, head, num_mixtures, dropout,
        skip_connections, dilation_rates: the decoder's options, as in ``ConditionalPixelCNN``.
      spatial_condition: condition the decoder on a location-dependent map
        s = m(h) (paper eq. 5) instead of the global V^T h.
      encoder_filters: width of the default encoder (unused with ``encoder``).
      train_encoder: False freezes the encoder (``trainable=False``, inference
        mode, no gradient through h); see ``EmbeddingConditionedPixelCNN``.

    Attributes:
      encoder, decoder: the two halves; ``head`` and ``image_shape`` are the
      decoder's. ``conditioned`` is False: the model takes images alone (its
      condition comes from them), which is how the trainers' loop calls it.

    Example:
      model = PixelCNNAutoEncoder((8, 8, 1), bottleneck_dim=10, num_layers=2, filters=32)
      model.compile(optimizer="adam")
      model.fit(images, batch_size=32, epochs=10)     # loss: bits/dim of x given h(x)
      codes = model.encode(images[:4])                 # float32 [4, 10]
      recons = model.reconstruct(images[:4], num_samples_per_image=3, seed=0)  # uint8 [4, 3, 8, 8, 1]
    """

    def __init__(
        self,
        image_shape,
        bottleneck_dim,
        encoder=None,
        num_layers=8,
        filters=64,
        kernel_size=5,
        head="softmax",
        num_mixtures=5,
        spatial_condition=False,
        dropout=0.0,
        skip_connections=False,
        dilation_rates=None,
        encoder_filters=32,
        train_encoder=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        bottleneck_dim = check_positive_int(bottleneck_dim, "bottleneck_dim")
        encoder_filters = check_positive_int(encoder_filters, "encoder_filters")
        # The decoder checks image_shape and its own options (messages name the argument).
        self.decoder = ConditionalPixelCNN(
            image_shape,
            num_layers=num_layers,
            filters=filters,
            kernel_size=kernel_size,
            head=head,
            num_mixtures=num_mixtures,
            condition_shape=(bottleneck_dim,),
            spatial_condition=spatial_condition,
            dropout=dropout,
            skip_connections=skip_connections,
            dilation_rates=dilation_rates,
            dtype=self.dtype_policy,
            name="decoder",
        )
        self.image_shape = self.decoder.image_shape
        self.bottleneck_dim = bottleneck_dim
        self.encoder_filters = encoder_filters
        self.train_encoder = bool(train_encoder)
        if encoder is None:
            encoder = default_encoder(self.image_shape, bottleneck_dim, encoder_filters, dtype=self.dtype_policy)
        elif not isinstance(encoder, keras.Model):
            raise ValueError(
                f"encoder: expected None or a keras.Model mapping images [batch, "
                f"{', '.join(map(str, self.image_shape))}] to [batch, {bottleneck_dim}], got {type(encoder).__name__}."
            )
        check_vector_output_shape(encoder, self.image_shape, "encoder", dim=bottleneck_dim)
        if not self.train_encoder:
            encoder.trainable = False
        self.encoder = encoder
        self.head = self.decoder.head
        self.conditioned = False
        self.build()

    @property
    def spatial_condition(self):
        return self.decoder.spatial_condition

    def build(self, input_shape=None):
        """Builds an unbuilt encoder by a symbolic pass (a functional one is built); the decoder built itself."""
        if not self.encoder.built:
            self._encode(keras.KerasTensor((None,) + self.image_shape, dtype="float32"))
        self.built = True

    # -- forward pass -----------------------------------------------------------------

    def _encode(self, images, training=None):
        x = ops.cast(images, "float32")
        if self.train_encoder:
            return ops.cast(self.encoder(x, training=training), "float32")
        return ops.stop_gradient(ops.cast(self.encoder(x, training=False), "float32"))

    def _check_inputs(self, images, condition, name="inputs"):
        """Raises ValueError unless the inputs are images [B, H, W, C] alone."""
        if condition is not None:
            raise ValueError(
                f"{name}: the auto-encoder takes images alone (its condition is encoder(images)), got a pair."
            )
        check_images(images, self.image_shape)

    def call(self, inputs, training=None):
        """Images [B, H, W, C] (integers 0..255) -> the decoder's head parameters given h = encoder(images)."""
        images, condition = split_inputs(inputs)
        self._check_inputs(images, condition)
        return self.decoder((images, self._encode(images, training)), training=training)

    def encode(self, images):
        """The code of each image: uint8 (or integer-valued) images [B, H, W, C] -> float32 [B, D]."""
        check_images(images, self.image_shape)
        return self._encode(images, training=False)

    # -- likelihood ---------------------------------------------------------------------

    def log_prob(self, images):
        """log p(x | h(x)) in nats of each image: [B, H, W, C] -> float32 [B]."""
        check_images(images, self.image_shape)
        return self.head.log_prob(self(images, training=False), images)

    def bits_per_dim(self, images):
        """-log p(x | h(x)) in bits per sub-pixel of each image -> float32 [B]."""
        check_images(images, self.image_shape)
        return self.per_image_bits_per_dim(images)

    # -- sampling -----------------------------------------------------------------------

    def sample(self, condition, temperature=1.0, seed=None, **kwargs):
        """New images for given codes: ``decoder.sample(condition=condition, ...)``.

        Args:
          condition: float [B, D] codes h (e.g. from ``encode``).
          temperature: > 0.
          seed: int, two ints, or None; the same seed gives the same images.
          **kwargs: passed on to ``ConditionalPixelCNN.sample``.

        Returns:
          uint8 [B, H, W, C].
        """
        return self.decoder.sample(condition=condition, temperature=temperature, seed=seed, **kwargs)

    def reconstruct(self, images, num_samples_per_image=1, temperature=1.0, seed=None, jit_compile=None):
        """Sampled conditional reconstructions: draws from p(x | h(images)).

        Args:
          images: [B, H, W, C] integers 0..255.
          num_samples_per_image: n >= 1 draws per image.
          temperature: > 0.
          seed: int, two ints, or None. All draws come from one batch
            (image-major), so ``reconstruct(images, 1, t, s)[:, 0]`` equals the
            exported ``reconstruct`` signature's images for seed s (an export
            with the same ``jit_compile``).
          jit_compile: None (auto: XLA), True or False; as in ``ConditionalPixelCNN.sample``.

        Returns:
          uint8 [B, n, H, W, C].
        """
        num = _check_positive_int(num_samples_per_image, "num_samples_per_image")
        codes = np.asarray(self.encode(images))
        samples = self.sample(
            np.repeat(codes, num, axis=0), temperature=temperature, seed=seed, jit_compile=jit_compile
        )
        return ops.reshape(samples, (codes.shape[0], num) + self.image_shape)

    def interpolate(
        self, image_a, image_b, steps, num_samples_per_step=1, temperature=1.0, seed=None, jit_compile=None
    ):
        """Samples along the line between two images' codes (paper Figure 5).

        Args:
          image_a, image_b: [H, W, C] or [1, H, W, C] images (integers 0..255).
          steps: int >= 2, codes from h(image_a) to h(image_b), end points included.
          num_samples_per_step: n >= 1 draws per code.
          temperature: > 0.
          seed: int, two ints, or None (one batch of steps * n draws).
          jit_compile: None (auto: XLA), True or False; as in ``ConditionalPixelCNN.sample``.

        Returns:
          (images uint8 [steps, n, H, W, C], codes float32 [steps, D]): row t
          holds the samples for codes[t]; codes[0] == h(image_a) and
          codes[-1] == h(image_b) exactly.
        """
        num = _check_positive_int(num_samples_per_step, "num_samples_per_step")
        ends = []
        for name, image in (("image_a", image_a), ("image_b", image_b)):
            image = np.asarray(image)
            if image.shape == self.image_shape:
                image = image[None]
            check_images(image, self.image_shape, name=name)
            if image.shape[0] != 1:
                raise ValueError(f"{name}: expected one image, got a batch of {image.shape[0]}.")
            ends.append(np.asarray(self.encode(image))[0])
        codes = interpolation_conditions(ends[0], ends[1], steps)
        samples = self.sample(
            np.repeat(codes, num, axis=0), temperature=temperature, seed=seed, jit_compile=jit_compile
        )
        return ops.reshape(samples, (len(codes), num) + self.image_shape), codes

    # -- serialization ------------------------------------------------------------------

    def get_config(self):
        decoder = self.decoder
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "image_shape": self.image_shape,
            "bottleneck_dim": self.bottleneck_dim,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_layers": decoder.num_layers,
            "filters": decoder.filters,
            "kernel_size": decoder.kernel_size,
            "head": decoder.head.name,
            "num_mixtures": decoder.num_mixtures,
            "spatial_condition": decoder.spatial_condition,
            "dropout": decoder.dropout,
            "skip_connections": decoder.skip_connections,
            "dilation_rates": list(decoder.dilation_rates),
            "encoder_filters": self.encoder_filters,
            "train_encoder": self.train_encoder,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**deserialized_config(config, "encoder", "embedding_model"))


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class EmbeddingConditionedPixelCNN(PixelCNNAutoEncoder):
    """p(x | h) with h = f(x) from a frozen embedding network (paper section 3.3).

    A ``PixelCNNAutoEncoder`` whose encoder is ``embedding_model``, frozen
    (``trainable=False``, called in inference mode, no gradient through h):
    only the decoder learns. ``reconstruct`` draws new images for an image's
    embedding; ``interpolate`` draws along the line between two embeddings.

    Args:
      image_shape: (H, W, C) of the images.
      embedding_model: a Keras model mapping float32 images [B, H, W, C]
        (values 0..255) to vectors [B, D]; D is read from it. The model is
        frozen in place and becomes part of this one (saved with it).
      num_layers, filters, kernel_size, head, num_mixtures, spatial_condition,
        dropout, skip_connections, dilation_rates: the decoder's options.
    """

    def __init__(self, image_shape, embedding_model, **kwargs):
        image_shape = check_image_shape(image_shape)
        bottleneck_dim = check_vector_output_shape(embedding_model, image_shape, "embedding_model")
        for key in ("bottleneck_dim", "encoder", "encoder_filters", "train_encoder"):
            kwargs.pop(key, None)  # fixed by the embedding model (tolerated in configs)
        super().__init__(image_shape, bottleneck_dim, encoder=embedding_model, train_encoder=False, **kwargs)

    @property
    def embedding_model(self):
        return self.encoder

    def get_config(self):
        config = super().get_config()
        config["embedding_model"] = config.pop("encoder")
        for key in ("bottleneck_dim", "encoder_filters", "train_encoder"):
            config.pop(key)
        return config
