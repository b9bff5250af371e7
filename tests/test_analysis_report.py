"""Tables, plots, report and CLI on synthetic results directories written in the results schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import AnalysisError, plots
from analysis.names import display_name
from analysis.report import analyse, write_report
from analysis.synthetic import TRUTH, synthetic_trials, write_results
from analysis.tables import completed, load_evals, load_sweep_trials, load_table, load_trials
from records.ids import RESULTS_VERSION
from tiedsweep.cli import main

TINY = {"d_models": (32, 64, 128), "multipliers": (5, 10, 20, 40), "seeds": (0,)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two variants, a growing gap, plus a failed trial, a diverged one and a retried one."""
    t = synthetic_trials(gaps={"tied_kv": (0.02, 0.01)}, **TINY)
    extra = {k: v[:3].copy() for k, v in t.items()}
    extra["trial_id"] = np.array(["failed-1", "diverged-1", t["trial_id"][5]])
    extra["status"] = np.array(["failed", "diverged", "completed"])
    extra["final_val_loss"] = np.array([np.nan, np.nan, 99.0])
    extra["attempt"] = np.array([0, 0, -1])  # an older attempt of trial 5, superseded by attempt 0
    rows = {k: np.concatenate([t[k], extra[k]]) for k in t}
    return write_results(tmp_path_factory.mktemp("results"), rows)


def test_display_names():
    assert [display_name(v) for v in ("baseline", "tied_kv", "gqa4", "tied_kv_gqa2", "tied_kv_mqa", "new")] == [
        "QKV", "Q-K=V", "GQA-4", "Q-GQA-2", "Q-MQA", "new"
    ]  # fmt: skip


def test_results_keep_the_latest_attempt_and_count_the_left_out(results):
    trials = load_trials(results)
    assert trials["trial_id"].size == 2 * 12 + 2
    assert 99.0 not in trials["loss"]
    ok, excluded = completed(trials)
    assert excluded == {"diverged": 1, "failed": 1} and ok["loss"].size == 24
    assert set(trials["sweep"]) == {"synthetic"}
    assert load_evals(results)["trial_id"].size == 5 * 24


