r"""Samples a grid from a trained model.

    # --mode=classes (default): one row per class id (one row for unconditional models)
    python -m trainers.sample --model_dir=DIR --class_ids=0,1,2 --num=8 \
        --temperature=1.0 --seed=0            # writes DIR/samples/classes.png
    # --mode=reconstruct (autoencoder / embedding models): one row per test image,
    # the image itself, a blank column, then --num sampled reconstructions
    python -m trainers.sample --model_dir=DIR --mode=reconstruct --image_ids=0,1,2 --num=8
    # --mode=interpolate (autoencoder / embedding models): rows = --steps codes on the
    # line from h(image a) to h(image b), end points included; columns = --num samples
    python -m trainers.sample --model_dir=DIR --mode=interpolate --image_ids=3,7 --steps=8 --num=8

Images for reconstruct / interpolate are --image_ids of --split (default test) of
the run's data set (run_config.json), or the images of --images (a .npy file of
integer images [N, H, W, C], or a .npz file with an 'images' array). The grid goes
to --out, by default <model_dir>/samples/<mode>.png. --out_npy also writes the sampled images as uint8
[rows, --num, H, W, C]. Loads <model_dir>/model.keras, or --checkpoint / the
latest checkpoint. From Python: ``sample(model_dir, mode=..., ...)``.
"""

import io
import os

import numpy as np
from absl import flags

from trainers import binary, common_flags  # noqa: F401  (--model_dir, --seed, --checkpoint)
from trainers.evaluate import load_trained_model, run_config, run_dataset

FLAGS = flags.FLAGS
MODES = ("classes", "reconstruct", "interpolate")
flags.DEFINE_enum(
    "mode",
    "classes",
    MODES,
    "classes: a row per class id (or one row, unconditional). reconstruct: a row per input image with its "
    "sampled reconstructions. interpolate: a row per code on the line between two images' codes.",
)
flags.DEFINE_list("class_ids", None, "--mode=classes: class ids, one grid row each (default: every class).")
flags.DEFINE_list(
    "image_ids",
    None,
    "--mode=reconstruct: indices of the input images (default: the first 8); --mode=interpolate: the two end "
    "points (default: 0,1). Indices into --split of the run's data set, or into --images.",
)
flags.DEFINE_string("images", None, "A .npy (or .npz with 'images') file of images [N, H, W, C] 0..255 to use instead.")
flags.DEFINE_integer("steps", 8, "--mode=interpolate: codes (grid rows) from the first image's to the second's, >= 2.")
flags.DEFINE_integer("num", 8, "Samples per row.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature (> 0).")
flags.DEFINE_string("out", None, "Output PNG path (default: <model_dir>/samples/<mode>.png).")
flags.DEFINE_string("out_npy", None, "Also write the sampled images here as uint8 [rows, --num, H, W, C].")
flags.DEFINE_integer("scale", 0, "Enlarge each pixel this many times (0: 4 for images under 16 pixels, else 1).")

DEFAULT_RECONSTRUCTIONS = 8


def _ids(name, values):
    """Integer ids from a list of ints or strings."""
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected comma-separated integers, got {values}.") from None


def read_image_file(path, image_shape):
    """Images from a .npy array or the 'images' array of a .npz file, checked to be [N, *image_shape] in 0..255."""
    import tensorflow as tf

    from trainers.data import check_images

    try:
        with tf.io.gfile.GFile(path, "rb") as handle:
            loaded = np.load(io.BytesIO(handle.read()))
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise ValueError(f"images: cannot read {path} as a .npy or .npz array: {error}") from error
    if isinstance(loaded, np.lib.npyio.NpzFile):
        if "images" not in loaded.files:
            raise ValueError(f"images: {path} has no 'images' array (found {sorted(loaded.files)}).")
        loaded = loaded["images"]
    pool = check_images(loaded, f"images: {path}")
    if pool.shape[1:] != tuple(image_shape):
        raise ValueError(
            f"images: expected images [N, {', '.join(map(str, image_shape))}] in {path}, got {pool.shape}."
        )
    return pool


