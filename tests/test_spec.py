"""Sweep specs: the shipped specs load, ids are stable content hashes, budgets and matching are
what the spec says, and a bad spec reports every mistake at once."""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path

import pytest

from orchestrator import plan
from orchestrator.plan import dry_run_table
from orchestrator.spec import SpecError, Sweep, load_spec
from records.ids import trial_id
from records.schema import TRIALS_SCHEMA
from tiedattn.accounting import account

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
BASE = """
name = "t"
[data]
corpus = "stdlib"
vocab_size = 512
max_bytes = 1_500_000
[grid]
variant = ["QKV", "Q-K=V", "Q=K=V"]
size = ["t1", "t2"]
tokens_per_param = [1, 10]
"""
ID = re.compile(r"[a-z0-9_]+-d\d+l\d+h\d+f\d+(-[a-z]+)?-m[0-9.e-]+-s\d+-[0-9a-f]{8}")


def _load(tmp_path: Path, text: str, name: str = "spec.toml", **kw) -> Sweep:
    path = tmp_path / name
    path.write_text(text)
    return load_spec(str(path), **kw)


def _each_once(errors: list[str], path, expected: list[str]) -> None:
    """Every expected error (a prefix after the file name) is reported exactly once, and nothing else."""
    for want in expected:
        assert sum(line.startswith(f"{path}: {want}") for line in errors) == 1, (want, errors)
    assert len(errors) == len(expected), "\n".join(errors)


def _errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        _load(tmp_path, text)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def test_demo_spec_loads():
    sweep = load_spec(str(SWEEPS / "demo.toml"))
    trials = sweep.trials
    rows = [t.row() for t in trials]
    assert len({r["variant"] for r in rows}) >= 4
    assert len({(r["d_model"], r["n_layer"], r["n_head"]) for r in rows}) >= 3
    assert len({r["tokens_per_param"] for r in rows}) >= 3
    assert len({t.trial_id for t in trials}) == len(trials) and all(ID.fullmatch(t.trial_id) for t in trials)
    required = {f.name for f in TRIALS_SCHEMA if not f.nullable} - {"trial_id", "attempt", "status", "schema_version"}
    ids = {"cell_id", "shape_id", "variant_paper", "branch_of"}  # nullable: absent from older files
    assert required | ids <= set(rows[0]) <= set(TRIALS_SCHEMA.names)  # every config column, nothing else
    assert all(r["corpus_fingerprint"] and r["corpus"] == "stdlib" for r in rows)
    assert all(t.trial.workdir is None and t.cpus == 1 and t.gpus == 0 for t in trials)
    # 2 one-thread trials at a time within ~5 minutes at 3.5e10 FLOP/s (its largest trials, measured
    # on 2 busy cores)
    assert sum(t.flops for t in trials) / 3.5e10 / 2 < 300


def test_overtrain_spec_loads_without_its_corpus():
    sweep = load_spec(str(SWEEPS / "overtrain.toml"), fingerprint=False, untuned_ok=True)  # lr = "tuned"
    rows = [t.row() for t in sweep.trials]
    assert sweep.tune.sizes and sweep.tune.n_trials >= 8
    assert {r["variant"] for r in rows} == {"baseline", "tied_kv", "tied_qk", "tied_qkv", "gqa4", "tied_kv_gqa4"}
    n = sorted({account(t.trial.model).params_non_embedding for t in sweep.trials if t.row()["variant"] == "baseline"})
    assert 9e6 < n[0] < 12e6 and 250e6 < n[-1] < 350e6 and len(n) >= 5
    assert {r["tokens_per_param"] for r in rows} >= {1.0, 1000.0}
    assert {r["seq_len"] for r in rows} == {1024} and len({r["seed"] for r in rows}) == 3
    assert sweep.gpus > 0 and all(r["vocab_size"] == 32768 and r["corpus_fingerprint"] is None for r in rows)
    big = {t.trial_id for t in sweep.trials if t.flops >= 1e20}  # 300M x 300 and x 1000, 150M x 1000
    assert len(big) == 6 * 3 * 3 and all(t.workers == (8 if t.trial_id in big else 1) for t in sweep.trials)
    with pytest.raises(SpecError, match=r"overtrain.toml: data.corpus: no manifest.json in '/data/fineweb-bpe32k'"):
        load_spec(str(SWEEPS / "overtrain.toml"), untuned_ok=True)


