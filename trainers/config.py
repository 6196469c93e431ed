"""TrainConfig: every setting of a training run, and the paper's presets.

A run is ``train_lib.train_and_evaluate(config, model_dir, strategy)``; the
binary ``trainers.train`` only turns flags into a TrainConfig (a preset, then
the flags given explicitly). Where the run happens (model_dir, the
tf.distribute strategy, devices) is not part of the config.

``<model_dir>/run_config.json`` is ``TrainConfig.to_json()``; an older or
partial file loads with the defaults for missing keys.
"""

import collections
import dataclasses
import json
import os
from typing import Optional

from keras_pixelcnn.heads import HEADS
from trainers.precision import PRECISIONS as MIXED_PRECISIONS  # auto: resolved in trainers/precision.py

CONDITIONINGS = ("none", "class", "autoencoder", "embedding")
LR_SCHEDULES = ("constant", "exponential", "cosine")


def setting(default, help, choices=None):
    """A TrainConfig field with its flag's help (and choices): trainers/config_flags.py defines the flags from them."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of one training run: the flags of ``trainers.train`` are made from these fields.

    Each field holds its default and its flag's help (``setting``); config_flags.py defines
    the flags, so a setting's name, type, default and help are written once.

    Data:
      dataset: ``digits`` (embedded), a tfds image data set name, ``npz:PATH``
        or ``folder:PATH`` (see trainers/data.py).
      data_dir: tfds data directory (None: tfds's default).
      num_classes: classes of an npz/folder data set (None: max label + 1).
      num_categories: K for npz data of integer codes in [0, K) (None: 8-bit images).
      latents: a trainers.train_vqvae directory whose VQ-VAE's codes are the data (dataset unused).

    Model:
      conditioning: none | class | autoencoder | embedding.
      bottleneck_dim: size of the code h (conditioning=autoencoder).
      embedding_model: a .keras model mapping images to vectors (conditioning=embedding).
      spatial_condition: location-dependent conditioning s = m(h).
      num_layers, filters, kernel_size, head, num_mixtures, dropout: the PixelCNN.
        num_layers and kernel_size None (the defaults) size the trunk to the
        images (``resolve_trunk``): 6 layers of 3x3 when they see the whole
        image height (images up to 8 rows, such as the embedded digits), else
        8 layers of 5x5. filters None (the default) is DEFAULT_FILTERS, rounded up
        to a multiple of the image channels for the softmax head, whose colour
        masks need one feature group per channel (``resolve_filters``): 32 for
        grey and RGBA images, 33 for RGB.
      dilation_rates: auto (the default) | none (the paper's trunk) | one int
        per layer ("1,2,4,1,2,4"); auto: none when the undilated stack sees the
        whole image height, else rates 1, 2, 4, ... cycled until it does
        (``resolve_dilation_rates``).

    The defaults were chosen with bench/quality.py (BUILD_NOTES.md, "Quality per
    wall-clock"): dropout 0.3 and AdamW with weight decay 0.3 because on small
    data sets such as the embedded digits a run of a few minutes is hundreds of
    epochs, and without both regularisers the test bits/dim rises after the
    first minute; a cosine decay over train_steps from 5e-3 with the gradient
    norm clipped to 1 (no evaluation spikes); and the sized trunk, whose 28x28
    samples are mostly recognisably their class where 6 x 3x3 draws fragments.
    The paper presets set their own.

    Optimisation:
      batch_size (global), learning_rate, lr_schedule, lr_decay_rate,
      train_steps, ema_decay (0: off), weight_decay (AdamW's decoupled decay; 0: Adam),
      clip_norm (0: off), mixed_precision
      (auto: bfloat16 / float16 where the hardware has it, see trainers/precision.py),
      jit_compile, seed.

    Evaluation and logging:
      eval_every (steps; also the checkpoint interval and one Keras "epoch"),
      eval_examples (0: the whole test split), samples_per_class (grids; 0: none),
      log_every.

    Provenance:
      config: the preset this config started from, if any.
    """

    dataset: str = setting(
        "digits",
        "Data set: the embedded 'digits' (no network), a tfds image data set name (read from --data_dir), "
        "npz:PATH (a .npz with 'images' [N, H, W(, C)] 0..255, optional 'labels', 'test_images', 'test_labels') "
        "or folder:PATH (image files of one size, a subfolder per class; train/ and test/ if present).",
    )
    data_dir: Optional[str] = setting(None, "tfds data directory (default: tfds's own, ~/tensorflow_datasets).")
    num_classes: Optional[int] = setting(None, "npz:/folder: data: the number of classes (default: max label + 1).")
    num_categories: Optional[int] = setting(
        None,
        "Model grids of integer codes in [0, K) instead of 8-bit images (npz:PATH data whose 'images' are codes, "
        "e.g. a VQ-VAE's or another tokenizer's; the softmax head).",
    )
    latents: Optional[str] = setting(
        None,
        "A trainers.train_vqvae directory: train a prior on its VQ-VAE's codes of its data set (labels kept; "
        "num_categories is the codebook's size); sample grids are decoded through the VQ-VAE.",
    )
    conditioning: str = setting(
        "class",
        "What the model is conditioned on: nothing, the class label, its own code h = encoder(x) (a PixelCNN "
        "auto-encoder), or the embedding h = f(x) of the frozen --embedding_model.",
        CONDITIONINGS,
    )
    bottleneck_dim: int = setting(10, "--conditioning=autoencoder: size of the code h (the paper used 10 and 100).")
    embedding_model: Optional[str] = setting(
        None,
        "--conditioning=embedding: a saved Keras model (.keras) mapping float32 images [B, H, W, C] with values "
        "0..255 to vectors [B, D]; frozen, and saved as part of the trained model.",
    )
    spatial_condition: bool = setting(
        False, "Location-dependent conditioning: map h (or the class) to s = m(h) (paper eq. 5)."
    )
    num_layers: Optional[int] = setting(
        None, "Gated layers (default: sized to the images, 6 up to 8 rows high, else 8)."
    )
    filters: Optional[int] = setting(
        None,
        "Features per layer, a multiple of C for the softmax head (default: 32 rounded up to a multiple of C, "
        "33 for RGB).",
    )
    kernel_size: Optional[int] = setting(
        None, "Odd filter size n >= 3 (default: 3 for images up to 8 rows high, else 5)."
    )
    dilation_rates: str = setting(
        "auto",
        "auto (rates 1, 2, 4, ... only when the undilated vertical stack cannot see the whole image height), "
        "none (the paper's trunk), or one int per layer, e.g. 1,2,4,1,2,4.",
    )
    head: str = setting("softmax", "Output distribution.", HEADS)
    num_mixtures: int = setting(5, "Logistic mixture components.")
    dropout: float = setting(0.3, "Dropout rate inside each layer.")
    batch_size: int = setting(32, "Global batch size (split over replicas).")
    learning_rate: float = setting(5e-3, "Peak learning rate of Adam (AdamW with --weight_decay).")
    lr_schedule: str = setting("cosine", "Learning-rate schedule.", LR_SCHEDULES)
    lr_decay_rate: float = setting(0.99995, "Per-step decay factor of the exponential schedule.")
    train_steps: int = setting(2000, "Total optimizer steps.")
    eval_every: int = setting(250, "Evaluate, sample and checkpoint every this many steps.")
    eval_examples: int = setting(0, "Evaluate on at most this many test images (0: all).")
    samples_per_class: int = setting(
        8,
        "Samples per class (or per grid row; per test image for the autoencoder and embedding conditionings) at "
        "each evaluation; 0: none.",
    )
    log_every: int = setting(50, "Training summaries and log lines every this many steps.")
    ema_decay: float = setting(0.0, "Polyak averaging of the weights (e.g. 0.9995); 0 disables.")
    weight_decay: float = setting(0.3, "AdamW's decoupled weight decay (scaled by the learning rate); 0: Adam.")
    clip_norm: float = setting(1.0, "Clip the global gradient norm to this value; 0 disables.")
    mixed_precision: str = setting(
        "auto",
        "Compute dtype: auto picks bfloat16 on CPUs with AVX512_BF16/AMX and GPUs of compute capability >= 8.0, "
        "float16 (with loss scaling) on 7.x GPUs, else none (float32).",
        MIXED_PRECISIONS,
    )
    jit_compile: bool = setting(
        False,
        "XLA-compile the work: the training step's forward and backward pass (trainers.train), or the sampling "
        "loop of the exported signatures (export.export; needs a server started with XLA enabled).",
    )
    seed: int = setting(0, "Seed of initialisation, data order and samples.")
    config: Optional[str] = None  # provenance, not a flag: trainers.train's --config picks the preset

    def replace(self, **changes):
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def validate(self):
        """Checks every field on its own (no data read); returns self.

        Raises:
          ValueError: the first bad field, named at the start of the message.
        """
        from keras_pixelcnn.validation import is_int
        from trainers import data

        for name in ("train_steps", "eval_every", "log_every", "num_mixtures", "bottleneck_dim"):
            _check_int(self, name, minimum=1)
        for name in ("num_layers", "filters"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=1)
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(
                f"batch_size: the global batch must split evenly over the replicas: expected an int >= 1, "
                f"got {self.batch_size!r}."
            )
        for name in ("eval_examples", "samples_per_class", "seed"):
            _check_int(self, name, minimum=0)
        if self.num_classes is not None:
            _check_int(self, "num_classes", minimum=1)
        if self.num_categories is not None:
            _check_int(self, "num_categories", minimum=2)
            if self.conditioning not in ("none", "class"):
                raise ValueError(
                    f"num_categories: code grids train with conditioning=none or class, got {self.conditioning}."
                )
        if self.latents is not None and self.conditioning not in ("none", "class"):
            raise ValueError(f"latents: code grids train with conditioning=none or class, got {self.conditioning}.")
        if self.kernel_size is not None and (
            not is_int(self.kernel_size) or self.kernel_size < 3 or self.kernel_size % 2 == 0
        ):
            raise ValueError(f"kernel_size: expected an odd number >= 3, got {self.kernel_size!r}.")
        for name, choices in (("conditioning", CONDITIONINGS), ("head", HEADS), ("lr_schedule", LR_SCHEDULES),
                              ("mixed_precision", MIXED_PRECISIONS)):  # fmt: skip
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}: expected one of {list(choices)}, got {getattr(self, name)!r}.")
        resolve_dilation_rates(self.dilation_rates, 1, self.num_layers, self.kernel_size or 3)  # its format
        _check_number(self, "learning_rate", lambda v: v > 0, "a number > 0")
        _check_number(self, "clip_norm", lambda v: v >= 0, "a number >= 0")
        _check_number(self, "weight_decay", lambda v: v >= 0, "a number >= 0")
        _check_number(self, "ema_decay", lambda v: 0 <= v < 1, "a value in [0, 1)")
        _check_number(self, "dropout", lambda v: 0 <= v < 1, "a rate in [0, 1)")
        _check_number(self, "lr_decay_rate", lambda v: 0 < v <= 1, "a factor in (0, 1]")
        if self.conditioning == "embedding" and not self.embedding_model:
            raise ValueError("embedding_model: required with conditioning=embedding (a .keras file).")
        if self.conditioning != "embedding" and self.embedding_model:
            raise ValueError(
                f"embedding_model: only used with conditioning=embedding, got conditioning={self.conditioning}."
            )
        if self.spatial_condition and self.conditioning == "none":
            raise ValueError("spatial_condition: needs a condition to map; got conditioning=none.")
        if self.config is not None and self.config not in PRESETS:
            raise ValueError(f"config: expected None or one of {sorted(PRESETS)}, got {self.config!r}.")
        data.check_dataset_name(self.dataset)
        return self

    def with_absolute_paths(self):
        """A copy whose local file paths (embedding model, npz/folder data, data_dir) are absolute."""
        from trainers.data import absolute_dataset

        return self.replace(
            dataset=absolute_dataset(self.dataset),
            data_dir=_absolute(self.data_dir),
            embedding_model=_absolute(self.embedding_model),
            latents=_absolute(self.latents),
        )

    def to_json(self, path=None, **notes):
        """The config as JSON text; also written (atomically, any tf.io.gfile path) to ``path`` if given.

        ``notes`` are recorded beside the fields (e.g. what a run resolved); from_json ignores them.
        """
        text = json.dumps({**dataclasses.asdict(self), **notes}, indent=2, sort_keys=True) + "\n"
        if path is not None:
            from trainers.model_dir import atomic_write

            atomic_write(path, text)
        return text

    @classmethod
    def from_json(cls, text_or_path):
        """A TrainConfig from JSON text or a JSON file (any tf.io.gfile path).

        Missing keys take their defaults (older or partial run_config.json files),
        except the fields added later, which take the value every older run used
        (``weight_decay`` 0: those runs used Adam); keys that are not fields (notes
        a run added) are ignored; null values of non-optional fields count as missing.
        """
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            import tensorflow as tf

            with tf.io.gfile.GFile(text_or_path) as handle:
                text = handle.read()
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"run config: expected a JSON object, got {type(values).__name__}.")
        defaults = cls()
        known = dict(_BEFORE_THE_FIELD_EXISTED)
        for field in dataclasses.fields(cls):
            if field.name in values and (values[field.name] is not None or getattr(defaults, field.name) is None):
                known[field.name] = values[field.name]
        return cls(**known)


