"""Data-parallel trials on real Ray Train (2 gloo workers on CPU), through the sweep runner: the same
result as 1 worker, and an exact resume after a worker is killed. Two Ray Train runs (~40 s of
start-up each on 2 busy cores), so one test."""

from __future__ import annotations

import dataclasses
import os

import pytest

from orchestrator.raybackend.ddp import train_ddp
from orchestrator.spec import load_spec
from records.store import read_trials
from tests.test_orchestrator import write_spec
from tiedattn.train import eval_steps, train
from tiedsweep.cli import main

pytestmark = pytest.mark.slow


def _kill_rank1_once(marker: str, at_step: int):
    """progress() for every rank: rank 1 dies (os._exit) at `at_step` the first time only."""

    def progress(p: dict) -> None:
        import torch.distributed as dist

        if p["step"] == at_step and dist.get_rank() == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)

    return progress


def test_two_workers_match_one_and_a_killed_worker_resumes_exactly(local_ray, cache_dir, tmp_path):
    one_spec = write_spec(tmp_path / "one.toml", cache_dir, name="w", variants=("Q-K=V",), multipliers=(4,))
    spec = tmp_path / "two.toml"
    spec.write_text(one_spec.read_text().replace("cpus = 1\n", "cpus = 1\nworkers = 2\n"))
    (st,) = load_spec(str(spec)).trials
    assert st.workers == 2 and st.trial_id == load_spec(str(one_spec)).trials[0].trial_id  # N is not in the id

    # The runner hands the trial to Ray Train: its result equals 1 worker's up to summation order.
    assert main(["run", str(spec), "--results", str(tmp_path / "results"), "--quiet"]) == 0
    (row,) = read_trials(str(tmp_path / "results"), "w").to_pylist()
    assert row["status"] == "completed" and row["workers"] == 2 and row["trial_id"] == st.trial_id
    assert row["flops_per_s"] > 0 and row["mfu"] is None and row["compiled"] is False
    one = train(st.trial).summary
    assert row["steps"] == one["steps"] == 200 and row["tokens"] == one["tokens"]
    assert abs(row["final_val_loss"] / one["final_val_loss"] - 1) < 1e-3, (row["final_val_loss"], one["final_val_loss"])

    # Rank 1 dies at step 100; Ray Train restarts both workers, which resume from the step-20 checkpoint
    # (the eval before it) and end exactly where the uninterrupted 2-worker run ended.
    assert eval_steps(200, 3) == [2, 20, 200]
    marker = str(tmp_path / "killed")
    killed = dataclasses.replace(st.trial, workdir=str(tmp_path / "run"))
    resumed = train_ddp(killed, 2, progress=_kill_rank1_once(marker, 100)).summary
    assert os.path.exists(marker), "the worker was never killed"
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == 20
    assert resumed["final_val_loss"] == pytest.approx(row["final_val_loss"], abs=1e-6)
    assert resumed["final_train_loss"] == pytest.approx(row["final_train_loss"], abs=1e-6)
