"""Huber fits of the scaling laws in log space (Hoffmann et al. 2022, approach 3), with bootstrap.

Each law here is a log-sum-exp of power-law terms, log L = LSE_k(c_k - e_k * x_k), with log
coefficients c (E, A, B or E, a, b) and exponents e (alpha, beta or eta) on log features x (log N,
log D, ...). One objective with an analytic gradient serves the Chinchilla surface, the over-training
law and the joint fit across variants; the laws themselves are in `analysis.laws`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize

from analysis import AnalysisError
from analysis.blas import one_blas_thread
from analysis.laws import chinchilla, flops_6nd
from analysis.names import BASELINE

HUBER_DELTA = 1e-3  # Hoffmann et al.; residuals are log losses, so this is a 0.1% relative error
CHINCHILLA = ("E", "A", "B", "alpha", "beta")
OVERTRAINING = ("E", "a", "b", "eta")
_LOG = {"E", "A", "B", "a", "b"}  # fitted as logs, which keeps them positive
_BOUNDS = {"E": (-3.0, 3.0), "alpha": (1e-3, 3.0), "beta": (1e-3, 3.0), "eta": (1e-3, 3.0)}
_COEF_BOUNDS = (-10.0, 40.0)
_AT_BOUND_RTOL = 1e-6  # the fit's projection stops on a bound exactly; a value this close counts as on it
_TAIL = 0.025  # this share of bootstrap refits on a bound puts the 95% interval's end on it
# Each exponent scales one coefficient's term: when the exponent is pinned, the coefficient is free too.
_TERMS = {"A": "alpha", "B": "beta", "a": "eta", "b": "eta"}
# Starting points in fitted units: Hoffmann et al.'s grid for the Chinchilla law (4,500 points);
# over-trained C**-eta terms have eta ~ alpha / 2 (Gadre et al.), hence the smaller exponents.
_GRID = {
    "E": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "A": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "B": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "a": (0.0, 3.0, 6.0, 9.0, 12.0, 15.0),
    "b": (0.0, 3.0, 6.0, 9.0, 12.0, 15.0),
    "eta": (0.05, 0.1, 0.2, 0.3, 0.5),
}
WIDE = 1.0  # an interval wider than this times |estimate| is flagged as too wide to mean anything
_N_STARTS = 8  # best grid points that get a full fit (`_minimize`)
_CHUNK = 4_000_000  # (row, point, parameter) values per batch of `_minimize`: ~32 MB per array
_MAX_STEP = 2.0  # largest move of one fitted parameter (a log coefficient or exponent) in one Newton step


@dataclass(frozen=True)
class Fit:
    """Fitted law for one variant; `samples` holds bootstrap refits, one row each, columns as `params`."""

    law: str
    variant: str
    params: dict[str, float]
    samples: np.ndarray
    n_points: int
    n_kind: str  # which parameter count N is: "non_embedding", "total", or "table" (as given)

    @property
    def intervals(self) -> dict[str, tuple[float, float]]:
        """95% percentile bootstrap intervals (NaN without resamples)."""
        return {name: interval(self.samples[:, j]) for j, name in enumerate(self.params)}

    @property
    def at_bounds(self) -> dict[str, str]:
        """Parameters the data do not constrain: name -> "estimate at lower bound", "interval reaches
        upper bound", ... (the fitting box, `param_bounds`), or "interval follows alpha's to its bound"
        for the coefficient of an exponent so flagged. Empty for a well-posed fit."""
        flags = {}
        for j, (name, value) in enumerate(self.params.items()):
            samples = self.samples[~np.isnan(self.samples[:, j]), j]
            sides = list(zip(("lower", "upper"), param_bounds(name), strict=True))
            if est := [side for side, b in sides if _on(value, b)]:
                flags[name] = f"estimate at {est[0]} bound"
            elif ends := [side for side, b in sides if samples.size and _on(samples, b).mean() >= _TAIL]:
                flags[name] = "interval reaches both bounds" if len(ends) == 2 else f"interval reaches {ends[0]} bound"
        for coef, expo in _TERMS.items():
            if coef in self.params and coef not in flags and expo in flags:
                flags[coef] = f"interval follows {expo}'s to its bound"
        return {name: flags[name] for name in self.params if name in flags}

    @property
    def too_wide(self) -> dict[str, str]:
        """Parameters whose 95% interval is wider than the estimate itself (width > |estimate|, e.g.
        E = 1.6 [0.075, 2.11]): within the box but too loose to mean anything. Empty without resamples."""
        out = {}
        for name, (lo, hi) in self.intervals.items():
            if np.isfinite(lo) and (not np.isfinite(hi) or hi - lo > WIDE * abs(self.params[name])):
                out[name] = f"interval [{lo:.3g}, {hi:.3g}] is wider than the estimate {self.params[name]:.3g}"
        return out


@dataclass(frozen=True)
class JointFit:
    """Chinchilla fit across variants with `shared` parameters; bootstrap rows are paired across variants."""

    shared: tuple[str, ...]
    fits: dict[str, Fit]

    def difference(self, name: str, variant: str, reference: str = BASELINE) -> tuple[float, float, float]:
        """(estimate, low, high) of `name` for `variant` minus the same for `reference`."""
        j = list(CHINCHILLA).index(name)
        fit, ref = self.fits[variant], self.fits[reference]
        return (fit.params[name] - ref.params[name], *interval(fit.samples[:, j] - ref.samples[:, j]))


@dataclass(frozen=True)
class HoldOut:
    """Relative error (predicted / observed - 1) on the held-out largest-compute cells."""

    threshold: float  # held-out cells have C >= threshold
    rel_error: np.ndarray
    n_train: int

    @property
    def mean_abs(self) -> float:
        return float(np.mean(np.abs(self.rel_error)))


@dataclass(frozen=True)
class _Design:
    """log L_i = LSE_k(theta[coef[i, k]] - theta[expo[i, k]] * x[i, k]); `index` maps
    (variant, law parameter) to theta, `names` are the law's parameters."""

    coef: np.ndarray
    expo: np.ndarray
    x: np.ndarray
    y: np.ndarray
    strata: np.ndarray
    index: np.ndarray
    names: tuple[str, ...]

    @property
    def n_theta(self) -> int:
        return int(self.index.max()) + 1

    @cached_property
    def jacobian(self) -> np.ndarray:
        """J[i, k] = d t_ik / d theta: +1 at coef[i, k], -x[i, k] at expo[i, k]; (n, K, P)."""
        n, K = self.coef.shape
        J = np.zeros((n, K, self.n_theta))
        i, k = np.meshgrid(np.arange(n), np.arange(K), indexing="ij")
        np.add.at(J, (i, k, self.coef), 1.0)
        np.add.at(J, (i, k, self.expo), -self.x)
        return J

    @cached_property
    def outer(self) -> np.ndarray:
        """J J^T per (i, k), flattened to (n K, P P) for one matrix product per Hessian."""
        J = self.jacobian
        return np.einsum("nkp,nkq->nkpq", J, J).reshape(-1, self.n_theta**2)


