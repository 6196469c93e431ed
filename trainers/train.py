r"""Trains a (Conditional) Gated PixelCNN: ``python -m trainers.train --model_dir=DIR``.

With no --dataset it trains a class-conditional model on the embedded 8x8 digits
in a few CPU minutes. Re-running the same command resumes from the last
checkpoint. --conditioning picks what the model is conditioned on:

  none         p(x)
  class        p(x | class label)                           (ConditionalPixelCNN)
  autoencoder  p(x | h), h = encoder(x), trained end to end  (PixelCNNAutoEncoder)
  embedding    p(x | h), h = f(x) from the frozen Keras model --embedding_model
               (EmbeddingConditionedPixelCNN; f is stored in the trained model)

--spatial_condition maps h (or the class) to a location-dependent map s = m(h).
Examples:

    python -m trainers.train --model_dir=/tmp/digits
    python -m trainers.train --conditioning=autoencoder --bottleneck_dim=10 --model_dir=/tmp/ae
    python -m trainers.train --conditioning=embedding --embedding_model=embed.keras --model_dir=/tmp/emb
    python -m trainers.train --config=cifar10 --model_dir=/tmp/cifar --strategy=mirrored
    TF_CONFIG=... python -m trainers.train --config=imagenet32 --strategy=multi_worker --model_dir=gs://...

Paper (van den Oord et al. 2016) bits/dim to compare against: CIFAR-10 3.03,
ImageNet 32x32 3.83, ImageNet 64x64 3.57 (20 layers, 384 units, 5x5 filters,
batch 128, 200K synchronous updates on 32 GPUs).
"""

import hashlib
import math
import os
import signal
import sys

from absl import app, flags, logging

from trainers import common_flags  # noqa: F401  (shared flags)
from trainers.data import DATASETS

FLAGS = flags.FLAGS
RECONSTRUCTION_ROWS = 8  # test images shown with their reconstructions at each evaluation (autoencoder, embedding)

flags.DEFINE_enum("config", None, ["cifar10", "imagenet32", "imagenet64"], "A preset; explicit flags override it.")
flags.DEFINE_enum(
    "conditioning",
    "class",
    ["none", "class", "autoencoder", "embedding"],
    "What the model is conditioned on: nothing, the class label, its own code h = encoder(x) (a PixelCNN "
    "auto-encoder), or the embedding h = f(x) of the frozen --embedding_model.",
)
flags.DEFINE_integer(
    "bottleneck_dim", 10, "--conditioning=autoencoder: size of the code h (the paper used 10 and 100)."
)
flags.DEFINE_string(
    "embedding_model",
    None,
    "--conditioning=embedding: a saved Keras model (.keras) mapping float32 images [B, H, W, C] with values "
    "0..255 to vectors [B, D]; frozen, and saved as part of the trained model.",
)
flags.DEFINE_bool(
    "spatial_condition", False, "Location-dependent conditioning: map h (or the class) to s = m(h) (paper eq. 5)."
)
flags.DEFINE_integer("num_layers", 6, "Gated layers.")
flags.DEFINE_integer("filters", 32, "Features per layer (a multiple of C for the softmax head).")
flags.DEFINE_integer("kernel_size", 3, "Odd filter size n >= 3.")
flags.DEFINE_enum("head", "softmax", ["softmax", "logistic_mixture"], "Output distribution.")
flags.DEFINE_integer("num_mixtures", 5, "Logistic mixture components.")
flags.DEFINE_float("dropout", 0.0, "Dropout rate inside each layer.")
flags.DEFINE_integer("batch_size", 32, "Global batch size (split over replicas).")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "exponential", "cosine"], "Learning-rate schedule.")
flags.DEFINE_float("lr_decay_rate", 0.99995, "Per-step decay factor of the exponential schedule.")
flags.DEFINE_integer("train_steps", 1000, "Total optimizer steps.")
flags.DEFINE_integer("eval_every", 250, "Evaluate, sample and checkpoint every this many steps.")
flags.DEFINE_integer("eval_examples", 0, "Evaluate on at most this many test images (0: all).")
flags.DEFINE_integer(
    "samples_per_class",
    8,
    "Samples per class (or per grid row; per test image for the autoencoder and embedding conditionings) at "
    "each evaluation; 0: none.",
)
flags.DEFINE_integer("log_every", 50, "Training summaries and log lines every this many steps.")
flags.DEFINE_float("ema_decay", 0.0, "Polyak averaging of the weights (e.g. 0.9995); 0 disables.")
flags.DEFINE_float("clip_norm", 0.0, "Clip the global gradient norm to this value; 0 disables.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16", "float16"], "Compute dtype (float16 uses loss scaling).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy.")
flags.DEFINE_list("devices", None, "Devices for --strategy=mirrored (default: all local GPUs, else the CPU).")
flags.DEFINE_integer("collective_timeout", 300, "Seconds before a multi-worker collective gives up.")

