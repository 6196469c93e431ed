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
    config, weights_path, data_path, out_path = json.loads(sys.argv[1]), *sys.argv[2:]
    model = kp.ConditionalPixelCNN.from_config(config)
    model.load_weights(weights_path)
    data = np.load(data_path)
    out = model((data["images"], data["condition"]))
    assert "tensorflow" not in sys.modules, "the forward pass imported TensorFlow"
    np.save(out_path, np.asarray(out))
    """
)


@pytest.mark.parametrize("head", ["softmax", "logistic_mixture"])
def test_forward_pass_under_jax_matches_tensorflow(tmp_path, head):
    model = kp.ConditionalPixelCNN(
        (4, 5, 3), num_layers=2, filters=6, kernel_size=3, head=head, num_mixtures=2, num_classes=3,
        spatial_condition=True, skip_connections=True,
    )
    randomize_weights(model, scale=0.3)
    images, condition = random_images((2, 4, 5, 3)), np.array([0, 2])
    model.save_weights(tmp_path / "w.weights.h5")
    np.savez(tmp_path / "data.npz", images=images, condition=condition)
    env = subprocess_env(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, json.dumps(model.get_config()), str(tmp_path / "w.weights.h5"),
         str(tmp_path / "data.npz"), str(tmp_path / "out.npy")],
        env=env, check=True, timeout=300,
    )
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model((images, condition)), rtol=1e-4, atol=1e-4)
