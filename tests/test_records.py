"""The identity-and-record layer: one id function for every kind of trial, the schema follows the
config dataclasses, and results of another results version are refused in one line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import pytest

from analysis import AnalysisError
from analysis.tables import load_trials
from orchestrator.spec import load_spec
from records.ids import RESULTS_VERSION, TrialIds, cell_id, data_key, trial_id
from records.manifest import ResultsVersionError, manifest_ids, read_manifest_doc
from records.schema import MODEL_COLUMNS, TRAIN_COLUMNS, TRIALS_SCHEMA
from records.store import write_attempt
from tiedattn.data import DataConfig
from tiedattn.model import ModelConfig
from tiedattn.tasks import TaskConfig
from tiedattn.train import RUNTIME_FIELDS, TrainConfig
from tiedsweep.cli import main

BRANCHES = """
name = "br"
[data]
corpus = "stdlib"
vocab_size = 512
max_bytes = 1_500_000
cache_dir = "{cache}"
[train]
cooldown_frac = 0.25
[grid]
variant = ["QKV"]
size = ["t1"]
tokens_per_param = [2, 4]
schedule = ["wsd-branches"]
"""


def test_every_config_field_is_a_column_unless_declared_runtime():
    model = {f.name for f in dataclasses.fields(ModelConfig)} - {"seq_len"}  # the trained context: train's
    train = {f.name for f in dataclasses.fields(TrainConfig)} - set(RUNTIME_FIELDS) - {"tokens"}
    assert set(MODEL_COLUMNS) == model and set(TRAIN_COLUMNS) == train
    assert {*model, *train, "cell_id", "shape_id", "variant_paper"} <= set(TRIALS_SCHEMA.names)


def test_a_model_field_added_later_keeps_the_ids_of_trials_without_it():
    """init (added after results version 2) joins the hash only away from "gpt2", every earlier
    trial's init: the id below is the one this trial had before the field existed."""
    model = ModelConfig(d_model=32, n_layer=1, n_head=4)
    budget = {"tokens_per_param": 20, "tokens_basis": "baseline", "n_basis": "non_embedding", "match": "none"}
    args = (TrainConfig(tokens=655_360), {"fingerprint": "f"}, budget)
    assert trial_id(model, *args, shape_id=model.label) == "baseline-d32l1h4f128-m20-s0-f1e53381"
    other = dataclasses.replace(model, init="pytorch")
    assert trial_id(other, *args, shape_id=model.label) != "baseline-d32l1h4f128-m20-s0-f1e53381"


def test_ids_of_trunks_branches_and_proxies(tmp_path):
    sweeps = []
    for cache in ("a", "b"):  # the token cache is where tokens live, not which tokens: same ids
        (tmp_path / f"{cache}.toml").write_text(BRANCHES.format(cache=tmp_path / cache))
        sweeps.append(load_spec(str(tmp_path / f"{cache}.toml"), fingerprint=False))
    assert [st.trial_id for st in sweeps[0].trials] == [st.trial_id for st in sweeps[1].trials]
    (trunk,) = [st for st in sweeps[0].trials if st.role == "trunk"]
    branch = next(st for st in sweeps[0].trials if st.role == "branch")
    assert trunk.trial_id.startswith("trunk-baseline-d32l1h4f128-s0-") and branch.depends_on == trunk.trial_id
    t = branch.trial
    args = (t.model, t.train, data_key(t.data, None), branch.budget)
    assert branch.trial_id == trial_id(*args, shape_id=branch.shape_id, role="branch", depends_on=trunk.trial_id)
    assert branch.trial_id != trial_id(*args, shape_id=branch.shape_id, role="branch", depends_on="trunk-other")
    proxy = trial_id(*args, shape_id=branch.shape_id, role="proxy")
    faster = dataclasses.replace(t.train, lr=t.train.lr * 2)  # a proxy's id leaves its lr to the tuner
    assert proxy.startswith("tune-baseline-d32l1h4f128-") and proxy == trial_id(
        t.model, faster, data_key(t.data, None), branch.budget, shape_id=branch.shape_id, role="proxy"
    )
    assert data_key(DataConfig(cache_dir="x"), None) == data_key(DataConfig(cache_dir="y"), None)


