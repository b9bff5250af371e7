"""The identity-and-record layer: one id function for every kind of trial, the schema follows the
config dataclasses, and results of another results version are refused in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from analysis import AnalysisError
from analysis.tables import load_trials
from orchestrator.spec import load_spec
from records.ids import RESULTS_VERSION, data_key, trial_id
from records.manifest import ResultsVersionError, manifest_ids, read_manifest_doc
from records.schema import MODEL_COLUMNS, TRAIN_COLUMNS, TRIALS_SCHEMA
from records.store import write_attempt
from tiedattn.data import DataConfig
from tiedattn.model import ModelConfig
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