@dataclasses.dataclass(frozen=True)
class VQVAEConfig:
    """The settings of a VQ-VAE run (the --vq_ flags of ``trainers.train_vqvae``; trainers/vqvae_lib.py)."""

    dataset: str = setting("digits", "Data set, as trainers.train's --dataset (its labels are kept for the prior).")
    data_dir: Optional[str] = setting(None, "tfds data directory (default: tfds's own).")
    num_embeddings: int = setting(64, "K, the codebook's size: the prior's num_categories.")
    embedding_dim: int = setting(16, "D, the size of each code vector.")
    filters: int = setting(64, "Width of the encoder's and decoder's convolutions.")
    downsample: Optional[int] = setting(
        None, "Stride-2 stages: codes are 2^n times smaller per side (default: 1 up to 8 rows, else 2)."
    )
    decoder_likelihood: str = setting(
        "mse", "The decoder's reconstruction loss (keras_pixelcnn.VQVAE): mse or logistic.", ("mse", "logistic")
    )
    epochs: int = setting(20, "Passes over the training images.")
    batch_size: int = setting(64, "Batch size.")
    learning_rate: float = setting(2e-3, "Adam's learning rate.")
    seed: int = setting(0, "Seed of initialisation and data order.")

    def resolved_downsample(self, image_shape):
        return self.downsample if self.downsample is not None else (1 if image_shape[0] <= 8 else 2)


