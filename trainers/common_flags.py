"""Flags shared by the train, evaluate and sample binaries (defined once per process)."""

from absl import flags

from trainers.data import DATASETS, DEFAULT_DATASET

flags.DEFINE_string("model_dir", None, "Training directory: checkpoints, logs, samples, model.keras, metrics.json.")
flags.DEFINE_enum(
    "dataset", DEFAULT_DATASET, sorted(DATASETS), "Data set: a tfds name, or the embedded 'digits' (no network)."
)
flags.DEFINE_string("data_dir", None, "tfds data directory (default: tfds's own, ~/tensorflow_datasets).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and samples.")
flags.DEFINE_string("checkpoint", None, "Checkpoint to load instead of model.keras: a prefix, or a name in checkpoints/.")

flags.DEFINE_bool(
    "jit_compile",
    False,
    "XLA-compile the work: the training step's forward and backward pass (trainers.train), or the sampling "
    "loop of the exported signatures (export.export; needs a server started with XLA enabled).",
)

FLAGS = flags.FLAGS
