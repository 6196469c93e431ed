r"""Samples a grid from a trained model.

    python -m trainers.sample --model_dir=DIR --class_ids=0,1,2 --num=8 \
        --temperature=1.0 --seed=0 --out=grid.png

One row per class id (one row in all for unconditional models), --num samples
per row. Loads <model_dir>/model.keras, or --checkpoint / the latest checkpoint.
"""

import numpy as np
from absl import app, flags, logging

from trainers import common_flags  # noqa: F401
from trainers.evaluate import load_trained_model

FLAGS = flags.FLAGS
flags.DEFINE_list("class_ids", None, "Class ids, one grid row each (default: every class).")
flags.DEFINE_integer("num", 8, "Samples per row.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature (> 0).")
flags.DEFINE_string("out", "samples.png", "Output PNG path.")
flags.DEFINE_integer("scale", 0, "Enlarge each pixel this many times (0: 4 for images under 16 pixels, else 1).")


def main(argv):
    from trainers.grids import image_grid, write_png

    del argv
    if FLAGS.num < 1:
        raise app.UsageError(f"--num: expected >= 1, got {FLAGS.num}.")
    if not FLAGS.temperature > 0:
        raise app.UsageError(f"--temperature: expected > 0, got {FLAGS.temperature}.")
    model = load_trained_model()
    if model.num_classes is not None:
        try:
            class_ids = [int(c) for c in FLAGS.class_ids] if FLAGS.class_ids else list(range(model.num_classes))
        except ValueError:
            raise app.UsageError(f"--class_ids: expected comma-separated integers, got {FLAGS.class_ids}.")
        if min(class_ids) < 0 or max(class_ids) >= model.num_classes:
            raise app.UsageError(f"--class_ids: expected ids in [0, {model.num_classes}), got {class_ids}.")
        samples = model.sample(condition=np.repeat(class_ids, FLAGS.num), temperature=FLAGS.temperature, seed=FLAGS.seed)
        rows = len(class_ids)
    elif FLAGS.class_ids:
        raise app.UsageError("--class_ids: this model is unconditional.")
    else:
        samples = model.sample(num_samples=FLAGS.num, temperature=FLAGS.temperature, seed=FLAGS.seed)
        rows = 1
    height, width, channels = model.image_shape
    scale = FLAGS.scale or (4 if height < 16 else 1)
    write_png(FLAGS.out, image_grid(np.asarray(samples).reshape(rows, FLAGS.num, height, width, channels), scale=scale))
    logging.info("Wrote %d x %d samples to %s", rows, FLAGS.num, FLAGS.out)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
