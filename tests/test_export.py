"""TF-Serving export: keras_pixelcnn.export_saved_model, export/export.py and export/grpc_client.py.

Small models with random weights are exported once per module; each
test then checks one part of the contract: the signatures seen by a fresh
process (no keras_pixelcnn), by saved_model_cli (the session-based loader,
the closest stand-in for TF-Serving here), by the gRPC request builder and a
stand-in gRPC server, the warm-up file, in-graph request validation,
atomicity, and the export binary.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent import futures

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app
from conftest import REPO_ROOT, call_signature, randomize_weights, run_main, saved_model_cli, subprocess_env
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

import keras_pixelcnn as kp
from export import export as export_cli
from export import grpc_client
from keras_pixelcnn import export_lib
from keras_pixelcnn.export_lib import export_saved_model

TIMEOUT_S = 300
SEED = np.array([5, 9], np.int64)
TEMPERATURE = np.float32(0.8)
NUM_SAMPLES = 3

# name -> (model factory, kind of conditioning)
CASES = {
    "class_softmax": (
        lambda: kp.ConditionalPixelCNN((4, 4, 3), num_layers=1, filters=6, kernel_size=3, num_classes=3),
        "class",
    ),
    "class_mixture": (
        lambda: kp.PixelCNN(
            (4, 4, 3),
            num_layers=2,
            filters=4,
            kernel_size=3,
            head="logistic_mixture",
            num_mixtures=2,
            num_classes=3,
            gated=True,
        ),
        "class",
    ),
    "unconditional_softmax": (lambda: kp.ConditionalPixelCNN((5, 5, 1), num_layers=2, filters=4, kernel_size=3), None),
    "unconditional_mixture": (
        lambda: kp.ConditionalPixelCNN(
            (4, 4, 3), num_layers=1, filters=4, kernel_size=3, head="logistic_mixture", num_mixtures=2
        ),
        None,
    ),
    "vector": (
        lambda: kp.ConditionalPixelCNN(
            (4, 4, 1), num_layers=1, filters=4, kernel_size=3, condition_shape=(3,), spatial_condition=True
        ),
        "vector",
    ),
}


def random_images(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def make_condition(kind, batch_size, seed):
    """{} / {"class_ids": int32 [B]} / {"condition": float32 [B, 3]}."""
    rng = np.random.default_rng(seed)
    if kind == "class":
        return {"class_ids": rng.integers(0, 3, batch_size).astype(np.int32)}
    if kind == "vector":
        return {"condition": rng.normal(size=(batch_size, 3)).astype(np.float32)}
    return {}


def with_random_weights(model, kind, seed=0):
    """``model`` built on one batch, every weight (the zero-initialised head too) replaced by N(0, 0.3^2) noise."""
    images = random_images((1,) + model.image_shape, seed)
    condition = make_condition(kind, 1, seed)
    model((images, *condition.values()) if condition else images)
    return randomize_weights(model, seed=seed, scale=0.3)


@dataclasses.dataclass
class Exported:
    model: kp.PixelCNNBase
    path: str
    sample_inputs: dict  # numpy inputs of the serving_default signature
    log_prob_inputs: dict  # numpy inputs of the log_prob signature
    expected: dict  # the Python API's outputs for those inputs


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    cases = {}
    for name, (build, kind) in CASES.items():
        keras.utils.set_random_seed(0)
        model = with_random_weights(build(), kind)
        condition = make_condition(kind, NUM_SAMPLES, seed=1)
        sample_inputs = dict(condition or {"num_samples": np.int32(NUM_SAMPLES)}, seed=SEED, temperature=TEMPERATURE)
        images = random_images((NUM_SAMPLES,) + model.image_shape, seed=2)
        raw_condition = next(iter(condition.values()), None)
        expected = {
            "images": np.asarray(
                model.sample(
                    num_samples=None if condition else NUM_SAMPLES,
                    condition=raw_condition,
                    temperature=TEMPERATURE,
                    seed=SEED,
                    jit_compile=False,  # the default export runs the graph sampler
                )
            ),
            "log_prob": np.asarray(model.log_prob(images, raw_condition)),
            "bits_per_dim": np.asarray(model.bits_per_dim(images, raw_condition)),
        }
        path = export_saved_model(model, base / name)
        cases[name] = Exported(model, path, sample_inputs, {"images": images, **condition}, expected)
    return cases


def assert_matches_python_api(outputs, expected, signature):
    if signature == "serving_default":
        assert outputs["images"].dtype == np.uint8
        np.testing.assert_array_equal(outputs["images"], expected["images"])
    else:
        np.testing.assert_allclose(outputs["log_prob"], expected["log_prob"], rtol=1e-5)
        np.testing.assert_allclose(outputs["bits_per_dim"], expected["bits_per_dim"], rtol=1e-5)


def run_process(args, **kwargs):
    return subprocess.run(
        args, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT_S, **kwargs
    )


# -- a fresh process that never imports keras_pixelcnn -----------------------------------

FRESH_PROCESS_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf

spec = json.load(open(sys.argv[1]))
results = {}
for name, case in spec.items():
    loaded = tf.saved_model.load(case["path"])
    call = lambda signature, inputs: {
        k: v.numpy() for k, v in loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()}).items()
    }
    sample_inputs = dict(np.load(case["sample_inputs"]))
    results[name + "__images"] = call("serving_default", sample_inputs)["images"]
    results[name + "__images_again"] = call("serving_default", sample_inputs)["images"]
    other_seed = dict(sample_inputs, seed=np.array([6, 9]))
    results[name + "__images_other_seed"] = call("serving_default", other_seed)["images"]
    for key, value in call("log_prob", dict(np.load(case["log_prob_inputs"]))).items():
        results[name + "__" + key] = value
imported = sorted(m for m in sys.modules if m.split(".")[0] == "keras_pixelcnn")
assert not imported, imported
np.savez(sys.argv[2], **results)
"""


