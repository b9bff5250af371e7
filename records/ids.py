"""The one identity function (marin's executor: `name-<hash>` of the versioned config).

A trial's id is a readable prefix plus 8 hex digits of sha256 over the canonical JSON of everything
that changes its result: the model, the training config without its runtime fields
(tiedattn.train.RUNTIME_FIELDS), the token stream (the corpus fingerprint, or the data settings
without tiedattn.data.DATA_RUNTIME_FIELDS), the budget, the role, and the id of what it depends on
(a WSD branch's id includes its trunk's id). Trials, trunks, branches and tuning proxies all get
their id here.

A cell is a point of the sweep's grid without its variant and learning rate: the same cell of
every variant is the pair the verdict compares, and a tuning study trains one (variant, shape).
A shape is the model without its variant; `shape_id` is ModelConfig.label of the shape as the
spec asked for it (before [budget] match = "params" widens a variant's d_ff).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

from tiedattn.data import DATA_RUNTIME_FIELDS, DataConfig
from tiedattn.model import ModelConfig
from tiedattn.train import RUNTIME_FIELDS, TrainConfig

# Bump when a code change (model, init, schedule, loss, data packing, id scheme) changes results or
# ids for the same config: every trial id changes with it, so old rows are never taken for new ones.
# 2: shape labels carry d_ff (d32l1h4f128), a branch's id includes its trunk's id, and a trunk's id no
#    longer changes with data.cache_dir. Results of version 1 are refused (records.manifest).
RESULTS_VERSION = 2


def content_hash(payload: dict) -> str:
    """8 hex digits of sha256 over the canonical JSON of `payload` and RESULTS_VERSION."""
    blob = json.dumps({"results_version": RESULTS_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _fields(config) -> dict:
    """dataclasses.asdict of a flat config (no nested dataclasses): the same JSON, without deep copies."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


@functools.lru_cache(maxsize=4096)  # a sweep repeats each model over budgets and seeds
def _model_fields(model: ModelConfig) -> dict:
    return _fields(model)


def data_key(data: DataConfig, fingerprint: str | None) -> dict:
    """The token stream: its fingerprint when known, else the settings that make it."""
    if fingerprint:
        return {"fingerprint": fingerprint}
    return {k: v for k, v in dataclasses.asdict(data).items() if k not in DATA_RUNTIME_FIELDS}


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
) -> str:
    """The id of a trial (role "trial"), a WSD trunk ("trunk"), a cooldown branch ("branch", with its
    trunk's id as depends_on) or a tuning proxy ("proxy", whose lr is the tuner's to pick).

    data: data_key(...); budget: {"tokens_per_param", "tokens_basis", "n_basis", "match"}.
    A trunk's id leaves out its length (tokens, tokens_per_param): a larger budget extends it, and
    its branches' id of it (role "trunk" on a branch's own config) is the trunk's id.
    """
    train_d = {k: v for k, v in _fields(train).items() if k not in RUNTIME_FIELDS}
    budget = dict(budget)
    if role == "trunk":
        train_d.pop("tokens")
        budget.pop("tokens_per_param", None)
    if role == "proxy":
        train_d.pop("lr")
    payload = {"model": _model_fields(model), "train": train_d, "data": data, "budget": budget, "role": role}
    digest = content_hash(payload | ({"depends_on": depends_on} if depends_on else {}))
    v, seed = model.variant, train.seed
    prefix = {
        "trunk": f"trunk-{v}-{shape_id}-s{seed}",
        "proxy": f"tune-{v}-{shape_id}",
    }.get(role, f"{v}-{shape_id}-m{_tpp(budget.get('tokens_per_param', 0))}-s{seed}")
    return f"{prefix}-{digest}"


def cell_id(shape_id: str, coordinates: dict, fixed: dict) -> str:
    """`<shape>-m<tokens_per_param>-s<seed>-<hash>` of a grid point without variant and lr.

    coordinates: the grid point's axis values (variant and lr left out by the caller); fixed: the
    spec's sections that every trial of the sweep shares.
    """
    digest = content_hash({"cell": coordinates, "fixed": fixed})
    return f"{shape_id}-m{_tpp(coordinates.get('tokens_per_param', 0))}-s{coordinates.get('seed', 0)}-{digest}"
