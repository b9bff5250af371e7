"""Scheduling on Ray. The only module that imports ray (zoology's launch.py: ray.remote + ray.wait).

One remote task per trial, with the trial's cpus/gpus as its Ray resources, so a node packs as
many small trials as it has cores (two 1-thread trials beat one 2-thread trial on 2 cores here).
The driver keeps at most `max_concurrent` tasks in flight, largest cost first (or smallest), and
writes each outcome as a Parquet row as soon as it comes back; failures come back as values.
A task whose worker or node dies is re-run by Ray (max_retries) and resumes from its checkpoint.
Ctrl-C (or SIGTERM) asks every running trial to checkpoint and stop; they are recorded as
interrupted and `tiedsweep resume` continues them.

Ray 2.60 enables token authentication by default. The embedded cluster handles it itself. For
`--address`, the driver must present the cluster's token: Ray reads RAY_AUTH_TOKEN, then
RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token (`ray get-auth-token` prints or makes it); a cluster
started with RAY_AUTH_MODE=disabled needs RAY_AUTH_MODE=disabled on the driver too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import ray

from orchestrator.execute import Paths, execute
from orchestrator.lease import LeaseKeeper, leases_supported, owner_alive, read_lease
from orchestrator.results import next_attempt, read_trials, write_attempt
from orchestrator.spec import SweepTrial


@dataclass(frozen=True)
class RunOptions:
    address: str | None = None  # None: start an embedded local Ray; else "auto", "HOST:6379", "ray://HOST:10001"
    order: str = "largest"  # "largest" cost (FLOPs) first, so the long poles start early; or "smallest"
    max_concurrent: int | None = None  # cap on trials in flight; None: as many as the cluster's resources allow
    max_retries: int = 3  # Ray re-runs of a trial whose worker or node died (each resumes from its checkpoint)
    retry: frozenset[str] = frozenset({"failed", "interrupted"})  # statuses that are run again
    checkpoint_dir: str | None = None  # default DIR/checkpoints; must be storage every node reaches
    num_cpus: int | None = None  # embedded Ray only; default: all cores
    grace_s: float = 120.0  # after Ctrl-C, how long running trials get to checkpoint and report
    lease_ttl_s: float = 60.0
    quiet: bool = False


class SchedulingError(RuntimeError):
    """The sweep cannot be scheduled (resources no node has, an unreachable cluster); nothing was submitted."""


def connect(address: str | None, num_cpus: int | None = None) -> None:
    if ray.is_initialized():
        return
    try:
        if address is None:  # workers of the embedded Ray share this machine's token cache
            env = {k: os.environ[k] for k in ("TIEDSWEEP_CACHE",) if k in os.environ}
            runtime_env = {"env_vars": env} if env else None
            ray.init(
                address="local",  # always a new cluster, never one a previous `ray start` left in /tmp/ray
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env=runtime_env,
            )
        else:  # a cluster's nodes have their own environment (`submit` passes the job's runtime_env)
            ray.init(address=address, log_to_driver=False)
    except Exception as e:
        hint = ""
        if "auth" in str(e).lower() or "token" in str(e).lower():
            hint = (
                " (token authentication: set RAY_AUTH_TOKEN or write ~/.ray/auth_token with the cluster's"
                " token, or RAY_AUTH_MODE=disabled on both sides)"
            )
        raise SchedulingError(f"cannot connect to Ray at {address or 'embedded'}: {e}{hint}") from e


def cluster_slots(cpus: float, gpus: float) -> int:
    """How many tasks of this size the connected cluster runs at once."""
    total = ray.cluster_resources()
    n = int(total.get("CPU", 0) // cpus) if cpus else 1 << 30
    return max(1, min(n, int(total.get("GPU", 0) // gpus) if gpus else n))


def check_resources(trials: list[SweepTrial]) -> list[str]:
    """One line per distinct (cpus, gpus) request that no alive node can satisfy."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    biggest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    errors = []
    for cpus, gpus in sorted({(st.cpus, st.gpus) for st in trials}):
        if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
            errors.append(
                f"resources: a trial needs cpus={cpus:g}, gpus={gpus:g} but no node has that "
                f"(largest: CPU {biggest.get('CPU', 0):g}, GPU {biggest.get('GPU', 0):g})"
            )
    return errors


@ray.remote
def _trial_task(st: SweepTrial, attempt: int, paths: Paths, threads: int) -> tuple[dict, list[dict]]:
    return execute(st, attempt, paths, threads)


def _pending(st: SweepTrial, row: dict | None, retry: frozenset[str]) -> bool:
    if row is None or row["status"] in retry:
        return True
    return st.role == "trunk" and row["status"] == "completed" and row["tokens"] < st.trial.train.tokens


def _latest(results_dir: str, sweep: str) -> dict[str, dict]:
    table = read_trials(results_dir, sweep).select(["trial_id", "status", "tokens"])
    return {r["trial_id"]: r for r in table.to_pylist()}


