"""Shared test helpers: random weights and images, the causality probe, the binaries' flags and subprocesses."""

import gc
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Faster XLA:CPU compiles for every XLA program of the tests (TensorFlow's jit_compile, JAX, and the
# subprocesses, which inherit it), set before TensorFlow or JAX loads. Most of the suite's XLA time is
# compiling many small programs (half the core suite under JAX compiles 1,020); LLVM at -O1 and XLA's
# elemental emitters instead of its MLIR fusion emitters halve that, and at the tests' sizes the
# programs run as fast (BUILD_NOTES, "Tiers").
FAST_XLA_COMPILE = "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", FAST_XLA_COMPILE)

import numpy as np
import pytest
from absl import flags

# Fewer garbage collections: tracing and building models allocate millions of short-lived
# objects, and at Python's default thresholds (700, 10, 10) collecting took 4.1 of 82 s of two
# trainer and sampler test files (1.8 s of 75 s at these; one core each, gc.callbacks timing).
gc.set_threshold(20000, 20, 20)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The core suite: the library's layers, heads, models, likelihoods, samplers, causality and saving,
# backend-neutral.
CORE_MODULES = (
    "test_api.py",
    "test_autoencoder.py",
    "test_categories.py",
    "test_causality.py",
    "test_conditioning.py",
    "test_fast_sampling.py",
    "test_layers.py",
    "test_likelihood.py",
    "test_masks.py",
    "test_model_api.py",
    "test_sampling.py",
    "test_validation.py",
    "test_vqvae.py",
    "test_xla_sampling.py",
)

# The JAX run, `KERAS_BACKEND=jax pytest` (.ci/run's second command): the core suite, less its large tests (fits
# and grids the TensorFlow run covers) and the tensorflow_only ones (TensorFlow machinery), with 64-bit types for
# its exact float64 comparisons; and test_jax_backend.py, JAX against TensorFlow. `pytest` alone runs everything
# on TensorFlow but test_jax_backend.py.
ON_JAX = os.environ.get("KERAS_BACKEND") == "jax"
JAX_MODULES = CORE_MODULES + ("test_jax_backend.py",)
if ON_JAX:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("JAX_ENABLE_X64", "1")


def pytest_ignore_collect(collection_path):
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return (collection_path.name not in JAX_MODULES) if ON_JAX else collection_path.name == "test_jax_backend.py"
    return None


