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
import itertools
import json
import math
from dataclasses import dataclass

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


from orchestrator.ladder import LADDER
from orchestrator.results import check_name
from orchestrator.tune import TUNED, TuneConfig, model_n, tuned_lr
from tiedattn.accounting import account, match_params, training_flops
from tiedattn.attention import parse_variant
from tiedattn.data import DataConfig, DataError, corpus_fingerprint
from tiedattn.model import ModelConfig
from tiedattn.tasks import TASK_KEYS, TASKS, TaskConfig, task_config
from tiedattn.train import TrainConfig, Trial

# section -> key -> TOML type (an integer is a valid float). Anything else is an unknown key.
_SECTIONS: dict[str, dict[str, type]] = {
    "data": {"corpus": str, "tokenizer": str, "vocab_size": int, "max_bytes": int, "val_fraction": float}
    | {"split_seed": int, "cache_dir": str}
    | TASK_KEYS,  # tiedattn/tasks.py: task = "lm" | "mqar" | "copy" | ..., and its options
    "model": {"vocab_size": int, "seq_len": int, "pos": str, "d_ff": int, "norm": str, "bias": bool}
    | {"tie_embeddings": bool, "rope_base": float},
    "train": {"batch_size": int, "lr": float, "schedule": str, "warmup_frac": float, "warmup_tokens": int}
    | {"min_lr_frac": float, "cooldown_frac": float, "cooldown_shape": str, "weight_decay": float}
    | {"grad_clip": float, "n_evals": int, "eval_tokens": int, "checkpoint_every_s": float, "compile": bool}
    | {"seed": int, "batch_tokens": int},  # batch_tokens: batch_size = batch_tokens // seq_len per trial
    "budget": {"tokens_basis": str, "n_basis": str, "match": str, "tokens": int},
    "resources": {"cpus": float, "gpus": float, "flops_per_s": float},
    "tune": {"sizes": list, "tokens_per_param": float, "n_trials": int, "lr_min": float, "lr_max": float}
    | {"warmup": bool, "seed": int, "parallel": int},
}
_TOP = {"name": str, **dict.fromkeys(_SECTIONS, dict), "sizes": dict, "grid": dict}
_SIZE = {"d_model": int, "n_layer": int, "n_head": int, "d_ff": int}
_AXES = {"variant": str, "size": (str, dict), "tokens_per_param": float, "seq_len": int, "pos": str}
_AXES |= {"seed": int, "lr": float, "schedule": str, "task": str, "num_kv_pairs": int}
_SECTIONS["train"]["lr"] = _AXES["lr"] = (float, str)  # a number, or "tuned" (orchestrator/tune.py)
_AXIS_DEFAULT = {"seq_len": "model", "pos": "model", "seed": "train", "lr": "train", "schedule": "train"}
_CHOICES = {"tokens_basis": ("baseline", "own"), "n_basis": ("non_embedding", "total"), "match": ("none", "params")}
_TOML_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table"}
_TOML_NAMES[list] = "a list"
RUNTIME_FIELDS = ("checkpoint_every_s", "save_at_steps", "device", "compile", "threads")  # never change a result
CPU_FLOPS_PER_S = 3e10  # per 1-thread CPU trial: the demo sweep did 1.22e13 FLOPs in ~190 s on 2 slots
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
    role: str = "trial"  # "trial" | "trunk" (WSD stable phase) | "branch" (a WSD cooldown off a trunk)
    depends_on: str | None = None  # branch: its trunk's trial_id
    branch_step: int | None = None  # branch: the trunk step it starts from (branch-<step>.pt)

    def row(self) -> dict:
        """The config columns of this trial's results row (orchestrator.results.TRIALS_SCHEMA)."""
        m, t = self.trial.model, self.trial.train
        row = {f: getattr(m, f) for f in ("variant", "d_model", "n_layer", "n_head", "vocab_size", "pos", "norm")}
        row |= {f: getattr(m, f) for f in ("bias", "tie_embeddings")}
        row |= {f: getattr(t, f) for f in ("batch_size", "lr", "schedule", "warmup_frac", "cooldown_frac", "seed")}
        row |= {f: getattr(t, f) for f in ("cooldown_shape", "weight_decay")}
        row |= {f: getattr(self, f) for f in ("tokens_per_param", "tokens_basis", "n_basis", "match")}
        row |= {"d_ff": m.ff, "n_kv_head": parse_variant(m.variant).n_kv_head(m.n_head), "seq_len": t.seq_len}
        row |= {"corpus": self.trial.data.corpus, "corpus_fingerprint": self.corpus_fingerprint}
        row |= self.trial.task.row() if self.trial.task else {"task": "lm"}
        return row | {"branch_of": self.depends_on} | ({"schedule": "wsd-trunk"} if self.role == "trunk" else {})


