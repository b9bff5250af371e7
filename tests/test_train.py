"""The trainer on real text: every variant learns, resume is exact, divergence is a status."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys

import pytest

from tests.conftest import TINY_VOCAB
from tests.test_model import VARIANTS
from tiedattn.data import DataConfig, DataError
from tiedattn.model import ConfigError, ModelConfig
from tiedattn.train import TrainConfig, Trial, eval_steps, lr_at, train

TINY = ModelConfig(d_model=32, n_layer=2, n_head=4, vocab_size=TINY_VOCAB, seq_len=32)


def _trial(data: DataConfig, **train_kw) -> Trial:
    kw = {"tokens": 24_576, "batch_size": 8, "lr": 1e-2, "threads": 1, "eval_tokens": 4096, "n_evals": 4}
    return Trial(TINY, TrainConfig(**{**kw, **train_kw}), data)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_learns(tiny_data, variant):
    trial = _trial(tiny_data)
    result = train(dataclasses.replace(trial, model=dataclasses.replace(TINY, variant=variant)))
    assert result.status == "completed"
    first, last = result.evals[0]["val_loss"], result.evals[-1]["val_loss"]
    assert first > math.log(TINY_VOCAB) - 0.3  # starts near a uniform guess
    assert last < first - 0.5, (first, last)
    s = result.summary
    assert s["tokens"] == 96 * 8 * 32 and s["steps"] == 96
    assert s["flops"] == s["flops_per_token"] * s["tokens"]
    assert 0 < s["epochs"] < 1 and not s["repeats_data"]
    assert s["final_val_loss"] == last


def test_resume_is_exact(tiny_data, tmp_path):
    """Stopped at step 37, resumed from its checkpoint: same final loss as never stopped (1e-6)."""
    whole = train(_trial(tiny_data, tokens=16_384))
    trial = dataclasses.replace(_trial(tiny_data, tokens=16_384), workdir=str(tmp_path / "run"))
    stopped = train(trial, stop=lambda step: step == 37)
    assert stopped.status == "interrupted" and stopped.summary["steps"] == 37
    assert math.isnan(stopped.summary["final_val_loss"])
    resumed = train(trial)
    assert resumed.status == "completed" and resumed.summary["resumed_from_step"] == 37
    assert abs(resumed.summary["final_val_loss"] - whole.summary["final_val_loss"]) < 1e-6
    assert abs(resumed.summary["final_train_loss"] - whole.summary["final_train_loss"]) < 1e-6
    assert [e["step"] for e in resumed.evals] == [e["step"] for e in whole.evals]
    assert not list((tmp_path / "run").glob("*.tmp-*"))  # no half-written checkpoint left behind


def test_divergence_is_a_status_not_an_exception(tiny_data):
    result = train(_trial(tiny_data, lr=1e6, tokens=8192, grad_clip=1e9, weight_decay=0.0))
    assert result.status == "diverged"
    assert "loss" in result.summary["error"]
    assert math.isnan(result.summary["final_val_loss"])


def test_repeating_data_is_recorded(tiny_data):
    small = dataclasses.replace(tiny_data, max_bytes=60_000)
    result = train(_trial(small, tokens=40_000, n_evals=2))
    assert result.summary["epochs"] > 1 and result.summary["repeats_data"]


def test_lr_schedules():
    cfg = TrainConfig(tokens=100 * 320, batch_size=10, lr=1.0, warmup_frac=0.1)
    lrs = [lr_at(s, 100, cfg, 32) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1, abs=0.01) and all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    wsd = dataclasses.replace(cfg, schedule="wsd", cooldown_frac=0.2, cooldown_shape="1-sqrt")
    lrs = [lr_at(s, 100, wsd, 32) for s in range(100)]
    assert set(lrs[10:80]) == {1.0} and lrs[80] < 1.0 and lrs[-1] == 0.0
    assert lrs[89] == pytest.approx(1 - math.sqrt(10 / 20))
    linear = dataclasses.replace(wsd, cooldown_shape="linear", min_lr_frac=0.0)
    assert lr_at(89, 100, linear, 32) == pytest.approx(0.5)
    fixed = dataclasses.replace(wsd, warmup_tokens=3 * 320)  # absolute warmup: 3 steps whatever the budget
    assert lr_at(2, 1000, fixed, 32) == 1.0 and lr_at(1, 1000, fixed, 32) < 1.0
    assert eval_steps(1000, 4) == [10, 46, 215, 1000]


def test_bad_inputs_fail_before_training(tiny_data, tmp_path):
    learned = dataclasses.replace(TINY, pos="learned")
    with pytest.raises(ConfigError, match="seq_len: 64 exceeds the learned position table of 32"):
        train(Trial(learned, TrainConfig(tokens=1000, seq_len=64), tiny_data))
    with pytest.raises(ConfigError, match="vocab_size: 100 is smaller than the tokenizer's 512"):
        train(Trial(dataclasses.replace(TINY, vocab_size=100), TrainConfig(tokens=1000), tiny_data))
    with pytest.raises(ConfigError, match="tokens: must be > 0"):
        train(Trial(TINY, TrainConfig(tokens=-5), tiny_data))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="corpus: no text documents"):
        train(Trial(TINY, TrainConfig(tokens=1000), DataConfig(corpus=str(tmp_path / "empty"))))


def test_cli_train_and_model_info(tiny_data):
    run = [sys.executable, "-m", "tiedsweep"]
    out = subprocess.run(
        [*run, "model-info", "--variant", "Q-K=V", "--d-model", "64", "--n-layer", "2", "--n-head", "4", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["variant"] == "tied_kv" and info["kv_bytes_per_token"] == 2 * 64 * 2
    bad = subprocess.run([*run, "model-info", "--variant", "GQA-3", "--n-head", "4"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("do not divide n_head 4")
    out = subprocess.run(
        [
            *run,
            "train",
            "--d-model",
            "32",
            "--n-layer",
            "1",
            "--n-head",
            "4",
            "--seq-len",
            "32",
            "--vocab-size",
            str(TINY_VOCAB),
            "--max-bytes",
            str(tiny_data.max_bytes),
            "--tokens",
            "4096",
            "--batch-size",
            "8",
            "--n-evals",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(out.stdout)
    assert summary["status"] == "completed" and len(summary["evals"]) == 2
