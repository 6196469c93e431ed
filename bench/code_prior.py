"""A VQ-VAE plus a code prior against the pixel model, at an equal training-time budget.

    python bench/make_digits28.py --out=/tmp/digits28.npz
    python bench/code_prior.py --dataset=npz:/tmp/digits28.npz --minutes=10
    python bench/code_prior.py --dataset=digits --minutes=5
    python bench/code_prior.py --dataset=npz:/tmp/digits28.npz --compare_likelihoods --minutes=3

In one process, one after the other, on the same data (trainers/data.py names):

* pixel: the class-conditional pixel model of ``trainers.train_lib.train_and_evaluate`` with
  TrainConfig's defaults, stopped after ``--minutes`` of training time (quality.py's
  ``WallClockBudget``: steps only; evaluation, grids and checkpoints are outside the clock);
* codes: ``trainers.vqvae_lib.train_vqvae`` (VQVAEConfig's defaults) for ``--vqvae_share`` of the
  budget, then ``train_and_evaluate`` with ``latents`` = that run (the class-conditional prior over
  its codes, TrainConfig's defaults) for the rest of the VQ-VAE's measured training time.

Then, for both: class fidelity (a classifier trained on the real training images labels
``--samples_per_class`` samples of each class; reported as accuracy and as a share of the
classifier's accuracy on the real test images), seconds per sampled image at batch 1 and 16 (warm,
``jit_compile=True``, median of ``--timing_repeats``; the code model's time includes decoding),
test bits (per sub-pixel for the pixel model, per code for the prior), the VQ-VAE's reconstruction
error and codebook use, and one PNG with both models' samples side by side (one row per class).

``--compare_likelihoods`` instead trains the VQ-VAE alone with each decoder likelihood
(``keras_pixelcnn.vqvae.DECODER_LIKELIHOODS``) for ``--vqvae_share`` of ``--minutes`` and reports
the test reconstruction error, the classifier's accuracy on the reconstructions and the codebook use.

Writes ``code_prior.json`` (or ``likelihoods.json``) and the PNG under ``--out_dir``; the final line
is ``code_prior: fidelity pixel=X codes=Y speedup b1=Z b16=W``. Run on an idle machine.
"""

import os
import shutil
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's modules

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from bench import quality  # noqa: E402
from keras_pixelcnn.vqvae import DECODER_LIKELIHOODS, VQVAEPrior  # noqa: E402
from trainers import data as data_lib  # noqa: E402
from trainers import model_dir as layout  # noqa: E402
from trainers import vqvae_lib  # noqa: E402
from trainers.config import VQVAEConfig  # noqa: E402
from trainers.grids import image_grid, write_png  # noqa: E402

UNLIMITED_EPOCHS = 10**6  # epochs of a budgeted VQ-VAE run: the budget stops it
SPEED_BATCHES = (1, 16)


