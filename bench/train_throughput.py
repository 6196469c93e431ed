"""Training throughput (images/second) of the CIFAR-10 preset's architecture, reduced depth, on CPU.

Compares, in one process and one run, the default strategy (one replica) and
MirroredStrategy over 2 logical CPU devices, both through trainers.loop's
distributed step on synthetic 32x32x3 batches (no data loading in the timing).

    .venv/bin/python bench/train_throughput.py --layers 4 --filters 96 --batch 32 --steps 20
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import keras_pixelcnn  # noqa: E402
from trainers.loop import make_train_step  # noqa: E402


def images_per_second(strategy, args):
    with strategy.scope():
        model = keras_pixelcnn.ConditionalPixelCNN(
            (32, 32, 3), num_layers=args.layers, filters=args.filters, kernel_size=5
        )
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, strategy, args.batch)
    images = np.random.default_rng(0).integers(0, 256, (args.batch, 32, 32, 3)).astype(np.uint8)
    data = tf.data.Dataset.from_tensors((images, np.zeros(args.batch, np.int32))).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(data))
    for _ in range(args.warmup):
        step(next(iterator))
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(next(iterator))
    float(loss)
    return args.batch * args.steps / (time.perf_counter() - start), model.count_params()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--filters", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    default, params = images_per_second(tf.distribute.get_strategy(), args)
    mirrored, _ = images_per_second(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), args)
    print(json.dumps({**vars(args), "params": params, "default_img_per_s": round(default, 1),
                      "mirrored_2_logical_cpus_img_per_s": round(mirrored, 1), "mirrored_over_default": round(mirrored / default, 2)}))


if __name__ == "__main__":
    main()
