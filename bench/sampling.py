"""Sampling speed: cached vs naive vs one forward pass, and tfp.distributions.PixelCNN, in one run.

For each model (32x32x3: the CIFAR-10 preset's 5x5 architecture at reduced depth
and width; 28x28x1) and batch size, seconds per batch of:

  forward  one batched forward pass of the same model (tf.function, warm);
  cached   model.sample(method="cached"), timed end to end (warm);
  naive    model.sample(method="naive"): a full forward pass per step. Where it
           would take long it is extrapolated as steps x (one naive step), where
           one naive step is timed as the forward pass plus one draw; the real
           naive run is timed for the smallest case to check that model;
  tfp      tfp.distributions.PixelCNN (PixelCNN++ architecture, a mixture head,
           H*W network passes per sample) at about the same parameter count:
           its sample() timed for real at batch 1, extrapolated from its
           per-step cost (a forward pass of its network) at larger batches.

    .venv/bin/python bench/sampling.py            # about 10 minutes on 2 CPU cores
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_pixelcnn  # noqa: E402
from keras_pixelcnn.sampling import normalize_seed  # noqa: E402


def timed(fn, repeats=1):
    fn()  # warm: trace and compile
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    tf.nest.map_structure(np.asarray, result)
    return (time.perf_counter() - start) / repeats


def tfp_pixelcnn(image_shape, target_params):
    """tfp's PixelCNN with num_filters chosen so its parameter count is closest to ``target_params``."""
    import tensorflow_probability as tfp

    best = None
    for filters in range(16, 257, 8):
        dist = tfp.distributions.PixelCNN(
            image_shape=image_shape, num_resnet=1, num_hierarchies=2, num_filters=filters, num_logistic_mix=5,
            dropout_p=0.0,
        )
        dist.network(tf.zeros((1,) + image_shape))  # builds it
        params = dist.network.count_params()
        if best is None or abs(params - target_params) < abs(best[1] - target_params):
            best = (dist, params, filters)
        if params > target_params:
            break
    return best


def bench_model(name, image_shape, layers, filters, batches, real_naive_limit_s):
    height, width, channels = image_shape
    model = keras_pixelcnn.ConditionalPixelCNN(image_shape, num_layers=layers, filters=filters, kernel_size=5)
    steps = height * width * model.head.steps_per_pixel
    forward_fn = tf.function(lambda x: model(x, training=False))
    dist, tfp_params, tfp_filters = tfp_pixelcnn(image_shape, model.count_params())
    tfp_forward_fn = tf.function(lambda x: dist.network(x / 127.5 - 1.0))
    tfp_sample_fn = tf.function(lambda n: dist.sample(n, seed=0))
    rows = []
    for batch in batches:
        images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch,) + image_shape).astype(np.float32))
        forward = timed(lambda: forward_fn(images), repeats=3)
        cached = timed(lambda: model.sample(num_samples=batch, seed=0))
        draw = timed(
            lambda: model.head.sample_step(
                forward_fn(images)[:, 0, 0], images[:, 0, 0], 0, tf.constant(1.0), tf.constant(normalize_seed(0))
            ),
            repeats=3,
        ) - forward
        naive_step = forward + max(draw, 0.0)
        naive, naive_measured = steps * naive_step, False
        if naive < real_naive_limit_s:
            naive, naive_measured = timed(lambda: model.sample(num_samples=batch, seed=0, method="naive")), True
        tfp_step = timed(lambda: tfp_forward_fn(images), repeats=3)
        tfp_time, tfp_measured = height * width * tfp_step, False
        if batch == 1:
            tfp_time, tfp_measured = timed(lambda: tfp_sample_fn(1)), True
        rows.append(
            dict(
                model=name, params=model.count_params(), tfp_params=tfp_params, tfp_filters=tfp_filters,
                batch=batch, steps=steps, forward_s=round(forward, 4), cached_s=round(cached, 3),
                naive_s=round(naive, 1), naive_measured=naive_measured, tfp_s=round(tfp_time, 1),
                tfp_measured=tfp_measured, naive_over_cached=round(naive / cached, 1),
                cached_over_forward=round(cached / forward, 1), tfp_over_cached=round(tfp_time / cached, 1),
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--real_naive_limit_s", type=float, default=60.0, help="Run naive for real below this estimate.")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    bench_model("32x32x3 (4 layers x 96, 5x5)", (32, 32, 3), 4, 96, batches, args.real_naive_limit_s)
    bench_model("28x28x1 (4 layers x 64, 5x5)", (28, 28, 1), 4, 64, batches, args.real_naive_limit_s)


if __name__ == "__main__":
    main()
