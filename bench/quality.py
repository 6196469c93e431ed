"""Test bits/dim per wall-clock: the trainer's default recipe against ``tfp.distributions.PixelCNN``.

    python bench/quality.py --dataset=digits --minutes=10 --baseline=tfp|none [--override=learning_rate=0.005]

In one process, one after the other, on the same data (trainers/data.py: ``digits``, a tfds name,
``npz:PATH``, ``folder:PATH``), the same training pipeline and batch size and the same test split:

* project: the class-conditional model trained by ``trainers.train_lib.train_and_evaluate`` (the code
  behind ``python -m trainers.train``) with TrainConfig's defaults plus any ``--override``s, and a
  ``WallClockBudget`` callback that stops it once the budget of training time is used;
* baseline: ``tfp.distributions.PixelCNN`` (PixelCNN++), class-conditional on one-hot labels, with the
  settings its docstring recommends (num_resnet=1, num_hierarchies=2, num_logistic_mix=5,
  dropout_p=0.3, Adam 1e-3) and ``num_filters`` chosen so its parameter count is closest to the
  project model's; its images are floats in [0, 255] (tfp's ``low=0, high=255`` convention).

Training time is the wall-clock time spent in training steps (reading the batch, the forward and
backward pass and the update); evaluation, sample grids and checkpoints are outside it. The first
steps' tracing counts, for both sides. Both sides are evaluated (test bits/dim, bits/dim =
-log p(x) / (H*W*C*ln 2)) at the start, about every ``--eval_minutes`` of training time and at the end
of the budget. The project evaluates every ``eval_every`` steps (one Keras "epoch" of the trainer), so
``eval_every`` is chosen from a short timing run of the same config (``--calibration_seconds``) unless
given; the baseline evaluates when its training clock crosses each mark. With ``lr_schedule=cosine``
and no ``train_steps`` override the cosine decays over 1.25 times the steps the budget is expected to hold
(the timing run's estimate is noisy on a shared machine).

Prints both curves, the parameter counts, and finally one line
``quality: project_bpd=X baseline_bpd=Y ratio=Z`` (ratio = project / baseline; ``nan`` without a
baseline). Writes ``quality.json`` (curves and settings), ``project_samples.png`` and
``baseline_samples.png`` (one row per class) under ``--out_dir``.

Numbers depend on the machine's load: run on an idle machine when comparing runs.
"""

import dataclasses
import json
import math
import os
import shutil
import sys
import time
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's modules

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from trainers import data as data_lib  # noqa: E402
from trainers import train_lib  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.grids import image_grid, write_png  # noqa: E402

UNLIMITED_STEPS = 10**9  # train_steps of a budgeted run: the budget stops it
BASELINE_SETTINGS = dict(num_resnet=1, num_hierarchies=2, num_logistic_mix=5, dropout_p=0.3)  # tfp's docstring
BASELINE_LEARNING_RATE = 1e-3
# lr_schedule=cosine: decay over this many times the steps the timing run predicts for the budget. On a shared
# machine the prediction is noisy; too few steps would end the run early with the budget unused, too many leave
# the learning rate at ~10% of its peak (cosine at 80% of its length) when the budget ends.
COSINE_STEPS_MARGIN = 1.25


@dataclasses.dataclass
class Point:
    """One evaluation: training seconds so far, steps so far, test bits/dim."""

    seconds: float
    step: int
    bits_per_dim: float


class WallClockBudget(keras.callbacks.Callback):
    """Stops ``train_and_evaluate`` after ``seconds`` of training time and records the test curve.

    The clock runs only between on_train_batch_begin and on_train_batch_end (one step, its batch
    included), so evaluations (on_test_begin .. on_test_end, sample grids included) and checkpoints
    are not counted. ``points`` gets the initial evaluation and one Point per on_epoch_end
    (every ``eval_every`` steps, and the final evaluation after the stop).
    """

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.elapsed = 0.0
        self.steps = 0
        self.step_seconds = []  # duration of every step
        self.points = []
        self.num_params = None
        self._started = None

    def on_train_begin(self, logs=None):
        self.num_params = self.model.count_params()

    def on_train_batch_begin(self, batch, logs=None):
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        duration = time.perf_counter() - self._started
        self.step_seconds.append(duration)
        self.elapsed += duration
        self.steps += 1
        if self.elapsed >= self.seconds:
            self.model.stop_training = True

    def on_test_end(self, logs=None):
        if self.steps == 0 and not self.points:  # the evaluation before training
            self.points.append(Point(0.0, 0, float(logs["bits_per_dim"])))

    def on_epoch_end(self, epoch, logs=None):
        if "val_bits_per_dim" in (logs or {}):  # a PixelCNN run's evaluation (a VQ-VAE's fit has none)
            self.points.append(Point(self.elapsed, self.steps, float(logs["val_bits_per_dim"])))


