"""The Ray implementation of orchestrator.pool.Pool (zoology's launch.py: ray.remote + ray.wait).

One remote task per Task, with its cpus/gpus as Ray resources, so a node packs as many small
trials as it has cores (two 1-thread trials beat one 2-thread trial on 2 cores here). A task whose
worker or node dies is re-run by Ray (max_retries); a trial resumes from its checkpoint then.

Ray 2.60 enables token authentication by default. The embedded cluster handles it itself. For
`--address`, the driver must present the cluster's token: Ray reads RAY_AUTH_TOKEN, then
RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token (`ray get-auth-token` prints or makes it); a cluster
started with RAY_AUTH_MODE=disabled needs RAY_AUTH_MODE=disabled on the driver too.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray._private import ray_constants

from orchestrator.argcheck import unreachable
from orchestrator.pool import SchedulingError, Task

CONNECT_TIMEOUT_S = 10.0  # one TCP attempt at --address before ray.init, which retries for minutes


def connect(address: str | None, num_cpus: int | None = None) -> None:
    if why := unreachable(address, CONNECT_TIMEOUT_S):  # seconds, where ray.init would retry for minutes
        raise SchedulingError(f"cannot connect to Ray: {why}")
    if ray.is_initialized():
        return
    try:
        if address is None:  # workers of the embedded Ray share this machine's token cache
            env = {k: os.environ[k] for k in ("TIEDSWEEP_CACHE",) if k in os.environ}
            runtime_env = {"env_vars": env} if env else None
            # Loopback only (README: security). Ray binds its servers to 127.0.0.1 alone only when the
            # node IP is 127.0.0.1, which Linux Ray replaces by the host's address unless its
            # single-machine switch is set: here (read at import) and in the processes it starts.
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
            ray_constants.ENABLE_RAY_CLUSTER = False
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


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


@ray.remote
def _call(fn, *args):
    return fn(*args)


@ray.remote
def _call_ddp(fn, workers: int, cpus: float, gpus: float, *args):
    """An N-worker task: this task holds no resources, Ray Train's workers hold them (ddp.py)."""
    from orchestrator.raybackend.ddp import trainer

    return fn(*args, trainer=trainer(workers, cpus=cpus, gpus=gpus))


class RayPool:
    """Plain functions as Ray tasks with resources; see orchestrator.pool for the protocol."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3) -> None:
        connect(address, num_cpus)
        self.max_retries = max_retries
        self.in_flight: dict = {}  # ObjectRef -> key

    def submit(self, task: Task) -> None:
        opts = {"max_retries": self.max_retries, "retry_exceptions": False} | ({"name": task.name} if task.name else {})
        if task.workers > 1:  # Ray Train's workers hold the resources, each (cpus, gpus)
            opts |= {"num_cpus": 0, "num_gpus": 0}
            ref = _call_ddp.options(**opts).remote(task.fn, task.workers, task.cpus, task.gpus, *task.args)
        else:
            opts |= {"num_cpus": task.cpus, "num_gpus": task.gpus}
            ref = _call.options(**opts).remote(task.fn, *task.args)
        self.in_flight[ref] = task.key

    def wait(self, timeout: float = 1.0) -> list[tuple[Any, bool, Any]]:
        if not self.in_flight:
            return []
        ready, _ = ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=timeout)
        out = []
        for ref in ready:
            key = self.in_flight.pop(ref)
            try:
                out.append((key, True, ray.get(ref)))
            except Exception as e:  # the worker died more than max_retries times, or the task could not run
                out.append((key, False, e))
        return out

    def cancel(self, key: Any) -> None:
        for ref, k in list(self.in_flight.items()):
            if k == key:
                del self.in_flight[ref]
                ray.cancel(ref, force=True)

    def slots(self, cpus: float, gpus: float) -> int:
        """How many tasks of this size the connected cluster runs at once."""
        total = ray.cluster_resources()
        n = int(total.get("CPU", 0) // cpus) if cpus else 1 << 30
        return max(1, min(n, int(total.get("GPU", 0) // gpus) if gpus else n))

    def check(self, requests: set[tuple[float, float]]) -> list[str]:
        """One line per distinct (cpus, gpus) request that no alive node can satisfy."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        biggest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        errors = []
        for cpus, gpus in sorted(requests):
            if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
                errors.append(
                    f"resources: a trial needs cpus={cpus:g}, gpus={gpus:g} but no node has that "
                    f"(largest: CPU {biggest.get('CPU', 0):g}, GPU {biggest.get('GPU', 0):g})"
                )
        return errors

    def __len__(self) -> int:
        return len(self.in_flight)
