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

from absl import flags, logging

from trainers import binary, common_flags  # --model_dir, --dataset, --seed, ...
from trainers.config import PRESETS
from trainers.config_flags import config_from_flags, define_config_flags

FLAGS = flags.FLAGS

flags.DEFINE_enum("config", None, sorted(PRESETS), "A preset (trainers/config.py); explicit flags override it.")
define_config_flags(exclude=common_flags.SHARED_SETTINGS)  # one flag per TrainConfig field (trainers/config.py)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy.")
flags.DEFINE_list("devices", None, "Devices for --strategy=mirrored (default: all local GPUs, else the CPU).")
flags.DEFINE_integer("collective_timeout", 300, "Seconds before a multi-worker collective gives up.")


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