def test_generic_table_defaults_and_errors(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("N,D,loss\n1e7,2e8,3.1\n1e8,2e9,2.6\n")
    cols = load_table(path)
    assert cols["variant"].tolist() == ["all", "all"]
    np.testing.assert_allclose(cols["C"], [1.2e16, 1.2e18])
    (tmp_path / "bad.csv").write_text("N,steps,loss\n1,2,3\n")  # `tokens` counts as D since issue 9
    with pytest.raises(AnalysisError, match=r"missing column\(s\) \['D'\]"):
        load_table(tmp_path / "bad.csv")
    with pytest.raises(AnalysisError, match="no trial results"):
        load_trials(tmp_path)


def test_plots_are_written_and_not_empty(results, tmp_path):
    a = analyse(results, n_boot=20)
    figures = {
        "frontier": plots.frontier(a.trials, a.fits), "gaps": plots.gaps(a.verdicts),
        "loss_curves": plots.loss_curves(a.evals, a.trials), "kv_cache": plots.kv_cache(a.trials),
        "residuals": plots.residuals(a.trials, a.fits),
    }  # fmt: skip
    # the fitted curves run along the sweep's cells: each ends on a measured cell, within the fit's error
    lines = figures["frontier"].axes[0].get_lines()
    assert len(lines) == 2 * len(TINY["multipliers"])
    for line in lines:
        for c, loss in zip(*(xy[[0, -1]] for xy in line.get_data()), strict=True):
            at = np.isclose(a.trials["C"], c, rtol=1e-6)
            assert at.any() and np.min(np.abs(a.trials["loss"][at] / loss - 1)) < 0.02
    for name, fig in figures.items():
        for ext in ("png", "svg"):
            fig.savefig(tmp_path / f"{name}.{ext}")
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 5000


def test_report_renders_with_sizes_verdicts_and_learning_rates(results, tmp_path):
    out = write_report(results, tmp_path / "report", n_boot=30)
    md, page = out["markdown"].read_text(), out["html"].read_text()
    assert out["verdicts"][0].startswith("Q-K=V: gap grows from")
    for text in (md, page):
        assert "Tiny CPU models" in text and "not evidence about large models" in text
        assert "1 diverged, 1 failed" in text and "Learning rates" in text and "0.003" in text
        assert out["verdicts"][0].split(":")[1] in text
    assert page.count("data:image/png;base64,") == 5 and "<table>" in page
    assert len(out["figures"]) == 10 and all(p.stat().st_size > 0 for p in out["figures"])


def test_cli_fit_json_and_report(results, tmp_path, capsys):
    assert main(["fit", str(results), "--json", "--n-boot", "20"]) == 0
    fits = json.loads(capsys.readouterr().out)["fits"]
    assert [f["variant"] for f in fits] == ["baseline", "tied_kv"]
    assert {"E", "A", "B", "alpha", "beta"} <= set(fits[0]) and len(fits[0]["intervals"]["beta"]) == 2
    assert isinstance(fits[0]["at_bounds"], dict)
    assert main(["report", str(results), "--out", str(tmp_path), "--n-boot", "10"]) == 0
    assert "lags more" in capsys.readouterr().out and (tmp_path / "report.html").is_file()


def test_parameters_at_their_bounds_are_noted_in_report_and_fit_output(tmp_path, capsys):
    # pure power laws (E = 0): the fits put E on its lower bound, exp(-3)
    t = synthetic_trials(truth={**TRUTH, "E": 0.0}, **TINY)
    a = analyse(write_results(tmp_path / "floorless", t), n_boot=10)
    assert a.fits["baseline"].at_bounds["E"] == "estimate at lower bound"
    note = next(n for n in a.notes if "Chinchilla fit" in n)
    assert note.startswith("QKV and Q-K=V Chinchilla fits: E at its lower bound 0.0498")
    assert note.endswith("the sweep does not constrain " + ("them" if len(a.fits["baseline"].at_bounds) > 1 else "it")
                         + "; too few sizes/budgets")  # fmt: skip
    assert main(["fit", str(tmp_path / "floorless"), "--n-boot", "10"]) == 0
    assert "  at bounds: E at its lower bound 0.0498" in capsys.readouterr().out


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    one = write_results(tmp_path / "one", synthetic_trials(gaps={}, **TINY))
    assert main(["report", str(one), "--n-boot", "10"]) == 2
    err = capsys.readouterr().err
    assert "only one variant" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "nan.csv").write_text("N,D,loss\n" + "\n".join(f"{n},{20 * n},3" for n in range(1, 8)) + "\n1,2,nan\n")
    assert main(["fit", str(tmp_path / "nan.csv")]) == 2  # the NaN row is left out; one D/N remains
    assert "distinct values of M" in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """Sweep "a" with a manifest and rows of an earlier spec (other ids, absurd losses); sweep "b"
    without a manifest, same trial ids as "a" but the variant 10% behind."""
    root = tmp_path_factory.mktemp("two")
    a = synthetic_trials(gaps={"tied_kv": (0.02, 0.0)}, **TINY)
    old = {k: v.copy() for k, v in a.items()}
    old["trial_id"] = np.char.add("old-", a["trial_id"].astype(str))
    old["final_val_loss"] = old["final_val_loss"] * np.where(old["variant"] == "baseline", 1.0, 3.0)
    write_results(root, {k: np.concatenate([a[k], old[k]]) for k in a}, sweep="a")
    write_results(root, synthetic_trials(gaps={"tied_kv": (0.10, 0.0)}, rng=1, **TINY), sweep="b")
    (root / "manifests").mkdir()
    trials = [{"trial_id": str(t)} for t in a["trial_id"]]
    doc = {"results_version": RESULTS_VERSION, "name": "a", "spec_path": "a.toml", "spec_text": "", "trials": trials}
    (root / "manifests" / "a.json").write_text(json.dumps(doc))
    return root