def load_images(model_dir, image_ids, image_shape, images=None, split="test", dataset=None, data_dir=None):
    """The images ``image_ids`` of the file ``images``, or of ``split`` of the run's data set.

    Returns uint8 [len(image_ids), H, W, C].
    """
    if min(image_ids) < 0:
        raise ValueError(f"image_ids: expected indices >= 0, got {image_ids}.")
    if images:
        pool, source = read_image_file(images, image_shape), images
    else:
        data = run_dataset(model_dir, dataset, data_dir)
        pool = np.stack([image.numpy() for image, _ in data.split(split).take(max(image_ids) + 1)])
        source = f"split={split} of dataset={data.name}"
    if max(image_ids) >= len(pool):
        raise ValueError(f"image_ids: expected indices below {len(pool)} (the size of {source}), got {image_ids}.")
    return pool[image_ids]


def sample_grid(model, model_dir, mode="classes", class_ids=None, image_ids=None, images=None, steps=8, num=8,
                temperature=1.0, seed=0, split="test", dataset=None, data_dir=None):  # fmt: skip
    """Samples for ``mode``: (uint8 cells [rows, cols, H, W, C] for the PNG, samples [rows, num, H, W, C])."""
    from keras_pixelcnn.autoencoder import PixelCNNAutoEncoder
    from trainers.grids import reconstruction_cells

    has_encoder = isinstance(model, PixelCNNAutoEncoder)
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}.")
    if mode != "classes" and class_ids:
        raise ValueError(f"class_ids: only used with mode=classes, got mode={mode}.")
    if mode == "classes" and (image_ids or images):
        raise ValueError("image_ids, images: only used with mode=reconstruct or mode=interpolate.")
    if mode == "classes":
        if has_encoder:
            raise ValueError(
                f"mode=classes: this {type(model).__name__} is conditioned on images; "
                "use mode=reconstruct or mode=interpolate."
            )
        return sample_classes(model, class_ids, num, temperature, seed)
    if not has_encoder:
        raise ValueError(
            f"mode={mode}: needs a model with an encoder (trained with conditioning=autoencoder or "
            f"embedding), got a {type(model).__name__}."
        )
    if mode == "reconstruct":
        image_ids = _ids("image_ids", image_ids) if image_ids else list(range(DEFAULT_RECONSTRUCTIONS))
        inputs = load_images(model_dir, image_ids, model.image_shape, images, split, dataset, data_dir)
        samples = np.asarray(model.reconstruct(inputs, num, temperature=temperature, seed=seed))
        return reconstruction_cells(inputs, samples), samples
    image_ids = _ids("image_ids", image_ids) if image_ids else [0, 1]
    if len(image_ids) != 2:
        raise ValueError(f"image_ids: mode=interpolate takes exactly two ids, got {image_ids}.")
    if steps < 2:
        raise ValueError(f"steps: expected an int >= 2 (the end points included), got {steps}.")
    image_a, image_b = load_images(model_dir, image_ids, model.image_shape, images, split, dataset, data_dir)
    samples, _ = model.interpolate(image_a, image_b, steps, num, temperature=temperature, seed=seed)
    samples = np.asarray(samples)
    return samples, samples


def sample_classes(model, class_ids, num, temperature, seed):
    if model.num_classes is not None:
        class_ids = _ids("class_ids", class_ids) if class_ids else list(range(model.num_classes))
        if min(class_ids) < 0 or max(class_ids) >= model.num_classes:
            raise ValueError(f"class_ids: expected ids in [0, {model.num_classes}), got {class_ids}.")
        samples = model.sample(condition=np.repeat(class_ids, num), temperature=temperature, seed=seed)
        rows = len(class_ids)
    elif class_ids:
        raise ValueError("class_ids: this model is unconditional.")
    elif model.conditioned:
        raise ValueError(
            "mode=classes: this model is conditioned on vectors (condition_shape); sample it from Python "
            "with model.sample(condition=...)."
        )
    else:
        samples = model.sample(num_samples=num, temperature=temperature, seed=seed)
        rows = 1
    samples = np.asarray(samples).reshape((rows, num) + model.image_shape)
    return samples, samples


