"""Synthetic tasks and probes: formats and loss masks, data as a pure function of (seed, step), a
model that cannot attend fails MQAR while QKV learns it, resume stays exact, LM probes and the
V = aQ + bK coefficients land in the eval rows, and the accuracy report renders."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from analysis.report import write_report
from orchestrator.spec import SpecError, load_spec
from records.schema import TRIALS_SCHEMA
from tests.conftest import TINY_VOCAB
from tiedattn.model import ConfigError, ModelConfig
from tiedattn.probes import _recall_mask, induction_set, measure
from tiedattn.tasks import IGNORE, LIST_TASKS, MODEL_DEFAULTS, TaskBatches, TaskConfig, examples, val_set
from tiedattn.train import TrainConfig, Trial, train
from tiedsweep.cli import main

MQAR = TaskConfig(name="mqar", vocab_size=32, num_kv_pairs=4, n_val=256)
# The training tests' instance: 2 pairs, keys 1..7, values 8..15, seq_len 16. Answering with one of
# the 2 values in context scores 0.5 without looking the key up; QKV under the tasks' model defaults
# (config.MODEL_DEFAULTS) binds each key to its value within STEPS (under the text models' GPT-2 init
# it stayed at 0.5 for 1,500 steps).
SMALL = TaskConfig(name="mqar", vocab_size=16, num_kv_pairs=2, n_val=256)
STEPS = 300


def test_mqar_answers_are_the_values_of_earlier_keys():
    x, y = examples(MQAR, 32, 64, np.random.default_rng(0))
    assert x.shape == y.shape == (64, 32)
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        pairs = dict(zip(row_x[0:8:2], row_x[1:8:2], strict=True))
        assert len(pairs) == 4 and all(1 <= k < 16 <= v < 32 for k, v in pairs.items())
        answers = [t for t, target in enumerate(row_y) if target != IGNORE]
        assert len(answers) == 4 and all(t >= 8 and t % 2 == 0 for t in answers)  # one query per key
        assert sorted(row_x[t] for t in answers) == sorted(pairs)
        assert all(row_y[t] == pairs[row_x[t]] for t in answers)


@pytest.mark.parametrize("name", LIST_TASKS)
def test_list_tasks_targets_and_mask(name):
    cfg = TaskConfig(name=name, vocab_size=10, list_len=5)  # values 0..8, SEP = 9
    x, y = examples(cfg, 10, 32, np.random.default_rng(1))
    assert x.shape == y.shape == (32, 10)
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        xs = row_x[:5]
        assert row_x[5] == 9 and all(0 <= v < 9 for v in xs)
        assert row_y[:5] == [IGNORE] * 5  # no loss on the input half or the separator
        want = {
            "copy": xs,
            "reverse": xs[::-1],
            "sort": sorted(xs),
            "swap": [xs[1], xs[0], xs[3], xs[2], xs[4]],
            "sub": [(v - xs[0]) % 9 for v in xs],
        }[name]
        assert row_y[5:] == want
        assert row_x[6:] == want[:4]  # teacher forcing: the target's prefix is the input


def test_batches_are_a_pure_function_of_seed_and_step():
    a, b = TaskBatches(MQAR, 32, 8, seed=3), TaskBatches(MQAR, 32, 8, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a.get(5), b.get(5), strict=True))
    assert not torch.equal(a.get(5)[0], a.get(6)[0])
    assert not torch.equal(a.get(5)[0], TaskBatches(MQAR, 32, 8, seed=4).get(5)[0])
    held = val_set(MQAR, 32, 100)
    assert sum(len(bx) for bx, _ in held) == 256 and torch.equal(held[0][0][:64], val_set(MQAR, 32, 64)[0][0])


def test_task_config_errors_name_the_field():
    assert MQAR.errors(12, 32) == ["seq_len: mqar needs an even seq_len >= 4 x num_kv_pairs = 16, got 12"]
    assert MQAR.errors(32, 16) == ["vocab_size: the model's 16 is smaller than the task's 32"]
    assert TaskConfig(name="sort", list_len=8).errors(20, 128) == [
        "seq_len: a list task of list_len 8 needs seq_len 16"
    ]
    tiny = ModelConfig(d_model=32, n_layer=1, n_head=4, vocab_size=32, seq_len=12)
    with pytest.raises(ConfigError, match="seq_len: mqar needs"):
        train(Trial(tiny, TrainConfig(tokens=100), task=MQAR))


class _NoAttention(nn.Module):
    """Each position sees only its own token (embedding -> MLP -> logits): it cannot look up a key."""

    def __init__(self, vocab: int, d: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Embedding(vocab, d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, vocab))

    def forward(self, x):
        return self.net(x)


def _mqar_trial(variant: str, **kw) -> Trial:
    model = ModelConfig(
        variant=variant, d_model=32, n_layer=2, n_head=2, vocab_size=16, seq_len=16, **MODEL_DEFAULTS["mqar"]
    )
    tcfg = TrainConfig(**{"tokens": STEPS * 32 * 16, "batch_size": 32, "lr": 3e-3, "threads": 1, "n_evals": 2, **kw})
    return Trial(model, tcfg, task=SMALL)


def test_a_model_that_cannot_attend_fails_mqar():
    """Trained as long as QKV below: without attention the best guess is one of the 8 values (1/8)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = _NoAttention(SMALL.vocab_size)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        batches = TaskBatches(SMALL, 16, 32, seed=0)
        for step in range(STEPS):
            x, y = batches.get(step)
            nn.functional.cross_entropy(model(x).transpose(1, 2), y, ignore_index=IGNORE).backward()
            opt.step()
            opt.zero_grad()
        acc = measure(model, val_set(SMALL, 16, 64), "cpu", contextlib.nullcontext)["val_accuracy"]
    finally:
        torch.set_num_threads(threads)
    assert acc < 0.2, acc


