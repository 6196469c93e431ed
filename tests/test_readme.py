"""The documented commands: every ``python -m ...`` line of README.md and docs/*.md parses (its flags exist and
their values are valid), and the README's main job, evaluate, sample and export commands run at toy sizes."""

import collections
import glob
import json
import math
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, TINY, run_main, subprocess_env

DOCUMENTS = [os.path.join(REPO_ROOT, "README.md")] + sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))
NOT_OURS = ("venv", "pytest", "pip")
# The check must refuse a typo (--helpful for --helpfull) and another binary's flag (train's --train_steps).
BAD_FLAGS = [("trainers.sample", ["--helpful"], "helpful"), ("trainers.evaluate", ["--train_steps=3"], "train_steps")]

# Parses each command's flags, module by module in one process: a module's flags (and the project modules it
# imported) are removed before the next module is imported, so each command sees only its own binary's flags (binaries
# may define flags of the same name). Prints, as its last line, RESULTS and a JSON {module: [None or error, ...]}.
CHECK = """
import importlib, json, sys
from absl import flags
import tensorflow, keras, keras_pixelcnn  # imported once, kept
FLAGS = flags.FLAGS
results = {}
for name, argvs in json.loads(sys.argv[1]).items():
    known_flags = set(FLAGS)
    module = importlib.import_module(name)
    getattr(module, "define_flags", lambda: None)()  # clients define theirs in run()
    errors = results[name] = []
    for argv in argvs:
        FLAGS.unparse_flags()
        try:
            FLAGS([name] + argv)
            if name == "trainers.train":
                module.config_from_flags().validate()
            errors.append(None)
        except (Exception, SystemExit) as error:
            errors.append(f"{type(error).__name__}: {error}")
    for flag in set(FLAGS) - known_flags:
        delattr(FLAGS, flag)
    for imported in [m for m in sys.modules if m.split(".")[0] in ("trainers", "export")]:
        del sys.modules[imported]
print("RESULTS " + json.dumps(results))
"""


