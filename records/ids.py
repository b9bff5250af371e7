"""The one identity function (marin's executor: `name-<hash>` of the versioned config).

A trial's id is a readable prefix plus 8 hex digits of sha256 over the canonical JSON of everything
that changes its result: the model, the training config without its runtime fields
(tiedattn.config.RUNTIME_FIELDS), the token stream (the corpus fingerprint, or the data settings
without tiedattn.data.DATA_RUNTIME_FIELDS), the budget, the role, and the id of what it depends on
(a WSD branch's id includes its trunk's id). Trials, trunks, branches and tuning proxies all get
their id here. `TrialIds` computes the same ids for a whole grid at once (each shared part
serialized once); trial_id() and cell_id() are their definition.

A cell is a point of the sweep's grid without its variant and learning rate: the same cell of
every variant is the pair the verdict compares, and a tuning study trains one (variant, shape).
A shape is the model without its variant; `shape_id` is ModelConfig.label of the shape as the
spec asked for it (before [budget] match = "params" widens a variant's d_ff).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from tiedattn.config import RUNTIME_FIELDS, ModelConfig, TaskConfig, TrainConfig
from tiedattn.data import DATA_RUNTIME_FIELDS, DataConfig

# Bump when a code change (model, init, schedule, loss, data packing, id scheme) changes results or
# ids for the same config: every trial id changes with it, so old rows are never taken for new ones.
# 2: shape labels carry d_ff (d32l1h4f128), a branch's id includes its trunk's id, and a trunk's id no
#    longer changes with data.cache_dir. Results of version 1 are refused (records.manifest).
RESULTS_VERSION = 2
# ModelConfig fields added after results version 2, at the value every earlier trial had: a field
# joins a trial's id only where it differs from this, so the ids of trials that do not use it stand.
ID_DEFAULTS = {"init": "gpt2"}


def content_hash(payload: dict) -> str:
    """8 hex digits of sha256 over the canonical JSON of `payload` and RESULTS_VERSION."""
    blob = json.dumps({"results_version": RESULTS_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def data_key(data: DataConfig, fingerprint: str | None) -> dict:
    """The token stream: its fingerprint when known, else the settings that make it."""
    if fingerprint:
        return {"fingerprint": fingerprint}
    return {k: v for k, v in dataclasses.asdict(data).items() if k not in DATA_RUNTIME_FIELDS}


def model_key(model: ModelConfig) -> dict:
    """The model's part of a trial id: its fields, less those at their ID_DEFAULTS value."""
    return {k: v for k, v in dataclasses.asdict(model).items() if k not in ID_DEFAULTS or v != ID_DEFAULTS[k]}


def _tpp(tokens_per_param: float) -> str:
    return f"{tokens_per_param:g}".replace("+", "")  # 1e+06 -> 1e06: ids are path-safe


def trial_id(
    model: ModelConfig,
    train: TrainConfig,
    data: dict,
    budget: dict,
    *,
    shape_id: str,
    role: str = "trial",
    depends_on: str | None = None,
    task: TaskConfig | None = None,
) -> str:
    """The id of a trial (role "trial"), a WSD trunk ("trunk"), a cooldown branch ("branch", with its
    trunk's id as depends_on) or a tuning proxy ("proxy", whose lr is the tuner's to pick).

    data: data_key(...); budget: {"tokens_per_param", "tokens_basis", "n_basis", "match"}.
    A trunk's id leaves out its length (tokens, tokens_per_param): a larger budget extends it, and
    its branches' id of it (role "trunk" on a branch's own config) is the trunk's id.
    task: a synthetic task (tiedattn.tasks) instead of the text: the options it reads join the hash
    and its tag (mqar-kv8, sort-l16) leads the id. A text trial's payload has no task key, so its id
    is what it was before tasks existed (RESULTS_VERSION unchanged); likewise a model field added
    since (ID_DEFAULTS) joins the hash only where it differs from what trials had before.
    """
    train_d = {k: v for k, v in dataclasses.asdict(train).items() if k not in RUNTIME_FIELDS}
    budget = dict(budget)
    if role == "trunk":
        train_d.pop("tokens")
        budget.pop("tokens_per_param", None)
    if role == "proxy":
        train_d.pop("lr")
    payload = {"model": model_key(model), "train": train_d, "data": data, "budget": budget, "role": role}
    payload |= {"task": task.identity()} if task is not None else {}
    digest = content_hash(payload | ({"depends_on": depends_on} if depends_on else {}))
    return f"{id_prefix(model.variant, shape_id, train.seed, budget.get('tokens_per_param', 0), role, task)}-{digest}"


