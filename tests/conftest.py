"""Shared test helpers: small models with random (non-zero) weights."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest


def randomize_weights(model, seed=0, scale=0.5):
    """Replaces every weight with N(0, scale^2) noise (the head starts at zero, which hides dependencies)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, scale, weight.shape).astype(weight.dtype))
    return model


def random_images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


# -- exported SavedModels (test_export.py, test_autoencoder_export.py, test_serving.py) ----------------


def call_signature(loaded_model, signature, inputs):
    """Runs one signature of a loaded SavedModel: {input name: array-like} -> {output name: numpy array}."""
    import tensorflow as tf

    outputs = loaded_model.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


@pytest.fixture(scope="module")
def loaded(exported):
    """{case name: SavedModel loaded in this process} for the module's ``exported`` fixture ({name: case.path})."""
    import tensorflow as tf

    return {name: tf.saved_model.load(case.path) for name, case in exported.items()}