# Presets. The paper gives one architecture (20 layers, 384 units, 5x5) and batch
# 128 for its ImageNet runs; it does not state the optimizer's settings: we use
# Adam with PixelCNN++'s per-step decay and Polyak averaging.
PAPER_MODEL = dict(
    num_layers=20, filters=384, kernel_size=5, batch_size=128, conditioning="none", head="softmax",
    learning_rate=1e-3, lr_schedule="exponential", lr_decay_rate=0.999995, ema_decay=0.9995, train_steps=200_000,
    eval_every=5000, samples_per_class=0,
)
PRESETS = {
    "cifar10": dict(PAPER_MODEL, dataset="cifar10", dropout=0.5),  # paper: 3.03 bits/dim
    "imagenet32": dict(PAPER_MODEL, dataset="downsampled_imagenet/32x32"),  # paper: 3.83
    "imagenet64": dict(PAPER_MODEL, dataset="downsampled_imagenet/64x64"),  # paper: 3.57
}


def apply_preset():
    """Sets the preset's values on every flag not given on the command line."""
    for name, value in PRESETS.get(FLAGS.config, {}).items():
        if not FLAGS[name].present:
            FLAGS[name].value = value


def check_flags(num_replicas):
    """Fails before any training, naming the flag."""
    if FLAGS.batch_size < 1 or FLAGS.batch_size % num_replicas:
        raise app.UsageError(
            f"--batch_size: the global batch must split evenly over {num_replicas} replicas, got {FLAGS.batch_size}."
        )
    if FLAGS.conditioning == "class" and DATASETS[FLAGS.dataset].num_classes is None:
        raise app.UsageError(
            f"--conditioning=class: --dataset={FLAGS.dataset} has no labels; use --conditioning=none."
        )
    if FLAGS.conditioning == "embedding":
        if not FLAGS.embedding_model:
            raise app.UsageError("--embedding_model: required with --conditioning=embedding (a .keras file).")
        if not os.path.isfile(FLAGS.embedding_model):
            raise app.UsageError(f"--embedding_model: no such file: {FLAGS.embedding_model}.")
        load_embedding_model(FLAGS.embedding_model, DATASETS[FLAGS.dataset].image_shape)  # fails here, not mid-setup
    elif FLAGS.embedding_model:
        raise app.UsageError(
            f"--embedding_model: only used with --conditioning=embedding, got --conditioning={FLAGS.conditioning}."
        )
    if FLAGS.spatial_condition and FLAGS.conditioning == "none":
        raise app.UsageError("--spatial_condition: needs a condition to map; got --conditioning=none.")
    for name in ("train_steps", "eval_every", "log_every", "num_layers", "filters", "num_mixtures", "bottleneck_dim"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name}: expected >= 1, got {FLAGS[name].value}.")
    if FLAGS.kernel_size < 3 or FLAGS.kernel_size % 2 == 0:
        raise app.UsageError(f"--kernel_size: expected an odd number >= 3, got {FLAGS.kernel_size}.")
    channels = DATASETS[FLAGS.dataset].image_shape[-1]
    if FLAGS.head == "softmax" and FLAGS.filters % channels:
        raise app.UsageError(f"--filters: expected a multiple of the {channels} image channels, got {FLAGS.filters}.")
    if not 0.0 <= FLAGS.ema_decay < 1.0:
        raise app.UsageError(f"--ema_decay: expected a value in [0, 1), got {FLAGS.ema_decay}.")
    if not 0.0 <= FLAGS.dropout < 1.0:
        raise app.UsageError(f"--dropout: expected a rate in [0, 1), got {FLAGS.dropout}.")
    if FLAGS.learning_rate <= 0 or FLAGS.clip_norm < 0:
        raise app.UsageError("--learning_rate must be > 0 and --clip_norm >= 0.")


