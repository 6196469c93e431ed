"""Synchronous data-parallel training: MirroredStrategy on 2 logical CPUs, and 2 local workers.

Both run in subprocesses: logical devices must be configured before TensorFlow
initialises, and multi-worker needs one process per worker.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO_ROOT as ROOT
from conftest import subprocess_env

CLIP_NORMS = (0.0, 0.05)
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import keras_pixelcnn as kp
    from trainers.loop import make_train_step

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 5, 5, 3)).astype(np.uint8)
    labels = (np.arange(8) % 3).astype(np.int32)

    def one_sgd_step(strategy, clip_norm):
        with strategy.scope():
            model = kp.ConditionalPixelCNN((5, 5, 3), num_layers=2, filters=6, kernel_size=3, num_classes=3)
            init = np.random.default_rng(1)
            for w in model.weights:
                w.assign(init.normal(0, 0.3, w.shape).astype("float32"))
            optimizer = keras.optimizers.SGD(0.5)
            optimizer.build(model.trainable_variables)
        step = make_train_step(model, optimizer, strategy, global_batch_size=8, clip_norm=clip_norm)
        data = tf.data.Dataset.from_tensors((images, labels))
        loss = step(next(iter(strategy.experimental_distribute_dataset(data))))
        return float(loss), [w.numpy() for w in model.weights]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    cases, model_dir, report = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    for clip_norm, out in cases:
        loss_1, weights_1 = one_sgd_step(tf.distribute.get_strategy(), clip_norm)
        loss_2, weights_2 = one_sgd_step(mirrored, clip_norm)
        np.savez(out, loss=[loss_1, loss_2], **{f"one_{i}": w for i, w in enumerate(weights_1)},
                 **{f"two_{i}": w for i, w in enumerate(weights_2)})

    # The trainer binary's main with a global batch its 2 replicas cannot split.
    from absl import app, flags
    from trainers import train
    flags.FLAGS(["train", f"--model_dir={model_dir}", "--strategy=mirrored", "--devices=/cpu:0,/cpu:1",
                 "--batch_size=5"])
    try:
        train.main(["train"])
        error = None
    except app.UsageError as usage_error:
        error = str(usage_error)
    json.dump({"usage_error": error}, open(report, "w"))
    """
)


@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory):
    """({clip_norm: the npz of one SGD step on one device and on 2 mirrored ones}, {"usage_error": the trainer's
    refusal of batch_size=5}, the refused run's model_dir), from one subprocess."""
    out = tmp_path_factory.mktemp("mirrored")
    outs = [out / f"clip_{clip_norm}.npz" for clip_norm in CLIP_NORMS]
    cases = json.dumps([[clip_norm, str(path)] for clip_norm, path in zip(CLIP_NORMS, outs)])
    command = [sys.executable, "-c", MIRRORED_SCRIPT, cases, str(out / "run"), str(out / "report.json")]
    subprocess.run(command, env=subprocess_env(), check=True, timeout=300)
    steps = {clip_norm: np.load(path) for clip_norm, path in zip(CLIP_NORMS, outs)}
    return steps, json.loads((out / "report.json").read_text()), out / "run"


@pytest.mark.large  # large: a subprocess on 2 logical CPUs (~10 s)
@pytest.mark.parametrize("clip_norm", CLIP_NORMS)
def test_mirrored_sgd_step_equals_the_single_device_step(mirrored_results, clip_norm):
    result = mirrored_results[0][clip_norm]
    np.testing.assert_allclose(result["loss"][1], result["loss"][0], rtol=1e-5)
    count = sum(name.startswith("one_") for name in result.files)
    for i in range(count):
        np.testing.assert_allclose(result[f"two_{i}"], result[f"one_{i}"], rtol=1e-4, atol=1e-6)


@pytest.mark.large  # large: the same subprocess
def test_the_trainer_refuses_a_batch_its_replicas_cannot_split(mirrored_results):
    """--strategy=mirrored over 2 devices with --batch_size=5: a usage error naming the flag (it exits 1 with
    that line: test_binaries.py), before the run writes anything."""
    _, report, model_dir = mirrored_results
    assert report["usage_error"] == "--batch_size: the global batch must split evenly over 2 replicas, got 5."
    assert not model_dir.exists()


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.large  # large: two trainer processes in a multi-worker cluster on 127.0.0.1 (~30 s)
def test_two_local_workers_train_in_sync_and_the_chief_checkpoints(tmp_path):
    model_dir = tmp_path / "run"
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    argv = [
        sys.executable,
        "-m",
        "trainers.train",
        "--strategy=multi_worker",
        f"--model_dir={model_dir}",
        "--train_steps=4",
        "--eval_every=2",
        "--batch_size=8",
        "--num_layers=1",
        "--filters=6",
        "--kernel_size=3",
        "--samples_per_class=1",
        "--eval_examples=16",
        "--collective_timeout=120",
    ]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = subprocess_env(TF_CONFIG=json.dumps(tf_config))
        processes.append(subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=400)[1])
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    fingerprints = [
        line.rsplit(" ", 1)[1] for output in outputs for line in output.splitlines() if "weights fingerprint" in line
    ]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    checkpoints = sorted(os.listdir(model_dir / "checkpoints"))
    assert "ckpt-4.index" in checkpoints and "ckpt-2.index" in checkpoints
    assert not os.listdir(model_dir / ".worker_tmp") if (model_dir / ".worker_tmp").exists() else True
    assert (model_dir / "model.keras").exists() and json.loads((model_dir / "metrics.json").read_text())["step"] == 4
