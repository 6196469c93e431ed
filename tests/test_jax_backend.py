"""The layers and the forward pass run under KERAS_BACKEND=jax, without TensorFlow, and agree with TF."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import random_images, randomize_weights, subprocess_env

import keras_pixelcnn as kp

pytest.importorskip("jax")

JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import keras_pixelcnn as kp
    assert keras.backend.backend() == "jax"
    for case in json.loads(sys.argv[1]):
        model = kp.ConditionalPixelCNN.from_config(case["config"])
        model.load_weights(case["weights"])
        data = np.load(case["data"])
        np.save(case["out"], np.asarray(model((data["images"], data["condition"]))))
    try:
        kp.export_saved_model
    except RuntimeError as error:
        print("EXPORT:", error)
    assert "tensorflow" not in sys.modules, "the forward pass or the export's refusal imported TensorFlow"
    """
)
HEADS = ["softmax", "logistic_mixture"]


@pytest.fixture(scope="module")
def forward_passes(tmp_path_factory):
    """({head: (TF output, JAX output)}, the JAX process's stdout): one model per head, random weights."""
    tmp_path = tmp_path_factory.mktemp("jax")
    images, condition = random_images((2, 4, 5, 3)), np.array([0, 2])
    np.savez(tmp_path / "data.npz", images=images, condition=condition)
    cases, tf_outputs = [], {}
    for head in HEADS:
        model = kp.ConditionalPixelCNN(
            (4, 5, 3), num_layers=2, filters=6, kernel_size=3, head=head, num_mixtures=2, num_classes=3,
            spatial_condition=True, skip_connections=True,
        )
        randomize_weights(model, scale=0.3)
        model.save_weights(tmp_path / f"{head}.weights.h5")
        tf_outputs[head] = np.asarray(model((images, condition)))
        cases.append(dict(config=model.get_config(), weights=str(tmp_path / f"{head}.weights.h5"),
                          data=str(tmp_path / "data.npz"), out=str(tmp_path / f"{head}.npy")))  # fmt: skip
    env = subprocess_env(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, json.dumps(cases)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = {head: (tf_outputs[head], np.load(tmp_path / f"{head}.npy")) for head in HEADS}
    return outputs, result.stdout


@pytest.mark.large  # large: one JAX subprocess (~10 s)
@pytest.mark.parametrize("head", HEADS)
def test_forward_pass_under_jax_matches_tensorflow(forward_passes, head):
    tf_output, jax_output = forward_passes[0][head]
    np.testing.assert_allclose(jax_output, tf_output, rtol=1e-4, atol=1e-4)


@pytest.mark.large  # large: the same JAX subprocess
def test_export_under_jax_says_it_needs_the_tensorflow_backend(forward_passes):
    stdout = forward_passes[1]
    message = "export_saved_model: needs the tensorflow backend (KERAS_BACKEND=tensorflow); this process runs 'jax'."
    assert f"EXPORT: {message}" in stdout