def test_qkv_learns_mqar():
    """Past both plateaus: a model without attention (< 0.2, above) and one that answers with a value
    in context without binding it to its key (0.5 here)."""
    result = train(_mqar_trial("QKV"))
    assert result.status == "completed"
    assert result.summary["final_val_accuracy"] > 0.9, result.evals
    assert result.summary["task"] == "mqar" and result.summary["num_kv_pairs"] == 2
    last = result.evals[-1]
    assert all(0 <= last[f"val_accuracy_pos{i}"] <= 1 for i in range(4)) and "induction_loss" not in last


def test_resume_is_exact_with_a_task(tmp_path):
    whole = train(_mqar_trial("Q-K=V", tokens=40 * 32 * 16))
    trial = dataclasses.replace(_mqar_trial("Q-K=V", tokens=40 * 32 * 16), workdir=str(tmp_path / "run"))
    assert train(trial, stop=lambda step: step == 17).status == "interrupted"
    resumed = train(trial)
    assert resumed.summary["resumed_from_step"] == 17
    for key in ("final_val_loss", "final_val_accuracy", "final_train_loss"):
        assert abs(resumed.summary[key] - whole.summary[key]) < 1e-6, key


def test_recall_mask_marks_repeated_bigrams():
    x = torch.tensor([[5, 6, 7, 5, 6, 5]])
    y = torch.tensor([[6, 7, 5, 6, 5, 9]])
    # (5 -> 6) recurs at t=3; (6 -> 5) at t=4 is new (t=1 was 6 -> 7); (5 -> 9) at t=5 is new
    assert _recall_mask(x, y).tolist() == [[False, False, False, True, False, False]]
    px, py = induction_set(100, 16)
    assert torch.equal(px[:, 8:], px[:, :8]) and (py[:, :8] == IGNORE).all()
    assert torch.equal(py[:, 8:-1], px[:, 9:])


def test_lm_probes_and_linear_v_coefficients_are_recorded(tiny_data):
    model = ModelConfig(variant="linear_v", d_model=32, n_layer=2, n_head=4, vocab_size=TINY_VOCAB, seq_len=32)
    tcfg = TrainConfig(tokens=30 * 8 * 32, batch_size=8, lr=1e-2, threads=1, eval_tokens=2048, n_evals=2)
    result = train(Trial(model, tcfg, tiny_data))
    assert result.status == "completed" and result.summary["task"] == "lm"
    for e in result.evals:
        assert 0 <= e["val_accuracy"] <= 1 and 0 <= e["induction_accuracy"] <= 1 and 0 <= e["recall_accuracy"] <= 1
        assert math.isfinite(e["induction_loss"]) and math.isfinite(e["recall_loss"])
        assert np.array(json.loads(e["linear_v_a"])).shape == np.array(json.loads(e["linear_v_b"])).shape == (2, 4)
    assert result.evals[0]["linear_v_b"] != result.evals[-1]["linear_v_b"]  # they train (from b = 1)
    assert result.summary["final_val_accuracy"] == result.evals[-1]["val_accuracy"]


def test_cli_task_prints_one_json_object(capfd):
    argv = ["train", "--task", "copy", "--list-len", "4", "--variant", "Q=K-V", "--d-model", "16", "--n-layer", "1"]
    assert main([*argv, "--n-head", "2", "--tokens", "2048", "--n-evals", "1", "--json"]) == 0
    summary = json.loads(capfd.readouterr().out)  # one object: json.loads rejects anything more
    assert 0 <= summary["final_val_accuracy"] <= 1 and summary["seq_len"] == 8 and summary["vocab_size"] == 128