def make_strategy():
    import tensorflow as tf

    if FLAGS.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(FLAGS.devices)
    if FLAGS.strategy == "multi_worker":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=FLAGS.collective_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return tf.distribute.get_strategy()


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def load_embedding_model(path, image_shape):
    """The frozen embedding network of --embedding_model, checked against the images it will see."""
    import keras

    try:
        embedding = keras.models.load_model(path)
    except Exception as error:  # any unreadable file is the flag's fault
        raise app.UsageError(
            f"--embedding_model: cannot load {path} as a Keras model: {str(error).splitlines()[0][:300]}"
        ) from error
    if not isinstance(embedding, keras.Model):
        raise app.UsageError(f"--embedding_model: expected a Keras model, got {type(embedding).__name__}.")
    try:
        shape = tuple(embedding.compute_output_spec(keras.KerasTensor((None,) + tuple(image_shape), "float32")).shape)
    except Exception as error:  # any failure to take the images is the flag's fault
        raise app.UsageError(
            f"--embedding_model: {path} does not take images [batch, {', '.join(map(str, image_shape))}] "
            f"of --dataset={FLAGS.dataset}: {str(error).splitlines()[0][:300]}"
        ) from error
    if len(shape) != 2 or shape[1] is None:
        raise app.UsageError(f"--embedding_model: expected outputs [batch, D] (vectors), got shape {shape}.")
    return embedding


def build_model(image_shape, num_classes):
    """The model that --conditioning asks for (ConditionalPixelCNN, PixelCNNAutoEncoder, EmbeddingConditionedPixelCNN)."""
    import keras_pixelcnn

    decoder_options = dict(
        num_layers=FLAGS.num_layers,
        filters=FLAGS.filters,
        kernel_size=FLAGS.kernel_size,
        head=FLAGS.head,
        num_mixtures=FLAGS.num_mixtures,
        dropout=FLAGS.dropout,
        spatial_condition=FLAGS.spatial_condition,
    )
    if FLAGS.conditioning == "autoencoder":
        return keras_pixelcnn.PixelCNNAutoEncoder(image_shape, FLAGS.bottleneck_dim, **decoder_options)
    if FLAGS.conditioning == "embedding":
        embedding = load_embedding_model(FLAGS.embedding_model, image_shape)
        return keras_pixelcnn.EmbeddingConditionedPixelCNN(image_shape, embedding, **decoder_options)
    return keras_pixelcnn.ConditionalPixelCNN(image_shape, num_classes=num_classes, **decoder_options)


def build_model_and_optimizer(image_shape, num_classes):
    import keras

    model = build_model(image_shape, num_classes)
    learning_rate = FLAGS.learning_rate
    if FLAGS.lr_schedule == "exponential":
        learning_rate = keras.optimizers.schedules.ExponentialDecay(learning_rate, 1, FLAGS.lr_decay_rate)
    elif FLAGS.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, FLAGS.train_steps)
    optimizer = keras.optimizers.Adam(
        learning_rate, use_ema=FLAGS.ema_decay > 0, ema_momentum=FLAGS.ema_decay or 0.99
    )
    if FLAGS.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)  # slots inside the strategy scope
    return model, optimizer


