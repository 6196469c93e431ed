r"""Trains a (Conditional) Gated PixelCNN: ``python -m trainers.train --model_dir=DIR``.

The flags are the fields of trainers.config.TrainConfig; from Python call
trainers.train_lib.train_and_evaluate(config, model_dir, strategy, callbacks).
With no --dataset it trains a class-conditional model on the embedded 8x8 digits
in a few CPU minutes. Re-running the same command resumes from the last
checkpoint. --conditioning picks what the model is conditioned on:

  none         p(x)
  class        p(x | class label)                           (ConditionalPixelCNN)
  autoencoder  p(x | h), h = encoder(x), trained end to end  (PixelCNNAutoEncoder)
  embedding    p(x | h), h = f(x) from the frozen Keras model --embedding_model
               (EmbeddingConditionedPixelCNN; f is stored in the trained model)

--dataset takes digits, a tfds name, npz:PATH or folder:PATH (trainers/data.py).
--spatial_condition maps h (or the class) to a location-dependent map s = m(h).
Examples:

    python -m trainers.train --model_dir=/tmp/digits
    python -m trainers.train --conditioning=autoencoder --bottleneck_dim=10 --model_dir=/tmp/ae
    python -m trainers.train --conditioning=embedding --embedding_model=embed.keras --model_dir=/tmp/emb
    python -m trainers.train --config=cifar10 --model_dir=/tmp/cifar --strategy=mirrored
    TF_CONFIG=... python -m trainers.train --config=imagenet32 --strategy=multi_worker --model_dir=gs://...

Paper (van den Oord et al. 2016) bits/dim to compare against: CIFAR-10 3.03,
ImageNet 32x32 3.83, ImageNet 64x64 3.57 (20 layers, 384 units, 5x5 filters,
batch 128, 200K synchronous updates on 32 GPUs).
"""

import dataclasses

from absl import flags, logging

from trainers import binary, common_flags  # noqa: F401  (--model_dir, --dataset, --seed, ...)
from trainers.config import CONDITIONINGS, HEADS, LR_SCHEDULES, MIXED_PRECISIONS, PRESETS, TrainConfig

FLAGS = flags.FLAGS
DEFAULTS = TrainConfig()

