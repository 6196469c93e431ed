"""Serving throughput and latency: an exported SavedModel loaded in this process, driven by N client threads.

No TF-Serving binary (or Docker) is obtainable on the development machines, so
the server is the SavedModel loaded with ``tf.saved_model.load`` in this
process, and a request is a call of one of its signatures (TF-Serving runs the
same graph through its session loader, plus its own request parsing and
queueing, which this does not measure). Each client thread sends requests back
to back until the time budget is spent, picking each from a mix of four kinds
with equal probability: sampling at batch 1 and 16 (``serving_default``) and
``log_prob`` at batch 1 and 16.

Models (random initial weights; throughput does not depend on training):
  28x28x1  unconditional ConditionalPixelCNN, 4 layers x 64 filters, 5x5, logistic mixture head;
  digits   class-conditional ConditionalPixelCNN on 8x8x1, 10 classes, the trainer's defaults
           (6 layers x 32 filters, 3x3, softmax head).

    .venv/bin/python bench/serving.py                      # about 3 minutes on 2 CPU cores
    .venv/bin/python bench/serving.py --seconds=5 --threads=1,4

Prints the export's time per model, one JSON line per (model, threads) and a Markdown table.
"""

import argparse
import json
import os
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_pixelcnn  # noqa: E402

BATCHES = (1, 16)


def build_models():
    """{name: (model, kind)} for the two benchmarked models."""
    mnist_like = keras_pixelcnn.ConditionalPixelCNN(
        (28, 28, 1), num_layers=4, filters=64, kernel_size=5, head="logistic_mixture", num_mixtures=5
    )
    digits = keras_pixelcnn.ConditionalPixelCNN((8, 8, 1), num_layers=6, filters=32, kernel_size=3, num_classes=10)
    return {
        "28x28x1 (4 x 64, 5x5, mixture)": (mnist_like, "unconditional"),
        "digits 8x8x1 (6 x 32, class)": (digits, "class"),
    }


def request_mix(model, kind):
    """The four request kinds: [(label, signature name, {input name: tf.Tensor})]."""
    rng = np.random.default_rng(0)
    requests = []
    for batch in BATCHES:
        conditioning = {"class_ids": rng.integers(0, 10, batch).astype(np.int32)} if kind == "class" else {}
        sample = dict(conditioning or {"num_samples": np.int32(batch)}, seed=np.array([1, 2], np.int64))
        sample["temperature"] = np.float32(1.0)
        images = rng.integers(0, 256, (batch,) + model.image_shape).astype(np.uint8)
        requests.append((f"sample b{batch}", "serving_default", sample))
        requests.append((f"log_prob b{batch}", "log_prob", {"images": images, **conditioning}))
    return [(label, name, {k: tf.constant(v) for k, v in inputs.items()}) for label, name, inputs in requests]


def drive(signatures, requests, threads, seconds):
    """Runs ``threads`` clients for ``seconds``; returns [(label, latency_s)] and the elapsed wall time."""
    deadline = time.perf_counter() + seconds
    results, lock = [], threading.Lock()

    def client(index):
        rng = np.random.default_rng(index)
        while time.perf_counter() < deadline:
            label, name, inputs = requests[rng.integers(len(requests))]
            start = time.perf_counter()
            outputs = signatures[name](**inputs)
            tf.nest.map_structure(lambda t: t.numpy(), outputs)
            with lock:
                results.append((label, time.perf_counter() - start))

    start = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results, time.perf_counter() - start


def bench(name, model, kind, thread_counts, seconds, export_dir):
    start = time.perf_counter()
    path = keras_pixelcnn.export_saved_model(model, os.path.join(export_dir, kind))
    export_seconds = round(time.perf_counter() - start, 2)
    print(json.dumps(dict(model=name, export_s=export_seconds)), flush=True)
    signatures = tf.saved_model.load(path).signatures
    requests = request_mix(model, kind)
    for _, signature, inputs in requests:  # warm: the first call of each signature optimizes its graph
        signatures[signature](**inputs)
    rows = []
    for threads in thread_counts:
        results, elapsed = drive(signatures, requests, threads, seconds)
        latencies = np.array([latency for _, latency in results])
        p50, p99 = (round(float(np.percentile(latencies, q)), 3) for q in (50, 99))
        by_kind = {
            label: float(np.median([latency for got, latency in results if got == label]))
            for label, _, _ in requests
            if any(got == label for got, _ in results)
        }
        rows.append(
            dict(
                model=name, threads=threads, requests=len(results), seconds=round(elapsed, 1),
                requests_per_s=round(len(results) / elapsed, 2),
                p50_s=p50, p99_s=p99,
                p50_by_kind_s={label: round(value, 3) for label, value in by_kind.items()},
            )
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows):
    labels = [f"{kind} b{batch}" for batch in BATCHES for kind in ("sample", "log_prob")]
    header = ["model", "threads", "requests", "requests/s", "p50 (s)", "p99 (s)"] + [f"p50 {x} (s)" for x in labels]
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    for row in rows:
        by_kind = [str(row["p50_by_kind_s"].get(label, "-")) for label in labels]
        values = [row["model"], row["threads"], row["requests"], row["requests_per_s"], row["p50_s"], row["p99_s"]]
        lines.append("| " + " | ".join(str(v) for v in values + by_kind) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,4,16", help="Client thread counts.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Time budget per (model, threads).")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as export_dir:
        for name, (model, kind) in build_models().items():
            rows += bench(name, model, kind, thread_counts, args.seconds, export_dir)
    print(markdown(rows))


if __name__ == "__main__":
    main()
