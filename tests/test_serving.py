"""Serving under load and abuse: batch limits, malformed requests, concurrent requests, the REST client.

One tiny model per kind (class-conditional, vector-conditioned, unconditional,
auto-encoder) with random weights, exported with max_batch_size=4 and loaded
in this process, stands in for TF-Serving (no server binary here): a request
is a call of the loaded signature, and a REST request is its JSON body typed
the way the server's JSON decoder types it (numbers into the declared dtypes).
"""

import dataclasses
import http.server
import json
import os
import re
import sys
import threading
import time
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf
from conftest import call_signature, random_images, randomize_weights, run_main
from test_export import run_process

import keras_pixelcnn as kp
from export import export as export_cli
from export import rest_client
from keras_pixelcnn.export_lib import export_saved_model

MAX_BATCH = 4
I32, I64, F32, U8 = np.int32, np.int64, np.float32, np.uint8
PROMPT_S = 5.0  # a refused request of any size returns within this (the work it asks for would take hours)

CASES = {
    "class": lambda: kp.ConditionalPixelCNN((4, 4, 1), num_layers=1, filters=4, kernel_size=3, num_classes=3),
    "vector": lambda: kp.ConditionalPixelCNN((4, 4, 1), num_layers=1, filters=4, kernel_size=3, condition_shape=(3,)),
    "unconditional": lambda: kp.ConditionalPixelCNN(
        (4, 4, 1), num_layers=1, filters=4, kernel_size=3, head="logistic_mixture", num_mixtures=2
    ),
    "autoencoder": lambda: kp.PixelCNNAutoEncoder((4, 4, 1), 2, num_layers=1, filters=4, kernel_size=3),
}
SIGNATURES = {
    "class": ["log_prob", "serving_default"],
    "vector": ["log_prob", "serving_default"],
    "unconditional": ["log_prob", "serving_default"],
    "autoencoder": ["encode", "log_prob", "reconstruct", "serving_default"],
}


def good_requests(kind, model, batch, seed=0):
    """{signature: {input name: numpy array}}: valid requests of ``batch`` images."""
    rng = np.random.default_rng(seed)
    images = random_images((batch,) + model.image_shape, seed)
    controls = {"seed": np.array([seed, 7], np.int64), "temperature": np.float32(0.9)}
    if kind == "autoencoder":
        codes = rng.normal(size=(batch, model.bottleneck_dim)).astype(np.float32)
        return {
            "encode": {"images": images},
            "serving_default": {"condition": codes, **controls},
            "reconstruct": {"images": images, **controls},
            "log_prob": {"images": images},
        }
    conditioning = {
        "class": {"class_ids": rng.integers(0, 3, batch).astype(np.int32)},
        "vector": {"condition": rng.normal(size=(batch, 3)).astype(np.float32)},
        "unconditional": {},
    }[kind]
    return {
        "serving_default": dict(conditioning or {"num_samples": np.int32(batch)}, **controls),
        "log_prob": {"images": images, **conditioning},
    }


@dataclasses.dataclass
class Exported:
    model: object
    path: str


def build_random(kind):
    """A model of ``kind`` built on one batch, with random weights (the contracts need no training)."""
    model = CASES[kind]()
    images = np.zeros((1,) + model.image_shape, U8)
    condition = {"class": [np.zeros([1], I32)], "vector": [np.zeros([1, 3], F32)]}.get(kind)
    model((images, *condition) if condition else images)
    # The auto-encoder's encoder keeps its initial weights: random batch-norm variances would give NaN codes.
    randomize_weights(model.decoder if kind == "autoencoder" else model, scale=0.3)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return {
        kind: Exported(model, export_saved_model(model, base / kind, max_batch_size=MAX_BATCH))
        for kind, model in ((kind, build_random(kind)) for kind in CASES)
    }


