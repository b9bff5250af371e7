"""`tiedsweep tune`: the peak learning rate of every variant, tuned on short proxy runs.

One learning rate for every variant (as in the paper) favours the variant it suits; this finds each
variant's own. For each (variant, shape) of the spec's [tune] section an Optuna study (TPE sampler,
median pruner) picks log-uniform rates (and optionally warmup fractions) for proxy runs of
tokens_per_param x N tokens, N the variant's own parameters (the sweep's n_basis). The driver asks
and tells; each proxy runs through the trials' own execute() as a task of the sweep's pool
(orchestrator.pool.drive, the loop sweeps use too), several at a time across studies, and reports
its validation losses straight into the study, so the pruner can stop it between evals.

Everything lives in DIR/tuning/<sweep>/: optuna.journal (Optuna's journal storage: an append-only
log that several processes share through a file lock, NFS included), runs/ (proxy checkpoints while
they run) and lr.json (records/tuning.py), the best rate per (variant, shape id) and a rule lr(N) per variant. A rerun
resumes: it asks each study only for its missing trials, and a trial that a killed driver left
running is marked failed and asked again with the same parameters. One tuning driver per results
directory at a time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

from orchestrator.execute import Paths, execute
from orchestrator.expand import budget_tokens, model_n
from orchestrator.pool import Pool, Task, drive
from orchestrator.runner import interrupt_signals
from orchestrator.sweep import Sweep, SweepTrial, TuneConfig
from records.ids import data_key, trial_id
from records.layout import is_local, log_path, tuning_dir
from records.tuning import LR_FILE, journal_path
from tiedattn.accounting import training_flops
from tiedattn.config import total_steps

WARMUP_RANGE = (0.01, 0.2)  # warmup_frac, when [tune] warmup = true
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def fit_rule(points: list[tuple[int, float]], bounds: tuple[float, float] | None = None) -> dict:
    """lr(N) = exp(log_c) * N^p, least squares of log lr on log N over (N, best lr) points.

    With a single N (one tuned size) the slope cannot be fitted: p = 0, a constant rule at the
    geometric mean of the rates. `bounds` (the searched [lr_min, lr_max]) is kept with the rule:
    a rule fitted on two small sizes and extrapolated to 30x their N must not leave the range
    that was searched.
    """
    log_n = np.log([n for n, _ in points])
    log_lr = np.log([lr for _, lr in points])
    if len(set(log_n.tolist())) < 2:
        p, log_c = 0.0, float(log_lr.mean())
    else:
        p, log_c = (float(x) for x in np.polyfit(log_n, log_lr, 1))
    note = "" if p or len(set(log_n.tolist())) > 1 else " (one size: constant)"
    rule = {"log_c": log_c, "p": p, "formula": f"lr = exp(log_c) * N^p = {math.exp(log_c):.4g} * N^{p:.3f}{note}"}
    if bounds is not None:
        rule |= {
            "lr_min": bounds[0],
            "lr_max": bounds[1],
            "n_range": [int(min(n for n, _ in points)), int(max(n for n, _ in points))],
        }
        rule["formula"] += f", clipped to [{bounds[0]:.3g}, {bounds[1]:.3g}]"
    return rule


def repair_journal(path: str) -> int:
    """Drop torn records from an Optuna journal; return how many bytes were dropped (0: it was whole).

    A writer killed mid-append (or a full disk) leaves a last line without its newline; Optuna skips
    it on read, but the next append is glued onto it, and from then on every read of the study fails
    ("Invalid log format"). Under the journal's own lock, each line must end in a newline and parse
    as JSON; a glued line keeps its last complete record, a torn one is dropped, with a warning."""
    lock = JournalFileSymlinkLock(path)
    lock.acquire()  # a lock left by a killed writer is forced open after Optuna's 30 s grace period
    try:
        with open(path, "rb") as f:
            raw = f.read()
        kept = [_record(line) for line in raw.splitlines(keepends=True)]
        dropped = len(raw) - sum(map(len, kept))
        if dropped:
            _write_bytes(path, b"".join(kept))
            stderr_log(f"warning: {path}: dropped {dropped} bytes of torn records (a writer killed mid-write)")
        return dropped
    finally:
        lock.release()


def _record(line: bytes) -> bytes:
    """The complete record in a journal line: the line, the record glued after a torn one, or b""."""
    if line.endswith(b"\n"):
        for candidate in (line, line[max(0, line.rfind(b'{"op_code"')) :]):
            try:
                json.loads(candidate)
                return candidate
            except ValueError:
                pass
    return b""


def _write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _storage(path: str) -> JournalStorage:
    if os.path.exists(path):
        repair_journal(path)
    return JournalStorage(JournalFileBackend(path))


def _pruner(warmup_steps: int) -> optuna.pruners.BasePruner:
    # The first 3 proxies of a study always finish; evals before a fifth of the run never prune,
    # since early losses rank rates badly (a high rate leads at 1% of the run and may still lose).
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup_steps)


def _space(cfg: TuneConfig) -> dict[str, FloatDistribution]:
    space = {"lr": FloatDistribution(cfg.lr_min, cfg.lr_max, log=True)}
    return space | ({"warmup_frac": FloatDistribution(*WARMUP_RANGE)} if cfg.warmup else {})


def study_name(sweep: str, variant: str, label: str) -> str:
    return f"{sweep}-{variant}-{label}"


def proxy_trial(sweep: Sweep, variant: str, shape_id: str, tokens_per_param: float) -> tuple[SweepTrial, int]:
    """(the proxy run of (variant, shape), N): the sweep's own trial of that shape with the smallest
    budget, retrained on tokens_per_param x N tokens (whole steps); lr and workdir are set per run."""
    cells = [st for st in sweep.trials if st.role != "trunk" and st.trial.model.variant == variant
             and st.shape_id == shape_id]  # fmt: skip
    st = min(cells, key=lambda s: s.trial.train.tokens)  # the first in grid order among equals
    m, t = st.trial.model, st.trial.train
    n = model_n(m, st.n_basis)
    T = t.seq_len or m.seq_len
    tokens = budget_tokens(tokens_per_param, n, t.batch_size * T)
    train_cfg = dataclasses.replace(t, tokens=tokens, save_at_steps=(), threads=max(1, int(st.cpus)))
    budget = {**st.budget, "tokens_per_param": tokens_per_param}
    data = data_key(st.trial.data, st.corpus_fingerprint)
    proxy = dataclasses.replace(
        st,
        trial_id=trial_id(m, train_cfg, data, budget, shape_id=shape_id, role="proxy", task=st.trial.task),
        trial=dataclasses.replace(st.trial, train=train_cfg, init_from=None),
        tokens_per_param=tokens_per_param,
        flops=training_flops(m, T, tokens),
        role="trial",
        depends_on=None,
        branch_step=None,
    )
    return proxy, n


def run_proxy(st: SweepTrial, paths: Paths, storage_path: str, name: str, trial_id: int, warmup_steps: int) -> dict:
    """Train one proxy through the trials' own execute() (corpus check, log, failure as a row),
    reporting each eval's validation loss to its Optuna trial and stopping when the pruner says so.
    Returns {"status": completed | pruned | diverged | failed, "value": the final val loss, or the
    last one reported; "steps", "wall_s", "error"}."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=name,
        storage=_storage(storage_path),
        sampler=optuna.samplers.RandomSampler(),
        pruner=_pruner(warmup_steps),
    )
    trial = optuna.trial.Trial(study, trial_id)  # the driver's trial, reached through the shared journal
    seen = {"pruned": False, "last": math.nan}

    def on_eval(row: dict) -> None:
        trial.report(row["val_loss"], row["step"])  # step: the training step, the same evals in every proxy
        seen["last"] = row["val_loss"]
        seen["pruned"] = trial.should_prune()

    row, _ = execute(st, 0, paths, stop=lambda step: seen["pruned"], on_eval=on_eval)
    shutil.rmtree(paths.workdir, ignore_errors=True)  # a finished proxy is never resumed: only disk space
    status = "pruned" if row["status"] == "interrupted" else row["status"]
    value = row["final_val_loss"] if status == "completed" else seen["last"]
    return {"status": status, "value": value, "steps": row.get("steps"), "wall_s": row.get("wall_s"),
            "error": row.get("error")}  # fmt: skip


