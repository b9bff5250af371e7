"""Learning-rate tuning end to end on a real Ray, real Optuna storage and real training: the best
rate lands inside the range, a rerun continues the same study, and specs use the tuned rates."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from analysis.report import _tuned_rates
from orchestrator.spec import SpecError, load_spec
from orchestrator.status import format_status, sweep_status
from orchestrator.tune import fit_rule
from records.tuning import JOURNAL, read_tuned, tuned_lr, tuning_dir
from tests.test_orchestrator import write_spec as orchestrator_spec
from tiedsweep.cli import main

pytestmark = pytest.mark.slow
T1 = "{ d_model = 32, n_layer = 1, n_head = 4 }"
T2 = "{ d_model = 48, n_layer = 2, n_head = 4 }"
# lr spans 5 decades: a tiny model's best rate (~1e-2 on 92 steps) is far from both ends.
TUNE = "[tune]\ntokens_per_param = 2\nn_trials = 6\nlr_min = 1e-5\nlr_max = 1.0\nparallel = 2\n"


def write_spec(path: Path, cache_dir: str, *, train: str = "", tune: str = TUNE, sizes=(T1,), variants=("QKV",)):
    return orchestrator_spec(
        path, cache_dir, name="tn", variants=variants, train=train, sizes=sizes, n_evals=4, extra=tune
    )


def _study(results: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(Path(tuning_dir(str(results), "tn")) / JOURNAL))
    )
    return optuna.load_study(study_name="tn-baseline-d32l1h4f128", storage=storage)


@pytest.fixture(scope="module")
def tuned(local_ray, cache_dir, tmp_path_factory):
    """One tuning run of 6 proxies (QKV, one size), and what it left behind right after."""
    root = tmp_path_factory.mktemp("tune")
    spec, results = write_spec(root / "s.toml", cache_dir), root / "results"
    assert main(["tune", str(spec), "--results", str(results), "--quiet"]) == 0
    trials = [(t.number, t.state, t.params, t.value) for t in _study(results).trials]
    return {"spec": spec, "results": results, "lrs": read_tuned(str(results), "tn"), "trials": trials}


def test_tuning_finds_an_interior_rate_and_stores_the_study(tuned, capsys):
    results, lrs = tuned["results"], tuned["lrs"]
    folder = Path(tuning_dir(str(results), "tn"))
    assert (folder / JOURNAL).is_file() and (folder / "lr.json").is_file()
    best = lrs["baseline"]["sizes"]["d32l1h4f128"]
    assert 3e-4 <= best["lr"] <= 0.3, best  # not at either end of [1e-5, 1]
    assert best["n_trials"] == 6 and best["N"] == 12_768 and math.isfinite(best["best_val_loss"])
    states = [state for _, state, _, _ in tuned["trials"]]
    assert len(states) == 6 and all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
    done = [(value, params["lr"]) for _, state, params, value in tuned["trials"] if state == TrialState.COMPLETE]
    assert min(done)[1] == best["lr"] and min(done)[0] == best["best_val_loss"]
    rule = lrs["baseline"]["rule"]  # one size: a constant rule at its rate
    assert rule["p"] == 0 and math.isclose(math.exp(rule["log_c"]), best["lr"])
    assert not list((folder / "runs").rglob("*.pt"))  # finished proxies leave no checkpoints
    assert len(list((results / "logs" / "tn").glob("tn-baseline-d32l1h4f128-*.log"))) == 6  # run as trials are
    # status and the report show it
    (tuning,) = sweep_status(str(results))["tn"]["tuning"]
    assert tuning["finished"] == tuning["total"] == 6 and tuning["best_lr"] == best["lr"]
    assert "tn-baseline-d32l1h4f128: 6/6 trials; best lr" in format_status(sweep_status(str(results)))
    note, lines = _tuned_rates(results, ["tn", "other"])
    assert "tuned" in note and lines == [
        f"tn, QKV: best d32l1h4f128 (N = 12,768): {best['lr']:.3g}; rule lr(N) = {best['lr']:.3g} x N^0.000"
    ]


def test_a_rerun_continues_the_same_study(tuned):
    results, spec = tuned["results"], tuned["spec"]
    study = _study(results)
    # A driver killed mid-trial leaves it RUNNING: the rerun marks it failed and retries its rate.
    lost = study.ask({"lr": FloatDistribution(1e-5, 1.0, log=True)})
    assert main(["tune", str(spec), "--results", str(results), "--quiet", "--n-trials", "9"]) == 0
    trials = _study(results).trials
    assert [(t.number, t.state, t.params, t.value) for t in trials[:6]] == tuned["trials"]  # no restart
    assert trials[lost.number].state == TrialState.FAIL
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 9 and len(trials) == 10
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == lost.number]
    assert retry.params == lost.params and retry.state != TrialState.FAIL
    lrs = read_tuned(str(results), "tn")
    assert lrs["baseline"]["sizes"]["d32l1h4f128"]["n_trials"] == 9
    assert (
        lrs["baseline"]["sizes"]["d32l1h4f128"]["best_val_loss"]
        <= tuned["lrs"]["baseline"]["sizes"]["d32l1h4f128"]["best_val_loss"]
    )
    # Nothing left to do: a third run asks for nothing.
    assert main(["tune", str(spec), "--results", str(results), "--quiet", "--n-trials", "9"]) == 0
    assert len(_study(results).trials) == 10


def test_lr_tuned_resolves_per_variant_and_size(tuned, cache_dir, tmp_path, capsys):
    results = tuned["results"]
    lrs = read_tuned(str(results), "tn")
    best = lrs["baseline"]["sizes"]["d32l1h4f128"]["lr"]
    spec = write_spec(tmp_path / "tuned.toml", cache_dir, train='lr = "tuned"', sizes=(T1, T2))
    sweep = load_spec(str(spec), tuned=lrs)
    by_size = {(t.trial.model.d_model, t.tokens_per_param): t for t in sweep.trials}
    assert by_size[32, 2.0].trial.train.lr == best  # the tuned size: its best rate
    assert math.isclose(by_size[48, 2.0].trial.train.lr, best)  # an untuned size: the (constant) rule
    fixed = load_spec(str(write_spec(tmp_path / "fixed.toml", cache_dir, train=f"lr = {best!r}", sizes=(T1, T2))))
    default = load_spec(str(write_spec(tmp_path / "default.toml", cache_dir, sizes=(T1, T2))))
    ids = {t.trial_id for t in sweep.trials if t.trial.model.d_model == 32}
    assert ids <= {t.trial_id for t in fixed.trials}  # the id is that of the rate trained with
    assert not ids & {t.trial_id for t in default.trials}
    assert main(["run", str(spec), "--results", str(results), "--dry-run"]) == 0
    # No tuning results: one clear line; a variant that was never tuned: its own line.
    with pytest.raises(SpecError) as info:
        load_spec(str(spec))
    assert info.value.errors == [f'{spec}: train.lr: "tuned" needs tuning results: run tiedsweep tune {spec} first']
    capsys.readouterr()
    assert main(["run", str(spec), "--results", str(tmp_path / "none")]) == 2
    assert "needs tuning results" in capsys.readouterr().err
    # A dry run still shows the plan (a cluster sweep is planned before it is tuned), saying so.
    assert main(["run", str(spec), "--results", str(tmp_path / "none"), "--dry-run"]) == 0
    assert "note: " in (out := capsys.readouterr().out) and "needs tuning results" in out
    two = write_spec(tmp_path / "two.toml", cache_dir, train='lr = "tuned"', variants=("QKV", "Q-K=V"))
    with pytest.raises(SpecError) as info:
        load_spec(str(two), tuned=lrs)
    assert info.value.errors == [
        f'{two}: grid.variant[1]: no tuned learning rate for tied_kv (lr = "tuned"): run tiedsweep tune {two}'
    ]


def test_rate_rule_is_a_power_law_in_n():
    rule = fit_rule([(10_000, 1e-2), (100_000, 5e-3), (1_000_000, 2.5e-3)])
    p = math.log(0.5) / math.log(10)  # halved per 10x N
    assert math.isclose(rule["p"], p) and math.isclose(math.exp(rule["log_c"]), 1e-2 / 10_000**p)
    lrs = {"v": {"sizes": {"d32l1h4": {"N": 10_000, "lr": 0.011}}, "rule": rule}}
    assert tuned_lr(lrs, "v", "d32l1h4", 10_000) == 0.011  # a tuned size keeps its own best
    assert math.isclose(tuned_lr(lrs, "v", "d64l2h4", 100_000), 5e-3)
    with pytest.raises(KeyError, match="no tuned rate for variant 'w'"):
        tuned_lr(lrs, "w", "d32l1h4", 10_000)


def test_bad_tune_section_reports_every_field(cache_dir, tmp_path, capsys):
    bad = """[tune]