def sample(model_dir, mode="classes", *, class_ids=None, image_ids=None, images=None, steps=8, num=8,
           temperature=1.0, seed=0, split="test", checkpoint=None, out=None, out_npy=None, scale=0, dataset=None,
           data_dir=None):  # fmt: skip
    """Samples a grid from the trained model of ``model_dir`` and writes it as a PNG.

    Args:
      model_dir: a training directory.
      mode: "classes", "reconstruct" or "interpolate" (module docstring).
      class_ids, image_ids: lists of ints (or of digit strings).
      images: a .npy / .npz file of images to use instead of the run's data set.
      steps, num, temperature, seed, split: as the flags of the same names.
      dataset, data_dir: the data ``image_ids`` index into (default: the training run's, from run_config.json).
      checkpoint: None (model.keras, else the latest checkpoint), or a checkpoint prefix or name.
      out: the PNG path (default: <model_dir>/samples/<mode>.png).
      out_npy: also write the samples here, uint8 [rows, num, H, W, C] (int32 codes for a code prior).
      scale: pixel enlargement (0: 4 for images under 16 pixels, else 1).

    Returns:
      (the PNG path written, samples uint8 [rows, num, H, W, C]).

    Raises:
      ValueError, FileNotFoundError: bad arguments; the message starts with the argument's name.
    """
    from trainers.grids import as_grey, image_grid, write_png
    from trainers.model_dir import atomic_write

    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num: expected an int >= 1, got {num!r}.")
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}.")
    model = load_trained_model(model_dir, checkpoint)
    cells, samples = sample_grid(model, model_dir, mode, class_ids, image_ids, images, steps, num, temperature, seed,
                                 split, dataset, data_dir)  # fmt: skip
    latents = run_config(model_dir).latents
    if latents:  # a prior over a VQ-VAE's codes: its samples decoded to images
        from trainers.vqvae_lib import load_vqvae

        codes = np.asarray(samples)
        decoded = np.asarray(load_vqvae(latents).decode(codes.reshape((-1,) + codes.shape[2:])))
        cells = samples = decoded.reshape(codes.shape[:2] + decoded.shape[1:])
    scale = scale or (4 if np.shape(cells)[2] < 16 else 1)
    if out is None:
        import tensorflow as tf

        tf.io.gfile.makedirs(os.path.join(model_dir, "samples"))
        out = os.path.join(model_dir, "samples", f"{mode}.png")
    write_png(out, image_grid(as_grey(cells, getattr(model, "num_categories", None)), scale=scale))
    if out_npy:
        buffer = io.BytesIO()
        np.save(buffer, samples)
        atomic_write(out_npy, buffer.getvalue())
    return out, samples


@binary.checked(required=("model_dir",))
def main(argv):
    out, samples = sample(
        FLAGS.model_dir, FLAGS.mode, class_ids=FLAGS.class_ids, image_ids=FLAGS.image_ids, images=FLAGS.images,
        steps=FLAGS.steps, num=FLAGS.num, temperature=FLAGS.temperature, seed=FLAGS.seed, split=FLAGS.split,
        checkpoint=FLAGS.checkpoint, out=FLAGS.out, out_npy=FLAGS.out_npy, scale=FLAGS.scale,
        dataset=FLAGS.dataset if FLAGS["dataset"].present else None, data_dir=FLAGS.data_dir,
    )  # fmt: skip
    print(f"Wrote {samples.shape[0]} x {samples.shape[1]} samples (--mode={FLAGS.mode}) to {out}")


def run():
    binary.run(main)


if __name__ == "__main__":
    run()
