"""The verdict on synthetic sweeps with a planted gap: growing, constant, none, negative; its intervals and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis import AnalysisError
from analysis.synthetic import synthetic_trials
from analysis.tables import completed, select
from analysis.verdict import (
    ADVANTAGE_SHRINKS,
    FALLS,
    LAGS_MORE,
    NO_EVIDENCE,
    PULLS_AHEAD,
    RISES,
    SHRINKS,
    TOO_FEW,
    _conclusion,
    _mean_gap_interval,
    pair,
    verdict,
    verdicts,
)  # fmt: skip

SMALL = {"d_models": (64, 128, 256), "multipliers": (5, 10, 20, 40, 80, 160), "seeds": (0, 1)}


def cells(gaps: dict, rng: int = 0) -> dict:
    """Synthetic trials in the normalised columns that tables.load_trials produces."""
    t = synthetic_trials(gaps=gaps, rng=rng, **SMALL)
    t.update(N=t["params_non_embedding"].astype(float), D=t["tokens"].astype(float), C=t["flops"],
             M=t["tokens_per_param"], loss=t["final_val_loss"])  # fmt: skip
    return t


def test_growing_gap_lags_more():
    v = verdict(cells({"tied_kv": (0.02, 0.004)}), "tied_kv", n_boot=200)
    assert v.conclusion == LAGS_MORE
    assert v.sentence.startswith("Q-K=V: gap grows from") and v.sentence.endswith("lags more with more tokens")
    assert v.slope[1] > 0
    assert v.delta_beta[2] < 0  # the variant's data exponent is smaller
    multipliers = [g.compute_multiplier[0] for g in v.gaps]
    assert multipliers[-1] > multipliers[0] > 1


@pytest.mark.parametrize(("gap", "rng"), [((0.03, 0.0), 1), ((0.0, 0.0), 2)])
def test_constant_or_no_gap_is_no_evidence(gap, rng):
    v = verdict(cells({"tied_qk": gap}, rng=rng), "tied_qk", n_boot=200)
    assert v.conclusion == NO_EVIDENCE, v.sentence
    assert v.slope[1] <= 0 <= v.slope[2]
    assert "grows" not in v.sentence


def test_measured_gap_matches_the_planted_one():
    t = cells({"tied_qkv": (0.05, 0.0)})
    v = verdict(t, "tied_qkv", n_boot=100)
    for g in v.gaps:
        assert g.measured[0] == pytest.approx(0.05, abs=0.005) and g.measured[1] < g.measured[2]
        assert g.fitted[0] == pytest.approx(0.05, abs=0.005)


def test_pairing_uses_configuration_and_seed():
    t = cells({"tied_kv": (0.02, 0.0)})
    drop = (t["variant"] == "baseline") & (t["seed"] == 1) & (t["tokens_per_param"] == 160)
    p = pair(select(t, ~drop), "tied_kv")
    assert p.gap.size == 3 * 6 * 2 - 3
    assert set(np.unique(p.M)) == {5, 10, 20, 40, 80, 160}


def test_failed_and_diverged_trials_are_left_out_and_counted():
    t = cells({"tied_kv": (0.02, 0.0)})
    t["status"][:3] = ["failed", "diverged", "diverged"]
    t["loss"][:3] = np.nan
    t["loss"][3] = np.nan  # a completed trial that reported no loss
    ok, excluded = completed(t)
    assert excluded == {"diverged": 2, "failed": 1, "non-finite loss": 1}
    assert np.isfinite(ok["loss"]).all() and ok["loss"].size == t["loss"].size - 4


def test_one_variant_or_no_baseline_is_a_clear_error():
    t = cells({})
    with pytest.raises(AnalysisError, match="only one variant"):
        verdicts(t, n_boot=10)
    t = cells({"tied_kv": (0.0, 0.0)})
    with pytest.raises(AnalysisError, match="no 'baseline' trials"):
        verdicts(select(t, t["variant"] != "baseline"), n_boot=10)


def test_a_single_token_multiplier_cannot_tell():
    t = cells({"tied_kv": (0.02, 0.01)})
    v = verdict(select(t, t["tokens_per_param"] == 20), "tied_kv", n_boot=50)
    assert v.conclusion.startswith("too few") and "only" in v.sentence
    assert "distinct values of M" in v.note  # no joint fit at one M: N and D are confounded


@pytest.mark.parametrize(
    ("gap", "conclusion"),
    [
        ((-0.05, 0.01), ADVANTAGE_SHRINKS),  # -5% at M=5 to 0% at M=160: ahead, less so
        ((-0.02, -0.004), PULLS_AHEAD),  # -2% to -4%
        ((0.05, -0.008), SHRINKS),  # +5% to +1%
    ],
)
def test_the_words_follow_the_sign_of_the_gap_as_well_as_the_slope(gap, conclusion):
    v = verdict(cells({"tied_kv": gap}), "tied_kv", n_boot=100)
    assert v.conclusion == conclusion, v.sentence
    assert "lags more" not in v.sentence and v.sentence.endswith(conclusion)
    assert (v.slope[1] > 0) == (gap[1] > 0) and (v.slope[2] < 0) == (gap[1] < 0)


def test_a_gap_from_minus_five_to_minus_one_percent_is_a_shrinking_advantage():
    v = verdict(cells({"tied_kv": (-0.05, 0.008)}), "tied_kv", n_boot=100)  # -5% to -1%
    assert v.gaps[-1].measured[2] < 0 < v.slope[1]
    assert v.conclusion == ADVANTAGE_SHRINKS and "gap rises from -4.9%" in v.sentence, v.sentence


def test_words_never_claim_a_sign_the_interval_does_not_show():
    # the words now follow the Holm-corrected trend (grows/shrinks/none/unresolved), not the slope's
    # interval alone, and the gap beyond capacity at the ends: (estimate, low, high) triples
    covers, above, below = (0.0, -0.01, 0.01), (0.02, 0.01, 0.03), (-0.02, -0.03, -0.01)
    assert _conclusion("grows", covers, above) == LAGS_MORE
    assert _conclusion("grows", below, covers) == ADVANTAGE_SHRINKS
    assert _conclusion("grows", covers, covers) == RISES
    assert _conclusion("shrinks", above, covers) == SHRINKS
    assert _conclusion("shrinks", covers, below) == PULLS_AHEAD
    assert _conclusion("shrinks", covers, covers) == FALLS
    assert _conclusion("none", below, above) == NO_EVIDENCE
    assert _conclusion("unresolved", below, above, (0.01, np.nan, np.nan)) == TOO_FEW


def test_few_clusters_get_a_t_interval_and_one_gets_none():
    rng = np.random.default_rng(0)
    gap = np.array([0.01, 0.03, 0.02])
    (est, lo, hi), method = _mean_gap_interval(gap, np.arange(3), 200, rng)
    half = stats.t.ppf(0.975, 2) * gap.std(ddof=1) / np.sqrt(3)
    assert method == "95% t-interval" and est == pytest.approx(0.02)
    assert (lo, hi) == pytest.approx((0.02 - half, 0.02 + half))
    (_, lo, hi), method = _mean_gap_interval(gap, np.zeros(3), 200, rng)  # one seed
    assert method == "no interval" and np.isnan([lo, hi]).all()
    many = rng.normal(0.02, 0.01, 12)
    assert _mean_gap_interval(many, np.arange(12), 200, rng)[1] == "95% bootstrap"


def test_t_interval_over_three_clusters_covers_where_the_bootstrap_does_not():
    rng = np.random.default_rng(1)
    draws = rng.normal(0.0, 1.0, (400, 3))
    t_ends = np.array([_mean_gap_interval(d, np.arange(3), 0, rng)[0][1:] for d in draws])
    t_cover = np.mean((t_ends[:, 0] <= 0) & (0 <= t_ends[:, 1]))
    pick = rng.integers(0, 3, (400, 500, 3))
    boot = np.take_along_axis(draws[:, None, :], pick, 2).mean(2)
    boot_cover = np.mean((np.percentile(boot, 2.5, 1) <= 0) & (0 <= np.percentile(boot, 97.5, 1)))
    assert 0.92 <= t_cover <= 0.98 and boot_cover < 0.8


def test_pairing_never_crosses_sweeps_and_takes_the_best_rate_of_a_cell():
    t = cells({"tied_kv": (0.02, 0.0)})
    t["sweep"] = np.where(t["variant"] == "baseline", "a", "b")
    assert pair(t, "tied_kv").gap.size == 0
    t = cells({"tied_kv": (0.02, 0.0)})
    extra = select(t, (t["variant"] == "tied_kv") & (t["tokens_per_param"] == 20) & (t["d_model"] == 64))
    extra["lr"] = np.full(extra["lr"].size, 1e-3)
    extra["loss"] = extra["loss"] * 0.95  # 5% better at lr 1e-3: that rate counts, not the mean of the two
    p = pair({k: np.concatenate([t[k], extra[k]]) for k in t}, "tied_kv")
    assert p.gap.size == 3 * 6 * 2  # lr is not a pairing key: the extra rows join their cells
    assert len(p.chose) == 2 and p.chose[0].startswith("M=20, d_model=64")
    assert "tied_kv lr 0.001 of 0.001, 0.003" in p.chose[0] and "baseline one rate" in p.chose[0]
    at = (p.M == 20) & (p.size == p.size[p.N[:, 1] == p.N[:, 1].min()][0])
    assert p.gap[at] == pytest.approx(1.02 * 0.95 - 1, abs=0.01) and (p.lr[at, 0] == 1e-3).all()


# Truth from the literature for the cases of issue 9: Epoch AI's refit of Chinchilla (Besiroglu et al. 2024)
EPOCH = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def own_n_table(
    *,
    beyond=lambda size, m: 0.0,
    sizes=(10e6, 20e6, 40e6, 85e6),
    Ms=(1, 4, 16, 64, 256),
    seeds=3,
    noise=0.003,
    drop=lambda size, m: False,
    variants=("tied_kv",),
    rng=0,
    seq_len=None,
) -> dict:
    """A plain table: QKV on Epoch's surface; each tied variant at 11/12 of QKV's N on QKV's tokens,
    on the same surface at its own N, times 1 + beyond(size index, M)."""
    gen = np.random.default_rng(rng)
    rows = []
    for s, n in enumerate(sizes):
        for seed in range(seeds):
            for v in ("baseline", *variants):
                own = n if v == "baseline" else 11 / 12 * n
                for m in Ms:
                    if drop(s, m):
                        continue
                    law = EPOCH["E"] + EPOCH["A"] / own ** EPOCH["alpha"] + EPOCH["B"] / (m * n) ** EPOCH["beta"]
                    loss = law * (1 + (v != "baseline") * beyond(s, m)) * np.exp(noise * gen.standard_normal())
                    rows.append((v, f"s{s}", seed, own, m * n, float(m), loss))
    cols = {k: np.array(c) for k, c in zip(("variant", "size", "seed", "N", "D", "M", "loss"), zip(*rows, strict=True),
                                          strict=True)}  # fmt: skip
    cols["C"], cols["status"] = 6 * cols["N"] * cols["D"], np.full(cols["N"].size, "completed")
    if seq_len is not None:
        cols["seq_len"] = np.full(cols["N"].size, seq_len)
    return cols


def test_a_pure_parameter_deficit_is_not_a_growing_gap():
    t = own_n_table(rng=3)
    v = verdicts(t, n_boot=40, surfaces=False)[0]
    assert v.raw_slope[0] > 0.0004  # the raw gap grows: a constant deficit, a falling loss
    assert v.trend == "none" and v.slope[1] < 0 < v.slope[2], v.sentence
    assert abs(v.gaps[-1].beyond[0]) < 0.002 and v.gaps[-1].measured[0] > 0.008
    assert "gap beyond capacity" in v.sentence and "raw gap" in v.sentence and "N_variant / N_QKV = 0.917" in v.capacity


def test_a_size_only_gap_with_missing_large_cells_is_not_a_trend():
    t = own_n_table(beyond=lambda s, m: (0.03, 0.015, 0.005)[s], sizes=(10e6, 40e6, 150e6), seeds=2,
                    drop=lambda s, m: (s == 2 and m >= 64) or (s == 1 and m >= 256), rng=1)  # fmt: skip
    v = verdicts(t, n_boot=40, surfaces=False)[0]
    assert v.trend != "grows" and v.slope[1] < 0 < v.slope[2], v.sentence
    assert any(w.startswith("incomplete grid (s1 lacks M = 256; s2 lacks M = 64, 256)") for w in v.warnings)


def test_a_trend_beyond_capacity_is_found_with_its_size():
    t = own_n_table(beyond=lambda s, m: 0.0025 * np.log2(m), rng=2)
    v = verdicts(t, n_boot=40, surfaces=False)[0]
    assert v.trend == "grows" and v.conclusion == LAGS_MORE
    assert v.slope[1] < 0.0025 < v.slope[2] and v.p_holm < 0.05
    h = v.held_out  # fitted on M <= 64, scored at 256: within a few noise floors
    assert h.M_fit == 64 and h.M_test == 256 and abs(h.error) < 4 * h.noise + 0.001


def test_cluster_t_interval_over_balanced_chains_is_the_t_test_of_chain_slopes():
    from analysis.trend import within_slope

    rng = np.random.default_rng(0)
    x = np.tile(np.log2([1.0, 4, 16, 64]), 5)
    chain = np.repeat(np.arange(5), 4)
    y = 0.001 * rng.standard_normal(20) + 0.002 * rng.standard_normal(5)[chain] * x  # a random slope per chain
    s = within_slope(x, y, chain, chain)
    per_chain = [np.polyfit(x[chain == c], y[chain == c], 1)[0] for c in range(5)]
    t = stats.ttest_1samp(per_chain, 0.0)
    half = stats.t.ppf(0.975, 4) * np.std(per_chain, ddof=1) / np.sqrt(5)
    assert s.estimate == pytest.approx(np.mean(per_chain)) and s.p == pytest.approx(t.pvalue)
    assert (s.low, s.high) == pytest.approx((s.estimate - half, s.estimate + half))
    assert s.n_clusters == 5 and "4 df" in s.method and "5 chains" in s.method


def test_a_cluster_bootstrap_from_many_chains():
    from analysis.trend import BOOT_CLUSTERS, within_slope

    rng = np.random.default_rng(1)
    G = BOOT_CLUSTERS + 2
    x = np.tile([0.0, 1, 2], G)
    chain = np.repeat(np.arange(G), 3)
    s = within_slope(x, 0.01 * x + 0.001 * rng.standard_normal(3 * G), chain, chain, n_boot=200, rng=rng)
    assert "cluster bootstrap" in s.method and s.low < 0.01 < s.high and s.p < 0.01


def test_holm_correction_across_variants():
    from analysis.trend import holm

    assert holm([0.01, 0.04, 0.03, np.nan]) == pytest.approx([0.03, 0.06, 0.06, np.nan], nan_ok=True)
    t = own_n_table(variants=("tied_kv", "tied_qk"), beyond=lambda s, m: 0.0, seeds=2, rng=4)
    found = verdicts(t, n_boot=20, surfaces=False)
    assert [v.family for v in found] == [2, 2] and all(v.p_holm >= v.p for v in found)
    assert all("(Holm, 2 tests)" in v.sentence for v in found if np.isfinite(v.slope[1]))


def test_rates_are_chosen_per_cell_when_averaging_would_flip_the_sign():
    t = own_n_table(Ms=(1, 16), seeds=1, noise=0.0)
    bad = {k: v.copy() for k, v in t.items()}
    t["lr"], bad["lr"] = np.full(t["N"].size, 1e-3), np.full(t["N"].size, 1e-2)
    bad["loss"] = bad["loss"] * np.where(bad["variant"] == "baseline", 1.01, 1.10)  # the variant's worse rate
    both = {k: np.concatenate([t[k], bad[k]]) for k in t}
    p = pair(both, "tied_kv")
    assert (p.lr == 1e-3).all() and len(p.chose) == p.gap.size
    assert p.gap.max() < 0.02  # the mean over rates would have put the variant ~5% behind


def test_delta_beta_is_shown_only_from_a_trustworthy_joint_fit():
    v = verdict(cells({"tied_kv": (0.02, 0.004)}), "tied_kv", n_boot=100)
    if v.delta_beta_ok:
        assert "Δβ" not in v.sentence
    else:
        assert "Δβ (shared E, α)" in v.sentence
    t = cells({"tied_kv": (0.02, 0.0)})
    floorless = synthetic_trials(gaps={"tied_kv": (0.02, 0.0)}, truth={"E": 0.0, "A": 406.4, "B": 410.7, "alpha": 0.34,
                                 "beta": 0.28}, **SMALL)  # fmt: skip
    for k in ("loss", "N", "D", "C", "M"):
        t[k] = {"loss": floorless["final_val_loss"], "N": t["N"], "D": t["D"], "C": t["C"], "M": t["M"]}[k]
    w = verdict(t, "tied_kv", n_boot=30)  # E = 0: the joint fit puts E on its bound
    assert "bounds" in w.delta_beta_ok and "Δβ" not in w.sentence


def test_intervals_too_wide_to_mean_anything_are_flagged():
    from analysis.fit import Fit

    samples = np.column_stack([np.linspace(0.075, 2.11, 50), np.full(50, 400.0), np.full(50, 400.0),
                               np.linspace(0.33, 0.35, 50), np.linspace(0.27, 0.29, 50)])  # fmt: skip
    f = Fit("chinchilla", "baseline", dict(zip(("E", "A", "B", "alpha", "beta"), (1.5, 400, 400, 0.34, 0.28),
                                               strict=True)), samples, 50, "table")  # fmt: skip
    assert set(f.too_wide) == {"E"} and "wider than the estimate 1.5" in f.too_wide["E"]


def test_one_verdict_per_seq_len_and_the_gap_trend_in_seq_len():
    from analysis.verdict import seq_len_trends

    parts = [own_n_table(beyond=lambda s, m, q=q: 0.002 * q / 512, seq_len=q, seeds=2, sizes=(10e6, 40e6, 85e6), rng=q,
                        noise=0.001)
             for q in (512, 1024, 2048)]  # fmt: skip
    t = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    found = verdicts(t, n_boot=20, surfaces=False)
    assert [v.seq_len for v in found] == [512, 1024, 2048] and found[0].label == "Q-K=V (seq_len 512)"
    (trend,) = seq_len_trends(found)
    assert trend.slope.low < 0.004 < trend.slope.high  # +0.4% per 1024 tokens of context
    assert [g[0] for g in trend.gaps] == pytest.approx([0.002, 0.004, 0.008], abs=0.001)


def test_plain_table_without_size_or_m_pairs_by_rank_of_n(tmp_path):
    from analysis.tables import load_table

    t = own_n_table(Ms=(1, 4, 16), seeds=1, sizes=(10e6, 40e6), noise=0.0)
    path = tmp_path / "sweep.csv"
    path.write_text("variant,N,D,loss\n" + "".join(
        f"{'QKV' if v == 'baseline' else 'Q-K=V'},{n:.0f},{d:.0f},{loss}\n"
        for v, n, d, loss in zip(t["variant"], t["N"], t["D"], t["loss"], strict=True)))  # fmt: skip
    cols = load_table(path)
    assert sorted(set(cols["size"])) == ["size 1", "size 2"] and sorted(set(cols["M"])) == pytest.approx([1, 4, 16])
    p = pair(cols, "Q-K=V")
    assert p.gap.size == 6 and np.allclose(p.N[:, 0] / p.N[:, 1], 11 / 12)