@dataclass(frozen=True)
class Sweep:
    name: str
    path: str
    trials: list[SweepTrial]
    data: DataConfig
    cpus: float  # per trial
    gpus: float  # per trial; fractional allowed
    flops_per_s: float  # assumed throughput per trial, for time estimates only
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)  # [tune], sizes resolved (orchestrator/tune.py)


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
            errs.add(
                field,
                f"unknown key (did you mean '{near[0]}'?)" if near else f"unknown key (known: {', '.join(allowed)})",
            )
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


def _axes(errs: _Errors, top: dict, sec: dict, sizes: dict) -> dict[str, list[tuple[str, object]]]:
    """axis -> [(where the value came from, value)], each value type-checked and canonical."""
    grid = top.get("grid", {})
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
        if key not in grid and not (key == "tokens_per_param" and "tokens" in sec["budget"]):
            errs.add(f"grid.{key}", "missing: the grid needs variant, size and tokens_per_param (or budget.tokens)")
    if "tokens_per_param" in grid and "tokens" in sec["budget"]:
        errs.add("budget.tokens", "also grid.tokens_per_param: a budget is one or the other")
    if "tokens_per_param" not in grid:  # fixed budget.tokens: tokens_per_param is what that comes to
        axes["tokens_per_param"] = [("budget.tokens", None)]
    for key, default in (("task", "lm"), ("num_kv_pairs", None)):  # [data] task keys a grid may vary
        if key in grid and key in sec["data"]:
            errs.add(f"grid.{key}", "also set in [data]: keep one")
        elif key not in grid:
            axes[key] = [(f"data.{key}", sec["data"].get(key, default))]
    for key, section in _AXIS_DEFAULT.items():
        if key in grid and key in sec[section] and key != "seq_len":  # [model] seq_len is the context size
            errs.add(f"grid.{key}", f"also set in [{section}]: keep one")
        elif key not in grid:
            default = sec[section].get(key, getattr(ModelConfig if section == "model" else TrainConfig, key, None))
            axes[key] = [(f"{section}.{key}", default)]
    checked = {}
    for key, values in axes.items():
        seen, out = {}, []
        for where, given in values:
            try:
                v = _canonical(key, given, where, errs, sizes)
            except ValueError as e:
                errs.add(where, str(e).removeprefix("variant: "))
                continue
            if v is None and key not in ("tokens_per_param", "num_kv_pairs"):  # None: budget.tokens / not mqar
                continue
            same = json.dumps(v, sort_keys=True)
            if same in seen:
                errs.add(where, f"repeats {seen[same]} (the same {key})")
            seen[same] = where
            if key == "size" and isinstance(given, str) and given not in LADDER:
                where = f"sizes.{given}"  # its fields' errors point at the [sizes] entry
            out.append((where, v))
        checked[key] = out
    return checked


