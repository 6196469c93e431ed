"""Sampling speed: cached (graph and XLA) vs naive vs one forward pass, tfp's PixelCNN, and the served SavedModel.

For each model (32x32x3: the CIFAR-10 preset's 5x5 architecture at reduced depth
and width, softmax head; 28x28x1) and batch size, seconds per batch of:

  forward  one batched forward pass of the same model (tf.function, warm);
  graph    model.sample(method="cached", jit_compile=False), timed end to end (warm);
  xla      model.sample(method="cached", jit_compile=True), warm; ``compile`` is
           its first call minus a warm call (XLA compiles once per batch size);
  naive    model.sample(method="naive", jit_compile=False): a full forward pass
           per step. Where it would take long it is extrapolated as steps x (one
           naive step), where one naive step is timed as the forward pass plus
           one draw; the real naive run is timed for the smallest case;
  tfp      tfp.distributions.PixelCNN (PixelCNN++ architecture, a mixture head,
           H*W network passes per sample) at about the same parameter count:
           its sample() timed for real at batch 1, extrapolated from its
           per-step cost (a forward pass of its network) at larger batches.

Also: ops per cached step (nodes of the cached sampler's per-pixel loop body,
Const/Identity excluded, divided by the steps per pixel), and samples/s of the
exported SavedModel's ``serving_default`` signature, loaded with
tf.saved_model.load, default export and ``jit_compile=True`` export, at
``--serve_batches``.

    .venv/bin/python bench/sampling.py            # about 15 minutes on 2 CPU cores
    .venv/bin/python bench/sampling.py --rows 32x32x3:1,32x32x3:64,28x28x1:1 --cached_only
                                                  # the XLA targets' rows: forward, graph, xla
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_pixelcnn  # noqa: E402
from keras_pixelcnn.export_lib import export_saved_model  # noqa: E402
from keras_pixelcnn.noise import normalize_seed, seed_key, uniform_noise  # noqa: E402
from keras_pixelcnn.sampling import SAMPLERS  # noqa: E402


def timed(fn, repeats=1):
    fn()  # warm: trace and compile
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    tf.nest.map_structure(np.asarray, result)
    return (time.perf_counter() - start) / repeats


def first_call_and_warm(fn):
    """(seconds of the first call, seconds of a second call)."""
    start = time.perf_counter()
    np.asarray(fn())
    first = time.perf_counter() - start
    start = time.perf_counter()
    np.asarray(fn())
    return first, time.perf_counter() - start


def ops_per_step(model, method="cached"):
    """Ops in the sampler's innermost loop body (Const, Identity, NoOp excluded) per sampling step."""
    sampler = SAMPLERS[method]
    function = tf.function(lambda b, t, s: sampler(model, b, None, t, s)).get_concrete_function(
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int64)
    )
    bodies = [f for f in function.graph.as_graph_def().library.function if "body" in f.signature.name]
    largest = max(sum(n.op not in ("Const", "Identity", "NoOp") for n in f.node_def) for f in bodies)
    # The cached loop body is one pixel (its channel steps unrolled); the naive one is one step.
    return largest / (model.head.steps_per_pixel if method == "cached" else 1)


def served_samples_per_second(model, batches, jit_compile):
    """{batch: images/s} through the exported serving_default signature, loaded back (warm)."""
    with tempfile.TemporaryDirectory() as base:
        path = export_saved_model(model, os.path.join(base, "m"), jit_compile=jit_compile)
        signature = tf.saved_model.load(path).signatures["serving_default"]
        rates = {}
        for batch in batches:
            inputs = dict(
                num_samples=tf.constant(batch), seed=tf.constant([1, 2], tf.int64), temperature=tf.constant(1.0)
            )
            rates[batch] = round(batch / timed(lambda: signature(**inputs)["images"]), 2)
    return rates


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


