"""mixed_precision="auto": what it resolves to, what run_config.json records, and what the saved model computes in."""

import json
import os

import keras
import pytest

from trainers import precision, train_lib
from trainers.config import TrainConfig
from trainers.model_dir import load_model

TINY = TrainConfig(num_layers=2, filters=8, batch_size=16, samples_per_class=0, eval_examples=64, log_every=5)


@pytest.mark.parametrize(
    "gpus, flags, expected",
    [
        ([(8, 0)], set(), "bfloat16"),
        ([(9, 0), (8, 6)], set(), "bfloat16"),
        ([(7, 5)], {"avx512_bf16"}, "float16"),  # a GPU decides, not the host CPU
        ([(8, 0), (7, 0)], set(), "float16"),  # the oldest GPU decides
        ([(6, 1)], set(), "none"),
        ([], {"avx512f", "avx512_bf16"}, "bfloat16"),
        ([], {"amx_bf16"}, "bfloat16"),
        ([], {"avx2"}, "none"),
    ],
)
def test_auto_resolves_by_hardware(monkeypatch, gpus, flags, expected):
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: gpus)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.resolve_mixed_precision("auto") == expected
    assert precision.resolve_mixed_precision("none") == "none"  # explicit choices pass through
    assert precision.resolve_mixed_precision("float16") == "float16"


def test_a_bad_precision_is_named():
    with pytest.raises(ValueError, match="mixed_precision: expected one of"):
        precision.resolve_mixed_precision("fp8")
    with pytest.raises(ValueError, match="mixed_precision: expected one of"):
        TrainConfig(mixed_precision="fp8").validate()


@pytest.mark.large  # large: trainer runs and a resume
def test_run_config_records_the_resolution_and_a_resume_keeps_it(tmp_path, monkeypatch):
    model_dir = str(tmp_path / "run")
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    train_lib.train_and_evaluate(TINY.replace(train_steps=2, eval_every=2), model_dir)
    recorded = json.load(open(os.path.join(model_dir, "run_config.json")))
    assert (recorded["mixed_precision"], recorded["resolved_mixed_precision"]) == ("auto", "bfloat16")
    model, _ = load_model(model_dir)
    assert model.dtype_policy.name == "float32"  # the weights are float32: the saved model serves in float32
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())  # the same run on other hardware
    train_lib.train_and_evaluate(TINY.replace(train_steps=4, eval_every=2), model_dir)
    assert json.load(open(os.path.join(model_dir, "run_config.json")))["resolved_mixed_precision"] == "bfloat16"


@pytest.mark.large  # large: trains a model in two precisions
def test_bfloat16_trains_as_well_as_float32(tmp_path):
    schedule = TINY.replace(train_steps=60, eval_every=60, learning_rate=0.005)
    float32 = train_lib.train_and_evaluate(schedule.replace(mixed_precision="none"), str(tmp_path / "f32"))
    bfloat16 = train_lib.train_and_evaluate(schedule.replace(mixed_precision="bfloat16"), str(tmp_path / "bf16"))
    assert bfloat16["test_bits_per_dim"] == pytest.approx(float32["test_bits_per_dim"], rel=0.02)
    assert bfloat16["test_bits_per_dim"] < bfloat16["initial_test_bits_per_dim"] - 2.0  # it learned