def test_a_tiny_export_serves_what_the_python_api_computes(tmp_path):
    """The fast tier's export check: one tiny model exported and called in this process, a bad request refused."""
    model = kp.ConditionalPixelCNN((3, 3, 1), num_layers=1, filters=4, kernel_size=3, num_classes=2)
    model((np.zeros((1, 3, 3, 1), np.uint8), np.zeros([1], np.int32)))
    randomize_weights(model, scale=0.3)
    path = export_saved_model(model, tmp_path / "base")
    assert path == str(tmp_path / "base" / "1")
    loaded = tf.saved_model.load(path)
    class_ids, seed, temperature = np.array([1, 0, 1], np.int32), np.array([3, 4], np.int64), np.float32(0.9)
    outputs = call_signature(loaded, "serving_default", dict(class_ids=class_ids, seed=seed, temperature=temperature))
    expected = model.sample(condition=class_ids, temperature=0.9, seed=seed, jit_compile=False)
    np.testing.assert_array_equal(outputs["images"], expected)
    scores = call_signature(loaded, "log_prob", dict(images=outputs["images"], class_ids=class_ids))
    np.testing.assert_allclose(scores["log_prob"], model.log_prob(outputs["images"], class_ids), rtol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_ids: expected class ids < num_classes=2"):
        call_signature(loaded, "serving_default", dict(class_ids=[2], seed=seed, temperature=np.float32(1.0)))


@pytest.mark.large  # large: writes and loads a SavedModel (the fast tier keeps the tiny export above)
def test_a_code_model_exports_int32_codes_and_refuses_out_of_range_ones(tmp_path):
    """A K-category prior (num_categories): int32 codes in and out, codes outside [0, K) are INVALID_ARGUMENT;
    the gRPC and REST clients send and read them with codes=True."""
    model = kp.ConditionalPixelCNN((3, 4, 1), num_layers=2, filters=4, kernel_size=3, num_classes=2, num_categories=300)
    randomize_weights(model, scale=0.3)
    loaded = tf.saved_model.load(export_saved_model(model, tmp_path / "prior"))
    class_ids, seed = np.array([1, 0], np.int32), np.array([3, 4], np.int64)
    outputs = call_signature(loaded, "serving_default", dict(class_ids=class_ids, seed=seed, temperature=np.float32(1)))
    np.testing.assert_array_equal(outputs["images"], model.sample(condition=class_ids, seed=seed, jit_compile=False))
    assert outputs["images"].dtype == np.int32 and outputs["images"].max() > 255  # codes beyond 8 bits survive
    scores = call_signature(loaded, "log_prob", dict(images=outputs["images"], class_ids=class_ids))
    np.testing.assert_allclose(scores["log_prob"], model.log_prob(outputs["images"], class_ids), rtol=1e-5)
    for bad in (300, -1):
        codes = np.full((1, 3, 4, 1), bad, np.int32)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"images: expected codes in \[0, 300\)"):
            call_signature(loaded, "log_prob", dict(images=codes, class_ids=np.array([0], np.int32)))

    # The clients with codes=True: int32 images (values past 255) go in and come out.
    from export import rest_client

    codes, class_ids = np.arange(12, dtype=np.int32).reshape(1, 3, 4, 1) * 27, [1]  # 0 .. 297
    request = grpc_client.log_prob_request("prior", codes, class_ids, codes=True)
    sent = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    assert sent["images"].dtype == np.int32 and np.array_equal(sent["images"], codes)
    scores = call_signature(loaded, "log_prob", sent)
    np.testing.assert_allclose(scores["log_prob"], model.log_prob(codes, np.array(class_ids, np.int32)), rtol=1e-5)

    body = rest_client.build_rest_request("log_prob", {"images": codes, "class_ids": class_ids}, codes=True)
    assert np.array_equal(body["inputs"]["images"], codes)
    with pytest.raises(ValueError, match=r"inputs: images expected values in \[0, 255\] \(uint8\)"):
        rest_client.build_rest_request("log_prob", {"images": codes, "class_ids": class_ids})  # pixels by default
    response = {"outputs": codes.tolist()}
    decoded = rest_client.decode_rest_response(response, "serving_default", codes=True)
    assert decoded["images"].dtype == np.int32 and np.array_equal(decoded["images"], codes)