# Fields added after run_config.json files were first written -> the value every run before them used.
_BEFORE_THE_FIELD_EXISTED = {"weight_decay": 0.0, "dilation_rates": "none"}

DEFAULT_FILTERS = 32  # features per layer when filters is None (resolve_filters)


def resolve_filters(config, image_shape):
    """config.filters, or for None DEFAULT_FILTERS rounded up to what ``config.head`` needs on ``image_shape``.

    The softmax head's colour masks split the features into one group per image channel, so its
    width must be a multiple of C (33 for RGB); the mixture head's masks work on whole pixels.
    """
    if config.filters is not None:
        return config.filters
    from keras_pixelcnn.heads import make_head, mask_color_groups

    groups = mask_color_groups(make_head(config.head, image_shape[-1], config.num_mixtures, config.num_categories))
    return -(-DEFAULT_FILTERS // groups) * groups


Trunk = collections.namedtuple("Trunk", "num_layers kernel_size dilation_rates")
SMALL_TRUNK = (6, 3)  # (num_layers, kernel_size) for images its vertical stack sees whole: up to 8 rows
LARGE_TRUNK = (8, 5)  # for taller images, with dilation_rates=auto: 28x28 digits, see BUILD_NOTES.md


def resolve_trunk(config, image_height):
    """config's num_layers, kernel_size and dilation_rates for images ``image_height`` rows high -> a Trunk.

    A None num_layers or kernel_size takes SMALL_TRUNK's value when those layers' undilated
    vertical stack reaches the top row (1 + (n // 2) * layers >= image_height - 1: images up to
    8 rows), else LARGE_TRUNK's, whose 5x5 taps and 8 layers, dilated by dilation_rates=auto,
    let a 28x28 model place a stroke relative to the whole digit (BUILD_NOTES.md, "A trunk for
    28x28"). Values given explicitly are kept; dilation_rates is resolved last, for the trunk's
    num_layers and kernel_size (``resolve_dilation_rates``).
    """
    layers, kernel = SMALL_TRUNK
    if vertical_reach(kernel, (1,) * layers) < image_height - 1:
        layers, kernel = LARGE_TRUNK
    num_layers = layers if config.num_layers is None else config.num_layers
    kernel_size = kernel if config.kernel_size is None else config.kernel_size
    rates = resolve_dilation_rates(config.dilation_rates, image_height, num_layers, kernel_size)
    return Trunk(num_layers, kernel_size, rates)


def vertical_reach(kernel_size, rates):
    """Rows above a pixel that the last layer's vertical link sees: the link's shift, then n // 2 per unit of rate."""
    return 1 + kernel_size // 2 * sum(rates)


def resolve_dilation_rates(dilation_rates, image_height, num_layers, kernel_size):
    """TrainConfig.dilation_rates for images ``image_height`` rows high -> one int >= 1 per layer.

    "none" is the paper's trunk (every rate 1). "auto" keeps it when its bottom row can see the
    top row, that is when the vertical stack's reach (``vertical_reach``: 1 + (n // 2) * sum(rates)
    rows) is at least image_height - 1; otherwise it takes
    the shortest cycle 1, 2, ..., 2^k (repeated over the layers) that reaches, never a rate of
    image_height or more. So the embedded 8x8 digits keep the undilated trunk, while 28x28
    images get 1, 2, 4, 1, 2, 4, 1, 2 with 8 layers of 5x5.

    Raises:
      ValueError: not auto, none or ``num_layers`` comma-separated ints >= 1 (any number of
        them when num_layers is None: the format alone is checked, and "auto" and "none"
        return None).
    """
    if dilation_rates in ("none", "auto") and num_layers is None:
        return None
    if dilation_rates == "none":
        return (1,) * num_layers
    if dilation_rates != "auto":
        try:
            rates = tuple(int(rate) for rate in str(dilation_rates).split(","))
        except ValueError:
            rates = ()
        if not rates or min(rates) < 1 or num_layers not in (None, len(rates)):
            count, layers = ("", "") if num_layers is None else (f"{num_layers} ", f", num_layers={num_layers}")
            raise ValueError(
                f"dilation_rates: expected auto, none or {count}comma-separated ints >= 1 (one per layer{layers}), "
                f"got {dilation_rates!r}."
            )
        return rates
    cycle = 1
    while True:
        rates = tuple(2 ** (layer % cycle) for layer in range(num_layers))
        if vertical_reach(kernel_size, rates) >= image_height - 1 or 2**cycle >= image_height:
            return rates
        cycle += 1


def _check_int(config, name, minimum):
    from keras_pixelcnn.validation import check_int  # the library's one integer check (and its wording)

    check_int(getattr(config, name), name, minimum)


def _check_number(config, name, is_valid, expected):
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not is_valid(value):
        raise ValueError(f"{name}: expected {expected}, got {value!r}.")


def _absolute(path):
    """``path`` made absolute when it is a local path (URLs such as gs://... are kept)."""
    if not path or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


# The paper (van den Oord et al. 2016) gives one architecture (20 layers, 384 units,
# 5x5) and batch 128 for its ImageNet runs; it does not state the optimizer's
# settings: Adam with PixelCNN++'s per-step decay and Polyak averaging.
_PAPER = dict(
    num_layers=20, filters=384, kernel_size=5, batch_size=128, conditioning="none", head="softmax",
    learning_rate=1e-3, lr_schedule="exponential", lr_decay_rate=0.999995, ema_decay=0.9995, train_steps=200_000,
    eval_every=5000, samples_per_class=0, dropout=0.0, weight_decay=0.0, clip_norm=0.0, dilation_rates="none",
)  # fmt: skip
PRESETS = {
    "cifar10": TrainConfig(**{**_PAPER, "dropout": 0.5}, dataset="cifar10", config="cifar10"),  # paper: 3.03 bits/dim
    "imagenet32": TrainConfig(**_PAPER, dataset="downsampled_imagenet/32x32", config="imagenet32"),  # paper: 3.83
    "imagenet64": TrainConfig(**_PAPER, dataset="downsampled_imagenet/64x64", config="imagenet64"),  # paper: 3.57
}
