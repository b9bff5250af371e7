"""One trial on N data-parallel workers: Ray Train's TorchTrainer around tiedattn.train.train.

TorchTrainer starts N workers and a process group (gloo on CPU, NCCL on GPU); train() sees the
group and does the rest (each rank trains on its rows of the global batch, DDP averages gradients,
rank 0 writes the trial's checkpoint). When a worker dies, FailureConfig restarts the whole group
and every rank resumes from that checkpoint: the batch at a step is a function of the step, so the
resumed run is the run that never stopped. The checkpoint lives in the trial's workdir, which must
be storage every worker sees (as for single-worker trials that move between nodes); a CLI run
without a workdir gets a temporary one, so a restart still resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable

import ray
import ray.train
import ray.train.torch
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from tiedattn.train import Trial, TrialResult, check, train

MAX_FAILURES = 3  # worker-group restarts per trial before it fails; each resumes from the last checkpoint


def _loop(config: dict) -> None:
    """The per-worker function: train, then report rank 0's result (report is a barrier: all ranks call it)."""
    trial: Trial = config["trial"]
    tc = trial.train
    device = str(ray.train.torch.get_device()) if config["use_gpu"] else "cpu"
    trial = dataclasses.replace(trial, train=dataclasses.replace(tc, device=device, threads=config["threads"]))
    result = train(trial, stop=config["stop"], progress=config["progress"])
    payload = json.dumps({"status": result.status, "summary": result.summary, "evals": result.evals})
    # Ray Train keeps a run's metrics only with a checkpoint: rank 0 hands in a folder with the result.
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            with open(os.path.join(folder, "result.json"), "w") as f:
                f.write(payload)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"status": result.status}, checkpoint=checkpoint)


def trainer(workers: int, *, cpus: float = 1.0, gpus: float = 0.0) -> Callable[..., TrialResult]:
    """A drop-in for tiedattn.train.train on `workers` Ray Train workers (orchestrator.pool: Task.workers).
    progress is left out (it writes to the driver's log file; the workers' progress is in Ray's logs);
    on_eval is not supported (a tuner's proxies run on one worker)."""

    def run(trial: Trial, stop=None, progress=None, on_eval=None) -> TrialResult:
        if on_eval is not None:
            raise ValueError("on_eval: not supported on data-parallel workers")
        return train_ddp(trial, workers, cpus=cpus, gpus=gpus, stop=stop)

    return run


def train_ddp(
    trial: Trial,
    workers: int,
    *,
    cpus: float = 1.0,
    gpus: float = 0.0,
    stop: Callable[[int], bool] | None = None,
    progress: Callable[[dict], None] | None = None,
    max_failures: int = MAX_FAILURES,
) -> TrialResult:
    """Train `trial` on `workers` Ray Train workers of `cpus` CPUs and `gpus` GPUs each; the result
    is train()'s on rank 0. stop and progress run on every rank (they are pickled to the workers)."""
    check(trial)
    if trial.train.batch_size % workers:
        raise ValueError(f"batch_size: {trial.train.batch_size} does not split evenly over {workers} workers")
    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False)  # never another user's Ray
    scratch = None if trial.workdir else tempfile.mkdtemp(prefix="tiedsweep-ddp-")
    workdir = os.path.abspath(trial.workdir or scratch)
    per_worker = {"CPU": cpus} | ({"GPU": gpus} if gpus else {})
    try:
        trainer = TorchTrainer(
            _loop,
            train_loop_config={
                "trial": dataclasses.replace(trial, workdir=workdir),
                "use_gpu": gpus > 0,
                "threads": max(1, math.floor(cpus)),
                "stop": stop,
                "progress": progress,
            },
            torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker),
            run_config=RunConfig(
                name="ray-train",
                storage_path=workdir,
                failure_config=FailureConfig(max_failures=max_failures),
            ),
        )
        with trainer.fit().checkpoint.as_directory() as folder, open(os.path.join(folder, "result.json")) as f:
            out = json.load(f)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return TrialResult(out["status"], out["summary"], out["evals"])
