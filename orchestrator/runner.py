"""Running one sweep's trials on a pool (orchestrator.pool): order, leases, WSD branch release,
persistence, progress and signals. No scheduler is named here: the CLI hands in a pool (Ray's,
orchestrator/raybackend/pool.py) and drive() keeps it busy.

At most `max_concurrent` trials are in flight, largest cost first (or smallest); each outcome is
written as a Parquet row as soon as it comes back, and failures come back as values. A trial whose
worker or node dies is re-run by the pool and resumes from its checkpoint. Ctrl-C (SIGINT, even one
the driver inherited as ignored, or SIGTERM) asks
every running trial to checkpoint and stop; they are recorded as interrupted and `tiedsweep
resume` continues them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.execute import Paths, execute
from orchestrator.lease import LeaseKeeper, leases_supported, owner_alive, read_lease
from orchestrator.pool import Pool, Task, drive
from orchestrator.sweep import SweepTrial
from records.index import TrialIndex
from records.layout import checkpoints_dir, log_path
from records.store import compact, write_attempt

# Waits between tries of a result write (shared storage hiccups) before the driver gives up: ~15 s.
WRITE_RETRY_S = (1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class RunOptions:
    address: str | None = None  # None: start an embedded local Ray; else "auto", "HOST:6379", "ray://HOST:10001"
    order: str = "largest"  # "largest" cost (FLOPs) first, so the long poles start early; or "smallest"
    max_concurrent: int | None = None  # cap on trials in flight; None: as many as the cluster's resources allow
    max_retries: int = 3  # re-runs of a trial whose worker or node died (each resumes from its checkpoint)
    retry: frozenset[str] = frozenset({"failed", "interrupted"})  # statuses that are run again
    checkpoint_dir: str | None = None  # default DIR/checkpoints; must be storage every node reaches
    num_cpus: int | None = None  # embedded Ray only; default: all cores
    grace_s: float = 120.0  # after Ctrl-C, how long running trials get to checkpoint and report
    lease_ttl_s: float = 60.0
    # Compact the sweep's results once its trials partition holds more one-attempt files than this: a
    # driver's refresh lists the partition before each batch, and readers (status, report, DuckDB)
    # open every file; 256 one-row files read in ~0.3 s on 2 busy cores.
    compact_over: int = 256
    quiet: bool = False


_MERGED_MAX = 16  # compacted files per partition before auto-compaction merges them all


def _pending(st: SweepTrial, row: dict | None, retry: frozenset[str]) -> bool:
    if row is None or row["status"] in retry:
        return True
    return st.role == "trunk" and row["status"] == "completed" and row["tokens"] < st.trial.train.tokens


def select(trials: list[SweepTrial], index: TrialIndex, retry: frozenset[str], order: str) -> list[SweepTrial]:
    """Trials with no outcome yet or whose latest outcome is in `retry`, ordered by cost; a WSD trunk
    that completed shorter than the grid now needs (a larger budget was added) runs on."""

    todo = [st for st in trials if _pending(st, index.status(st.trial_id), retry)]
    return sorted(todo, key=lambda st: (-st.flops if order == "largest" else st.flops, st.trial_id))


_RATE = re.compile(rb"([0-9][0-9,]*) tok/s")


def _last_rate(path: str, tail: int = 512) -> float | None:
    """The tokens/s of the last progress line of a trial log (execute._logger writes one every 10 s)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - tail))
            found = _RATE.findall(f.read())
    except OSError:
        return None
    return float(found[-1].replace(b",", b"")) if found else None


