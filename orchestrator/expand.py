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

import dataclasses
import itertools
import json
import math

from orchestrator.branches import plan_branches
from orchestrator.sweep import SweepTrial
from records.ids import cell_id, data_key, trial_id
from records.tuning import TUNED, tuned_lr
from tiedattn.accounting import account, match_params, training_flops
from tiedattn.data import DataConfig
from tiedattn.model import ModelConfig
from tiedattn.tasks import TaskConfig, task_config
from tiedattn.train import TrainConfig, Trial

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


def _trial(point: dict, sec: dict, data: DataConfig, fp: str | None, budget: dict, res: tuple,
           min_budget: float | None, tuned: dict | None) -> SweepTrial:  # fmt: skip
    baseline = base_model("baseline", point["size"], point, sec)
    cfg = dataclasses.replace(baseline, variant=point["variant"])
    if budget["match"] == "params":
        cfg = match_params(cfg)
    cfg = dataclasses.replace(cfg, d_ff=cfg.ff)  # resolved: d_ff unset and d_ff = 4d hash alike
    shape = baseline.label
    lr = point["lr"]
    if lr == TUNED:  # resolved before the hash: the id follows the rate actually trained with
        lr = TrainConfig.lr if tuned is None else tuned_lr(tuned, cfg.variant, shape, model_n(cfg, budget["n_basis"]))
    n = model_n(baseline if budget["tokens_basis"] == "baseline" else cfg, budget["n_basis"])
    train_kw = {k: x for k, x in sec["train"].items() if AXES.get(k, (0, None))[1] != "train" and k != "batch_tokens"}
    T = point["seq_len"]
    if "batch_tokens" in sec["train"]:  # the same tokens per step at every seq_len
        train_kw["batch_size"] = sec["train"]["batch_tokens"] // T
    step_tokens = train_kw.get("batch_size", TrainConfig.batch_size) * T
    fixed = sec["budget"].get("tokens")  # [budget] tokens: the same tokens for every trial
    point = dict(point)
    if fixed is not None:  # tokens_per_param is what the fixed budget comes to
        tokens = budget_tokens(1.0, fixed, step_tokens)
        point["tokens_per_param"] = tokens / n
    else:
        tokens = budget_tokens(point["tokens_per_param"], n, step_tokens)
    plan = point["schedule"]
    if plan == WSD_BRANCHES:  # every budget shares one absolute warmup: that of the smallest budget
        smallest = tokens if fixed is not None else budget_tokens(min_budget, n, step_tokens)
        train_kw.setdefault("warmup_tokens", round(train_kw.get("warmup_frac", TrainConfig.warmup_frac) * smallest))
    tcfg = TrainConfig(tokens=tokens, seq_len=T, lr=lr, schedule="wsd" if plan == WSD_BRANCHES else plan,
                       seed=point["seed"], **train_kw)  # fmt: skip
    task = task_config({**sec["data"], "task": point["task"]}, point["num_kv_pairs"])
    full_budget = {"tokens_per_param": point["tokens_per_param"], **budget}
    role = "branch" if plan == WSD_BRANCHES else "trial"
    text = {k: x for k, x in point.items() if k in _TEXT_POINT and x == _TEXT_POINT[k]}
    coordinates = {k: x for k, x in point.items() if k not in ("variant", "lr", *text)}
    fixed_secs = {s: sec[s] for s in ("model", "train", "data", "budget")}
    return SweepTrial(
        trial_id(cfg, tcfg, data_key(data, fp), full_budget, shape_id=shape, role=role, task=task),
        Trial(cfg, tcfg, data, task=task),
        **full_budget,
        cpus=res[0],
        gpus=res[1],
        flops=training_flops(cfg, T, tcfg.tokens),
        corpus_fingerprint=fp,
        role=role,
        cell_id=cell_id(shape, coordinates, fixed_secs),
        shape_id=shape,
    )


def expand(axes: dict, sec: dict, data: DataConfig, fp: str | None, budget: dict, res: tuple[float, float],
           tuned: dict | None = None, exclude: list[dict[str, set[str]]] = ()) -> list[SweepTrial]:  # fmt: skip
    """Every trial of the grid (axes: axis -> [(where, value)]) but the points an `exclude` rule
    matches on all its axes (values as canonical JSON), WSD branches planned onto trunks."""
    min_budget = min((x for _, x in axes["tokens_per_param"] if x is not None), default=None)  # None: budget.tokens
    combos = itertools.product(*(axes[k] for k in AXES))
    points = [dict(zip(AXES, (x for _, x in combo), strict=True)) for combo in combos]
    points = [p for p in points if not any(_matches(p, rule) for rule in exclude)]
    return plan_branches([_trial(p, sec, data, fp, budget, res, min_budget, tuned) for p in points])


def _matches(point: dict, rule: dict[str, set[str]]) -> bool:
    return all(json.dumps(point[k], sort_keys=True) in values for k, values in rule.items())


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
