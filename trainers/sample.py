r"""Samples a grid from a trained model.

    # --mode=classes (default): one row per class id (one row for unconditional models)
    python -m trainers.sample --model_dir=DIR --class_ids=0,1,2 --num=8 \
        --temperature=1.0 --seed=0 --out=grid.png
    # --mode=reconstruct (autoencoder / embedding models): one row per test image,
    # the image itself, a blank column, then --num sampled reconstructions
    python -m trainers.sample --model_dir=DIR --mode=reconstruct --image_ids=0,1,2 --num=8 --out=recon.png
    # --mode=interpolate (autoencoder / embedding models): rows = --steps codes on the
    # line from h(image a) to h(image b), end points included; columns = --num samples
    python -m trainers.sample --model_dir=DIR --mode=interpolate --image_ids=3,7 --steps=8 --num=8 --out=interp.png

Images for reconstruct / interpolate are --image_ids of --split (default test) of
the run's data set (run_config.json), or the images of --images (a .npy file of
uint8 [N, H, W, C]). --out_npy also writes the sampled images as uint8
[rows, --num, H, W, C]. Loads <model_dir>/model.keras, or --checkpoint / the
latest checkpoint.
"""

import numpy as np
from absl import app, flags, logging

from trainers import common_flags  # noqa: F401
from trainers.evaluate import load_trained_model, run_config_value

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "mode",
    "classes",
    ["classes", "reconstruct", "interpolate"],
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
flags.DEFINE_string("images", None, "A .npy file of uint8 images [N, H, W, C] to use instead of the data set.")
flags.DEFINE_integer("steps", 8, "--mode=interpolate: codes (grid rows) from the first image's to the second's, >= 2.")
flags.DEFINE_integer("num", 8, "Samples per row.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature (> 0).")
flags.DEFINE_string("out", "samples.png", "Output PNG path.")
flags.DEFINE_string("out_npy", None, "Also write the sampled images here as uint8 [rows, --num, H, W, C].")
flags.DEFINE_integer("scale", 0, "Enlarge each pixel this many times (0: 4 for images under 16 pixels, else 1).")

DEFAULT_RECONSTRUCTIONS = 8


