"""A sweep spec: one TOML file -> parsed and validated, then expanded into trials (expand.py).

Every key is documented in sweeps/demo.toml; each section's keys are its config dataclass's fields.
Validation reports every bad field at once, one line each as `<file>: <field>: <reason>`, before
anything runs: field checks live in each config's errors() (ModelConfig, TrainConfig, TuneConfig),
and this module points each line at the spec key or axis value the field came from. Ids come from
records.ids: the same spec always gives the same ids and extending an axis leaves the others alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import sys
import types
import typing
from collections.abc import Iterator

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


from orchestrator.expand import AXES, MODEL_AXES, WSD_BRANCHES, base_model, expand, shapes_of, smallest_shapes
from orchestrator.ladder import LADDER
from orchestrator.sweep import CPU_FLOPS_PER_S, GPU_FLOPS_PER_S, Sweep, SweepTrial, TuneConfig
from records.layout import check_name
from records.tuning import TUNED, TunedFileError, read_tuned
from tiedattn.config import SPEC_SKIP, TASKS, ModelConfig, TaskConfig, TrainConfig, task_config
from tiedattn.data import DataConfig, DataError, corpus_errors, corpus_fingerprint
from tiedattn.variants import parse_variant

_TOML = {int: int, float: float, str: str, bool: bool, tuple: list}
# ~50x the most over-trained open models (Llama 3 8B: ~1,900 tokens per parameter): past it, a typo
MAX_TOKENS_PER_PARAM = 1e5


def _keys(cls: type, skip: tuple[str, ...]) -> dict[str, type]:
    """A section's keys and TOML types, derived from its config dataclass's fields."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        args = typing.get_args(hints[f.name]) if isinstance(hints[f.name], types.UnionType) else (hints[f.name],)
        kind = typing.get_origin(args[0]) or args[0]
        if f.name not in skip and kind in _TOML:
            out[f.name] = _TOML[kind]
    return out


# section -> key -> TOML type (an integer is a valid float); anything else is an unknown key. Each
# section is its config dataclass's fields, less those another part of the spec sets.
_SIZE_KEYS = ("d_model", "n_layer", "n_head")
_SECTIONS: dict[str, dict[str, type | tuple]] = {
    # the text's DataConfig fields, and a synthetic task (tiedattn/tasks.py): task = "lm" | "mqar" | ...
    # and its TaskConfig options ([data] vocab_size is then the task's vocab)
    "data": _keys(DataConfig, ()) | {"task": str} | _keys(TaskConfig, SPEC_SKIP),
    "model": _keys(ModelConfig, ("variant", *_SIZE_KEYS)),
    # tokens: the budget; seq_len: [model]'s or the grid's; runtime fields the runner sets
    # batch_tokens (spec only): batch_size = batch_tokens // seq_len per trial (expand.py)
    "train": _keys(TrainConfig, ("tokens", "seq_len", "save_at_steps", "device", "threads")) | {"batch_tokens": int},
    # tokens (spec only): the same training tokens for every trial instead of grid.tokens_per_param
    "budget": {"tokens_basis": str, "n_basis": str, "match": str, "tokens": int},
    "resources": {
        "cpus": float,
        "gpus": float,
        "flops_per_s": float,
        "step_s": float,
        "workers": int,
        "workers_from_flops": float,
    },
    "tune": _keys(TuneConfig, ()),
}
_SECTIONS["train"]["lr"] = (float, str)  # a number, or "tuned" (records.tuning)
_TOP = {"name": str, **dict.fromkeys(_SECTIONS, dict), "sizes": dict, "grid": dict}
_TEXT_KEYS = _keys(DataConfig, ())  # [data] less its task keys
_SIZE = {k: int for k in (*_SIZE_KEYS, "d_ff")}
_AXES = {k: t for k, (t, _) in AXES.items()}
_CHOICES = {"tokens_basis": ("baseline", "own"), "n_basis": ("non_embedding", "total"), "match": ("none", "params")}
_TOML_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table"}
_TOML_NAMES[list] = "a list"