def test_results_of_another_version_are_refused_in_one_line(tmp_path):
    old = {"name": "s", "spec_path": "s.toml", "spec_text": "", "trials": [{"trial_id": "baseline-d32l1h4-m1-s0-0"}]}
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "s.json").write_text(json.dumps(old))  # version 1 wrote no results_version
    with pytest.raises(ResultsVersionError) as info:
        read_manifest_doc(str(tmp_path), "s")
    line = str(info.value)
    assert "\n" not in line and f"results version 1, this tiedsweep reads version {RESULTS_VERSION}" in line
    with pytest.raises(ResultsVersionError):
        manifest_ids(str(tmp_path), "s")
    row = {"trial_id": "baseline-d32l1h4-m1-s0-0", "attempt": 0, "status": "failed", "variant": "baseline"}
    write_attempt(str(tmp_path), "s", row | _config(), [])
    with pytest.raises(AnalysisError, match="results version 1"):
        load_trials(tmp_path)
    assert main(["status", str(tmp_path)]) == 2
    assert main(["resume", str(tmp_path)]) == 2


def _config() -> dict:
    """Every required config column of a trials row, any valid value."""
    values = {"string": "x", "int64": 1, "double": 1.0, "bool": True}
    out = {f.name: values[str(f.type)] for f in TRIALS_SCHEMA if not f.nullable and str(f.type) in values}
    out = {k: v for k, v in out.items() if k not in ("trial_id", "attempt", "status", "variant", "schema_version")}
    return out | {"tokens_basis": "baseline", "n_basis": "non_embedding", "match": "none"}


