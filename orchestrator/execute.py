"""Run one sweep trial inside a worker process: checkpoints, a log file, stop requests, failures as values.

Nothing here knows about a scheduler: the runner and tuning submit `execute` to a pool
(orchestrator.pool). Every trial, tuning proxies included, runs through it: corpus check, log,
failure as a row. Whatever happens in the
trial (a diverged loss, a bad config, an exception), `execute` returns a results row; only the
worker process dying (SIGKILL, a lost node) escapes it, and then Ray re-runs the task, which
resumes from the trial's last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone

from orchestrator.sweep import SweepTrial
from tiedattn.data import DataError, corpus_fingerprint
from tiedattn.train import TrialResult, train


@dataclasses.dataclass(frozen=True)
class Paths:
    workdir: str  # checkpoints of this trial (shared storage when trials can move between nodes)
    log: str | None  # this trial's log file
    stop: str | None  # a file whose existence asks every running trial to checkpoint and stop


def _stopper(paths: Paths, every_s: float = 1.0):
    """stop(step) for train(): True after SIGINT/SIGTERM reached this worker or the stop file appeared."""
    state = {"signal": False, "checked": 0.0, "stop": False}

    def on_signal(signum, frame):
        state["signal"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: the stop file still works
            pass

    def stop(step: int) -> bool:
        now = time.time()
        if paths.stop and now - state["checked"] > every_s:  # a stat per second, not per step
            state["checked"] = now
            state["stop"] = os.path.exists(paths.stop)
        return state["signal"] or state["stop"]

    return stop


def _logger(path: str | None, every_s: float = 10.0):
    """(open file or None, write(message), progress(p) for train())."""
    if path is None:
        return None, lambda message: None, None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log = open(path, "a", buffering=1)
    last = [0.0]

    def write(message: str) -> None:
        log.write(f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%S}Z {message}\n")

    def progress(p: dict) -> None:
        if time.time() - last[0] >= every_s or p["step"] == p["steps"]:
            last[0] = time.time()
            write(f"step {p['step']}/{p['steps']} loss {p['loss']:.4f} lr {p['lr']:.3g} {p['tokens_per_s']:,.0f} tok/s")

    return log, write, progress


def execute(
    st: SweepTrial,
    attempt: int,
    paths: Paths,
    threads: int | None = None,
    *,
    stop: Callable[[int], bool] | None = None,
    on_eval: Callable[[dict], None] | None = None,
    trainer: Callable[..., TrialResult] = train,
) -> tuple[dict, list[dict]]:
    """Train (or resume) one trial; return its results row and eval rows. stop(step) and on_eval(row)
    are the caller's too (a tuner prunes with them), besides the stop file and signals. trainer:
    tiedattn.train.train, or the pool's drop-in for a trial on several workers (orchestrator.pool)."""
    started = datetime.now(timezone.utc)
    os.makedirs(paths.workdir, exist_ok=True)
    with open(os.path.join(paths.workdir, "worker.pid"), "w") as f:  # lets a test or an operator find it
        f.write(str(os.getpid()))
    trial = dataclasses.replace(st.trial, workdir=paths.workdir)
    if threads:
        trial = dataclasses.replace(trial, train=dataclasses.replace(trial.train, threads=threads))
    log, write, progress = _logger(paths.log)
    write(f"start {st.trial_id} attempt {attempt} on {socket.gethostname()} pid {os.getpid()}")
    row = {**st.row(), "trial_id": st.trial_id, "attempt": attempt, "host": socket.gethostname(), "started_at": started}
    try:
        here = corpus_fingerprint(trial.data)  # ~30 ms: never train a node's other data under this id
        if st.corpus_fingerprint is not None and here != st.corpus_fingerprint:
            raise DataError(
                f"corpus: on {socket.gethostname()} its fingerprint is {here}, the sweep's is "
                f"{st.corpus_fingerprint}: not the same data"
            )
        stopped = _stopper(paths)
        either = stopped if stop is None else (lambda step: stopped(step) or stop(step))
        result = trainer(trial, stop=either, progress=progress, on_eval=on_eval)
        summary = {k: v for k, v in result.summary.items() if k != "status"}
        if summary.get("checkpoint_recovered"):  # recovery events belong in the trial's log, not only the row
            write(f"checkpoint recovered: {summary['checkpoint_recovered']}")
        if summary.get("resumed_from_step") is not None:
            write(f"resumed from step {summary['resumed_from_step']}")
        row.update(summary, status=result.status)
        row.update(st.row())  # the spec's labels win (a trunk's schedule is "wsd-trunk")
        row["corpus_fingerprint"] = summary["corpus_fingerprint"]  # what this worker actually read
        evals = result.evals
        write(f"end status {result.status} final val loss {summary['final_val_loss']:.4f}")
    except Exception as e:  # a bug or bad input in this trial: a failed row, never a dead sweep
        row.update(st.failed_row(attempt, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"))
        evals = []
        write(f"failed: {type(e).__name__}: {e}")
    finally:
        if log is not None:
            log.close()
    row["finished_at"] = datetime.now(timezone.utc)
    return row, evals