def test_rows_outside_the_manifest_are_left_out_and_counted(two_sweeps, tmp_path, capsys):
    only_a, stale = load_sweep_trials(two_sweeps, sweep="a")
    assert stale == {"a": 24} and only_a["trial_id"].size == 24 and set(only_a["sweep"]) == {"a"}
    both = load_trials(two_sweeps)
    assert both["trial_id"].size == 48 and not any(t.startswith("old-") for t in both["trial_id"])
    a = analyse(two_sweeps, n_boot=10, sweep="a")
    assert a.verdicts[0].gaps[0].measured[0] == pytest.approx(0.02, abs=0.01)  # no 3x losses pooled in
    assert set(a.evals["trial_id"]) <= set(only_a["trial_id"])
    assert main(["report", str(two_sweeps), "--sweep", "a", "--out", str(tmp_path), "--n-boot", "10"]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "sweeps: a\n" in md and md.count("a: 24 rows of trials no longer in the sweep's spec left out") == 2
    assert "95% t-interval over 3 pairs at M = 5, 10, 20, 40" in md and "| 3 pairs |" in md
    capsys.readouterr()
    with pytest.raises(AnalysisError, match=r"no trials of sweep 'c'.*\['a', 'b'\]"):
        load_trials(two_sweeps, sweep="c")


def test_all_sweeps_pair_within_each_sweep(two_sweeps):
    # one verdict per (sweep, variant) now (issue 9), each with its own pairs, Holm-corrected together
    a = analyse(two_sweeps, n_boot=10)
    assert [(v.sweep, v.pairs.gap.size, v.family) for v in a.verdicts] == [("a", 12, 2), ("b", 12, 2)]
    assert a.verdicts[0].pairs.gap == pytest.approx(0.02, abs=0.01)
    assert a.verdicts[1].pairs.gap == pytest.approx(0.10, abs=0.01)
    assert a.verdicts[0].label == "Q-K=V (sweep a)" and "Q-K=V (sweep a): gap" in a.verdicts[0].sentence
    assert "a: 24 rows" in a.notes[-1]


def test_report_of_a_plain_csv_table_as_json(tmp_path, capsys):
    """Columns as another lab would have them: paper names, each variant's own N, no size, no M."""
    rng = np.random.default_rng(0)
    rows = ["variant,N,D,loss,seed,lr"]
    for n in (1e7, 4e7, 8.5e7):
        for m in (1, 4, 16, 64):
            for seed in range(2):
                for name, own, lag in (("QKV", n, 0.0), ("Q-K=V", 11 / 12 * n, 0.003 * np.log2(m))):
                    law = 1.8172 + 482.01 / own**0.3478 + 2085.43 / (m * n) ** 0.3658
                    loss = law * (1 + lag) * np.exp(0.002 * rng.standard_normal())
                    rows.append(f"{name},{own:.0f},{m * n:.0f},{loss:.6f},{seed},0.001")
    (tmp_path / "lab.csv").write_text("\n".join(rows) + "\n")
    assert main(["report", str(tmp_path / "lab.csv"), "--json", "--n-boot", "20", "--out", str(tmp_path / "r")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["question"].startswith("Question: does the variant fall further behind QKV")
    (v,) = out["verdicts"]
    assert v["variant"] == "Q-K=V" and v["trend"] == "grows" and v["p_holm"] < 0.05
    assert v["statistic"].startswith("slope per doubling of M of the gap beyond capacity")
    assert v["interval"][0] < 0.003 < v["interval"][1]
    assert [g["M"] for g in v["raw_gaps"]] == [1, 4, 16, 64] and len(v["raw_gaps"][0]["interval"]) == 2
    assert v["raw_gaps"][0]["gap"] > 0.004  # raw: the capacity deficit (~0.5%) is in it
    assert abs(v["gaps_beyond_capacity"][0]["gap"]) < 0.003
    assert v["sentence"].endswith(v["conclusion"]) and "lags more" in v["sentence"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Question: does the variant fall further behind QKV" in md and "Null: no effect of tying" in md
    assert v["sentence"] in md
    saved = json.loads((tmp_path / "r" / "verdict.json").read_text())  # the report folder keeps the JSON
    assert saved == {k: x for k, x in out.items() if k not in ("markdown", "html")}
    assert not [p.name for p in (tmp_path / "r").iterdir() if ".tmp-" in p.name]  # no temp file left


def test_the_over_training_law_is_fitted_on_6nd_not_measured_flops(tmp_path):
    # Gadre et al.'s law is derived with C = 6ND; measured FLOPs / 6ND varies with size in real models
    t = synthetic_trials(gaps={"tied_kv": (0.02, 0.0)}, **TINY)
    t["flops"] = t["flops"] * np.interp(np.log(t["params_non_embedding"]), [10.0, 14.0], [2.6, 1.3])
    a = analyse(write_results(tmp_path / "r", t), n_boot=5)
    from analysis.fit import fit_overtraining

    at = a.trials["variant"] == "baseline"
    N, D = a.trials["N"][at], a.trials["D"][at]
    on_6nd = fit_overtraining(6 * N * D, D / N, a.trials["loss"][at], n_boot=0)
    assert a.overtraining["baseline"].params["eta"] == pytest.approx(on_6nd.params["eta"], rel=1e-6)
