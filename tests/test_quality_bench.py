"""bench/quality.py end to end on the digits for a few seconds with tiny models (a smoke test, never a timing)."""

import importlib.util
import json
import math
import os
import re

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

LINE = re.compile(r"^quality: project_bpd=(\S+) baseline_bpd=(\S+) ratio=(\S+)$")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(REPO_ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality():
    return _load("quality")


def test_overrides_are_typed_like_the_config_fields(quality):
    overrides = quality.parse_overrides(
        ["learning_rate=0.005", "lr_schedule=cosine", "num_layers=8", "jit_compile=true"]
    )
    assert overrides == dict(learning_rate=0.005, lr_schedule="cosine", num_layers=8, jit_compile=True)
    # "none" is None only for the optional fields; a string field keeps its word.
    assert quality.parse_overrides(["dilation_rates=none", "num_classes=none", "kernel_size=none"]) == dict(
        dilation_rates="none", num_classes=None, kernel_size=None
    )
    with pytest.raises(ValueError, match="override: expected FIELD=VALUE"):
        quality.parse_overrides(["no_such_field=1"])
    with pytest.raises(ValueError, match="override: num_layers: expected int, got 'eight'"):
        quality.parse_overrides(["num_layers=eight"])


def test_quality_line_without_a_baseline_is_nan(quality):
    assert quality.quality_line(1.5, float("nan")) == "quality: project_bpd=1.5000 baseline_bpd=nan ratio=nan"


@pytest.mark.large  # large: trains the project model and tfp's for 3 s each, plus evaluations (~25 s)
def test_both_sides_run_within_the_budget_and_report_the_test_bits_per_dim(quality, tmp_path):
    from trainers import evaluate

    lines = []
    results = quality.run(
        "digits", minutes=0.05, baseline="tfp", out_dir=str(tmp_path),
        overrides=dict(num_layers=2, filters=8, batch_size=16, eval_examples=32, train_steps=10**6), eval_minutes=0.025,
        eval_every=15, samples_per_class=1, baseline_filters=4, log=lines.append,
    )  # fmt: skip
    match = LINE.match(lines[-1])
    assert match and lines[-1] == results["line"]
    project_bpd, baseline_bpd, ratio = (float(x) for x in match.groups())
    assert all(math.isfinite(x) and x > 0 for x in (project_bpd, baseline_bpd, ratio))
    assert ratio == pytest.approx(project_bpd / baseline_bpd, rel=1e-3)
    for side in ("project", "baseline"):
        curve = results[side]
        assert len(curve) >= 2 and curve[0]["step"] == 0 and curve[-1]["step"] > 0
        assert np.all(np.isfinite([p["bits_per_dim"] for p in curve]))
        assert os.path.getsize(tmp_path / f"{side}_samples.png") > 0
    # The budget (not train_steps=10**6) stopped training: the step that crossed 3 s of training time was the last
    # (exactly, however loaded the machine: a traced first step can take 2 s, or 17 s when cores are oversubscribed).
    project = results["project"][-1]
    for side, seconds in (("project", project["seconds"]), ("baseline", results["baseline"][-1]["seconds"])):
        assert seconds - results["last_step_seconds"][side] < 3.0 <= seconds, (side, seconds, results)
    # The reported figure is the trained model's test bits/dim (the trainer's evaluator, re-run from its files).
    metrics = json.load(open(tmp_path / "project_run" / "metrics.json"))
    assert metrics["step"] == project["step"]
    assert project_bpd == pytest.approx(metrics["test_bits_per_dim"], abs=1e-4)
    reevaluated = evaluate.evaluate(str(tmp_path / "project_run"), max_examples=32)["bits_per_dim"]
    assert project_bpd == pytest.approx(reevaluated, rel=1e-4)
    assert results["project_params"] > 0 and results["baseline_params"] > 0
    assert json.load(open(tmp_path / "quality.json"))["line"] == results["line"]


def test_digits28_npz_is_the_digits_upscaled(tmp_path):
    make = _load("make_digits28")
    path = str(tmp_path / "digits28.npz")
    shapes = make.make_digits28(path)
    assert shapes == {"images": (1437, 28, 28, 1), "labels": (1437,), "test_images": (360, 28, 28, 1),
                      "test_labels": (360,)}  # fmt: skip
    with np.load(path) as archive:
        images = archive["images"]
        assert images.dtype == np.uint8 and images.max() > 200 and images.min() == 0


@pytest.mark.large  # large: 3 s of timed training by design
def test_the_timing_run_measures_the_median_step(quality, tmp_path):
    from trainers.config import TrainConfig

    config = TrainConfig(num_layers=1, filters=8, batch_size=8, samples_per_class=0)
    step_seconds, params = quality.measure_step_seconds(config, str(tmp_path / "timing"), seconds=3.0)
    assert 0 < step_seconds < 0.5 and params > 0  # the median leaves the first steps (tracing, ~2 s) out
    assert not (tmp_path / "timing").exists()  # the timing run leaves nothing behind
