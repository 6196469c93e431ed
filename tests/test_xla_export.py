"""XLA-compiled export (``export_saved_model(..., jit_compile=True)``, ``export.export --jit_compile``).

The XLA export's signatures load in a fresh process and give the images of
``model.sample(..., seed=..., jit_compile=True)``; the default export holds no
XLA-compiled function and no XLA-only op.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_images, run_main
from tensorflow.core.protobuf import saved_model_pb2
from test_autoencoder import randomize

import keras_pixelcnn as kp
from keras_pixelcnn.export_lib import export_saved_model
from trainers.model_dir import save_model, write_model_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED, TEMPERATURE = np.array([4, 2], np.int64), np.float32(0.9)


def xla_attributes_and_ops(saved_model_dir):
    """(functions with _XlaMustCompile=True, nodes with it, ops whose name starts with Xla/_Xla) of a SavedModel."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    graph = proto.meta_graphs[0].graph_def
    functions = [f.signature.name for f in graph.library.function if f.attr["_XlaMustCompile"].b]
    nodes = list(graph.node) + [node for f in graph.library.function for node in f.node_def]
    must_compile = [node.name for node in nodes if node.attr["_XlaMustCompile"].b]
    xla_ops = sorted({node.op for node in nodes if node.op.lstrip("_").startswith("Xla")})
    return functions, must_compile, xla_ops


def build_models():
    """{name: (model, sample inputs of serving_default, the same as model.sample kwargs)}."""
    keras.utils.set_random_seed(0)
    classes = kp.ConditionalPixelCNN((4, 3, 3), num_layers=2, filters=6, kernel_size=3, num_classes=3)
    mixture = kp.ConditionalPixelCNN(
        (3, 4, 1), num_layers=2, filters=4, kernel_size=3, head="logistic_mixture", num_mixtures=2
    )
    autoencoder = kp.PixelCNNAutoEncoder((4, 4, 1), 3, num_layers=1, filters=4, kernel_size=3, encoder_filters=4)
    for index, model in enumerate((classes, mixture, autoencoder)):
        randomize(model, seed=index)
    class_ids = np.array([2, 0, 1], np.int32)
    return {
        "classes": (classes, {"class_ids": class_ids}, {"condition": class_ids}),
        "mixture": (mixture, {"num_samples": np.int32(2)}, {"num_samples": 2}),
        "autoencoder": (autoencoder, {"images": random_images((2, 4, 4, 1), seed=5)}, None),
    }


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("xla_models")
    cases = {}
    for name, (model, inputs, sample_kwargs) in build_models().items():
        if sample_kwargs is None:  # the auto-encoder: its reconstruct signature
            expected = np.asarray(
                model.reconstruct(inputs["images"], 1, temperature=TEMPERATURE, seed=SEED, jit_compile=True)
            )[:, 0]
            signature = "reconstruct"
        else:
            expected = np.asarray(model.sample(**sample_kwargs, temperature=TEMPERATURE, seed=SEED, jit_compile=True))
            signature = "serving_default"
        cases[name] = dict(
            xla=export_saved_model(model, base / f"{name}_xla", jit_compile=True),
            default=export_saved_model(model, base / name),
            inputs={**inputs, "seed": SEED, "temperature": TEMPERATURE},
            signature=signature,
            expected=expected,
        )
    return cases


FRESH_PROCESS_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf

spec = json.load(open(sys.argv[1]))
results = {}
for name, case in spec.items():
    signature = tf.saved_model.load(case["path"]).signatures[case["signature"]]
    inputs = {k: tf.constant(v) for k, v in np.load(case["inputs"]).items()}
    results[name] = signature(**inputs)["images"].numpy()
    results[name + "__again"] = signature(**inputs)["images"].numpy()
assert not [m for m in sys.modules if m.startswith("keras_pixelcnn")]
np.savez(sys.argv[2], **results)
"""


@pytest.mark.large  # large: uses the module's XLA and graph SavedModel exports (built once per module)
def test_xla_export_loads_in_a_fresh_process_and_matches_sample(exports, tmp_path):
    spec = {}
    for name, case in exports.items():
        np.savez(tmp_path / f"{name}.npz", **case["inputs"])
        spec[name] = {"path": case["xla"], "signature": case["signature"], "inputs": str(tmp_path / f"{name}.npz")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "load.py").write_text(FRESH_PROCESS_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(tmp_path / "load.py"), str(tmp_path / "spec.json"), str(tmp_path / "out.npz")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(tmp_path / "out.npz")
    for name, case in exports.items():
        assert outputs[name].dtype == np.uint8
        np.testing.assert_array_equal(outputs[name], case["expected"], err_msg=name)
        np.testing.assert_array_equal(outputs[name + "__again"], case["expected"], err_msg=name)
        assert case["expected"].std() > 0, name


@pytest.mark.large  # large: uses the module's XLA and graph SavedModel exports (built once per module)
def test_xla_export_compiles_the_sampler_and_the_default_export_does_not(exports):
    for name, case in exports.items():
        functions, nodes, xla_ops = xla_attributes_and_ops(case["default"])
        assert (functions, nodes, xla_ops) == ([], [], []), name
        functions, nodes, _ = xla_attributes_and_ops(case["xla"])
        assert functions or nodes, name


@pytest.mark.large  # large: uses the module's XLA and graph SavedModel exports (built once per module)
def test_xla_export_still_checks_requests(exports):
    loaded = tf.saved_model.load(exports["classes"]["xla"])
    inputs = {k: tf.constant(v) for k, v in exports["classes"]["inputs"].items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_ids: expected class ids < num_classes=3"):
        loaded.signatures["serving_default"](**dict(inputs, class_ids=tf.constant([0, 3], tf.int32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature: expected a finite number > 0"):
        loaded.signatures["serving_default"](**dict(inputs, temperature=tf.constant(0.0)))


@pytest.mark.parametrize("bad", [None, 1, "yes"])
def test_export_jit_compile_must_be_a_bool(tmp_path, bad):
    model = kp.ConditionalPixelCNN((2, 2, 1), num_layers=1, filters=4, kernel_size=3)
    with pytest.raises(ValueError, match="jit_compile: expected True or False"):
        export_saved_model(model, tmp_path / "m", jit_compile=bad)
    assert not os.path.exists(tmp_path / "m" / "1")


@pytest.mark.large  # large: two SavedModel exports (XLA and graph) through the export binary's main
def test_cli_jit_compile_flag_exports_an_xla_sampler(tmp_path):
    from export import export as export_cli

    model = kp.ConditionalPixelCNN((3, 3, 1), num_layers=1, filters=4, kernel_size=3, num_classes=2)
    run = tmp_path / "run"
    run.mkdir()
    write_model_config(model, str(run))
    save_model(model, str(run))
    for flag, base in (("--jit_compile", tmp_path / "xla"), ("--nojit_compile", tmp_path / "plain")):
        run_main(export_cli, [f"--model_dir={run}", f"--export_base={base}", flag])
    functions, nodes, _ = xla_attributes_and_ops(str(tmp_path / "xla" / "1"))
    assert functions or nodes
    assert xla_attributes_and_ops(str(tmp_path / "plain" / "1")) == ([], [], [])
