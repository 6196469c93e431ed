r"""Writes the pinned artefacts of tests/legacy/ that tests/test_legacy_artifacts.py loads.

    .venv/bin/python tests/legacy/make_legacy_artifacts.py      # from the repository root

Makes only what is missing, and never rewrites what exists: the checked-in files pin
the formats of the code that wrote them (tests/legacy/README.txt). To add an
artefact, add it to MODELS (or a new function) and run the script; the expected
values of the new model are added to expected.npz beside the old ones, which
are kept as they are.

  <name>.keras        a tiny model (MODELS) with random weights (seeded)
  expected.npz        per model "<name>/<key>": the inputs (images, condition) and,
                      computed when the model was made, log_prob (and the auto-encoder's
                      code) and seeded samples (sample_xla: jit_compile=True, sample_graph:
                      jit_compile=False); "trainer_run/<key>": see make_trainer_run
  trainer_run/        ``python -m trainers.train`` with TRAIN_FLAGS, kept: run_config.json,
                      model_config.json and the latest checkpoint
"""

import argparse
import os
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO_ROOT)

BATCH = 3
SAMPLE_SEED = 0
EVAL_EXAMPLES = 32

# The trainer's run: toy sizes; float32 (the CPU's "auto" choice would be recorded); EMA on, so the
# checkpoint holds the model, the AdamW optimizer and the weight averages. A finished run of 10 steps:
# its only checkpoint is ckpt-10.
TRAIN_FLAGS = [
    "--num_layers=2", "--filters=8", "--kernel_size=3", "--batch_size=16", "--train_steps=10", "--eval_every=10",
    "--eval_examples=32", "--samples_per_class=0", "--mixed_precision=none", "--ema_decay=0.9",
]  # fmt: skip


def conditional_softmax():
    import keras_pixelcnn as kp

    model = kp.ConditionalPixelCNN((4, 5, 3), num_layers=2, filters=6, kernel_size=3, num_classes=3)
    return model, np.array([0, 2, 1])


def conditional_mixture():
    import keras_pixelcnn as kp

    # No spatial_condition: its fixed 32-channel deconvolutions alone would add ~75 KB.
    model = kp.ConditionalPixelCNN(
        (4, 5, 3), num_layers=2, filters=6, kernel_size=3, head="logistic_mixture", num_mixtures=2,
        condition_shape=(2,), skip_connections=True, dilation_rates=[1, 2],
    )  # fmt: skip
    return model, np.linspace(-1.0, 1.0, 2 * BATCH, dtype=np.float32).reshape(BATCH, 2)


def autoencoder():
    import keras_pixelcnn as kp

    model = kp.PixelCNNAutoEncoder((4, 4, 1), 2, num_layers=2, filters=8, kernel_size=3, encoder_filters=4)
    return model, None  # conditioned on its own code; samples are drawn for the images' codes


# name -> factory returning (model, condition of the batch or None). Append; never change an entry.
MODELS = {"conditional_softmax": conditional_softmax, "conditional_mixture": conditional_mixture,
          "autoencoder": autoencoder}  # fmt: skip


