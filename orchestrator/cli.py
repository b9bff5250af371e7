"""`tiedsweep run | submit | resume | status | compact | tune | tokenize`: the sweep's life cycle on the command line.

Exit codes: 0 every selected trial completed (or a dry run / status), 1 some trial failed, diverged or
was interrupted, 2 bad input (nothing was submitted).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys

from orchestrator.argcheck import at_least, unreachable
from orchestrator.plan import dry_run_lines
from orchestrator.pool import SchedulingError
from orchestrator.spec import SpecError, Sweep, load_spec, tuned_for_spec
from records.manifest import ManifestError, read_manifest_doc
from records.tuning import lr_path

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
    """RunOptions from the flags that share a field's name (--max-retries -> max_retries), and `extra`;
    a flag left at None keeps the field's default."""
    from orchestrator.runner import RunOptions

    flags = {f.name for f in dataclasses.fields(RunOptions)} & set(vars(args))
    return RunOptions(**{name: getattr(args, name) for name in flags if getattr(args, name) is not None}, **extra)


def _pool(args: argparse.Namespace, trials: list):
    """The Ray pool (orchestrator/raybackend), checked against what the trials ask; SchedulingError if not."""
    from orchestrator.raybackend.pool import RayPool

    pool = RayPool(args.address, args.num_cpus, getattr(args, "max_retries", 3))
    if errors := pool.check({(st.cpus, st.gpus) for st in trials}):
        raise SchedulingError("\n".join(errors))
    return pool


def _execute(sweep_name: str, trials: list, args: argparse.Namespace, opts, accepted=lambda: None) -> int:
    """Connect, check the trials against the cluster, then (only once both passed) call accepted()
    and run: a refused run writes nothing."""
    from orchestrator.runner import run_trials

    try:
        pool = _pool(args, trials)
        accepted()
        counts = run_trials(sweep_name, trials, args.results, opts, git_sha(), pool)
    except (SchedulingError, ManifestError) as e:
        return _fail(str(e))
    except OSError as e:  # a result that cannot be written even after retries (a full disk)
        why = " ".join(str(e).split())  # pyarrow's messages span lines
        return _fail(f"{why}; trials in flight were stopped (their checkpoints stand): free space, then "
                     f"tiedsweep resume {args.results}")  # fmt: skip
    print(
        f"{sweep_name}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        if any(counts.values())
        else f"{sweep_name}: nothing to run (every trial already has a result)"
    )
    return 0 if counts["failed"] + counts["diverged"] + counts["interrupted"] == 0 else 1


def run_cmd(args: argparse.Namespace) -> int:
    from orchestrator.manifest import write_manifest

    try:
        tuned = tuned_for_spec(args.spec, args.results)
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
        _print_lines(dry_run_lines(sweep, None, full=args.all or None))
        return 0
    # The sweep lives until exit: collections need not scan its trials again (~0.3 s of a 10^5-trial dry run).
    gc.freeze()
    if args.dry_run:
        _print_lines(dry_run_lines(sweep, _train_tokens(sweep), full=args.all or None))
        return 0
    try:  # results of another results version are refused, not overwritten
        read_manifest_doc(args.results, sweep.name)
    except FileNotFoundError:
        pass
    except ManifestError as e:
        return _fail(str(e))
    with open(args.spec) as f:
        spec_text = f.read()
    # The manifest is written once the cluster has accepted the run (reachable, resources that fit):
    # a refused run leaves the previous manifest, and with it `status` and `report`, as they were.
    code = _execute(sweep.name, sweep.trials, args, _run_options(args),
                    accepted=lambda: write_manifest(args.results, sweep, spec_text))  # fmt: skip
    args.ran_sweep = sweep.name  # `--report`: tiedsweep.cli writes it (the orchestrator never imports analysis)
    return code


def _print_lines(lines) -> None:
    """Print as they come: a dry run of 10^6 rows is never held in memory."""
    write = sys.stdout.write
    for line in lines:
        write(line + "\n")


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
        except ManifestError as e:
            return _fail(str(e))
        worst = max(worst, _execute(name, trials, args, _run_options(args, retry=frozenset(retry))))
    return worst