class SpecError(ValueError):
    """A sweep spec that cannot run; `.errors` holds one `<file>: <field>: <reason>` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


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
    grid = {k: v for k, v in top.get("grid", {}).items() if k != "exclude"}
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
    for key, (_, section) in AXES.items():
        if section is None:
            continue
        if key in grid and key in sec[section] and key != "seq_len":  # [model] seq_len is the context size
            errs.add(f"grid.{key}", f"also set in [{section}]: keep one")
        elif key not in grid:
            default = sec[section].get(key, _axis_default(key, section))
            axes[key] = [(f"{section}.{key}", default)]
    checked = {}
    for key, values in sorted(axes.items(), key=lambda kv: list(AXES).index(kv[0]) if kv[0] in AXES else 99):
        seen, out = {}, []
        for where, given in values:
            try:
                v = _canonical(key, given, where, errs, sizes)
            except ValueError as e:
                errs.add(where, str(e).removeprefix("variant: "))
                continue
            if key == "size" and v is None:
                continue
            same = json.dumps(v, sort_keys=True)
            if same in seen:
                errs.add(where, f"repeats {seen[same]} (the same {key})")
            seen[same] = where
            if key == "size" and isinstance(given, str) and given not in LADDER:
                where = f"sizes.{given}"  # its fields' errors point at the [sizes] entry
            out.append((where, v))
        checked[key] = out
    for where, size in checked.get("size", []) if "d_ff" in grid else []:  # both would set the MLP width
        if "d_ff" in size:
            errs.add(f"{where}.d_ff", "also set in grid.d_ff: keep one")
    return checked


def _exclusions(errs: _Errors, top: dict, axes: dict, sizes: dict) -> list[dict[str, set[str]]]:
    """grid.exclude: a list of tables {axis: value or [values]}; a grid point is left out when it
    matches every key of one table (e.g. { size = "t3", tokens_per_param = [256, 1000] }). Each value
    must be one the grid's axis lists. Returned as axis -> canonical JSON of the excluded values."""
    rules = top.get("grid", {}).get("exclude", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r for r in rules):
        errs.add("grid.exclude", 'must be a list of tables, e.g. [{ size = "t3", tokens_per_param = [256] }]')
        return []
    out = []
    for i, rule in enumerate(rules):
        keep: dict[str, set[str]] = {}
        for key, given in rule.items():
            where = f"grid.exclude[{i}].{key}"
            if key not in axes or key not in top["grid"]:
                errs.add(where, f"not a grid axis of this spec (the grid lists {', '.join(sorted(axes))})")
                continue
            listed = {json.dumps(v, sort_keys=True) for _, v in axes[key]}
            keep[key] = set()
            for v in given if isinstance(given, list) else [given]:
                if not _type_ok(v, _AXES[key]):
                    errs.add(where, _bad_type(v, _AXES[key]))
                    continue
                try:
                    v = float(v) if _AXES[key] is float else v
                    canon = json.dumps(_canonical(key, v, where, errs, sizes), sort_keys=True)
                except ValueError as e:
                    errs.add(where, str(e).removeprefix("variant: "))
                    continue
                if canon not in listed:
                    errs.add(where, f"{json.dumps(v)} is not in grid.{key}: it excludes nothing")
                keep[key].add(canon)
        out.append(keep)
    return out


def _axis_default(key: str, section: str):
    """An axis's value when neither the grid nor its section sets it: the config's default; a [data]
    axis (task, num_kv_pairs) defaults to text ("lm") and the task's own default (None)."""
    if section == "data":
        return {"task": "lm"}.get(key)
    return getattr(ModelConfig if section == "model" else TrainConfig, key, None)


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
    if key == "tokens_per_param" and v is not None and v > MAX_TOKENS_PER_PARAM:
        raise ValueError(f"must be <= {MAX_TOKENS_PER_PARAM:g} (a typo? Chinchilla is 20), got {v:g}")
    if key == "pos" and v not in ("rope", "learned"):
        raise ValueError(f"must be 'rope' or 'learned', got '{v}'")
    if key == "seed" and v < 0:
        raise ValueError(f"must be >= 0, got {v}")
    if key == "lr" and isinstance(v, str) and v != TUNED:
        raise ValueError(f'must be a number or "{TUNED}" (the rate `tiedsweep tune` found), got {v!r}')
    if key == "lr":
        return v if v == TUNED else float(v)
    return v


