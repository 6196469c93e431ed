"""The samplers' randomness: counter-based uniforms from integer hashing, in keras.ops.

Step s of a sampling run gets uniforms that depend only on (seed, s, position
in the step's noise). They are built from exact uint32 arithmetic (xor, shift,
wrapping multiply), so they are bit-identical on every backend, with and
without XLA, whether the steps are drawn one at a time or a row at once.
"""

import numpy as np
from keras import ops

# Odd constants of the integer hash (lowbias32, C. Wellons), as NumPy uint32: a graph constant each,
# where a Python int converted to uint32 is a constant and a cast.
_GOLDEN = np.uint32(0x9E3779B9)
_MIX_1, _MIX_2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)


def normalize_seed(seed):
    """None -> a fresh random seed; int s -> [s, 0]; [2] ints pass through. Returns int64 [2]."""
    if seed is None:
        return np.random.randint(0, 2**31 - 1, size=2).astype(np.int64)
    array = np.asarray(seed)
    if array.ndim == 0 and np.issubdtype(array.dtype, np.integer):
        return np.array([int(array), 0], np.int64)
    if array.shape == (2,) and np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    raise ValueError(f"seed: expected None, an int or 2 ints, got {seed!r}.")


def seed_words(seed):
    """int64 [2] seed -> uint32 [4], the low and high 32-bit word of each part.

    A numpy seed is split on the host (JAX runs without 64-bit integers by default);
    a tensor in the graph (TensorFlow, e.g. a served request's ``seed``).
    """
    if isinstance(seed, np.ndarray):
        return seed.astype(np.int64).view(np.uint32).reshape(2, 2).reshape(-1)  # little endian: low word first
    seed = ops.cast(seed, "int64")
    # Unstack's kernel refuses a seed of another length at run time (served requests: grappler
    # folds the shape check of an input declared [2]).
    words = []
    for part in ops.unstack(seed, num=2):
        for word in (part, ops.right_shift(part, 32)):
            words.append(ops.cast(ops.bitwise_and(word, 0xFFFFFFFF), "uint32"))
    return ops.stack(words)


def _mix(x):
    """lowbias32: a 32-bit integer hash with good avalanche, on uint32 tensors (exact under XLA too)."""
    x = ops.bitwise_xor(x, ops.right_shift(x, np.uint32(16)))
    x = x * _MIX_1
    x = ops.bitwise_xor(x, ops.right_shift(x, np.uint32(15)))
    x = x * _MIX_2
    return ops.bitwise_xor(x, ops.right_shift(x, np.uint32(16)))


def seed_key(seed):
    """An int64 [2] seed (or its uint32 [4] ``seed_words``) -> a uint32 scalar key hashing all 128 bits."""
    words = seed if _is_words(seed) else seed_words(seed)
    key = _GOLDEN
    for index in range(4):
        key = _mix(ops.bitwise_xor(key, words[index]))
    return key


def _is_words(seed):
    dtype = seed.dtype if isinstance(seed, np.ndarray) else ops.dtype(seed)
    return str(dtype) == "uint32"


def uniform_noise(key, steps, batch_size, size):
    """Uniform noise in (0, 1) for the sampling steps ``steps``.

    Element (b, k) of step s is a function of (key, s, b * size + k) only
    (counter-based), so it does not depend on how many steps are drawn at once,
    on the batch size, the backend or XLA.

    Args:
      key: uint32 scalar from ``seed_key``.
      steps: int32 [S], the step indices.
      batch_size: B, an int or int32 scalar tensor.
      size: the number of uniforms per image and step (``head.noise_size``).

    Returns:
      float32 [S, B, size], values (m + 0.5) / 2**24 for integers m (never 0 or 1).
    """
    step_keys = _mix(ops.bitwise_xor(_mix(ops.cast(steps, "uint32") + _GOLDEN), key))
    counters = ops.cast(ops.reshape(ops.arange(batch_size * size), (1, batch_size, size)), "uint32")
    step_keys = step_keys[:, None, None]
    bits = _mix(ops.bitwise_xor(_mix(ops.bitwise_xor(counters, step_keys)), step_keys))
    mantissa = ops.cast(ops.right_shift(bits, np.uint32(8)), "float32")
    return (mantissa + 0.5) * (1.0 / 2**24)


def noise_dtype(model):
    """Noise is transformed in float64 for float64 models, else float32 (as the heads compute)."""
    return "float64" if model.compute_dtype == "float64" else "float32"
