"""The binaries as a newcomer meets them: a quiet start, one-line usage errors, default paths, finished reruns.

The start-up and a usage error are checked in subprocesses, as a user runs the binaries; a missing extra and what
the binaries do with a finished run are checked in this process (the same flags and main).
"""

import logging
import os
import subprocess
import sys

import pytest
from absl import flags
from conftest import REPO_ROOT, run_main, subprocess_env

from trainers import sample, train

TINY = ["--num_layers=1", "--filters=4", "--batch_size=8", "--samples_per_class=1", "--eval_examples=16"]


def run_binary(module, *argv):
    """Runs ``python -m module argv`` as a user would: without the test suite's quieting variables."""
    env = subprocess_env()
    del env["TF_CPP_MIN_LOG_LEVEL"], env["CUDA_VISIBLE_DEVICES"]
    command = [sys.executable, "-m", module, *argv]
    return subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("binaries") / "run")
    result = run_binary("trainers.train", f"--model_dir={model_dir}", "--train_steps=2", "--eval_every=2", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


@pytest.mark.large  # large: uses a trainer run made in a subprocess (once per module)
def test_a_cpu_run_starts_quietly(finished_run):
    _, result = finished_run
    assert "cuInit" not in result.stderr
    assert "InitializeLog" not in result.stderr and "oneDNN custom operations" not in result.stderr
    assert "Compiled cluster using XLA" not in result.stderr  # the sample grids' XLA compile is no news
    assert "step 2: test bits/dim" in result.stderr  # what the user asked for is still there


@pytest.mark.large  # large: uses a trainer run made in a subprocess (once per module)
def test_rerunning_a_finished_run_says_so_without_evaluating(finished_run, caplog):
    model_dir, _ = finished_run
    caplog.set_level(logging.INFO, logger="absl")
    run_main(train, [f"--model_dir={model_dir}", "--train_steps=2", "--eval_every=2", *TINY, "--verbosity=0"])
    assert "is already at train_steps=2: nothing to do" in caplog.text
    assert "test bits/dim" not in caplog.text


@pytest.mark.large  # large: uses a trainer run made in a subprocess (once per module)
def test_sample_writes_into_the_model_dir_by_default(finished_run, capsys):
    model_dir, _ = finished_run
    run_main(sample, [f"--model_dir={model_dir}", "--num=2"])
    path = os.path.join(model_dir, "samples", "classes.png")
    assert os.path.exists(path) and path in capsys.readouterr().out


@pytest.mark.large  # large: a subprocess of the trainer binary
def test_a_usage_error_is_one_line(tmp_path):
    result = run_binary("trainers.train", f"--model_dir={tmp_path}/run", "--kernel_size=4")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["train.py: --kernel_size: expected an odd number >= 3, got 4."]


def test_a_missing_training_extra_names_the_extra(tmp_path, monkeypatch, capsys):
    # As if scikit-learn were not installed; the binary's entry point (`python -m trainers.train`) runs in this process.
    for name in ["sklearn"] + [name for name in sys.modules if name.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(sys, "argv", ["train.py", f"--model_dir={tmp_path}/run"])
    flags.FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as stopped:
        train.run()
    assert stopped.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "train.py: scikit-learn is needed for training data: pip install 'keras-pixelcnn[train]' "
        "(it installs scikit-learn)."
    )