def bash_commands(path):
    """[(module, argv), ...] of every ``python -m MODULE ...`` line in the bash blocks of ``path``, in order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", open(path).read(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            match = re.search(r"python3? -m ([\w.]+)(.*)", line.split(" #")[0])
            if match and match.group(1) not in NOT_OURS:
                commands.append((match.group(1), shlex.split(match.group(2))))
    return commands


def documented_commands():
    """{module: [argv, ...]} over README.md and docs/*.md."""
    commands = collections.defaultdict(list)
    for path in DOCUMENTS:
        for module, argv in bash_commands(path):
            commands[module].append(argv)
    return commands


def parse_in_subprocess(commands):
    """Runs CHECK over {module: [argv, ...]}: (CompletedProcess, {module: [None or error, ...]} or None)."""
    command = [sys.executable, "-c", CHECK, json.dumps(commands)]
    result = subprocess.run(command, env=subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    return result, json.loads(lines[-1][len("RESULTS ") :]) if lines else None


@pytest.fixture(scope="module")
def parsed():
    """{module: [(argv, None or error), ...]} for every documented command, plus BAD_FLAGS."""
    commands = documented_commands()
    for module, argv, _ in BAD_FLAGS:
        commands[module].append(argv)
    result, errors = parse_in_subprocess(commands)
    assert result.returncode == 0 and errors, result.stderr[-2000:]
    return {module: list(zip(argvs, errors[module])) for module, argvs in commands.items()}


@pytest.mark.large  # large: a subprocess that imports every binary (its module fixture)
def test_every_documented_command_parses(parsed):
    assert {"trainers.train", "trainers.evaluate", "trainers.sample", "export.export"} <= set(parsed)
    assert {"trainers.embedding_model", "export.rest_client", "export.grpc_client"} <= set(parsed)  # docs/
    for module, outcomes in parsed.items():
        assert outcomes, module
        for argv, error in outcomes:
            if (module, argv) not in [bad[:2] for bad in BAD_FLAGS]:
                assert error is None, f"python -m {module} {shlex.join(argv)}: {error}"


@pytest.mark.large  # large: the same subprocess (its module fixture)
@pytest.mark.parametrize("module, argv, flag", BAD_FLAGS)
def test_the_readme_check_catches_a_bad_flag(parsed, module, argv, flag):
    error = dict((tuple(args), error) for args, error in parsed[module])[tuple(argv)]
    assert error is not None and flag in error


# -- the README's short commands, for real ---------------------------------------------------------------

PATH_FLAGS = ("model_dir", "out", "out_npy", "export_base")


def relocate(argv, root):
    """``argv`` with the PATH_FLAGS values moved under ``root``: /tmp/run -> root/tmp/run, grid.png -> root/grid.png."""
    moved = []
    for arg in argv:
        name, _, value = arg.lstrip("-").partition("=")
        moved.append(f"--{name}={os.path.join(root, value.lstrip('/'))}" if name in PATH_FLAGS and value else arg)
    return moved


def flag_values(argv):
    """{flag name: value} of the ``--name=value`` arguments of ``argv``."""
    return dict(arg.lstrip("-").partition("=")[::2] for arg in argv if "=" in arg)


def documented_signatures():
    """The signature names of the table under "## Signatures" in docs/serving.md."""
    text = open(os.path.join(REPO_ROOT, "docs", "serving.md")).read()
    section = text.split("\n## Signatures\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)`", section, re.M))


# large: trains, evaluates, samples and exports a toy model (~15 s)
@pytest.mark.large
def test_the_readme_commands_run_at_toy_sizes(tmp_path, capsys):
    import numpy as np
    import tensorflow as tf

    from export import export
    from trainers import evaluate, sample, train

    readme = bash_commands(DOCUMENTS[0])
    first = {}
    for module, argv in readme:
        first.setdefault(module, argv)
    main_job = next(argv for module, argv in readme if module == "trainers.train" and len(argv) == 1)
    model_dir = flag_values(main_job)["model_dir"]
    for module in ("trainers.evaluate", "trainers.sample", "export.export"):
        assert flag_values(first[module])["model_dir"] == model_dir, f"README's first {module} is not on the main job"
    run_dir = str(tmp_path / model_dir.lstrip("/"))

    # The main job, with a toy trunk and a few steps.
    run_main(train, relocate(main_job, tmp_path) + TINY + ["--train_steps=20", "--eval_every=20"])
    assert {"checkpoints", "logs", "samples", "model.keras", "metrics.json"} <= set(os.listdir(run_dir))
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["step"] == 20 and metrics["initial_test_bits_per_dim"] == pytest.approx(8.0, abs=1e-5)
    assert math.isfinite(metrics["test_bits_per_dim"]) and metrics["test_bits_per_dim"] < 8.0, metrics
    grid = tf.io.decode_png(open(os.path.join(run_dir, "samples", "step_00000020.png"), "rb").read())
    assert grid.shape == (10 * 33 + 1, 8 * 33 + 1, 1)  # one row per class, 8 samples, 8x8 pixels enlarged 4x

    # trainers.evaluate prints the test bits/dim: the run's own final evaluation.
    capsys.readouterr()
    run_main(evaluate, relocate(first["trainers.evaluate"], tmp_path))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bits_per_dim"] == pytest.approx(metrics["test_bits_per_dim"], rel=1e-5)

    # trainers.sample writes the grid: a row per class id, --num samples per row.
    argv = relocate(first["trainers.sample"], tmp_path)
    run_main(sample, argv)
    values = flag_values(argv)
    grid = tf.io.decode_png(open(values["out"], "rb").read())
    assert grid.shape == (len(values["class_ids"].split(",")) * 33 + 1, int(values["num"]) * 33 + 1, 1)

    # export.export writes version 1 in TF-Serving's layout, with the signatures docs/serving.md names.
    argv = relocate(first["export.export"], tmp_path)
    run_main(export, argv)
    version = os.path.join(flag_values(argv)["export_base"], "1")
    for name in ("saved_model.pb", "variables", "assets.extra/tf_serving_warmup_requests",
                 "assets.extra/pixelcnn_export.json"):  # fmt: skip
        assert os.path.exists(os.path.join(version, name)), name
    loaded = tf.saved_model.load(version)
    assert set(loaded.signatures) == documented_signatures() == {"serving_default", "log_prob"}
    class_ids = tf.constant([3, 7], tf.int32)
    images = loaded.signatures["serving_default"](
        class_ids=class_ids, seed=tf.constant([1, 2], tf.int64), temperature=tf.constant(1.0)
    )["images"]
    assert images.dtype == tf.uint8 and images.shape == (2, 8, 8, 1)
    scores = loaded.signatures["log_prob"](images=images, class_ids=class_ids)
    assert np.all(np.isfinite(scores["bits_per_dim"].numpy())) and scores["log_prob"].shape == (2,)
