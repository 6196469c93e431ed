"""Seconds of a first ``fit``: the optimizer built before the first trace (ours) or inside it (Keras on TF).

Keras on TensorFlow, without a distribution strategy, creates the optimizer's
variables inside the first traced train step, and tf.function then traces the
step a second time. ``LikelihoodModel.fit`` builds the optimizer first
(``likelihood_model.OptimizerBuiltFirst``); ``keras.Model.fit(model, ...)`` is
Keras's own path. Each round builds fresh models (a small and a digits-sized
one, Adam) and times both paths' ``fit`` over two short epochs, in turns.

    .venv/bin/python bench/first_fit.py            # about a minute on 2 CPU cores
    .venv/bin/python bench/first_fit.py --rounds 5
"""

import argparse
import time

import keras
import numpy as np

import keras_pixelcnn as kp

MODELS = {
    "4x5x3, 2 x 6 filters": dict(image_shape=(4, 5, 3), num_layers=2, filters=6, kernel_size=3),
    "8x8x1, 6 x 32 filters": dict(image_shape=(8, 8, 1), num_layers=6, filters=32, kernel_size=3),
}


def first_fit_seconds(options, ours):
    """Seconds of a fresh compiled model's first fit (2 epochs of 2 steps), through our fit or Keras's."""
    model = kp.ConditionalPixelCNN(num_classes=2, **options)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = np.random.default_rng(0).integers(0, 256, (16,) + options["image_shape"]).astype(np.uint8)
    x = (images, np.arange(16) % 2)
    fit = model.fit if ours else lambda *args, **kwargs: keras.Model.fit(model, *args, **kwargs)
    start = time.perf_counter()
    fit(x, batch_size=8, epochs=2, verbose=0)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    first_fit_seconds(MODELS["4x5x3, 2 x 6 filters"], ours=True)  # TF's own first-use costs, untimed
    print(f"Medians of {args.rounds} rounds, seconds:\n")
    print("| model | built first (ours) | built in the trace (Keras) | ratio |\n| --- | --- | --- | --- |")
    for name, options in MODELS.items():
        times = {True: [], False: []}
        for _ in range(args.rounds):
            for ours in (True, False):
                times[ours].append(first_fit_seconds(options, ours))
        ours, theirs = np.median(times[True]), np.median(times[False])
        print(f"| {name} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
