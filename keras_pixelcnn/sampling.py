"""Autoregressive sampling in keras.ops: the naive sampler, and ``sampling_function`` for each backend.

H * W * C steps with the softmax head, H * W with the mixture head. Step s
gets uniform noise that is an integer hash of (seed, s, position in the step's
noise) (noise.py), so every sampler, which evaluates the same parameters,
yields the same images, on TensorFlow and on JAX, with and without XLA. The
samplers are written with ``ops.fori_loop`` and static shapes, so they run
inside a tf.function (and so export) or under jax.jit.
"""

import keras
import numpy as np
from keras import ops

from keras_pixelcnn.cached_sampler import CachedSampler
from keras_pixelcnn.noise import noise_dtype, seed_key, seed_words, uniform_noise


def resolve_jit_compile(jit_compile):
    """``jit_compile`` of ``sample``: None (auto: XLA, which TF and JAX offer on CPU and GPU), True or False -> bool."""
    if jit_compile is None:
        return True
    if isinstance(jit_compile, (bool, np.bool_)):
        return bool(jit_compile)
    raise ValueError(f"jit_compile: expected None (auto), True or False, got {jit_compile!r}.")


def sample_naive(model, batch_size, condition, temperature, seed):
    """Samples images from ``model`` by a full forward pass per step (the reference sampler).

    Args:
      model: a built PixelCNN model (ConditionalPixelCNN or PixelCNN).
      batch_size: B, an int (JAX) or int32 scalar tensor (TensorFlow).
      condition: raw condition [B] / [B, D], or None.
      temperature: float32 scalar > 0.
      seed: int64 [2] stateless seed, or its uint32 [4] ``seed_words``.

    Returns:
      [B, H, W, C] of ``model.sample_dtype`` (uint8 images, or int32 codes).
    """
    height, width, channels = model.image_shape
    head = model.head
    steps_per_pixel = head.steps_per_pixel
    rows = ops.arange(height)[:, None]
    cols = ops.arange(width)[None, :]
    key = seed_key(seed)

    def step(index, images):
        pixel, channel = index // steps_per_pixel, index % steps_per_pixel
        i, j = pixel // width, pixel % width
        params = model(images if condition is None else (images, condition), training=False)
        uniform = uniform_noise(key, ops.expand_dims(index, 0), batch_size, head.noise_size)[0]
        noise = head.noise(uniform, noise_dtype(model))
        new_pixel = head.sample_step(params[:, i, j], images[:, i, j], channel, temperature, noise)
        at_pixel = ops.logical_and(rows == i, cols == j)[None, :, :, None]
        return ops.where(at_pixel, new_pixel[:, None, None, :], images)

    images = ops.zeros((batch_size, height, width, channels), "float32")
    return ops.cast(ops.fori_loop(0, height * width * steps_per_pixel, step, images), model.sample_dtype)


def sample_cached(model, batch_size, condition, temperature, seed):
    """``CachedSampler(model)(...)``: same arguments, result and draws as ``sample_naive``."""
    return CachedSampler(model)(batch_size, condition, temperature, seed)


SAMPLERS = {"naive": sample_naive, "cached": sample_cached}


def sampling_function(model, method, jit_compile):
    """A function (batch_size, condition, temperature, seed) -> uint8 images running ``SAMPLERS[method]``.

    Args:
      model: the PixelCNN model.
      method: a key of ``SAMPLERS``.
      jit_compile: bool; True compiles the whole sampling loop with XLA, once per
        batch size and condition shape (TensorFlow: ``tf.function(jit_compile=True)``;
        JAX: ``jax.jit``). Checks of the arguments belong outside: XLA drops Assert ops.

    Returns:
      On TensorFlow a tf.function (int32 scalar, condition or None, float32 scalar,
      int64 [2]; tensors or numpy values), which export traces. On JAX a function of
      (int, condition array or None, float, int64 [2] numpy seed) that reads the
      model's current weights at every call.
    """
    sampler = SAMPLERS[method]
    run = compiled_function(model, lambda b, c, t, s: sampler(model, b, c, t, s), jit_compile, static_argnums=(0,))
    if keras.backend.backend() == "tensorflow":
        return run
    return lambda b, c, t, s: run(int(b), c, np.float32(t), seed_words(np.asarray(s)))  # JAX: no int64 in the jit


def compiled_function(model, function, jit_compile, static_argnums=()):
    """``function`` (of tensors, reading ``model``'s weights) as one compiled program per input shape.

    TensorFlow: ``tf.function`` (with XLA when ``jit_compile``), which export can trace. JAX:
    the weights become arguments (a StatelessScope), so a compiled program never keeps stale
    ones; ``jax.jit`` when ``jit_compile`` with ``static_argnums`` (JAX only), else run as is.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=bool(jit_compile), reduce_retracing=True, autograph=False)
    if backend != "jax":
        raise NotImplementedError(
            f"sample, decode: compile on the tensorflow and jax backends only; this process runs {backend!r}."
        )
    import jax

    variables = model.variables

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return function(*args)

    run = jax.jit(stateless, static_argnums=tuple(i + 1 for i in static_argnums)) if jit_compile else stateless
    return lambda *args: run([variable.value for variable in variables], *args)
