"""Slopes within groups, with intervals over clusters, and Holm's correction. Pure functions.

The slope of y on x within fixed-effect groups (each group's own mean removed, so a group that
differs only in level adds nothing):

    b = sum_i xt_i yt_i / sum_i xt_i**2,   xt = x - mean_group(x),  yt = y - mean_group(y)

Its interval treats whole clusters as the independent units (rows within a cluster may be
correlated in any way); fixed-effect groups must lie within clusters. From fewer than
BOOT_CLUSTERS clusters: Student t with G - 1 degrees of freedom around the cluster-robust standard
error (CR1, Cameron & Miller 2015):

    V = G / (G - 1) * sum_g (sum_{i in g} xt_i e_i)**2 / (sum_i xt_i**2)**2,   e = yt - b xt

From more: a percentile bootstrap that resamples whole clusters. Where y carries a second source of
error given as alternative rows (`y_rows`, e.g. one per bootstrap refit of a baseline surface), the
slope's spread over those rows is added (t) or drawn alongside (bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

# Below this many clusters a percentile bootstrap under-covers (its interval stays inside the
# observed spread and uses normal, not t, tails: with 12 clusters a nominal 95% covers ~91%).
BOOT_CLUSTERS = 30
LEVEL = 0.95


@dataclass(frozen=True)
class Slope:
    """A within-group slope with its 95% interval and two-sided p-value for slope = 0."""

    estimate: float
    low: float
    high: float
    p: float
    n_clusters: int  # clusters with at least two distinct x within a group (those that inform the slope)
    method: str

    @property
    def triple(self) -> tuple[float, float, float]:
        return (self.estimate, self.low, self.high)


def _demean(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """values minus their group means along the last axis (codes: 0..k-1 per column)."""
    counts = np.bincount(codes)
    flat = values.reshape(-1, values.shape[-1])
    means = np.array([np.bincount(codes, row, counts.size) / counts for row in flat])
    return (flat - means[:, codes]).reshape(values.shape)


def within_slope(
    x: np.ndarray, y: np.ndarray, group: np.ndarray, cluster: np.ndarray, *, y_rows: np.ndarray | None = None,
    n_boot: int = 1000, rng: np.random.Generator | None = None,
) -> Slope:  # fmt: skip
    """Slope of y on x within `group`s, interval over `cluster`s (module docstring), y_rows (R, n)
    optional alternatives of y whose spread of slopes is added to the error."""
    nan = float("nan")
    g_codes = np.unique(group, return_inverse=True)[1]
    c_labels, c_codes = np.unique(cluster, return_inverse=True)
    xt = _demean(np.asarray(x, float), g_codes)
    informative = np.unique(c_codes[np.abs(xt) > 1e-12])
    G = informative.size
    sxx = float((xt**2).sum())
    if sxx == 0:
        return Slope(nan, nan, nan, nan, 0, "no slope: no group has two distinct values")
    yt = _demean(np.asarray(y, float), g_codes)
    est = float(xt @ yt / sxx)
    if G < 2:
        return Slope(est, nan, nan, nan, G, f"no interval: {G} cluster")
    rows = None if y_rows is None or len(y_rows) < 2 else _demean(np.asarray(y_rows, float), g_codes) @ xt / sxx
    extra = float(rows.var(ddof=1)) if rows is not None else 0.0
    if G < BOOT_CLUSTERS:
        e = yt - est * xt
        score = np.bincount(c_codes, xt * e, c_labels.size)
        se = float(np.sqrt(G / (G - 1) * (score**2).sum() / sxx**2 + extra))
        half = float(stats.t.ppf(0.5 + LEVEL / 2, G - 1)) * se
        p = float(2 * stats.t.sf(abs(est) / se, G - 1)) if se > 0 else (0.0 if est else 1.0)
        how = f"95% t-interval (G - 1 = {G - 1} df) from the cluster-robust s.e. over {G} chains"
        return Slope(est, est - half, est + half, p, G, how + (", plus the baseline fit's spread" if extra else ""))
    rng = rng or np.random.default_rng(0)
    sxy = np.bincount(c_codes, xt * yt, c_labels.size)[informative]
    sx2 = np.bincount(c_codes, xt**2, c_labels.size)[informative]
    pick = rng.integers(0, G, size=(n_boot, G))
    boot = sxy[pick].sum(1) / sx2[pick].sum(1)
    if rows is not None:  # each resample of clusters paired with one refit of the surface
        boot = boot + (rows[np.arange(n_boot) % rows.size] - rows.mean())
    lo, hi = np.percentile(boot, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    p = float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean()) + 1 / n_boot))
    how = f"95% cluster bootstrap over {G} chains ({n_boot} resamples)"
    return Slope(est, float(lo), float(hi), p, G, how + (", with the baseline fit's refits" if extra else ""))


def holm(p: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (1979): with p sorted ascending, p_(k) -> max over j <= k of
    min(1, (m - j + 1) p_(j)); NaN stays NaN and does not count towards m."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    order = ok[np.argsort(p[ok])]
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out