def _combination_errors(errs: _Errors, axes: dict, sec: dict) -> None:
    """ModelConfig/TrainConfig checks over every combination of valid axis values, each line
    pointing at the axis value or section key that the field came from."""
    model, train = sec["model"], sec["train"]
    ctx = model.get("seq_len")  # context / position table size; None = each trial's seq_len
    sizes = []  # a shape that cannot work with any variant gets one line per field, not one per variant
    for sw, s in axes["size"]:
        own = [e.split(": ", 1) for e in base_model("baseline", s, {"seq_len": 1, "pos": "learned"}, sec).errors()]
        for field, reason in own:
            if field in s:
                errs.add(f"{sw}.{field}", reason)
        sizes += [] if any(field in s for field, _ in own) else [(sw, s)]
    keys = ("variant", "seq_len", *MODEL_AXES)
    for (sw, s), *combo in itertools.product(sizes, *(axes[k] for k in keys)):
        point = {k: x for k, (_, x) in zip(keys, combo, strict=True)}
        where = {k: w for k, (w, _) in zip(keys, combo, strict=True)} | {k: f"{sw}.{k}" for k in s}
        where["vocab_size"] = "model.vocab_size" if "vocab_size" in model else "data.vocab_size"
        cfg = base_model(point["variant"], s, point, sec)
        for err in cfg.errors():
            field, reason = err.split(": ", 1)
            suffix = f" (size {cfg.label})" if field == "variant" else ""
            errs.add(where.get(field, f"model.{field}"), reason + suffix)
        T = point["seq_len"]
        if ctx is not None and T > ctx:
            kind = "learned position table" if point["pos"] == "learned" else "model context (rope cache)"
            errs.add(where["seq_len"], f"{T} exceeds the {kind} of {ctx} (model.seq_len)")
    tasks = itertools.product(axes["seq_len"], axes["task"], axes["num_kv_pairs"])
    for (tw, T), (aw, name), (nw, n) in tasks:
        task = task_config({**sec["data"], "task": name}, n)
        if (task is None or task.name != "mqar") and n is not None:
            errs.add(nw, 'only mqar reads it: set data.task = "mqar"')
        vocab = base_model("baseline", {}, {"seq_len": T, "task": name}, sec).vocab_size
        for err in task.errors(T, vocab) if task else []:
            field, reason = err.split(": ", 1)
            errs.add({"seq_len": tw, "num_kv_pairs": nw, "task": aw}.get(field, f"data.{field}"), reason)
    for (lw, lr), (cw, schedule) in itertools.product(axes["lr"], axes["schedule"]):
        where = {"lr": lw, "schedule": cw}
        lr = TrainConfig.lr if lr == TUNED else lr  # tuned rates are > 0; the schedule's checks still apply
        plain = "wsd" if schedule == WSD_BRANCHES else schedule  # branches are WSD runs (orchestrator/branches.py)
        kw = {k: x for k, x in train.items() if k != "batch_tokens"}
        for err in TrainConfig(tokens=1, **{**kw, "lr": lr, "schedule": plain}).errors():
            field, reason = err.split(": ", 1)
            errs.add(
                where.get(field, f"train.{field}"),
                reason.replace("'cosine' or 'wsd', got", "'cosine', 'wsd' or 'wsd-branches', got"),
            )
    if "batch_tokens" in train and "batch_size" in train:
        errs.add("train.batch_tokens", "also train.batch_size: keep one")
    if "batch_tokens" in train and not train["batch_tokens"] >= max(T for _, T in axes["seq_len"]):
        errs.add("train.batch_tokens", f"must be >= the longest seq_len, got {train['batch_tokens']}")


