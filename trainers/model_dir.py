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
and renamed, so a reader never sees half a file. Every read and write goes
through tf.io.gfile, so model_dir may be any TF file system (gs://, ram://, ...).
"""

import json
import os
import tempfile
import uuid

FINAL_MODEL = "model.keras"
MODEL_CONFIG = "model_config.json"
RUN_CONFIG = "run_config.json"
CHECKPOINT_DIR = "checkpoints"
METRICS = "metrics.json"


def atomic_write(path, data):
    """Writes bytes or text to ``path`` (any tf.io.gfile path) through a temporary file and a rename."""
    import tensorflow as tf

    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(temporary, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def write_json(path, value):
    atomic_write(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path, default=None):
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return default
    with tf.io.gfile.GFile(path) as handle:
        return json.load(handle)


def save_keras_file(model, path):
    """Saves ``model`` as the .keras file ``path`` (any tf.io.gfile path), atomically: written locally, then copied."""
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tempfile.TemporaryDirectory() as local:
        local_file = os.path.join(local, "model.keras")
        model.save(local_file)
        with open(local_file, "rb") as handle:
            atomic_write(path, handle.read())


def save_model(model, model_dir):
    """Saves ``model`` as <model_dir>/model.keras atomically."""
    save_keras_file(model, os.path.join(model_dir, FINAL_MODEL))


def float32_config(model):
    """``keras.saving.serialize_keras_object(model)`` with every mixed-precision dtype policy made float32.

    The weights of a mixed-precision model are float32 already; its float32 twin
    samples, evaluates and serves in float32 unless a user asks otherwise.
    """
    import keras

    def is_mixed(policy):  # a serialized DTypePolicy or a policy name
        name = policy.get("config", {}).get("name") if isinstance(policy, dict) else policy
        return isinstance(name, str) and name.startswith("mixed_")

    def to_float32(value):
        if isinstance(value, dict):
            if value.get("class_name") == "DTypePolicy" and is_mixed(value):
                return keras.dtype_policies.serialize(keras.DTypePolicy("float32"))
            return {k: "float32" if k == "dtype" and is_mixed(v) else to_float32(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_float32(item) for item in value]
        return value

    return to_float32(keras.saving.serialize_keras_object(model))


def float32_copy(model):
    """A float32-policy copy of ``model`` (float32_config) with the same weights."""
    import keras

    import keras_pixelcnn  # noqa: F401  (registers the classes for deserialization)

    copy = keras.saving.deserialize_keras_object(float32_config(model))
    copy.set_weights(model.get_weights())
    return copy


def write_model_config(model, model_dir):
    """<model_dir>/model_config.json: the architecture, float32 (what load_model rebuilds checkpoints into)."""
    write_json(os.path.join(model_dir, MODEL_CONFIG), float32_config(model))


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

    if not tf.io.gfile.isdir(model_dir):
        raise FileNotFoundError(f"model_dir: {model_dir} is not a directory.")
    final = os.path.join(model_dir, FINAL_MODEL)
    if checkpoint is None and tf.io.gfile.exists(final):
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