flags.DEFINE_enum("config", None, sorted(PRESETS), "A preset (trainers/config.py); explicit flags override it.")
flags.DEFINE_integer("num_classes", None, "npz:/folder: data: the number of classes (default: max label + 1).")
flags.DEFINE_enum(
    "conditioning",
    DEFAULTS.conditioning,
    CONDITIONINGS,
    "What the model is conditioned on: nothing, the class label, its own code h = encoder(x) (a PixelCNN "
    "auto-encoder), or the embedding h = f(x) of the frozen --embedding_model.",
)
flags.DEFINE_integer(
    "bottleneck_dim",
    DEFAULTS.bottleneck_dim,
    "--conditioning=autoencoder: size of the code h (the paper used 10 and 100).",
)
flags.DEFINE_string(
    "embedding_model",
    None,
    "--conditioning=embedding: a saved Keras model (.keras) mapping float32 images [B, H, W, C] with values "
    "0..255 to vectors [B, D]; frozen, and saved as part of the trained model.",
)
flags.DEFINE_bool(
    "spatial_condition", False, "Location-dependent conditioning: map h (or the class) to s = m(h) (paper eq. 5)."
)
flags.DEFINE_integer(
    "num_layers", DEFAULTS.num_layers, "Gated layers (default: sized to the images, 6 up to 8 rows high, else 8)."
)
flags.DEFINE_integer(
    "filters",
    DEFAULTS.filters,
    "Features per layer, a multiple of C for the softmax head (default: 32 rounded up to a multiple of C, 33 for RGB).",
)
flags.DEFINE_integer(
    "kernel_size", DEFAULTS.kernel_size, "Odd filter size n >= 3 (default: 3 for images up to 8 rows high, else 5)."
)
flags.DEFINE_string(
    "dilation_rates",
    DEFAULTS.dilation_rates,
    "auto (rates 1, 2, 4, ... only when the undilated vertical stack cannot see the whole image height), "
    "none (the paper's trunk), or one int per layer, e.g. 1,2,4,1,2,4.",
)
flags.DEFINE_enum("head", DEFAULTS.head, HEADS, "Output distribution.")
flags.DEFINE_integer("num_mixtures", DEFAULTS.num_mixtures, "Logistic mixture components.")
flags.DEFINE_float("dropout", DEFAULTS.dropout, "Dropout rate inside each layer.")
flags.DEFINE_integer("batch_size", DEFAULTS.batch_size, "Global batch size (split over replicas).")
flags.DEFINE_float("learning_rate", DEFAULTS.learning_rate, "Peak learning rate of Adam (AdamW with --weight_decay).")
flags.DEFINE_enum("lr_schedule", DEFAULTS.lr_schedule, LR_SCHEDULES, "Learning-rate schedule.")
flags.DEFINE_float("lr_decay_rate", DEFAULTS.lr_decay_rate, "Per-step decay factor of the exponential schedule.")
flags.DEFINE_integer("train_steps", DEFAULTS.train_steps, "Total optimizer steps.")
flags.DEFINE_integer("eval_every", DEFAULTS.eval_every, "Evaluate, sample and checkpoint every this many steps.")
flags.DEFINE_integer("eval_examples", DEFAULTS.eval_examples, "Evaluate on at most this many test images (0: all).")
flags.DEFINE_integer(
    "samples_per_class",
    DEFAULTS.samples_per_class,
    "Samples per class (or per grid row; per test image for the autoencoder and embedding conditionings) at "
    "each evaluation; 0: none.",
)
flags.DEFINE_integer("log_every", DEFAULTS.log_every, "Training summaries and log lines every this many steps.")
flags.DEFINE_float("ema_decay", DEFAULTS.ema_decay, "Polyak averaging of the weights (e.g. 0.9995); 0 disables.")
flags.DEFINE_float(
    "weight_decay", DEFAULTS.weight_decay, "AdamW's decoupled weight decay (scaled by the learning rate); 0: Adam."
)
flags.DEFINE_float("clip_norm", DEFAULTS.clip_norm, "Clip the global gradient norm to this value; 0 disables.")
flags.DEFINE_enum(
    "mixed_precision",
    DEFAULTS.mixed_precision,
    MIXED_PRECISIONS,
    "Compute dtype: auto picks bfloat16 on CPUs with AVX512_BF16/AMX and GPUs of compute capability >= 8.0, "
    "float16 (with loss scaling) on 7.x GPUs, else none (float32).",
)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy.")
flags.DEFINE_list("devices", None, "Devices for --strategy=mirrored (default: all local GPUs, else the CPU).")
flags.DEFINE_integer("collective_timeout", 300, "Seconds before a multi-worker collective gives up.")


def config_from_flags():
    """The preset of --config (else TrainConfig's defaults) with every flag given on the command line applied."""
    base = PRESETS[FLAGS.config] if FLAGS.config else DEFAULTS
    given = {
        f.name: FLAGS[f.name].value
        for f in dataclasses.fields(TrainConfig)
        if f.name != "config" and FLAGS[f.name].present
    }
    return base.replace(**given)


def make_strategy():
    import tensorflow as tf

    if FLAGS.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(FLAGS.devices)
    if FLAGS.strategy == "multi_worker":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=FLAGS.collective_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return tf.distribute.get_strategy()


@binary.checked(required=("model_dir",))
def main(argv):
    from trainers import train_lib

    strategy = make_strategy()  # before other TF work (multi-worker needs it first)
    try:
        train_lib.train_and_evaluate(config_from_flags(), FLAGS.model_dir, strategy)
    except train_lib.NonFiniteLossError as error:
        logging.error("%s", error)
        raise SystemExit(1) from error
    except train_lib.TrainingInterrupted as error:
        raise SystemExit(128 + error.signum) from error


def run():
    binary.run(main)


if __name__ == "__main__":
    run()
