"""The layout of a training directory, shared by the trainer, evaluator, sampler and exporter.

    <model_dir>/model.keras          final model (EMA weights when --ema_decay > 0)
    <model_dir>/model_config.json    keras.saving.serialize_keras_object(model)
    <model_dir>/run_config.json      the trainer's resolved flags (dataset, conditioning, ...)
    <model_dir>/checkpoints/         tf.train.CheckpointManager over
                                     tf.train.Checkpoint(model=..., optimizer=...)
    <model_dir>/metrics.json         last evaluation: test bits/dim, step
    <model_dir>/samples/*.png        sample grids (one row per class) and reconstruction grids
    <model_dir>/logs/                TensorBoard summaries

Files other than checkpoints are written to a temporary name beside the target
and renamed, so a reader never sees half a file.
"""

import json
import os

FINAL_MODEL = "model.keras"
MODEL_CONFIG = "model_config.json"
RUN_CONFIG = "run_config.json"
CHECKPOINT_DIR = "checkpoints"
METRICS = "metrics.json"


def atomic_write(path, data):
    """Writes bytes or text to ``path`` through a temporary file and a rename."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
    os.replace(temporary, path)


def write_json(path, value):
    atomic_write(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as handle:
        return json.load(handle)


def save_model(model, model_dir):
    """Saves ``model`` as <model_dir>/model.keras atomically."""
    temporary = os.path.join(model_dir, f".model.tmp-{os.getpid()}.keras")
    model.save(temporary)
    os.replace(temporary, os.path.join(model_dir, FINAL_MODEL))


def write_model_config(model, model_dir):
    import keras

    write_json(os.path.join(model_dir, MODEL_CONFIG), keras.saving.serialize_keras_object(model))


def model_from_config(model_dir):
    """A freshly initialised model with the architecture in <model_dir>/model_config.json."""
    import keras

    import keras_pixelcnn  # noqa: F401  (registers the classes for deserialization)

    config = read_json(os.path.join(model_dir, MODEL_CONFIG))
    if config is None:
        raise FileNotFoundError(f"model_dir: no {MODEL_CONFIG} in {model_dir}.")
    return keras.saving.deserialize_keras_object(config)


def resolve_checkpoint(model_dir, checkpoint=None):
    """The checkpoint prefix to restore: ``checkpoint`` (a prefix or a name in checkpoints/), else the latest."""
    import tensorflow as tf

    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    if checkpoint is None:
        return tf.train.latest_checkpoint(directory)
    for candidate in (checkpoint, os.path.join(directory, checkpoint)):
        if tf.io.gfile.exists(candidate + ".index"):
            return candidate
    raise FileNotFoundError(f"checkpoint: no checkpoint {checkpoint!r} (looked in {directory}).")


def load_model(model_dir, checkpoint=None):
    """The trained model of ``model_dir``.

    Args:
      model_dir: a training directory.
      checkpoint: None for the final model.keras (or, when there is none, the
        latest checkpoint); else a checkpoint prefix or name to restore.

    Returns:
      (model, description) where description says what was loaded.

    Raises:
      FileNotFoundError: nothing to load; ValueError: a checkpoint that does not
        fit model_config.json. Both messages start with the argument at fault.
    """
    import keras
    import tensorflow as tf

    import keras_pixelcnn  # noqa: F401

    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model_dir: {model_dir} is not a directory.")
    final = os.path.join(model_dir, FINAL_MODEL)
    if checkpoint is None and os.path.exists(final):
        return keras.models.load_model(final), final
    prefix = resolve_checkpoint(model_dir, checkpoint)
    if prefix is None:
        raise FileNotFoundError(f"model_dir: {model_dir} holds neither {FINAL_MODEL} nor a checkpoint.")
    model = model_from_config(model_dir)
    try:
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:  # never hand back a partly restored model
        which = f"checkpoint: {checkpoint}" if checkpoint else f"model_dir: the latest checkpoint {prefix}"
        raise ValueError(
            f"{which} does not fit the model of {MODEL_CONFIG}: {str(error).splitlines()[0][:300]}"
        ) from error
    return model, prefix