# The longest work units first (measured at 11b0bbd; the others take under 10 s): pytest.ini's
# --dist loadscope --no-loadscope-reorder hands files to the two workers in collection order, so
# that both finish together instead of one starting a long file at the end.
LONGEST_FIRST = (
    "test_jax_backend.py",
    "test_train_lib.py",
    "test_autoencoder.py",
    "test_export.py",
    "test_trainers.py",
    "test_xla_sampling.py",
    "test_autoencoder_trainers.py",
    "test_binaries.py",
    "test_fast_sampling.py",
    "test_xla_export.py",
    "test_autoencoder_export.py",
    "test_vqvae_trainers.py",
    "test_quality_bench.py",
    "test_distributed.py",
    "test_vqvae.py",
    "test_model_api.py",
    "test_readme.py",
    "test_serving.py",
    "test_categories.py",
    "test_sampling.py",
    "test_legacy_artifacts.py",
    "test_api.py",
    "test_precision.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.nodeid.rsplit("/", 1)[-1]
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if name.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: each file keeps its own order
    if ON_JAX:
        config.hook.pytest_deselected(items=[item for item in items if _tensorflow_run_only(item)])
        items[:] = [item for item in items if not _tensorflow_run_only(item)]


def _tensorflow_run_only(item):
    """A test the JAX run leaves out: marked tensorflow_only, or a large one of the core suite."""
    core_large = item.path.name in CORE_MODULES and item.get_closest_marker("large")
    return core_large or item.get_closest_marker("tensorflow_only")


def randomize_weights(model, seed=0, scale=0.5):
    """Replaces every weight with N(0, scale^2) noise (the head starts at zero, which hides dependencies)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, scale, weight.shape).astype(weight.dtype))
    return model


def random_images(shape, seed=0):
    """Uniform random uint8 images of ``shape``."""
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


# -- causality by perturbation ------------------------------------------------------------

UNCHANGED = 1e-7  # masked weights are exact zeros; allow only float noise
CHANGED = 1e-6


def dependency_matrix(model, condition=None, num_bases=3):
    """D[k, m]: largest change of output unit m when input sub-pixel k changes.

    Output units are sub-pixels for the softmax head and pixels for the mixture head.
    Inputs are 8-bit pixels, or codes in [0, K) for a model with ``num_categories=K``.
    """
    height, width, channels = model.image_shape
    levels = getattr(model, "num_categories", None) or 256
    n = height * width * channels
    deps = 0.0
    for seed in range(num_bases):
        base = np.random.default_rng(seed).integers(0, levels, (1, height, width, channels))
        batch = np.repeat(base, n + 1, axis=0).astype(np.int64)
        for k in range(n):
            i, j, c = np.unravel_index(k, (height, width, channels))
            batch[k + 1, i, j, c] = (batch[k + 1, i, j, c] + levels // 2) % levels
        batch = batch.astype(np.uint8 if levels == 256 else np.int32)
        # Each perturbed image is compared with the base image at the same batch position:
        # CPU convolutions (Eigen's on AVX2 machines) may round the same row differently at
        # another position, while masked taps are exact zeros wherever the row is.
        conditions = None if condition is None else np.repeat(condition, n + 1, axis=0)
        run = lambda images: np.asarray(model(images if conditions is None else (images, conditions)))
        out, reference = run(batch), run(np.repeat(batch[:1], n + 1, axis=0))
        units = n if model.head.name == "softmax" else height * width
        change = np.abs(out[1:] - reference[1:]).reshape(n, units, -1).max(axis=-1)
        deps = np.maximum(deps, change)
    return deps


# -- the binaries: flags in-process, environment of subprocesses -------------------------------

TINY = ["--num_layers=2", "--filters=8", "--kernel_size=3", "--batch_size=16"]


def parse_flags(module, argv):
    """Parses ``argv`` as binary ``module`` would (absl flags reset first)."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS([module.__name__] + argv)


def run_main(module, argv):
    """Parses ``argv`` as the binary would and calls its main (flags reset in between)."""
    parse_flags(module, argv)
    return module.main([module.__name__])


def subprocess_env(**extra):
    """The environment of a test's subprocess: this checkout importable, TF quiet, CPU only, plus ``extra``."""
    return {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", **extra}


@pytest.fixture(autouse=True)
def _seed():
    """Each test starts from seed 0: what keras.utils.set_random_seed(0) resets, but TensorFlow's kernel cache.

    Its tf.random.set_seed also clears TensorFlow's eager kernel cache (to restart stateful random
    kernels; the library draws statelessly), so every function a module fixture had traced or loaded
    was instantiated and optimized again in every test: ~0.3 s per exported sampling signature, 34 s of
    CPU in the export and serving files. So the seeds are reset one by one: Python's, NumPy's, Keras's
    global SeedGenerator and, once TensorFlow is loaded, its eager global seed and op-seed sequence
    (the two attributes tf.random.set_seed sets).
    """
    import random

    from keras.src.backend.common import global_state  # here: the xdist controller never imports Keras
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED

    random.seed(0)
    np.random.seed(0)
    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, 0)
    global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)  # rebuilt from the seed on first use
    if "tensorflow" in sys.modules:
        from tensorflow.python.eager import context

        eager = context.context()
        eager._seed, eager._rng = 0, random.Random(0)


# -- exported SavedModels (test_export.py, test_autoencoder_export.py, test_serving.py) ----------------


def call_signature(loaded_model, signature, inputs):
    """Runs one signature of a loaded SavedModel: {input name: array-like} -> {output name: numpy array}."""
    import tensorflow as tf

    outputs = loaded_model.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


def saved_model_cli(*argv):
    """Runs TensorFlow's ``saved_model_cli`` command line in this process; returns what it printed.

    The installed ``saved_model_cli`` script is ``saved_model_cli.main``: absl parses its flags, then
    its argparse parser picks the command (show, run). This does the same minus ``app.run``, so an
    error is raised here (a failed ``run`` raises the graph's InvalidArgumentError) instead of exiting,
    and the suite saves a TensorFlow start-up per command. The session-based loader it drives (TF1's
    ``loader.load`` in a ``Session``, as TF-Serving's) is the same in any process.
    """
    import contextlib
    import io

    from tensorflow.python.tools import saved_model_cli as cli

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["saved_model_cli", *argv])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cli.create_parser().parse_args(list(argv)).func()
    return printed.getvalue()


@pytest.fixture(scope="module")
def loaded(exported):
    """{case name: SavedModel loaded in this process} for the module's ``exported`` fixture ({name: case.path})."""
    import tensorflow as tf

    return {name: tf.saved_model.load(case.path) for name, case in exported.items()}