sizes = ["t3", "t9", 5, { d_model = 32, n_layer = 1, n_head = 4 }, { d_model = 32, n_layer = 1, n_head = 4 }]
tokens_per_param = 0
n_trials = 0
lr_min = 0.1
lr_max = 0.01
warmup = "yes"
seed = -1
parallel = 0
colour = 1
"""
    spec = write_spec(tmp_path / "bad.toml", cache_dir, train='lr = "fast"', tune=bad)
    with pytest.raises(SpecError) as info:
        load_spec(str(spec), untuned_ok=True)
    expected = [
        'train.lr: must be a number or "tuned"',
        "tune.colour: unknown key",
        "tune.warmup: must be true or false, got string 'yes'",
        "tune.sizes[0]: size d64l2h4f256 is not in grid.size",
        "tune.sizes[1]: unknown size 't9'",
        "tune.sizes[2]: must be a string or a table, got integer 5",
        "tune.sizes[4]: repeats size d32l1h4f128",
        "tune.tokens_per_param: must be > 0",
        "tune.n_trials: must be >= 1",
        "tune.lr_max: must be > lr_min (0.1), got 0.01",
        "tune.seed: must be >= 0",
        "tune.parallel: must be >= 1",
    ]
    errors = info.value.errors
    for want in expected:
        assert sum(line.startswith(f"{spec}: {want}") for line in errors) == 1, (want, errors)
    assert len(errors) == len(expected), "\n".join(errors)
    zero = write_spec(tmp_path / "zero.toml", cache_dir, tune="[tune]\nlr_min = 0\nsizes = []")
    with pytest.raises(SpecError) as info:
        load_spec(str(zero))
    assert [e.removeprefix(f"{zero}: ") for e in info.value.errors] == [
        "tune.sizes: empty: list at least one size (or leave it out: the grid's 2 smallest)",
        "tune.lr_min: must be > 0, got 0",
    ]
    assert main(["tune", str(spec), "--results", str(tmp_path / "r")]) == 2
    assert f"tiedsweep: error: {spec}: tune.n_trials: must be >= 1" in capsys.readouterr().err
    good = write_spec(
        tmp_path / "good.toml", cache_dir, tune="", sizes=(T2, T1, "{ d_model = 64, n_layer = 2, n_head = 4 }")
    )
    assert load_spec(str(good)).tune.sizes == ("d32l1h4f128", "d48l2h4f192")  # default: the grid's 2 smallest
    with pytest.raises(SystemExit) as exited:  # argparse: one line naming the flag, exit 2
        main(["tune", str(good), "--results", str(tmp_path / "r"), "--n-trials", "0"])
    assert exited.value.code == 2 and "--n-trials: must be >= 1, got 0" in capsys.readouterr().err
    assert main(["tune", str(good), "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tn-baseline-d48l2h4f192: N " in out and "12 to run" in out and not (tmp_path / "r").exists()
