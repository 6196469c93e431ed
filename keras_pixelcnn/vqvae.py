"""A VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning"): images <-> grids of codes.

The encoder maps images [B, H, W, C] to vectors z_e [B, h, w, D] (h = H / 2^n for
n stride-2 stages); the quantiser replaces each by its nearest codebook entry
e_k, so an image becomes a grid of codes k in [0, K); the decoder maps the
quantised vectors back to images. A ConditionalPixelCNN with ``num_categories=K``
is the prior over the grids.

Training (paper eq. 3, with the appendix's EMA codebook):
  loss = ||x - decode(z_q)||^2 + beta ||z_e - sg(z_q)||^2
with the straight-through gradient z_q -> z_e, and the codebook updated not by
gradients but as exponential moving averages of the vectors assigned to each
code (decay gamma). A code unused for long (its EMA count below
``restart_below``) is restarted at a random encoder output of the batch, so the
whole codebook stays in use. Codes used in a batch move toward their vectors;
unused ones do not move unless restarted.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_pixelcnn.heads import discretized_logistic_mixture_log_prob
from keras_pixelcnn.likelihood_model import OptimizerBuiltFirst
from keras_pixelcnn.model import deserialized_config
from keras_pixelcnn.sampling import compiled_function
from keras_pixelcnn.validation import check_image_shape, check_images, check_int, check_positive_int, check_rate

DECODER_LIKELIHOODS = ("mse", "logistic")


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class VectorQuantizer(keras.layers.Layer):
    """Nearest-codebook quantisation with straight-through gradients and an EMA codebook.

    Args:
      num_embeddings: K, the codes.
      embedding_dim: D, the vectors' size.
      commitment_cost: beta of the commitment loss (added to ``losses`` in every call).
      decay: gamma of the codebook's moving averages, in [0, 1).
      restart_below: a code whose EMA count falls below this is restarted (training only); 0 never.
      epsilon: Laplace smoothing of the counts.

    Call:
      ``quantizer(z_e, training=None)`` with z_e [..., D] -> (z_q [..., D] with the
      straight-through gradient, codes int32 [...]).
    """

    def __init__(self, num_embeddings, embedding_dim, commitment_cost=0.25, decay=0.99, restart_below=0.01,
                 epsilon=1e-5, seed=None, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.num_embeddings = check_int(num_embeddings, "num_embeddings", 2)
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
        self.commitment_cost = float(commitment_cost)
        self.decay = check_rate(decay, "decay")
        self.restart_below, self.epsilon, self.seed = float(restart_below), float(epsilon), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        shape = (self.num_embeddings, self.embedding_dim)
        self.codebook = self.add_weight(name="codebook", shape=shape, initializer="glorot_uniform", trainable=False)
        self.ema_count = self.add_weight(name="ema_count", shape=shape[:1], initializer="zeros", trainable=False)
        self.ema_sum = self.add_weight(name="ema_sum", shape=shape, initializer="zeros", trainable=False)

    def codes(self, z_e):
        """The nearest code of each vector: [..., D] -> int32 [...]."""
        flat = ops.reshape(ops.cast(z_e, "float32"), (-1, self.embedding_dim))
        codebook = self.codebook.value
        distances = (
            ops.sum(flat**2, axis=1, keepdims=True) - 2.0 * ops.matmul(flat, ops.transpose(codebook))
            + ops.sum(codebook**2, axis=1)[None, :]
        )  # fmt: skip
        return ops.reshape(ops.cast(ops.argmin(distances, axis=1), "int32"), ops.shape(z_e)[:-1])

    def lookup(self, codes):
        """Codes int [...] -> their codebook vectors [..., D]."""
        return ops.take(self.codebook.value, ops.cast(codes, "int32"), axis=0)

    def call(self, z_e, training=None):
        codes = self.codes(z_e)
        if training:
            self._update_codebook(ops.reshape(ops.cast(z_e, "float32"), (-1, self.embedding_dim)), codes)
        z_q = ops.cast(self.lookup(codes), z_e.dtype)
        self.add_loss(self.commitment_cost * ops.mean((z_e - ops.stop_gradient(z_q)) ** 2))
        return z_e + ops.stop_gradient(z_q - z_e), codes

    def _update_codebook(self, flat, codes):
        """EMA step (paper appendix A.1) for the codes used in this batch; restarts of long-unused codes."""
        one_hot = ops.one_hot(ops.reshape(codes, (-1,)), self.num_embeddings, dtype="float32")  # [N, K]
        counts = ops.sum(one_hot, axis=0)
        gamma = self.decay
        ema_count = gamma * self.ema_count.value + (1.0 - gamma) * counts
        ema_sum = gamma * self.ema_sum.value + (1.0 - gamma) * ops.matmul(ops.transpose(one_hot), flat)
        total = ops.sum(ema_count)
        smoothed = (ema_count + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        used = (counts > 0)[:, None]
        codebook = ops.where(used, ema_sum / smoothed[:, None], self.codebook.value)
        if self.restart_below > 0:  # long-unused codes restart at random vectors of this batch
            dead = ema_count < self.restart_below
            picks = keras.random.randint((self.num_embeddings,), 0, ops.shape(flat)[0], seed=self.seed_generator)
            fresh = ops.take(flat, picks, axis=0)
            codebook = ops.where(dead[:, None], fresh, codebook)
            ema_sum = ops.where(dead[:, None], fresh, ema_sum)
            ema_count = ops.where(dead, 1.0, ema_count)
        self.ema_count.assign(ema_count)
        self.ema_sum.assign(ema_sum)
        self.codebook.assign(codebook)

    def get_config(self):
        return {
            **super().get_config(),
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "commitment_cost": self.commitment_cost,
            "decay": self.decay,
            "restart_below": self.restart_below,
            "epsilon": self.epsilon,
            "seed": self.seed,
        }


def _encoder(image_shape, embedding_dim, filters, stages, dtype):
    inputs = keras.Input(image_shape)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, dtype=dtype)(inputs)
    for _ in range(stages):
        x = keras.layers.Conv2D(filters, 4, strides=2, padding="same", activation="relu", dtype=dtype)(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", dtype=dtype)(x)
    outputs = keras.layers.Conv2D(embedding_dim, 1, dtype=dtype)(x)
    return keras.Model(inputs, outputs, name="encoder")


def _decoder(latent_shape, outputs_per_pixel, filters, stages, dtype):
    inputs = keras.Input(latent_shape)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", dtype=dtype)(inputs)
    for _ in range(stages):
        x = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="relu", dtype=dtype)(x)
    outputs = keras.layers.Conv2D(outputs_per_pixel, 3, padding="same", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name="decoder")


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class VQVAE(OptimizerBuiltFirst):
    """A VQ-VAE: ``encode`` images to code grids, ``decode`` code grids to images, ``fit(images)``.

    Args:
      image_shape: (H, W, C); H and W divisible by 2^downsample.
      num_embeddings: K codes.
      embedding_dim: D.
      filters: the convolutions' width.
      downsample: n stride-2 stages: codes [B, H / 2^n, W / 2^n, 1] (28x28 -> 7x7 for n = 2).
      commitment_cost, decay, restart_below: the quantiser's (``VectorQuantizer``).
      decoder_likelihood: the reconstruction term of the loss, one of ``DECODER_LIKELIHOODS``:
        "mse", the mean squared error of the images in [-1, 1] (a fixed-variance
        Gaussian, as in the paper's experiments), or "logistic", the negative
        log-likelihood per sub-pixel of a discretized logistic (a mean and a
        log-scale per sub-pixel; the 256 bins of ``heads.discretized_logistic_mixture_log_prob``).
        Measured in BUILD_NOTES.md ("Code priors"): MSE is the default.

    The loss is the reconstruction term plus the commitment loss. ``model(images)``
    returns the decoder's output [B, H, W, C] (the reconstruction in [-1, 1]), or
    [B, H, W, 2C] for "logistic" (means in [-1, 1], then log-scales).
    ``decode`` returns the reconstruction (the logistic's mean) rounded to uint8.
    """

    def __init__(self, image_shape, num_embeddings=64, embedding_dim=16, filters=64, downsample=2,
                 commitment_cost=0.25, decay=0.99, restart_below=0.01, seed=None, decoder_likelihood="mse",
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.image_shape = check_image_shape(image_shape)
        self.downsample = check_int(downsample, "downsample", 0)
        factor = 2**self.downsample
        if self.image_shape[0] % factor or self.image_shape[1] % factor:
            raise ValueError(
                f"image_shape: height and width must be divisible by 2^downsample={factor}, got {self.image_shape}."
            )
        self.num_embeddings = check_int(num_embeddings, "num_embeddings", 2)
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
        self.filters = check_positive_int(filters, "filters")
        if decoder_likelihood not in DECODER_LIKELIHOODS:
            raise ValueError(f"decoder_likelihood: expected one of {DECODER_LIKELIHOODS}, got {decoder_likelihood!r}.")
        self.decoder_likelihood = decoder_likelihood
        self.code_shape = (self.image_shape[0] // factor, self.image_shape[1] // factor, 1)
        self.encoder = _encoder(self.image_shape, self.embedding_dim, self.filters, self.downsample, self.dtype_policy)
        self.quantizer = VectorQuantizer(
            self.num_embeddings, self.embedding_dim, commitment_cost, decay, restart_below, seed=seed,
            name="quantizer", dtype=self.dtype_policy,
        )  # fmt: skip
        self.quantizer.build(self.code_shape[:2] + (self.embedding_dim,))
        outputs_per_pixel = self.image_shape[-1] * (2 if decoder_likelihood == "logistic" else 1)
        self.decoder = _decoder(self.code_shape[:2] + (self.embedding_dim,), outputs_per_pixel, self.filters,
                                self.downsample, self.dtype_policy)  # fmt: skip
        self._compiled_decode = None  # decode's compiled program, made at its first call
        self.build()

    def build(self, input_shape=None):
        """Every weight exists after __init__ (the shapes follow from the config), as Keras's callbacks expect."""
        self.call(keras.KerasTensor((None,) + self.image_shape, dtype="float32"))
        self.built = True

    def call(self, images, training=None):
        z_q, _ = self.quantizer(self.encoder(images, training=training), training=training)
        return self.decoder(z_q, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        y_pred = ops.cast(y_pred, "float32")
        images = ops.cast(x, "float32")
        if self.decoder_likelihood == "mse":
            loss = ops.mean((y_pred - (images / 127.5 - 1.0)) ** 2)
        else:  # one logistic component per sub-pixel: nats per sub-pixel
            means, log_scales = ops.split(y_pred, 2, axis=-1)
            log_scales = ops.maximum(log_scales, -7.0)  # PixelCNN++'s floor, for finite gradients
            one_component = ops.zeros_like(images[..., :1])
            log_prob = discretized_logistic_mixture_log_prob(
                one_component, means[..., None], log_scales[..., None], images
            )
            loss = -ops.mean(log_prob) / float(np.prod(self.image_shape))
        return sum(self.losses, loss)  # the commitment loss

    def encode(self, images):
        """uint8 images [B, H, W, C] -> int32 codes [B, h, w, 1], what the prior takes."""
        check_images(images, self.image_shape)
        return self.quantizer.codes(self.encoder(images, training=False))[..., None]

    def decode(self, codes):
        """Integer codes [B, h, w, 1] in [0, K) -> uint8 images [B, H, W, C] (rounded, clipped).

        Checked, then compiled (XLA) once per batch size: eager, the decoder took 6.8 ms
        of a 28x28 sample against 1.2 ms (BUILD_NOTES.md, "Priors over discrete codes").
        """
        check_images(codes, self.code_shape, name="codes", num_categories=self.num_embeddings)
        if self._compiled_decode is None:
            self._compiled_decode = compiled_function(self, self.decoded_images, jit_compile=True)
        return self._compiled_decode(ops.convert_to_tensor(codes, "int32"))

    def decoded_images(self, codes):
        """``decode`` without its checks, traceable (what export calls on sampled codes)."""
        decoded = self.decoder(self.quantizer.lookup(codes[..., 0]), training=False)[..., : self.image_shape[-1]]
        return ops.cast(ops.clip(ops.round((ops.cast(decoded, "float32") + 1.0) * 127.5), 0, 255), "uint8")

    def codebook_usage(self, images):
        """{"perplexity": exp(entropy) of the codes' frequencies over ``images``, "used": share of the K codes}."""
        counts = np.bincount(np.asarray(self.encode(images)).reshape(-1), minlength=self.num_embeddings)
        p = counts / counts.sum()
        entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
        return {"perplexity": float(math.exp(entropy)), "used": float(np.mean(counts > 0))}

    def get_config(self):
        quantizer = self.quantizer
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "image_shape": self.image_shape,
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "filters": self.filters,
            "downsample": self.downsample,
            "commitment_cost": quantizer.commitment_cost,
            "decay": quantizer.decay,
            "restart_below": quantizer.restart_below,
            "seed": quantizer.seed,
            "decoder_likelihood": self.decoder_likelihood,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**deserialized_config(config))


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class VQVAEPrior(keras.Model):
    """A trained VQVAE and a PixelCNN prior over its codes, as one model of images (what export serves).

    Args:
      vqvae: the VQVAE.
      prior: a ConditionalPixelCNN or PixelCNN with ``num_categories`` = the VQ-VAE's
        ``num_embeddings`` and ``image_shape`` = its ``code_shape``.

    ``sample`` draws code grids from the prior and decodes them: uint8 images
    [B, H, W, C] (``sample_codes`` returns both). ``log_prob(images, condition)``
    is the prior's log-likelihood of the images' codes (nats per image).
    """

    def __init__(self, vqvae, prior, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(vqvae, VQVAE):
            raise ValueError(f"vqvae: expected a keras_pixelcnn.VQVAE, got {type(vqvae).__name__}.")
        expected = (vqvae.num_embeddings, tuple(vqvae.code_shape))
        if (getattr(prior, "num_categories", None), tuple(getattr(prior, "image_shape", ()))) != expected:
            raise ValueError(
                f"prior: expected a PixelCNN with num_categories={expected[0]} and image_shape={expected[1]} "
                f"(the VQ-VAE's codes), got {type(prior).__name__} with num_categories="
                f"{getattr(prior, 'num_categories', None)} and image_shape={getattr(prior, 'image_shape', None)}."
            )
        self.vqvae, self.prior = vqvae, prior
        self.image_shape = vqvae.image_shape
        self.num_classes, self.condition_shape = prior.num_classes, prior.condition_shape
        self.built = True  # both parts are built models

    def call(self, images, training=None):
        """Images -> the prior's parameters for their codes."""
        return self.prior(self.vqvae.encode(images), training=training)

    def sample_codes(self, num_samples=None, condition=None, temperature=1.0, seed=None, method=None,
                     jit_compile=None):  # fmt: skip
        """(uint8 images [B, H, W, C], int32 codes [B, h, w, 1]); arguments as ``prior.sample``."""
        codes = self.prior.sample(num_samples, condition, temperature, seed, method, jit_compile)
        return self.vqvae.decode(codes), codes

    def sample(self, *args, **kwargs):
        """Decoded samples, uint8 [B, H, W, C]; arguments as ``prior.sample``."""
        return self.sample_codes(*args, **kwargs)[0]

    def log_prob(self, images, condition=None):
        """The prior's log-likelihood in nats of each image's code grid -> float32 [B]."""
        return self.prior.log_prob(self.vqvae.encode(images), condition)

    def get_config(self):
        return {
            "name": self.name,
            "vqvae": keras.saving.serialize_keras_object(self.vqvae),
            "prior": keras.saving.serialize_keras_object(self.prior),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**deserialized_config(config, "vqvae", "prior"))