@dataclass
class _Study:
    name: str
    proxy: SweepTrial
    warmup_steps: int
    study: optuna.Study
    left: int  # trials still to ask in this run
    running: int = 0


def _open(store: JournalStorage, sweep: Sweep, variant: str, shape_id: str, cfg: TuneConfig) -> _Study:
    proxy, _ = proxy_trial(sweep, variant, shape_id, cfg.tokens_per_param)
    m, t = proxy.trial.model, proxy.trial.train
    warmup_steps = total_steps(t, t.seq_len or m.seq_len) // 5
    name = study_name(sweep.name, variant, shape_id)
    study = optuna.create_study(
        study_name=name, storage=store, direction="minimize", pruner=_pruner(warmup_steps), load_if_exists=True
    )
    for lost in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # its driver died mid-run
        study.tell(lost.number, state=TrialState.FAIL)
        study.enqueue_trial(lost.params, user_attrs={"retry_of": lost.number})
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    # Seeded by the trials so far, so a resumed study does not replay the first run's random startup
    # draws; constant_liar counts proxies in flight as bad guesses, so parallel asks spread out.
    study.sampler = optuna.samplers.TPESampler(
        seed=cfg.seed + len(study.trials), n_startup_trials=max(3, cfg.n_trials // 3), constant_liar=True
    )
    study.set_user_attr("n_trials", cfg.n_trials)  # for `tiedsweep status`
    return _Study(name, proxy, warmup_steps, study, max(0, cfg.n_trials - finished))


def _tell(s: _Study, trial: optuna.Trial, ok: bool, out) -> str:
    """Record a proxy's outcome in its study; returns the outcome's name."""
    if not ok or out["status"] == "failed":  # an exception in the proxy, or its worker died
        error = out["error"] if ok else f"{type(out).__name__}: {out}"
        trial.set_user_attr("error", (error or "")[:2000])
        s.study.tell(trial, state=TrialState.FAIL)
        return "failed"
    if out["status"] == "completed" and math.isfinite(out["value"]):
        s.study.tell(trial, out["value"])
        return "completed"
    if out["status"] in ("pruned", "diverged"):
        # A diverged rate is told PRUNED, not FAIL: TPE ranks pruned trials below every completed
        # one, so the diverging region counts as bad; FAIL trials are ignored and it would be tried again.
        trial.set_user_attr("outcome", out["status"])
        s.study.tell(trial, state=TrialState.PRUNED)
        return out["status"]
    trial.set_user_attr("error", f"proxy ended {out['status']}")
    s.study.tell(trial, state=TrialState.FAIL)
    return "failed"


def variants(sweep: Sweep) -> list[str]:
    return list(dict.fromkeys(st.trial.model.variant for st in sweep.trials))


def tune(
    sweep: Sweep,
    results_dir: str,
    pool: Pool,
    *,
    n_trials: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run (or resume) every study of the sweep's [tune] section on `pool`; write and return lr.json.

    n_trials overrides [tune] n_trials (the total per study, trials of earlier runs included).
    """
    cfg = sweep.tune if n_trials is None else dataclasses.replace(sweep.tune, n_trials=n_trials)
    folder = tuning_dir(results_dir, sweep.name)
    os.makedirs(folder, exist_ok=True)
    path = journal_path(results_dir, sweep.name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is ours to print
    store = _storage(path)
    studies = [_open(store, sweep, v, shape, cfg) for v in variants(sweep) for shape in cfg.sizes]
    shutil.rmtree(os.path.join(folder, "runs"), ignore_errors=True)  # checkpoints of proxies a killed driver left
    space = _space(cfg)
    asked: dict[tuple[str, int], tuple[_Study, optuna.Trial]] = {}

    def take(free: int) -> list[Task]:
        tasks = []
        while len(tasks) < free and (todo := [s for s in studies if s.left]):
            s = min(todo, key=lambda s: (s.running, -s.left))  # spread the slots over the studies
            trial = s.study.ask(space)
            train_cfg = dataclasses.replace(s.proxy.trial.train, lr=trial.params["lr"])
            if "warmup_frac" in trial.params:
                train_cfg = dataclasses.replace(train_cfg, warmup_frac=trial.params["warmup_frac"], warmup_tokens=None)
            proxy = dataclasses.replace(s.proxy, trial=dataclasses.replace(s.proxy.trial, train=train_cfg))
            run = f"{s.name}-{trial.number}"
            paths = Paths(os.path.join(folder, "runs", s.name, str(trial.number)),
                          log_path(results_dir, sweep.name, run), None)  # fmt: skip
            # trial._trial_id: Optuna has no public trial id; the worker needs it to report into this trial.
            args = (proxy, paths, path, s.name, trial._trial_id, s.warmup_steps)
            tasks.append(Task((s.name, trial.number), run_proxy, args, s.proxy.cpus, s.proxy.gpus, name=run))
            asked[(s.name, trial.number)] = (s, trial)
            s.left, s.running = s.left - 1, s.running + 1
        return tasks

    def done(key: tuple[str, int], ok: bool, out) -> None:
        s, trial = asked.pop(key)
        s.running -= 1
        outcome = _tell(s, trial, ok, out)
        if log is not None:
            value = f" (val loss {out['value']:.4f})" if ok and math.isfinite(out["value"]) else ""
            why = f": {out if not ok else out['error']}" if outcome == "failed" else ""
            log(f"{s.name} #{trial.number}: lr {trial.params['lr']:.4g} -> {outcome}{value}{why}")

    cap = cfg.parallel or pool.slots(sweep.cpus, sweep.gpus)
    with interrupt_signals():  # Ctrl-C works from a background job too (tune_cmd reports it)
        drive(pool, cap, take, done, more=lambda: any(s.left for s in studies))
    lrs = best_rates(sweep, store, cfg)
    _write_json(os.path.join(folder, LR_FILE), lrs)
    return lrs


def best_rates(sweep: Sweep, store: JournalStorage, cfg: TuneConfig) -> dict:
    """lr.json's content: {variant: {"sizes": {label: {N, lr, best_val_loss, n_trials[, warmup_frac]}},
    "rule": fit_rule over those sizes, or None if no proxy of the variant completed}}."""
    out = {}
    for variant in variants(sweep):
        sizes = {}
        for label in cfg.sizes:
            study = optuna.load_study(study_name=study_name(sweep.name, variant, label), storage=store)
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not done:
                continue
            best = min(done, key=lambda t: t.value)
            n = proxy_trial(sweep, variant, label, cfg.tokens_per_param)[1]
            sizes[label] = {
                "N": n,
                "lr": best.params["lr"],
                "best_val_loss": best.value,
                "n_trials": len(study.get_trials(deepcopy=False, states=FINISHED)),
            } | ({"warmup_frac": best.params["warmup_frac"]} if "warmup_frac" in best.params else {})
        points = [(e["N"], e["lr"]) for e in sizes.values()]
        rule = fit_rule(points, (cfg.lr_min, cfg.lr_max)) if sizes else None
        out[variant] = {"sizes": sizes, "rule": rule}
    return out


def plan(sweep: Sweep, results_dir: str, n_trials: int | None = None) -> str:
    """`tune --dry-run`: a line per study (N, proxy tokens and FLOPs, trials finished and to run)."""
    cfg = sweep.tune if n_trials is None else dataclasses.replace(sweep.tune, n_trials=n_trials)
    done = {s["study"]: s["finished"] for s in tuning_status(results_dir, sweep.name) or []}
    lines, flops = [], 0.0
    for variant in variants(sweep):
        for label in cfg.sizes:
            proxy, n = proxy_trial(sweep, variant, label, cfg.tokens_per_param)
            name = study_name(sweep.name, variant, label)
            todo = max(0, cfg.n_trials - done.get(name, 0))
            flops += todo * proxy.flops
            lines.append(
                f"  {name}: N {n:,}, {proxy.trial.train.tokens:,} tokens per proxy ({proxy.flops:.2e} FLOPs); "
                f"{done.get(name, 0)} trials done, {todo} to run"
            )
    space = f"lr log-uniform in [{cfg.lr_min:g}, {cfg.lr_max:g}]" + (
        f", warmup_frac in [{WARMUP_RANGE[0]:g}, {WARMUP_RANGE[1]:g}]" if cfg.warmup else ""
    )
    head = f"tune {sweep.name}: {len(lines)} studies of {cfg.n_trials} trials; {space}; TPE seed {cfg.seed}"
    tail = f"at most {flops:.3g} FLOPs (pruned proxies stop early): ~{flops / sweep.flops_per_s / 3600:.2g} trial-hours"
    return "\n".join([head, *lines, tail, f"storage: {journal_path(results_dir, sweep.name)}"])


def _write_json(path: str, doc: dict) -> None:
    _write_bytes(path, json.dumps(doc, indent=2).encode())


def tuning_status(results_dir: str, sweep: str) -> list[dict] | None:
    """Per study of the sweep: {"study", "finished", "running", "failed", "total", "best_lr",
    "best_val_loss"}; None when the sweep was never tuned in results_dir."""
    if not is_local(results_dir):
        return None
    path = journal_path(results_dir, sweep)
    if not os.path.exists(path):
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = _storage(path)
    out = []
    for summary in sorted(optuna.get_all_study_summaries(store, include_best_trial=False), key=lambda s: s.study_name):
        trials = optuna.load_study(study_name=summary.study_name, storage=store).get_trials(deepcopy=False)
        states = [t.state for t in trials]
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        best = min(done, key=lambda t: t.value) if done else None
        out.append(
            {
                "study": summary.study_name,
                "finished": sum(s in FINISHED for s in states),
                "running": states.count(TrialState.RUNNING),
                "failed": states.count(TrialState.FAIL),
                "total": summary.user_attrs.get("n_trials"),
                "best_lr": best.params["lr"] if best else None,
                "best_val_loss": best.value if best else None,
            }
        )
    return out


def format_tuning(studies: list[dict]) -> list[str]:
    lines = []
    for s in studies:
        best = (
            f"best lr {s['best_lr']:.4g} (val loss {s['best_val_loss']:.4f})" if s["best_lr"] else "no completed trial"
        )
        extra = "".join(f", {s[k]} {k}" for k in ("running", "failed") if s[k])
        lines.append(f"  {s['study']}: {s['finished']}/{s['total'] or '?'} trials{extra}; {best}")
    return lines


def stderr_log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()
