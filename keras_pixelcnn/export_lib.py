"""TF-Serving export: a PixelCNN model -> ``<export_base>/<version>/`` (a SavedModel).

Signatures (flat dicts of named tensors, batch dimension B):

  * ``serving_default`` (sampling). Inputs: the conditioning -- ``class_ids``
    int32 [B] (``num_classes`` models), ``condition`` float32 [B, D]
    (``condition_shape=(D,)`` models) or ``num_samples`` int32 scalar
    (unconditional models) -- plus ``seed`` int64 [2] and ``temperature``
    float32 scalar. Output: ``images`` uint8 [B, H, W, C], identical to
    ``model.sample(..., seed=seed)`` (an export with ``jit_compile=True`` runs
    the same sampler XLA-compiled, with the same draws).
  * ``log_prob``. Inputs: ``images`` uint8 [B, H, W, C] plus ``class_ids`` or
    ``condition`` for conditional models. Outputs: ``log_prob`` (nats) and
    ``bits_per_dim``, float32 [B].

A K-category model (``num_categories=K``) exports the same two with int32 codes
in place of uint8 images: ``images`` int32 [B, H, W, C] in [0, K) in and out.

A ``PixelCNNAutoEncoder`` (or ``EmbeddingConditionedPixelCNN``) exports four:

  * ``encode``: ``images`` uint8 [B, H, W, C] -> ``condition`` float32 [B, D],
    the codes h, equal to ``model.encode(images)``.
  * ``serving_default``: sampling from codes, the decoder's vector-conditioned
    signature above (``condition``, ``seed``, ``temperature`` -> ``images``),
    identical to ``model.sample(condition, temperature, seed)``.
  * ``reconstruct``: ``images``, ``seed``, ``temperature`` -> ``images``, one
    sampled reconstruction per input, identical to
    ``model.reconstruct(images, 1, temperature, seed)[:, 0]``.
  * ``log_prob``: ``images`` -> ``log_prob`` (nats) and ``bits_per_dim`` of
    each image given its own code, equal to ``model.log_prob(images)``.

Each model kind has one table (``signature_table``): signature name ->
(inputs, function). The inputs (``InputSpec``) give each input's dtype and the
shape a request must have; the declared signatures, the in-graph checks, the
warm-up requests and ``assets.extra/pixelcnn_export.json`` are all derived
from them.

Bad requests fail inside the graph with INVALID_ARGUMENT and a message naming
the input. Every input is declared with its dtype and an unknown shape, and
checked in three stages chained by control dependencies (so they also run in
TF-Serving's session loader): (1) shapes against the ``InputSpec`` (declared
shapes would let grappler fold a rank check away, and an op's own error, which
names no input, would fire first); (2) batch sizes, from the shapes alone: at
least one, at most ``max_batch_size``, the same for every batched input, and
``num_samples`` in [1, max_batch_size]; (3) values: class ids in
[0, num_classes), codes in [0, K), finite conditions, 0 < temperature < inf. Nothing beyond the
request tensors is allocated before (2) passes, and no computation starts
before (3) passes.

The version directory is built beside its final place under a non-numeric
name (``.tmp-export-...``, which TF-Serving ignores) and renamed when complete;
on file systems without an atomic directory rename (gs://, ram://) it is built
in a local temporary directory and copied file by file, saved_model.pb last.
"""

import dataclasses
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable

import numpy as np
import tensorflow as tf