def _task_rows(n_seeds: int = 2) -> dict:
    rows = []
    for variant, base in (("baseline", 0.95), ("tied_kv", 0.8)):
        for kv in (4, 8):
            for seed in range(n_seeds):
                tid = f"{variant}-kv{kv}-s{seed}"
                rows.append(dict(trial_id=tid, attempt=0, status="completed", variant=variant, seed=seed,
                                 tokens_per_param=10.0, params_total=1000, params_non_embedding=900, tokens=9000,
                                 flops=1e9, final_val_loss=0.1, final_val_accuracy=base - 0.05 * kv / 4 + 0.01 * seed,
                                 task="mqar", num_kv_pairs=kv, list_len=None, seq_len=64, d_model=64, n_layer=2,
                                 n_head=4, lr=3e-3))  # fmt: skip
    return rows


def test_accuracy_report_renders(tmp_path):
    rows = _task_rows()
    evals = [dict(trial_id="linear-kv4-s0", attempt=0, step=10, tokens=100, val_loss=0.2, val_accuracy=0.9,
                  linear_v_a="[[0.1, 0.9], [0.0, 1.0]]", linear_v_b="[[0.9, -1.0], [1.0, 0.1]]")]  # fmt: skip
    rows.append({**rows[0], "trial_id": "linear-kv4-s0", "variant": "linear_v"})
    for table, data in (("trials", rows), ("evals", evals)):
        (tmp_path / table / "sweep=recall").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(data), tmp_path / table / "sweep=recall" / "part-0.parquet")
    out = write_report(tmp_path, n_boot=10)
    text = out["markdown"].read_text()
    assert "Task accuracy" in text and "V=aQ+bK" in text
    assert "| mqar | num_kv_pairs 8 | 64 | d64l2h4 | Q-K=V | 2 |" in text
    assert "-0.150 ± 0.000" in text  # the gap to QKV on paired seeds: 0.8 - 0.95 on both seeds
    assert "layer 0: median a = 0.500, b = -0.050 over 2 heads (1 nearest V=K, 0 nearest V=Q, 1 nearest V=Q-K)" in text
    assert (tmp_path / "report" / "accuracy.png").stat().st_size > 0
    assert (tmp_path / "report" / "linear_v.png").stat().st_size > 0


def test_cli_report_of_a_task_sweep_prints_no_loss_question(tmp_path, capsys):
    from tiedsweep.cli import main

    (tmp_path / "trials" / "sweep=recall").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(_task_rows()), tmp_path / "trials" / "sweep=recall" / "part-0.parquet")
    assert main(["report", str(tmp_path), "--n-boot", "10"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("wrote ") and "Question" not in printed  # the loss verdict's question: no loss here


SPEC = """
name = "r"
[data]
task = "mqar"
vocab_size = 64
[budget]
tokens = 40960
[grid]
variant = ["QKV", "V=aQ+bK"]
size = ["t1"]
num_kv_pairs = [2, 4]
seq_len = [32]
"""


def test_a_task_spec_expands_to_task_trials(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(SPEC)
    sweep = load_spec(str(path))
    assert len(sweep.trials) == 4 and len({t.trial_id for t in sweep.trials}) == 4
    t = sweep.trials[-1]
    assert t.trial_id.startswith("mqar-kv4-linear_v-d32l1h4f128-")  # shape labels carry d_ff (issue 8)
    assert t.trial.task == TaskConfig(name="mqar", vocab_size=64, num_kv_pairs=4)
    assert t.trial.model.vocab_size == 64 and t.trial.train.tokens == 40960 and t.corpus_fingerprint is None
    row = t.row()
    assert row["task"] == "mqar" and row["num_kv_pairs"] == 4 and row["list_len"] is None
    assert row["corpus"] == "task:mqar" and row["corpus_fingerprint"] == t.trial.task.fingerprint
    assert set(row) <= set(TRIALS_SCHEMA.names)
    lists = SPEC.replace('task = "mqar"\n', "").replace("num_kv_pairs = [2, 4]", 'task = ["copy", "sort"]')
    path.write_text(lists.replace("vocab_size = 64", "vocab_size = 64\nlist_len = 16"))
    assert {t.trial.task.name for t in load_spec(str(path)).trials} == {"copy", "sort"}


def test_a_bad_task_spec_names_each_field(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        SPEC.replace("seq_len = [32]", "seq_len = [12]").replace('task = "mqar"', 'task = "mqar"\nn_val = 0')
    )
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert info.value.errors == [
        f"{path}: data.n_val: must be >= 1, got 0",
        f"{path}: grid.seq_len[0]: mqar needs an even seq_len >= 4 x num_kv_pairs = 16, got 12",
    ]
    path.write_text(
        SPEC.replace('task = "mqar"\n', "").replace("vocab_size = 64", "vocab_size = 512\nmax_bytes = 1_500_000")
    )
    with pytest.raises(SpecError, match=r"grid.num_kv_pairs\[0\]: only mqar reads it"):
        load_spec(str(path))
