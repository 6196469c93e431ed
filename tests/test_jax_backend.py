"""The same models on JAX and on TensorFlow: equal forward passes, likelihoods and samples; fit/save/sample on JAX.

Part of the JAX run (`KERAS_BACKEND=jax pytest`, conftest.ON_JAX), beside the core suite; named on the command line
it runs from TensorFlow's `pytest` as well. Each backend runs in a process of its own: TensorFlow's builds models
with random weights, saves them and writes what it computes; JAX's (the default JAX configuration: 32-bit integers,
2 host devices for DataParallel) loads them, writes its forward passes, log-likelihoods and samples, which must
equal TensorFlow's, then trains, saves and samples on its own, mixed precision and data-parallel ``fit`` included;
the package never imports TensorFlow there.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import FAST_XLA_COMPILE, REPO_ROOT, subprocess_env

pytest.importorskip("jax")

JAX_SCRIPT = textwrap.dedent(
    """
    import gc, json, os, sys
    gc.set_threshold(20000, 20, 20)  # as conftest.py
    import numpy as np
    import keras
    import keras_pixelcnn as kp
    assert keras.backend.backend() == "jax"
    import jax

    def sample_all(model, condition):
        runs = {
            "cached_jit": model.sample(condition=condition, seed=(3, 9), temperature=0.9),
            "cached": model.sample(condition=condition, seed=(3, 9), temperature=0.9, jit_compile=False),
            "naive_jit": model.sample(condition=condition, seed=(3, 9), temperature=0.9, method="naive"),
        }
        return {name: np.asarray(images) for name, images in runs.items()}

    out, cases = sys.argv[2], json.loads(sys.argv[1])
    data = np.load(os.path.join(out, "data.npz"))
    images, condition = data["images"], data["condition"]
    report = {}
    for head, case in cases["pixelcnn"].items():
        model = kp.ConditionalPixelCNN.from_config(case["config"])
        model.load_weights(case["weights"])
        np.savez(os.path.join(out, f"{head}_jax.npz"), forward=np.asarray(model((images, condition))),
                 log_prob=np.asarray(model.log_prob(images, condition)), **sample_all(model, condition))
    autoencoder = kp.PixelCNNAutoEncoder.from_config(cases["autoencoder"]["config"])
    autoencoder.load_weights(cases["autoencoder"]["weights"])
    line, codes = autoencoder.interpolate(images[0], images[1], steps=3, seed=1)
    reconstructions = np.asarray(autoencoder.reconstruct(images, 2, seed=4))
    np.savez(os.path.join(out, "autoencoder_jax.npz"), reconstruct=reconstructions, interpolate=np.asarray(line),
             codes=np.asarray(codes))

    # Trained, saved and reloaded on JAX (the mixture's likelihood is keras.ops here, not tfp).
    labels = np.arange(len(images)) % 3
    model = kp.ConditionalPixelCNN((4, 5, 3), num_layers=2, filters=6, kernel_size=3, head="logistic_mixture",
                                   num_mixtures=2, num_classes=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit((images, labels), batch_size=4, epochs=3, verbose=0).history["bits_per_dim"]
    # Up to here (forward, likelihood, sampling, fit) nothing imported TensorFlow; Keras's own
    # .keras saving imports it when it is installed (serialization_lib checks for tf.TensorShape).
    report["tensorflow_imported"] = "tensorflow" in sys.modules
    model.save(os.path.join(out, "trained.keras"))
    loaded = keras.models.load_model(os.path.join(out, "trained.keras"))
    report["fit"] = dict(
        bits_per_dim=history,
        log_prob_equal=bool(np.array_equal(loaded.log_prob(images, labels), model.log_prob(images, labels))),
        samples_equal=bool(np.array_equal(loaded.sample(condition=labels[:2], seed=1),
                                          model.sample(condition=labels[:2], seed=1))),
        evaluate=loaded.evaluate((images, labels), verbose=0, return_dict=True)["bits_per_dim"],
    )

    # Mixed precision: bfloat16 compute, float32 weights.
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    mixed = kp.ConditionalPixelCNN((4, 5, 3), num_layers=2, filters=6, kernel_size=3, num_classes=3)
    mixed.compile(optimizer="adam")
    bits = mixed.fit((images, labels), batch_size=4, epochs=1, verbose=0).history["bits_per_dim"]
    drawn = np.asarray(mixed.sample(condition=labels[:2], seed=2))
    report["mixed"] = dict(compute_dtype=mixed.compute_dtype, variable_dtype=mixed.weights[0].dtype, bits=bits,
                           sample_dtype=str(drawn.dtype), sample_shape=list(drawn.shape))
    keras.mixed_precision.set_dtype_policy("float32")

    # Data-parallel fit on 2 host devices equals the same fit on one device.
    def fit_from(weights, distribution=None):
        keras.distribution.set_distribution(distribution)
        model = kp.ConditionalPixelCNN((4, 5, 3), num_layers=2, filters=6, kernel_size=3, num_classes=3)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit((images, labels), batch_size=4, epochs=2, shuffle=False, verbose=0)
        keras.distribution.set_distribution(None)
        return model
    start = kp.ConditionalPixelCNN((4, 5, 3), num_layers=2, filters=6, kernel_size=3, num_classes=3)
    weights = [np.random.default_rng(i).normal(0, 0.3, w.shape).astype("float32") for i, w in enumerate(start.weights)]
    single = fit_from(weights)
    parallel = fit_from(weights, keras.distribution.DataParallel(devices=jax.devices()))
    report["data_parallel"] = dict(
        devices=len(jax.devices()),
        weight_devices=len(parallel.weights[0].value.sharding.device_set),
        max_difference=max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), parallel.get_weights())),
        moved=max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), weights)),
    )
    try:
        kp.export_saved_model
    except RuntimeError as error:
        report["export_error"] = str(error)
    from trainers import train_lib
    from trainers.config import TrainConfig
    try:
        train_lib.train_and_evaluate(TrainConfig(), os.path.join(out, "run"))
    except RuntimeError as error:
        report["trainer_error"] = str(error)
    print("REPORT:", json.dumps(report))
    """
)
HEADS = ["softmax", "logistic_mixture"]

# The TensorFlow side: random-weight models saved for the JAX script, and what TensorFlow computes with them
# (the JAX script's sampling runs are all equal, so one run here).
TF_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import keras
    import keras_pixelcnn as kp
    from conftest import random_images, randomize_weights
    from test_autoencoder import randomize
    assert keras.backend.backend() == "tensorflow"

    out, heads = sys.argv[1], json.loads(sys.argv[2])
    images, condition = random_images((8, 4, 5, 3)), np.array([0, 2, 1, 1, 0, 2, 2, 1])
    np.savez(os.path.join(out, "data.npz"), images=images, condition=condition)
    cases = {"pixelcnn": {}}
    for head in heads:
        model = kp.ConditionalPixelCNN(
            (4, 5, 3), num_layers=2, filters=6, kernel_size=3, head=head, num_mixtures=2, num_classes=3,
            spatial_condition=True, skip_connections=True,
        )
        randomize_weights(model, scale=0.3)
        model.save_weights(os.path.join(out, f"{head}.weights.h5"))
        cases["pixelcnn"][head] = dict(config=model.get_config(), weights=os.path.join(out, f"{head}.weights.h5"))
        np.savez(os.path.join(out, f"{head}_tf.npz"), forward=np.asarray(model((images, condition))),
                 log_prob=np.asarray(model.log_prob(images, condition)),
                 samples=np.asarray(model.sample(condition=condition, seed=(3, 9), temperature=0.9)))
    autoencoder = kp.PixelCNNAutoEncoder((4, 5, 3), 3, num_layers=2, filters=6, kernel_size=3, encoder_filters=4)
    randomize(autoencoder)
    autoencoder.save_weights(os.path.join(out, "autoencoder.weights.h5"))
    cases["autoencoder"] = dict(config=autoencoder.get_config(), weights=os.path.join(out, "autoencoder.weights.h5"))
    line, codes = autoencoder.interpolate(images[0], images[1], steps=3, seed=1)
    reconstructions = np.asarray(autoencoder.reconstruct(images, 2, seed=4))
    np.savez(os.path.join(out, "autoencoder_tf.npz"), reconstruct=reconstructions, interpolate=np.asarray(line),
             codes=np.asarray(codes))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f)
    """
)


