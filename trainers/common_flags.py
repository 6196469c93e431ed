"""Flags shared by the train, evaluate, sample and export binaries (defined once per process)."""

from absl import flags

flags.DEFINE_string("model_dir", None, "Training directory: checkpoints, logs, samples, model.keras, metrics.json.")
flags.DEFINE_string(
    "dataset",
    "digits",
    "Data set: the embedded 'digits' (no network), a tfds image data set name (read from --data_dir), "
    "npz:PATH (a .npz with 'images' [N, H, W(, C)] 0..255, optional 'labels', 'test_images', 'test_labels') "
    "or folder:PATH (image files of one size, a subfolder per class; train/ and test/ if present).",
)
flags.DEFINE_string("data_dir", None, "tfds data directory (default: tfds's own, ~/tensorflow_datasets).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and samples.")
flags.DEFINE_string(
    "checkpoint", None, "Checkpoint to load instead of model.keras: a prefix, or a name in checkpoints/."
)

flags.DEFINE_bool(
    "jit_compile",
    False,
    "XLA-compile the work: the training step's forward and backward pass (trainers.train), or the sampling "
    "loop of the exported signatures (export.export; needs a server started with XLA enabled).",
)

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
