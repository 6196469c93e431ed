"""The same models on TensorFlow and on JAX: fit images/s and sample seconds, in one run.

Each backend runs in its own process (KERAS_BACKEND is read when Keras is
imported), one after the other, on the same synthetic data and seeds:

  fit      images/s of ``model.fit`` (the Keras trainer of the backend: a
           tf.function or a jax.jit train step), 28x28x1 class-conditional,
           8 layers of 5x5 dilated 1,2,4,1,2,4,1,2, 32 filters, softmax head,
           float32, batch 32; timed over ``--fit_steps`` steps after a warm epoch;
  forward  seconds of one forward pass of that model at batch 1 (warm, compiled);
  sample   seconds of ``model.sample`` (cached, jit_compile=True: XLA on both),
           warm: 28x28x1 batch 1 (that model) and 32x32x3 batch 16 (the same
           trunk, 33 filters, unconditional).

    .venv/bin/python bench/backends.py                 # about 6 minutes on 2 CPU cores
    .venv/bin/python bench/backends.py --fit_steps 10  # quicker, noisier
"""

import argparse
import json
import os
import subprocess
import sys
import time

RATES = (1, 2, 4, 1, 2, 4, 1, 2)


def measure(fit_steps):
    """This process's numbers (KERAS_BACKEND is already set): dict."""
    import keras
    import numpy as np

    import keras_pixelcnn as kp

    def model_28():
        return kp.ConditionalPixelCNN(
            (28, 28, 1), num_layers=8, filters=32, kernel_size=5, num_classes=10, dilation_rates=RATES
        )

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32 * fit_steps, 28, 28, 1)).astype("uint8")
    labels = rng.integers(0, 10, len(images))
    keras.utils.set_random_seed(0)
    model = model_28()
    model.compile(optimizer="adam")
    model.fit((images[:64], labels[:64]), batch_size=32, epochs=1, verbose=0)  # compiles the train step
    start = time.perf_counter()
    model.fit((images, labels), batch_size=32, epochs=1, verbose=0, shuffle=False)
    fit_images_per_second = len(images) / (time.perf_counter() - start)

    def warm_seconds(fn, repeats=3):
        np.asarray(fn())  # compile
        start = time.perf_counter()
        for _ in range(repeats):
            np.asarray(fn())
        return (time.perf_counter() - start) / repeats

    one, label = images[:1], labels[:1]
    forward = warm_seconds(lambda: model.predict_on_batch((one, label)), repeats=20)
    sample_28 = warm_seconds(lambda: model.sample(condition=label, seed=0))
    rgb = kp.ConditionalPixelCNN((32, 32, 3), num_layers=8, filters=33, kernel_size=5, dilation_rates=RATES)
    sample_32 = warm_seconds(lambda: rgb.sample(num_samples=16, seed=0), repeats=1)
    return {
        "backend": keras.backend.backend(),
        "fit_images_per_second": fit_images_per_second,
        "forward_28_b1_seconds": forward,
        "sample_28x28x1_b1_seconds": sample_28,
        "sample_32x32x3_b16_seconds": sample_32,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit_steps", type=int, default=30)
    parser.add_argument("--backend", help=argparse.SUPPRESS)  # set in the child processes
    args = parser.parse_args()
    if args.backend:
        print("RESULT:", json.dumps(measure(args.fit_steps)))
        return
    rows = []
    for backend in ("tensorflow", "jax"):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
        command = [sys.executable, __file__, "--backend", backend, "--fit_steps", str(args.fit_steps)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode:
            sys.exit(f"{backend} failed:\n{result.stderr[-3000:]}")
        rows.append(json.loads(result.stdout.split("RESULT:")[-1]))
    tf_row = rows[0]
    print("| backend | fit images/s | forward 28x28x1 b1 (ms) | sample 28x28x1 b1 (s) | sample 32x32x3 b16 (s) |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['backend']} | {row['fit_images_per_second']:.1f} "
            f"({row['fit_images_per_second'] / tf_row['fit_images_per_second']:.2f}x) "
            f"| {1000 * row['forward_28_b1_seconds']:.1f} "
            f"| {row['sample_28x28x1_b1_seconds']:.3f} "
            f"({row['sample_28x28x1_b1_seconds'] / row['forward_28_b1_seconds']:.1f} forward passes) "
            f"| {row['sample_32x32x3_b16_seconds']:.2f} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