def describe_bounds(flags: dict[str, str]) -> str:
    """`Fit.at_bounds` as a clause: "E at its lower bound 0.0498 and alpha's interval reaches its upper
    bound 3"; empty without flags."""
    parts = []
    for name, flag in flags.items():
        side = "lower" if "lower" in flag else "upper"
        bound = param_bounds(name)[side == "upper"]
        if flag.startswith("estimate"):
            parts.append(f"{name} at its {side} bound {bound:.3g}")
        elif "both" in flag:
            parts.append(f"{name}'s interval reaches both bounds")
        elif "follows" in flag:
            parts.append(f"{name}'s interval {flag.split(' to ')[0].removeprefix('interval ')}")
        else:
            parts.append(f"{name}'s interval reaches its {side} bound {bound:.3g}")
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)


def param_bounds(name: str) -> tuple[float, float]:
    """The box a law parameter is fitted in, in its natural units (coefficients are fitted as logs)."""
    lo, hi = _BOUNDS.get(name, _COEF_BOUNDS)
    return (float(np.exp(lo)), float(np.exp(hi))) if name in _LOG else (lo, hi)


def _on(x: ArrayLike, bound: float) -> np.ndarray:
    """Whether x lies on a bound (NaN does not)."""
    return np.abs(np.asarray(x, dtype=float) - bound) <= _AT_BOUND_RTOL * abs(bound)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples (infinite ones count as extreme), NaN with fewer
    than two non-NaN samples."""
    samples = samples[~np.isnan(samples)]
    if samples.size < 2:
        return (float("nan"), float("nan"))
    big = np.finfo(float).max
    lo, hi = np.percentile(np.clip(samples, -big, big), [50 * (1 - level), 50 * (1 + level)])
    return tuple(float(np.where(abs(q) == big, np.sign(q) * np.inf, q)) for q in (lo, hi))


def _terms(d: _Design, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals r = LSE_k(t_k) - y (B, n) and softmax weights p (B, n, K) of the terms
    t_k = theta[coef_k] - theta[expo_k] * x_k, for each row of theta (B, P)."""
    t = theta[:, d.coef] - theta[:, d.expo] * d.x  # (B, n, K)
    top = t.max(axis=2, keepdims=True)
    e = np.exp(t - top)
    total = e.sum(axis=2)
    return top[..., 0] + np.log(total) - d.y, e / total[..., None]