def submit_cmd(args: argparse.Namespace) -> int:
    """Send `tiedsweep run SPEC` to a cluster through the Ray Jobs API; the driver runs on the cluster."""
    from orchestrator.raybackend.jobs import submit_job

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
    if why := unreachable(args.address):
        return _fail(f"cannot reach the cluster: {why}")
    python = sys.executable if args.python is None else args.python
    entry = [python, "-m", "tiedsweep", "run", spec, "--results", args.results, "--address", "auto"]
    entry += ["--order", args.order, "--max-retries", str(args.max_retries)]
    entry += ["--max-concurrent", str(args.max_concurrent)] if args.max_concurrent else []
    env = {k: os.environ[k] for k in ("TIEDSWEEP_CACHE",) if k in os.environ}
    excludes = [".venv", ".git", "results", "*.pt", "__pycache__"]
    runtime_env = {"working_dir": root, "excludes": excludes, "env_vars": env}
    try:
        ok = submit_job(args.address, entry, runtime_env, args.job_id, {"sweep": sweep.name}, wait=not args.no_wait)
    except SchedulingError as e:
        return _fail(str(e))
    return 0 if ok else 1


def status_cmd(args: argparse.Namespace) -> int:
    from orchestrator.status import format_status, sweep_status

    try:
        report = sweep_status(args.results, args.sweep)
    except (FileNotFoundError, ManifestError) as e:
        return _fail(str(e))
    print(json.dumps(report) if args.json else format_status(report))
    return 0


def tune_cmd(args: argparse.Namespace) -> int:
    from orchestrator.tune import format_tuning, plan, stderr_log, tune, tuning_status

    try:
        sweep = load_spec(args.spec, untuned_ok=True)  # proxies set their own rates
    except SpecError as e:
        return _fail(str(e))
    if "://" in args.results and not args.results.startswith("file://"):
        return _fail(f"--results: tuning needs a filesystem path (shared by every node), got '{args.results}'")
    if args.dry_run:
        print(plan(sweep, args.results, args.n_trials))
        return 0
    try:
        pool = _pool(args, sweep.trials)  # proxies ask what the sweep's trials ask
    except SchedulingError as e:
        return _fail(str(e))
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
    print(f"rates: {lr_path(args.results, sweep.name)}")
    return 0 if all(entry["rule"] for entry in lrs.values()) else 1


def compact_cmd(args: argparse.Namespace) -> int:
    from records.store import compact

    if "://" not in args.results and not os.path.isdir(os.path.join(args.results, "trials")):
        return _fail(f"{args.results}: no results here (no trials/ folder)")
    counts = compact(args.results, args.sweep)
    for table, c in counts.items():
        print(f"{table}: {c['files_before']} -> {c['files_after']} files, {c['rows_after']} rows")
    return 0


def tokenize_cmd(args: argparse.Namespace) -> int:
    import time

    from orchestrator.raybackend.tokenize import tokenize
    from tiedattn.data import DataConfig, DataError

    cfg = DataConfig(
        corpus=args.corpus,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        val_fraction=args.val_fraction,
        split_seed=args.split_seed,
    )
    if why := unreachable(args.address):
        return _fail(f"cannot connect to Ray: {why}")
    t0 = time.time()
    try:
        m = tokenize(cfg, args.out, workers=args.workers, address=args.address)
    except DataError as e:
        return _fail(str(e))
    seconds = time.time() - t0
    total = m["tokens"]["train"] + m["tokens"]["val"]
    print(json.dumps({k: m[k] for k in ("fingerprint", "documents", "tokens", "dtype", "vocab_size")}))
    print(
        f"{len(m['shards'])} shards, {total:,} tokens in {seconds:.1f} s ({total / seconds:,.0f} tokens/s)",
        file=sys.stderr,
    )
    return 0