def randomize(model, seed, scale=0.5):
    """Every weight N(0, scale^2) (tests/conftest.py's randomize_weights; the head starts at zero),
    batch-norm variances kept positive."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(0.0, scale, weight.shape)
        if "moving_variance" in weight.path:
            value = np.abs(value) + 0.5
        weight.assign(value.astype(weight.dtype))
    return model


def expected_values(model, condition, seed):
    """{key: array}: the inputs, their log_prob and the seeded samples (with and without XLA)."""
    images = np.random.default_rng(seed).integers(0, 256, (BATCH,) + model.image_shape).astype(np.uint8)
    values = {"images": images}
    if condition is None:  # the auto-encoder: log p(x | h(x)), samples for the codes h(x)
        values["log_prob"] = np.asarray(model.log_prob(images))
        values["code"] = sample_condition = np.asarray(model.encode(images))
    else:
        values["condition"] = sample_condition = condition
        values["log_prob"] = np.asarray(model.log_prob(images, condition))
    for key, jit_compile in (("sample_xla", True), ("sample_graph", False)):
        values[key] = np.asarray(model.sample(condition=sample_condition, seed=SAMPLE_SEED, jit_compile=jit_compile))
    return values


def make_models(out_dir, expected):
    """Saves the MODELS not in ``out_dir`` yet and adds their expected values to ``expected``; returns their names."""
    added = []
    for index, (name, factory) in enumerate(MODELS.items()):
        path = os.path.join(out_dir, f"{name}.keras")
        if os.path.exists(path):
            if not any(key.startswith(f"{name}/") for key in expected):
                raise SystemExit(f"{path} exists but expected.npz has no {name}/*: delete the file to remake it.")
            continue
        model, condition = factory()
        randomize(model, seed=index)
        expected.update({f"{name}/{key}": value for key, value in expected_values(model, condition, index).items()})
        model.save(path)
        added.append(name)
    return added


def make_trainer_run(out_dir, expected):
    """Runs the trainer into ``out_dir``/trainer_run (unless it exists) and adds its expected values; True if made.

    Expected values: "trainer_run/bits_per_dim", trainers.evaluate on the kept files (the first
    EVAL_EXAMPLES test digits); "trainer_run/log_prob" of "trainer_run/images" and "/labels" (the
    first test digits) for the model that model_dir.load_model restores from the checkpoint.
    Without model.keras that is the checkpoint's raw weights, not the EMA averages that the
    run's metrics.json (not kept) reported.
    """
    run_dir = os.path.join(out_dir, "trainer_run")
    if os.path.exists(run_dir):
        return False
    scratch = run_dir + ".tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "trainers.train", f"--model_dir={scratch}", *TRAIN_FLAGS]
    subprocess.run(command, env=env, cwd=REPO_ROOT, check=True)
    import tensorflow as tf

    latest = os.path.basename(tf.train.latest_checkpoint(os.path.join(scratch, "checkpoints")))
    os.makedirs(os.path.join(run_dir, "checkpoints"))
    for name in ("run_config.json", "model_config.json"):
        shutil.copy(os.path.join(scratch, name), run_dir)
    for name in os.listdir(os.path.join(scratch, "checkpoints")):
        if name.startswith(latest + "."):
            shutil.copy(os.path.join(scratch, "checkpoints", name), os.path.join(run_dir, "checkpoints"))
    with open(os.path.join(run_dir, "checkpoints", "checkpoint"), "w") as handle:  # CheckpointManager's state
        handle.write(f'model_checkpoint_path: "{latest}"\nall_model_checkpoint_paths: "{latest}"\n')
    shutil.rmtree(scratch)

    from trainers.data import load_split
    from trainers.evaluate import evaluate
    from trainers.model_dir import load_model

    model, _ = load_model(run_dir)
    test_split = [(image.numpy(), label.numpy()) for image, label in load_split("digits", "test").take(BATCH)]
    images, labels = np.stack([image for image, _ in test_split]), np.array([label for _, label in test_split])
    expected.update({
        "trainer_run/images": images, "trainer_run/labels": labels,
        "trainer_run/log_prob": np.asarray(model.log_prob(images, labels)),
        "trainer_run/bits_per_dim": np.float32(evaluate(run_dir, max_examples=EVAL_EXAMPLES)["bits_per_dim"]),
    })  # fmt: skip
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out_dir", default=HERE)
    args = parser.parse_args()
    path = os.path.join(args.out_dir, "expected.npz")
    expected = dict(np.load(path)) if os.path.exists(path) else {}
    added = make_models(args.out_dir, expected)
    ran = make_trainer_run(args.out_dir, expected)
    if added or ran:
        np.savez_compressed(path, **expected)
    print(f"models added: {added or 'none'}; trainer_run: {'made' if ran else 'kept'}")


if __name__ == "__main__":
    main()
