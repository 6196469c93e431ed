r"""REST client for a PixelCNN served by TF-Serving (port 8501).

Usage:
  # class-conditional model: one image per class id
  python -m export.rest_client --server=http://localhost:8501 --model_name=pixelcnn \
      --class_ids=0,1,2 --seed=1,2 --temperature=1.0 --output=samples.npy
  # unconditional model
  python -m export.rest_client --model_name=pixelcnn --num_samples=4 --seed=7
  # log-likelihood of uint8 images [B, H, W, C] saved in a .npy file
  python -m export.rest_client --model_name=pixelcnn --images=images.npy --class_ids=0,1
  # an auto-encoder's signatures
  python -m export.rest_client --model_name=ae --signature_name=reconstruct --images=images.npy --seed=3
  python -m export.rest_client --model_name=ae --signature_name=encode --images=images.npy --output=codes.npy

Requests use TF-Serving's columnar body, {"signature_name": ..., "inputs":
{name: nested lists}}: the row format ("instances") needs every input to have
the batch dimension, and seed [2] and the scalar temperature do not. The
server types JSON numbers as the signature declares (keras_pixelcnn/export_lib.py);
responses come back as {"outputs": value} for one output and {"outputs":
{name: value}} for several, or {"error": message} with an HTTP error status.
Needs only numpy and absl: no TensorFlow, no keras_pixelcnn.
"""

import json
import sys
import urllib.error
import urllib.request

import numpy as np
from absl import app, flags

from export.grpc_client import CODES_DTYPE, SIGNATURE_INPUT_DTYPES, input_dtype

# signature name -> its output names (the order TF-Serving does not need, but a reader does).
SIGNATURE_OUTPUTS = {
    "serving_default": ("images",),
    "log_prob": ("log_prob", "bits_per_dim"),
    "encode": ("condition",),
    "reconstruct": ("images",),
}
OUTPUT_DTYPES = {
    "images": np.uint8, "codes": np.int32, "log_prob": np.float32, "bits_per_dim": np.float32, "condition": np.float32,
}
OPTIONAL_OUTPUTS = {"serving_default": ("codes",)}  # a VQVAEPrior's sampled code grids, beside the images
SAMPLING_SIGNATURES = ("serving_default", "reconstruct")  # the ones taking seed and temperature


class PredictError(RuntimeError):
    """The server refused a request (e.g. INVALID_ARGUMENT); the message is the server's."""


def _check_signature_name(signature_name):
    if signature_name not in SIGNATURE_OUTPUTS:
        raise ValueError(f"signature_name: expected one of {sorted(SIGNATURE_OUTPUTS)}, got {signature_name!r}.")


def build_rest_request(signature_name, inputs, codes=False):
    """The JSON body of a TF-Serving REST predict request (columnar format).

    Args:
      signature_name: "serving_default", "log_prob", "encode" or "reconstruct".
      inputs: {input name: array-like}; names and dtypes from
        grpc_client.SIGNATURE_INPUT_DTYPES (e.g. images uint8 [B, H, W, C],
        class_ids int32 [B], seed int64 [2], temperature float32 scalar).
      codes: True for a model over integer codes (``num_categories``): its
        ``images`` are int32 codes, not uint8 pixels.

    Returns:
      {"signature_name": str, "inputs": {name: nested lists / number}}, ready for json.dumps.

    Raises:
      ValueError: an unknown signature or input name, a value of the wrong rank
        or one that does not fit the input's dtype.
    """
    _check_signature_name(signature_name)
    body = {}
    for name, value in inputs.items():
        if name not in SIGNATURE_INPUT_DTYPES:
            raise ValueError(f"inputs: unknown input {name!r}; expected names from {sorted(SIGNATURE_INPUT_DTYPES)}.")
        dtype, rank = input_dtype(name, codes)
        array = np.asarray(value)
        if np.issubdtype(dtype, np.integer) and array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"inputs: {name} expected integers ({np.dtype(dtype).name}), got {array.dtype}.")
        if np.issubdtype(dtype, np.integer) and array.size:
            low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
            if array.min() < low or array.max() > high:
                raise ValueError(f"inputs: {name} expected values in [{low}, {high}] ({np.dtype(dtype).name}).")
        array = array.astype(dtype)
        if array.ndim != rank:
            raise ValueError(f"inputs: {name} expected rank {rank}, got shape {array.shape}.")
        body[name] = array.tolist()
    return {"signature_name": signature_name, "inputs": body}


def decode_rest_response(body, signature_name, codes=False):
    """The outputs of a TF-Serving REST predict response as numpy arrays.

    Args:
      body: the response: JSON text (str or bytes) or the parsed dict.
      signature_name: the signature the request named (it tells the name of a
        single output, which TF-Serving returns bare).
      codes: True for a model over integer codes: its ``images`` are int32.

    Returns:
      {output name: numpy array}: ``images`` uint8 [B, H, W, C] (int32 with ``codes``), ``log_prob``
      and ``bits_per_dim`` float32 [B], ``condition`` float32 [B, D].

    Raises:
      PredictError: the body is the server's {"error": message}.
      ValueError: an unknown signature, or a body that is not a predict response for it.
    """
    _check_signature_name(signature_name)
    if isinstance(body, (str, bytes, bytearray)):
        body = json.loads(body)
    if not isinstance(body, dict):
        raise ValueError(f"body: expected a JSON object, got {type(body).__name__}.")
    if "error" in body:
        raise PredictError(str(body["error"]))
    if "outputs" not in body:
        raise ValueError(f"body: expected an 'outputs' entry (columnar response), got keys {sorted(body)}.")
    names, outputs = SIGNATURE_OUTPUTS[signature_name], body["outputs"]
    optional = OPTIONAL_OUTPUTS.get(signature_name, ())
    if len(names) == 1 and not isinstance(outputs, dict):
        outputs = {names[0]: outputs}
    if not isinstance(outputs, dict) or not set(names) <= set(outputs) <= set(names + optional):
        got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ValueError(f"body: expected outputs {list(names)} for {signature_name}, got {got}.")
    dtypes = dict(OUTPUT_DTYPES, images=CODES_DTYPE) if codes else OUTPUT_DTYPES
    return {name: np.asarray(value, dtypes[name]) for name, value in outputs.items()}


