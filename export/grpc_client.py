r"""gRPC client example for a PixelCNN served by TF-Serving (port 8500).

Usage:
  # class-conditional model: one image per class id
  python -m export.grpc_client --server=localhost:8500 --model_name=pixelcnn \
      --class_ids=0,1,2 --seed=1,2 --temperature=1.0 --output=samples.npy
  # unconditional model
  python -m export.grpc_client --model_name=pixelcnn --num_samples=4 --seed=7
  # log-likelihood of images saved as uint8 [B, H, W, C] in a .npy file
  python -m export.grpc_client --model_name=pixelcnn --images=images.npy --class_ids=0,1

Requests follow the exported signatures (keras_pixelcnn/export_lib.py); the
dtypes each input must have are in SIGNATURE_INPUT_DTYPES. Needs only
tensorflow and tensorflow-serving-api, not keras_pixelcnn.
"""

import sys

import numpy as np
from absl import app, flags

SAMPLE_SIGNATURE = "serving_default"
LOG_PROB_SIGNATURE = "log_prob"
# The signature contract: input name -> (dtype, rank); ranks 0 and 1 are exact, images are [B, H, W, C].
SIGNATURE_INPUT_DTYPES = {
    "class_ids": (np.int32, 1),
    "condition": (np.float32, 2),
    "num_samples": (np.int32, 0),
    "seed": (np.int64, 1),
    "temperature": (np.float32, 0),
    "images": (np.uint8, 4),
}
CODES_DTYPE = np.int32  # the images of a model over integer codes (num_categories): int32 in and out


def input_dtype(name, codes=False):
    """(dtype, rank) of the signature input ``name``; ``codes``: the model takes int32 codes as images."""
    dtype, rank = SIGNATURE_INPUT_DTYPES[name]
    return (CODES_DTYPE if codes and name == "images" else dtype), rank


def build_predict_request(model_name, signature_name, inputs, version=None, codes=False):
    """A PredictRequest with ``inputs`` converted to the signature's dtypes.

    Args:
      model_name: the served model's name (TF-Serving's MODEL_NAME).
      signature_name: "serving_default" (sampling) or "log_prob".
      inputs: {input name: array-like}; names from SIGNATURE_INPUT_DTYPES.
      version: int, or None for the latest version the server has.
      codes: True for a model over integer codes (``num_categories``): its
        ``images`` are int32 codes, not uint8 pixels.

    Returns:
      tensorflow_serving.apis.predict_pb2.PredictRequest.

    Raises:
      ValueError: an unknown input name, or a value of the wrong rank.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        if name not in SIGNATURE_INPUT_DTYPES:
            raise ValueError(f"inputs: unknown input {name!r}; expected names from {sorted(SIGNATURE_INPUT_DTYPES)}.")
        dtype, rank = input_dtype(name, codes)
        array = np.asarray(value, dtype)
        if array.ndim != rank:
            raise ValueError(f"inputs: {name} expected rank {rank}, got shape {array.shape}.")
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def _conditioning(class_ids=None, condition=None):
    if class_ids is not None and condition is not None:
        raise ValueError("class_ids, condition: give one kind of conditioning, got both.")
    if class_ids is not None:
        return {"class_ids": class_ids}
    return {} if condition is None else {"condition": condition}


def sample_request(model_name, seed, temperature=1.0, class_ids=None, condition=None, num_samples=None, version=None):
    """A sampling (``serving_default``) request.

    Args:
      model_name: the served model's name.
      seed: two ints (int64 [2]): the same seed gives the same images.
      temperature: float > 0.
      class_ids: int ids [B] for class-conditional models.
      condition: floats [B, D] for vector-conditioned models.
      num_samples: int B for unconditional models.
      version: int, or None for the latest.

    Returns:
      A PredictRequest; the response holds ``images`` uint8 [B, H, W, C].
    """
    inputs = _conditioning(class_ids, condition)
    if num_samples is not None:
        if inputs:
            raise ValueError("num_samples: only for unconditional models; conditional ones take one image per entry.")
        inputs["num_samples"] = num_samples
    inputs.update(seed=seed, temperature=temperature)
    return build_predict_request(model_name, SAMPLE_SIGNATURE, inputs, version)


def log_prob_request(model_name, images, class_ids=None, condition=None, version=None, codes=False):
    """A ``log_prob`` request for uint8 images [B, H, W, C] (int32 with ``codes``) plus their conditioning.

    Returns:
      A PredictRequest; the response holds ``log_prob`` (nats) and ``bits_per_dim``, float32 [B].
    """
    return build_predict_request(
        model_name, LOG_PROB_SIGNATURE, {"images": images, **_conditioning(class_ids, condition)}, version, codes
    )


def predict(server, request, timeout_s=60.0):
    """Sends ``request`` to TF-Serving's gRPC PredictionService at ``server`` (host:port).

    Returns:
      {output name: numpy array}.
    """
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(server) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout_s)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


FLAGS = flags.FLAGS


def define_flags():
    """Defines the command line's flags.

    Called by run(), not at import: absl flags are global and the trainers
    define --seed, --class_ids and --temperature too.
    """
    flags.DEFINE_string("server", "localhost:8500", "TF-Serving gRPC address, host:port.")
    flags.DEFINE_string("model_name", "pixelcnn", "Served model name.")
    flags.DEFINE_integer("model_version", None, "Version to query; default: the latest.")
    flags.DEFINE_list("class_ids", None, "Class ids, one image each (class-conditional models).")
    flags.DEFINE_integer("num_samples", None, "Number of images (unconditional models).")
    flags.DEFINE_list("seed", ["0", "0"], "One or two ints; one int s means [s, 0], as in model.sample.")
    flags.DEFINE_float("temperature", 1.0, "Sampling temperature, > 0.")
    flags.DEFINE_string("images", None, "A .npy file of uint8 images [B, H, W, C]: query log_prob instead of sampling.")
    flags.DEFINE_string("output", None, "Write the sampled images to this .npy file.")
    flags.DEFINE_bool("codes", False, "The model is over integer codes (num_categories): --images holds int32 codes.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if len(FLAGS.seed) not in (1, 2):
        raise app.UsageError(f"--seed: expected one or two ints, got {FLAGS.seed}.")
    seed = [int(s) for s in FLAGS.seed] + [0] * (2 - len(FLAGS.seed))
    class_ids = None if FLAGS.class_ids is None else [int(c) for c in FLAGS.class_ids]
    if FLAGS.images:
        request = log_prob_request(FLAGS.model_name, np.load(FLAGS.images), class_ids, version=FLAGS.model_version,
                                   codes=FLAGS.codes)  # fmt: skip
    else:
        request = sample_request(
            FLAGS.model_name,
            seed,
            FLAGS.temperature,
            class_ids,
            num_samples=FLAGS.num_samples,
            version=FLAGS.model_version,
        )
    import grpc

    try:
        outputs = predict(FLAGS.server, request)
    except grpc.RpcError as error:  # e.g. INVALID_ARGUMENT: class_ids: expected class ids < num_classes=10
        sys.exit(f"{error.code().name}: {error.details()}")
    for name, value in sorted(outputs.items()):
        print(f"{name}: {value.dtype} {list(value.shape)}" + ("" if name == "images" else f" {value.tolist()}"))
    if FLAGS.output and "images" in outputs:
        np.save(FLAGS.output, outputs["images"])
        print(f"Saved images to {FLAGS.output}")


def run():
    """Console-script entry point (``pixelcnn-grpc-client``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
