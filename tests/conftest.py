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