def _value(d: _Design, theta: np.ndarray, w: np.ndarray) -> np.ndarray:
    """f_b = sum_i w_bi huber(r_bi) / (delta**2 sum_i w_bi), per row b of theta (B, P) and w (B, n)."""
    r = _terms(d, theta)[0]
    a = np.abs(r)
    huber = np.where(a <= HUBER_DELTA, 0.5 * r**2, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))
    return np.einsum("bn,bn->b", w, huber) / (HUBER_DELTA**2 * w.sum(axis=1))


def _derivatives(d: _Design, theta: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient (B, P) and Hessian (B, P, P) of `_value`. With J_ik = d t_ik / d theta (+1 at coef,
    -x at expo) and s = 1 / (delta**2 sum w):
        dr_i = sum_k p_ik J_ik,    d2r_i = sum_k p_ik J_ik J_ik^T - dr_i dr_i^T,
        g = s sum_i w_i h'(r_i) dr_i,    H = s sum_i w_i (h''(r_i) dr_i dr_i^T + h'(r_i) d2r_i),
    h' = r inside |r| <= delta, else delta sign(r); h'' = 1 inside, else 0."""
    r, p = _terms(d, theta)
    inside = np.abs(r) <= HUBER_DELTA
    s = (1.0 / (HUBER_DELTA**2 * w.sum(axis=1)))[:, None]
    h1 = s * w * np.where(inside, r, HUBER_DELTA * np.sign(r))  # (B, n)
    h2 = s * w * inside
    J = d.jacobian  # (n, K, P)
    dr = np.einsum("bnk,nkp->bnp", p, J)
    g = np.einsum("bn,bnp->bp", h1, dr)
    B, P = theta.shape
    curvature = ((h1[..., None] * p).reshape(B, -1) @ d.outer).reshape(B, P, P)  # sum_i h1_i sum_k p_ik J J^T
    return g, curvature + np.einsum("bnp,bnq->bpq", (h2 - h1)[..., None] * dr, dr)


def _box(d: _Design) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((d.n_theta, 2))
    for v in range(d.index.shape[0]):
        for j, name in enumerate(d.names):
            out[d.index[v, j]] = _BOUNDS.get(name, _COEF_BOUNDS)
    return out[:, 0], out[:, 1]


