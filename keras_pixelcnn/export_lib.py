"""TF-Serving export: a PixelCNN model -> ``<export_base>/<version>/`` (a SavedModel).

Signatures (flat dicts of named tensors, dynamic batch dimension B):

  * ``serving_default`` (sampling). Inputs: the conditioning -- ``class_ids``
    int32 [B] (``num_classes`` models), ``condition`` float32 [B, D]
    (``condition_shape=(D,)`` models; declared [B, ?], the width is checked in
    the graph) or ``num_samples`` int32 scalar (unconditional models) -- plus
    ``seed`` int64 [2] and ``temperature`` float32 scalar. Output: ``images``
    uint8 [B, H, W, C], identical to ``model.sample(..., seed=seed,
    jit_compile=J)`` for an export with ``jit_compile=J``.
  * ``log_prob``. Inputs: ``images`` uint8 [B, H, W, C] plus ``class_ids`` or
    ``condition`` for conditional models. Outputs: ``log_prob`` (nats) and
    ``bits_per_dim``, float32 [B].

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

Bad requests fail inside the graph with INVALID_ARGUMENT and a message naming
the input: ``tf.debugging`` assert ops under control dependencies (so they
also run in TF-Serving's session loader) check every input's shape against the
signature (TF runtimes do not enforce declared shapes), then the values: class
ids in [0, num_classes), a finite condition of width D, a batch of at least
one, num_samples >= 1, 0 < temperature < inf, one condition entry per image.

The version directory is built beside its final place under a non-numeric
name (``.tmp-export-...``, which TF-Serving ignores) and renamed when complete.
On file systems without an atomic directory rename (gs://, ram://) it is built
in a local temporary directory and copied file by file, saved_model.pb last.
"""

import math
import os
import shutil
import tempfile
import uuid

import numpy as np

SAMPLE_SIGNATURE = "serving_default"
LOG_PROB_SIGNATURE = "log_prob"
ENCODE_SIGNATURE = "encode"
RECONSTRUCT_SIGNATURE = "reconstruct"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
TEMP_PREFIX = ".tmp-export-"


def _condition_specs(model):
    """The conditioning inputs of both signatures: {name: tf.TensorSpec}."""
    import tensorflow as tf

    if model.num_classes is not None:
        return {"class_ids": tf.TensorSpec([None], tf.int32, name="class_ids")}
    if model.condition_shape is not None:
        return {"condition": tf.TensorSpec([None, None], tf.float32, name="condition")}
    return {}


def signature_specs(model):
    """Input specs of the two signatures.

    Args:
      model: a built PixelCNN model.

    Returns:
      (sample_specs, log_prob_specs): dicts {input name: tf.TensorSpec}.
    """
    import tensorflow as tf

    conditioning = _condition_specs(model)
    sample_specs = dict(conditioning) or {"num_samples": tf.TensorSpec([], tf.int32, name="num_samples")}
    sample_specs["seed"] = tf.TensorSpec([2], tf.int64, name="seed")
    sample_specs["temperature"] = tf.TensorSpec([], tf.float32, name="temperature")
    log_prob_specs = {"images": tf.TensorSpec((None,) + model.image_shape, tf.uint8, name="images"), **conditioning}
    return sample_specs, log_prob_specs


def autoencoder_signature_specs(model):
    """Input specs of an auto-encoder's four signatures.

    Args:
      model: a PixelCNNAutoEncoder (or EmbeddingConditionedPixelCNN).

    Returns:
      {signature name: {input name: tf.TensorSpec}} for ``encode``,
      ``serving_default`` (the decoder's sampling specs), ``reconstruct`` and
      ``log_prob``.
    """
    import tensorflow as tf

    images = {"images": tf.TensorSpec((None,) + model.image_shape, tf.uint8, name="images")}
    sample_specs, _ = signature_specs(model.decoder)
    controls = {name: sample_specs[name] for name in ("seed", "temperature")}
    return {
        ENCODE_SIGNATURE: dict(images),
        SAMPLE_SIGNATURE: sample_specs,
        RECONSTRUCT_SIGNATURE: {**images, **controls},
        LOG_PROB_SIGNATURE: dict(images),
    }


def _checked(checks, tensors):
    """``tensors`` passed through identities that run only after the assert ops ``checks``."""
    import tensorflow as tf

    with tf.control_dependencies(checks):
        return [None if t is None else tf.identity(t) for t in tensors]