def parse_overrides(items):
    """``["learning_rate=0.005", "num_layers=8"]`` -> {field: value} typed like TrainConfig's field ("none": None)."""
    types = typing.get_type_hints(TrainConfig)
    overrides = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or name not in types:
            raise ValueError(f"override: expected FIELD=VALUE with a TrainConfig field, got {item!r}.")
        args = typing.get_args(types[name])  # (int, NoneType) for Optional[int], () for int
        kind = next((arg for arg in args if arg is not type(None)), types[name])
        if text.lower() == "none" and type(None) in args:
            overrides[name] = None
        elif kind is bool:
            overrides[name] = text.lower() in ("1", "true", "yes")
        else:
            try:
                overrides[name] = kind(text)  # int, float or str
            except ValueError:
                raise ValueError(f"override: {name}: expected {kind.__name__}, got {text!r}.") from None
    return overrides


def measure_step_seconds(config, model_dir, seconds):
    """Median seconds per training step of ``config`` (the first 3 steps, tracing, left out), timed for ``seconds``."""
    timer = WallClockBudget(seconds)
    config = config.replace(train_steps=UNLIMITED_STEPS, eval_every=UNLIMITED_STEPS, samples_per_class=0,
                            eval_examples=config.batch_size)  # fmt: skip
    train_lib.train_and_evaluate(config, model_dir, callbacks=[timer])
    shutil.rmtree(model_dir, ignore_errors=True)
    steady = timer.step_seconds[3:] or timer.step_seconds
    return float(np.median(steady)), timer.num_params


def train_project(config, model_dir, seconds, out_dir):
    """Trains ``config`` with train_lib for ``seconds`` of training time; (WallClockBudget, sample PNG or None)."""
    budget = WallClockBudget(seconds)
    train_lib.train_and_evaluate(config, model_dir, callbacks=[budget])
    grids = sorted(tf.io.gfile.glob(os.path.join(model_dir, "samples", "step_*.png")))
    png = None
    if grids:  # the trainer's grid from the final evaluation
        png = os.path.join(out_dir, "project_samples.png")
        shutil.copyfile(grids[-1], png)
    return budget, png


def make_baseline(image_shape, num_classes, num_filters):
    """tfp's class-conditional PixelCNN (its recommended settings) with ``num_filters``; (dist, trainable variables)."""
    import tensorflow_probability as tfp

    dist = tfp.distributions.PixelCNN(
        image_shape, conditional_shape=(num_classes,), num_filters=num_filters, **BASELINE_SETTINGS
    )
    return dist, dist.network.trainable_variables


def count(variables):
    """Number of weights in ``variables``."""
    return int(sum(np.prod(v.shape) for v in variables))


def match_baseline_filters(image_shape, num_classes, target_params):
    """The num_filters whose tfp PixelCNN parameter count is closest to ``target_params``.

    The count is a quadratic in num_filters (convolutions, plus linear terms for the class projection
    and the output layer), so three builds determine it.
    """
    samples = [4, 8, 16]
    counts = [count(make_baseline(image_shape, num_classes, f)[1]) for f in samples]
    a, b, c = np.polyfit(samples, counts, 2)
    candidates = range(1, 513)
    return min(candidates, key=lambda f: abs(a * f * f + b * f + c - target_params))


