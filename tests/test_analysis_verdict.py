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
    Gap,
    Pairs,
    _conclusion,
    _mean_gap_interval,
    gap_slope,
    pair,
    slope_method,
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
    def gap(est, lo, hi):
        return Gap(5.0, 3, (est, lo, hi), (np.nan,) * 3, (np.nan,) * 3)

    up, down, flat = (0.01, 0.005, 0.015), (-0.01, -0.015, -0.005), (0.01, -0.005, 0.02)
    covers, above, below = gap(0.0, -0.01, 0.01), gap(0.02, 0.01, 0.03), gap(-0.02, -0.03, -0.01)
    assert _conclusion(up, covers, above) == LAGS_MORE
    assert _conclusion(up, below, covers) == ADVANTAGE_SHRINKS
    assert _conclusion(up, covers, covers) == RISES
    assert _conclusion(down, above, covers) == SHRINKS
    assert _conclusion(down, covers, below) == PULLS_AHEAD
    assert _conclusion(down, covers, covers) == FALLS
    assert _conclusion(flat, below, above) == NO_EVIDENCE
    assert _conclusion((0.01, np.nan, np.nan), below, above) == TOO_FEW


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


def test_slope_from_few_pairs_uses_the_ols_standard_error():
    M = np.array([5.0, 10, 20, 40, 80])
    g = np.array([0.010, 0.013, 0.019, 0.020, 0.027])
    p = Pairs(M, np.zeros(5), g, np.ones((5, 2)), np.ones((5, 2)))
    est, lo, hi = gap_slope(p, 100, np.random.default_rng(0))
    fit = stats.linregress(np.log2(M), g)
    half = stats.t.ppf(0.975, 3) * fit.stderr
    assert (est, lo, hi) == pytest.approx((fit.slope, fit.slope - half, fit.slope + half))
    assert "t-interval" in slope_method(p) and "5 pairs" in slope_method(p)


def test_pairing_never_crosses_sweeps_and_names_averaged_cells():
    t = cells({"tied_kv": (0.02, 0.0)})
    t["sweep"] = np.where(t["variant"] == "baseline", "a", "b")
    assert pair(t, "tied_kv").gap.size == 0
    t = cells({"tied_kv": (0.02, 0.0)})
    extra = select(t, (t["variant"] == "tied_kv") & (t["tokens_per_param"] == 20) & (t["d_model"] == 64))
    extra["lr"] = np.full(extra["lr"].size, 1e-3)
    p = pair({k: np.concatenate([t[k], extra[k]]) for k in t}, "tied_kv")
    assert p.gap.size == 3 * 6 * 2  # lr is not a pairing key: the extra rows join their cells
    assert len(p.averaged) == 2 and p.averaged[0].startswith("M=20, d_model=64")
    assert "Q-K=V 2 rows (lr 0.001, 0.003)" in p.averaged[0]