def select(trials: list[SweepTrial], latest: dict[str, dict], retry: frozenset[str], order: str) -> list[SweepTrial]:
    """Trials with no outcome yet or whose latest outcome is in `retry`, ordered by cost; a WSD trunk
    that completed shorter than the grid now needs (a larger budget was added) runs on."""

    todo = [st for st in trials if _pending(st, latest.get(st.trial_id), retry)]
    return sorted(todo, key=lambda st: (-st.flops if order == "largest" else st.flops, st.trial_id))


class _Progress:
    def __init__(self, total: int, flops_left: float, quiet: bool) -> None:
        self.total, self.flops_left, self.quiet = total, flops_left, quiet
        self.counts = {"completed": 0, "failed": 0, "diverged": 0, "interrupted": 0, "skipped": 0}
        self.start, self.flops_done, self.tokens_per_s, self.last = time.time(), 0.0, 0.0, 0.0
        self.tty = sys.stderr.isatty()

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
            f"{c['diverged']} diverged, {c['interrupted']} interrupted | last {self.tokens_per_s:,.0f} tok/s | "
            f"ETA {eta}"
        )
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()


def run_trials(sweep: str, trials: list[SweepTrial], results_dir: str, opts: RunOptions, git_sha: str) -> dict:
    """Run every selected trial of one sweep on Ray; returns counts by outcome."""
    connect(opts.address, opts.num_cpus)
    errors = check_resources(trials)
    if errors:
        raise SchedulingError("; ".join(errors))
    ckpt_root = opts.checkpoint_dir or os.path.join(results_dir.removeprefix("file://"), "checkpoints")
    local = "://" not in results_dir or results_dir.startswith("file://")
    logs = os.path.join(results_dir.removeprefix("file://"), "logs", sweep) if local else None
    # This driver's own stop file: a Ctrl-C here must not stop another driver's trials.
    stop_file = os.path.join(ckpt_root, sweep, f".stop-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    latest = _latest(results_dir, sweep)
    todo = select(trials, latest, opts.retry, opts.order)
    diverged = {st.trial_id for st in todo if latest.get(st.trial_id, {}).get("status") == "diverged"}
    progress = _Progress(len(todo), sum(st.flops for st in todo), opts.quiet)
    # As many in flight as the cluster runs at once, plus one queued in Ray so that a freed slot starts
    # the next trial at once (the driver's bookkeeping between trials reads the results: ~0.5 s per
    # 500 files). A trial holds its lease only from then on, so a second driver on the same results
    # takes the rest, and the cost order holds. An autoscaling cluster that should grow: --max-concurrent.
    slots = (cluster_slots(st.cpus * st.workers, st.gpus * st.workers) for st in todo)  # a trial's workers together
    cap = opts.max_concurrent or 1 + max(slots, default=1)
    in_flight: dict = {}  # ObjectRef -> (SweepTrial, attempt)

    def submit(st: SweepTrial, attempt: int) -> None:
        workdir = os.path.join(ckpt_root, sweep, st.trial_id)
        if st.trial_id in diverged:  # same data, same lr: resuming would diverge again; start over
            shutil.rmtree(workdir, ignore_errors=True)
        paths = Paths(workdir, os.path.join(logs, f"{st.trial_id}.log") if logs else None, stop_file)
        ref = _trial_task.options(
            num_cpus=st.cpus if st.workers == 1 else 0,  # workers > 1: Ray Train's workers hold the resources
            num_gpus=st.gpus if st.workers == 1 else 0,
            max_retries=opts.max_retries,
            retry_exceptions=False,
            name=f"{sweep}/{st.trial_id}",
        ).remote(st, attempt, paths, max(1, int(st.cpus)))
        in_flight[ref] = (st, attempt)

    def record(st: SweepTrial, attempt: int, row: dict, evals: list[dict]) -> None:
        for wait in (1, 2, 4, 8, None):  # shared storage hiccups: retry before giving up the driver
            try:
                write_attempt(results_dir, sweep, {**row, "git_sha": git_sha}, evals)
                break
            except OSError:
                if wait is None:
                    raise
                time.sleep(wait)
        keeper.release(sweep, st.trial_id)
        progress.done(row, st.flops)

    def collect(ref) -> None:
        st, attempt = in_flight.pop(ref)
        try:
            row, evals = ray.get(ref)
        except Exception as e:  # the worker died more than max_retries times, or the task could not run
            row = {
                **st.row(),
                "trial_id": st.trial_id,
                "attempt": attempt,
                "status": "failed",
                "error": f"{type(e).__name__}: {e}",
            }
            evals = []
        record(st, attempt, row, evals)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None  # SIGTERM acts as Ctrl-C
    queue = [st for st in todo if st.role != "branch"]
    waiting = [st for st in todo if st.role == "branch"]  # WSD branches start once their trunk checkpoint exists

    def release_branches() -> None:
        active = {st.trial_id for st in queue} | {st.trial_id for st, _ in in_flight.values()}
        for st in list(waiting):
            path = os.path.join(ckpt_root, sweep, st.depends_on, f"branch-{st.branch_step}.pt")
            if os.path.exists(path):
                waiting.remove(st)
                queue.insert(0, dataclasses.replace(st, trial=dataclasses.replace(st.trial, init_from=path)))
            elif st.depends_on not in active and _leased_elsewhere(results_dir, sweep, st.depends_on, keeper):
                waiting.remove(st)  # another driver trains its trunk: that driver runs this branch
                progress.counts["skipped"] += 1
            elif st.depends_on not in active:  # its trunk ended (now or before) without reaching the branch point
                waiting.remove(st)
                error = f"trunk {st.depends_on} has no checkpoint at step {st.branch_step} ({path})"
                record(st, next_attempt(results_dir, sweep, st.trial_id),
                       {**st.row(), "trial_id": st.trial_id, "status": "failed", "error": error}, [])  # fmt: skip

    with LeaseKeeper(results_dir, ttl_s=opts.lease_ttl_s) if leases_supported(results_dir) else _NoLeases() as keeper:
        try:
            while queue or in_flight or waiting:
                release_branches()
                batch = []
                while queue and len(in_flight) + len(batch) < cap:
                    st = queue.pop(0)
                    if keeper.acquire(sweep, st.trial_id):
                        batch.append(st)
                    else:
                        progress.counts["skipped"] += 1  # another driver is running it
                if batch:  # re-read after taking the leases: another driver may have just finished one
                    fresh = _latest(results_dir, sweep)
                    for st in batch:
                        if not _pending(st, fresh.get(st.trial_id), opts.retry):
                            keeper.release(sweep, st.trial_id)
                            progress.counts["skipped"] += 1
                        else:
                            submit(st, next_attempt(results_dir, sweep, st.trial_id))
                if in_flight:
                    ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                    for ref in ready:
                        collect(ref)
                progress.show(len(in_flight))
        except KeyboardInterrupt:
            _interrupt(in_flight, stop_file, opts.grace_s, collect, record)
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
    progress.show(0, force=True)
    if not opts.quiet:
        sys.stderr.write("\n")
    return dict(progress.counts)


def _interrupt(in_flight: dict, stop_file: str, grace_s: float, collect, record) -> None:
    """Ask running trials to checkpoint and stop; record each as it reports (interrupted)."""
    sys.stderr.write(f"\ninterrupted: asking {len(in_flight)} running trial(s) to checkpoint (<= {grace_s:.0f} s)\n")
    os.makedirs(os.path.dirname(stop_file), exist_ok=True)
    open(stop_file, "w").close()
    deadline = time.time() + grace_s
    while in_flight and time.time() < deadline:
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            collect(ref)
    for ref, (st, attempt) in list(in_flight.items()):  # never reported: its last checkpoint stands
        in_flight.pop(ref)
        ray.cancel(ref, force=True)
        record(
            st,
            attempt,
            {
                **st.row(),
                "trial_id": st.trial_id,
                "attempt": attempt,
                "status": "interrupted",
                "error": f"no report within {grace_s:.0f} s of the interrupt",
            },
            [],
        )
    with contextlib.suppress(FileNotFoundError):
        os.remove(stop_file)


def _leased_elsewhere(results_dir: str, sweep: str, trial_id: str, keeper) -> bool:
    """True when another live driver holds the trial's lease (it is running it)."""
    if not leases_supported(results_dir) or (sweep, trial_id) in keeper.held:
        return False
    lease = read_lease(results_dir, sweep, trial_id)
    return lease is not None and time.time() - lease.heartbeat < keeper.ttl_s and owner_alive(lease.owner)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


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


@ray.remote
def _call(fn, *args):
    return fn(*args)


class TaskPool:
    """Plain functions as Ray tasks with resources, for callers that must not import ray (tune.py).

    submit(key, fn, *args) starts fn(*args) on the cluster; wait() returns the finished ones as
    (key, ok, value or exception): failures are values here too.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3) -> None:
        connect(address, num_cpus)
        self.max_retries = max_retries
        self.in_flight: dict = {}

    def submit(self, key, fn, *args, cpus: float = 1.0, gpus: float = 0.0) -> None:
        opts = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": self.max_retries, "retry_exceptions": False}
        self.in_flight[_call.options(**opts).remote(fn, *args)] = key

    def wait(self, timeout: float = 1.0) -> list[tuple[object, bool, object]]:
        if not self.in_flight:
            return []
        ready, _ = ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=timeout)
        out = []
        for ref in ready:
            key = self.in_flight.pop(ref)
            try:
                out.append((key, True, ray.get(ref)))
            except Exception as e:
                out.append((key, False, e))
        return out

    def __len__(self) -> int:
        return len(self.in_flight)

    def slots(self, cpus: float, gpus: float) -> int:
        return cluster_slots(cpus, gpus)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()