def run_script(script, *args, **env):
    """Runs ``script`` in a fresh Python with this checkout and tests/ importable; its stdout."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = subprocess_env(PYTHONPATH=os.pathsep.join([REPO_ROOT, tests]), **env)
    result = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """(TensorFlow's results {name: npz}, JAX's results {name: npz}, the JAX script's report, its directory).

    Each backend in a process of its own: TensorFlow's writes the models and its results, then JAX's, in
    JAX's default configuration (32-bit integers: JAX_ENABLE_X64 off, unlike the core suite's process),
    with 2 host devices for DataParallel.
    """
    out = tmp_path_factory.mktemp("jax")
    run_script(TF_SCRIPT, str(out), json.dumps(HEADS), KERAS_BACKEND="tensorflow")
    cases = (out / "cases.json").read_text()
    xla_flags = f"--xla_force_host_platform_device_count=2 {FAST_XLA_COMPILE}"
    stdout = run_script(JAX_SCRIPT, cases, str(out), KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", JAX_ENABLE_X64="0",
                        XLA_FLAGS=xla_flags)  # fmt: skip
    report = json.loads(stdout.split("REPORT:")[-1])
    ours, theirs = ({name: dict(np.load(out / f"{name}_{backend}.npz")) for name in HEADS + ["autoencoder"]}
                    for backend in ("tf", "jax"))  # fmt: skip
    return ours, theirs, report, str(out)


@pytest.mark.large  # large: a TensorFlow and a JAX subprocess (~45 s)
@pytest.mark.parametrize("head", HEADS)
def test_jax_forward_pass_and_log_likelihood_match_tensorflow(jax_run, head):
    ours, theirs, *_ = jax_run
    np.testing.assert_allclose(theirs[head]["forward"], ours[head]["forward"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(theirs[head]["log_prob"], ours[head]["log_prob"], rtol=1e-4)


@pytest.mark.large  # large: the same JAX subprocess
@pytest.mark.parametrize("head", HEADS)
def test_jax_draws_tensorflows_images_for_the_same_seed(jax_run, head):
    ours, theirs, *_ = jax_run
    for run in ("cached_jit", "cached", "naive_jit"):  # cached == naive, jit or not, on JAX as on TF
        np.testing.assert_array_equal(theirs[head][run], ours[head]["samples"], err_msg=run)
    assert ours[head]["samples"].std() > 0


@pytest.mark.large  # large: the same JAX subprocess
def test_jax_autoencoder_reconstructs_and_interpolates_as_tensorflow(jax_run):
    ours, theirs, *_ = jax_run
    np.testing.assert_allclose(theirs["autoencoder"]["codes"], ours["autoencoder"]["codes"], rtol=1e-4, atol=1e-5)
    for name in ("reconstruct", "interpolate"):
        np.testing.assert_array_equal(theirs["autoencoder"][name], ours["autoencoder"][name], err_msg=name)


@pytest.mark.large  # large: the same JAX subprocess
def test_jax_fits_saves_and_reloads_the_mixture_model(jax_run):
    fit = jax_run[2]["fit"]
    assert np.all(np.isfinite(fit["bits_per_dim"])) and fit["bits_per_dim"][-1] < fit["bits_per_dim"][0], fit
    assert fit["log_prob_equal"] and fit["samples_equal"], fit
    assert 0 < fit["evaluate"] < fit["bits_per_dim"][0], fit


@pytest.mark.large  # large: the same JAX subprocess
def test_jax_mixed_precision_fits_and_samples(jax_run):
    mixed = jax_run[2]["mixed"]
    assert (mixed["compute_dtype"], mixed["variable_dtype"]) == ("bfloat16", "float32"), mixed
    assert np.isfinite(mixed["bits"]).all(), mixed
    assert (mixed["sample_dtype"], mixed["sample_shape"]) == ("uint8", [2, 4, 5, 3]), mixed


@pytest.mark.large  # large: the same JAX subprocess
def test_jax_data_parallel_fit_equals_the_single_device_fit(jax_run):
    parallel = jax_run[2]["data_parallel"]
    assert parallel["devices"] == 2 and parallel["weight_devices"] == 2, parallel  # replicated weights
    assert parallel["moved"] > 1e-3 and parallel["max_difference"] < 1e-5, parallel


@pytest.mark.large  # large: the same JAX subprocess
def test_jax_run_never_imports_tensorflow_and_export_and_trainer_say_they_need_it(jax_run):
    report = jax_run[2]
    assert not report["tensorflow_imported"]
    message = "export_saved_model: needs the tensorflow backend (KERAS_BACKEND=tensorflow); this process runs 'jax'."
    assert report["export_error"] == message
    assert report["trainer_error"].startswith("train_and_evaluate: needs the tensorflow backend"), report
    assert not os.path.exists(os.path.join(jax_run[3], "run")), "the refused run wrote its directory"
