"""`tiedsweep submit`: send a command to a Ray cluster through the Ray Jobs API and follow it."""

from __future__ import annotations

import shlex
import sys
import time

from ray.job_submission import JobStatus, JobSubmissionClient

from orchestrator.pool import SchedulingError

_FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)


def submit_job(address: str, entrypoint: list[str], runtime_env: dict, job_id: str | None, metadata: dict,
               wait: bool) -> bool:  # fmt: skip
    """Submit `entrypoint` with `runtime_env` (its working_dir is uploaded); with wait, print the job's
    logs once it ends. True when the job was submitted (and, with wait, succeeded). SchedulingError
    when the cluster cannot take it."""
    deadline = time.time() + 120
    while True:
        try:
            client = JobSubmissionClient(address)
            job = client.submit_job(entrypoint=shlex.join(entrypoint), runtime_env=runtime_env,
                                    submission_id=job_id, metadata=metadata)  # fmt: skip
            break
        except Exception as e:
            # A head node that has just started answers before its job agent is up: wait for it.
            if "No available agent" in str(e) and time.time() < deadline:
                time.sleep(2)
                continue
            hint = " (token auth: see README)" if "token" in str(e).lower() or "auth" in str(e).lower() else ""
            raise SchedulingError(f"--address {address}: cannot submit: {e}{hint}") from e
    print(f"submitted job {job} ({metadata.get('sweep', '?')}) to {address}")
    if not wait:
        return True
    while (status := client.get_job_status(job)) not in _FINAL:
        time.sleep(2)
    sys.stdout.write(client.get_job_logs(job))
    print(f"job {job}: {status}")
    return status == JobStatus.SUCCEEDED
