r"""Test bits/dim of a trained model: ``python -m trainers.evaluate --model_dir=DIR``.

Loads <model_dir>/model.keras (or --checkpoint, or the latest checkpoint) and
evaluates it on --split of the data set it was trained on (from
run_config.json, unless --dataset is given). Prints a JSON line with the mean bits/dim.
"""

import json
import os

from absl import app, flags, logging

from trainers import common_flags  # noqa: F401

FLAGS = flags.FLAGS
flags.DEFINE_enum("split", "test", ["train", "test"], "Which split to evaluate.")
flags.DEFINE_integer("eval_batch_size", 64, "Evaluation batch size.")
flags.DEFINE_integer("max_examples", 0, "Evaluate at most this many images (0: all).")


def run_config_value(name):
    """A flag's value: as given, else what the training run used (run_config.json), else its default."""
    from keras_pixelcnn.model_dir import RUN_CONFIG, read_json

    if FLAGS[name].present:
        return FLAGS[name].value
    return read_json(os.path.join(FLAGS.model_dir, RUN_CONFIG), {}).get(name, FLAGS[name].value)


def load_trained_model():
    from keras_pixelcnn.model_dir import load_model

    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir: required.")
    try:
        model, source = load_model(FLAGS.model_dir, FLAGS.checkpoint)
    except (FileNotFoundError, ValueError) as error:  # messages start with the argument at fault
        raise app.UsageError(f"--{error}") from error
    logging.info("Loaded %s", source)
    return model


def evaluate():
    """Mean bits/dim of the flagged model on the flagged split."""
    from trainers.data import DatasetUnavailableError, eval_pipeline
    from trainers.loop import make_evaluator

    model = load_trained_model()
    dataset = run_config_value("dataset")
    try:
        data = eval_pipeline(
            dataset, FLAGS.eval_batch_size, run_config_value("data_dir"), split=FLAGS.split, max_examples=FLAGS.max_examples
        )
    except DatasetUnavailableError as error:
        raise app.UsageError(str(error))
    return dataset, make_evaluator(model)(data)


def main(argv):
    del argv
    dataset, bits = evaluate()
    print(json.dumps({"dataset": dataset, "split": FLAGS.split, "bits_per_dim": bits}))


def run():
    app.run(main)


if __name__ == "__main__":
    run()
