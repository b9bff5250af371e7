"""Expansion: a validated spec's grid -> its trials, each with its budget, cell and id.

Every combination of the grid's axes is one trial. A model axis sets that ModelConfig field and a
train axis that TrainConfig field, so a new grid axis over an existing config field is one entry in
AXES (and its test). A trial's token budget is
    D = ceil(tokens_per_param * N / (B * T)) * B * T     (whole optimizer steps of B sequences of T tokens)
with N the non-embedding or total params ([budget] n_basis) of the baseline or the variant itself
([budget] tokens_basis), or, with [budget] tokens, that fixed D in whole steps for every trial
(tokens_per_param is then D / N). [train] batch_tokens sets B = batch_tokens // T per trial. A
[data] axis (task, num_kv_pairs) picks a synthetic task (tiedattn/tasks.py) instead of the text.
Ids come from records.ids; WSD branches and their trunks from branches.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import math
import operator

from orchestrator.branches import plan_branches
from orchestrator.sweep import SweepTrial
from records.ids import TrialIds, data_key, id_prefix
from records.tuning import TUNED, tuned_lr
from tiedattn.accounting import account, match_params
from tiedattn.config import ModelConfig, TaskConfig, TrainConfig, Trial, task_config
from tiedattn.data import DataConfig

# grid axis -> (TOML type, the config it sets: "model" | "train" | "data" (the task, tiedattn.tasks) |
# None for the grid's own axes). The
# product runs in this order (the first trial of a cell in grid order is its tuning proxy's).
# d_ff is absolute (the MLP width, as in [model] and size tables); left out, it is 4 d_model.
AXES: dict[str, tuple[type | tuple[type, ...], str | None]] = {
    "variant": (str, None),
    "size": ((str, dict), None),
    "tokens_per_param": (float, None),
    "seq_len": (int, "model"),  # the trained context; [model] seq_len, when given, is the model's maximum
    "pos": (str, "model"),
    "seed": (int, "train"),
    "lr": ((float, str), "train"),  # a number, or "tuned" (records.tuning)
    "schedule": (str, "train"),  # cosine | wsd | wsd-branches (orchestrator/branches.py)
    "norm": (str, "model"),
    "d_ff": (int, "model"),
    "task": (str, "data"),  # "lm" (the text) or a synthetic task (tiedattn.tasks.TASKS)
    "num_kv_pairs": (int, "data"),  # mqar only; None: the task's default
}
# The [data] axes at their text values: left out of a cell's coordinates, so text cells keep their ids.
_TEXT_POINT = {"task": "lm", "num_kv_pairs": None}
MODEL_AXES = tuple(k for k, (_, where) in AXES.items() if where == "model" and k != "seq_len")
WSD_BRANCHES = "wsd-branches"
MODEL_KEY = ("variant", "size", "seq_len", *MODEL_AXES, "task")  # what a trial's model depends on (base_model)
CELL_KEY = tuple(k for k in AXES if k not in ("variant", "lr"))  # a cell: the grid point without these
# the axes a TrainConfig depends on besides N and the rate (_Grid.train)
TRAIN_KEY = ("tokens_per_param", "seq_len", *(k for k, (_, where) in AXES.items() if where == "train"))


def model_n(model: ModelConfig, n_basis: str) -> int:
    """N of this model: its non-embedding or total parameters (a sweep's [budget] n_basis)."""
    acct = account(model)
    return acct.params_non_embedding if n_basis == "non_embedding" else acct.params_total


def budget_tokens(tokens_per_param: float, n: int, tokens_per_step: int) -> int:
    """D = ceil(tokens_per_param * N / tokens_per_step) * tokens_per_step: whole steps, as trained."""
    return max(1, math.ceil(tokens_per_param * n / tokens_per_step)) * tokens_per_step


def base_model(variant: str, size: dict, point: dict, sec: dict) -> ModelConfig:
    """The model of a grid point: [model] keys, then the point's model axes, then the size's own keys."""
    m = sec["model"]
    kw = {k: x for k, x in m.items() if k != "seq_len"}
    kw |= {k: point[k] for k in MODEL_AXES if point.get(k) is not None}
    text = point.get("task", "lm") == "lm"  # a task's default vocab is the task's
    vocab = m.get("vocab_size", sec["data"].get("vocab_size", DataConfig.vocab_size if text else TaskConfig.vocab_size))
    context = m.get("seq_len", point["seq_len"])
    return ModelConfig(**{**kw, "variant": variant, **size, "vocab_size": vocab, "seq_len": context})


class _Grid:
    """The trials of one grid. Everything a trial shares with others (its model, matched d_ff and N; its
    TrainConfig and budget, which every variant of a shape shares when tokens_basis = "baseline"; its
    task, the tuned rate, FLOPs per token, the cell id) is made once, keyed by the axis values'
    positions (never by values: 1 and 1.0 are equal keys but hash apart); ids come from one
    records.ids.TrialIds, each made when first read (_TrialId, _CellId), and each trial is a copy of
    one prototype (_replace). A 10^5-trial dry run, whole command: ~2 s of CPU, ~10 us per trial of it
    here (3.5-4.3 s with every id made and frozen __init__s, side by side; 55 s when each trial made
    all of this itself; bench/many_trials.py)."""

    def __init__(self, axes: dict, sec: dict, data: DataConfig, fp: str | None, budget: dict, res: tuple,
                 tuned: dict | None) -> None:  # fmt: skip
        self.sec, self.budget = sec, budget
        self.values = [[x for _, x in axes[k]] for k in AXES]  # each axis's values, in AXES order
        # None: [budget] tokens, the same tokens for every trial
        self.min_budget = min((x for x in self.values[_TPP] if x is not None), default=None)
        self.fixed, self.tuned = sec["budget"].get("tokens"), tuned
        self.ids = TrialIds(data_key(data, fp), {s: sec[s] for s in ("model", "train", "data", "budget")})
        # every trial is these with its own fields (_replace); the rest is the grid's
        self.trial_proto = Trial(None, None, data)
        self.proto = SweepTrial("", self.trial_proto, 0.0, **budget, cpus=res[0], gpus=res[1], flops=0.0,
                                corpus_fingerprint=fp)  # fmt: skip
        self.train_kw = {k: x for k, x in sec["train"].items()
                         if AXES.get(k, (0, None))[1] != "train" and k != "batch_tokens"}  # fmt: skip
        self.models: dict[tuple, tuple[ModelConfig, str, int, float]] = {}
        self.trains: dict[tuple, tuple[TrainConfig, dict, _TrialId]] = {}
        self.tasks: dict[tuple, TaskConfig | None] = {}
        self.rates: dict[tuple, float] = {}
        self.cells: dict[tuple, _CellId] = {}

    def model(self, key: tuple, point: dict) -> tuple[ModelConfig, str, int, float]:
        """(the trained model, shape id, N of the token budget, FLOPs per token) of a point's variant and shape."""
        if key not in self.models:
            budget = self.budget
            baseline = base_model("baseline", point["size"], point, self.sec)
            cfg = dataclasses.replace(baseline, variant=point["variant"])
            if budget["match"] == "params":
                cfg = match_params(cfg)
            cfg = dataclasses.replace(cfg, d_ff=cfg.ff)  # resolved: d_ff unset and d_ff = 4d hash alike
            n = model_n(baseline if budget["tokens_basis"] == "baseline" else cfg, budget["n_basis"])
            # training_flops(cfg, T, tokens) = this x tokens
            per_token = account(dataclasses.replace(cfg, seq_len=point["seq_len"])).flops_per_token
            self.models[key] = (cfg, baseline.label, n, per_token)
        return self.models[key]

    def train(self, key: tuple, point: dict, n: int, lr: float) -> tuple[TrainConfig, dict, _TrialId]:
        """The TrainConfig, budget and id maker of a point (key: N, the resolved lr's model if tuned, the
        train axes' positions)."""
        if key not in self.trains:
            train_kw, T = dict(self.train_kw), point["seq_len"]
            if "batch_tokens" in self.sec["train"]:  # the same tokens per step at every seq_len
                train_kw["batch_size"] = self.sec["train"]["batch_tokens"] // T
            step_tokens = train_kw.get("batch_size", TrainConfig.batch_size) * T
            tpp = point["tokens_per_param"]
            if self.fixed is not None:  # tokens_per_param is what the fixed budget comes to
                tokens = budget_tokens(1.0, self.fixed, step_tokens)
                tpp = tokens / n
            else:
                tokens = budget_tokens(tpp, n, step_tokens)
            plan = point["schedule"]
            if plan == WSD_BRANCHES:  # every budget shares one absolute warmup: that of the smallest budget
                smallest = tokens if self.fixed is not None else budget_tokens(self.min_budget, n, step_tokens)
                frac = train_kw.get("warmup_frac", TrainConfig.warmup_frac)
                train_kw.setdefault("warmup_tokens", round(frac * smallest))
            schedule = "wsd" if plan == WSD_BRANCHES else plan
            tcfg = TrainConfig(tokens=tokens, seq_len=T, lr=lr, schedule=schedule, seed=point["seed"], **train_kw)
            full_budget = {"tokens_per_param": tpp, **self.budget}
            self.trains[key] = (tcfg, full_budget, _TrialId(self.ids, full_budget))
        return self.trains[key]

    def point(self, key: tuple) -> dict:
        return {k: v[i] for k, v, i in zip(AXES, self.values, key, strict=True)}

    def trial(self, key: tuple) -> SweepTrial:
        """key: the positions of the point's values on the AXES, in AXES order. The point's values
        themselves (a dict) are looked up only for what is not made yet."""
        model_key = _MODEL_POS(key)
        cfg, shape, n, per_token = self.models.get(model_key) or self.model(model_key, self.point(key))
        lr, lr_key = self.values[_LR][key[_LR]], None
        if lr == TUNED:  # resolved before the hash: the id follows the rate actually trained with
            if model_key not in self.rates:
                self.rates[model_key] = TrainConfig.lr if self.tuned is None else tuned_lr(
                    self.tuned, cfg.variant, shape, model_n(cfg, self.budget["n_basis"]))  # fmt: skip
            lr, lr_key = self.rates[model_key], model_key
        train_key = (n, lr_key, *_TRAIN_POS(key))
        tcfg, full_budget, trial_id = self.trains.get(train_key) or self.train(train_key, self.point(key), n, lr)
        task_key = _TASK_POS(key)
        if task_key not in self.tasks:
            point = self.point(key)
            self.tasks[task_key] = task_config({**self.sec["data"], "task": point["task"]}, point["num_kv_pairs"])
        task = self.tasks[task_key]
        role = "branch" if self.values[_SCHEDULE][key[_SCHEDULE]] == WSD_BRANCHES else "trial"
        cell_key = (_CELL_POS(key), full_budget["tokens_per_param"] if self.fixed is not None else None)
        if cell_key not in self.cells:
            self.cells[cell_key] = _CellId(self, key, shape, full_budget["tokens_per_param"])
        return _replace(
            self.proto,
            trial_id=trial_id,
            trial=_replace(self.trial_proto, model=cfg, train=tcfg, task=task),
            tokens_per_param=full_budget["tokens_per_param"],
            flops=per_token * tcfg.tokens,
            role=role,
            cell_id=self.cells[cell_key],
            shape_id=shape,
        )


def _replace(proto, **changes):
    """dataclasses.replace(proto, **changes) without __init__, for the trials of a grid: a frozen
    dataclass's __init__ sets every field through object.__setattr__, ~9 us for a SweepTrial and its
    Trial (a third of a 10^5-trial dry run's CPU) against ~1 us here. Neither has a __post_init__ to skip."""
    made = object.__new__(proto.__class__)
    made.__dict__.update(proto.__dict__)
    made.__dict__.update(changes)
    return made


class _TrialId:
    """The id of a grid trial of this budget (its `budget` dict), made from its own fields when first
    read (SweepTrial.trial_id): a dry run hashes only the ids it prints, and load_spec only the ids
    whose prefix repeats."""

    def __init__(self, ids: TrialIds, budget: dict) -> None:
        self.ids, self.budget = ids, budget

    def __call__(self, st: SweepTrial) -> str:
        t = st.trial
        return self.ids.trial(t.model, t.train, self.budget, shape_id=st.shape_id, role=st.role,
                              depends_on=st.depends_on, task=t.task)  # fmt: skip

    def prefix(self, st: SweepTrial) -> str:
        t = st.trial
        return id_prefix(t.model.variant, st.shape_id, t.train.seed, st.tokens_per_param, st.role, t.task)


class _CellId:
    """The id of a grid cell (a point less its variant and lr; key: the positions of one of its points),
    made when the first of its trials' is read."""

    def __init__(self, grid: _Grid, key: tuple, shape: str, tokens_per_param: float) -> None:
        self.grid, self.key, self.shape, self.tokens_per_param, self.id = grid, key, shape, tokens_per_param, None

    def __call__(self, st: SweepTrial) -> str:
        if self.id is None:
            point = self.grid.point(self.key) | {"tokens_per_param": self.tokens_per_param}
            text = {k for k, x in point.items() if k in _TEXT_POINT and x == _TEXT_POINT[k]}
            coordinates = {k: x for k, x in point.items() if k not in ("variant", "lr", *text)}
            self.id = self.grid.ids.cell(self.shape, coordinates)
        return self.id


def _positions(names: tuple[str, ...]) -> operator.itemgetter:
    """A getter of these axes' entries, as a tuple, from a tuple in AXES order."""
    assert len(names) > 1, names  # itemgetter of one index returns the item, not a tuple
    return operator.itemgetter(*[list(AXES).index(k) for k in names])


_MODEL_POS = _positions(MODEL_KEY)
_TRAIN_POS = _positions(TRAIN_KEY)
_CELL_POS = _positions(CELL_KEY)
_TASK_POS = _positions(("task", "num_kv_pairs"))
_TPP, _LR, _SCHEDULE = (list(AXES).index(k) for k in ("tokens_per_param", "lr", "schedule"))


def expand(axes: dict, sec: dict, data: DataConfig, fp: str | None, budget: dict, res: tuple[float, float],
           tuned: dict | None = None, exclude: list[dict[str, set[str]]] = ()) -> list[SweepTrial]:  # fmt: skip
    """Every trial of the grid (axes: axis -> [(where, value)]) but the points an `exclude` rule
    matches on all its axes (values as canonical JSON), WSD branches planned onto trunks."""
    grid = _Grid(axes, sec, data, fp, budget, res, tuned)
    # each rule as (axis position, the positions of the values it excludes on that axis)
    rules = [[(list(AXES).index(k), {i for i, x in enumerate(grid.values[list(AXES).index(k)])
                                     if json.dumps(x, sort_keys=True) in values}) for k, values in rule.items()]
             for rule in exclude]  # fmt: skip
    keys = itertools.product(*(range(len(axes[k])) for k in AXES))
    if rules:  # a filter of 10^5 keys with no rule costs ~0.2 s
        keys = (key for key in keys if not any(all(key[p] in kept for p, kept in rule) for rule in rules))
    with _no_collections():
        return plan_branches([grid.trial(key) for key in keys], grid.ids)


@contextlib.contextmanager
def _no_collections():
    """The cyclic garbage collector off while a grid is built: its ~10 objects per trial form no
    cycles, and each collection would re-scan all made so far (~15% of a 10^5-trial expansion's CPU)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def shapes_of(size: dict, axes: dict, sec: dict) -> list[ModelConfig]:
    """The baseline models of one size across the grid's model axes (d_ff, norm, pos), first seq_len."""
    keys = ("seq_len", *MODEL_AXES)
    combos = itertools.product(*([x for _, x in axes[k]] for k in keys))
    return [base_model("baseline", size, dict(zip(keys, c, strict=True)), sec) for c in combos]


def smallest_shapes(axes: dict, sec: dict, k: int = 2) -> tuple[str, ...]:
    """Shape ids of the grid's k smallest shapes by the baseline's non-embedding params."""
    models = [m for _, s in axes["size"] for m in shapes_of(s, axes, sec)]
    shapes = sorted((account(m).params_non_embedding, m.label) for m in models)
    return tuple(dict.fromkeys(label for _, label in shapes))[:k]