def baseline_evaluator(dist, num_classes):
    """A function eval_data (uint8 images, int32 labels) -> mean test bits/dim of ``dist``, dropout off.

    Its tf.function is traced once, not at every evaluation.
    """
    image_dims = int(np.prod(dist.event_shape))

    @tf.function(reduce_retracing=True)
    def batch_bits(images, labels):
        log_prob = dist.log_prob(tf.cast(images, tf.float32), conditional_input=tf.one_hot(labels, num_classes),
                                 training=False)  # fmt: skip
        return tf.reduce_sum(-log_prob / (image_dims * math.log(2.0)))

    def evaluate(eval_data):
        total, examples = 0.0, 0
        for images, labels in eval_data:
            total += float(batch_bits(images, labels))
            examples += int(images.shape[0])
        return total / max(examples, 1)

    return evaluate


def train_baseline(dist, variables, data, batch_size, seconds, eval_seconds, seed, eval_examples=0):
    """Trains ``dist`` (Adam 1e-3) for ``seconds`` of training time, evaluated every ``eval_seconds``.

    The first step runs eagerly (tfp's weight normalisation initialises from the first batch's data).
    Evaluates the first ``eval_examples`` test images (0: all), as the project's config does.
    Returns (the test curve, seconds of the first two steps: the eager one and the traced one, seconds of the last).
    """
    import tf_keras

    num_classes = data.num_classes
    tf.random.set_seed(seed)
    optimizer = tf_keras.optimizers.Adam(BASELINE_LEARNING_RATE)
    image_dims = int(np.prod(dist.event_shape))

    def loss_and_update(images, labels):
        with tf.GradientTape() as tape:
            log_prob = dist.log_prob(tf.cast(images, tf.float32), conditional_input=tf.one_hot(labels, num_classes),
                                     training=True)  # fmt: skip
            loss = -tf.reduce_mean(log_prob)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss / (image_dims * math.log(2.0))

    step_function = tf.function(loss_and_update)
    iterator = iter(data_lib.train_pipeline(data, batch_size, seed))
    eval_data = data_lib.eval_pipeline(data, batch_size, max_examples=eval_examples)
    evaluate = baseline_evaluator(dist, num_classes)
    points = [Point(0.0, 0, evaluate(eval_data))]
    elapsed, steps, next_mark, first_steps_seconds = 0.0, 0, eval_seconds, 0.0
    while elapsed < seconds:
        started = time.perf_counter()
        images, labels = next(iterator)
        loss = float((loss_and_update if steps == 0 else step_function)(images, labels))
        last_step_seconds = time.perf_counter() - started
        elapsed += last_step_seconds
        steps += 1
        if steps == 2:
            first_steps_seconds = elapsed
        if not math.isfinite(loss):
            raise FloatingPointError(f"baseline: loss is {loss} at step {steps}.")
        if elapsed >= next_mark or elapsed >= seconds:
            points.append(Point(elapsed, steps, evaluate(eval_data)))
            while next_mark <= elapsed:
                next_mark += eval_seconds
    return points, first_steps_seconds, last_step_seconds


def write_baseline_samples(dist, image_shape, num_classes, per_class, path, seed=0):
    """A grid of ``per_class`` samples of ``dist`` per class (one row per class) as a PNG at ``path``."""
    condition = tf.one_hot(np.repeat(np.arange(num_classes), per_class), num_classes)

    @tf.function
    def sample(condition):
        return dist.sample(num_classes * per_class, seed=seed, conditional_input=condition)

    images = np.clip(np.round(sample(condition).numpy()), 0, 255).astype(np.uint8)
    height = image_shape[0]
    grid = image_grid(images.reshape(num_classes, per_class, *image_shape), scale=4 if height < 16 else 1)
    write_png(path, grid)
    return path


def curve_table(project, baseline):
    """Both curves side by side: one row per evaluation (mark) index."""
    lines = [
        f"{'eval':>4}  {'project min':>11} {'step':>7} {'bits/dim':>8}  {'tfp min':>7} {'step':>7} {'bits/dim':>8}"
    ]
    for index in range(max(len(project), len(baseline))):
        cells = []
        for curve, width in ((project, 11), (baseline, 7)):
            if index < len(curve):
                point = curve[index]
                cells.append(f"{point.seconds / 60:>{width}.2f} {point.step:>7d} {point.bits_per_dim:>8.4f}")
            else:
                cells.append(" " * (width + 17))
        lines.append(f"{index:>4}  " + "  ".join(cells))
    return "\n".join(lines)