class _Progress:
    """The one-line display: counts, FLOP-weighted ETA, and the tokens/s of the trials running now
    (the sum of their logs' latest rates, re-read at most every LIVE_EVERY_S)."""

    LIVE_EVERY_S = 5.0

    def __init__(self, total: int, flops_left: float, quiet: bool) -> None:
        self.total, self.flops_left, self.quiet = total, flops_left, quiet
        self.counts = {"completed": 0, "failed": 0, "diverged": 0, "interrupted": 0, "skipped": 0}
        self.start, self.flops_done, self.tokens_per_s, self.last = time.time(), 0.0, 0.0, 0.0
        self.tty = sys.stderr.isatty()
        self.logs = lambda: []  # paths of the running trials' logs (set by _SweepRun)
        self.live, self.live_at = None, 0.0

    def live_rate(self) -> float | None:
        if time.time() - self.live_at >= self.LIVE_EVERY_S:
            rates = [r for r in map(_last_rate, self.logs()) if r is not None]
            self.live, self.live_at = (sum(rates) if rates else None), time.time()
        return self.live

    def done(self, row: dict, flops: float) -> None:
        self.counts[row["status"]] += 1
        self.flops_done += flops
        self.tokens_per_s = row.get("tokens_per_s") or self.tokens_per_s

    def show(self, running: int, force: bool = False) -> None:
        now = time.time()
        if self.quiet or (not force and now - self.last < (0.5 if self.tty else 15.0)):
            return
        self.last = now
        elapsed = now - self.start
        rate = self.flops_done / elapsed if elapsed > 0 else 0.0
        eta = f"{(self.flops_left - self.flops_done) / rate / 60:.1f} min" if rate > 0 else "?"
        c = self.counts
        line = (
            f"[{elapsed:6.0f}s] {c['completed']}/{self.total} done, {running} in flight, {c['failed']} failed, "
            f"{c['diverged']} diverged, {c['interrupted']} interrupted | {self._rate(running)} | ETA {eta}"
        )
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def _rate(self, running: int) -> str:
        live = self.live_rate() if running else None
        if live is not None:
            return f"now {live:,.0f} tok/s"
        return f"last {self.tokens_per_s:,.0f} tok/s"