@pytest.mark.large  # large: writes and loads a SavedModel (the fast tier keeps the tiny export above)
def test_a_vqvae_prior_serves_decoded_images_and_their_codes(tmp_path):
    """VQVAEPrior: one SavedModel samples codes and decodes them; log_prob scores images through their codes."""
    from export import rest_client

    vqvae = kp.VQVAE((8, 8, 1), num_embeddings=8, embedding_dim=4, filters=8, downsample=1)
    prior = kp.ConditionalPixelCNN((4, 4, 1), num_layers=2, filters=4, kernel_size=3, num_classes=2, num_categories=8)
    randomize_weights(prior, scale=0.3)
    model = kp.VQVAEPrior(vqvae, prior)
    loaded = tf.saved_model.load(export_saved_model(model, tmp_path / "vq_prior", max_batch_size=2))
    class_ids, seed = np.array([1, 0], np.int32), np.array([3, 4], np.int64)
    outputs = call_signature(loaded, "serving_default", dict(class_ids=class_ids, seed=seed, temperature=np.float32(1)))
    images, codes = (np.asarray(x) for x in model.sample_codes(condition=class_ids, seed=seed, jit_compile=False))
    np.testing.assert_array_equal(outputs["codes"], codes)
    np.testing.assert_array_equal(outputs["images"], images)
    assert outputs["images"].dtype == np.uint8 and outputs["images"].shape == (2, 8, 8, 1) and codes.std() > 0
    scores = call_signature(loaded, "log_prob", dict(images=outputs["images"], class_ids=class_ids))
    np.testing.assert_allclose(scores["log_prob"], model.log_prob(outputs["images"], class_ids), rtol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_ids: expected class ids < num_classes=2"):
        call_signature(loaded, "serving_default", dict(class_ids=[2], seed=seed, temperature=np.float32(1.0)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_ids: expected at most max_batch_size=2"):
        call_signature(loaded, "serving_default", dict(class_ids=[0, 1, 0], seed=seed, temperature=np.float32(1)))
    body = {"outputs": {"images": outputs["images"].tolist(), "codes": outputs["codes"].tolist()}}
    decoded = rest_client.decode_rest_response(body, "serving_default")  # the REST client reads both outputs
    assert decoded["codes"].dtype == np.int32 and np.array_equal(decoded["codes"], codes)
    model.save(tmp_path / "vq_prior.keras")
    reloaded = keras.models.load_model(tmp_path / "vq_prior.keras")
    np.testing.assert_array_equal(reloaded.sample(condition=class_ids, seed=seed, jit_compile=False), images)
    with pytest.raises(ValueError, match=r"prior: expected a PixelCNN with num_categories=8 and image_shape=\(4, 4"):
        kp.VQVAEPrior(vqvae, kp.ConditionalPixelCNN((4, 4, 1), num_layers=1, filters=4, num_categories=9))


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_fresh_process_load_matches_python_api(exported, tmp_path):
    spec = {}
    for name, case in exported.items():
        np.savez(tmp_path / f"{name}_sample.npz", **case.sample_inputs)
        np.savez(tmp_path / f"{name}_log_prob.npz", **case.log_prob_inputs)
        spec[name] = {
            "path": case.path,
            "sample_inputs": str(tmp_path / f"{name}_sample.npz"),
            "log_prob_inputs": str(tmp_path / f"{name}_log_prob.npz"),
        }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "load.py").write_text(FRESH_PROCESS_SCRIPT)
    result = run_process(
        [sys.executable, str(tmp_path / "load.py"), str(tmp_path / "spec.json"), str(tmp_path / "out.npz")]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(tmp_path / "out.npz")
    for name, case in exported.items():
        images = outputs[name + "__images"]
        assert images.shape == (NUM_SAMPLES,) + case.model.image_shape
        np.testing.assert_array_equal(images, case.expected["images"], err_msg=name)
        np.testing.assert_array_equal(outputs[name + "__images_again"], images, err_msg=name)
        assert not np.array_equal(outputs[name + "__images_other_seed"], images), name
        np.testing.assert_allclose(outputs[name + "__log_prob"], case.expected["log_prob"], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(
            outputs[name + "__bits_per_dim"], case.expected["bits_per_dim"], rtol=1e-5, err_msg=name
        )


def expected_signatures(model):
    """{signature: ({input: (dtype, shape)}, {output: (dtype, shape)})} of the contract.

    Input shapes are the ones checked in the graph and recorded in pixelcnn_export.json; the SavedModel declares
    every input with an unknown shape (see test_loaded_signatures_declare_the_contract).
    """
    conditioning = {}
    if model.num_classes is not None:
        conditioning = {"class_ids": (tf.int32, [None])}
    elif model.condition_shape is not None:
        conditioning = {"condition": (tf.float32, [None, *model.condition_shape])}
    images = (tf.uint8, [None, *model.image_shape])
    sample_inputs = dict(
        conditioning or {"num_samples": (tf.int32, [])}, seed=(tf.int64, [2]), temperature=(tf.float32, [])
    )
    return {
        "serving_default": (sample_inputs, {"images": images}),
        "log_prob": (
            {"images": images, **conditioning},
            {"log_prob": (tf.float32, [None]), "bits_per_dim": (tf.float32, [None])},
        ),
    }


def declared_and_recorded_inputs(function, path, signature):
    """({input: (dtype, rank or None)} as declared, {input: (dtype, shape)} as recorded in pixelcnn_export.json)."""
    declared = {k: (v.dtype, v.shape.rank) for k, v in function.structured_input_signature[1].items()}
    with open(os.path.join(path, "assets.extra", "pixelcnn_export.json"), encoding="utf-8") as f:
        recorded = json.load(f)["signatures"][signature]["inputs"]
    return declared, {k: (tf.as_dtype(v["dtype"]), v["shape"]) for k, v in recorded.items()}


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_loaded_signatures_declare_the_contract(exported, loaded):
    for name, case in exported.items():
        for signature, (inputs, outputs) in expected_signatures(case.model).items():
            function = loaded[name].signatures[signature]
            # Inputs: declared with an unknown shape (a wrong rank then gets an in-graph error naming the input,
            # issue 11), their shapes checked in the graph and recorded beside the SavedModel.
            declared, recorded = declared_and_recorded_inputs(function, case.path, signature)
            assert declared == {k: (dtype, None) for k, (dtype, _) in inputs.items()}, (name, signature)
            assert recorded == inputs, (name, signature)
            declared_outputs = function.structured_outputs
            assert {k: (v.dtype, v.shape.as_list()) for k, v in declared_outputs.items()} == outputs, (name, signature)


# -- saved_model_cli: the session-based loader ---------------------------------------------


def parse_saved_model_cli_show(text):
    """``saved_model_cli show --all`` output -> {signature: {"inputs"|"outputs": {name: (DT_..., shape str)}}}."""
    signatures = {}
    for block in re.split(r"\nsignature_def\['", text)[1:]:
        name = block[: block.index("'")]
        entries = re.findall(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s*dtype: (\w+)\s*shape: ([^\n]+)", block)
        signature = signatures.setdefault(name, {"inputs": {}, "outputs": {}})
        for kind, key, dtype, shape in entries:
            signature[kind][key] = (dtype, shape.strip())
    return signatures


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_saved_model_cli_show_lists_both_signatures(exported):
    name = "class_softmax"  # the other cases' declarations: test_loaded_signatures_declare_the_contract
    signatures = parse_saved_model_cli_show(saved_model_cli("show", "--all", "--dir", exported[name].path))
    image_shape = "(-1, " + ", ".join(map(str, exported[name].model.image_shape)) + ")"
    conditioning = {"class_ids": ("DT_INT32", "unknown_rank")}  # inputs: shapes checked in the graph (issue 11)
    assert signatures["serving_default"] == {
        "inputs": {
            **conditioning,
            "seed": ("DT_INT64", "unknown_rank"),
            "temperature": ("DT_FLOAT", "unknown_rank"),
        },
        "outputs": {"images": ("DT_UINT8", image_shape)},
    }
    assert signatures["log_prob"] == {
        "inputs": {"images": ("DT_UINT8", "unknown_rank"), **conditioning},
        "outputs": {"log_prob": ("DT_FLOAT", "(-1)"), "bits_per_dim": ("DT_FLOAT", "(-1)")},
    }


def saved_model_cli_run(path, signature, inputs, outdir):
    """Runs one signature through saved_model_cli: arrays via an .npz file, scalars and small lists as literals."""
    arrays = {k: v for k, v in inputs.items() if np.ndim(v) > 1}
    literals = {k: np.asarray(v).tolist() for k, v in inputs.items() if np.ndim(v) <= 1}
    args = ["run", "--dir", path, "--tag_set", "serve", "--signature_def", signature, "--outdir", outdir]
    args += ["--input_exprs", ";".join(f"{k}={v!r}" for k, v in literals.items())]
    if arrays:
        np.savez(os.path.join(outdir, "inputs.npz"), **arrays)
        args += ["--inputs", ";".join(f"{k}={outdir}/inputs.npz[{k}]" for k in arrays)]
    saved_model_cli(*args)


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
@pytest.mark.parametrize(
    "name, signature",
    [
        ("class_softmax", "serving_default"),
        ("class_softmax", "log_prob"),
        ("unconditional_mixture", "serving_default"),
    ],
)
def test_saved_model_cli_run_matches_python_api(exported, tmp_path, name, signature):
    case = exported[name]
    inputs = case.sample_inputs if signature == "serving_default" else case.log_prob_inputs
    saved_model_cli_run(case.path, signature, inputs, str(tmp_path))
    outputs = {key: np.load(tmp_path / f"{key}.npy") for key in expected_signatures(case.model)[signature][1]}
    assert_matches_python_api(outputs, case.expected, signature)


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_saved_model_cli_run_refuses_a_bad_request_in_the_graph(exported, tmp_path):
    case = exported["class_softmax"]
    inputs = dict(case.sample_inputs, class_ids=np.array([0, 3], np.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_ids: expected class ids < num_classes=3"):
        saved_model_cli_run(case.path, "serving_default", inputs, str(tmp_path))
    assert not os.path.exists(tmp_path / "images.npy")


# -- requests: warm-up file, gRPC client ---------------------------------------------------


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_warmup_requests_cover_both_signatures_and_run(exported, loaded):
    for name, case in exported.items():
        records = tf.data.TFRecordDataset(os.path.join(case.path, "assets.extra", "tf_serving_warmup_requests"))
        requests = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request for r in records]
        assert sorted(r.model_spec.signature_name for r in requests) == ["log_prob", "serving_default"], name
        for request in requests:
            assert request.model_spec.name == name  # the export base directory's name
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            declared = loaded[name].signatures[request.model_spec.signature_name].structured_input_signature[1]
            assert sorted(inputs) == sorted(declared), name
            outputs = call_signature(loaded[name], request.model_spec.signature_name, inputs)
            assert all(value.shape[0] == 1 for value in outputs.values()), (name, outputs)


def grpc_requests(name, case):
    """The client's sampling and log_prob requests for a case, from plain Python values."""
    condition = {k: v.tolist() for k, v in case.log_prob_inputs.items() if k != "images"}
    sample = grpc_client.sample_request(
        name,
        seed=SEED.tolist(),
        temperature=float(TEMPERATURE),
        num_samples=None if condition else NUM_SAMPLES,
        **condition,
    )
    log_prob = grpc_client.log_prob_request(name, case.log_prob_inputs["images"].tolist(), **condition)
    return {"serving_default": sample, "log_prob": log_prob}


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_grpc_request_builder_matches_the_signatures(exported, loaded):
    for name, case in exported.items():
        for signature, request in grpc_requests(name, case).items():
            assert request.model_spec.name == name and request.model_spec.signature_name == signature
            declared = loaded[name].signatures[signature].structured_input_signature[1]
            assert sorted(request.inputs) == sorted(declared), (name, signature)
            for key, proto in request.inputs.items():
                assert proto.dtype == declared[key].dtype.as_datatype_enum, (name, signature, key)
                assert tf.TensorShape(proto.tensor_shape).is_compatible_with(declared[key].shape), (
                    name,
                    signature,
                    key,
                )
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            assert_matches_python_api(call_signature(loaded[name], signature, inputs), case.expected, signature)


def test_grpc_request_builder_rejects_unknown_inputs_and_wrong_ranks():
    with pytest.raises(ValueError, match="inputs: unknown input 'class_id'"):
        grpc_client.build_predict_request("pixelcnn", "serving_default", {"class_id": [0]})
    with pytest.raises(ValueError, match="inputs: temperature expected rank 0"):
        grpc_client.sample_request("pixelcnn", seed=[1, 2], temperature=[1.0], class_ids=[0])
    with pytest.raises(ValueError, match="num_samples: only for unconditional models"):
        grpc_client.sample_request("pixelcnn", seed=[1, 2], class_ids=[0], num_samples=1)


class StandInPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF-Serving's Predict over gRPC, backed by SavedModels loaded in this process."""

    def __init__(self, models):
        self.models = models

    def Predict(self, request, context):
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            outputs = call_signature(self.models[request.model_spec.name], request.model_spec.signature_name, inputs)
        except tf.errors.InvalidArgumentError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
        response = predict_pb2.PredictResponse()
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


@pytest.fixture(scope="module")
def stand_in_server(loaded):
    """Address of a gRPC PredictionService serving the exported models under their case names."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(StandInPredictionService(loaded), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    yield f"localhost:{port}"
    server.stop(grace=None)


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_grpc_client_predict_round_trip(exported, stand_in_server):
    for name in ("class_mixture", "vector"):
        for signature, request in grpc_requests(name, exported[name]).items():
            outputs = grpc_client.predict(stand_in_server, request, timeout_s=60)
            assert_matches_python_api(outputs, exported[name].expected, signature)


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_grpc_client_predict_passes_on_invalid_argument(exported, stand_in_server):
    request = grpc_client.sample_request("class_softmax", seed=[1, 2], class_ids=[0, 3])
    with pytest.raises(grpc.RpcError) as raised:
        grpc_client.predict(stand_in_server, request, timeout_s=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "class_ids: expected class ids < num_classes=3" in raised.value.details()


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_grpc_client_command_line(exported, stand_in_server, tmp_path):
    case = exported["class_softmax"]
    class_ids = ",".join(str(c) for c in case.sample_inputs["class_ids"])
    result = run_process(
        [
            sys.executable, "-m", "export.grpc_client", f"--server={stand_in_server}", "--model_name=class_softmax",
            f"--class_ids={class_ids}", "--seed=5,9", "--temperature=0.8", f"--output={tmp_path}/samples.npy",
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "images: uint8 [3, 4, 4, 3]" in result.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "samples.npy"), case.expected["images"])


# -- bad requests fail inside the graph ------------------------------------------------------

BAD_REQUESTS = [
    # (case, signature, replaced inputs, message)
    ("class_softmax", "serving_default", {"class_ids": [0, 3]}, "class_ids: expected class ids < num_classes=3"),
    ("class_softmax", "serving_default", {"class_ids": [-1]}, "class_ids: expected class ids >= 0"),
    (
        "class_mixture",
        "serving_default",
        {"class_ids": np.zeros([0], np.int32)},
        "class_ids: expected at least one class id",
    ),
    ("class_softmax", "serving_default", {"temperature": 0.0}, "temperature: expected a finite number > 0"),
    ("class_mixture", "serving_default", {"temperature": -1.0}, "temperature: expected a finite number > 0"),
    ("unconditional_softmax", "serving_default", {"temperature": np.nan}, "temperature: expected a finite number > 0"),
    ("unconditional_mixture", "serving_default", {"temperature": np.inf}, "temperature: expected a finite number > 0"),
    ("unconditional_softmax", "serving_default", {"num_samples": 0}, "num_samples: expected an int >= 1"),
    ("unconditional_mixture", "serving_default", {"num_samples": -2}, "num_samples: expected an int >= 1"),
    ("vector", "serving_default", {"condition": np.zeros([2, 2], np.float32)}, "condition: expected shape [batch, 3]"),
    ("vector", "serving_default", {"condition": np.zeros([0, 3], np.float32)}, "condition: expected at least one row"),
    (
        "vector",
        "serving_default",
        {"condition": np.full([1, 3], np.nan, np.float32)},
        "condition: expected finite floats",
    ),
    ("vector", "log_prob", {"condition": np.zeros([3, 4], np.float32)}, "condition: expected shape [batch, 3]"),
    ("vector", "log_prob", {"condition": np.zeros([2, 3], np.float32)}, "condition: expected one entry per image"),
    ("class_softmax", "log_prob", {"class_ids": [0]}, "class_ids: expected one entry per image"),
    ("class_mixture", "log_prob", {"class_ids": [0, 1, 5]}, "class_ids: expected class ids < num_classes=3"),
    (
        "unconditional_softmax",
        "log_prob",
        {"images": np.zeros([0, 5, 5, 1], np.uint8)},
        "images: expected at least one image",
    ),
    # Same number of values as [B, 4, 4, 3]: without the in-graph shape check this returns garbage.
    (
        "class_softmax",
        "log_prob",
        {"images": np.zeros([3, 2, 8, 3], np.uint8)},
        "images: expected shape [batch, 4, 4, 3]",
    ),
    (
        "unconditional_mixture",
        "log_prob",
        {"images": np.zeros([3, 4, 4], np.uint8)},
        "images: expected shape [batch, 4, 4, 3]",
    ),
]


# Fixed-shape inputs of the wrong shape: TF may fold their shape check away, but the kernels refuse them.
BAD_FIXED_SHAPES = [
    ("class_softmax", {"seed": np.array([1, 2, 3], np.int64)}),
    ("class_mixture", {"temperature": np.ones([2], np.float32)}),
    ("unconditional_mixture", {"num_samples": np.array([2, 2], np.int32)}),
]


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
@pytest.mark.parametrize("name, signature, replaced, message", BAD_REQUESTS)
def test_bad_request_fails_in_graph_with_invalid_argument(exported, loaded, name, signature, replaced, message):
    case = exported[name]
    inputs = dict(case.sample_inputs if signature == "serving_default" else case.log_prob_inputs)
    declared = loaded[name].signatures[signature].structured_input_signature[1]
    inputs.update({k: np.asarray(v, declared[k].dtype.as_numpy_dtype) for k, v in replaced.items()})
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        call_signature(loaded[name], signature, inputs)


# -- export_saved_model: arguments, versions, atomicity -----------------------------------------


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "model.keras"}, "model: expected a keras_pixelcnn PixelCNN model"),
        ({"model": keras.layers.Dense(2)}, "model: expected a keras_pixelcnn PixelCNN model"),
        ({"export_base": None}, "export_base: expected a directory path"),
        ({"export_base": ""}, "export_base: expected a directory path"),
        ({"export_base": "A_FILE"}, "export_base: .* is not a directory"),
        ({"version": 0}, "version: expected None or an int >= 1"),
        ({"version": True}, "version: expected None or an int >= 1"),
        ({"version": 1.0}, "version: expected None or an int >= 1"),
        ({"version": "2"}, "version: expected None or an int >= 1"),
        ({"version": 4}, "version: .*/4 already exists"),
    ],
)
def test_export_saved_model_rejects_bad_arguments(exported, tmp_path, kwargs, message):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "base" / "4").mkdir(parents=True)
    arguments = {"model": exported["class_softmax"].model, "export_base": str(tmp_path / "base"), "version": None}
    arguments.update(kwargs)
    if arguments["export_base"] == "A_FILE":
        arguments["export_base"] = str(tmp_path / "a_file")
    with pytest.raises(ValueError, match=message):
        export_saved_model(**arguments)
    assert os.listdir(tmp_path / "base") == ["4"]


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_interrupted_export_leaves_no_version_and_the_next_one_succeeds(exported, tmp_path, monkeypatch):
    model = exported["unconditional_softmax"].model
    base = tmp_path / "pixelcnn"
    assert export_saved_model(model, base) == str(base / "1")

    def fail_mid_write(model, saved_model_dir, model_name):
        # The SavedModel is written, the warm-up file not yet: all of it is under a non-numeric name.
        assert os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb"))
        assert sorted(os.listdir(base)) == sorted(["1", os.path.basename(saved_model_dir)])
        assert os.path.basename(saved_model_dir).startswith(".tmp-export-")
        raise OSError("No space left on device")

    monkeypatch.setattr(export_lib, "_write_warmup_requests", fail_mid_write)
    with pytest.raises(OSError, match="No space left on device"):
        export_saved_model(model, base)
    with pytest.raises(OSError, match="No space left on device"):
        export_saved_model(model, base, version=2)
    assert os.listdir(base) == ["1"]
    monkeypatch.undo()

    (base / ".tmp-export-left-by-a-killed-export").mkdir()  # a killed process leaves its (ignored) temp dir
    assert export_saved_model(model, base) == str(base / "2")
    assert export_saved_model(model, base, version=7) == str(base / "7")
    assert export_saved_model(model, base) == str(base / "8")
    assert os.path.isfile(base / "2" / "assets.extra" / "tf_serving_warmup_requests")
    outputs = call_signature(
        tf.saved_model.load(str(base / "2")), "log_prob", exported["unconditional_softmax"].log_prob_inputs
    )
    np.testing.assert_allclose(outputs["log_prob"], exported["unconditional_softmax"].expected["log_prob"], rtol=1e-5)


# -- the export binary and the model_dir contract ---------------------------------------------


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Training directories per the contract, and the log-probs of each saved state.

    Returns:
      (checkpoints_only, full, images, labels, log_probs): ``checkpoints_only``
      holds checkpoints/ckpt-1 and ckpt-2 (after two and four training steps)
      plus model_config.json; ``full`` holds the same plus model.keras (six
      steps). log_probs: {"ckpt-1", "ckpt-2", "model.keras": float32 [B]}.
    """
    keras.utils.set_random_seed(0)
    checkpoints_only = tmp_path_factory.mktemp("run_checkpoints_only")
    model = kp.ConditionalPixelCNN((4, 4, 1), num_layers=1, filters=4, kernel_size=3, num_classes=2)
    model.compile(optimizer="adam")
    images, labels = random_images((8, 4, 4, 1), seed=3), np.arange(8, dtype=np.int32) % 2
    step = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=step), str(checkpoints_only / "checkpoints"), 5
    )
    (checkpoints_only / "model_config.json").write_text(json.dumps(keras.saving.serialize_keras_object(model)))
    log_probs = {}
    for name in ("ckpt-1", "ckpt-2", "model.keras"):
        model.fit((images, labels), epochs=1, batch_size=4, verbose=0)
        step.assign_add(2)
        log_probs[name] = np.asarray(model.log_prob(images, labels))
        if name != "model.keras":
            assert manager.save() == str(checkpoints_only / "checkpoints" / name)
    full = tmp_path_factory.mktemp("run_full") / "run"
    shutil.copytree(checkpoints_only, full)
    model.save(full / "model.keras")
    log_probs["model.keras"] = np.asarray(model.log_prob(images, labels))
    return checkpoints_only, full, images, labels, log_probs


def exported_log_prob(path, images, labels):
    return call_signature(tf.saved_model.load(path), "log_prob", {"images": images, "class_ids": labels})["log_prob"]


@pytest.mark.large  # large: trains two runs with the trainer, then exports them
def test_cli_exports_the_latest_checkpoint_without_a_final_model(model_dirs, tmp_path, capsys):
    checkpoints_only, _, images, labels, log_probs = model_dirs
    base = tmp_path / "pixelcnn"
    run_main(export_cli, [f"--model_dir={checkpoints_only}", f"--export_base={base}"])
    assert f"checkpoints/ckpt-2 to {base}/1" in capsys.readouterr().out
    assert sorted(os.listdir(base)) == ["1"]
    np.testing.assert_allclose(exported_log_prob(str(base / "1"), images, labels), log_probs["ckpt-2"], rtol=1e-5)


@pytest.mark.large  # large: trains two runs with the trainer, then exports them
def test_export_prefers_the_final_model_and_honours_checkpoint(model_dirs, tmp_path):
    _, full, images, labels, log_probs = model_dirs
    base = str(tmp_path / "pixelcnn")
    path = export_cli.export_from_model_dir(str(full), base)
    np.testing.assert_allclose(exported_log_prob(path, images, labels), log_probs["model.keras"], rtol=1e-5)
    path = export_cli.export_from_model_dir(str(full), base, checkpoint="ckpt-1")
    assert path == os.path.join(base, "2")
    np.testing.assert_allclose(exported_log_prob(path, images, labels), log_probs["ckpt-1"], rtol=1e-5)
    path = export_cli.export_from_model_dir(str(full), base, version=5, checkpoint=str(full / "checkpoints" / "ckpt-2"))
    assert path == os.path.join(base, "5")
    np.testing.assert_allclose(exported_log_prob(path, images, labels), log_probs["ckpt-2"], rtol=1e-5)
    with pytest.raises(app.UsageError, match="--version=5: version: .*/5 already exists"):
        export_cli.export_from_model_dir(str(full), base, version=5)


def test_cli_fails_with_an_error_naming_the_flag(tmp_path):
    """The binary's main (a usage error exits 1 with its one line: test_binaries.py)."""
    missing = tmp_path / "run"
    with pytest.raises(app.UsageError, match=f"^--model_dir: {re.escape(str(missing))} is not a directory"):
        run_main(export_cli, [f"--model_dir={missing}", f"--export_base={tmp_path}/b"])
    assert not os.path.exists(tmp_path / "b")


@pytest.mark.large  # large: trains two runs with the trainer, then exports them
def test_export_errors_name_the_flag(model_dirs, tmp_path):
    checkpoints_only, base = model_dirs[0], str(tmp_path / "b")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(app.UsageError, match="model_dir: .*empty holds neither model.keras nor a checkpoint"):
        export_cli.export_from_model_dir(str(tmp_path / "empty"), base)
    with pytest.raises(app.UsageError, match="checkpoint: no checkpoint 'ckpt-99'"):
        export_cli.export_from_model_dir(str(checkpoints_only), base, checkpoint="ckpt-99")
    shutil.copytree(checkpoints_only / "checkpoints", tmp_path / "no_config" / "checkpoints")
    with pytest.raises(app.UsageError, match="model_dir: no model_config.json"):
        export_cli.export_from_model_dir(str(tmp_path / "no_config"), base)
    shutil.copytree(checkpoints_only, tmp_path / "other_config")
    config = json.loads((checkpoints_only / "model_config.json").read_text())
    config["config"]["filters"] = 8
    (tmp_path / "other_config" / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(
        app.UsageError, match="--model_dir: the latest checkpoint .* does not fit the model of model_config.json"
    ):
        export_cli.export_from_model_dir(str(tmp_path / "other_config"), base)
    with pytest.raises(app.UsageError, match="--export_base=.* --version=0: version: expected None or an int >= 1"):
        export_cli.export_from_model_dir(str(checkpoints_only), base, version=0)
    assert not os.path.exists(base)


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
@pytest.mark.parametrize("name, replaced", BAD_FIXED_SHAPES)
def test_wrong_fixed_shape_fails_with_invalid_argument(exported, loaded, name, replaced):
    with pytest.raises(tf.errors.InvalidArgumentError):
        call_signature(loaded[name], "serving_default", dict(exported[name].sample_inputs, **replaced))
