"""Data-parallel trials on real Ray Train (2 gloo workers on CPU): same result as 1 worker, exact resume
after a worker is killed."""

from __future__ import annotations

import dataclasses
import os

import pytest

from orchestrator.raybackend.ddp import train_ddp
from tests.test_train import _trial
from tiedattn.train import train

pytestmark = pytest.mark.slow


def _kill_rank1_once(marker: str, at_step: int):
    """progress() for every rank: rank 1 dies (os._exit) at `at_step` the first time only."""

    def progress(p: dict) -> None:
        import torch.distributed as dist

        if p["step"] == at_step and dist.get_rank() == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)

    return progress


def test_two_workers_match_one_and_a_killed_worker_resumes_exactly(tiny_data, local_ray, tmp_path):
    trial = _trial(tiny_data, tokens=16_384)  # 64 steps of 8 x 32 tokens; evals at steps 1, 4, 16, 64
    one = train(trial)
    two = train_ddp(trial, 2)
    assert two.status == "completed" and two.summary["workers"] == 2
    assert two.summary["steps"] == one.summary["steps"] and two.summary["tokens"] == one.summary["tokens"]
    rel = abs(two.summary["final_val_loss"] / one.summary["final_val_loss"] - 1)
    assert rel < 1e-3, (one.summary["final_val_loss"], two.summary["final_val_loss"])

    # Rank 1 dies at step 40; Ray Train restarts both workers, which resume from the step-16 checkpoint.
    marker = str(tmp_path / "killed")
    killed = dataclasses.replace(trial, workdir=str(tmp_path / "run"))
    resumed = train_ddp(killed, 2, progress=_kill_rank1_once(marker, 40))
    assert os.path.exists(marker), "the worker was never killed"
    assert resumed.status == "completed" and resumed.summary["resumed_from_step"] == 16
    assert resumed.summary["final_val_loss"] == pytest.approx(two.summary["final_val_loss"], abs=1e-6)
    assert [e["val_loss"] for e in resumed.evals] == pytest.approx([e["val_loss"] for e in two.evals], abs=1e-6)


def test_sweep_trial_with_two_workers(local_ray, cache_dir, tmp_path):
    """[resources] workers = 2: the runner hands the trial to Ray Train; same id as with 1 worker."""
    from orchestrator.results import read_trials
    from orchestrator.spec import load_spec
    from tests.test_orchestrator import write_spec
    from tiedsweep.cli import main

    one = write_spec(tmp_path / "one.toml", cache_dir, name="w", variants=("Q-K=V",), multipliers=(10,))
    two = tmp_path / "two.toml"
    two.write_text(one.read_text().replace("cpus = 1\n", "cpus = 1\nworkers = 2\n"))
    (st,) = load_spec(str(two)).trials
    assert st.workers == 2 and st.trial_id == load_spec(str(one)).trials[0].trial_id
    assert main(["run", str(two), "--results", str(tmp_path / "results"), "--quiet"]) == 0
    (row,) = read_trials(str(tmp_path / "results"), "w").to_pylist()
    assert row["status"] == "completed" and row["workers"] == 2 and row["trial_id"] == st.trial_id
    assert row["flops_per_s"] > 0 and row["mfu"] is None and row["compiled"] is False
