"""Fits against synthetic ground truth: Chinchilla, over-training law, joint fit, bootstrap, held-out."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from analysis import AnalysisError
from analysis import fit as fit_module
from analysis.fit import (
    HUBER_DELTA,
    Fit,
    _box,
    _chinchilla_design,
    _derivatives,
    _fit_theta,
    _minimize,
    _terms,
    _value,
    describe_bounds,
    fit_chinchilla,
    fit_joint,
    fit_overtraining,
    holdout,
    interval,
)
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


def _joint_design(seed: int = 4):
    """A two-variant design with shared E and alpha on 4 sizes x 3 budgets: loose, as CPU sweeps are."""
    N, D = grid(sizes=4, multipliers=(5, 20, 80))
    loss = noisy(np.r_[chinchilla(N, D, **TRUTH), chinchilla(N, D, **{**TRUTH, "beta": 0.25})], 0.01, seed)
    codes = np.repeat([0, 1], N.size)
    return _chinchilla_design(np.r_[N, N], np.r_[D, D], loss, codes, 2, ("E", "alpha"))


def test_gradient_and_hessian_match_finite_differences():
    d = _joint_design()
    rng = np.random.default_rng(0)
    w = rng.multinomial(d.y.size, np.full(d.y.size, 1 / d.y.size), size=1).astype(float)
    away = np.r_[0.5, 6.0, 6.2, 6.0, 6.1, 0.3, 0.3, 0.25] + 0.1 * rng.standard_normal(d.n_theta)
    near = _minimize(d, away[None], w)[0][0] + 3e-4 * rng.standard_normal(d.n_theta)  # by the optimum
    r = _terms(d, near[None])[0]
    assert (np.abs(r) <= HUBER_DELTA).sum() >= 2  # residuals in Huber's quadratic zone: h'' = 1 there
    assert np.abs(np.abs(r) - HUBER_DELTA).min() > 1e-5  # none within a difference step of its kink
    h, eye = 1e-7, np.eye(d.n_theta)
    for theta in (away, near):
        g, H = _derivatives(d, theta[None], w)
        fd_g = [(_value(d, (theta + h * e)[None], w) - _value(d, (theta - h * e)[None], w))[0] / (2 * h) for e in eye]
        fd_H = [(_derivatives(d, (theta + h * e)[None], w)[0] - _derivatives(d, (theta - h * e)[None], w)[0])[0]
                / (2 * h) for e in eye]  # fmt: skip
        np.testing.assert_allclose(g[0], fd_g, rtol=1e-5, atol=1e-7 * np.abs(g).max())
        np.testing.assert_allclose(H[0], np.array(fd_H).T, rtol=1e-4, atol=1e-7 * np.abs(H).max())


def test_a_refit_that_starts_just_off_a_bound_lands_on_it():
    # pure power laws: E's optimum is its lower bound; from 5e-7 above it the fit puts E on the bound
    # exactly (Fit.at_bounds tells "at the bound" by 1e-6 relative), and is no worse for the move
    N, D = grid(sizes=4, multipliers=(5, 20, 80))
    loss = noisy(chinchilla(N, D, **{**TRUTH, "E": 0.0}), 0.003, 0)
    d = _chinchilla_design(N, D, loss, np.zeros(N.size, dtype=int), 1, ())
    fit = fit_chinchilla(N, D, loss, n_boot=0)
    assert fit.at_bounds == {"E": "estimate at lower bound"}
    on = np.array([np.log(fit.params[k]) if k in "EAB" else fit.params[k] for k in d.names])
    off = on + np.r_[5e-7, 0, 0, 0, 0]
    theta, f = _minimize(d, off[None], np.ones((1, d.y.size)))
    assert theta[0, 0] == _box(d)[0][0]
    assert f[0] <= _value(d, off[None], np.ones((1, d.y.size)))[0]


def test_batched_refits_reach_scipys_optimum_or_better():
    # certified against SciPy's L-BFGS-B, refitting each bootstrap resample on its own from the
    # same warm start (the fits before the batched solver): never a worse optimum
    d = _joint_design()
    start = np.zeros(d.n_theta)
    start[d.index] = [np.log(TRUTH[k]) if k in "EAB" else TRUTH[k] for k in d.names]  # per variant, fitted units
    theta = _fit_theta(d, start[None])  # the full-data optimum, from which every refit starts
    rng = np.random.default_rng(1)
    W = rng.multinomial(d.y.size, np.full(d.y.size, 1 / d.y.size), size=30).astype(float)
    ours, f = _minimize(d, np.tile(theta, (W.shape[0], 1)), W)
    lo, hi = _box(d)
    for w, ours_f in zip(W, f, strict=True):
        res = minimize(
            lambda t, w=w: (_value(d, t[None], w[None])[0], _derivatives(d, t[None], w[None])[0][0]),
            theta, jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi, strict=True)),
            options={"maxiter": 2000, "ftol": 1e-10, "gtol": 1e-7},
        )  # fmt: skip
        assert ours_f <= res.fun + 1e-9 * max(1.0, abs(res.fun))
    assert np.all((ours >= lo) & (ours <= hi))


def test_refits_in_chunks_equal_one_batch(monkeypatch):
    d = _joint_design()
    start = np.zeros(d.n_theta)
    start[d.index] = [np.log(TRUTH[k]) if k in "EAB" else TRUTH[k] for k in d.names]
    W = np.random.default_rng(2).multinomial(d.y.size, np.full(d.y.size, 1 / d.y.size), size=7).astype(float)
    whole = _minimize(d, np.tile(start, (7, 1)), W)
    monkeypatch.setattr(fit_module, "_CHUNK", 2 * d.y.size * d.n_theta)  # 2 rows a chunk: 4 chunks
    chunked = _minimize(d, np.tile(start, (7, 1)), W)
    # equal to rounding: BLAS may sum in another order for another number of rows
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-6)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-9)
