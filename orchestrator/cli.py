"""`tiedsweep run | submit | resume | status | compact | tune`: the sweep's life cycle on the command line.

Exit codes: 0 every selected trial completed (or a dry run / status), 1 some trial failed, diverged or
was interrupted, 2 bad input (nothing was submitted).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from orchestrator.plan import dry_run_table
from orchestrator.spec import SpecError, Sweep, load_spec

DEFAULT_RESULTS = "results"


def _fail(message: str) -> int:
    for line in message.splitlines() or [message]:
        print(f"tiedsweep: error: {line}", file=sys.stderr)
    return 2


def git_sha() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _run_options(args: argparse.Namespace, **extra):
    from orchestrator.runner import RunOptions

    return RunOptions(
        address=args.address,
        order=args.order,
        max_concurrent=args.max_concurrent,
        max_retries=args.max_retries,
        checkpoint_dir=args.checkpoint_dir,
        num_cpus=args.num_cpus,
        quiet=args.quiet,
        **extra,
    )


def _execute(sweep_name: str, trials: list, results: str, opts) -> int:
    from orchestrator.runner import SchedulingError, run_trials

    try:
        counts = run_trials(sweep_name, trials, results, opts, git_sha())
    except SchedulingError as e:
        return _fail(str(e))
    print(
        f"{sweep_name}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        if any(counts.values())
        else f"{sweep_name}: nothing to run (every trial already has a result)"
    )
    return 0 if counts["failed"] + counts["diverged"] + counts["interrupted"] == 0 else 1


def run_cmd(args: argparse.Namespace) -> int:
    from orchestrator.manifest import write_manifest
    from orchestrator.tune import tuned_for_spec

    tuned = tuned_for_spec(args.spec, args.results)
    try:
        sweep = load_spec(args.spec, tuned=tuned)
    except SpecError as e:
        elsewhere = all(": data.corpus: " in line or '"tuned" needs tuning results' in line for line in e.errors)
        if not (args.dry_run and elsewhere):
            return _fail(str(e))
        # Planning a cluster sweep on a laptop: its corpus (and tuning) live on the cluster. Show the plan anyway.
        sweep = load_spec(args.spec, tuned=tuned, fingerprint=False, untuned_ok=True)
        print("\n".join(f"note: {line}" for line in e.errors))
        print("note: the plan below is provisional: ids hash the data settings, epochs are unknown, and an")
        print('      untuned lr = "tuned" stands for the default rate\n')
        print(dry_run_table(sweep, None))
        return 0
    if args.dry_run:
        print(dry_run_table(sweep, _train_tokens(sweep)))
        return 0
    with open(args.spec) as f:
        write_manifest(args.results, sweep, f.read())
    code = _execute(sweep.name, sweep.trials, args.results, _run_options(args))
    if code != 2 and args.report:
        from analysis import AnalysisError
        from analysis.report import write_report

        try:
            out = write_report(args.results, sweep=sweep.name)
            print(f"report: {out.get('html', out)}")
        except AnalysisError as e:  # e.g. every trial failed: the run's exit code stands
            print(f"tiedsweep: no report: {e}", file=sys.stderr)
    return code


def _train_tokens(sweep: Sweep) -> int | None:
    """The corpus's training tokens for the dry run's epochs column. Tokenizing is only worth it for
    small corpora (the stdlib, or a capped one); a cluster's FineWeb would take hours: "?" then."""
    from tiedattn.data import DataError, prepare_data

    if sweep.data.corpus != "stdlib" and (sweep.data.max_bytes or 1 << 62) > 256 << 20:
        return None
    try:
        return int(prepare_data(sweep.data).train.size)
    except DataError:
        return None


def resume_cmd(args: argparse.Namespace) -> int:
    from orchestrator.manifest import read_manifest, sweeps_in

    names = [args.sweep] if args.sweep else sweeps_in(args.results)
    if not names:
        return _fail(f"{args.results}: no sweep manifest found (run a sweep there first)")
    retry = {"failed", "interrupted"} | ({"diverged"} if args.include_diverged else set())
    worst = 0
    for name in names:
        try:
            _, trials = read_manifest(args.results, name)
        except FileNotFoundError:
            return _fail(f"{args.results}: no manifest for sweep '{name}'")
        worst = max(worst, _execute(name, trials, args.results, _run_options(args, retry=frozenset(retry))))
    return worst


