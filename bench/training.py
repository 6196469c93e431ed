"""Training throughput of the CIFAR-10 preset's architecture (reduced depth and width) on CPU.

In one process and one run:
  * images/second of trainers.loop's distributed step under the default
    strategy (one replica) and MirroredStrategy over 2 logical CPU devices, on
    synthetic 32x32x3 batches (no data loading in the timing);
  * achieved FLOP/s of the step, counting useful FLOPs only: 2 per unmasked
    kernel weight per output position (masked-out weights excluded), for every
    convolution and 1x1 link, times 3 for forward + backward;
  * the machine's dense convolution throughput measured in the same run (a 3x3,
    128 -> 128 convolution's forward + backward on the same batch), as the
    reference the step's FLOP/s is compared with: in float32 always, and in the
    compute dtype too with ``--mixed_precision=bfloat16`` (the model then runs
    under Keras's mixed_bfloat16 policy: bfloat16 compute, float32 weights).

    PYTHONPATH=. .venv/bin/python bench/training.py --layers 4 --filters 96 --batch 32 --steps 20
    PYTHONPATH=. .venv/bin/python bench/training.py --mixed_precision=bfloat16 --no_mirrored
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


def useful_forward_flops(model):
    """FLOPs of one image's forward pass through the convolutions and links, masked-out weights excluded."""
    height, width, _ = model.image_shape
    flops = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras_pixelcnn.MaskedConv2D):
            flops += 2 * int(layer.mask.sum()) * height * width
        elif isinstance(layer, keras.layers.Dense) and layer.name == "vertical_to_horizontal":
            flops += 2 * int(np.prod(layer.kernel.shape)) * height * width
    return flops


def dense_conv_flops_per_second(batch, dtype="float32", repeats=5, input_gradient=True):
    """Forward + backward FLOP/s of a plain 3x3 128 -> 128 convolution on [batch, 32, 32, 128] in ``dtype``.

    The backward pass of an inner layer computes two gradients, the filter's and the input's,
    each costing a forward pass: 3 forward passes in all, as the step's FLOPs are counted.
    ``input_gradient=False`` reproduces this benchmark's reference before issue 10's fix: only
    the filter gradient was computed (2 forward passes of work) but 3 were counted, which
    overstated the dense rate by about 1.5x.
    """
    x = tf.Variable(tf.random.normal([batch, 32, 32, 128], dtype=dtype))
    kernel = tf.Variable(tf.random.normal([3, 3, 128, 128]))
    sources = [kernel, x] if input_gradient else [kernel]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = tf.nn.conv2d(x, tf.cast(kernel, dtype), 1, "SAME")
            y = tf.cast(y, "float32")
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, sources)

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        result = step()
    result[0].numpy()
    seconds = (time.perf_counter() - start) / repeats
    return 3 * 2 * 3 * 3 * 128 * 128 * 32 * 32 * batch / seconds


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
    return args.batch * args.steps / (time.perf_counter() - start), model


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--filters", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--mixed_precision", choices=("none", "bfloat16"), default="none",
                        help="none: float32; bfloat16: Keras's mixed_bfloat16 policy for the model")
    parser.add_argument("--no_mirrored", action="store_true", help="skip the MirroredStrategy measurement")
    args = parser.parse_args()
    if args.mixed_precision == "bfloat16":
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    default, model = images_per_second(tf.distribute.get_strategy(), args)
    result = {**vars(args), "params": model.count_params(), "default_img_per_s": round(default, 1)}
    if not args.no_mirrored:
        mirrored, _ = images_per_second(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), args)
        result.update(mirrored_2_logical_cpus_img_per_s=round(mirrored, 1),
                      mirrored_over_default=round(mirrored / default, 2))
    step_flops_per_image = 3 * useful_forward_flops(model)
    achieved = default * step_flops_per_image
    reference = dense_conv_flops_per_second(args.batch)
    filter_gradient_only = dense_conv_flops_per_second(args.batch, input_gradient=False)
    result.update(useful_train_gflop_per_image=round(step_flops_per_image / 1e9, 3),
                  achieved_gflop_per_s=round(achieved / 1e9, 1), dense_conv_gflop_per_s=round(reference / 1e9, 1),
                  achieved_over_dense_conv=round(achieved / reference, 2),
                  old_reference_gflop_per_s=round(filter_gradient_only / 1e9, 1),
                  achieved_over_old_reference=round(achieved / filter_gradient_only, 2))
    if args.mixed_precision == "bfloat16":
        reference_bf16 = dense_conv_flops_per_second(args.batch, "bfloat16")
        result.update(dense_conv_bf16_gflop_per_s=round(reference_bf16 / 1e9, 1),
                      achieved_over_dense_conv_bf16=round(achieved / reference_bf16, 2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