def predict_url(server, model_name, version=None):
    """E.g. http://localhost:8501/v1/models/pixelcnn:predict (or .../versions/3:predict)."""
    version_part = "" if version is None else f"/versions/{int(version)}"
    return f"{server.rstrip('/')}/v1/models/{model_name}{version_part}:predict"


def predict(server, model_name, body, version=None, timeout_s=300.0, codes=False):
    """POSTs a request body (from build_rest_request) to TF-Serving's REST API.

    Args:
      server: base URL, e.g. "http://localhost:8501".
      model_name: the served model's name (TF-Serving's MODEL_NAME).
      body: the request body.
      version: int, or None for the latest version the server has.
      timeout_s: seconds to wait for the response (sampling takes a while).
      codes: True for a model over integer codes (its ``images`` are int32).

    Returns:
      {output name: numpy array}, as decode_rest_response.

    Raises:
      PredictError: the server refused the request (message: "HTTP <status>: <server's error>").
    """
    request = urllib.request.Request(
        predict_url(server, model_name, version),
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            text = response.read()
    except urllib.error.HTTPError as error:
        try:
            decode_rest_response(error.read(), body["signature_name"])
        except PredictError as refused:
            raise PredictError(f"HTTP {error.code}: {refused}") from error
        except ValueError:
            pass
        raise PredictError(f"HTTP {error.code}: {error.reason}") from error
    return decode_rest_response(text, body["signature_name"], codes)


FLAGS = flags.FLAGS


def define_flags():
    """Defines the command line's flags (in run(), not at import: absl flags are global)."""
    flags.DEFINE_string("server", "http://localhost:8501", "TF-Serving REST address, http://host:port.")
    flags.DEFINE_string("model_name", "pixelcnn", "Served model name.")
    flags.DEFINE_integer("model_version", None, "Version to query; default: the latest.")
    flags.DEFINE_enum(
        "signature_name", None, list(SIGNATURE_OUTPUTS), "Signature; default: log_prob with --images, else sampling."
    )
    flags.DEFINE_list("class_ids", None, "Class ids, one per image (class-conditional models).")
    flags.DEFINE_string("condition", None, "A .npy file of float32 conditions [B, D] (vector-conditioned models).")
    flags.DEFINE_integer("num_samples", None, "Number of images (unconditional models).")
    flags.DEFINE_list("seed", ["0", "0"], "One or two ints; one int s means [s, 0], as in model.sample.")
    flags.DEFINE_float("temperature", 1.0, "Sampling temperature, > 0.")
    flags.DEFINE_string("images", None, "A .npy file of uint8 images [B, H, W, C] (log_prob, encode, reconstruct).")
    flags.DEFINE_string("output", None, "Write the images (or encode's condition) to this .npy file.")
    flags.DEFINE_bool("codes", False, "The model is over integer codes (num_categories): its images are int32 codes.")


def request_from_flags():
    """The request body the flags describe."""
    signature = FLAGS.signature_name or ("log_prob" if FLAGS.images else "serving_default")
    if len(FLAGS.seed) not in (1, 2):
        raise app.UsageError(f"--seed: expected one or two ints, got {FLAGS.seed}.")
    inputs = {}
    if FLAGS.images:
        inputs["images"] = np.load(FLAGS.images)
    if FLAGS.class_ids is not None:
        inputs["class_ids"] = [int(c) for c in FLAGS.class_ids]
    if FLAGS.condition:
        inputs["condition"] = np.load(FLAGS.condition)
    if FLAGS.num_samples is not None:
        inputs["num_samples"] = FLAGS.num_samples
    if signature in SAMPLING_SIGNATURES:
        inputs["seed"] = [int(s) for s in FLAGS.seed] + [0] * (2 - len(FLAGS.seed))
        inputs["temperature"] = FLAGS.temperature
    try:
        return build_rest_request(signature, inputs, FLAGS.codes)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    body = request_from_flags()
    try:
        outputs = predict(FLAGS.server, FLAGS.model_name, body, FLAGS.model_version, codes=FLAGS.codes)
    except PredictError as error:  # e.g. HTTP 400: class_ids: expected class ids < num_classes=10
        sys.exit(str(error))
    except urllib.error.URLError as error:
        sys.exit(f"--server={FLAGS.server}: {error.reason}")
    for name, value in outputs.items():
        print(f"{name}: {value.dtype} {list(value.shape)}" + ("" if value.ndim > 1 else f" {value.tolist()}"))
    to_save = outputs.get("images", outputs.get("condition"))
    if FLAGS.output and to_save is not None:
        np.save(FLAGS.output, to_save)
        print(f"Saved {'images' if 'images' in outputs else 'condition'} to {FLAGS.output}")


def run():
    """Console-script entry point (``pixelcnn-rest-client``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