def submit_cmd(args: argparse.Namespace) -> int:
    """Send `tiedsweep run SPEC` to a cluster through the Ray Jobs API; the driver runs on the cluster."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from orchestrator.tune import tuned_for_spec

    try:  # lr = "tuned" needs lr.json where the job runs (--results); `run` there checks it
        sweep = load_spec(args.spec, tuned=tuned_for_spec(args.spec, args.results), untuned_ok=True)
    except SpecError as e:
        return _fail(str(e))
    if "://" not in args.results and not os.path.isabs(args.results):
        return _fail(
            f"--results: '{args.results}' must be an absolute shared path or a URI (s3://, gs://) "
            "that every node of the cluster reaches"
        )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = os.path.relpath(os.path.abspath(args.spec), root)
    if spec.startswith(".."):
        return _fail(f"{args.spec}: the spec must live inside {root} (it is uploaded as the job's working_dir)")
    entry = [
        sys.executable if args.python is None else args.python,
        "-m",
        "tiedsweep",
        "run",
        spec,
        "--results",
        args.results,
        "--address",
        "auto",
        "--order",
        args.order,
        "--max-retries",
        str(args.max_retries),
    ] + (["--max-concurrent", str(args.max_concurrent)] if args.max_concurrent else [])
    env = {k: os.environ[k] for k in ("TIEDSWEEP_CACHE",) if k in os.environ}
    runtime_env = {
        "working_dir": root,
        "excludes": [".venv", ".git", "results", "*.pt", "__pycache__"],
        "env_vars": env,
    }
    deadline = time.time() + 120
    while True:
        try:
            client = JobSubmissionClient(args.address)
            job = client.submit_job(
                entrypoint=shlex.join(entry),  # Ray runs it in a shell: quote every argument
                runtime_env=runtime_env,
                submission_id=args.job_id,
                metadata={"sweep": sweep.name},
            )
            break
        except Exception as e:
            # A head node that has just started answers before its job agent is up: wait for it.
            if "No available agent" in str(e) and time.time() < deadline:
                time.sleep(2)
                continue
            hint = " (token auth: see README)" if "token" in str(e).lower() or "auth" in str(e).lower() else ""
            return _fail(f"--address {args.address}: cannot submit: {e}{hint}")
    print(f"submitted job {job} ({sweep.name}, {len(sweep.trials)} trials) to {args.address}")
    if args.no_wait:
        return 0
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        time.sleep(2)
    sys.stdout.write(client.get_job_logs(job))
    print(f"job {job}: {status}")
    return 0 if status == JobStatus.SUCCEEDED else 1


def status_cmd(args: argparse.Namespace) -> int:
    from orchestrator.status import format_status, sweep_status

    try:
        report = sweep_status(args.results, args.sweep)
    except FileNotFoundError as e:
        return _fail(str(e))
    print(json.dumps(report) if args.json else format_status(report))
    return 0


def tune_cmd(args: argparse.Namespace) -> int:
    from orchestrator.tune import LR_FILE, format_tuning, plan, stderr_log, tune, tuning_dir, tuning_status

    try:
        sweep = load_spec(args.spec, untuned_ok=True)  # proxies set their own rates
    except SpecError as e:
        return _fail(str(e))
    if "://" in args.results and not args.results.startswith("file://"):
        return _fail(f"--results: tuning needs a filesystem path (shared by every node), got '{args.results}'")
    if args.n_trials is not None and args.n_trials < 1:
        return _fail(f"--n-trials: must be >= 1, got {args.n_trials}")
    if args.dry_run:
        print(plan(sweep, args.results, args.n_trials))
        return 0
    from orchestrator.runner import SchedulingError, TaskPool, check_resources

    try:
        pool = TaskPool(args.address, args.num_cpus)
    except SchedulingError as e:
        return _fail(str(e))
    if errors := check_resources(sweep.trials):  # proxies ask what the sweep's trials ask
        return _fail("\n".join(errors))
    try:
        lrs = tune(sweep, args.results, pool, n_trials=args.n_trials, log=None if args.quiet else stderr_log)
    except KeyboardInterrupt:
        print("tiedsweep: tune interrupted: run it again to resume (trials in flight are retried)", file=sys.stderr)
        return 1
    print(f"{sweep.name}: tuning")
    print("\n".join(format_tuning(tuning_status(args.results, sweep.name) or [])))
    for variant, entry in lrs.items():
        rule = entry["rule"]["formula"] if entry["rule"] else "none (no proxy completed)"
        print(f"  rule {variant}: {rule} (N = {sweep.trials[0].n_basis} params, {len(entry['sizes'])} sizes)")
    print(f"rates: {os.path.join(tuning_dir(args.results, sweep.name), LR_FILE)}")
    return 0 if all(entry["rule"] for entry in lrs.values()) else 1


def compact_cmd(args: argparse.Namespace) -> int:
    from orchestrator.results import compact

    if "://" not in args.results and not os.path.isdir(os.path.join(args.results, "trials")):
        return _fail(f"{args.results}: no results here (no trials/ folder)")
    counts = compact(args.results, args.sweep)
    for table, c in counts.items():
        print(f"{table}: {c['files_before']} -> {c['files_after']} files, {c['rows_after']} rows")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray cluster (auto, HOST:6379, ray://...); default: embedded")
    p.add_argument("--order", choices=["largest", "smallest"], default="largest", help="cost order of trials")
    p.add_argument("--max-concurrent", type=int, default=None, help="cap on trials in flight")
    p.add_argument("--max-retries", type=int, default=3, help="re-runs of a trial whose worker or node died")
    p.add_argument("--checkpoint-dir", default=None, help="default RESULTS/checkpoints (shared storage)")
    p.add_argument("--num-cpus", type=int, default=None, help="embedded Ray: CPUs to use (default all)")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run every pending trial of a sweep spec on Ray")
    p.add_argument("spec")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results directory or URI (default ./results)")
    p.add_argument("--dry-run", action="store_true", help="print the trial table and total compute; run nothing")
    p.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fit, plot and write the report when the sweep is done",
    )
    _common(p)
    p.set_defaults(func=run_cmd)

    p = sub.add_parser("resume", help="re-run failed and interrupted trials from their last checkpoint")
    p.add_argument("results")
    p.add_argument("--sweep", default=None, help="only this sweep (default: every sweep in RESULTS)")
    p.add_argument(
        "--include-diverged",
        action="store_true",
        help="retry diverged trials too, from scratch (to retry at another lr, change lr in the spec: a new trial)",
    )
    _common(p)
    p.set_defaults(func=resume_cmd)

    p = sub.add_parser("submit", help="run a sweep on a Ray cluster through the Ray Jobs API")
    p.add_argument("spec")
    p.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
    p.add_argument("--results", required=True, help="shared path or URI every node reaches")
    p.add_argument("--order", choices=["largest", "smallest"], default="largest")
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--max-retries", type=int, default=3)
    p.add_argument("--job-id", default=None, help="submission id (default: Ray picks one)")
    p.add_argument("--python", default=None, help="python on the cluster (default: this one's path)")
    p.add_argument("--no-wait", action="store_true", help="return once submitted")
    p.set_defaults(func=submit_cmd)

    p = sub.add_parser("status", help="counts by status per variant and size, tokens done/left, ETA")
    p.add_argument("results")
    p.add_argument("--sweep", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=status_cmd)

    p = sub.add_parser("tune", help="tune each variant's peak learning rate on short proxy runs (Optuna on Ray)")
    p.add_argument("spec")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results directory (default ./results)")
    p.add_argument("--address", default=None, help="Ray cluster (auto, HOST:6379, ray://...); default: embedded")
    p.add_argument("--num-cpus", type=int, default=None, help="embedded Ray: CPUs to use (default all)")
    p.add_argument("--n-trials", type=int, default=None, help="trials per study, earlier runs' included")
    p.add_argument("--dry-run", action="store_true", help="print the studies and their compute; run nothing")
    p.add_argument("--quiet", action="store_true", help="no line per finished proxy")
    p.set_defaults(func=tune_cmd)

    p = sub.add_parser("compact", help="merge the small Parquet files of a results directory")
    p.add_argument("results")
    p.add_argument("--sweep", default=None)
    p.set_defaults(func=compact_cmd)