def quality_line(project_bpd, baseline_bpd):
    """The final line: ``quality: project_bpd=X baseline_bpd=Y ratio=Z`` (nan without a baseline)."""
    ratio = project_bpd / baseline_bpd if math.isfinite(baseline_bpd) else float("nan")
    return f"quality: project_bpd={project_bpd:.4f} baseline_bpd={baseline_bpd:.4f} ratio={ratio:.4f}"


def _calibrated_config(dataset, seconds, eval_seconds, out_dir, overrides, eval_every, calibration_seconds,
                       samples_per_class, seed, log):  # fmt: skip
    """The project's TrainConfig for the budget -> (config, the opened data set, calibrated seconds per step or None).

    eval_every (when 0) and a cosine schedule's train_steps come from a timing run of ``calibration_seconds``.
    """
    config = TrainConfig(**{**overrides, "dataset": dataset, "seed": seed, "samples_per_class": samples_per_class})
    config = config.replace(train_steps=overrides.get("train_steps", UNLIMITED_STEPS), eval_every=UNLIMITED_STEPS)
    data = data_lib.open_dataset(config.dataset, config.data_dir, config.num_classes)
    if data.num_classes is None:
        raise ValueError(f"dataset={dataset}: has no labels; the benchmark trains class-conditional models.")
    cosine_steps = config.lr_schedule == "cosine" and "train_steps" not in overrides
    step_seconds = None
    if not eval_every or cosine_steps:
        calibration_dir = os.path.join(out_dir, "calibration_run")
        shutil.rmtree(calibration_dir, ignore_errors=True)
        step_seconds, _ = measure_step_seconds(config, calibration_dir, calibration_seconds)
        log(f"project: {step_seconds * 1000:.1f} ms/step (median over {calibration_seconds:.0f} s of training)")
    eval_every = eval_every or max(1, round(eval_seconds / step_seconds))
    config = config.replace(eval_every=eval_every)
    if cosine_steps:
        config = config.replace(train_steps=max(1, round(COSINE_STEPS_MARGIN * seconds / step_seconds)))
    log(f"project config: {config.to_json()}")
    return config, data, step_seconds