def test_the_manifest_is_versioned(tmp_path):
    path = Path(tmp_path) / "manifests"
    path.mkdir()
    doc = {"results_version": RESULTS_VERSION, "name": "s", "spec_path": "", "spec_text": "", "trials": []}
    (path / "s.json").write_text(json.dumps(doc))
    assert manifest_ids(str(tmp_path), "s") == set()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"results_version": 2, "name": "s", "trials": [', "not a manifest (invalid JSON"),
        ('{"results_version": 2, "name": "s", "spec_path": "", "trials": []}', "manifest lacks spec_text"),
        ('{"results_version": 2, "format": 9, "name": "s", "trials": []}', "manifest format 9"),
        (
            '{"results_version": 2, "name": "s", "spec_path": "", "spec_text": "", "trials": [{"trial_id": "x"}]}',
            "trials[0] does not match",
        ),
    ],
)
def test_damaged_manifest_is_refused_in_one_line(tmp_path, capsys, content, says):
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "s.json").write_text(content)
    for command in ("status", "resume"):
        assert main([command, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(tmp_path / "manifests" / "s.json") in err and says in err, err


# Ids as main computed them before TrialIds (76d8d65 for text, 3af715e for tasks): a results
# directory's rows are found by these strings, so a change here orphans every recorded trial. Change
# them only with RESULTS_VERSION.
PINNED_GRID = """
name = "pin"
[data]
corpus = "stdlib"
vocab_size = 512
max_bytes = 1_500_000
[train]
batch_size = 8
cooldown_frac = 0.25
[budget]
match = "params"
[grid]
variant = ["QKV", "Q-K=V", "GQA-2"]
size = ["t1", {d_model = 64, n_layer = 2, n_head = 4, d_ff = 96}]
tokens_per_param = [1, 2.5]
seq_len = [32, 64]
seed = [0, 1]
lr = [1e-3, 1]
schedule = ["cosine", "wsd-branches"]
"""
PINNED = {  # position in the expanded grid -> (trial id, cell id)
    0: ("baseline-d32l1h4f128-m1-s0-9a1ed984", "d32l1h4f128-m1-s0-63371cea"),
    5: ("baseline-d32l1h4f128-m1-s0-16c0cfb1", "d32l1h4f128-m1-s0-27d2ae07"),
    96: ("trunk-baseline-d32l1h4f128-s0-642e5edd", "trunk-baseline-d32l1h4f128-s0-642e5edd"),
    100: ("baseline-d32l1h4f128-m1-s0-037d7044", "d32l1h4f128-m1-s0-679a465d"),
    237: ("trunk-gqa2-d64l2h4f96-s1-6b010913", "trunk-gqa2-d64l2h4f96-s1-6b010913"),
    239: ("gqa2-d64l2h4f96-m2.5-s1-eadea196", "d64l2h4f96-m2.5-s1-991b1193"),
}


PINNED_TASK_GRID = """
name = "mix"
[data]
corpus = "stdlib"
vocab_size = 512
max_bytes = 1_500_000
[train]
batch_tokens = 512
cooldown_frac = 0.25
[budget]
tokens = 40_000
tokens_basis = "own"
[grid]
variant = ["QKV", "Q-K=V", "GQA-2"]
size = ["t1", "t2"]
task = ["mqar"]
num_kv_pairs = [2, 4]
seq_len = [32, 64]
seed = [0, 1]
lr = [1e-3, 1]
schedule = ["cosine", "wsd-branches"]
exclude = [{ num_kv_pairs = 4, seed = 1 }, { size = "t2", seq_len = 64, variant = ["GQA-2", "QKV"] }]
"""
PINNED_TASK = {
    0: ("mqar-kv2-baseline-d32l1h4f128-m3.16792-s0-7ac18d51", "d32l1h4f128-m3.16792-s0-1a03632a"),
    7: ("mqar-kv4-baseline-d32l1h4f128-m3.16792-s0-6ef56288", "d32l1h4f128-m3.16792-s0-95752698"),
    60: ("mqar-kv2-trunk-baseline-d32l1h4f128-s0-fb01269b", "mqar-kv2-trunk-baseline-d32l1h4f128-s0-fb01269b"),
    179: ("mqar-kv2-gqa2-d48l2h4f192-m0.778805-s1-80463c30", "d48l2h4f192-m0.778805-s1-0cd04692"),
}


def _digest(strings) -> str:
    return hashlib.sha256("\n".join(strings).encode()).hexdigest()[:16]


def test_ids_are_pinned(tmp_path):
    (tmp_path / "pin.toml").write_text(PINNED_GRID)
    trials = load_spec(str(tmp_path / "pin.toml"), fingerprint=False).trials
    assert len(trials) == 240 and {i: (trials[i].trial_id, trials[i].cell_id) for i in PINNED} == PINNED
    assert _digest(t.trial_id for t in trials) == "36fe1802eb4258cf"  # every id, in grid order
    assert _digest(t.cell_id for t in trials) == "a8b68086f6d8c150"
    (tmp_path / "task.toml").write_text(PINNED_TASK_GRID)  # tasks, budget.tokens, batch_tokens, exclude
    trials = load_spec(str(tmp_path / "task.toml"), fingerprint=False).trials
    assert len(trials) == 180 and {i: (trials[i].trial_id, trials[i].cell_id) for i in PINNED_TASK} == PINNED_TASK
    assert _digest(t.trial_id for t in trials) == "c196f054812814d1"
    assert _digest(t.cell_id for t in trials) == "45113555eb28d88b"
    m = ModelConfig(variant="tied_kv", d_model=64, n_layer=2, n_head=4, seq_len=128)
    t = TrainConfig(tokens=100_000, seq_len=128, lr=3e-3, seed=1)
    b = {"tokens_per_param": 20.0, "tokens_basis": "baseline", "n_basis": "non_embedding", "match": "none"}
    fp, shape = {"fingerprint": "abc123"}, "d64l2h4f256"
    assert trial_id(m, t, data_key(DataConfig(), None), b, shape_id=shape) == "tied_kv-d64l2h4f256-m20-s1-dcd1265d"
    assert trial_id(m, t, fp, b, shape_id=shape, role="proxy") == "tune-tied_kv-d64l2h4f256-fb26ba47"
    assert trial_id(m, t, fp, b, shape_id=shape, role="trunk") == "trunk-tied_kv-d64l2h4f256-s1-db1b2c6d"
    branch = trial_id(m, t, fp, b, shape_id=shape, role="branch", depends_on="trunk-x-1")
    assert branch == "tied_kv-d64l2h4f256-m20-s1-101acb91"
    mqar, sort = TaskConfig(), TaskConfig(name="sort", list_len=8)
    assert trial_id(m, t, fp, b, shape_id=shape, task=mqar) == "mqar-kv8-tied_kv-d64l2h4f256-m20-s1-b2a8d8cc"
    assert trial_id(m, t, fp, b, shape_id=shape, role="proxy", task=sort) == "sort-l8-tune-tied_kv-d64l2h4f256-085a9e3e"


# Values that print apart but compare (and hash) alike, or that JSON prints its own way: the cached
# parts of TrialIds must never hand one the other's text.
_TRICKY = [0, 0.0, -0.0, 1, 1.0, True, False, None, 2.5, float("inf"), float("nan"), 10**20, 1e20, "1", "",
           "é ✓ \"q\"", (1, 2), (1.0, 2), [3], {"k": 1}, {"k": 1.0}]  # fmt: skip
_NUMBERS = [x for x in _TRICKY if isinstance(x, (int, float))]  # tokens_per_param: the id's prefix formats it


def _random_config(rng: random.Random, cls: type, fields: dict) -> object:
    kw = {}
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING
        if rng.random() < 0.3 or (required and f.name not in fields):
            kw[f.name] = rng.choice(_TRICKY)
        elif (required or rng.random() < 0.5) and f.name in fields:
            kw[f.name] = rng.choice(fields[f.name])
    return cls(**kw)


def test_trial_ids_match_trial_id_on_random_configs():
    """TrialIds (the grid's fast path) against trial_id()/cell_id() (the definition), on configs whose
    fields take type-confusable values; one TrialIds per token stream, so its caches see them all."""
    rng = random.Random(0)
    models = {"variant": ["baseline", "tied_kv", "gqa2"], "d_model": [32, 64], "d_ff": [None, 96, 96.0],
              "init": ["gpt2", "pytorch"]}  # fmt: skip
    trains = {"tokens": [1000, 2048], "lr": [1e-3, 1, 1.0], "seed": [0, 1, True], "schedule": ["cosine", "wsd"]}
    streams = [{"fingerprint": "abc"}, data_key(DataConfig(), None), {"fingerprint": "abc", "x": [1, 1.0]}]
    for data in streams:
        fixed = {"model": {"bias": rng.choice(_TRICKY)}, "train": {}, "data": data, "budget": {}}
        ids = TrialIds(data, fixed)
        for _ in range(150):
            m = _random_config(rng, ModelConfig, models)
            t = _random_config(rng, TrainConfig, trains)
            budget = {"tokens_per_param": rng.choice(_NUMBERS), "match": rng.choice(["none", 1, 1.0])}
            if rng.random() < 0.2:
                budget[rng.choice(["n_basis", "zz", "é"])] = rng.choice(_TRICKY)
            task = rng.choice([None, None, TaskConfig(), TaskConfig(name="sort", list_len=rng.choice([8, 8.0]))])
            for role in rng.sample(["trial", "trunk", "branch", "proxy"], 4):  # the same objects in every role
                kw = {"shape_id": "s", "role": role, "depends_on": rng.choice([None, "", "trunk-a-1"]), "task": task}
                assert ids.trial(m, t, budget, **kw) == trial_id(m, t, data, budget, **kw), (m, t, budget, kw)
            coordinates = {"size": {"d_model": rng.choice(_TRICKY)}, "seed": rng.choice(_TRICKY),
                           "tokens_per_param": rng.choice(_NUMBERS)}  # fmt: skip
            assert ids.cell("s", coordinates) == cell_id("s", coordinates, fixed)


def test_trial_ids_keep_apart_budgets_that_compare_equal():
    """TrialIds caches a budget's JSON: budgets equal as Python values but printed apart by JSON
    (1 and 1.0 and True, 0.0 and -0.0, (1, 2) and (1.0, 2), keys 1 and 1.0) each get their own id."""
    m, t = ModelConfig(), TrainConfig(tokens=1000)
    budgets = [
        {"tokens_per_param": x, "match": y} for x in (1, 1.0, True, 0.0, -0.0) for y in ("none", (1, 2), (1.0, 2))
    ]
    budgets += [{1: "a"}, {1.0: "a"}, {True: "a"}]
    ids = TrialIds({"fingerprint": "abc"})
    for _ in range(2):  # the second pass reads the cache
        for b in budgets:
            for role in ("trial", "trunk"):
                assert ids.trial(m, t, b, shape_id="s", role=role) == trial_id(
                    m, t, {"fingerprint": "abc"}, b, shape_id="s", role=role
                ), b