class _SweepRun:
    """What drive() asks of one sweep: the next tasks (take), each outcome (done), and whether work is
    left (more). WSD branches wait until their trunk's checkpoint exists."""

    def __init__(self, sweep: str, todo: list[SweepTrial], results_dir: str, opts: RunOptions, git_sha: str,
                 keeper, progress: _Progress, index: TrialIndex) -> None:  # fmt: skip
        self.sweep, self.results_dir, self.opts, self.git_sha = sweep, results_dir, opts, git_sha
        self.keeper, self.progress, self.index = keeper, progress, index
        self.ckpt = checkpoints_dir(results_dir, sweep, opts.checkpoint_dir)
        # This driver's own stop file: a Ctrl-C here must not stop another driver's trials.
        self.stop_file = os.path.join(self.ckpt, f".stop-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.diverged = {st.trial_id for st in todo if (index.status(st.trial_id) or {}).get("status") == "diverged"}
        self.queue = [st for st in todo if st.role != "branch"]
        self.waiting = [st for st in todo if st.role == "branch"]  # start once their trunk checkpoint exists
        self.running: dict[str, tuple[SweepTrial, int]] = {}  # trial_id -> (trial, attempt)
        progress.logs = lambda: [p for t in list(self.running) if (p := log_path(results_dir, sweep, t))]

    def more(self) -> bool:
        return bool(self.queue or self.waiting)

    def take(self, free: int) -> list[Task]:
        """Lease up to `free` trials and make them tasks; a trial another driver holds or has just
        finished is skipped."""
        self._release_branches()
        batch = []
        while self.queue and len(batch) < free:
            st = self.queue.pop(0)
            if self.keeper.acquire(self.sweep, st.trial_id):
                batch.append(st)
            else:
                self.progress.counts["skipped"] += 1  # another driver is running it
        if batch:  # after taking the leases: what other drivers finished (or started) until then
            self.index.refresh()
        tasks = []
        for st in batch:
            if not _pending(st, self.index.status(st.trial_id), self.opts.retry):
                self.keeper.release(self.sweep, st.trial_id)
                self.progress.counts["skipped"] += 1
            else:
                tasks.append(self._task(st, self.index.next_attempt(st.trial_id)))
        return tasks

    def _task(self, st: SweepTrial, attempt: int) -> Task:
        workdir = os.path.join(self.ckpt, st.trial_id)
        if st.trial_id in self.diverged:  # same data, same lr: resuming would diverge again; start over
            shutil.rmtree(workdir, ignore_errors=True)
        paths = Paths(workdir, log_path(self.results_dir, self.sweep, st.trial_id), self.stop_file)
        self.running[st.trial_id] = (st, attempt)
        args = (st, attempt, paths, max(1, int(st.cpus)))
        # workers > 1: the pool runs it on that many data-parallel workers of (cpus, gpus) each (Pool: Task.workers)
        name = f"{self.sweep}/{st.trial_id}"
        return Task(st.trial_id, execute, args, st.cpus, st.gpus, name=name, workers=st.workers)

    def done(self, key: str, ok: bool, value) -> None:
        st, attempt = self.running.pop(key)
        if ok:
            self.record(st, *value)
        else:  # the worker died more than max_retries times, or the task could not run
            self.record(st, st.failed_row(attempt, f"{type(value).__name__}: {value}"), [])

    def record(self, st: SweepTrial, row: dict, evals: list[dict]) -> None:
        key = uuid.uuid4().hex[:8]  # every try writes the same files: a retry leaves no orphan evals file
        for wait in (*WRITE_RETRY_S, None):  # shared storage hiccups: retry before giving up the driver
            try:
                name = write_attempt(self.results_dir, self.sweep, {**row, "git_sha": self.git_sha}, evals, key=key)
                break
            except OSError as e:
                if wait is None:
                    raise
                _log(self.results_dir, self.sweep, st.trial_id, f"driver: writing the result failed ({e}); "
                     f"retrying in {wait:g} s")  # fmt: skip
                time.sleep(wait)
        self.index.add(st.trial_id, row["attempt"], row["status"], row.get("tokens"), [name])
        self.keeper.release(self.sweep, st.trial_id)
        self.progress.done(row, st.flops)
        if self.index.part_files()[0] > self.opts.compact_over:
            self.index.refresh()  # another driver may have just compacted: list before paying for a merge
            parts, merged = self.index.part_files()
            if parts > self.opts.compact_over:
                # Merge the new part files only (cost ~compact_over rows), and all files once merged
                # ones pile up: the sweep is rewritten every ~16 x compact_over trials, not every batch.
                compact(self.results_dir, self.sweep, parts_only=merged < _MERGED_MAX)

    def _release_branches(self) -> None:
        active = {st.trial_id for st in self.queue} | set(self.running)
        for st in list(self.waiting):
            path = os.path.join(self.ckpt, st.depends_on, f"branch-{st.branch_step}.pt")
            if os.path.exists(path):
                self.waiting.remove(st)
                self.queue.insert(0, dataclasses.replace(st, trial=dataclasses.replace(st.trial, init_from=path)))
            elif st.depends_on not in active and _leased_elsewhere(self.results_dir, self.sweep, st.depends_on,
                                                                   self.keeper):  # fmt: skip
                self.waiting.remove(st)  # another driver trains its trunk: that driver runs this branch
                self.progress.counts["skipped"] += 1
            elif st.depends_on not in active:  # its trunk ended (now or before) without reaching the branch point
                self.waiting.remove(st)
                error = f"trunk {st.depends_on} has no checkpoint at step {st.branch_step} ({path})"
                self.index.refresh()
                self.record(st, st.failed_row(self.index.next_attempt(st.trial_id), error), [])

    def interrupt(self, pool: Pool) -> None:
        """Ask running trials to checkpoint and stop; record each as it reports (interrupted)."""
        grace_s = self.opts.grace_s
        n = len(self.running)
        sys.stderr.write(f"\ninterrupted: asking {n} running trial(s) to checkpoint (<= {grace_s:.0f} s)\n")
        os.makedirs(os.path.dirname(self.stop_file), exist_ok=True)
        open(self.stop_file, "w").close()
        deadline = time.time() + grace_s
        while self.running and time.time() < deadline:
            for key, ok, value in pool.wait(1.0):
                self.done(key, ok, value)
        for key, (st, attempt) in list(self.running.items()):  # never reported: its last checkpoint stands
            pool.cancel(key)
            del self.running[key]
            error = f"no report within {grace_s:.0f} s of the interrupt"
            self.record(st, st.failed_row(attempt, error, "interrupted"), [])
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.stop_file)


