"""The scheduler seam: a small pool protocol that every backend implements (Ray: orchestrator/raybackend).

A pool runs plain functions somewhere with the resources they ask for:

    pool.submit(Task(key, fn, args, cpus, gpus, name))  start fn(*args)
    pool.wait(timeout) -> [(key, ok, value)]            finished tasks; ok=False: value is the exception
    pool.cancel(key)                                    stop a task (its key is not reported)
    pool.slots(cpus, gpus) -> int                       tasks of that size the cluster runs at once
    len(pool)                                           tasks in flight

A task with workers > 1 is one data-parallel job on `workers` groups of (cpus, gpus): the pool runs
fn(*args, trainer=T), T a drop-in for tiedattn.train.train(trial, stop=, progress=, on_eval=) that
trains on those workers (Ray: Ray Train, orchestrator/raybackend/ddp.py); slots() is then asked
for the whole group (cpus x workers, gpus x workers).

Failures are values, never raised. A backend for SLURM or a Kubernetes job queue implements these
four calls; drive() (the loop of sweeps, WSD branches and tuning alike) knows nothing else of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol


class SchedulingError(RuntimeError):
    """The work cannot be scheduled (resources no node has, an unreachable cluster); nothing was submitted."""


@dataclass(frozen=True)
class Task:
    key: Any  # the caller's handle, returned by wait()
    fn: Callable
    args: tuple
    cpus: float = 1.0
    gpus: float = 0.0
    name: str | None = None  # for the backend's dashboard
    workers: int = 1  # > 1: data-parallel workers of (cpus, gpus) each; fn gets trainer= (see above)


class Pool(Protocol):
    def submit(self, task: Task) -> None: ...

    def wait(self, timeout: float = 1.0) -> list[tuple[Any, bool, Any]]: ...

    def cancel(self, key: Any) -> None: ...

    def slots(self, cpus: float, gpus: float) -> int: ...

    def __len__(self) -> int: ...


def drive(
    pool: Pool,
    cap: int,
    take: Callable[[int], Iterable[Task]],
    done: Callable[[Any, bool, Any], None],
    more: Callable[[], bool],
    tick: Callable[[int], None] = lambda in_flight: None,
    timeout: float = 1.0,
) -> None:
    """Keep up to `cap` tasks in flight until no work is left: take(free slots) gives the next tasks
    (it may give fewer, or none yet), done(key, ok, value) records each outcome as it returns,
    more() says whether work remains that take() may still give; tick(in flight) runs every turn."""
    while more() or len(pool):
        free = cap - len(pool)
        for task in take(free) if free > 0 else ():
            pool.submit(task)
        for key, ok, value in pool.wait(timeout) if len(pool) else ():
            done(key, ok, value)
        tick(len(pool))