def _parse_ids(name, values):
    try:
        return [int(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{name}: expected comma-separated integers, got {values}.")


def load_images(image_ids, image_shape):
    """The images ``image_ids`` of --images, or of --split of the run's data set: uint8 [len(ids), H, W, C]."""
    if min(image_ids) < 0:
        raise app.UsageError(f"--image_ids: expected indices >= 0, got {image_ids}.")
    if FLAGS.images:
        try:
            pool = np.load(FLAGS.images)
        except (OSError, ValueError) as error:
            raise app.UsageError(f"--images: cannot read {FLAGS.images} as a .npy array: {error}") from error
        if pool.ndim != 4 or pool.shape[1:] != tuple(image_shape) or pool.dtype != np.uint8:
            raise app.UsageError(
                f"--images: expected uint8 [N, {', '.join(map(str, image_shape))}], got {pool.dtype} {pool.shape}."
            )
        source = FLAGS.images
    else:
        from trainers.data import DatasetUnavailableError, load_split

        dataset = run_config_value("dataset")
        try:
            split = load_split(dataset, FLAGS.split, run_config_value("data_dir")).take(max(image_ids) + 1)
            pool = np.stack([image.numpy() for image, _ in split])
        except DatasetUnavailableError as error:
            raise app.UsageError(str(error))
        source = f"--split={FLAGS.split} of --dataset={dataset}"
    if max(image_ids) >= len(pool):
        raise app.UsageError(
            f"--image_ids: expected indices below {len(pool)} (the size of {source}), got {image_ids}."
        )
    return pool[image_ids]


def sample_grid(model):
    """Samples for the flagged mode: (uint8 cells [rows, cols, H, W, C] for the PNG, samples [rows, --num, H, W, C])."""
    from keras_pixelcnn.autoencoder import PixelCNNAutoEncoder
    from trainers.grids import reconstruction_cells

    has_encoder = isinstance(model, PixelCNNAutoEncoder)
    if FLAGS.mode != "classes" and FLAGS.class_ids:
        raise app.UsageError(f"--class_ids: only used with --mode=classes, got --mode={FLAGS.mode}.")
    if FLAGS.mode == "classes" and (FLAGS.image_ids or FLAGS.images):
        raise app.UsageError("--image_ids, --images: only used with --mode=reconstruct or --mode=interpolate.")
    if FLAGS.mode == "classes":
        if has_encoder:
            raise app.UsageError(
                f"--mode=classes: this {type(model).__name__} is conditioned on images; "
                "use --mode=reconstruct or --mode=interpolate."
            )
        return sample_classes(model)
    if not has_encoder:
        raise app.UsageError(
            f"--mode={FLAGS.mode}: needs a model with an encoder (trained with --conditioning=autoencoder or "
            f"embedding), got a {type(model).__name__}."
        )
    temperature, seed, num = FLAGS.temperature, FLAGS.seed, FLAGS.num
    if FLAGS.mode == "reconstruct":
        image_ids = (
            _parse_ids("image_ids", FLAGS.image_ids) if FLAGS.image_ids else list(range(DEFAULT_RECONSTRUCTIONS))
        )
        inputs = load_images(image_ids, model.image_shape)
        samples = np.asarray(model.reconstruct(inputs, num, temperature=temperature, seed=seed))
        return reconstruction_cells(inputs, samples), samples
    image_ids = _parse_ids("image_ids", FLAGS.image_ids) if FLAGS.image_ids else [0, 1]
    if len(image_ids) != 2:
        raise app.UsageError(f"--image_ids: --mode=interpolate takes exactly two ids, got {image_ids}.")
    if FLAGS.steps < 2:
        raise app.UsageError(f"--steps: expected >= 2 (the end points included), got {FLAGS.steps}.")
    image_a, image_b = load_images(image_ids, model.image_shape)
    samples, _ = model.interpolate(image_a, image_b, FLAGS.steps, num, temperature=temperature, seed=seed)
    samples = np.asarray(samples)
    return samples, samples


def sample_classes(model):
    if model.num_classes is not None:
        class_ids = _parse_ids("class_ids", FLAGS.class_ids) if FLAGS.class_ids else list(range(model.num_classes))
        if min(class_ids) < 0 or max(class_ids) >= model.num_classes:
            raise app.UsageError(f"--class_ids: expected ids in [0, {model.num_classes}), got {class_ids}.")
        samples = model.sample(
            condition=np.repeat(class_ids, FLAGS.num), temperature=FLAGS.temperature, seed=FLAGS.seed
        )
        rows = len(class_ids)
    elif FLAGS.class_ids:
        raise app.UsageError("--class_ids: this model is unconditional.")
    elif model.conditioned:
        raise app.UsageError(
            "--mode=classes: this model is conditioned on vectors (condition_shape); sample it from Python "
            "with model.sample(condition=...)."
        )
    else:
        samples = model.sample(num_samples=FLAGS.num, temperature=FLAGS.temperature, seed=FLAGS.seed)
        rows = 1
    samples = np.asarray(samples).reshape((rows, FLAGS.num) + model.image_shape)
    return samples, samples


def main(argv):
    from keras_pixelcnn.model_dir import atomic_write
    from trainers.grids import image_grid, write_png

    del argv
    if FLAGS.num < 1:
        raise app.UsageError(f"--num: expected >= 1, got {FLAGS.num}.")
    if not FLAGS.temperature > 0:
        raise app.UsageError(f"--temperature: expected > 0, got {FLAGS.temperature}.")
    model = load_trained_model()
    cells, samples = sample_grid(model)
    height = model.image_shape[0]
    scale = FLAGS.scale or (4 if height < 16 else 1)
    write_png(FLAGS.out, image_grid(cells, scale=scale))
    if FLAGS.out_npy:
        import io

        buffer = io.BytesIO()
        np.save(buffer, samples)
        atomic_write(FLAGS.out_npy, buffer.getvalue())
    logging.info("Wrote %d x %d samples (--mode=%s) to %s", samples.shape[0], samples.shape[1], FLAGS.mode, FLAGS.out)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