def _data_errors(errs: _Errors, d: dict, fingerprint: bool) -> str | None:
    """Checks that touch no file, then (when fingerprint) the corpus itself; its fingerprint or None."""
    n = len(errs)
    data = DataConfig(**d)
    for err in data.errors():
        field, reason = err.split(": ", 1)
        errs.add(f"data.{field}", reason)
    if not fingerprint or len(errs) > n:
        return None
    for err in corpus_errors(data):  # the files themselves: every problem, not the first
        field, reason = err.split(": ", 1)
        errs.add(f"data.{field}", reason)
    if len(errs) > n:
        return None
    try:
        return corpus_fingerprint(data)
    except (DataError, OSError) as e:
        field, reason = str(e).split(": ", 1) if ": " in str(e) else ("corpus", str(e))
        errs.add(f"data.{field}", reason)  # DataError messages start with their field: "corpus: ..."
        return None


def _tune_section(errs: _Errors, tune: dict, axes: dict, sizes: dict, sec: dict) -> TuneConfig:
    """[tune], its sizes as shape ids of grid shapes (left empty when not given: see smallest_shapes)."""
    grid = {m.label for _, s in axes.get("size", []) for m in shapes_of(s, axes, sec)}
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
        for label in (m.label for m in shapes_of(size, axes, sec)):
            if label not in grid:
                errs.add(where, f"size {label} is not in grid.size (tuning trains the sweep's own cells)")
            elif label in labels:
                errs.add(where, f"repeats size {label}")
            labels.append(label)
    cfg = TuneConfig(**{**tune, "sizes": tuple(labels)})
    for err in cfg.errors():
        field, reason = err.split(": ", 1)
        errs.add(f"tune.{field}", reason)
    return cfg


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
    for key in ("cpus", "gpus", "flops_per_s", "step_s", "workers_from_flops"):
        if key in res and not math.isfinite(res[key]):
            errs.add(f"resources.{key}", f"must be a finite number, got {res.pop(key)}")
    cpus, gpus = res.get("cpus", 1.0), res.get("gpus", 0.0)
    if cpus <= 0:
        errs.add("resources.cpus", f"must be > 0, got {cpus:g}")
    if gpus < 0:
        errs.add("resources.gpus", f"must be >= 0 (fractions such as 0.25 share a GPU), got {gpus:g}")
    workers, workers_from = res.get("workers", 1), res.get("workers_from_flops", 0.0)
    if workers < 1:
        errs.add("resources.workers", f"must be >= 1 (data-parallel workers per trial), got {workers}")
    flops_per_s = res.get("flops_per_s", GPU_FLOPS_PER_S * gpus if gpus > 0 else CPU_FLOPS_PER_S)
    if flops_per_s <= 0:
        errs.add("resources.flops_per_s", f"must be > 0, got {flops_per_s:g}")
    step_s = res.get("step_s", 0.0)
    if step_s < 0:
        errs.add("resources.step_s", f"must be >= 0 (seconds of overhead per optimizer step), got {step_s:g}")
    sizes: dict[str, dict | None] = dict(LADDER)
    for name, table in top.get("sizes", {}).items():
        if name in LADDER:
            errs.add(f"sizes.{name}", "is a built-in size name (orchestrator/ladder.py): pick another")
        elif not isinstance(table, dict):
            errs.add(f"sizes.{name}", _bad_type(table, dict))
        else:
            sizes[name] = _size(errs, table, f"sizes.{name}")
    axes = _axes(errs, top, sec, sizes)
    exclude = _exclusions(errs, top, axes, sizes)
    shapes = all(axes.get(k) for k in ("size", "seq_len", *MODEL_AXES))  # every shape of the grid is known
    tune = _tune_section(errs, sec["tune"], axes, sizes, sec) if shapes else TuneConfig()
    for where, _ in (x for x in axes.get("lr", []) if x[1] == TUNED):
        if tuned is None and not untuned_ok:
            errs.add(where, f'"{TUNED}" needs tuning results: run tiedsweep tune {path} first')
        for vw, v in axes.get("variant", []) if tuned is not None else []:
            if (tuned.get(v) or {}).get("rule") is None:
                errs.add(vw, f'no tuned learning rate for {v} (lr = "{TUNED}"): run tiedsweep tune {path}')
    if shapes and all(axes.get(k) for k in ("variant", "lr", "schedule")):
        _combination_errors(errs, axes, sec)
    text = {k: v for k, v in sec["data"].items() if k in _TEXT_KEYS}
    lm = any(name == "lm" for _, name in axes.get("task", []))
    fp = _data_errors(errs, text, fingerprint) if lm else None
    if errs:
        raise SpecError(list(errs))
    data = DataConfig(**{k: v for k, v in text.items() if lm or k != "vocab_size"})  # tasks: vocab is the task's
    budget = {k: sec["budget"].get(k, c[0]) for k, c in _CHOICES.items()}
    trials = expand(axes, sec, data, fp, budget, (cpus, gpus), tuned, exclude)  # WSD branches planned there
    if not trials:
        raise SpecError(["grid.exclude: leaves no trials"])
    # [resources] workers: data-parallel workers for the trials of at least workers_from_flops (not in ids)
    if workers != 1:
        trials = [dataclasses.replace(t, workers=workers) if t.flops >= workers_from else t for t in trials]
    for t in trials:
        if t.trial.train.batch_size % t.workers:
            errs.add("resources.workers", f"{t.trial_id}: batch_size {t.trial.train.batch_size} does not split "
                     f"evenly over {t.workers} workers")  # fmt: skip
            break
    for repeated in _repeated_ids(trials):  # e.g. two size names for one shape
        errs.add("grid", f"two cells give the same trial {repeated}: remove one")
    if errs:
        raise SpecError(list(errs))
    if not tune.sizes:
        tune = dataclasses.replace(tune, sizes=smallest_shapes(axes, sec))
    return Sweep(top["name"], path, trials, data, cpus, gpus, flops_per_s, tune, step_s)


