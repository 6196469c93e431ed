"""Every argument and input check of the library, in one place (like Keras's argument_validation).

The one combined check that needs the heads, ``model.check_pixelcnn_arguments``, lives in
model.py: this module stays below heads.py, which uses its checks (tests/test_import_graph.py).

Each check raises ValueError whose message starts with the argument's name,
then says what was expected and what was given: ``"<name>: expected ..., got ..."``.
The binaries turn such a message into a flag error by prefixing ``--`` to the
argument's name (``trainers.binary.usage_error``).

Rules shared by all checks: a bool is not an int (nor a number); numpy integer
and float scalars count as ints and floats; checks return the value normalised
(``int``, ``float``, ``tuple``).

Input checks: shape checks run on static shapes (also while tracing). Value
checks run only on concrete values (numpy arrays, eager tensors): inside a
traced or XLA-compiled step the values are unknown, and XLA would drop an
Assert op anyway.
"""

import keras
import numpy as np
from keras import ops

# -- arguments ----------------------------------------------------------------------------


def is_int(value):
    """Whether ``value`` is a Python or numpy integer (a bool is not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name, minimum):
    """``value`` as an int >= ``minimum``.

    Args:
      value: the argument.
      name: the argument's name for the message (e.g. "steps" or "--steps").
      minimum: the smallest allowed value.

    Returns:
      ``int(value)``.
    """
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}.")
    return int(value)


def check_positive_int(value, name):
    """``value`` as an int >= 1 (layers, filters, steps, batch sizes, ...); see ``check_int``."""
    return check_int(value, name, 1)


def check_rate(value, name):
    """``value`` as a float in [0, 1) (dropout rates, EMA decays).

    Returns:
      ``float(value)``.
    """
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not number or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a rate in [0, 1), got {value!r}.")
    return float(value)


def check_odd_kernel_size(value, name="kernel_size"):
    """``value`` as an odd int >= 3 (a PixelCNN layer's kernel needs a centre and a pixel on each side).

    Returns:
      ``int(value)``.
    """
    if not is_int(value) or value < 3 or value % 2 == 0:
        raise ValueError(f"{name}: expected an odd int >= 3, got {value!r}.")
    return int(value)


def check_dilation_rates(value, num_layers, name="dilation_rates"):
    """None (every layer 1) or ``num_layers`` ints >= 1 -> a tuple of ``num_layers`` ints."""
    if value is None:
        return (1,) * num_layers
    rates = tuple(value) if isinstance(value, (tuple, list)) else None
    if rates is None or len(rates) != num_layers or not all(is_int(rate) and rate >= 1 for rate in rates):
        raise ValueError(f"{name}: expected None or {num_layers} ints >= 1 (one per layer), got {value!r}.")
    return tuple(int(rate) for rate in rates)


def check_multiple(value, name, divisor, expected=None):
    """``value`` as a positive int divisible by ``divisor`` (features split into colour groups).

    Args:
      value: the argument.
      name: the argument's name for the message.
      divisor: a positive int.
      expected: what the message says was expected; default "a positive multiple of {divisor}".

    Returns:
      ``int(value)``.
    """
    if not is_int(value) or value < 1 or value % divisor:
        expected = expected or f"a positive multiple of {divisor}"
        raise ValueError(f"{name}: expected {expected}, got {value!r}.")
    return int(value)


def check_image_shape(value, name="image_shape"):
    """``value`` as (height, width, channels), each a positive int.

    Returns:
      A tuple of 3 ints.
    """
    if not isinstance(value, (tuple, list)) or len(value) != 3 or not all(is_int(d) and d >= 1 for d in value):
        raise ValueError(f"{name}: expected (height, width, channels) of positive ints, got {value!r}.")
    return tuple(int(d) for d in value)


def check_condition_shape(value, name="condition_shape"):
    """``value`` as None or (D,) with D a positive int (the shape of one float condition vector).

    Returns:
      None or a 1-tuple of an int.
    """
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 1 or not is_int(value[0]) or value[0] < 1:
        raise ValueError(f"{name}: expected (D,) with D >= 1, got {value!r}.")
    return (int(value[0]),)


def check_optional_positive_int(value, name):
    """``value`` as None or an int >= 1 (e.g. ``num_classes``)."""
    return None if value is None else check_positive_int(value, name)


def check_vector_output_shape(model, image_shape, name, dim=None):
    """Checks that ``model`` maps float32 images [B, H, W, C] to vectors [B, D] (encoders, embedding networks).

    Runs a symbolic call (no weights are created or changed).

    Args:
      model: the model to check; anything but a ``keras.Model`` fails.
      image_shape: (H, W, C) of the images it will receive.
      name: the argument's name for the message (e.g. "encoder" or "--embedding_model").
      dim: the required D, or None for any known D.

    Returns:
      D, an int.
    """
    images = f"[batch, {', '.join(map(str, image_shape))}]"
    expected = f"[batch, {'D' if dim is None else dim}]"
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"{name}: expected a keras.Model mapping images {images} to vectors {expected}, got {type(model).__name__}."
        )
    try:
        shape = tuple(model.compute_output_spec(keras.KerasTensor((None,) + tuple(image_shape), "float32")).shape)
    except Exception as error:  # any failure to take the images is the model's
        raise ValueError(
            f"{name}: expected a model taking float32 images {images} to {expected}; "
            f"calling it failed: {str(error).splitlines()[0][:300]}"
        ) from error
    if len(shape) != 2 or shape[1] is None or (dim is not None and shape[1] != dim):
        raise ValueError(f"{name}: expected outputs of shape {expected}, got shape {shape}.")
    return int(shape[1])


# -- inputs -------------------------------------------------------------------------------


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


def check_images(images, image_shape, name="images", num_categories=None):
    """Checks images [B, H, W, C] with integer values in [0, 255], or codes in [0, num_categories)."""
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
    if num_categories is not None:
        return _check_codes(values, num_categories, name)
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


def _check_codes(values, num_categories, name):
    """Integer codes in [0, num_categories) (a K-category model's inputs)."""
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name}: expected integer codes in [0, {num_categories}), got dtype {values.dtype}.")
    low, high = values.min(), values.max()
    if low < 0 or high >= num_categories:
        raise ValueError(f"{name}: expected codes in [0, {num_categories}), got values in [{low}, {high}].")


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
        if num_classes is not None:
            kind = f"class ids [batch] in [0, {num_classes})"
        else:
            kind = f"floats [batch, {condition_shape[0]}]"
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