def run(dataset, minutes, baseline, out_dir, overrides=None, eval_minutes=2.0, eval_every=0, calibration_seconds=30.0,
        samples_per_class=8, baseline_filters=0, seed=0, log=print):  # fmt: skip
    """Runs the benchmark; returns a dict of results (also written to ``<out_dir>/quality.json``) with ``line``.

    Args:
      dataset: what ``--dataset`` of the trainer takes.
      minutes: training-time budget of each side.
      baseline: "tfp" or "none".
      out_dir: results, sample grids and the project's model_dir (``project_run``, replaced).
      overrides: {TrainConfig field: value} on top of the defaults (train_steps, eval_every, dataset,
        samples_per_class and seed are the bench's).
      eval_minutes: training time between evaluations (about).
      eval_every: the project's steps between evaluations (0: from a timing run of ``calibration_seconds``).
      samples_per_class: columns of the sample grids (0: none).
      baseline_filters: tfp's num_filters (0: matched to the project's parameter count).
      log: where progress lines go.
    """
    os.makedirs(out_dir, exist_ok=True)
    seconds, eval_seconds = 60.0 * minutes, 60.0 * eval_minutes
    overrides = dict(overrides or {})
    config, data, step_seconds = _calibrated_config(
        dataset, seconds, eval_seconds, out_dir, overrides, eval_every, calibration_seconds, samples_per_class,
        seed, log,
    )  # fmt: skip

    load = {"project_start": os.getloadavg()[0]}
    project_dir = os.path.join(out_dir, "project_run")
    shutil.rmtree(project_dir, ignore_errors=True)
    budget, project_png = train_project(config, project_dir, seconds, out_dir)
    load["project_end"] = os.getloadavg()[0]
    project_params = budget.num_params
    log(f"project: {project_params} parameters, {budget.steps} steps in {budget.elapsed:.1f} s of training")

    first_steps = {"project": sum(budget.step_seconds[:2])}
    last_steps = {"project": budget.step_seconds[-1]}
    baseline_points, baseline_params, baseline_png, filters = [], None, None, None
    if baseline == "tfp":
        filters = baseline_filters or match_baseline_filters(data.image_shape, data.num_classes, project_params)
        dist, variables = make_baseline(data.image_shape, data.num_classes, filters)
        baseline_params = count(variables)
        log(f"baseline: tfp PixelCNN num_filters={filters}, {baseline_params} parameters "
            f"({BASELINE_SETTINGS}, Adam {BASELINE_LEARNING_RATE})")  # fmt: skip
        load["baseline_start"] = os.getloadavg()[0]
        baseline_points, first_steps["baseline"], last_steps["baseline"] = train_baseline(
            dist, variables, data, config.batch_size, seconds, eval_seconds, seed, config.eval_examples
        )
        load["baseline_end"] = os.getloadavg()[0]
        if samples_per_class:
            baseline_png = write_baseline_samples(dist, data.image_shape, data.num_classes, samples_per_class,
                                                  os.path.join(out_dir, "baseline_samples.png"), seed)  # fmt: skip
    elif baseline != "none":
        raise ValueError(f"baseline: expected 'tfp' or 'none', got {baseline!r}.")

    project_bpd = budget.points[-1].bits_per_dim
    baseline_bpd = baseline_points[-1].bits_per_dim if baseline_points else float("nan")
    line = quality_line(project_bpd, baseline_bpd)
    results = dict(
        dataset=dataset, minutes=minutes, eval_minutes=eval_minutes, config=json.loads(config.to_json()),
        overrides=overrides, calibrated_step_seconds=step_seconds, project_params=project_params,
        baseline_params=baseline_params, baseline_filters=filters,
        baseline_settings=dict(BASELINE_SETTINGS, learning_rate=BASELINE_LEARNING_RATE),
        project=[dataclasses.asdict(p) for p in budget.points],
        baseline=[dataclasses.asdict(p) for p in baseline_points],
        first_two_steps_seconds=first_steps, last_step_seconds=last_steps, load_average_1min=load,
        project_samples=project_png, baseline_samples=baseline_png, line=line,
    )  # fmt: skip
    with open(os.path.join(out_dir, "quality.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    log(curve_table(budget.points, baseline_points))
    log(
        f"parameters: project {project_params}, baseline {baseline_params}; 1-minute load average {load}; "
        f"first two steps (tracing, counted): {first_steps} s"
    )
    log(f"samples: {project_png}, {baseline_png}")
    log(line)
    return results


def define_flags():
    """The command line's flags (defined only when run as a program, so tests can import this module)."""
    flags.DEFINE_string("dataset", "digits", "What the trainer's --dataset takes: digits, a tfds name, npz:PATH, "
                        "folder:PATH.")  # fmt: skip
    flags.DEFINE_float("minutes", 10.0, "Training-time budget of each side, in minutes (evaluation excluded).")
    flags.DEFINE_enum("baseline", "tfp", ["tfp", "none"], "The baseline trained beside the project model.")
    flags.DEFINE_string("out_dir", "/tmp/quality_bench", "Results, sample grids and the project's model_dir.")
    flags.DEFINE_list("override", [], "TrainConfig fields on top of the defaults, e.g. learning_rate=0.005,"
                      "lr_schedule=cosine,ema_decay=0.999.")  # fmt: skip
    flags.DEFINE_float("eval_minutes", 2.0, "Training time between evaluations, in minutes (about).")
    flags.DEFINE_integer("eval_every", 0, "Project steps between evaluations (0: timed to match --eval_minutes).")
    flags.DEFINE_float("calibration_seconds", 30.0, "Training time of the timing run that chooses eval_every.")
    flags.DEFINE_integer("samples_per_class", 8, "Columns of the sample grids (0: no grids).")
    flags.DEFINE_integer("baseline_filters", 0, "tfp's num_filters (0: matched to the project's parameter count).")
    flags.DEFINE_integer("seed", 0, "Seed of both sides' initialisation and data order.")


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    run(
        FLAGS.dataset, FLAGS.minutes, FLAGS.baseline, FLAGS.out_dir, parse_overrides(FLAGS.override),
        eval_minutes=FLAGS.eval_minutes, eval_every=FLAGS.eval_every, calibration_seconds=FLAGS.calibration_seconds,
        samples_per_class=FLAGS.samples_per_class, baseline_filters=FLAGS.baseline_filters, seed=FLAGS.seed,
    )  # fmt: skip


if __name__ == "__main__":
    define_flags()
    app.run(main)
