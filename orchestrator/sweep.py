"""What a sweep is once its spec is read: its trials, their resources and its tuning settings.

Frozen dataclasses only (the spec builds them, the runner, tuning, status and manifests read them).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from records.layout import TRUNK_SCHEDULE
from records.schema import config_row
from tiedattn.config import Trial
from tiedattn.data import DataConfig

CPU_FLOPS_PER_S = 3e10  # per 1-thread CPU trial: the demo sweep did 1.22e13 FLOPs in ~190 s on 2 slots
GPU_FLOPS_PER_S = 4e14  # per GPU: ~40% MFU of an H100 in bf16
BUDGET_FIELDS = ("tokens_per_param", "tokens_basis", "n_basis", "match")


class _Later:
    """A str field of SweepTrial that may be given as a maker instead, a callable of the trial: the
    string is made on first read, then kept. A grid's trials get their ids so (orchestrator/expand.py):
    a dry run of 10^5 trials prints 20 ids, and hashing all of them was a quarter of its CPU."""

    def __init__(self, default: str | None = None) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, trial, owner: type | None = None) -> str:
        if trial is None:  # dataclasses ask the class for the field's default; AttributeError: none
            if self.default is None:
                raise AttributeError(self.name)
            return self.default
        value = trial.__dict__[self.name]
        if value.__class__ is not str:
            value = trial.__dict__[self.name] = value(trial)
        return value

    def __set__(self, trial, value) -> None:  # only __init__ gets here: the dataclass is frozen
        trial.__dict__[self.name] = value


@dataclass(frozen=True)
class SweepTrial:
    trial_id: str = _Later()  # records.ids.trial_id (or its maker, with .prefix(trial): expand.py)
    trial: Trial  # workdir=None: the runner sets it
    tokens_per_param: float  # the budget: tokens = tokens_per_param x N, in whole steps
    tokens_basis: str  # "baseline" | "own": whose N set the token budget
    n_basis: str  # "non_embedding" | "total": which N
    match: str  # "none" | "params": d_ff widened to the baseline's non-embedding params
    cpus: float
    gpus: float
    flops: float  # training FLOPs this trial runs: flops_per_token(seq_len) x tokens (a branch: its cooldown)
    corpus_fingerprint: str | None = None  # None when loaded with fingerprint=False
    role: str = "trial"  # "trial" | "trunk" (WSD stable phase) | "branch" (a WSD cooldown off a trunk)
    depends_on: str | None = None  # branch: its trunk's trial_id
    branch_step: int | None = None  # branch: the trunk step it starts from (branch-<step>.pt)
    cell_id: str = _Later("")  # records.ids.cell_id (or its maker): the grid point without variant and lr
    shape_id: str = ""  # the shape as the spec asked for it (ModelConfig.label before matching params)
    workers: int = 1  # data-parallel workers, each with cpus and gpus ([resources] workers); not in the id

    @property
    def budget(self) -> dict:
        return {k: getattr(self, k) for k in BUDGET_FIELDS}

    def id_prefix(self) -> str:
        """trial_id less its `-<hash>` (records.ids.id_prefix), without hashing an id not made yet."""
        made = self.__dict__["trial_id"]
        return made.rpartition("-")[0] if made.__class__ is str else made.prefix(self)

    def __getstate__(self) -> dict:
        """Pickled (to a Ray worker) with its ids made: strings, not their makers and their grid's caches."""
        return {**self.__dict__, "trial_id": self.trial_id, "cell_id": self.cell_id}

    def row(self) -> dict:
        """The config columns of this trial's results row (records.schema.TRIALS_SCHEMA)."""
        t = self.trial
        row = config_row(t.model, t.train, t.data, self.budget, fingerprint=self.corpus_fingerprint,
                         cell_id=self.cell_id, shape_id=self.shape_id, branch_of=self.depends_on,
                         task=t.task)  # fmt: skip
        return row | ({"schedule": TRUNK_SCHEDULE} if self.role == "trunk" else {})

    def failed_row(self, attempt: int, error: str, status: str = "failed") -> dict:
        """The one row of an attempt that returned no row of its own (failed, interrupted, never run)."""
        return {**self.row(), "trial_id": self.trial_id, "attempt": attempt, "status": status, "error": error}


@dataclass(frozen=True)
class TuneConfig:
    """The [tune] section of a sweep spec (README: Learning-rate tuning)."""

    sizes: tuple[str, ...] = ()  # shape ids (d32l1h4f128); load_spec fills in the grid's 2 smallest
    tokens_per_param: float = 10.0  # proxy budget: tokens = 10 x N, half Chinchilla's 20: short, past the warmup
    n_trials: int = 12  # per (variant, size) study, pruned ones included
    lr_min: float = 1e-4
    lr_max: float = 3e-2
    warmup: bool = False  # also tune warmup_frac in WARMUP_RANGE
    seed: int = 0  # TPE sampler
    parallel: int | None = None  # proxies in flight, all studies together; None: as many as the cluster fits

    def errors(self) -> list[str]:
        errs = []
        if not (self.tokens_per_param > 0 and math.isfinite(self.tokens_per_param)):
            errs.append(f"tokens_per_param: must be > 0, got {self.tokens_per_param:g}")
        if self.n_trials < 1:
            errs.append(f"n_trials: must be >= 1, got {self.n_trials}")
        for name in ("lr_min", "lr_max"):
            if not math.isfinite(getattr(self, name)):
                errs.append(f"{name}: must be a finite number, got {getattr(self, name)}")
        if not self.lr_min > 0:
            errs.append(f"lr_min: must be > 0, got {self.lr_min:g}")
        if not self.lr_max > 0:
            errs.append(f"lr_max: must be > 0, got {self.lr_max:g}")
        elif self.lr_min > 0 and not self.lr_max > self.lr_min:
            errs.append(f"lr_max: must be > lr_min ({self.lr_min:g}), got {self.lr_max:g}")
        if self.seed < 0:
            errs.append(f"seed: must be >= 0, got {self.seed}")
        if self.parallel is not None and self.parallel < 1:
            errs.append(f"parallel: must be >= 1 (or left out: as many as the cluster fits), got {self.parallel}")
        return errs


@dataclass(frozen=True)
class Sweep:
    name: str
    path: str
    trials: list[SweepTrial]
    data: DataConfig
    cpus: float  # per trial
    gpus: float  # per trial; fractional allowed
    flops_per_s: float  # assumed throughput per trial, for time estimates only
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)  # [tune], sizes resolved
    step_s: float = 0.0  # assumed overhead per optimizer step, beside FLOPs / flops_per_s: time estimates only
