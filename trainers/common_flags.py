"""Flags shared by the train, evaluate, sample and export binaries (defined once per process).

Every binary imports this module before its other flags, so it is where a binary's
process starts TensorFlow quietly (binary.py): the flags take their choices and
defaults from the library (``keras_pixelcnn.HEADS``, ...), whose import starts Keras.
"""

from absl import flags

from trainers import binary

binary.quiet_tensorflow_startup()  # before the library's first import below brings TensorFlow up noisily

from trainers.config_flags import define_config_flags

SHARED_SETTINGS = ("dataset", "data_dir", "seed", "jit_compile")

flags.DEFINE_string("model_dir", None, "Training directory: checkpoints, logs, samples, model.keras, metrics.json.")
flags.DEFINE_string(
    "checkpoint", None, "Checkpoint to load instead of model.keras: a prefix, or a name in checkpoints/."
)
# The settings a training run shares with the other binaries: their help and defaults are TrainConfig's.
define_config_flags(names=SHARED_SETTINGS)

FLAGS = flags.FLAGS


def _check_dataset(name):
    from trainers.data import check_dataset_name

    try:
        check_dataset_name(name)
    except ImportError as error:  # tfds is not installed
        raise flags.ValidationError(str(error)) from error
    except ValueError as error:  # an unknown name; the message starts "dataset: "
        raise flags.ValidationError(str(error).split(": ", 1)[-1]) from error
    return True


flags.register_validator("dataset", _check_dataset)
