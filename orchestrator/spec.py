"""A sweep spec: one TOML file -> validated trials with content-hash ids, and a dry-run table.

Every key is documented in sweeps/demo.toml. Validation reports every bad field at once, one line
each as `<file>: <field>: <reason>`, before anything runs. A trial's id is a readable prefix plus a
hash of everything that changes its result (model, training, token stream, budget), so the same
spec always gives the same ids and extending an axis leaves the existing ids alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import heapq
import itertools
import json
import math
import os
from dataclasses import dataclass

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import torch

from orchestrator.ladder import LADDER
from orchestrator.results import check_name
from tiedattn.accounting import account, match_params
from tiedattn.attention import parse_variant
from tiedattn.data import DataConfig, DataError, corpus_fingerprint
from tiedattn.model import ModelConfig
from tiedattn.train import TrainConfig, Trial

# section -> key -> TOML type (an integer is a valid float). Anything else is an unknown key.
_SECTIONS: dict[str, dict[str, type]] = {
    "data": {"corpus": str, "tokenizer": str, "vocab_size": int, "max_bytes": int, "val_fraction": float}
    | {"split_seed": int, "cache_dir": str},
    "model": {"vocab_size": int, "seq_len": int, "pos": str, "d_ff": int, "norm": str, "bias": bool}
    | {"tie_embeddings": bool, "rope_base": float},
    "train": {"batch_size": int, "lr": float, "schedule": str, "warmup_frac": float, "warmup_tokens": int}
    | {"min_lr_frac": float, "cooldown_frac": float, "cooldown_shape": str, "weight_decay": float}
    | {"grad_clip": float, "n_evals": int, "eval_tokens": int, "checkpoint_every_s": float, "compile": bool}
    | {"seed": int},
    "budget": {"tokens_basis": str, "n_basis": str, "match": str},
    "resources": {"cpus": float, "gpus": float, "flops_per_s": float},
}
_TOP = {"name": str, **dict.fromkeys(_SECTIONS, dict), "sizes": dict, "grid": dict}
_SIZE = {"d_model": int, "n_layer": int, "n_head": int, "d_ff": int}
_AXES = {"variant": str, "size": (str, dict), "tokens_per_param": float, "seq_len": int, "pos": str}
_AXES |= {"seed": int, "lr": float, "schedule": str}
_AXIS_DEFAULT = {"seq_len": "model", "pos": "model", "seed": "train", "lr": "train", "schedule": "train"}
_CHOICES = {"tokens_basis": ("baseline", "own"), "n_basis": ("non_embedding", "total"), "match": ("none", "params")}
_TOML_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table"}
_RUNTIME = ("checkpoint_every_s", "save_at_steps", "device", "compile", "threads")  # never change a result
CPU_FLOPS_PER_S = 6e10  # a 1-thread d=64 trial on a 2-core CPU machine (measured)
GPU_FLOPS_PER_S = 4e14  # per GPU: ~40% MFU of an H100 in bf16


class SpecError(ValueError):
    """A sweep spec that cannot run; `.errors` holds one `<file>: <field>: <reason>` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class SweepTrial:
    trial_id: str
    trial: Trial  # workdir=None: the runner sets it
    tokens_per_param: float
    tokens_basis: str  # "baseline" | "own": whose N set the token budget
    n_basis: str  # "non_embedding" | "total": which N
    match: str  # "none" | "params": d_ff widened to the baseline's non-embedding params
    cpus: float
    gpus: float
    flops: float  # training FLOPs: flops_per_token(seq_len) * tokens
    corpus_fingerprint: str | None = None  # None when loaded with fingerprint=False

    def row(self) -> dict:
        """The config columns of this trial's results row (orchestrator.results.TRIALS_SCHEMA)."""
        m, t, d = self.trial.model, self.trial.train, self.trial.data
        return {
            **{f: getattr(m, f) for f in ("variant", "d_model", "n_layer", "n_head")},
            "d_ff": m.ff,
            "n_kv_head": parse_variant(m.variant).n_kv_head(m.n_head),
            **{f: getattr(m, f) for f in ("vocab_size",)},
            "seq_len": t.seq_len or m.seq_len,
            **{f: getattr(m, f) for f in ("pos", "norm", "bias", "tie_embeddings")},
            **{f: getattr(t, f) for f in ("batch_size", "lr", "schedule", "warmup_frac", "cooldown_frac")},
            **{f: getattr(t, f) for f in ("cooldown_shape", "weight_decay", "seed")},
            **{f: getattr(self, f) for f in ("tokens_per_param", "tokens_basis", "n_basis", "match")},
            "corpus": d.corpus,
            "corpus_fingerprint": self.corpus_fingerprint,
        }


@dataclass(frozen=True)
class Sweep:
    name: str
    path: str
    trials: list[SweepTrial]
    data: DataConfig
    cpus: float  # per trial
    gpus: float  # per trial; fractional allowed
    flops_per_s: float  # assumed throughput per trial, for time estimates only