def _shape_checked(inputs, specs):
    """``inputs`` passed on only after asserts that their run-time shapes match ``specs``.

    TF runtimes do not enforce a signature's declared shapes: a [1, 2, 8, 3]
    tensor reaches a [None, 4, 4, 3] input (and gives garbage), a rank-3 one
    can abort the process. For fully-defined shapes (seed, scalars) grappler
    may fold this check away; the kernels using those inputs then fail with
    INVALID_ARGUMENT instead (both are tested).
    """
    import tensorflow as tf

    checks = []
    for name, spec in specs.items():
        expected = [-1 if d is None else d for d in spec.shape.as_list()]
        dims = ", ".join("batch" if i == 0 and d < 0 else "?" if d < 0 else str(d) for i, d in enumerate(expected))
        actual = tf.raw_ops.Shape(input=inputs[name])  # an op even for fully-defined shapes (tf.shape folds those)
        rank = len(expected)
        padded = tf.concat([actual, tf.fill([rank], -1)], 0)[:rank]
        matches = tf.logical_and(
            tf.equal(tf.size(actual), rank), tf.reduce_all((padded == expected) | (tf.constant(expected) < 0))
        )
        checks.append(
            tf.debugging.Assert(matches, [f"{name}: expected shape [{dims}], got shape", actual], summarize=8)
        )
    return dict(zip(specs, _checked(checks, [inputs[name] for name in specs]), strict=True))


def _condition_checks(model, inputs):
    """Validates the conditioning input in the graph.

    Args:
      model: the PixelCNN model.
      inputs: the signature's input dict.

    Returns:
      (condition or None, batch size or None, assert ops). A vector condition
      comes back with its static width set to D.
    """
    import tensorflow as tf

    if model.num_classes is not None:
        class_ids = inputs["class_ids"]
        batch = tf.size(class_ids)
        checks = [
            tf.debugging.assert_positive(
                batch, message="class_ids: expected at least one class id, got an empty batch"
            ),
            tf.debugging.assert_non_negative(class_ids, message="class_ids: expected class ids >= 0"),
            tf.debugging.assert_less(
                class_ids, model.num_classes, message=f"class_ids: expected class ids < num_classes={model.num_classes}"
            ),
        ]
        return class_ids, batch, checks
    if model.condition_shape is not None:
        condition, width = inputs["condition"], model.condition_shape[0]
        batch = tf.shape(condition)[0]
        checks = [
            tf.debugging.assert_equal(
                tf.shape(condition)[1], width, message=f"condition: expected shape [batch, {width}] (width {width})"
            ),
            tf.debugging.assert_positive(batch, message="condition: expected at least one row, got an empty batch"),
            tf.debugging.assert_all_finite(condition, message="condition: expected finite floats"),
        ]
        with tf.control_dependencies(checks):
            condition = tf.ensure_shape(condition, [None, width])
        return condition, batch, checks
    return None, None, []


def _sample_function(model, specs, jit_compile=False):
    """The ``serving_default`` function: dict of inputs -> {"images": uint8 [B, H, W, C]}.

    With ``jit_compile`` the sampler (not the checks: XLA drops Assert ops)
    is an XLA-compiled function (``_XlaMustCompile``).
    """
    import tensorflow as tf

    from keras_pixelcnn.sampling import sampling_function

    # The model's default method: cached for ConditionalPixelCNN.
    sampler = sampling_function(model, model.sampling_methods[0], jit_compile)

    def sample(inputs):
        inputs = _shape_checked(inputs, specs)
        condition, batch, checks = _condition_checks(model, inputs)
        if batch is None:
            batch = inputs["num_samples"]
            checks.append(tf.debugging.assert_positive(batch, message="num_samples: expected an int >= 1"))
        temperature = inputs["temperature"]
        finite_positive = tf.logical_and(temperature > 0.0, temperature < math.inf)  # NaN fails both
        checks.append(
            tf.debugging.Assert(finite_positive, ["temperature: expected a finite number > 0, got", temperature])
        )
        batch, condition, temperature, seed = _checked(checks, [batch, condition, temperature, inputs["seed"]])
        return {"images": sampler(batch, condition, temperature, seed)}

    return sample