def _minimize(
    d: _Design, theta0: np.ndarray, w: np.ndarray, *, maxiter: int = 2000, gtol: float = 1e-7, ftol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Minimise `_value` in the box, one problem per row of theta0 (B, P) and w (B, n or 1), all at
    once: projected Newton (Bertsekas 1982). Per row and iteration: variables within eps of a bound
    whose gradient points out of the box are put on the bound and held there; the others take the
    Newton step with the Hessian's eigenvalues replaced by max(|lambda|, 1e-10 max|lambda|), at most
    _MAX_STEP in any parameter; the step is projected on the box and halved until
    f(new) <= min(f, f + 1e-4 g.(new - theta)) (Armijo; never uphill, NaN rejected). A row stops when
    its projected gradient is under gtol or f falls by no more than ftol max(|f|, 1), the tests
    L-BFGS-B uses. Returns (theta, f). The rows share each vectorised pass, so 1,000 bootstrap refits
    cost about what ~30 single fits cost (bench/fit_bootstrap.py). Rows go in chunks of ~_CHUNK
    (row, point, parameter) values; `_Design.outer`, (n K, P^2), is built once beside them."""
    theta0 = np.atleast_2d(np.asarray(theta0, dtype=float))
    w = np.broadcast_to(np.asarray(w, dtype=float), (theta0.shape[0], d.y.size))
    rows = max(1, _CHUNK // (d.y.size * d.n_theta))
    parts = [_newton(d, theta0[i : i + rows], w[i : i + rows], maxiter, gtol, ftol) for i in range(0, len(w), rows)]
    if not parts:
        return theta0.copy(), np.zeros(0)
    return np.concatenate([t for t, _ in parts]), np.concatenate([f for _, f in parts])


def _newton(
    d: _Design, theta0: np.ndarray, w: np.ndarray, maxiter: int, gtol: float, ftol: float
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`_minimize` on one chunk of rows."""
    lo, hi = _box(d)
    theta = np.clip(theta0, lo, hi)
    f = _value(d, theta, w)
    live = np.arange(theta.shape[0])
    for _ in range(maxiter):
        if live.size == 0:
            break
        th, ww, f0 = theta[live], w[live], f[live]
        g, H = _derivatives(d, th, ww)
        pg = np.clip(th - g, lo, hi) - th  # projected gradient
        eps = np.minimum(1e-6, np.linalg.norm(pg, axis=1))[:, None]
        at_lo, at_hi = (th <= lo + eps) & (g > 0), (th >= hi - eps) & (g < 0)
        free = ~(at_lo | at_hi)
        # variables held on a bound are decoupled (unit diagonal, zero gradient) and snapped onto it
        H = np.where(free[:, :, None] & free[:, None, :], H, 0.0) + np.eye(H.shape[1]) * ~free[:, :, None]
        lam, V = np.linalg.eigh(H)
        lam = np.maximum(np.abs(lam), 1e-10 * np.abs(lam).max(axis=1, keepdims=True) + 1e-300)
        step = -np.einsum("bpq,bq->bp", V, np.einsum("bqp,bq->bp", V, np.where(free, g, 0.0)) / lam)
        step *= np.minimum(1.0, _MAX_STEP / np.maximum(np.abs(step).max(axis=1, keepdims=True), 1e-300))
        held = np.where(at_lo, lo, np.where(at_hi, hi, th))
        alpha, fn, todo = np.ones(live.size), np.empty(live.size), np.arange(live.size)
        new = np.where(free, np.clip(th + step, lo, hi), held)
        for _ in range(60):
            fn[todo] = _value(d, new[todo], ww[todo])
            armijo = np.minimum(f0[todo], f0[todo] + 1e-4 * np.einsum("bp,bp->b", g[todo], new[todo] - th[todo]))
            todo = todo[~(fn[todo] <= armijo)]  # NaN fails too
            if todo.size == 0:
                break
            alpha[todo] *= 0.5
            new[todo] = np.where(free[todo], np.clip(th[todo] + alpha[todo, None] * step[todo], lo, hi), held[todo])
        new[todo], fn[todo] = th[todo], f0[todo]  # no decrease along the arc: stay, and stop below
        theta[live], f[live] = new, fn
        done = (np.abs(pg).max(axis=1) <= gtol) | (f0 - fn <= ftol * np.maximum(np.maximum(abs(f0), abs(fn)), 1.0))
        live = live[~done]
    return theta, f


def _grid_starts(d: _Design, k: int = _N_STARTS) -> np.ndarray:
    """The k best points of the starting grid (one variant), scored in one vectorised pass."""
    mesh = np.meshgrid(*(np.asarray(_GRID[name]) for name in d.names), indexing="ij")
    grid = np.stack([m.ravel() for m in mesh], axis=1)  # columns in theta order for one variant
    t = grid[:, d.coef] - grid[:, d.expo] * d.x  # (G, n, K)
    top = t.max(axis=2)
    r = top + np.log(np.exp(t - top[..., None]).sum(axis=2)) - d.y
    a = np.abs(r)
    score = np.where(a <= HUBER_DELTA, 0.5 * r**2, HUBER_DELTA * (a - 0.5 * HUBER_DELTA)).sum(axis=1)
    return grid[np.argsort(score)[:k]]


def _fit_theta(d: _Design, starts: np.ndarray) -> np.ndarray:
    """The best fit to every trial (weight 1) from each start (rows of `starts`): `_minimize` from
    the start, and `_minimize` again from SciPy's L-BFGS-B optimum from it. Far from an optimum most
    residuals sit outside Huber's quadratic zone, where the Newton step has little curvature to go
    on and L-BFGS-B does better (16 of 105 random starts on 12 noisy cells); near one, Newton
    finishes what L-BFGS-B stops short of (tests/test_analysis_fit.py)."""
    w = np.ones((1, d.y.size))
    lo, hi = _box(d)
    with one_blas_thread():
        lbfgs = [
            minimize(lambda t: (_value(d, t[None], w)[0], _derivatives(d, t[None], w)[0][0]), s, jac=True,
                     method="L-BFGS-B", bounds=list(zip(lo, hi, strict=True)),
                     options={"maxiter": 2000, "ftol": 1e-10, "gtol": 1e-7}).x
            for s in np.clip(starts, lo, hi)
        ]  # fmt: skip
        theta, f = _minimize(d, np.r_[starts, lbfgs], w)
    return theta[np.argmin(f)]


def _bootstrap(d: _Design, theta: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Refit on trials resampled within each stratum, warm-started from the full-data optimum."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, d.y.size))
    for s in np.unique(d.strata):
        idx = np.flatnonzero(d.strata == s)
        weights[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_boot)
    with one_blas_thread():
        return _minimize(d, np.tile(theta, (n_boot, 1)), weights)[0]


def _natural(theta: np.ndarray, d: _Design, v: int) -> np.ndarray:
    """Law parameters of variant v from rows of fitted thetas (logs exponentiated)."""
    out = theta[..., d.index[v]]
    log = np.array([name in _LOG for name in d.names])
    return np.where(log, np.exp(out), out)


def _as_arrays(law: str, n_min: int, **columns: ArrayLike) -> list[np.ndarray]:
    arrays = [np.asarray(c, dtype=float).ravel() for c in columns.values()]
    n = arrays[0].size
    for name, a in zip(columns, arrays, strict=True):
        if a.size != n:
            raise AnalysisError(f"{law} fit: column {name} has {a.size} values, expected {n}")
        bad = ~np.isfinite(a) | (a <= 0)
        if bad.any():
            raise AnalysisError(
                f"{law} fit: {bad.sum()} {name} values are NaN, infinite or <= 0 "
                f"(first at row {np.flatnonzero(bad)[0]}); drop failed or diverged trials first"
            )
    if n < n_min:
        raise AnalysisError(f"{law} fit needs at least {n_min} points; got {n}")
    return arrays


def _multiplier(N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """D / N to 3 significant digits: at a single M the N and D terms cannot be told apart."""
    return np.array([float(f"{m:.3g}") for m in D / N])


def _distinct(law: str, **columns: np.ndarray) -> None:
    for name, a in columns.items():
        if np.unique(a).size < 2:
            raise AnalysisError(f"{law} fit needs at least 2 distinct values of {name}; all are {a[0]:g}")


def _chinchilla_design(
    N: np.ndarray, D: np.ndarray, loss: np.ndarray, codes: np.ndarray, n_variants: int, shared: Sequence[str]
) -> _Design:
    index, nxt = np.zeros((n_variants, len(CHINCHILLA)), dtype=int), 0
    for j, name in enumerate(CHINCHILLA):
        if name in shared:
            index[:, j], nxt = nxt, nxt + 1
        else:
            index[:, j], nxt = np.arange(nxt, nxt + n_variants), nxt + n_variants
    rows = index[codes]  # (n, 5): E, A, B, alpha, beta
    x = np.stack([np.log(N), np.log(D), np.zeros_like(N)], axis=1)
    return _Design(rows[:, [1, 2, 0]], rows[:, [3, 4, 3]], x, np.log(loss), codes, index, CHINCHILLA)


def fit_chinchilla(
    N: ArrayLike, D: ArrayLike, loss: ArrayLike, *, variant: str = "all", n_kind: str = "table",
    n_boot: int = 1000, seed: int = 0,
) -> Fit:  # fmt: skip
    """Fit L(N, D) = E + A / N**alpha + B / D**beta by Huber loss on log L (Hoffmann et al. 2022).

    `_minimize` runs from the best points of a 4,500-point grid (Hoffmann et al. ran L-BFGS); the
    interval comes from `n_boot` refits on resampled trials, each warm-started from the full-data optimum.
    """
    N, D, loss = _as_arrays("chinchilla", len(CHINCHILLA) + 1, N=N, D=D, loss=loss)
    _distinct("chinchilla", N=N, D=D, M=_multiplier(N, D))
    d = _chinchilla_design(N, D, loss, np.zeros(N.size, dtype=int), 1, ())
    theta = _fit_theta(d, _grid_starts(d))
    samples = _natural(_bootstrap(d, theta, n_boot, seed), d, 0)
    params = dict(zip(CHINCHILLA, _natural(theta, d, 0).tolist(), strict=True))
    return Fit("chinchilla", variant, params, samples, N.size, n_kind)


def fit_joint(
    N: ArrayLike, D: ArrayLike, loss: ArrayLike, variant: ArrayLike, *,
    shared: Sequence[str] = ("E", "alpha"), n_kind: str = "table", n_boot: int = 1000, seed: int = 0,
) -> JointFit:  # fmt: skip
    """Fit the Chinchilla surface to all variants at once, `shared` parameters common to all and the
    others per variant, so that differences (e.g. in beta) get intervals from one bootstrap.

    Starts from the per-variant fits, the shared parameters at their mean; resampling is within variant.
    """
    N, D, loss = _as_arrays("joint", len(CHINCHILLA) + 1, N=N, D=D, loss=loss)
    names, codes = np.unique(np.asarray(variant, dtype=str), return_inverse=True)
    if names.size < 2:
        raise AnalysisError(f"joint fit needs at least 2 variants; found only {names.tolist()}")
    if unknown := set(shared) - set(CHINCHILLA):
        raise AnalysisError(f"joint fit: unknown shared parameters {sorted(unknown)}; use {CHINCHILLA}")
    d = _chinchilla_design(N, D, loss, codes, names.size, shared)
    theta0 = np.zeros(d.n_theta)
    for v, name in enumerate(names):
        mask = codes == v
        _as_arrays(f"joint ({name})", len(CHINCHILLA) + 1, N=N[mask])
        _distinct(f"joint ({name})", N=N[mask], D=D[mask], M=_multiplier(N[mask], D[mask]))
        single = _chinchilla_design(N[mask], D[mask], loss[mask], np.zeros(mask.sum(), dtype=int), 1, ())
        np.add.at(theta0, d.index[v], _fit_theta(single, _grid_starts(single)))
    counts = np.bincount(d.index.ravel(), minlength=d.n_theta)
    theta = _fit_theta(d, (theta0 / counts)[None])
    boot = _bootstrap(d, theta, n_boot, seed)
    fits = {
        str(name): Fit(
            "chinchilla",
            str(name),
            dict(zip(CHINCHILLA, _natural(theta, d, v).tolist(), strict=True)),
            _natural(boot, d, v),
            int((codes == v).sum()),
            n_kind,
        )
        for v, name in enumerate(names)
    }
    return JointFit(tuple(shared), fits)


def fit_overtraining(
    C: ArrayLike, M: ArrayLike, loss: ArrayLike, *, variant: str = "all", n_boot: int = 1000, seed: int = 0
) -> Fit:
    """Fit L(C, M) = E + (a * M**eta + b * M**-eta) * C**-eta (Gadre et al. 2024) by Huber loss on
    log L, as `fit_chinchilla` does; log L = LSE(e, log a - eta (log C - log M), log b - eta (log C + log M)).
    """
    C, M, loss = _as_arrays("overtraining", len(OVERTRAINING) + 1, C=C, M=M, loss=loss)
    _distinct("overtraining", C=C, M=M)
    index = np.arange(len(OVERTRAINING))[None]
    rows = np.broadcast_to(index, (C.size, len(OVERTRAINING)))
    x = np.stack([np.log(C) - np.log(M), np.log(C) + np.log(M), np.zeros_like(C)], axis=1)
    d = _Design(rows[:, [1, 2, 0]], rows[:, [3, 3, 3]], x, np.log(loss), np.zeros(C.size, int), index, OVERTRAINING)
    theta = _fit_theta(d, _grid_starts(d))
    samples = _natural(_bootstrap(d, theta, n_boot, seed), d, 0)
    params = dict(zip(OVERTRAINING, _natural(theta, d, 0).tolist(), strict=True))
    return Fit("overtraining", variant, params, samples, C.size, "")


def holdout(N: ArrayLike, D: ArrayLike, loss: ArrayLike, *, C: ArrayLike | None = None, frac: float = 0.2) -> HoldOut:
    """Fit the Chinchilla surface on all but the largest-compute cells (at least `frac` of the points;
    C = 6 N D unless given) and return the relative error of its predictions on the held-out cells."""
    N, D, loss = _as_arrays("holdout", 1, N=N, D=D, loss=loss)
    C = flops_6nd(N, D) if C is None else np.asarray(C, dtype=float)
    n_min = len(CHINCHILLA) + 1  # what fit_chinchilla needs to train on

    def held(n: int) -> int:
        return max(1, int(np.ceil(frac * n)))

    needed = next(n for n in range(n_min + 1, 10 * n_min) if n - held(n) >= n_min)
    threshold = float(np.sort(C)[::-1][held(C.size) - 1])
    test = C >= threshold  # ties at the threshold are held out too
    n_train = int((~test).sum())
    if n_train < n_min:
        raise AnalysisError(
            f"hold-out needs at least {needed} cells: holding out the {test.sum()} largest-compute of "
            f"{C.size} leaves {n_train} to fit, and the Chinchilla fit needs {n_min}"
        )
    try:
        fit = fit_chinchilla(N[~test], D[~test], loss[~test], n_boot=0)
    except AnalysisError as err:
        raise AnalysisError(f"hold-out: the {n_train} cells with C < {threshold:.3g} cannot be fitted: {err}") from err
    pred = chinchilla(N[test], D[test], **fit.params)
    return HoldOut(threshold, pred / loss[test] - 1.0, n_train)
