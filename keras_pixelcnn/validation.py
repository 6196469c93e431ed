"""Input checks that raise ValueError naming the argument, the expectation and the value.

Shape checks run on static shapes (also while tracing). Value checks run only on
concrete values (numpy arrays, eager tensors): inside a traced or XLA-compiled
step the values are unknown, and XLA would drop an Assert op anyway.
"""

import numpy as np
from keras import ops


def concrete_value(x):
    """``x`` as a numpy array if its values are known now, else None (symbolic/traced)."""
    if isinstance(x, (np.ndarray, np.generic, int, float, list, tuple)):
        return np.asarray(x)
    try:
        values = x.numpy() if hasattr(x, "numpy") else ops.convert_to_numpy(x)
    except Exception:  # symbolic tensor or tracer: values unknown until run time
        return None
    return None if values.dtype == object else values  # e.g. a tf.TensorSpec


def static_shape(x):
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else np.shape(x)


def check_images(images, image_shape, name="images"):
    """Checks images [B, H, W, C] with integer values in [0, 255]."""
    shape = static_shape(images)
    expected = "[batch, " + ", ".join(str(d) for d in image_shape) + "]"
    if len(shape) != 4:
        raise ValueError(f"{name}: expected a rank-4 tensor {expected}, got shape {shape}.")
    for axis, (got, want) in enumerate(zip(shape[1:], image_shape), start=1):
        if got is not None and got != want:
            what = "channels" if axis == 3 else ("height", "width")[axis - 1]
            raise ValueError(f"{name}: expected shape {expected} ({what} {want}), got shape {shape}.")
    values = concrete_value(images)
    if values is None or values.size == 0:
        return
    if not np.issubdtype(values.dtype, np.integer) and not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"{name}: expected integer or float pixel values, got dtype {values.dtype}.")
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name}: expected finite pixel values in [0, 255], got NaN or inf.")
        if np.any(values != np.round(values)):
            raise ValueError(
                f"{name}: expected integer-valued pixels in [0, 255] (uint8, or floats holding whole numbers), "
                "got non-integer floats; do not rescale images before passing them."
            )
    low, high = values.min(), values.max()
    if low < 0 or high > 255:
        raise ValueError(f"{name}: expected pixel values in [0, 255], got values in [{low}, {high}].")


def check_condition(condition, num_classes, condition_shape, batch_size=None, name="condition"):
    """Checks the condition against the model's conditioning (None when unconditional)."""
    if num_classes is None and condition_shape is None:
        if condition is not None:
            raise ValueError(
                f"{name}: this model is unconditional (no num_classes or condition_shape), "
                "got a condition; pass images alone."
            )
        return
    if condition is None:
        kind = f"class ids [batch] in [0, {num_classes})" if num_classes is not None else f"floats [batch, {condition_shape[0]}]"
        raise ValueError(f"{name}: this model is conditional and requires {kind}, got None.")
    shape = static_shape(condition)
    if num_classes is not None:
        if len(shape) != 1:
            raise ValueError(f"{name}: expected class ids of shape [batch], got shape {shape}.")
    elif len(shape) != 2 or (shape[1] is not None and shape[1] != condition_shape[0]):
        raise ValueError(f"{name}: expected shape [batch, {condition_shape[0]}], got shape {shape}.")
    if batch_size is not None and shape[0] is not None and shape[0] != batch_size:
        raise ValueError(f"{name}: expected {batch_size} entries (one per image), got {shape[0]}.")
    values = concrete_value(condition)
    if values is None or values.size == 0:
        return
    if num_classes is not None:
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name}: expected integer class ids, got dtype {values.dtype}.")
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(
                f"{name}: expected class ids in [0, {num_classes}), got values in [{values.min()}, {values.max()}]."
            )
    elif not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: expected finite floats, got NaN or inf.")
