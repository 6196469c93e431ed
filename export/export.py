r"""Exports a trained PixelCNN for TF-Serving as <export_base>/<version>/.

Usage:
  python -m export.export --model_dir=runs/mnist --export_base=/models/pixelcnn
  pixelcnn-export --model_dir=runs/mnist --export_base=/models/pixelcnn --version=3
  # XLA-compiled sampling signatures, for a server started with --xla_cpu_compilation_enabled:
  python -m export.export --model_dir=runs/mnist --export_base=/models/pixelcnn-xla --jit_compile

What is exported from --model_dir (layout: trainers/model_dir.py):
  * --checkpoint if given (a prefix, or a name such as ckpt-3 in checkpoints/),
    restored into the architecture of model_config.json;
  * else model.keras, the final model;
  * else the latest checkpoint in checkpoints/.

The version directory appears atomically (built under a non-numeric name beside
it, then renamed); keras_pixelcnn/export_lib.py describes the signatures.

--max_batch_size=N (default 256): every signature refuses a request of more
than N images (class ids, condition rows, num_samples, images) with
INVALID_ARGUMENT; 0 means no limit. The limit is recorded in
<version>/assets.extra/pixelcnn_export.json; a TF-Serving batching config must
not batch beyond it.
"""

import os

from absl import app, flags

from trainers import binary, common_flags  # noqa: F401  (--model_dir, --checkpoint, --jit_compile)

FLAGS = flags.FLAGS

# After common_flags, which starts TensorFlow quietly before this first library import.
from keras_pixelcnn.export_lib import DEFAULT_MAX_BATCH_SIZE

flags.DEFINE_string("export_base", None, "TF-Serving model base path; versions are written as <export_base>/<N>/.")
flags.DEFINE_integer("version", None, "Version to write (must not exist); default: one more than the largest.")
flags.DEFINE_integer(
    "max_batch_size",
    DEFAULT_MAX_BATCH_SIZE,
    "Largest batch (class ids, condition rows, num_samples, images) a request may ask for; 0: no limit.",
    lower_bound=0,
)


def export_from_model_dir(
    model_dir, export_base, version=None, checkpoint=None, *, jit_compile=False, max_batch_size=DEFAULT_MAX_BATCH_SIZE
):
    """Loads the trained model of ``model_dir`` and exports it (keras_pixelcnn.export_saved_model).

    Prints what was exported, the signatures and the batch limit.

    Args:
      model_dir: a training directory.
      export_base: TF-Serving's model base path.
      version: int >= 1, or None for the next free version.
      checkpoint: None (model.keras, else the latest checkpoint), or a
        checkpoint prefix or name in checkpoints/.
      jit_compile: XLA-compile the sampling signatures (export_saved_model's
        ``jit_compile``; the server needs XLA enabled).
      max_batch_size: int >= 1, the largest batch a request may ask for; None: no limit.

    Returns:
      The path of the new version directory.

    Raises:
      app.UsageError: nothing to export, or a bad argument; the message names the flag.
    """
    from keras_pixelcnn.export_lib import export_info, export_saved_model
    from trainers.model_dir import RUN_CONFIG, load_model, read_json

    try:
        model, source = load_model(model_dir, checkpoint)
        latents = read_json(os.path.join(model_dir, RUN_CONFIG), {}).get("latents")
        if latents:  # a prior over a VQ-VAE's codes: served with its decoder, images in and out
            from keras_pixelcnn import VQVAEPrior
            from trainers.vqvae_lib import load_vqvae

            model = VQVAEPrior(load_vqvae(latents), model)
    except (FileNotFoundError, ValueError) as error:  # messages start with the argument at fault
        raise app.UsageError(f"--{error}") from error
    try:
        path = export_saved_model(model, export_base, version, jit_compile=jit_compile, max_batch_size=max_batch_size)
    except ValueError as error:
        raise app.UsageError(f"--export_base={export_base} --version={version}: {error}") from error
    info = export_info(model, max_batch_size)
    limit = "none" if max_batch_size is None else f"{max_batch_size} (a TF-Serving batching config must not exceed it)"
    print(f"Exported {source} to {path}")
    print(f"Signatures ({info['model_kind']} model): {', '.join(info['signatures'])}")
    print(f"max_batch_size: {limit}")
    return path


@binary.checked(required=("model_dir", "export_base"))
def main(argv):
    export_from_model_dir(
        FLAGS.model_dir, FLAGS.export_base, FLAGS.version, FLAGS.checkpoint, jit_compile=FLAGS.jit_compile,
        max_batch_size=FLAGS.max_batch_size or None,
    )  # fmt: skip


def run():
    """Console-script entry point (``pixelcnn-export``)."""
    binary.run(main)


if __name__ == "__main__":
    run()