def _canonical(key: str, v, where: str, errs: _Errors, sizes: dict):
    if key == "variant":
        return parse_variant(v).name  # ValueError names unknown variants
    if key == "size" and isinstance(v, str):
        if v not in sizes:
            near = difflib.get_close_matches(v, sizes, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"known: {', '.join(sizes)}"
            raise ValueError(f"unknown size '{v}' ({hint})")
        if sizes[v] is None:  # a bad [sizes] entry, reported there
            raise ValueError(f"size '{v}' is invalid (see sizes.{v})")
        return sizes[v]
    if key == "size":
        return _size(errs, v, where)  # None: its lines are already added
    if key == "tokens_per_param" and v is not None and not (v > 0 and math.isfinite(v)):
        raise ValueError(f"must be > 0 (a token budget of tokens_per_param x N), got {v}")
    if key == "task" and v not in ("lm", *TASKS):
        raise ValueError(f"must be 'lm' or one of {', '.join(TASKS)}, got '{v}'")
    if key == "pos" and v not in ("rope", "learned"):
        raise ValueError(f"must be 'rope' or 'learned', got '{v}'")
    if key == "seed" and v < 0:
        raise ValueError(f"must be >= 0, got {v}")
    if key == "lr" and isinstance(v, str) and v != TUNED:
        raise ValueError(f'must be a number or "{TUNED}" (the rate `tiedsweep tune` found), got {v!r}')
    if key == "lr":
        return v if v == TUNED else float(v)
    return v


def _label(size: dict) -> str:
    return f"d{size['d_model']}l{size['n_layer']}h{size['n_head']}"


def _combination_errors(errs: _Errors, axes: dict, sec: dict) -> None:
    """ModelConfig/TrainConfig checks over every combination of valid axis values, each line
    pointing at the axis value or section key that the field came from."""
    model, train = sec["model"], sec["train"]
    ctx = model.get("seq_len")  # context / position table size; None = each trial's seq_len
    sizes = []  # a shape that cannot work with any variant gets one line per field, not one per variant
    for sw, s in axes["size"]:
        own = [e.split(": ", 1) for e in _model("baseline", s, 1, "learned", sec).errors()]
        for field, reason in own:
            if field in s:
                errs.add(f"{sw}.{field}", reason)
        sizes += [] if any(field in s for field, _ in own) else [(sw, s)]
    for (vw, v), (sw, s), (tw, T), (pw, pos) in itertools.product(axes["variant"], sizes, axes["seq_len"], axes["pos"]):
        where = {"variant": vw, "seq_len": tw, "pos": pw, **{k: f"{sw}.{k}" for k in s}}
        where["vocab_size"] = "model.vocab_size" if "vocab_size" in model else "data.vocab_size"
        cfg = _model(v, s, T, pos, sec)
        for err in cfg.errors():
            field, reason = err.split(": ", 1)
            suffix = f" (size {_label(s)})" if field == "variant" else ""
            errs.add(where.get(field, f"model.{field}"), reason + suffix)
        if ctx is not None and T > ctx:
            kind = "learned position table" if pos == "learned" else "model context (rope cache)"
            errs.add(tw, f"{T} exceeds the {kind} of {ctx} (model.seq_len)")
    tasks = itertools.product(axes["seq_len"], axes.get("task", []), axes.get("num_kv_pairs", []))
    for (tw, T), (aw, name), (nw, n) in tasks:
        task = task_config({**sec["data"], "task": name}, n)
        if (task is None or task.name != "mqar") and n is not None:
            errs.add(nw, 'only mqar reads it: set data.task = "mqar"')
        for err in task.errors(T, _model("baseline", {}, T, "rope", sec).vocab_size) if task else []:
            field, reason = err.split(": ", 1)
            errs.add({"seq_len": tw, "num_kv_pairs": nw, "task": aw}.get(field, f"data.{field}"), reason)
    for (lw, lr), (cw, schedule) in itertools.product(axes["lr"], axes["schedule"]):
        where = {"lr": lw, "schedule": cw}
        lr = TrainConfig.lr if lr == TUNED else lr  # tuned rates are > 0; the schedule's checks still apply
        plain = "wsd" if schedule == "wsd-branches" else schedule  # branches are WSD runs (orchestrator/branches.py)
        kw = {k: x for k, x in train.items() if k != "batch_tokens"}
        for err in TrainConfig(tokens=1, **{**kw, "lr": lr, "schedule": plain}).errors():
            field, reason = err.split(": ", 1)
            errs.add(
                where.get(field, f"train.{field}"),
                reason.replace("'cosine' or 'wsd', got", "'cosine', 'wsd' or 'wsd-branches', got"),
            )
    if "batch_tokens" in train and "batch_size" in train:
        errs.add("train.batch_tokens", "also train.batch_size: keep one")
    # Not checked by TrainConfig.errors(), but each would fail (or silently misbehave) mid-run.
    for key, ok, rule in (
        ("min_lr_frac", lambda x: 0 <= x <= 1, "in [0, 1]"),
        ("grad_clip", lambda x: x > 0, "> 0"),
        ("weight_decay", lambda x: x >= 0, ">= 0"),
        ("n_evals", lambda x: x >= 1, ">= 1"),
        ("eval_tokens", lambda x: x >= 1, ">= 1"),
        ("warmup_tokens", lambda x: x >= 0, ">= 0"),
        ("batch_tokens", lambda x: x >= max(T for _, T in axes["seq_len"]), ">= the longest seq_len"),
    ):
        if key in train and not ok(train[key]):
            errs.add(f"train.{key}", f"must be {rule}, got {train[key]}")


def _model(variant: str, size: dict, seq_len: int, pos: str, sec: dict) -> ModelConfig:
    m = sec["model"]
    kw = {k: m[k] for k in ("d_ff", "norm", "bias", "tie_embeddings", "rope_base") if k in m}
    text = sec["data"].get("task", "lm") == "lm"
    vocab = m.get("vocab_size", sec["data"].get("vocab_size", DataConfig.vocab_size if text else TaskConfig.vocab_size))
    return ModelConfig(variant=variant, **{**kw, **size}, vocab_size=vocab, seq_len=m.get("seq_len", seq_len), pos=pos)


def _data_errors(errs: _Errors, d: dict, fingerprint: bool) -> str | None:
    """Checks that touch no file, then (when fingerprint) the corpus itself; its fingerprint or None."""
    n = len(errs)
    if d.get("tokenizer", "bpe") == "bpe" and d.get("vocab_size", 257) < 257:
        errs.add("data.vocab_size", f"must be >= 257 for a BPE (256 bytes + end-of-text), got {d['vocab_size']}")
    if d.get("max_bytes", 1) <= 0:
        errs.add("data.max_bytes", f"must be > 0 (or left out for the whole corpus), got {d['max_bytes']}")
    if not 0 < d.get("val_fraction", 0.02) <= 0.5:
        errs.add("data.val_fraction", f"must be in (0, 0.5], got {d['val_fraction']}")
    if not fingerprint or len(errs) > n:
        return None
    try:
        return corpus_fingerprint(DataConfig(**d))
    except (DataError, OSError) as e:
        field, reason = str(e).split(": ", 1) if ": " in str(e) else ("corpus", str(e))
        errs.add(f"data.{field}", reason)  # DataError messages start with their field: "corpus: ..."
        return None


def _tune_section(errs: _Errors, tune: dict, axes: dict, sizes: dict) -> TuneConfig:
    """[tune], its sizes as labels of grid sizes (left empty when not given: see _smallest_sizes)."""
    grid = {_label(s) for _, s in axes.get("size", [])}
    labels: list[str] = []
    if "sizes" in tune and not tune["sizes"]:
        errs.add("tune.sizes", "empty: list at least one size (or leave it out: the grid's 2 smallest)")
    for i, entry in enumerate(tune.get("sizes", [])):
        where = f"tune.sizes[{i}]"
        if not _type_ok(entry, _AXES["size"]):
            errs.add(where, _bad_type(entry, _AXES["size"]))
            continue
        try:
            size = _canonical("size", entry, where, errs, sizes)
        except ValueError as e:
            errs.add(where, str(e))
            continue
        if size is None:
            continue
        if _label(size) not in grid:
            errs.add(where, f"size {_label(size)} is not in grid.size (tuning trains the sweep's own cells)")
        elif _label(size) in labels:
            errs.add(where, f"repeats size {_label(size)}")
        labels.append(_label(size))
    cfg = TuneConfig(**{**tune, "sizes": tuple(labels)})
    for err in cfg.errors():
        field, reason = err.split(": ", 1)
        errs.add(f"tune.{field}", reason)
    return cfg


def _smallest_sizes(axes: dict, sec: dict, k: int = 2) -> tuple[str, ...]:
    """Labels of the grid's k smallest sizes by the baseline's non-embedding params."""
    T, pos = axes["seq_len"][0][1], axes["pos"][0][1]
    by_n = sorted(
        (account(_model("baseline", s, T, pos, sec)).params_non_embedding, _label(s)) for _, s in axes["size"]
    )
    return tuple(dict.fromkeys(label for _, label in by_n))[:k]


def load_spec(path: str, *, fingerprint: bool = True, tuned: dict | None = None, untuned_ok: bool = False) -> Sweep:
    """Parse, validate (raising SpecError with every problem) and expand a sweep spec.

    fingerprint=False skips reading the corpus (for specs whose corpus is elsewhere, such as a
    cluster's FineWeb): ids then hash the data settings instead of the token stream, so they
    differ from the ids the runner uses, and rows carry corpus_fingerprint None.
    tuned: the parsed DIR/tuning/<sweep>/lr.json (orchestrator.tune.read_tuned), which `lr = "tuned"`
    needs; each trial's rate is resolved per (variant, size) before its id is hashed.
    untuned_ok: `lr = "tuned"` without `tuned` stands for TrainConfig's default rate (for `tiedsweep
    tune`, whose proxies set their own rates).
    """
    errs = _Errors(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise SpecError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError([f"{path}: invalid TOML: {e}"]) from None
    top = _known(errs, raw, _TOP, "")
    if "name" not in raw:
        errs.add("name", 'missing: the sweep\'s name, e.g. name = "demo"')
    elif "name" in top:
        try:
            check_name(top["name"], "name")
        except ValueError as e:
            errs.add("name", str(e))
    sec = {s: _known(errs, top.get(s, {}), keys, s) for s, keys in _SECTIONS.items()}
    for key, choices in _CHOICES.items():
        if sec["budget"].get(key, choices[0]) not in choices:
            errs.add(f"budget.{key}", f"must be {' or '.join(map(repr, choices))}, got {sec['budget'][key]!r}")
    res = sec["resources"]
    cpus, gpus = res.get("cpus", 1.0), res.get("gpus", 0.0)
    if cpus <= 0:
        errs.add("resources.cpus", f"must be > 0, got {cpus:g}")
    if gpus < 0:
        errs.add("resources.gpus", f"must be >= 0 (fractions such as 0.25 share a GPU), got {gpus:g}")
    flops_per_s = res.get("flops_per_s", GPU_FLOPS_PER_S * gpus if gpus > 0 else CPU_FLOPS_PER_S)
    if flops_per_s <= 0:
        errs.add("resources.flops_per_s", f"must be > 0, got {flops_per_s:g}")
    sizes: dict[str, dict | None] = dict(LADDER)
    for name, table in top.get("sizes", {}).items():
        if name in LADDER:
            errs.add(f"sizes.{name}", "is a built-in size name (orchestrator/ladder.py): pick another")
        elif not isinstance(table, dict):
            errs.add(f"sizes.{name}", _bad_type(table, dict))
        else:
            sizes[name] = _size(errs, table, f"sizes.{name}")
    axes = _axes(errs, top, sec, sizes)
    tune = _tune_section(errs, sec["tune"], axes, sizes)
    for where, _ in (x for x in axes.get("lr", []) if x[1] == TUNED):
        if tuned is None and not untuned_ok:
            errs.add(where, f'"{TUNED}" needs tuning results: run tiedsweep tune {path} first')
        for vw, v in axes.get("variant", []) if tuned is not None else []:
            if (tuned.get(v) or {}).get("rule") is None:
                errs.add(vw, f'no tuned learning rate for {v} (lr = "{TUNED}"): run tiedsweep tune {path}')
    if all(axes.get(k) for k in ("variant", "size", "seq_len", "pos", "lr", "schedule")):
        _combination_errors(errs, axes, sec)
    text = {k: v for k, v in sec["data"].items() if k not in TASK_KEYS}
    lm = any(name == "lm" for _, name in axes.get("task", []))
    fp = _data_errors(errs, text, fingerprint) if lm else None
    if errs:
        raise SpecError(list(errs))
    data = DataConfig(**{k: v for k, v in text.items() if lm or k != "vocab_size"})  # tasks: vocab is the task's
    budget = {k: sec["budget"].get(k, c[0]) for k, c in _CHOICES.items()}
    combos = itertools.product(*(axes[k] for k in _AXES))
    min_tpp = min((x for _, x in axes["tokens_per_param"] if x is not None), default=None)
    trials = [
        _trial(dict(zip(_AXES, combo, strict=True)), sec, data, fp, budget, cpus, gpus, min_tpp, tuned)
        for combo in combos
    ]
    from orchestrator.branches import plan_branches  # branches.py builds on this module

    trials = plan_branches(trials)  # schedule = "wsd-branches": one trunk + a cooldown branch per budget
    seen: dict[str, SweepTrial] = {}
    for t in trials:
        if t.trial_id in seen:  # e.g. two size names for one shape
            errs.add("grid", f"two cells give the same trial {t.trial_id}: remove one")
        seen[t.trial_id] = t
    if errs:
        raise SpecError(list(errs))
    if not tune.sizes:
        tune = dataclasses.replace(tune, sizes=_smallest_sizes(axes, sec))
    return Sweep(top["name"], path, trials, data, cpus, gpus, flops_per_s, tune)


# Bump when a code change (model, init, schedule, loss, data packing) changes results for the same
# config: every trial id changes with it, so old rows are never taken for new ones.
RESULTS_VERSION = 1


def content_hash(payload: dict) -> str:
    """8 hex digits of sha256 over the canonical JSON of everything that changes a result."""
    blob = json.dumps({"results_version": RESULTS_VERSION, **payload}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _trial(
    combo: dict,
    sec: dict,
    data: DataConfig,
    fp: str | None,
    budget: dict,
    cpus: float,
    gpus: float,
    min_tpp: float,
    tuned: dict | None = None,
):
    v = {k: x for k, (_, x) in combo.items()}  # axis -> value
    baseline = _model("baseline", v["size"], v["seq_len"], v["pos"], sec)
    cfg = dataclasses.replace(baseline, variant=v["variant"])
    if budget["match"] == "params":
        cfg = match_params(cfg)
    cfg = dataclasses.replace(cfg, d_ff=cfg.ff)  # resolved: d_ff unset and d_ff = 4d hash alike
    if v["lr"] == TUNED:  # resolved before the hash: the id follows the rate actually trained with
        n = model_n(cfg, budget["n_basis"])  # the variant's own N, as `tiedsweep tune` counts it
        v["lr"] = TrainConfig.lr if tuned is None else tuned_lr(tuned, cfg.variant, _label(v["size"]), n)
    acct = account(baseline if budget["tokens_basis"] == "baseline" else cfg)
    n = acct.params_non_embedding if budget["n_basis"] == "non_embedding" else acct.params_total
    train_kw = {k: x for k, x in sec["train"].items() if k not in ("lr", "schedule", "seed", "batch_tokens")}
    if "batch_tokens" in sec["train"]:  # the same tokens per step at every seq_len
        train_kw["batch_size"] = sec["train"]["batch_tokens"] // v["seq_len"]
    step_tokens = train_kw.get("batch_size", TrainConfig.batch_size) * v["seq_len"]
    fixed = sec["budget"].get("tokens")  # budget.tokens: the same tokens for every trial
    want = fixed if fixed is not None else v["tokens_per_param"] * n
    tokens = max(1, math.ceil(want / step_tokens)) * step_tokens  # whole steps, as trained
    if fixed is not None:
        v["tokens_per_param"] = tokens / n
    plan = v["schedule"]
    if plan == "wsd-branches":  # every budget shares one absolute warmup: that of the smallest budget
        smallest = max(1, math.ceil((fixed or min_tpp * n) / step_tokens)) * step_tokens
        train_kw.setdefault("warmup_tokens", round(train_kw.get("warmup_frac", TrainConfig.warmup_frac) * smallest))
    tcfg = TrainConfig(
        tokens=tokens,
        seq_len=v["seq_len"],
        lr=v["lr"],
        schedule="wsd" if plan == "wsd-branches" else plan,
        seed=v["seed"],
        **train_kw,
    )
    task = task_config({**sec["data"], "task": v["task"]}, v["num_kv_pairs"])
    trial = Trial(cfg, tcfg, data, task=task)
    flops = training_flops(cfg, v["seq_len"], tokens)
    payload = {
        "model": dataclasses.asdict(cfg),
        "train": {k: x for k, x in dataclasses.asdict(tcfg).items() if k not in RUNTIME_FIELDS},
        "data": {"fingerprint": fp} if fp else {k: x for k, x in dataclasses.asdict(data).items() if k != "cache_dir"},
        **({"task": task.identity()} if task else {}),
        **({"budget_tokens": fixed} if fixed is not None else {}),
        "budget": {"tokens_per_param": v["tokens_per_param"], **budget},
    } | ({"plan": plan} if plan == "wsd-branches" else {})
    digest = content_hash(payload)
    multiplier = f"{v['tokens_per_param']:g}".replace("+", "")  # 1e+06 -> 1e06: ids are path-safe
    trial_id = f"{cfg.variant}-{_label(v['size'])}-m{multiplier}-s{v['seed']}-{digest}"
    trial_id = f"{task.tag}-{trial_id}" if task else trial_id
    return SweepTrial(
        trial_id,
        trial,
        v["tokens_per_param"],
        **budget,
        cpus=cpus,
        gpus=gpus,
        flops=flops,
        corpus_fingerprint=fp,
        role="branch" if plan == "wsd-branches" else "trial",
    )
