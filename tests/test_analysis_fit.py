"""Fits against synthetic ground truth: Chinchilla, over-training law, joint fit, bootstrap, held-out."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import AnalysisError
from analysis.fit import Fit, describe_bounds, fit_chinchilla, fit_joint, fit_overtraining, holdout, interval
from analysis.laws import chinchilla, chinchilla_at, chinchilla_optimal, flops_6nd, overtraining

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def grid(sizes: int = 8, multipliers=(5, 10, 20, 40, 80, 160), repeats: int = 1):
    N, M = np.meshgrid(np.geomspace(1e7, 1e9, sizes), np.asarray(multipliers, float))
    N, M = np.repeat(N.ravel(), repeats), np.repeat(M.ravel(), repeats)
    return N, M * N


def noisy(loss: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return loss * np.exp(sigma * np.random.default_rng(seed).standard_normal(loss.size))


def test_laws_agree_with_each_other():
    N, D = grid()
    C, M = flops_6nd(N, D), D / N
    np.testing.assert_allclose(chinchilla_at(C, M, **TRUTH), chinchilla(N, D, **TRUTH))
    # the compute-optimal loss is the minimum over M at fixed compute
    C0, Ms = 1e20, np.geomspace(1, 1e4, 4001)
    assert chinchilla_optimal(C0, **TRUTH) == pytest.approx(chinchilla_at(C0, Ms, **TRUTH).min(), rel=1e-6)


def test_chinchilla_recovers_known_parameters():
    N, D = grid(repeats=2)
    fit = fit_chinchilla(N, D, noisy(chinchilla(N, D, **TRUTH), 0.003, 0), n_boot=0, n_kind="total")
    assert fit.n_kind == "total" and fit.n_points == N.size
    assert fit.params["E"] == pytest.approx(TRUTH["E"], rel=0.05)
    assert fit.params["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.02)
    assert fit.params["beta"] == pytest.approx(TRUTH["beta"], abs=0.02)
    assert fit.params["A"] == pytest.approx(TRUTH["A"], rel=0.3)
    assert fit.params["B"] == pytest.approx(TRUTH["B"], rel=0.3)
    assert fit.at_bounds == {}


def test_overtraining_law_recovers_known_parameters():
    truth = {"E": 1.8, "a": 500.0, "b": 900.0, "eta": 0.15}
    N, D = grid()
    C, M = flops_6nd(N, D), D / N
    fit = fit_overtraining(C, M, noisy(overtraining(C, M, **truth), 0.002, 1), n_boot=0)
    assert fit.params["eta"] == pytest.approx(truth["eta"], abs=0.01)
    assert fit.params["E"] == pytest.approx(truth["E"], rel=0.05)
    assert fit.params["a"] == pytest.approx(truth["a"], rel=0.3)
    assert fit.params["b"] == pytest.approx(truth["b"], rel=0.3)


def test_bootstrap_intervals_cover_the_truth_in_most_repeats():
    N, D = grid(sizes=5, multipliers=(5, 20, 80, 320))
    covered = {name: 0 for name in TRUTH}
    for seed in range(5):
        fit = fit_chinchilla(N, D, noisy(chinchilla(N, D, **TRUTH), 0.005, seed), n_boot=200, seed=seed)
        assert fit.samples.shape == (200, 5)
        for name, (lo, hi) in fit.intervals.items():
            covered[name] += lo <= TRUTH[name] <= hi
        assert fit.at_bounds == {}  # a well-posed sweep: every parameter and interval inside the box
    assert all(n >= 3 for n in covered.values()), covered


def test_a_parameter_the_sweep_cannot_place_is_flagged_at_its_bound():
    # pure power laws (E = 0) on 4 sizes x 3 budgets: no curvature shows where the floor is, and
    # E goes to its lower bound exp(-3), as in the demo sweep of tiny CPU models
    N, D = grid(sizes=4, multipliers=(5, 20, 80))
    fit = fit_chinchilla(N, D, noisy(chinchilla(N, D, **{**TRUTH, "E": 0.0}), 0.003, 0), n_boot=50)
    assert fit.at_bounds["E"] == "estimate at lower bound"
    assert describe_bounds(fit.at_bounds).startswith("E at its lower bound 0.0498")


def test_bound_flags_for_estimates_intervals_and_coupled_coefficients():
    params = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.3, "beta": 0.3}
    samples = np.tile(list(params.values()), (40, 1))
    samples[:2, 3] = 3.0  # 5% of refits put alpha on its upper bound: the 95% interval reaches it
    samples[:1, 4] = 1e-3  # 2.5% put beta on its lower bound: just enough
    fit = Fit("chinchilla", "x", {**params, "E": float(np.exp(-3.0))}, samples, 10, "table")
    assert fit.at_bounds == {
        "E": "estimate at lower bound", "A": "interval follows alpha's to its bound",
        "B": "interval follows beta's to its bound", "alpha": "interval reaches upper bound",
        "beta": "interval reaches lower bound",
    }  # fmt: skip
    assert describe_bounds(fit.at_bounds) == (
        "E at its lower bound 0.0498, A's interval follows alpha's, B's interval follows beta's, "
        "alpha's interval reaches its upper bound 3 and beta's interval reaches its lower bound 0.001"
    )
    assert Fit("chinchilla", "x", params, samples[2:, :], 10, "table").at_bounds == {}


def test_joint_fit_estimates_the_difference_in_beta_with_an_interval():
    N, D = grid(sizes=6, multipliers=(5, 10, 20, 40, 80, 160))
    tied = {**TRUTH, "A": 450.0, "B": 500.0, "beta": 0.25}
    loss = np.r_[chinchilla(N, D, **TRUTH), chinchilla(N, D, **tied)]
    variant = np.repeat(["baseline", "tied_kv"], N.size)
    joint = fit_joint(np.r_[N, N], np.r_[D, D], noisy(loss, 0.002, 2), variant, n_boot=200)
    est, lo, hi = joint.difference("beta", "tied_kv")
    assert est == pytest.approx(-0.03, abs=0.01)
    assert lo <= -0.03 <= hi and hi < 0
    assert joint.fits["tied_kv"].params["E"] == joint.fits["baseline"].params["E"]  # shared


def test_holdout_reports_small_errors_on_a_clean_law():
    N, D = grid()
    result = holdout(N, D, noisy(chinchilla(N, D, **TRUTH), 0.001, 3), frac=0.2)
    assert result.rel_error.size >= 0.2 * N.size and result.n_train + result.rel_error.size == N.size
    assert result.mean_abs < 0.01


def test_nan_losses_too_few_points_and_one_variant_are_clear_errors():
    N, D = grid()
    loss = chinchilla(N, D, **TRUTH)
    with pytest.raises(AnalysisError, match="NaN"):
        fit_chinchilla(N, D, np.where(np.arange(N.size) == 3, np.nan, loss), n_boot=0)
    with pytest.raises(AnalysisError, match="at least 6 points"):
        fit_chinchilla(N[:4], D[:4], loss[:4], n_boot=0)
    same = N[0] * np.ones(10)
    with pytest.raises(AnalysisError, match="distinct values of N"):
        fit_chinchilla(same, D[:10], loss[:10], n_boot=0)
    with pytest.raises(AnalysisError, match="at least 2 variants"):
        fit_joint(N, D, loss, np.full(N.size, "baseline"), n_boot=0)


def test_interval_is_nan_without_samples_and_keeps_infinite_ones():
    assert np.isnan(interval(np.array([1.0]))).all()
    lo, hi = interval(np.r_[np.ones(50), np.full(50, np.inf)])
    assert lo == 1.0 and hi == np.inf


def test_holdout_with_too_few_cells_says_what_it_needs():
    N, D = grid(sizes=7, multipliers=(20,))
    D = D * np.array([1, 2, 4, 8, 1, 2, 4])  # 7 cells, several M
    with pytest.raises(AnalysisError, match=r"hold-out needs at least 8 cells: .* leaves 5 to fit"):
        holdout(N, D, chinchilla(N, D, **TRUTH))