def id_prefix(variant: str, shape_id: str, seed: int, tokens_per_param: float, role: str,
              task: TaskConfig | None) -> str:  # fmt: skip
    """A trial id's readable part (all of it but `-<hash>`): two ids can only be equal where these are."""
    if role == "trunk":
        prefix = f"trunk-{variant}-{shape_id}-s{seed}"
    elif role == "proxy":
        prefix = f"tune-{variant}-{shape_id}"
    else:
        prefix = f"{variant}-{shape_id}-m{_tpp(tokens_per_param)}-s{seed}"
    return prefix if task is None else f"{task.tag}-{prefix}"


def cell_id(shape_id: str, coordinates: dict, fixed: dict) -> str:
    """`<shape>-m<tokens_per_param>-s<seed>-<hash>` of a grid point without variant and lr.

    coordinates: the grid point's axis values (variant and lr left out by the caller); fixed: the
    spec's sections that every trial of the sweep shares.
    """
    digest = content_hash({"cell": coordinates, "fixed": fixed})
    return f"{shape_id}-m{_tpp(coordinates.get('tokens_per_param', 0))}-s{coordinates.get('seed', 0)}-{digest}"


# The canonical JSON of content_hash, from one encoder (json.dumps builds a new one per call).
_ENCODE = json.JSONEncoder(sort_keys=True, default=str).encode
# Values whose JSON is cached by (key, exact type, value). Exact type: 1, 1.0 and True are equal
# dict keys but print "1", "1.0", "true". Floats equal to zero are not cached (0.0 == -0.0).
_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})  # keys of another type: json prints 1 and 1.0 apart
_ROLES = {role: _ENCODE(role) for role in ("trial", "trunk", "branch", "proxy")}