def weights_fingerprint(model):
    """A short hash of all weights: equal on every worker of a synchronous run."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:16]


class Trainer:
    """State and side effects of one training run (chief-only writes)."""

    def __init__(self, strategy):
        import tensorflow as tf

        from keras_pixelcnn import model_dir as layout
        from trainers.loop import read_scalar

        self.strategy = strategy
        self.chief = is_chief(strategy)
        self.spec = DATASETS[FLAGS.dataset]
        self.num_classes = self.spec.num_classes if FLAGS.conditioning == "class" else None
        os.makedirs(FLAGS.model_dir, exist_ok=True)
        with strategy.scope():
            self.model, self.optimizer = build_model_and_optimizer(self.spec.image_shape, self.num_classes)
            self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self._checkpoint_dir(), max_to_keep=3, step_counter=self.optimizer.iterations
        )
        restored = tf.train.latest_checkpoint(os.path.join(FLAGS.model_dir, layout.CHECKPOINT_DIR))
        if restored:
            self.checkpoint.restore(restored).assert_existing_objects_matched()
        self.step = read_scalar(self.optimizer.iterations)
        if restored:
            logging.info("Resumed from %s: step %d, optimizer iterations %d.", restored, self.step, self.step)
        if self.chief:
            layout.write_model_config(self.model, FLAGS.model_dir)
            layout.write_json(
                os.path.join(FLAGS.model_dir, layout.RUN_CONFIG),
                {
                    **{name: FLAGS[name].value for name in ("dataset", "data_dir", "conditioning", "seed", "config")},
                    "spatial_condition": FLAGS.spatial_condition,
                    "bottleneck_dim": FLAGS.bottleneck_dim if FLAGS.conditioning == "autoencoder" else None,
                    # Provenance only: the embedding network is stored inside the trained model.
                    "embedding_model": os.path.abspath(FLAGS.embedding_model) if FLAGS.embedding_model else None,
                },
            )
        self.writer = tf.summary.create_file_writer(os.path.join(FLAGS.model_dir, "logs")) if self.chief else None
        self.metrics_path = os.path.join(FLAGS.model_dir, layout.METRICS)
        self.metrics = layout.read_json(self.metrics_path, {})

    def _checkpoint_dir(self):
        from keras_pixelcnn.model_dir import CHECKPOINT_DIR

        if self.chief:
            return os.path.join(FLAGS.model_dir, CHECKPOINT_DIR)
        # Every worker takes part in a save; only the chief's copy is kept.
        task_id = self.strategy.cluster_resolver.task_id
        return os.path.join(FLAGS.model_dir, ".worker_tmp", f"worker_{task_id}")

    def save_checkpoint(self):
        import tensorflow as tf

        path = self.manager.save(checkpoint_number=self.step)
        if not self.chief:
            tf.io.gfile.rmtree(os.path.dirname(path))
        logging.info("Saved checkpoint at step %d.", self.step)

    def evaluate(self, evaluator, eval_data):
        from keras_pixelcnn.model_dir import write_json
        from trainers.loop import ema_weights

        with ema_weights(self.optimizer):
            bits = evaluator(eval_data)
            if self.chief and FLAGS.samples_per_class:
                self.write_samples()
        logging.info("step %d: test bits/dim %.4f", self.step, bits)
        if self.chief:
            self.metrics.setdefault("initial_test_bits_per_dim", bits)
            self.metrics.update(step=self.step, test_bits_per_dim=bits, dataset=FLAGS.dataset)
            write_json(self.metrics_path, self.metrics)
            self.summary(eval_bits_per_dim=bits)
        return bits

    def write_samples(self):
        """A sample grid: one row per class (or one row), or inputs and reconstructions for auto-encoders."""
        import numpy as np

        from keras_pixelcnn.autoencoder import PixelCNNAutoEncoder
        from trainers.grids import image_grid, reconstruction_grid

        height, width, channels = self.spec.image_shape
        scale = 4 if height < 16 else 1
        if isinstance(self.model, PixelCNNAutoEncoder):
            # One row per fixed test image: the input, then its sampled reconstructions.
            inputs = self.reconstruction_inputs()
            samples = self.model.reconstruct(inputs, FLAGS.samples_per_class, seed=FLAGS.seed)
            grid = reconstruction_grid(inputs, np.asarray(samples), scale=scale)
            self._write_grid(grid, "inputs_then_reconstructions")
            return
        rows = self.num_classes or 1
        per_row = FLAGS.samples_per_class
        if self.num_classes:
            samples = self.model.sample(condition=np.repeat(np.arange(rows), per_row), seed=FLAGS.seed)
        else:
            samples = self.model.sample(num_samples=per_row, seed=FLAGS.seed)
        grid = image_grid(np.asarray(samples).reshape(rows, per_row, height, width, channels), scale=scale)
        self._write_grid(grid, "samples_one_row_per_class")

    def _write_grid(self, grid, summary_name):
        """The grid as samples/step_<step>.png and as a TensorBoard image."""
        import tensorflow as tf

        from trainers.grids import write_png

        os.makedirs(os.path.join(FLAGS.model_dir, "samples"), exist_ok=True)
        write_png(os.path.join(FLAGS.model_dir, "samples", f"step_{self.step:08d}.png"), grid)
        with self.writer.as_default(step=self.step):
            tf.summary.image(summary_name, grid[None])

    def reconstruction_inputs(self):
        """The first RECONSTRUCTION_ROWS test images (fixed), uint8 [N, H, W, C]."""
        import numpy as np

        from trainers.data import load_split

        if getattr(self, "_reconstruction_inputs", None) is None:
            split = load_split(FLAGS.dataset, "test", FLAGS.data_dir).take(RECONSTRUCTION_ROWS)
            self._reconstruction_inputs = np.stack([image.numpy() for image, _ in split])
        return self._reconstruction_inputs

    def summary(self, **scalars):
        import tensorflow as tf

        if self.writer is None:
            return
        with self.writer.as_default(step=self.step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)

    def learning_rate(self):
        from trainers.loop import read_scalar

        return read_scalar(getattr(self.optimizer, "inner_optimizer", self.optimizer).learning_rate)

    def finish(self, evaluator, eval_data):
        from keras_pixelcnn.model_dir import save_model
        from trainers.loop import ema_weights

        bits = self.evaluate(evaluator, eval_data)
        if self.chief:
            with ema_weights(self.optimizer):
                save_model(self.model, FLAGS.model_dir)
        logging.info("Done at step %d: test bits/dim %.4f, weights fingerprint %s", self.step, bits, weights_fingerprint(self.model))


def train(strategy):
    import keras
    import tensorflow as tf

    from trainers.data import DatasetUnavailableError, eval_pipeline, train_pipeline
    from trainers.loop import make_evaluator, make_train_step

    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.mixed_precision != "none":
        keras.mixed_precision.set_dtype_policy(f"mixed_{FLAGS.mixed_precision}")
    try:  # fail fast, before building anything, when the data is not there
        eval_data = eval_pipeline(FLAGS.dataset, FLAGS.batch_size, FLAGS.data_dir, max_examples=FLAGS.eval_examples)
    except DatasetUnavailableError as error:
        raise app.UsageError(str(error))
    trainer = Trainer(strategy)
    # Resumed runs reshuffle from seed + step: deterministic for a given resume point.
    train_data = train_pipeline(FLAGS.dataset, FLAGS.batch_size, FLAGS.seed + trainer.step, FLAGS.data_dir)
    iterator = iter(strategy.experimental_distribute_dataset(train_data))
    train_step = make_train_step(
        trainer.model, trainer.optimizer, strategy, FLAGS.batch_size, FLAGS.clip_norm, FLAGS.jit_compile
    )
    evaluator = make_evaluator(trainer.model)
    if trainer.step == 0:
        trainer.evaluate(evaluator, eval_data)

    preemption, stop, previous_handlers = None, {}, {}
    if FLAGS.strategy == "multi_worker":  # SIGTERM: checkpoint on every worker, then exit
        preemption = tf.distribute.experimental.PreemptionCheckpointHandler(strategy.cluster_resolver, trainer.manager)
    else:  # SIGTERM / SIGINT: finish the step, checkpoint, exit
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous_handlers[signum] = signal.signal(signum, lambda number, _: stop.setdefault("signal", number))
    try:
        train_loop(trainer, train_step, iterator, evaluator, eval_data, preemption, stop)
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def train_loop(trainer, train_step, iterator, evaluator, eval_data, preemption, stop):
    import keras

    progress = keras.utils.Progbar(FLAGS.train_steps, stateful_metrics=["bits_per_dim"]) if sys.stdout.isatty() else None
    while trainer.step < FLAGS.train_steps:
        batch = next(iterator)
        loss = preemption.run(train_step, batch) if preemption else train_step(batch)
        trainer.step += 1
        loss = float(loss)
        if not math.isfinite(loss):
            logging.error(
                "Loss is %s at step %d: stopping. The last checkpoint in %s is from before the divergence; "
                "lower --learning_rate or set --clip_norm.", loss, trainer.step, trainer.manager.directory,
            )
            raise SystemExit(1)
        if progress:
            progress.update(trainer.step, [("bits_per_dim", loss)])
        if trainer.step % FLAGS.log_every == 0:
            trainer.summary(train_bits_per_dim=loss, loss=loss, learning_rate=trainer.learning_rate())
            if not progress:
                logging.info("step %d: train bits/dim %.4f", trainer.step, loss)
        if trainer.step % FLAGS.eval_every == 0 or trainer.step == FLAGS.train_steps:
            trainer.save_checkpoint()
            if trainer.step < FLAGS.train_steps:
                trainer.evaluate(evaluator, eval_data)
        if "signal" in stop:
            trainer.save_checkpoint()
            logging.warning("Stopped by signal %d at step %d; rerun the same command to resume.", stop["signal"], trainer.step)
            raise SystemExit(128 + stop["signal"])
    trainer.finish(evaluator, eval_data)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    apply_preset()
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir: required (where checkpoints, logs and the model go).")
    strategy = make_strategy()  # before other TF work (multi-worker needs it first)
    check_flags(strategy.num_replicas_in_sync)
    train(strategy)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
