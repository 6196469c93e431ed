"""Evaluation during training: test bits/dim of the model as it will be saved, metrics.json,
TensorBoard summaries and sample grids."""

import contextlib
import os

import numpy as np
import tensorflow as tf
from absl import logging

from trainers import data as data_lib
from trainers import model_dir as layout

RECONSTRUCTION_ROWS = 8  # test images shown with their reconstructions at each evaluation (autoencoder, embedding)


class Summaries:
    """TensorBoard summaries in <model_dir>/logs, written by the chief only (no-ops elsewhere)."""

    def __init__(self, model_dir, chief):
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs")) if chief else None

    def scalars(self, step, **scalars):
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)

    def image(self, step, name, grid):
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            tf.summary.image(name, grid[None])


class ServedModel:
    """The model as model.keras holds it: float32, with the Polyak averages as weights when EMA is on.

    Under mixed precision that is a float32 twin of the trained model (made once, its weights
    copied in at each use). Evaluations and sample grids use it, so metrics.json is what
    evaluating model.keras gives.
    """

    def __init__(self, state, precision):
        self.state, self.precision = state, precision
        self._float32_model = None

    @contextlib.contextmanager
    def __call__(self):
        state = self.state
        with state.average.swapped_in(state.step) if state.average is not None else contextlib.nullcontext():
            if self.precision == "none":
                yield state.model
                return
            if self._float32_model is None:
                self._float32_model = layout.float32_copy(state.model)
            else:
                self._float32_model.set_weights(state.model.get_weights())
            yield self._float32_model


class Evaluation:
    """Evaluates the served model at the current step: ``evaluation()`` -> test bits/dim.

    Updates ``metrics`` (and <model_dir>/metrics.json, the chief's summaries and sample grid),
    between the callbacks' on_test_begin and on_test_end({loss, bits_per_dim}). A prior over a
    VQ-VAE's codes (``decoder``: the VQVAE) shows its samples decoded.
    """

    def __init__(self, config, model_dir, data, state, served, summaries, callbacks, decoder=None):
        self.config, self.model_dir, self.data, self.decoder = config, model_dir, data, decoder
        self.state, self.served, self.summaries, self.callbacks = state, served, summaries, callbacks
        self.metrics_path = os.path.join(model_dir, layout.METRICS)
        self.metrics = layout.read_json(self.metrics_path, {})
        self._eval_data = self._evaluator = self._reconstruction_inputs = None

    def __call__(self):
        from trainers.loop import make_evaluator

        step, chief = self.state.step, self.state.chief
        self.callbacks.on_test_begin()
        if self._eval_data is None:
            self._eval_data = data_lib.eval_pipeline(
                self.data, self.config.batch_size, max_examples=self.config.eval_examples
            )
        with self.served() as model:
            if self._evaluator is None:  # one traced evaluator: the served model is the same object every time
                self._evaluator = make_evaluator(model)
            bits = self._evaluator(self._eval_data)
            if chief and self.config.samples_per_class:
                self.write_samples(model)
        logging.info("step %d: test bits/dim %.4f", step, bits)
        self.metrics.setdefault("initial_test_bits_per_dim", bits)
        dataset = f"latents:{self.config.latents}" if self.config.latents else self.config.dataset
        self.metrics.update(step=step, test_bits_per_dim=bits, dataset=dataset)
        if chief:
            layout.write_json(self.metrics_path, self.metrics)
            self.summaries.scalars(step, eval_bits_per_dim=bits)
        self.callbacks.on_test_end({"loss": bits, "bits_per_dim": bits})
        return bits

    def write_samples(self, model):
        """A sample grid: one row per class (or one row), or inputs and reconstructions for auto-encoders."""
        from keras_pixelcnn.autoencoder import PixelCNNAutoEncoder
        from trainers.grids import as_grey, image_grid, reconstruction_grid

        scale = 4 if self.data.image_shape[0] < 16 else 1
        per_row, seed = self.config.samples_per_class, self.config.seed
        if isinstance(model, PixelCNNAutoEncoder):
            # One row per fixed test image: the input, then its sampled reconstructions.
            inputs = self.reconstruction_inputs()
            samples = model.reconstruct(inputs, per_row, seed=seed)
            grid = reconstruction_grid(inputs, np.asarray(samples), scale=scale)
            self._write_grid(grid, "inputs_then_reconstructions")
            return
        rows = model.num_classes or 1
        if model.num_classes:
            samples = model.sample(condition=np.repeat(np.arange(rows), per_row), seed=seed)
        else:
            samples = model.sample(num_samples=per_row, seed=seed)
        if self.decoder is not None:
            cells = np.asarray(self.decoder.decode(samples))
            scale = 4 if cells.shape[1] < 16 else 1
        else:
            cells = as_grey(samples, getattr(model, "num_categories", None))
        grid = image_grid(cells.reshape((rows, per_row) + cells.shape[1:]), scale=scale)
        self._write_grid(grid, "samples_one_row_per_class")

    def _write_grid(self, grid, summary_name):
        """The grid as samples/step_<step>.png and as a TensorBoard image."""
        from trainers.grids import write_png

        step = self.state.step
        tf.io.gfile.makedirs(os.path.join(self.model_dir, "samples"))
        write_png(os.path.join(self.model_dir, "samples", f"step_{step:08d}.png"), grid)
        self.summaries.image(step, summary_name, grid)

    def reconstruction_inputs(self):
        """The first RECONSTRUCTION_ROWS test images (fixed), uint8 [N, H, W, C]."""
        if self._reconstruction_inputs is None:
            split = self.data.split("test").take(RECONSTRUCTION_ROWS)
            self._reconstruction_inputs = np.stack([image.numpy() for image, _ in split])
        return self._reconstruction_inputs