def _train_workers(trial, workers: int, progress=None):
    """`tiedsweep train --workers N`: the trial on N Ray Train workers (orchestrator/raybackend/ddp.py)."""
    from orchestrator.raybackend.ddp import train_ddp

    return train_ddp(trial, workers, progress=progress)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray cluster (auto, HOST:6379, ray://...); default: embedded")
    p.add_argument("--order", choices=["largest", "smallest"], default="largest", help="cost order of trials")
    p.add_argument("--max-concurrent", type=at_least(1), default=None, help="cap on trials in flight")
    p.add_argument("--max-retries", type=at_least(0), default=3, help="re-runs of a trial whose worker or node died")
    p.add_argument("--checkpoint-dir", default=None, help="default RESULTS/checkpoints (shared storage)")
    p.add_argument("--num-cpus", type=at_least(1), default=None, help="embedded Ray: CPUs to use (default all)")
    p.add_argument("--compact-over", type=at_least(1), default=None,
                   help="compact the sweep's results past this many files (default 256)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress display")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run every pending trial of a sweep spec on Ray")
    p.add_argument("spec")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results directory or URI (default ./results)")
    p.add_argument("--dry-run", action="store_true", help="print the trial table and total compute; run nothing")
    p.add_argument("--all", action="store_true", help="dry run: every trial's row, however many (default: a "
                   "summary past 200 trials)")  # fmt: skip
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=False, help="fit, plot, report when done")
    _common(p)
    p.set_defaults(func=run_cmd)

    p = sub.add_parser("resume", help="re-run failed and interrupted trials from their last checkpoint")
    p.add_argument("results")
    p.add_argument("--sweep", default=None, help="only this sweep (default: every sweep in RESULTS)")
    why = "retry diverged trials too, from scratch (to retry at another lr, change lr in the spec: a new trial)"
    p.add_argument("--include-diverged", action="store_true", help=why)
    _common(p)
    p.set_defaults(func=resume_cmd)

    p = sub.add_parser("submit", help="run a sweep on a Ray cluster through the Ray Jobs API")
    p.add_argument("spec")
    p.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
    p.add_argument("--results", required=True, help="shared path or URI every node reaches")
    p.add_argument("--order", choices=["largest", "smallest"], default="largest")
    p.add_argument("--max-concurrent", type=at_least(1), default=None)
    p.add_argument("--max-retries", type=at_least(0), default=3)
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
    p.add_argument("--num-cpus", type=at_least(1), default=None, help="embedded Ray: CPUs to use (default all)")
    p.add_argument("--n-trials", type=at_least(1), default=None, help="trials per study, earlier runs' included")
    p.add_argument("--dry-run", action="store_true", help="print the studies and their compute; run nothing")
    p.add_argument("--quiet", action="store_true", help="no line per finished proxy")
    p.set_defaults(func=tune_cmd)

    if "train" in sub.choices:  # tiedattn's `train --workers N` runs on Ray Train (tiedattn knows no Ray)
        sub.choices["train"].set_defaults(run_workers=_train_workers)
    p = sub.add_parser("tokenize", help="tokenize a corpus into shards on Ray Data, for corpus = 'tokenized:DIR'")
    p.add_argument("corpus", help="folder | glob | .txt/.jsonl/.parquet file(s), as [data] corpus; or 'stdlib'")
    p.add_argument("--out", required=True, help="output folder: shards/, tokenizer.json, manifest.json")
    p.add_argument("--tokenizer", default="bpe", help="'bpe' (train one on a sample) or a tokenizer.json path")
    p.add_argument("--vocab-size", type=int, default=4096, help="for --tokenizer bpe")
    p.add_argument("--val-fraction", type=float, default=0.02)
    p.add_argument("--split-seed", type=at_least(0), default=0)
    p.add_argument("--workers", type=at_least(1), default=2, help="tokenizer actors (one CPU each)")
    p.add_argument("--address", default=None, help="Ray cluster (default: a local Ray)")
    p.set_defaults(func=tokenize_cmd)

    p = sub.add_parser("compact", help="merge the small Parquet files of a results directory")
    p.add_argument("results")
    p.add_argument("--sweep", default=None)
    p.set_defaults(func=compact_cmd)