class TrialIds:
    """trial_id() and cell_id() of many trials that share one token stream (`data`, a data_key) and
    one spec (`fixed`, the cell ids' shared sections): the same strings, made from cached parts.

    A canonical JSON object with sorted keys is "{" + the sorted `"key": value` items joined by
    ", " + "}", and each item prints the same alone as inside its object. So `data` and `fixed` are
    printed once, a model, train or task config once per object (frozen dataclasses: their text
    cannot change), and a scalar item once per (key, type, value); a trial then joins cached strings and
    hashes ~1 KB: ~15 us of CPU per id against trial_id()'s 120-170 us (asdict, a new encoder,
    sorting) on a 10^4-trial grid (bench/many_trials.py, side by side, load 7-8). tests/test_records.py pins ids and
    compares both on random configs.
    """

    def __init__(self, data: dict, fixed: dict | None = None) -> None:
        self._data = _ENCODE(data)
        self._fixed = None if fixed is None else _ENCODE(fixed)
        self._models: dict[int, tuple[ModelConfig, str]] = {}  # id(model) -> (model: kept alive, its JSON)
        self._trains: dict[tuple[int, str], tuple[TrainConfig, str]] = {}  # (id(train), role) -> the same
        self._tasks: dict[int, tuple[TaskConfig, str]] = {}  # id(task) -> (task, the JSON of its identity())
        self._items: dict[tuple, str] = {}
        # (trunk?, keys, values, their exact types) -> a budget's JSON: a grid's budgets are a few
        # per cell, shared by its variants (~3 us of ~16 per id saved)
        self._budgets: dict[tuple, str] = {}
        self._train_keys: dict[tuple[type, str], list[str]] = {}  # the fields in a trial's id, sorted

    def trial(self, model: ModelConfig, train: TrainConfig, budget: dict, *, shape_id: str, role: str = "trial",
              depends_on: str | None = None, task: TaskConfig | None = None) -> str:  # fmt: skip
        """trial_id(model, train, data, budget, shape_id=..., role=..., depends_on=..., task=...) with this `data`."""
        parts = ['{"budget": ', self._budget(budget, role == "trunk"), ', "data": ', self._data]
        if depends_on:
            parts += [', "depends_on": ', _ENCODE(depends_on)]
        role_text = _ROLES[role] if role in _ROLES else _ENCODE(role)
        parts += [', "model": ', self._model(model), f', "results_version": {RESULTS_VERSION}, "role": ', role_text]
        if task is not None:
            parts += [', "task": ', self._task(task)]
        parts += [', "train": ', self._train(train, role), "}"]
        digest = hashlib.sha256("".join(parts).encode()).hexdigest()[:8]
        tpp = budget.get("tokens_per_param", 0)
        return f"{id_prefix(model.variant, shape_id, train.seed, tpp, role, task)}-{digest}"

    def _budget(self, budget: dict, trunk: bool) -> str:
        values = tuple(budget.values())
        types = tuple(map(type, values))
        # scalars only, as in _join ((1, 2) and (1.0, 2) are equal keys that print apart), and no zero
        # (0.0 == -0.0); the exact types keep 1, 1.0 and True apart
        cacheable = _SCALARS.issuperset(types) and 0.0 not in values and _STR.issuperset(map(type, budget))
        key = (trunk, tuple(budget), values, types) if cacheable else None
        text = self._budgets.get(key) if cacheable else None
        if text is None:
            own = dict(budget)
            if trunk:
                own.pop("tokens_per_param", None)
            text = self._object(own)
            if cacheable:
                self._budgets[key] = text
        return text

    def cell(self, shape_id: str, coordinates: dict) -> str:
        """cell_id(shape_id, coordinates, fixed) with this `fixed`."""
        if self._fixed is None:
            raise ValueError("TrialIds(data) without fixed makes no cell ids")
        blob = f'{{"cell": {self._object(coordinates)}, "fixed": {self._fixed}, "results_version": {RESULTS_VERSION}}}'
        digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
        tpp = _tpp(coordinates.get("tokens_per_param", 0))
        return f"{shape_id}-m{tpp}-s{coordinates.get('seed', 0)}-{digest}"

    def _join(self, keys: list[str], values) -> str | None:
        """'{"key": value, ...}' (keys sorted by the caller) from cached items; None if a value is not a
        scalar (the caller prints it as trial_id() does)."""
        items, out = self._items, []
        for key, value in zip(keys, values, strict=True):
            cls = value.__class__
            if cls not in _SCALARS:
                return None
            cacheable = value or cls is not float
            text = items.get((key, cls, value)) if cacheable else None
            if text is None:
                text = f"{_ENCODE(key)}: {_ENCODE(value)}"
                if cacheable:
                    items[(key, cls, value)] = text
            out.append(text)
        return "{" + ", ".join(out) + "}"

    def _object(self, d: dict) -> str:
        """_ENCODE(d), d being printed by trial_id() or cell_id() as it is (no asdict)."""
        if not all(k.__class__ is str for k in d):  # json sorts and prints other keys its own way
            return _ENCODE(d)
        keys = sorted(d)
        text = self._join(keys, [d[k] for k in keys])
        return _ENCODE(d) if text is None else text

    def _model(self, model: ModelConfig) -> str:
        hit = self._models.get(id(model))
        if hit is None or hit[0] is not model:
            hit = self._models[id(model)] = (model, _ENCODE(model_key(model)))
        return hit[1]

    def _task(self, task: TaskConfig) -> str:
        hit = self._tasks.get(id(task))
        if hit is None or hit[0] is not task:
            hit = self._tasks[id(task)] = (task, _ENCODE(task.identity()))
        return hit[1]

    def _train(self, train: TrainConfig, role: str) -> str:
        hit = self._trains.get((id(train), role))
        if hit is not None and hit[0] is train:
            return hit[1]
        keys = self._train_keys.get((train.__class__, role))
        if keys is None:
            skip = {*RUNTIME_FIELDS, *(("tokens",) if role == "trunk" else ("lr",) if role == "proxy" else ())}
            keys = sorted(f.name for f in dataclasses.fields(train) if f.name not in skip)
            keys = self._train_keys[(train.__class__, role)] = keys
        text = self._join(keys, [getattr(train, k) for k in keys])
        if text is None:  # asdict copies containers (and dataclasses): print as trial_id() does
            train_d = dataclasses.asdict(train)
            text = _ENCODE({k: train_d[k] for k in keys})
        self._trains[(id(train), role)] = (train, text)
        return text
