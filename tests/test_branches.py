"""WSD branches: one trunk, a cooldown per budget, each equal to its independent run; the trunk
resumes after its worker is killed and is extended (not restarted) when a larger budget is added."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import pytest
import torch

from orchestrator.spec import load_spec
from records.store import read_trials
from tests.test_orchestrator import write_spec
from tiedattn.train import train
from tiedsweep.cli import main

pytestmark = pytest.mark.slow


def _run(spec, results) -> int:
    return main(["run", str(spec), "--results", str(results), "--quiet"])


def _independent(st) -> float:
    """The same budget as a plain WSD run from step 0, with the worker's single thread."""
    threads = torch.get_num_threads()
    try:
        trial = dataclasses.replace(st.trial, train=dataclasses.replace(st.trial.train, threads=1), init_from=None)
        return train(trial).summary["final_val_loss"]
    finally:
        torch.set_num_threads(threads)


def test_trunk_and_branches(local_ray, cache_dir, tmp_path):
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "b.toml", cache_dir, name="br", variants=("Q-K=V",), multipliers=(8, 16, 32),
                      schedule="wsd-branches", train="cooldown_frac = 0.25\ncheckpoint_every_s = 0.2")  # fmt: skip
    sweep = load_spec(str(spec))
    (trunk,) = [st for st in sweep.trials if st.role == "trunk"]
    branches = sorted((st for st in sweep.trials if st.role == "branch"), key=lambda st: st.tokens_per_param)
    assert len(branches) == 3 and all(b.depends_on == trunk.trial_id for b in branches)
    assert trunk.trial.train.save_at_steps == tuple(b.branch_step for b in branches)
    # Branches cost their cooldown only: here 25% of each budget, plus one trunk of 75% of the largest.
    independent = sum(b.trial.train.tokens for b in branches)
    shared = trunk.trial.train.tokens + sum(b.trial.train.tokens - b.branch_step * 256 for b in branches)
    assert shared / independent == pytest.approx((0.75 * 32 + 0.25 * (8 + 16 + 32)) / (8 + 16 + 32), rel=0.02)

    # Kill the trunk's worker once it has passed the first branch point: Ray re-runs it from its checkpoint.
    workdir = results / "checkpoints" / "br" / trunk.trial_id
    runner = threading.Thread(target=_run, args=(spec, results))
    runner.start()
    deadline = time.time() + 120
    while not (workdir / f"branch-{branches[0].branch_step}.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(int((workdir / "worker.pid").read_text()), signal.SIGKILL)
    runner.join(timeout=400)

    rows = {r["trial_id"]: r for r in read_trials(str(results), "br").to_pylist()}
    assert {r["status"] for r in rows.values()} == {"completed"}, [r["error"] for r in rows.values()]
    t = rows[trunk.trial_id]
    assert t["schedule"] == "wsd-trunk" and 0 < t["resumed_from_step"] < t["steps"]
    for b in branches:
        r = rows[b.trial_id]
        assert (r["schedule"], r["branch_of"], r["tokens"]) == ("wsd", trunk.trial_id, b.trial.train.tokens)
        assert r["tokens_per_param"] == b.tokens_per_param and r["resumed_from_step"] == b.branch_step
    # A branch's result is its independent run's (same batches, same absolute warmup, same lr up to the branch).
    assert abs(rows[branches[1].trial_id]["final_val_loss"] - _independent(branches[1])) < 1e-6

    # A larger budget extends the trunk from where it ended and runs only the new branch.
    write_spec(spec, cache_dir, name="br", variants=("Q-K=V",), multipliers=(8, 16, 32, 64),
               schedule="wsd-branches", train="cooldown_frac = 0.25\ncheckpoint_every_s = 0.2")  # fmt: skip
    extended = load_spec(str(spec))
    assert {st.trial_id for st in extended.trials} >= set(rows)  # same trunk id, same branch ids
    assert _run(spec, results) == 0
    all_rows = read_trials(str(results), "br", latest=False).to_pylist()
    trunk_rows = [r for r in all_rows if r["trial_id"] == trunk.trial_id]
    assert len(trunk_rows) == 2 and trunk_rows[-1]["resumed_from_step"] == t["steps"]
    assert len(all_rows) == 4 + 2  # the trunk again + the new branch; no old branch re-ran