def _log_prob_function(model, specs):
    """The ``log_prob`` function: dict of inputs -> {"log_prob", "bits_per_dim"}: float32 [B]."""
    import tensorflow as tf

    from keras_pixelcnn.heads import bits_per_dim

    def log_prob(inputs):
        inputs = _shape_checked(inputs, specs)
        images = inputs["images"]
        condition, condition_batch, checks = _condition_checks(model, inputs)
        checks.append(tf.debugging.assert_positive(tf.shape(images)[0], message="images: expected at least one image"))
        if condition_batch is not None:
            name = "class_ids" if model.num_classes is not None else "condition"
            checks.append(
                tf.debugging.assert_equal(
                    condition_batch, tf.shape(images)[0], message=f"{name}: expected one entry per image"
                )
            )
        images, condition = _checked(checks, [images, condition])
        nats = model.log_prob(images, condition)
        return {"log_prob": nats, "bits_per_dim": bits_per_dim(nats, model.image_shape)}

    return log_prob


def _checked_images(inputs, specs):
    """The shape-checked inputs, with ``images`` passed on only after a non-empty-batch check."""
    import tensorflow as tf

    inputs = dict(_shape_checked(inputs, specs))
    images = inputs["images"]
    check = tf.debugging.assert_positive(tf.shape(images)[0], message="images: expected at least one image")
    (inputs["images"],) = _checked([check], [images])
    return inputs


def _encode_function(model, specs):
    """The auto-encoder's ``encode`` function: {"images"} -> {"condition": float32 [B, D]}."""

    def encode(inputs):
        inputs = _checked_images(inputs, specs)
        return {"condition": model.encode(inputs["images"])}

    return encode


def _reconstruct_function(model, specs, decoder_sample_specs, jit_compile=False):
    """The auto-encoder's ``reconstruct`` function: {"images", "seed", "temperature"} -> {"images"}.

    Encodes the images in the graph, then runs the decoder's own sampling
    function (``_sample_function``: the same sampler, checks and draws as
    ``serving_default``) on the codes.
    """
    decoder_sample = _sample_function(model.decoder, decoder_sample_specs, jit_compile)

    def reconstruct(inputs):
        inputs = _checked_images(inputs, specs)
        codes = model.encode(inputs["images"])
        return decoder_sample({"condition": codes, "seed": inputs["seed"], "temperature": inputs["temperature"]})

    return reconstruct


def _autoencoder_log_prob_function(model, specs):
    """The auto-encoder's ``log_prob`` function: {"images"} -> {"log_prob", "bits_per_dim"}: float32 [B]."""
    from keras_pixelcnn.heads import bits_per_dim

    def log_prob(inputs):
        images = _checked_images(inputs, specs)["images"]
        nats = model.log_prob(images)
        return {"log_prob": nats, "bits_per_dim": bits_per_dim(nats, model.image_shape)}

    return log_prob


def _autoencoder_warmup_inputs(model):
    images = np.zeros((1,) + model.image_shape, np.uint8)
    controls = {"seed": np.zeros([2], np.int64), "temperature": np.float32(1.0)}
    return {
        ENCODE_SIGNATURE: {"images": images},
        SAMPLE_SIGNATURE: {"condition": np.zeros((1, model.bottleneck_dim), np.float32), **controls},
        RECONSTRUCT_SIGNATURE: {"images": images, **controls},
        LOG_PROB_SIGNATURE: {"images": images},
    }


def warmup_inputs(model):
    """One small valid request per signature: {signature name: {input name: numpy array}}."""
    from keras_pixelcnn.autoencoder import PixelCNNAutoEncoder

    if isinstance(model, PixelCNNAutoEncoder):
        return _autoencoder_warmup_inputs(model)
    conditioning = {}
    if model.num_classes is not None:
        conditioning = {"class_ids": np.zeros([1], np.int32)}
    elif model.condition_shape is not None:
        conditioning = {"condition": np.zeros((1,) + model.condition_shape, np.float32)}
    sample = dict(conditioning) or {"num_samples": np.int32(1)}
    sample.update(seed=np.zeros([2], np.int64), temperature=np.float32(1.0))
    log_prob = {"images": np.zeros((1,) + model.image_shape, np.uint8), **conditioning}
    return {SAMPLE_SIGNATURE: sample, LOG_PROB_SIGNATURE: log_prob}


def _write_warmup_requests(model, saved_model_dir, model_name):
    """Writes ``assets.extra/tf_serving_warmup_requests``: a TFRecord of PredictionLogs, one per signature."""
    import tensorflow as tf
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