def _commit():
    """The checkout's git commit (what the results ran on), or None outside git."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


def train_classifier(data, epochs, seed):
    """A small convnet trained on the real training images -> (classifier, accuracy on the real test images)."""
    keras.utils.set_random_seed(seed)
    classifier = keras.Sequential([
        keras.Input(data.image_shape),
        keras.layers.Rescaling(1.0 / 255.0),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(data.num_classes),
    ])  # fmt: skip
    classifier.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])  # fmt: skip
    train, train_labels = vqvae_lib.split_arrays(data, "train")
    test, test_labels = vqvae_lib.split_arrays(data, "test")
    classifier.fit(train.astype("float32"), train_labels, batch_size=64, epochs=epochs, verbose=0)
    return classifier, accuracy(classifier, test, test_labels)


def accuracy(classifier, images, labels):
    """Share of ``images`` the classifier labels as ``labels``."""
    predicted = np.argmax(classifier.predict(np.asarray(images).astype("float32"), verbose=0), axis=-1)
    return float(np.mean(predicted == labels))


def budgeted_vqvae(dataset, seconds, out_dir, decoder_likelihood, seed):
    """A VQ-VAE trained for ``seconds`` of training time -> (its directory, metrics.json, the WallClockBudget)."""
    vq_dir = os.path.join(out_dir, f"vqvae_{decoder_likelihood}")
    shutil.rmtree(vq_dir, ignore_errors=True)
    budget = quality.WallClockBudget(seconds)
    config = VQVAEConfig(dataset=dataset, epochs=UNLIMITED_EPOCHS, seed=seed, decoder_likelihood=decoder_likelihood)
    metrics = vqvae_lib.train_vqvae(config, vq_dir, callbacks=[budget])
    return vq_dir, metrics, budget


def budgeted_pixelcnn(dataset, seconds, out_dir, name, seed, log, overrides=None):
    """A class-conditional PixelCNN of TrainConfig's defaults (plus ``overrides``) trained for ``seconds``.

    Returns (the trained model, the WallClockBudget with its test curve).
    """
    run_dir = os.path.join(out_dir, name)
    config, _, _ = quality._calibrated_config(
        dataset, seconds, seconds, run_dir, dict(overrides or {}), 0, 20.0, 0, seed, log
    )  # one evaluation, at the end of the budget
    shutil.rmtree(os.path.join(run_dir, "run"), ignore_errors=True)
    budget, _ = quality.train_project(config, os.path.join(run_dir, "run"), seconds, run_dir)
    model, _ = layout.load_model(os.path.join(run_dir, "run"))
    return model, budget


def class_samples(model, num_classes, per_class, seed):
    """``per_class`` samples of each class, class-major -> (uint8 images [N, H, W, C], labels [N])."""
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    return np.asarray(model.sample(condition=labels, seed=seed, jit_compile=True)), labels


def seconds_per_image(model, num_classes, batch, repeats):
    """Median wall-clock seconds per image of ``model.sample`` at ``batch`` (compiled and warmed first)."""
    condition = np.arange(batch, dtype=np.int32) % num_classes
    np.asarray(model.sample(condition=condition, seed=0, jit_compile=True))  # compile
    times = []
    for repeat in range(repeats):
        started = time.perf_counter()
        np.asarray(model.sample(condition=condition, seed=repeat + 1, jit_compile=True))
        times.append(time.perf_counter() - started)
    return statistics.median(times) / batch


def side_by_side(pixel_images, code_images, num_classes, columns, path):
    """One PNG: the pixel model's samples (left) and the code model's (right), one row per class."""
    def grid(images):
        per_class = images.reshape((num_classes, -1) + images.shape[1:])[:, :columns]
        return image_grid(per_class, scale=4 if images.shape[1] < 16 else 1)

    left, right = grid(pixel_images), grid(code_images)
    gap = np.full((left.shape[0], 8, left.shape[2]), 255, np.uint8)
    write_png(path, np.concatenate([left, gap, right], axis=1))
    return path


def compare_likelihoods(dataset, minutes, vqvae_share, out_dir, classifier_epochs, seed, log=print):
    """The VQ-VAE alone with each decoder likelihood for an equal budget; returns (and writes) the results."""
    data = data_lib.open_dataset(dataset)
    classifier, real_accuracy = train_classifier(data, classifier_epochs, seed)
    test, test_labels = vqvae_lib.split_arrays(data, "test")
    results = dict(dataset=dataset, seconds=60.0 * minutes * vqvae_share, real_accuracy=real_accuracy, runs={},
                   commit=_commit(), cpus=len(os.sched_getaffinity(0)))  # fmt: skip
    for likelihood in DECODER_LIKELIHOODS:
        vq_dir, metrics, budget = budgeted_vqvae(dataset, results["seconds"], out_dir, likelihood, seed)
        vqvae = vqvae_lib.load_vqvae(vq_dir)
        decoded = np.asarray(vqvae.decode(vqvae.encode(test))).astype(np.float64)
        results["runs"][likelihood] = dict(
            steps=budget.steps, test_mean_l1=float(np.abs(decoded - test).mean()),
            test_rmse=float(np.sqrt(((decoded - test) ** 2).mean())),
            reconstruction_accuracy=accuracy(classifier, decoded, test_labels),
            perplexity=metrics["perplexity"], used=metrics["used"],
        )  # fmt: skip
        log(f"{likelihood}: {results['runs'][likelihood]}")
    log(f"classifier on real test images: {real_accuracy:.3f}")
    layout.write_json(os.path.join(out_dir, "likelihoods.json"), results)
    return results


def run(dataset, minutes, vqvae_share, out_dir, samples_per_class=20, classifier_epochs=30, timing_repeats=3,
        decoder_likelihood="mse", seed=0, log=print):  # fmt: skip
    """The benchmark; returns the results (also written to ``<out_dir>/code_prior.json``) with ``line``."""
    os.makedirs(out_dir, exist_ok=True)
    seconds = 60.0 * minutes
    data = data_lib.open_dataset(dataset)
    classifier, real_accuracy = train_classifier(data, classifier_epochs, seed)
    log(f"classifier on real test images: {real_accuracy:.3f}")

    pixel, pixel_budget = budgeted_pixelcnn(dataset, seconds, out_dir, "pixel", seed, log)
    vq_dir, vq_metrics, vq_budget = budgeted_vqvae(dataset, vqvae_share * seconds, out_dir, decoder_likelihood, seed)
    log(f"vqvae: {vq_budget.steps} steps in {vq_budget.elapsed:.1f} s: {vq_metrics}")
    prior, prior_budget = budgeted_pixelcnn(dataset, seconds - vq_budget.elapsed, out_dir, "prior", seed, log,
                                            {"latents": vq_dir})  # fmt: skip
    codes = VQVAEPrior(vqvae_lib.load_vqvae(vq_dir), prior)

    results = dict(dataset=dataset, minutes=minutes, vqvae_share=vqvae_share, real_accuracy=real_accuracy,
                   commit=_commit(), cpus=len(os.sched_getaffinity(0)),
                   vqvae=dict(vq_metrics, steps=vq_budget.steps, seconds=vq_budget.elapsed))  # fmt: skip
    samples = {}
    for name, model, budget in (("pixel", pixel, pixel_budget), ("codes", codes, prior_budget)):
        samples[name], labels = class_samples(model, data.num_classes, samples_per_class, seed)
        fidelity = accuracy(classifier, samples[name], labels)
        results[name] = dict(
            steps=budget.steps, seconds=budget.elapsed, parameters=budget.num_params,
            test_bits=budget.points[-1].bits_per_dim, fidelity=fidelity, fidelity_share=fidelity / real_accuracy,
            seconds_per_image={b: seconds_per_image(model, data.num_classes, b, timing_repeats) for b in SPEED_BATCHES},
        )  # fmt: skip
        log(f"{name}: {results[name]}")
    results["samples_png"] = side_by_side(samples["pixel"], samples["codes"], data.num_classes, 10,
                                          os.path.join(out_dir, "samples_pixel_vs_codes.png"))  # fmt: skip
    speedup = {b: results["pixel"]["seconds_per_image"][b] / results["codes"]["seconds_per_image"][b]
               for b in SPEED_BATCHES}  # fmt: skip
    results["line"] = (
        f"code_prior: fidelity pixel={results['pixel']['fidelity_share']:.3f} "
        f"codes={results['codes']['fidelity_share']:.3f} speedup b1={speedup[1]:.1f} b16={speedup[16]:.1f}"
    )
    layout.write_json(os.path.join(out_dir, "code_prior.json"), results)
    log(results["line"])
    return results


def define_flags():
    flags.DEFINE_string("dataset", "digits", "What the trainer's --dataset takes (with labels).")
    flags.DEFINE_float("minutes", 10.0, "Training-time budget of each side, in minutes.")
    flags.DEFINE_float("vqvae_share", 0.3, "Share of the code side's budget spent on the VQ-VAE.")
    flags.DEFINE_string("out_dir", "/tmp/code_prior_bench", "Results, runs and the sample PNG.")
    flags.DEFINE_integer("samples_per_class", 20, "Samples of each class that the classifier labels.")
    flags.DEFINE_integer("classifier_epochs", 30, "Epochs of the classifier on the real training images.")
    flags.DEFINE_integer("timing_repeats", 3, "Timed sampling calls per batch size (median).")
    flags.DEFINE_enum("decoder_likelihood", "mse", DECODER_LIKELIHOODS, "The VQ-VAE's decoder likelihood.")
    flags.DEFINE_bool("compare_likelihoods", False, "Compare the VQ-VAE's decoder likelihoods instead.")
    flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and samples.")


def main(argv):
    del argv
    F = flags.FLAGS
    if F.compare_likelihoods:
        compare_likelihoods(F.dataset, F.minutes, F.vqvae_share, F.out_dir, F.classifier_epochs, F.seed)
    else:
        run(F.dataset, F.minutes, F.vqvae_share, F.out_dir, F.samples_per_class, F.classifier_epochs,
            F.timing_repeats, F.decoder_likelihood, F.seed)  # fmt: skip


if __name__ == "__main__":
    define_flags()
    app.run(main)