def _repeated_ids(trials: list[SweepTrial]) -> Iterator[str]:
    """Each trial id that an earlier trial has too. An id is its prefix and a hash (records.ids), so
    only trials whose prefix repeats have their ids made here: none of a grid whose prefixes all
    differ, where hashing every id was a quarter of a 10^5-trial dry run's CPU."""
    firsts: dict[str, SweepTrial] = {}
    made: dict[str, set[str]] = {}  # prefix -> the ids of its trials so far, once it repeats
    for t in trials:
        prefix = t.id_prefix()
        first = firsts.setdefault(prefix, t)
        if first is not t:
            ids = made.setdefault(prefix, {first.trial_id})
            if t.trial_id in ids:
                yield t.trial_id
            ids.add(t.trial_id)


def _uses_tuning(raw: object) -> bool:
    """Whether a raw spec has lr = "tuned" anywhere (a [train] value or a grid axis)."""
    if isinstance(raw, dict):
        return any(
            (k == "lr" and TUNED in (v if isinstance(v, list) else [v])) or _uses_tuning(v) for k, v in raw.items()
        )
    return isinstance(raw, list) and any(_uses_tuning(v) for v in raw)


def tuned_for_spec(spec_path: str, results_dir: str) -> dict | None:
    """records.tuning.read_tuned for the sweep a spec names, read before the spec is validated
    (load_spec needs it for lr = "tuned"). A damaged lr.json is ignored, with a warning, by a spec
    that does not use tuned rates; for one that does it is a SpecError naming the file."""
    try:
        with open(spec_path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None  # load_spec reports it
    name = raw.get("name")
    if not isinstance(name, str) or "/" in name:
        return None
    try:
        return read_tuned(results_dir, name)
    except TunedFileError as e:
        if _uses_tuning(raw):
            raise SpecError([f'{spec_path}: train.lr: "{TUNED}" needs {e}']) from None
        print(f"warning: {e} (ignored: {spec_path} does not use tuned rates)", file=sys.stderr)
        return None
