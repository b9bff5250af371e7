"""The verdict on synthetic sweeps with a planted gap: growing, constant, none; and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import AnalysisError
from analysis.synthetic import synthetic_trials
from analysis.tables import completed, select
from analysis.verdict import LAGS_MORE, NO_EVIDENCE, pair, verdict, verdicts

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