@pytest.mark.parametrize("spec", sorted(p.name for p in SWEEPS.glob("*.toml")))
def test_every_shipped_sweep_loads(spec):
    """Each spec in sweeps/ loads as shipped (its corpus not prepared, its rates not yet tuned): a
    sweep a user copies never starts with a SpecError."""
    sweep = load_spec(str(SWEEPS / spec), fingerprint=False, untuned_ok=True)
    assert sweep.trials and len({t.trial_id for t in sweep.trials}) == len(sweep.trials)


def test_same_spec_same_ids_and_extending_an_axis_keeps_them(tmp_path):
    first = [t.trial_id for t in _load(tmp_path, BASE).trials]
    assert first == [t.trial_id for t in _load(tmp_path, BASE, "again.toml").trials]
    assert len(first) == 3 * 2 * 2
    wider = BASE.replace("[1, 10]", "[1, 10, 30]").replace('"t2"]', '"t2", "t3"]')
    second = [t.trial_id for t in _load(tmp_path, wider).trials]
    assert set(first) <= set(second) and len(set(second) - set(first)) == 3 * 3 * 3 - 3 * 2 * 2
    assert all("-m30-" in i or "-d64l2h4f256-" in i for i in set(second) - set(first))
    # runtime settings leave ids alone; anything that changes the result changes them all
    runtime = BASE.replace("[data]\n", "[data]\ncache_dir = 'elsewhere'\n")
    runtime += "[train]\ncheckpoint_every_s = 5.0\ncompile = true\n"
    assert [t.trial_id for t in _load(tmp_path, runtime).trials] == first
    # so are the device peak and data-parallel workers, which go to the trials of >= workers_from_flops only
    flops = sorted(t.flops for t in _load(tmp_path, BASE).trials)
    scaled = runtime.replace("compile = true\n", "compile = true\npeak_tflops = 989.0\n")
    scaled += f"[resources]\nworkers = 2\nworkers_from_flops = {flops[len(flops) // 2]!r}\n"
    sweep = _load(tmp_path, scaled)
    assert [t.trial_id for t in sweep.trials] == first and {t.workers for t in sweep.trials} == {1, 2}
    assert all((t.workers == 2) == (t.flops >= flops[len(flops) // 2]) for t in sweep.trials)
    errors = _errors(tmp_path, BASE + "[resources]\nworkers = 3\n")
    assert any("resources.workers" in e and "split" in e for e in errors), errors
    for change in ("[train]\nweight_decay = 0.0\n", "[model]\nnorm = 'rmsnorm'\n"):
        assert not set(first) & {t.trial_id for t in _load(tmp_path, BASE + change).trials}
    other_data = BASE.replace("1_500_000", "1_000_000")  # another token stream, another fingerprint
    assert not set(first) & {t.trial_id for t in _load(tmp_path, other_data).trials}


def test_two_sizes_of_one_shape_are_refused_and_ids_are_made_when_read(tmp_path):
    """Two size names for one shape give the same trials: each repeated id is named once. Ids are
    made when first read (load_spec hashes only those whose prefix repeats), as trial_id() makes
    them, and a pickled trial (to a Ray worker) carries them made."""
    twice = BASE.replace('"t2"]', "{ d_model = 32, n_layer = 1, n_head = 4, d_ff = 128 }]")  # t1, d_ff spelled out
    errors = _errors(tmp_path, twice)
    first = {t.trial_id for t in _load(tmp_path, BASE).trials if "-d32l1h4f128-" in t.trial_id}
    path = tmp_path / "spec.toml"
    assert len(first) == 3 * 2 and sorted(errors) == sorted(
        f"{path}: grid: two cells give the same trial {i}: remove one" for i in first
    )
    sweep = _load(tmp_path, BASE)
    st = sweep.trials[0]
    other = sweep.trials[4]  # the next variant's trial of the same cell
    assert not isinstance(st.__dict__["trial_id"], str) and not isinstance(st.__dict__["cell_id"], str)
    t = st.trial
    data = {"fingerprint": st.corpus_fingerprint}
    assert st.trial_id == trial_id(t.model, t.train, data, st.budget, shape_id=st.shape_id) == st.__dict__["trial_id"]
    assert st.id_prefix() == st.trial_id.rpartition("-")[0]
    sent = pickle.loads(pickle.dumps(other))
    assert (sent.__dict__["trial_id"], sent.__dict__["cell_id"]) == (other.trial_id, other.cell_id)
    assert sent == other and other.cell_id == st.cell_id  # variants of one cell


def test_grid_exclude_leaves_out_matching_points_and_keeps_the_other_ids(tmp_path):
    """grid.exclude drops the points that match every key of one rule; the ids of the rest are the
    full grid's, and a WSD trunk's length follows the largest budget its shape keeps."""
    full = {t.trial_id: t for t in _load(tmp_path, BASE).trials}
    rule = '\nexclude = [{ size = "t2", tokens_per_param = 10 }, { variant = "Q=K=V", size = ["t1"] }]\n'
    kept = _load(tmp_path, BASE + rule).trials
    rows = [t.row() for t in kept]
    assert len(kept) == 12 - 3 - 2  # t2 x M10 (3 variants), Q=K=V x t1 (2 budgets)
    assert {t.trial_id for t in kept} <= set(full)
    assert not any(r["d_model"] == 48 and r["tokens_per_param"] == 10 for r in rows)
    assert not any(r["variant"] == "tied_qkv" and r["d_model"] == 32 for r in rows)
    wsd = BASE + rule.replace("exclude", 'schedule = ["wsd-branches"]\nexclude')
    trunks = {t.row()["d_model"]: t.trial.train.tokens for t in _load(tmp_path, wsd).trials if t.role == "trunk"}
    assert trunks[48] < trunks[32]  # t2's trunk now ends at M = 1 (x 0.8), t1's at M = 10
    errors = _errors(tmp_path, BASE + '\nexclude = [{ size = "t9" }, { tokens_per_param = 3 }, { seed = 0 }]\n')
    assert len(errors) == 3, errors
    assert any("grid.exclude[1].tokens_per_param" in e and "excludes nothing" in e for e in errors), errors
    assert any("grid.exclude[2].seed" in e and "not a grid axis" in e for e in errors), errors
    assert "leaves no trials" in _errors(tmp_path, BASE + "\nexclude = [{ tokens_per_param = [1, 10] }]\n")[0]


def test_token_budgets_baseline_vs_own(tmp_path):
    def tokens(text: str) -> dict:
        sweep = _load(tmp_path, text)
        return {
            (t.row()["d_model"], t.tokens_per_param, t.row()["variant"]): t.trial.train.tokens for t in sweep.trials
        }

    same = tokens(BASE)
    own = tokens(BASE + '[budget]\ntokens_basis = "own"\n')
    for (d, tpp, variant), n in same.items():
        assert n == same[(d, tpp, "baseline")] == own[(d, tpp, "baseline")]
        if variant != "baseline":
            assert own[(d, tpp, variant)] < n  # tied variants have fewer params, so fewer tokens
    sweep = _load(tmp_path, BASE)
    for t in sweep.trials:  # whole steps, at least tokens_per_param x N of the QKV model of the shape
        m = t.trial.model
        n = account(dataclasses.replace(m, variant="baseline")).params_non_embedding
        step = t.trial.train.batch_size * t.trial.train.seq_len
        assert t.trial.train.tokens % step == 0 and 0 <= t.trial.train.tokens - t.tokens_per_param * n < step
        assert t.flops == account(m).flops_per_token * t.trial.train.tokens
    total = _load(tmp_path, BASE + '[budget]\nn_basis = "total"\n')
    assert all(t.trial.train.tokens > same[(t.row()["d_model"], t.tokens_per_param, "baseline")] for t in total.trials)


def test_match_params_widens_tied_variants(tmp_path):
    sweep = _load(tmp_path, BASE + '[budget]\nmatch = "params"\n')
    for t in sweep.trials:
        m = t.trial.model
        n_ref = account(dataclasses.replace(m, variant="baseline", d_ff=4 * m.d_model)).params_non_embedding
        assert abs(account(m).params_non_embedding - n_ref) <= 0.01 * n_ref
        assert (m.ff > 4 * m.d_model) == (m.variant != "baseline") and t.row()["match"] == "params"


def test_every_mistake_is_reported(tmp_path):
    bad = """
name = "bad name"
colour = "red"
[data]
corpus = "stdlib"
vocab_size = 100
max_bytes = -5
[model]
norm = "batchnorm"
bais = true
seq_len = 64
[train]
batch_size = "16"
cooldown_shape = "cosine"
lr = 1e-3
[budget]
tokens_basis = "mine"
[resources]
cpus = 0
gpus = -1
[sizes]
odd = { d_model = 60, n_layer = 2, n_head = 8 }
half = { d_model = 64, n_layer = 2 }
[grid]
variant = ["QKV", "Q-K=W", "baseline", "GQA-3"]
size = ["t1", "t9", "odd", "t2x", { d_model = 64, n_layer = 2, n_head = 4, width = 3 }]
tokens_per_param = [1, 0, -2]
seq_len = [128]
pos = ["learned", "alibi"]
seed = []
lr = [3e-3]
schedule = ["cosine", "step"]
"""
    errors = _errors(tmp_path, bad)
    path = str(tmp_path / "spec.toml")
    expected = [
        "name: name 'bad name'",
        "colour: unknown key (known: name, data, model, train, budget, resources, tune, sizes, grid)",
        "data.vocab_size: must be >= 257",
        "data.max_bytes: must be > 0",
        "model.bais: unknown key (did you mean 'bias'?)",
        "model.norm: must be 'layernorm' or 'rmsnorm', got 'batchnorm'",
        "train.batch_size: must be an integer, got string '16'",
        "train.cooldown_shape: must be 'linear' or '1-sqrt', got 'cosine'",
        "grid.lr: also set in [train]: keep one",
        "budget.tokens_basis: must be 'baseline' or 'own', got 'mine'",
        "resources.cpus: must be > 0",
        "resources.gpus: must be >= 0",
        "sizes.half.n_head: missing",
        "sizes.odd.n_head: 8 does not divide d_model 60",
        "grid.variant[1]: unknown 'Q-K=W'",
        "grid.variant[2]: repeats grid.variant[0] (the same variant)",
        "grid.variant[3]: 3 kv heads (gqa3) do not divide n_head 4 (size d32l1h4f128-batchnorm)",
        "grid.size[1]: unknown size 't9' (known: t1, t2, t3, t4, 10M,",
        "grid.size[3]: unknown size 't2x' (did you mean 't2'?)",
        "grid.size[4].width: unknown key",
        "grid.tokens_per_param[1]: must be > 0",
        "grid.tokens_per_param[2]: must be > 0",
        "grid.seq_len[0]: 128 exceeds the learned position table of 64 (model.seq_len)",
        "grid.pos[1]: must be 'rope' or 'learned', got 'alibi'",
        "grid.seed: empty",
        "grid.schedule[1]: must be 'cosine', 'wsd' or 'wsd-branches', got 'step'",
    ]
    _each_once(errors, path, expected)


def test_file_checks_bounds_and_non_finite_numbers_all_at_once(tmp_path):
    """Errors found by reading the files (a tokenizer that does not load, too few documents within
    max_bytes) come with every other error of the spec, before anything starts."""
    (tmp_path / "tok.json").write_text('{"not": "a tokenizer"}')
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x" * 1000)
    (tmp_path / "docs" / "b.txt").write_text("y" * 1000)
    bad = f"""
name = "t"
[data]
corpus = "{tmp_path / "docs"}"
tokenizer = "{tmp_path / "tok.json"}"
max_bytes = 10
[train]
lr = inf
grad_clip = nan
batch_size = 100_000_000
[resources]
cpus = inf
[grid]
variant = ["QKV", "Q-K=W"]
size = [{{ d_model = 1_000_000, n_layer = 2, n_head = 4 }}, {{ d_model = 64, n_layer = 2, n_head = 4 }}]
tokens_per_param = [20, 1e7]
seq_len = [16_000_000]
"""
    errors = _errors(tmp_path, bad)
    path = str(tmp_path / "spec.toml")
    expected = [
        f"data.tokenizer: cannot load '{tmp_path / 'tok.json'}'",
        "data.max_bytes: 10 bytes of",
        "train.lr: must be a finite number, got inf",
        "train.grad_clip: must be a finite number, got nan",
        "train.batch_size: must be <= 1,048,576",
        "resources.cpus: must be a finite number, got inf",
        "grid.variant[1]: unknown 'Q-K=W'",
        "grid.size[0].d_model: must be <= 131,072",
        "grid.tokens_per_param[1]: must be <= 100000",
        "grid.seq_len[0]: must be <= 1,048,576",
    ]
    _each_once(errors, path, expected)


def test_unreadable_and_invalid_files(tmp_path):
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(SpecError, match=rf"^{re.escape(missing)}: cannot read: No such file"):
        load_spec(missing)
    errors = _errors(tmp_path, 'name = "x"\n[grid\n')
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / 'spec.toml'}: invalid TOML: ")
    errors = _errors(tmp_path, "[grid]\nvariant = 'QKV'\nsize = [{d_model = 32}]\n")
    want = ["name: missing", "grid.variant: must be a list", "grid.tokens_per_param: missing", "grid.size[0].n_layer"]
    assert all(any(w in line for line in errors) for w in want), errors


def test_dry_run_table(tmp_path):
    sweep = _load(tmp_path, BASE)
    text = dry_run_table(sweep, train_tokens=100_000, slots=2)
    rows = [line for line in text.splitlines() if ID.match(line)]
    assert len(rows) == len(sweep.trials) and all("Q-K=V" in r for r in rows if r.startswith("tied_kv-"))
    total = sum(t.flops for t in sweep.trials)
    assert f"total: {total:.3g} FLOPs" in text and "trial-hours" in text and "on 2 parallel slots" in text
    assert "estimate" in text
    repeats = [t for t in sweep.trials if t.trial.train.tokens > 100_000]
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    assert repeats and len(warnings) == len(repeats) and all("repeats data" in w for w in warnings)
    unknown = dry_run_table(sweep, train_tokens=None)
    assert "warning" not in unknown and all(line.split()[-4] == "?" for line in unknown.splitlines() if ID.match(line))


def test_dry_run_adds_a_per_step_overhead_and_a_negative_one_is_an_error(tmp_path):
    spec = BASE.replace("[grid]", "[train]\nbatch_size = 8\n[grid]\nseq_len = [64]")
    spec += "[resources]\nflops_per_s = 1e10\n"
    plain = _load(tmp_path, spec)
    timed = _load(tmp_path, spec + "step_s = 0.5\n", name="timed.toml")
    assert [t.trial_id for t in timed.trials] == [t.trial_id for t in plain.trials]  # not in the ids
    steps = [t.trial.train.tokens / (8 * 64) for t in timed.trials]  # whole steps: tokens is rounded to them
    hours = lambda text: float(re.search(r"FLOPs, ([0-9.e+]+) trial-hours", text).group(1))  # noqa: E731
    expected = sum(t.flops / 1e10 + 0.5 * n for t, n in zip(timed.trials, steps, strict=True)) / 3600
    assert hours(dry_run_table(timed, train_tokens=None, slots=2)) == pytest.approx(expected, rel=2e-3)
    assert hours(dry_run_table(plain, train_tokens=None, slots=2)) == pytest.approx(
        sum(t.flops for t in plain.trials) / 1e10 / 3600, rel=2e-3
    )
    assert "0.5 s per step" in dry_run_table(timed, train_tokens=None, slots=2)
    errors = _errors(tmp_path, spec + "step_s = -1\n")
    assert any(e.startswith(f"{tmp_path / 'spec.toml'}: resources.step_s: must be >= 0") for e in errors), errors


def test_dry_run_summarizes_past_the_threshold(tmp_path, monkeypatch):
    sweep = _load(tmp_path, BASE)
    monkeypatch.setattr(plan, "SUMMARY_OVER", len(sweep.trials) - 1)
    monkeypatch.setattr(plan, "TOP", 2)
    text = dry_run_table(sweep, train_tokens=100_000, slots=2)
    rows = [line for line in text.splitlines() if ID.match(line)]
    costliest = sorted(sweep.trials, key=lambda t: -t.flops)[:2]
    assert [r.split()[0] for r in rows] == [t.trial_id for t in costliest]  # the TOP most expensive, in order
    assert "--all prints every row" in text and "by variant:" in text and "by shape:" in text
    n_baseline = sum(t.trial.model.variant == "baseline" for t in sweep.trials)
    assert re.search(rf"\n  QKV\s+{n_baseline} trials", text)
    repeats = sum(t.trial.train.tokens > 100_000 for t in sweep.trials)
    warnings = [w for w in text.splitlines() if w.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {repeats} trials repeat data")
    full = dry_run_table(sweep, train_tokens=100_000, slots=2, full=True)
    assert len([line for line in full.splitlines() if ID.match(line)]) == len(sweep.trials)
    total = next(line for line in full.splitlines() if line.startswith("total:"))
    assert total in text.splitlines()
