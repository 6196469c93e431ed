"""Where one training step's time goes: op time summed by layer and op type.

Traces a few steps of trainers.loop's step (the same model and batch as
bench/training.py) with ``tf.profiler.experimental`` and reads the trace's
``.xplane.pb``: every op executed on TF's executor threads, its duration summed
by (layer, op type), printed as shares of the total op time.

    PYTHONPATH=. .venv/bin/python bench/profile_training.py --layers 4 --filters 96 --top 30
"""

import argparse
import collections
import glob
import os
import re
import tempfile

import keras
import numpy as np
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

import keras_pixelcnn
from trainers.loop import make_train_step


def op_durations(logdir):
    """{(layer, op type): summed duration in ps} from the trace's host plane."""
    path = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if "tf_Compute" not in line.name and "TF" not in line.name:
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name or "::" in name:  # ops are "scope/op_name:OpType"; skip executor events
                    continue
                scope, op_type = name.rsplit(":", 1)
                totals[(_layer_of(scope), op_type.replace("_MklNative", ""))] += event.duration_ps
    return totals


LAYERS = ("vertical", "horizontal", "horizontal_out", "skip_out", "head_hidden", "head_out", "condition")


def _layer_of(scope):
    """A readable key from an op's name scope: the innermost named layer, else the block ("block": its
    1x1 link, gates, pads and shift, which run in the block's own scope), summed over blocks; "grad " if backward.
    """
    parts = [re.sub(r"(_\d+)+$", "", p) for p in scope.split("/")]
    known = [p for p in parts if p in LAYERS]
    layer = known[-1] if known else ("block" if "gated" in parts else "other")
    return ("grad " if "gradient_tape" in parts else "") + layer


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--filters", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    model = keras_pixelcnn.ConditionalPixelCNN((32, 32, 3), num_layers=args.layers, filters=args.filters,
                                               kernel_size=5)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    strategy = tf.distribute.get_strategy()
    step = make_train_step(model, optimizer, strategy, args.batch)
    images = np.random.default_rng(0).integers(0, 256, (args.batch, 32, 32, 3)).astype(np.uint8)
    batch = (tf.constant(images), tf.zeros([args.batch], tf.int32))
    for _ in range(3):
        step(batch)
    logdir = tempfile.mkdtemp()
    tf.profiler.experimental.start(logdir)
    for _ in range(args.steps):
        loss = step(batch)
    float(loss)
    tf.profiler.experimental.stop()
    totals = op_durations(logdir)
    total = sum(totals.values())
    print(f"summed op time per step: {total / args.steps / 1e9:.1f} ms")
    for (layer, op_type), ps in totals.most_common(args.top):
        print(f"{100 * ps / total:5.1f}%  {layer:40s} {op_type}")


if __name__ == "__main__":
    main()
