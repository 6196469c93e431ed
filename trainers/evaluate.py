r"""Test bits/dim of a trained model: ``python -m trainers.evaluate --model_dir=DIR``.

Loads <model_dir>/model.keras (or --checkpoint, or the latest checkpoint) and
evaluates it on --split of the data set it was trained on (from
run_config.json, unless --dataset is given). Prints a JSON line with the mean
bits/dim. From Python: ``evaluate(model_dir, split="test", ...)``.
"""

import json
import os

from absl import flags, logging

from trainers import binary, common_flags  # noqa: F401  (--model_dir, --dataset, --checkpoint)

FLAGS = flags.FLAGS
flags.DEFINE_enum("split", "test", ["train", "test"], "Which split to evaluate.")
flags.DEFINE_integer("eval_batch_size", 64, "Evaluation batch size.")
flags.DEFINE_integer("max_examples", 0, "Evaluate at most this many images (0: all).")
flags.register_validator("eval_batch_size", lambda value: value >= 1, "expected an int >= 1")
flags.register_validator("max_examples", lambda value: value >= 0, "expected an int >= 0")


def run_config(model_dir):
    """The TrainConfig of the run in ``model_dir`` (its run_config.json; defaults if there is none)."""
    import tensorflow as tf

    from trainers.config import TrainConfig
    from trainers.model_dir import RUN_CONFIG

    path = os.path.join(model_dir, RUN_CONFIG)
    return TrainConfig.from_json(path) if tf.io.gfile.exists(path) else TrainConfig()


def run_dataset(model_dir, dataset=None, data_dir=None):
    """The ImageData to use: ``dataset`` / ``data_dir`` if given, else the training run's."""
    from trainers.data import open_dataset

    config = run_config(model_dir)
    if dataset is None and config.latents:  # a prior over a VQ-VAE's codes: the codes of its data set
        from trainers.vqvae_lib import latent_dataset

        return latent_dataset(config.latents)[0]
    if dataset is None:
        return open_dataset(config.dataset, data_dir or config.data_dir, config.num_classes, config.num_categories)
    return open_dataset(dataset, data_dir)


def load_trained_model(model_dir, checkpoint=None):
    """The model of ``model_dir`` (trainers.model_dir.load_model), logging what was loaded."""
    from trainers.model_dir import load_model

    model, source = load_model(model_dir, checkpoint)
    logging.info("Loaded %s", source)
    return model


def evaluate(model_dir, split="test", batch_size=64, max_examples=0, checkpoint=None, dataset=None, data_dir=None):
    """Mean bits/dim of the trained model of ``model_dir`` on ``split``.

    Args:
      model_dir: a training directory.
      split: "train" or "test".
      batch_size: evaluation batch size.
      max_examples: evaluate at most this many images (0: all).
      checkpoint: None (model.keras, else the latest checkpoint), or a checkpoint prefix or name.
      dataset, data_dir: the data (default: the training run's, from run_config.json).

    Returns:
      {"dataset": name, "split": split, "bits_per_dim": float}.

    Raises:
      ValueError, FileNotFoundError: bad arguments; the message starts with the argument's name.
    """
    from trainers.data import eval_pipeline
    from trainers.loop import make_evaluator

    model = load_trained_model(model_dir, checkpoint)
    data = run_dataset(model_dir, dataset, data_dir)
    bits = make_evaluator(model)(eval_pipeline(data, batch_size, split=split, max_examples=max_examples))
    return {"dataset": data.name, "split": split, "bits_per_dim": bits}


@binary.checked(required=("model_dir",))
def main(argv):
    result = evaluate(
        FLAGS.model_dir, FLAGS.split, FLAGS.eval_batch_size, FLAGS.max_examples, FLAGS.checkpoint,
        FLAGS.dataset if FLAGS["dataset"].present else None, FLAGS.data_dir,
    )  # fmt: skip
    print(json.dumps(result))


def run():
    binary.run(main)


if __name__ == "__main__":
    run()