SAMPLE_SIGNATURE = "serving_default"
LOG_PROB_SIGNATURE = "log_prob"
ENCODE_SIGNATURE = "encode"
RECONSTRUCT_SIGNATURE = "reconstruct"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
EXPORT_INFO_FILE = os.path.join("assets.extra", "pixelcnn_export.json")
TEMP_PREFIX = ".tmp-export-"
DEFAULT_MAX_BATCH_SIZE = 256


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input of a signature.

    Attributes:
      name: the input's name in the signature.
      dtype: numpy dtype name ("uint8", "int32", "int64", "float32").
      shape: the shape a request must have: () for a scalar; a leading None is
        the batch dimension B.
      unit: what one batch entry is, for messages ("image", "class id", "row");
        None for unbatched inputs.
      num_classes: for ``class_ids``: ids must lie in [0, num_classes).
      num_categories: for a K-category model's ``images`` (int32 codes): codes must lie in [0, K).
    """

    name: str
    dtype: str
    shape: tuple
    unit: str | None = None
    num_classes: int | None = None
    num_categories: int | None = None

    @property
    def batched(self):
        return bool(self.shape) and self.shape[0] is None

    def tensor_spec(self):
        """The declared input: dtype and unknown shape (the shape is checked in the graph)."""
        return tf.TensorSpec(None, self.dtype, name=self.name)

    def shape_text(self):
        """E.g. "[batch, 28, 28, 1]", "[2]" or "[] (a scalar)"."""
        dims = ", ".join("batch" if d is None else str(d) for d in self.shape)
        return f"[{dims}]" if self.shape else "[] (a scalar)"

    def static_shape(self):
        """The shape with -1 for the batch dimension (a tf.reshape target)."""
        return [-1 if d is None else d for d in self.shape]

    def warmup_value(self):
        """A small valid value: batch 1 of zeros; scalars are 1 (num_samples and temperature must be > 0)."""
        if not self.shape:
            return np.ones([], self.dtype)
        return np.zeros([1 if d is None else d for d in self.shape], self.dtype)


@dataclasses.dataclass(frozen=True)
class Signature:
    """One exported signature.

    Attributes:
      inputs: its InputSpecs, the batched ones first (the first is the batch
        the others must match).
      function: (checked inputs {name: tensor of the spec's static shape},
        batch size int32 scalar) -> {output name: tensor}.
    """

    inputs: tuple
    function: Callable


SEED = InputSpec("seed", "int64", (2,))
TEMPERATURE = InputSpec("temperature", "float32", ())
NUM_SAMPLES = InputSpec("num_samples", "int32", ())


def model_kind(model):
    """``model``'s kind: "autoencoder", "code_prior", "class", "vector" or "unconditional" (its signature table)."""
    from keras_pixelcnn.autoencoder import PixelCNNAutoEncoder
    from keras_pixelcnn.vqvae import VQVAEPrior

    if isinstance(model, PixelCNNAutoEncoder):
        return "autoencoder"
    if isinstance(model, VQVAEPrior):
        return "code_prior"
    if model.num_classes is not None:
        return "class"
    return "unconditional" if model.condition_shape is None else "vector"


def _images_spec(model):
    """uint8 images, or a K-category model's int32 codes (checked to lie in [0, K))."""
    num_categories = getattr(model, "num_categories", None)
    dtype = "uint8" if num_categories is None else "int32"
    return InputSpec("images", dtype, (None,) + tuple(model.image_shape), "image", num_categories=num_categories)


def _conditioning_specs(model):
    """The conditioning inputs of a PixelCNN's signatures: () or (class_ids,) or (condition,)."""
    if model.num_classes is not None:
        return (InputSpec("class_ids", "int32", (None,), "class id", num_classes=model.num_classes),)
    if model.condition_shape is not None:
        return (InputSpec("condition", "float32", (None,) + tuple(model.condition_shape), "row"),)
    return ()


def _sampler(model, jit_compile=False):
    """The model's default sampler (cached for ConditionalPixelCNN): (batch, condition, temperature, seed) -> images.

    With ``jit_compile`` it is an XLA-compiled function (``_XlaMustCompile``); the
    request checks stay outside it (XLA drops Assert ops).
    """
    from keras_pixelcnn.sampling import sampling_function

    return sampling_function(model, model.sampling_methods[0], jit_compile)


def _pixelcnn_table(model, jit_compile=False):
    """Signatures of a ConditionalPixelCNN / PixelCNN (class, vector or unconditional)."""
    from keras_pixelcnn.heads import bits_per_dim

    conditioning = _conditioning_specs(model)
    condition_name = conditioning[0].name if conditioning else None
    sample = _sampler(model, jit_compile)

    def sample_function(inputs, batch):
        condition = inputs.get(condition_name)
        return {"images": sample(batch, condition, inputs["temperature"], inputs["seed"])}

    def log_prob_function(inputs, batch):
        nats = model.log_prob(inputs["images"], inputs.get(condition_name))
        return {"log_prob": nats, "bits_per_dim": bits_per_dim(nats, model.image_shape)}

    return {
        SAMPLE_SIGNATURE: Signature((conditioning or (NUM_SAMPLES,)) + (SEED, TEMPERATURE), sample_function),
        LOG_PROB_SIGNATURE: Signature((_images_spec(model),) + conditioning, log_prob_function),
    }


def _autoencoder_table(model, jit_compile=False):
    """Signatures of a PixelCNNAutoEncoder / EmbeddingConditionedPixelCNN."""
    from keras_pixelcnn.heads import bits_per_dim

    images = _images_spec(model)
    codes = InputSpec("condition", "float32", (None, model.bottleneck_dim), "row")
    sample = _sampler(model.decoder, jit_compile)

    def encode_function(inputs, batch):
        return {"condition": model.encode(inputs["images"])}

    def sample_function(inputs, batch):
        return {"images": sample(batch, inputs["condition"], inputs["temperature"], inputs["seed"])}

    def reconstruct_function(inputs, batch):
        return {"images": sample(batch, model.encode(inputs["images"]), inputs["temperature"], inputs["seed"])}

    def log_prob_function(inputs, batch):
        nats = model.log_prob(inputs["images"])
        return {"log_prob": nats, "bits_per_dim": bits_per_dim(nats, model.image_shape)}

    return {
        ENCODE_SIGNATURE: Signature((images,), encode_function),
        SAMPLE_SIGNATURE: Signature((codes, SEED, TEMPERATURE), sample_function),
        RECONSTRUCT_SIGNATURE: Signature((images, SEED, TEMPERATURE), reconstruct_function),
        LOG_PROB_SIGNATURE: Signature((images,), log_prob_function),
    }


def _code_prior_table(model, jit_compile=False):
    """Signatures of a VQVAEPrior: sampling returns decoded images and their codes; log_prob scores images' codes."""
    from keras_pixelcnn.heads import bits_per_dim

    prior = model.prior
    conditioning = _conditioning_specs(prior)
    condition_name = conditioning[0].name if conditioning else None
    sample = _sampler(prior, jit_compile)

    def sample_function(inputs, batch):
        codes = sample(batch, inputs.get(condition_name), inputs["temperature"], inputs["seed"])
        return {"images": model.vqvae.decoded_images(codes), "codes": codes}  # in range by construction

    def log_prob_function(inputs, batch):
        nats = model.log_prob(inputs["images"], inputs.get(condition_name))
        return {"log_prob": nats, "bits_per_dim": bits_per_dim(nats, prior.image_shape)}

    images = InputSpec("images", "uint8", (None,) + tuple(model.image_shape), "image")
    return {
        SAMPLE_SIGNATURE: Signature((conditioning or (NUM_SAMPLES,)) + (SEED, TEMPERATURE), sample_function),
        LOG_PROB_SIGNATURE: Signature((images,) + conditioning, log_prob_function),
    }


SIGNATURE_TABLES = {
    "code_prior": _code_prior_table,
    "class": _pixelcnn_table,
    "vector": _pixelcnn_table,
    "unconditional": _pixelcnn_table,
    "autoencoder": _autoencoder_table,
}


def signature_table(model, jit_compile=False):
    """The signatures ``model`` exports.

    Args:
      model: a built ConditionalPixelCNN, PixelCNN, PixelCNNAutoEncoder or
        EmbeddingConditionedPixelCNN.
      jit_compile: the sampling signatures run an XLA-compiled sampler.

    Returns:
      {signature name: Signature}.
    """
    return SIGNATURE_TABLES[model_kind(model)](model, jit_compile)


def warmup_inputs(model):
    """One small valid request per signature, from the InputSpecs: {signature name: {input name: numpy array}}."""
    return {
        name: {spec.name: spec.warmup_value() for spec in signature.inputs}
        for name, signature in signature_table(model).items()
    }


# -- in-graph checks ------------------------------------------------------------------------------


def _checked(checks, tensors):
    """``tensors`` (a dict) passed through identities that run only after the assert ops ``checks``."""
    with tf.control_dependencies(checks):
        return {name: tf.identity(tensor) for name, tensor in tensors.items()}


def _shape_checks(tensors, specs):
    """Asserts that each input's run-time shape is its spec's shape (stage 1)."""
    checks = []
    for spec in specs:
        expected = spec.static_shape()
        rank = len(expected)
        actual = tf.shape(tensors[spec.name])  # the declared shape is unknown, so nothing folds this away
        padded = tf.concat([actual, tf.fill([rank], -1)], 0)[:rank]
        expected = tf.constant(expected, tf.int32, [rank])
        matches = tf.logical_and(tf.equal(tf.size(actual), rank), tf.reduce_all((padded == expected) | (expected < 0)))
        message = f"{spec.name}: expected shape {spec.shape_text()}, got shape"
        checks.append(tf.debugging.Assert(matches, [message, actual], summarize=8))
    return checks


def _batch_checks(tensors, specs, max_batch_size):
    """Asserts on batch sizes, from shapes and the num_samples scalar only (stage 2).

    Returns:
      (assert ops, batch size: int32 scalar tensor).
    """
    checks, batch, first = [], None, None
    limit = "" if max_batch_size is None else f" and at most max_batch_size={max_batch_size}"
    for spec in specs:
        if spec.name == NUM_SAMPLES.name:
            batch = tensors[spec.name]
            in_range = batch >= 1 if max_batch_size is None else (batch >= 1) & (batch <= max_batch_size)
            checks.append(tf.debugging.Assert(in_range, [f"num_samples: expected an int >= 1{limit}, got", batch]))
        if not spec.batched:
            continue
        size = tf.shape(tensors[spec.name])[0]
        checks.append(
            tf.debugging.Assert(size > 0, [f"{spec.name}: expected at least one {spec.unit}, got an empty batch"])
        )
        if max_batch_size is not None:
            message = f"{spec.name}: expected at most max_batch_size={max_batch_size} {spec.unit}s, got"
            checks.append(tf.debugging.Assert(size <= max_batch_size, [message, size]))
        if first is None:
            batch, first = size, spec
        else:
            message = f"{spec.name}: expected one entry per {first.unit} ({first.name}); got batch sizes"
            checks.append(tf.debugging.Assert(tf.equal(size, batch), [message, size, "and", batch]))
    return checks, batch


def _value_checks(tensors, specs):
    """Asserts on the values: class ids and codes in range, finite conditions, 0 < temperature < inf (stage 3)."""
    checks = []
    for spec in specs:
        value = tensors[spec.name]
        if spec.num_categories is not None:
            in_range = tf.reduce_all(tf.logical_and(value >= 0, value < spec.num_categories))
            checks.append(tf.debugging.Assert(in_range, [f"{spec.name}: expected codes in [0, {spec.num_categories})"]))
        elif spec.num_classes is not None:
            checks += [
                tf.debugging.Assert(tf.reduce_all(value >= 0), [f"{spec.name}: expected class ids >= 0"]),
                tf.debugging.Assert(
                    tf.reduce_all(value < spec.num_classes),
                    [f"{spec.name}: expected class ids < num_classes={spec.num_classes}"],
                ),
            ]
        elif spec.name == TEMPERATURE.name:
            finite_positive = tf.logical_and(value > 0.0, value < math.inf)  # NaN fails both
            message = f"{spec.name}: expected a finite number > 0, got"
            checks.append(tf.debugging.Assert(finite_positive, [message, value]))
        elif spec.dtype == "float32":
            finite = tf.reduce_all(tf.math.is_finite(value))
            checks.append(tf.debugging.Assert(finite, [f"{spec.name}: expected finite floats, got NaN or inf"]))
    return checks


def _serving_function(signature, max_batch_size):
    """The exported function: {input name: tensor} -> outputs, after the three stages of checks."""
    def serve(inputs):
        tensors = {spec.name: inputs[spec.name] for spec in signature.inputs}
        tensors = _checked(_shape_checks(tensors, signature.inputs), tensors)
        # Static shapes for the model. Not tf.ensure_shape: grappler would take its shape for the input's
        # and fold the shape asserts away; a reshape constrains only its output.
        tensors = {spec.name: tf.reshape(tensors[spec.name], spec.static_shape()) for spec in signature.inputs}
        checks, batch = _batch_checks(tensors, signature.inputs, max_batch_size)
        tensors = _checked(checks, dict(tensors, batch=batch))
        batch = tensors.pop("batch")
        tensors = _checked(_value_checks(tensors, signature.inputs), tensors)
        return signature.function(tensors, batch)

    return serve


# -- files --------------------------------------------------------------------------------------


def _write_warmup_requests(model, saved_model_dir, model_name):
    """Writes ``assets.extra/tf_serving_warmup_requests``: a TFRecord of PredictionLogs, one per signature."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in warmup_inputs(model).items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def export_info(model, max_batch_size):
    """The content of ``assets.extra/pixelcnn_export.json``.

    Returns:
      {"model_kind": str, "max_batch_size": int or None (no limit),
      "signatures": {signature name: {"inputs": {input name: {"dtype": str,
      "shape": list with None for the batch}}}}}.
    """
    return {
        "model_kind": model_kind(model),
        "max_batch_size": max_batch_size,
        "signatures": {
            name: {"inputs": {spec.name: {"dtype": spec.dtype, "shape": list(spec.shape)} for spec in signature.inputs}}
            for name, signature in signature_table(model).items()
        },
    }


def _write_export_info(model, saved_model_dir, max_batch_size):
    path = os.path.join(saved_model_dir, EXPORT_INFO_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(export_info(model, max_batch_size), f, indent=2)
        f.write("\n")


def _existing_versions(export_base):
    names = [name.rstrip("/") for name in tf.io.gfile.listdir(export_base)]
    return [int(name) for name in names if name.isascii() and name.isdigit()]


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_local(path):
    """True for a path of the local file system (no ``scheme://``)."""
    return "://" not in os.fspath(path)


def publish_directory(local_dir, target):
    """Moves the finished directory ``local_dir`` to ``target`` so that readers never see half of it.

    A local target is a rename (atomic). Other file systems (gs://, ram://) cannot
    rename a directory atomically: the files are copied one by one, with
    ``saved_model.pb`` last (TF-Serving loads a version once that file exists),
    and ``local_dir`` is removed.
    """
    if is_local(target):
        os.rename(local_dir, target)
        return
    files = []
    for directory, _, names in os.walk(local_dir):
        files += [os.path.relpath(os.path.join(directory, name), local_dir) for name in names]
    files.sort(key=lambda name: name == "saved_model.pb")
    try:
        for name in files:
            destination = f"{target}/{name}"
            tf.io.gfile.makedirs(os.path.dirname(destination))
            tf.io.gfile.copy(os.path.join(local_dir, name), destination, overwrite=True)
    except BaseException:  # no half-copied version left behind
        if tf.io.gfile.exists(target):
            tf.io.gfile.rmtree(target)
        raise
    shutil.rmtree(local_dir)


def _checked_export_arguments(model, export_base, version, jit_compile, max_batch_size):
    """``export_saved_model``'s argument checks -> (export_base as a path, max_batch_size as an int or None)."""
    from keras_pixelcnn.autoencoder import PixelCNNAutoEncoder
    from keras_pixelcnn.model import PixelCNNBase
    from keras_pixelcnn.vqvae import VQVAEPrior

    if not isinstance(model, (PixelCNNBase, PixelCNNAutoEncoder, VQVAEPrior)):
        raise ValueError(
            "model: expected a keras_pixelcnn PixelCNN model, PixelCNNAutoEncoder or VQVAEPrior, "
            f"got {type(model).__name__}."
        )
    if not isinstance(export_base, (str, os.PathLike)) or not os.fspath(export_base):
        raise ValueError(f"export_base: expected a directory path, got {export_base!r}.")
    export_base = os.fspath(export_base)
    if is_local(export_base):
        export_base = os.path.abspath(export_base)
    if tf.io.gfile.exists(export_base) and not tf.io.gfile.isdir(export_base):
        raise ValueError(f"export_base: {export_base} exists and is not a directory.")
    if version is not None and (not _is_int(version) or version < 1):
        raise ValueError(f"version: expected None or an int >= 1, got {version!r}.")
    if max_batch_size is not None and (not _is_int(max_batch_size) or max_batch_size < 1):
        raise ValueError(f"max_batch_size: expected None (no limit) or an int >= 1, got {max_batch_size!r}.")
    if not isinstance(jit_compile, (bool, np.bool_)):
        raise ValueError(f"jit_compile: expected True or False, got {jit_compile!r}.")
    max_batch_size = None if max_batch_size is None else int(max_batch_size)
    return export_base, max_batch_size


def _served_module(model, jit_compile, max_batch_size):
    """(a tf.Module holding the signatures and the variables they read, {signature name: concrete function}).

    Each signature is traced once, here. (keras.export.ExportArchive, used before, traces every
    endpoint twice: once to find its variables, then again in the save, whose context is part of
    tf.function's trace-cache key; that was about half of an export's time.) The functions are also
    the module's attributes, as ExportArchive's endpoints were. The module tracks the tf.Variables
    the functions capture, as ExportArchive does: the session-based loader TF-Serving uses finds
    only those ("Could not find variable ..." when the module holds the model or its Keras
    variables instead, TF 2.21).
    """
    served, signatures = tf.Module(), {}
    for name, signature in signature_table(model, jit_compile).items():
        specs = {spec.name: spec.tensor_spec() for spec in signature.inputs}
        function = tf.function(_serving_function(signature, max_batch_size), input_signature=[specs], autograph=False)
        signatures[name] = function.get_concrete_function()
        setattr(served, name, signatures[name])
    served.captured_variables = list({id(v): v for f in signatures.values() for v in f.variables}.values())
    return served, signatures


def export_saved_model(model, export_base, version=None, *, jit_compile=False, max_batch_size=DEFAULT_MAX_BATCH_SIZE):
    """Exports ``model`` for TF-Serving as ``<export_base>/<version>/``, atomically.

    Builds the SavedModel (the signatures in the module docstring), its warm-up
    requests and ``assets.extra/pixelcnn_export.json`` in
    ``<export_base>/.tmp-export-<random>/``, then renames it to the version
    directory; on failure the temporary directory is removed and no version
    appears.

    Args:
      model: a built ConditionalPixelCNN, PixelCNN, PixelCNNAutoEncoder or
        EmbeddingConditionedPixelCNN.
      export_base: the model's base directory (TF-Serving's model base path);
        created if missing. Its name is used as the model name in the warm-up
        requests.
      version: int >= 1, which must not exist yet; None for one more than the
        largest existing version (1 for the first).
      jit_compile: False (default: plain TF ops, any TF-Serving) or True: the
        sampling signatures (``serving_default``, ``reconstruct``) run an
        XLA-compiled sampler, which needs a server started with
        ``--xla_cpu_compilation_enabled`` (a stock server fails to load it).
      max_batch_size: int >= 1: every signature refuses a request of a larger
        batch (class ids, condition rows, num_samples, images) with
        INVALID_ARGUMENT; None for no limit.

    Returns:
      The path of the new version directory.

    Raises:
      ValueError: a bad argument (named in the message), or an existing version.
    """
    export_base, max_batch_size = _checked_export_arguments(model, export_base, version, jit_compile, max_batch_size)
    tf.io.gfile.makedirs(export_base)
    if version is None:
        version = max(_existing_versions(export_base), default=0) + 1
    target = os.path.join(export_base, str(int(version)))
    if tf.io.gfile.exists(target):
        raise ValueError(f"version: {target} already exists; pick another version or None for the next one.")

    served, signatures = _served_module(model, jit_compile, max_batch_size)

    # Built on local disk: beside the target when that is local (then renamed, atomically), else in a
    # temporary directory copied over with saved_model.pb last (publish_directory).
    local_base = export_base if is_local(export_base) else tempfile.gettempdir()
    temp_dir = os.path.join(local_base, f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    os.mkdir(temp_dir)  # honours the umask, unlike tempfile.mkdtemp (0700): the server may run as another user
    try:
        tf.saved_model.save(served, temp_dir, signatures=signatures)
        _write_warmup_requests(model, temp_dir, os.path.basename(export_base.rstrip("/")))
        _write_export_info(model, temp_dir, max_batch_size)
        if tf.io.gfile.exists(target):
            raise ValueError(f"version: {target} appeared during the export (a concurrent export?).")
        publish_directory(temp_dir, target)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return target