def _existing_versions(export_base):
    import tensorflow as tf

    names = [name.rstrip("/") for name in tf.io.gfile.listdir(export_base)]
    return [int(name) for name in names if name.isascii() and name.isdigit()]


def export_saved_model(model, export_base, version=None, *, jit_compile=False):
    """Exports ``model`` for TF-Serving as ``<export_base>/<version>/``, atomically.

    Builds the SavedModel (the signatures in the module docstring) and its warm-up
    requests in ``<export_base>/.tmp-export-<random>/``, then renames it to the
    version directory; on failure the temporary directory is removed and no
    version appears.

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

    Returns:
      The path of the new version directory.

    Raises:
      ValueError: a bad argument (named in the message), or an existing version.
    """
    import keras
    import tensorflow as tf

    from keras_pixelcnn.autoencoder import PixelCNNAutoEncoder
    from keras_pixelcnn.model import PixelCNNBase
    from keras_pixelcnn.model_dir import is_local, publish_directory

    if not isinstance(model, (PixelCNNBase, PixelCNNAutoEncoder)):
        raise ValueError(
            f"model: expected a keras_pixelcnn PixelCNN model or PixelCNNAutoEncoder, got {type(model).__name__}."
        )
    if not isinstance(export_base, (str, os.PathLike)) or not os.fspath(export_base):
        raise ValueError(f"export_base: expected a directory path, got {export_base!r}.")
    export_base = os.fspath(export_base)
    if is_local(export_base):
        export_base = os.path.abspath(export_base)
    if tf.io.gfile.exists(export_base) and not tf.io.gfile.isdir(export_base):
        raise ValueError(f"export_base: {export_base} exists and is not a directory.")
    if version is not None and (not isinstance(version, (int, np.integer)) or isinstance(version, bool) or version < 1):
        raise ValueError(f"version: expected None or an int >= 1, got {version!r}.")
    if not isinstance(jit_compile, (bool, np.bool_)):
        raise ValueError(f"jit_compile: expected True or False, got {jit_compile!r}.")
    tf.io.gfile.makedirs(export_base)
    if version is None:
        version = max(_existing_versions(export_base), default=0) + 1
    target = os.path.join(export_base, str(int(version)))
    if tf.io.gfile.exists(target):
        raise ValueError(f"version: {target} already exists; pick another version or None for the next one.")

    archive = keras.export.ExportArchive()
    archive.track(model)  # tracks the tf.Variables, so the session-based loader (TF-Serving) finds them
    if isinstance(model, PixelCNNAutoEncoder):
        specs = autoencoder_signature_specs(model)
        functions = {
            ENCODE_SIGNATURE: _encode_function(model, specs[ENCODE_SIGNATURE]),
            SAMPLE_SIGNATURE: _sample_function(model.decoder, specs[SAMPLE_SIGNATURE], jit_compile),
            RECONSTRUCT_SIGNATURE: _reconstruct_function(
                model, specs[RECONSTRUCT_SIGNATURE], specs[SAMPLE_SIGNATURE], jit_compile
            ),
            LOG_PROB_SIGNATURE: _autoencoder_log_prob_function(model, specs[LOG_PROB_SIGNATURE]),
        }
        for name, function in functions.items():
            archive.add_endpoint(name, function, input_signature=[specs[name]])
    else:
        sample_specs, log_prob_specs = signature_specs(model)
        sample = _sample_function(model, sample_specs, jit_compile)
        archive.add_endpoint(SAMPLE_SIGNATURE, sample, input_signature=[sample_specs])
        archive.add_endpoint(
            LOG_PROB_SIGNATURE, _log_prob_function(model, log_prob_specs), input_signature=[log_prob_specs]
        )

    # Built on local disk: beside the target when that is local (then renamed, atomically), else in a
    # temporary directory copied over with saved_model.pb last (model_dir.publish_directory).
    temp_dir = os.path.join(export_base if is_local(export_base) else tempfile.gettempdir(),
                            f"{TEMP_PREFIX}{uuid.uuid4().hex}")  # fmt: skip
    os.mkdir(temp_dir)  # honours the umask, unlike tempfile.mkdtemp (0700): the server may run as another user
    try:
        archive.write_out(temp_dir, verbose=False)
        _write_warmup_requests(model, temp_dir, os.path.basename(export_base))
        if tf.io.gfile.exists(target):
            raise ValueError(f"version: {target} appeared during the export (a concurrent export?).")
        publish_directory(temp_dir, target)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return target