def bench_model(name, image_shape, layers, filters, batches, serve_batches, real_naive_limit_s, cached_only=False):
    """Prints (and returns) one JSON row per batch size; ``cached_only`` skips naive, tfp and the served model."""
    height, width, channels = image_shape
    model = keras_pixelcnn.ConditionalPixelCNN(image_shape, num_layers=layers, filters=filters, kernel_size=5)
    steps = height * width * model.head.steps_per_pixel
    forward_fn = tf.function(lambda x: model(x, training=False))
    if not cached_only:
        dist, tfp_params, tfp_filters = tfp_pixelcnn(image_shape, model.count_params())
        tfp_forward_fn = tf.function(lambda x: dist.network(x / 127.5 - 1.0))
        tfp_sample_fn = tf.function(lambda n: dist.sample(n, seed=0))
    def draw(params, pixel, key):
        uniform = uniform_noise(key, tf.constant([0]), tf.shape(params)[0], model.head.noise_size)[0]
        return model.head.sample_step(params, pixel, 0, tf.constant(1.0), model.head.noise(uniform, "float32"))

    draw_fn = tf.function(draw)
    key = seed_key(tf.constant(normalize_seed(0)))
    summary = dict(model=name, params=model.count_params(), ops_per_step=round(ops_per_step(model), 1))
    print(json.dumps(summary), flush=True)
    rows = []
    for batch in batches:
        images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch,) + image_shape).astype(np.float32))
        forward = timed(lambda: forward_fn(images), repeats=3)
        graph = timed(lambda: model.sample(num_samples=batch, seed=0, jit_compile=False))
        first, xla = first_call_and_warm(lambda: model.sample(num_samples=batch, seed=0, jit_compile=True))
        row = dict(
            model=name, batch=batch, steps=steps, forward_s=round(forward, 4), graph_s=round(graph, 3),
            xla_s=round(xla, 3), xla_compile_s=round(first - xla, 2), graph_over_forward=round(graph / forward, 1),
            xla_over_forward=round(xla / forward, 2),
        )
        if cached_only:
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        params = forward_fn(images)[:, 0, 0]
        draw = timed(lambda: draw_fn(params, images[:, 0, 0], key), repeats=3)
        naive, naive_measured = steps * (forward + draw), False
        if naive < real_naive_limit_s:
            naive = timed(lambda: model.sample(num_samples=batch, seed=0, method="naive", jit_compile=False))
            naive_measured = True
        tfp_step = timed(lambda: tfp_forward_fn(images), repeats=3)
        tfp_time, tfp_measured = height * width * tfp_step, False
        if batch == 1:
            tfp_time, tfp_measured = timed(lambda: tfp_sample_fn(1)), True
        row.update(
            tfp_params=tfp_params, tfp_filters=tfp_filters, naive_s=round(naive, 1), naive_measured=naive_measured,
            tfp_s=round(tfp_time, 1), tfp_measured=tfp_measured, naive_over_xla=round(naive / xla, 1),
            tfp_over_xla=round(tfp_time / xla, 1), tfp_over_graph=round(tfp_time / graph, 1),
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    if cached_only:
        return rows
    for jit_compile in (False, True):
        served = served_samples_per_second(model, serve_batches, jit_compile)
        print(json.dumps(dict(model=name, served_jit_compile=jit_compile, samples_per_s=served)), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--serve_batches", default="1,16")
    parser.add_argument(
        "--real_naive_limit_s", type=float, default=60.0, help="Run naive for real below this estimate."
    )
    parser.add_argument(
        "--rows", default=None,
        help="Only these model:batch rows, e.g. 32x32x3:1,32x32x3:64,28x28x1:1 (default: every model x --batches).",
    )
    parser.add_argument(
        "--cached_only", action="store_true", help="Time only forward, graph and xla (no naive, tfp, served model)."
    )
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    serve = [int(b) for b in args.serve_batches.split(",")]
    models = {
        "32x32x3": ("32x32x3 (4 layers x 96, 5x5)", (32, 32, 3), 96),
        "28x28x1": ("28x28x1 (4 layers x 64, 5x5)", (28, 28, 1), 64),
    }
    rows = {key: batches for key in models}
    if args.rows:
        pairs = [pair.split(":") for pair in args.rows.split(",")]
        unknown = [pair for pair in pairs if len(pair) != 2 or pair[0] not in models]
        if unknown:
            parser.error(f"--rows: expected model:batch with a model in {sorted(models)}, got {unknown}")
        rows = {key: [int(batch) for name, batch in pairs if name == key] for key in models}
    for key, (name, shape, filters) in models.items():
        if rows[key]:
            bench_model(name, shape, 4, filters, rows[key], serve, args.real_naive_limit_s, args.cached_only)


if __name__ == "__main__":
    main()