def run_trials(sweep: str, trials: list[SweepTrial], results_dir: str, opts: RunOptions, git_sha: str,
               pool: Pool) -> dict:  # fmt: skip
    """Run every selected trial of one sweep on `pool`; returns counts by outcome."""
    index = TrialIndex(results_dir, sweep)
    index.refresh()
    todo = select(trials, index, opts.retry, opts.order)
    progress = _Progress(len(todo), sum(st.flops for st in todo), opts.quiet)
    # As many in flight as the cluster runs at once, plus one queued in the pool so that a freed slot
    # starts the next trial at once (the driver's bookkeeping between trials lists the results and reads
    # only new files: a few ms). A trial holds its lease only from then on, so a second driver on the same results
    # takes the rest, and the cost order holds. An autoscaling cluster that should grow: --max-concurrent.
    slots = (pool.slots(st.cpus * st.workers, st.gpus * st.workers) for st in todo)  # a trial's workers together
    cap = opts.max_concurrent or 1 + max(slots, default=1)
    leases = LeaseKeeper(results_dir, ttl_s=opts.lease_ttl_s) if leases_supported(results_dir) else _NoLeases()
    with interrupt_signals(), leases as keeper:
        run = _SweepRun(sweep, todo, results_dir, opts, git_sha, keeper, progress, index)
        try:
            drive(pool, cap, run.take, run.done, run.more, tick=progress.show)
        except KeyboardInterrupt:
            run.interrupt(pool)
        except OSError:  # a result that cannot be written (a full disk): stop the rest at their checkpoints
            for key in list(run.running):
                pool.cancel(key)
            raise
    progress.show(0, force=True)
    if not opts.quiet:
        sys.stderr.write("\n")
    return dict(progress.counts)


def _leased_elsewhere(results_dir: str, sweep: str, trial_id: str, keeper) -> bool:
    """True when another live driver holds the trial's lease (it is running it)."""
    if not leases_supported(results_dir) or (sweep, trial_id) in keeper.held:
        return False
    lease = read_lease(results_dir, sweep, trial_id)
    return lease is not None and time.time() - lease.heartbeat < keeper.ttl_s and owner_alive(lease.owner)


def _log(results_dir: str, sweep: str, trial_id: str, message: str) -> None:
    """A line in the trial's log (the worker's lines are there too); never an error of its own."""
    path = log_path(results_dir, sweep, trial_id)
    if path is None:  # an object store: no logs
        return
    with contextlib.suppress(OSError):
        with open(path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}\n")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_signals() -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM raise KeyboardInterrupt in the driver, whatever it inherited. A
    shell starts a background job (`cmd &`), and some CI runners their steps, with SIGINT ignored;
    Python then keeps it ignored, and Ctrl-C or `kill -INT` would do nothing. The previous handlers
    come back on exit. Main thread only (Python sets signal handlers nowhere else)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _NoLeases:
    """Object-store results: one driver per results directory, no leases (see lease.py)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def acquire(self, sweep: str, trial_id: str) -> bool:
        return True

    def release(self, sweep: str, trial_id: str) -> None:
        return None