class _Errors(list):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def add(self, field: str, reason: str) -> None:
        line = f"{self.path}: {field}: {reason}"
        if line not in self:  # a combination check repeats its line for every other axis value
            self.append(line)


def _type_ok(value: object, want: type | tuple) -> bool:
    wants = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool):
        return bool in wants
    return isinstance(value, wants) or (float in wants and isinstance(value, int))


def _bad_type(value: object, want: type | tuple) -> str:
    wants = " or ".join(_TOML_NAMES[w] for w in (want if isinstance(want, tuple) else (want,)))
    got = {str: "string", bool: "boolean", int: "integer", float: "float", list: "array", dict: "table"}
    return f"must be {wants}, got {got.get(type(value), type(value).__name__)} {value!r}"


def _known(errs: _Errors, table: dict, allowed: dict, where: str) -> dict:
    """The entries of `table` with known keys and the right types (floats as float); a line for each other."""
    good = {}
    for key, value in table.items():
        field = f"{where}.{key}" if where else key
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            errs.add(field, f"unknown key (did you mean '{near[0]}'?)" if near else f"unknown key (known: {', '.join(allowed)})")
        elif not _type_ok(value, allowed[key]):
            errs.add(field, _bad_type(value, allowed[key]))
        else:
            good[key] = float(value) if allowed[key] is float else value
    return good


def _size(errs: _Errors, table: dict, where: str) -> dict | None:
    size = _known(errs, table, _SIZE, where)
    for key in ("d_model", "n_layer", "n_head"):
        if key not in table:
            errs.add(f"{where}.{key}", "missing (a size needs d_model, n_layer and n_head)")
    return size if len(size) == len(table) and all(k in size for k in ("d_model", "n_layer", "n_head")) else None


def _axes(errs: _Errors, raw: dict, sec: dict, sizes: dict) -> dict[str, list[tuple[str, object]]]:
    """axis -> [(where the value came from, value)], each value type-checked and canonical."""
    grid = raw.get("grid", {}) if isinstance(raw.get("grid", {}), dict) else {}
    axes: dict[str, list[tuple[str, object]]] = {}
    for key, values in grid.items():
        if key not in _AXES:
            _known(errs, {key: values}, _AXES, "grid")
        elif not isinstance(values, list):
            errs.add(f"grid.{key}", f"must be a list of values, e.g. [{json.dumps(values)}]")
        elif not values:
            errs.add(f"grid.{key}", "empty: list at least one value")
        else:
            axes[key] = []
            for i, v in enumerate(values):
                where = f"grid.{key}[{i}]"
                if not _type_ok(v, _AXES[key]):
                    errs.add(where, _bad_type(v, _AXES[key]))
                else:
                    axes[key].append((where, float(v) if _AXES[key] is float else v))
    for key in ("variant", "size", "tokens_per_param"):
        if key not in grid:
            errs.add(f"grid.{key}", "missing: the grid needs variant, size and tokens_per_param")
    for key, section in _AXIS_DEFAULT.items():
        if key in grid and key in sec[section] and key != "seq_len":  # [model] seq_len is the context size
            errs.add(f"grid.{key}", f"also set in [{section}]: keep one")
        elif key not in grid:
            default = sec[section].get(key, getattr(ModelConfig if section == "model" else TrainConfig, key, None))
            axes[key] = [(f"{section}.{key}", default)]
    checked = {}
    for key, values in axes.items():
        seen, out = {}, []
        for where, v in values:
            try:
                v = _canonical(key, v, where, errs, sizes)
            except ValueError as e:
                errs.add(where, str(e).removeprefix("variant: "))
                continue
            if v is None:
                continue
            same = json.dumps(v, sort_keys=True)
            if same in seen:
                errs.add(where, f"repeats {seen[same]} (the same {key})")
            seen[same] = where
            out.append((where, v))
        checked[key] = out
    return checked


def _canonical(key: str, v, where: str, errs: _Errors, sizes: dict):
    if key == "variant":
        return parse_variant(v).name  # ValueError names unknown variants
    if key == "size" and isinstance(v, str):
        if v not in sizes:
            near = difflib.get_close_matches(v, sizes, n=1)
            raise ValueError(f"unknown size '{v}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
        if sizes[v] is None:  # a bad [sizes] entry, reported there
            raise ValueError(f"size '{v}' is invalid (see sizes.{v})")
        return sizes[v]
    if key == "size":
        return _size(errs, v, where)  # None: its lines are already added
    if key == "tokens_per_param" and not (v > 0 and math.isfinite(v)):
        raise ValueError(f"must be > 0 (a token budget of tokens_per_param x N), got {v}")
    if key == "seed" and v < 0:
        raise ValueError(f"must be >= 0, got {v}")
    return v