def assert_refused(loaded_model, signature, inputs, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        call_signature(loaded_model, signature, inputs)


def assert_same_outputs(got, expected, where=""):
    assert sorted(got) == sorted(expected), where
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, (where, key)
        np.testing.assert_array_equal(got[key], value, err_msg=f"{where} {key}")


# -- the export records its limit and contract ------------------------------------------------------------------


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_export_info_records_the_limit_kind_and_signatures(exported, loaded):
    for kind, case in exported.items():
        with open(os.path.join(case.path, "assets.extra", "pixelcnn_export.json"), encoding="utf-8") as f:
            info = json.load(f)
        assert info["model_kind"] == kind
        assert info["max_batch_size"] == MAX_BATCH
        assert sorted(info["signatures"]) == sorted(loaded[kind].signatures) == SIGNATURES[kind]
        for signature, request in good_requests(kind, case.model, 2).items():
            recorded = info["signatures"][signature]["inputs"]
            assert sorted(recorded) == sorted(request), (kind, signature)
            declared = loaded[kind].signatures[signature].structured_input_signature[1]
            for name, value in request.items():
                assert recorded[name]["dtype"] == declared[name].dtype.name == value.dtype.name, (kind, name)
                shape = recorded[name]["shape"]
                assert len(shape) == value.ndim and shape[1:] == list(value.shape[1:]), (kind, name, shape)


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
@pytest.mark.parametrize("max_batch_size", [0, -1, True, 2.0, "8"])
def test_export_rejects_a_bad_max_batch_size(exported, tmp_path, max_batch_size):
    with pytest.raises(ValueError, match=r"max_batch_size: expected None \(no limit\) or an int >= 1"):
        export_saved_model(exported["class"].model, tmp_path / "base", max_batch_size=max_batch_size)
    assert not os.path.exists(tmp_path / "base")  # checked before anything is written


# -- malformed requests -----------------------------------------------------------------------------------------

MALFORMED = [
    # (kind, signature, replaced inputs, expected message; it starts with the input's name)
    ("class", "serving_default", {"class_ids": np.zeros([1, 2], I32)}, "class_ids: expected shape [batch], got"),
    ("class", "serving_default", {"class_ids": I32(1)}, "class_ids: expected shape [batch], got"),
    ("class", "serving_default", {"class_ids": np.zeros([0], I32)}, "class_ids: expected at least one class id"),
    ("class", "serving_default", {"class_ids": np.array([0, 3], I32)}, "class_ids: expected class ids < num_classes=3"),
    ("class", "serving_default", {"class_ids": np.array([-1], I32)}, "class_ids: expected class ids >= 0"),
    ("class", "serving_default", {"class_ids": np.array([2**31 - 1], I32)}, "class_ids: expected class ids < num_cl"),
    ("class", "serving_default", {"class_ids": np.zeros([5], I32)}, "class_ids: expected at most max_batch_size=4"),
    ("class", "serving_default", {"seed": np.array([1, 2, 3], I64)}, "seed: expected shape [2], got"),
    ("class", "serving_default", {"seed": I64(7)}, "seed: expected shape [2], got"),
    ("class", "serving_default", {"seed": np.array([[1, 2]], I64)}, "seed: expected shape [2], got"),
    ("class", "serving_default", {"temperature": F32(0)}, "temperature: expected a finite number > 0"),
    ("class", "serving_default", {"temperature": F32(-1)}, "temperature: expected a finite number > 0"),
    ("class", "serving_default", {"temperature": F32(np.nan)}, "temperature: expected a finite number > 0"),
    ("class", "serving_default", {"temperature": F32(np.inf)}, "temperature: expected a finite number > 0"),
    ("class", "serving_default", {"temperature": np.ones([1], F32)}, "temperature: expected shape [] (a scalar)"),
    ("class", "log_prob", {"class_ids": np.zeros([1], I32)}, "class_ids: expected one entry per image"),
    ("class", "log_prob", {"class_ids": np.zeros([2, 1], I32)}, "class_ids: expected shape [batch], got"),
    ("class", "log_prob", {"images": np.zeros([2, 4, 4], U8)}, "images: expected shape [batch, 4, 4, 1], got"),
    ("class", "log_prob", {"images": np.zeros([2, 4, 4, 1, 1], U8)}, "images: expected shape [batch, 4, 4, 1]"),
    ("class", "log_prob", {"images": np.zeros([2, 4, 4, 3], U8)}, "images: expected shape [batch, 4, 4, 1]"),
    ("class", "log_prob", {"images": np.zeros([5, 4, 4, 1], U8)}, "images: expected at most max_batch_size=4"),
    ("vector", "serving_default", {"condition": np.zeros([3], F32)}, "condition: expected shape [batch, 3], got"),
    ("vector", "serving_default", {"condition": np.zeros([2, 2], F32)}, "condition: expected shape [batch, 3], got"),
    ("vector", "serving_default", {"condition": np.zeros([0, 3], F32)}, "condition: expected at least one row"),
    ("vector", "serving_default", {"condition": np.full([2, 3], np.nan, F32)}, "condition: expected finite floats"),
    ("vector", "serving_default", {"condition": np.full([1, 3], -np.inf, F32)}, "condition: expected finite floats"),
    ("vector", "serving_default", {"condition": np.zeros([5, 3], F32)}, "condition: expected at most max_batch_size=4"),
    ("vector", "log_prob", {"condition": np.zeros([1, 3], F32)}, "condition: expected one entry per image"),
    ("vector", "log_prob", {"images": np.zeros([0, 4, 4, 1], U8)}, "images: expected at least one image"),
    ("unconditional", "serving_default", {"num_samples": np.array([2], I32)}, "num_samples: expected shape []"),
    ("unconditional", "serving_default", {"num_samples": I32(0)}, "num_samples: expected an int >= 1"),
    ("unconditional", "serving_default", {"num_samples": I32(-3)}, "num_samples: expected an int >= 1"),
    ("unconditional", "serving_default", {"num_samples": I32(5)}, "num_samples: expected an int >= 1 and at most"),
    ("unconditional", "serving_default", {"temperature": F32(np.nan)}, "temperature: expected a finite number > 0"),
    ("unconditional", "log_prob", {"images": np.zeros([2, 2, 8, 1], U8)}, "images: expected shape [batch, 4, 4, 1]"),
    ("autoencoder", "encode", {"images": np.zeros([0, 4, 4, 1], U8)}, "images: expected at least one image"),
    ("autoencoder", "encode", {"images": np.zeros([2, 4, 4], U8)}, "images: expected shape [batch, 4, 4, 1], got"),
    ("autoencoder", "encode", {"images": np.zeros([5, 4, 4, 1], U8)}, "images: expected at most max_batch_size=4"),
    ("autoencoder", "serving_default", {"condition": np.zeros([2, 3], F32)}, "condition: expected shape [batch, 2]"),
    ("autoencoder", "serving_default", {"condition": np.full([2, 2], np.nan, F32)}, "condition: expected finite floa"),
    ("autoencoder", "serving_default", {"seed": np.array([1], I64)}, "seed: expected shape [2], got"),
    ("autoencoder", "reconstruct", {"temperature": F32(0)}, "temperature: expected a finite number > 0"),
    ("autoencoder", "reconstruct", {"images": np.zeros([5, 4, 4, 1], U8)}, "images: expected at most max_batch_size=4"),
    ("autoencoder", "reconstruct", {"seed": I64(3)}, "seed: expected shape [2], got"),
    ("autoencoder", "log_prob", {"images": np.zeros([2, 4, 4, 1, 2], U8)}, "images: expected shape [batch, 4, 4, 1]"),
    ("autoencoder", "log_prob", {"images": np.zeros([2, 4, 4, 2], U8)}, "images: expected shape [batch, 4, 4, 1]"),
]  # fmt: skip


def test_the_malformed_table_covers_every_signature_of_every_kind():
    assert len(MALFORMED) >= 30
    covered = {(kind, signature) for kind, signature, _, _ in MALFORMED}
    assert covered == {(kind, signature) for kind, signatures in SIGNATURES.items() for signature in signatures}


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
@pytest.mark.parametrize("kind, signature, replaced, message", MALFORMED)
def test_malformed_request_fails_with_invalid_argument_naming_the_input(
    exported, loaded, kind, signature, replaced, message
):
    (name,) = replaced
    assert message.startswith(f"{name}: ")
    inputs = dict(good_requests(kind, exported[kind].model, 2)[signature], **replaced)
    assert_refused(loaded[kind], signature, inputs, message)


# -- batch limits -------------------------------------------------------------------------------------------------


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_requests_at_max_batch_size_succeed_and_one_more_is_refused(exported, loaded):
    for kind, case in exported.items():
        at_limit, above = good_requests(kind, case.model, MAX_BATCH), good_requests(kind, case.model, MAX_BATCH + 1)
        for signature, inputs in at_limit.items():
            outputs = call_signature(loaded[kind], signature, inputs)
            assert all(value.shape[0] == MAX_BATCH for value in outputs.values()), (kind, signature)
            assert all(np.all(np.isfinite(value)) for value in outputs.values()), (kind, signature)
            assert_refused(loaded[kind], signature, above[signature], f"at most max_batch_size={MAX_BATCH}")


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_huge_requests_are_refused_promptly(exported, loaded):
    good = good_requests("unconditional", exported["unconditional"].model, 1)["serving_default"]
    call_signature(loaded["unconditional"], "serving_default", good)  # traced and warm
    start = time.monotonic()
    assert_refused(loaded["unconditional"], "serving_default", dict(good, num_samples=I32(2**31 - 1)), "num_samples")
    assert time.monotonic() - start < PROMPT_S
    good = good_requests("class", exported["class"].model, 1)["serving_default"]
    start = time.monotonic()
    many = np.zeros([200_000], I32)
    assert_refused(loaded["class"], "serving_default", dict(good, class_ids=many), "class_ids: expected at most")
    assert time.monotonic() - start < PROMPT_S


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_max_batch_size_none_means_no_limit(exported, tmp_path):
    path = export_saved_model(exported["unconditional"].model, tmp_path / "nolimit", max_batch_size=None)
    with open(os.path.join(path, "assets.extra", "pixelcnn_export.json"), encoding="utf-8") as f:
        assert json.load(f)["max_batch_size"] is None
    inputs = good_requests("unconditional", exported["unconditional"].model, MAX_BATCH + 3)["serving_default"]
    images = call_signature(tf.saved_model.load(path), "serving_default", inputs)["images"]
    assert images.shape == (MAX_BATCH + 3, 4, 4, 1)


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_exporter_prints_and_records_the_limit(exported, tmp_path, capsys):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    exported["class"].model.save(model_dir / "model.keras")
    path = export_cli.export_from_model_dir(str(model_dir), str(tmp_path / "default"))
    printed = capsys.readouterr().out
    assert "max_batch_size: 256" in printed and "Signatures (class model): serving_default, log_prob" in printed
    with open(os.path.join(path, "assets.extra", "pixelcnn_export.json"), encoding="utf-8") as f:
        assert json.load(f)["max_batch_size"] == export_cli.DEFAULT_MAX_BATCH_SIZE == 256
    run_main(export_cli, [f"--model_dir={model_dir}", f"--export_base={tmp_path}/nolimit", "--max_batch_size=0"])
    assert "max_batch_size: none" in capsys.readouterr().out
    with open(tmp_path / "nolimit" / "1" / "assets.extra" / "pixelcnn_export.json", encoding="utf-8") as f:
        assert json.load(f)["max_batch_size"] is None


# -- concurrent requests -----------------------------------------------------------------------------------------

BAD_FOR_CLASS = [
    ("serving_default", {"class_ids": np.array([0, 3], I32)}),
    ("serving_default", {"temperature": F32(0)}),
    ("serving_default", {"class_ids": np.zeros([MAX_BATCH + 1], I32)}),
    ("serving_default", {"seed": np.array([1, 2, 3], I64)}),
    ("log_prob", {"class_ids": np.zeros([1], I32)}),
    ("log_prob", {"images": np.zeros([2, 4, 4], U8)}),
]


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_concurrent_mixed_requests_match_the_same_requests_alone(exported, loaded):
    """8 threads x 20 requests, good and bad interleaved, on one loaded model."""
    model, signatures = exported["class"].model, loaded["class"]
    good = [request for seed in range(4) for request in good_requests("class", model, 2, seed).items()]
    alone = [call_signature(signatures, signature, inputs) for signature, inputs in good]
    valid = good_requests("class", model, 2)
    bad = [(signature, dict(valid[signature], **replaced)) for signature, replaced in BAD_FOR_CLASS]

    def client(thread):
        results = []
        for i in range(20):
            if (thread + i) % 2 == 0:
                index = (thread * 3 + i) % len(good)
                results.append(("good", index, call_signature(signatures, *good[index])))
            else:
                index = (thread + i) % len(bad)
                try:
                    call_signature(signatures, *bad[index])
                    results.append(("bad", index, "accepted"))
                except tf.errors.InvalidArgumentError as error:
                    results.append(("bad", index, error.message))
        return results

    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = [result for thread_results in pool.map(client, range(8)) for result in thread_results]
    assert len(results) == 160
    for kind, index, outcome in results:
        if kind == "good":
            assert_same_outputs(outcome, alone[index], f"good request {index}")
        else:
            (name,) = BAD_FOR_CLASS[index][1]
            assert outcome != "accepted" and f"{name}: expected" in outcome, (index, outcome)
    assert_same_outputs(call_signature(signatures, *good[0]), alone[0], "after the load")  # still serving


# -- REST ------------------------------------------------------------------------------------------------------


def typed_like_tf_serving(loaded_model, body):
    """A parsed REST body's inputs as the server's JSON decoder types them: the declared dtypes."""
    declared = loaded_model.signatures[body["signature_name"]].structured_input_signature[1]
    return {name: np.asarray(value, declared[name].dtype.as_numpy_dtype) for name, value in body["inputs"].items()}


def tf_serving_response(outputs):
    """TF-Serving's columnar response body: a single output bare, several by name."""
    values = {name: value.tolist() for name, value in outputs.items()}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_rest_request_and_response_round_trip_for_every_signature(exported, loaded):
    for kind, case in exported.items():
        for signature, inputs in good_requests(kind, case.model, 2, seed=3).items():
            body = json.loads(json.dumps(rest_client.build_rest_request(signature, inputs)))
            assert body["signature_name"] == signature and sorted(body["inputs"]) == sorted(inputs)
            outputs = call_signature(loaded[kind], signature, typed_like_tf_serving(loaded[kind], body))
            assert_same_outputs(outputs, call_signature(loaded[kind], signature, inputs), f"{kind} {signature}")
            response = json.dumps(tf_serving_response(outputs))
            assert_same_outputs(rest_client.decode_rest_response(response, signature), outputs, f"{kind} {signature}")


def test_rest_request_builder_and_decoder_reject_bad_values():
    with pytest.raises(ValueError, match="signature_name: expected one of"):
        rest_client.build_rest_request("sample", {"num_samples": 1})
    with pytest.raises(ValueError, match="inputs: unknown input 'class_id'"):
        rest_client.build_rest_request("serving_default", {"class_id": [0]})
    with pytest.raises(ValueError, match="inputs: temperature expected rank 0"):
        rest_client.build_rest_request("serving_default", {"temperature": [1.0]})
    with pytest.raises(ValueError, match=r"inputs: class_ids expected integers \(int32\)"):
        rest_client.build_rest_request("serving_default", {"class_ids": [0.5]})
    with pytest.raises(ValueError, match=r"inputs: images expected values in \[0, 255\]"):
        rest_client.build_rest_request("log_prob", {"images": np.full([1, 2, 2, 1], 256)})
    with pytest.raises(rest_client.PredictError, match="class_ids: expected class ids < num_classes=3"):
        rest_client.decode_rest_response('{"error": "class_ids: expected class ids < num_classes=3"}', "log_prob")
    with pytest.raises(ValueError, match=r"body: expected outputs \['log_prob', 'bits_per_dim'\]"):
        rest_client.decode_rest_response({"outputs": [1.0]}, "log_prob")


class StandInRestServer(http.server.ThreadingHTTPServer):
    """TF-Serving's REST predict endpoint, backed by SavedModels loaded in this process."""

    def __init__(self, models):
        super().__init__(("127.0.0.1", 0), StandInRestHandler)
        self.models = models


class StandInRestHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        match = re.fullmatch(r"/v1/models/(\w+):predict", self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            loaded_model = self.server.models[match.group(1)]
            outputs = call_signature(loaded_model, body["signature_name"], typed_like_tf_serving(loaded_model, body))
            status, response = 200, tf_serving_response(outputs)
        except tf.errors.InvalidArgumentError as error:
            status, response = 400, {"error": error.message}
        data = json.dumps(response).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def rest_server(loaded):
    """Base URL of a stand-in REST server on the loopback interface serving the exported models."""
    server = StandInRestServer(loaded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_module(module, *args):
    return run_process([sys.executable, "-m", module, *args])


@pytest.mark.large  # large: uses the module's SavedModel exports (built once per module)
def test_rest_client_predict_and_command_line(exported, loaded, rest_server, tmp_path):
    inputs = good_requests("autoencoder", exported["autoencoder"].model, 2, seed=4)["reconstruct"]
    outputs = rest_client.predict(rest_server, "autoencoder", rest_client.build_rest_request("reconstruct", inputs))
    assert_same_outputs(outputs, call_signature(loaded["autoencoder"], "reconstruct", inputs), "reconstruct")
    np.save(tmp_path / "images.npy", inputs["images"])
    result = run_module(
        "export.rest_client", f"--server={rest_server}", "--model_name=autoencoder", "--signature_name=reconstruct",
        f"--images={tmp_path}/images.npy", f"--seed={inputs['seed'][0]},{inputs['seed'][1]}", "--temperature=0.9",
        f"--output={tmp_path}/out.npy",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "images: uint8 [2, 4, 4, 1]" in result.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), outputs["images"])
    refused = run_module("export.rest_client", f"--server={rest_server}", "--model_name=class", "--class_ids=0,3")
    assert refused.returncode != 0
    assert "HTTP 400: " in refused.stderr and "class_ids: expected class ids < num_classes=3" in refused.stderr
