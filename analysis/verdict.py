"""The verdict: does a tied variant fall further behind the baseline as M = D / N grows?

From the sweep's own cells, paired by sweep, configuration and seed: the relative loss gap
L_variant / L_baseline - 1 at each M with an interval (Student t over few clusters, bootstrap over
many), and its slope in log2 M. The wording follows the slope's interval and the sign of the gap.
From fitted surfaces (a joint Chinchilla fit of variant and baseline, shared E and alpha): the
difference in beta and the effective-compute multiplier. No claim beyond what the intervals support.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis import AnalysisError
from analysis.fit import Fit, JointFit, fit_joint, interval
from analysis.laws import chinchilla, chinchilla_at
from analysis.names import BASELINE, display_name
from analysis.tables import Columns

PAIR_KEYS = ("d_model", "n_layer", "n_head", "tokens_per_param", "seed")
# paired on when present; not lr: tuned rates differ per variant by design (several rows per variant
# in one cell, e.g. an lr grid, are averaged and named in `Pairs.averaged`)
_EXTRA_KEYS = ("sweep", "seq_len", "batch_size", "schedule", "vocab_size", "pos", "corpus_fingerprint")
_SURFACE_SAMPLES = 200  # bootstrap rows used for fitted gaps and multipliers
# Fewer clusters than this get a Student-t interval, not a percentile bootstrap: over n clusters the
# bootstrap's interval lies within the observed range, which covers the mean with probability
# 1 - 2^(1-n) at best (50% for 2 clusters, 75% for 3), where t's covers 95% for normal errors.
MIN_BOOT_CLUSTERS = 8
LAGS_MORE = "lags more with more tokens"  # slope > 0, gap at the largest M > 0
ADVANTAGE_SHRINKS = "its advantage shrinks with more tokens"  # slope > 0, gap < 0 at one end
RISES = "gap grows towards zero or above, its sign not resolved"  # slope > 0, gap covers 0 at both ends
SHRINKS = "gap shrinks with more tokens"  # slope < 0, gap > 0 at one end
PULLS_AHEAD = "pulls ahead with more tokens"  # slope < 0, gap at the largest M < 0
FALLS = "gap falls towards zero or below, its sign not resolved"  # slope < 0, gap covers 0 at both ends
NO_EVIDENCE = "no evidence of a growing gap"
TOO_FEW = "too few paired cells to tell whether the gap grows"


@dataclass(frozen=True)
class Pairs:
    """Variant trials matched to baseline trials of the same configuration (duplicates averaged)."""

    M: np.ndarray
    seed: np.ndarray
    gap: np.ndarray  # L_variant / L_baseline - 1
    N: np.ndarray  # (n, 2): variant, baseline
    D: np.ndarray  # (n, 2)
    averaged: tuple[str, ...] = ()  # cells where a side had several rows (e.g. an lr grid), described


@dataclass(frozen=True)
class Gap:
    """Gap at one token multiplier; (estimate, low, high) triples, NaN where not available."""

    M: float
    n_pairs: int
    measured: tuple[float, float, float]
    fitted: tuple[float, float, float]
    compute_multiplier: tuple[float, float, float]  # compute the variant needs / baseline's, same loss
    method: str = ""  # how `measured` got its interval: "95% t-interval over 3 pairs", ...
    clusters: str = ""  # what it was resampled or averaged over: "3 pairs", "12 seeds"


@dataclass(frozen=True)
class Verdict:
    variant: str
    gaps: list[Gap]
    slope: tuple[float, float, float]  # change of the relative gap per doubling of M
    delta_beta: tuple[float, float, float]
    conclusion: str
    sentence: str
    pairs: Pairs
    joint: JointFit | None
    note: str  # why there is no joint fit, if there is none
    slope_method: str = ""  # how `slope` got its interval


def pair(cols: Columns, variant: str, baseline: str = BASELINE) -> Pairs:
    """Pair completed trials of `variant` and `baseline` of one cell: on (sweep, cell_id) where the rows
    carry cell ids (records.ids), else on PAIR_KEYS (and any _EXTRA_KEYS present)."""
    cells = "cell_id" in cols and all(c is not None for c in cols["cell_id"])
    keys = [k for k in (("sweep", "cell_id") if cells else (*PAIR_KEYS, *_EXTRA_KEYS)) if k in cols]
    rows: dict[str, dict[tuple, list[int]]] = {variant: {}, baseline: {}}
    for i, v in enumerate(cols["variant"]):
        if v in rows:
            rows[v].setdefault(tuple(cols[k][i] for k in keys), []).append(i)
    common = sorted(set(rows[variant]) & set(rows[baseline]), key=str)
    idx = [[rows[variant][key], rows[baseline][key]] for key in common]
    averaged = tuple(
        _describe_cell(cols, dict(zip(keys, key, strict=True)), {variant: a, baseline: b})
        for key, (a, b) in zip(common, idx, strict=True)
        if len(a) > 1 or len(b) > 1
    )

    def mean(name: str) -> np.ndarray:
        return np.array([[np.mean(cols[name][i]) for i in both] for both in idx]).reshape(-1, 2)

    loss = mean("loss")
    gap = loss[:, 0] / loss[:, 1] - 1.0
    return Pairs(mean("M")[:, 1], mean("seed")[:, 1], gap, mean("N"), mean("D"), averaged)


def _describe_cell(cols: Columns, key: dict, rows: dict[str, list[int]]) -> str:
    """A pairing cell where a side had several rows: "M=20, d_model=64, seed=0: Q-K=V 2 rows (lr 0.001, 0.003)"."""
    first = next(iter(rows.values()))[0]  # the cell's fields, from one of its rows
    where = ", ".join(
        [f"M={cols['M'][first]:g}"]
        + [f"{k}={cols[k][first]}" for k in ("sweep", "d_model", "n_layer", "n_head", "d_ff", "seed") if k in cols]
    )
    sides = []
    for v, idx in rows.items():
        if len(idx) > 1:
            lrs = f" (lr {', '.join(f'{lr:g}' for lr in np.unique(cols['lr'][idx]))})" if "lr" in cols else ""
            sides.append(f"{display_name(v)} {len(idx)} rows{lrs}")
    return f"{where}: {' and '.join(sides)}"


def _t_interval(estimate: float, se: float, df: int, level: float = 0.95) -> tuple[float, float, float]:
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return (estimate, estimate - half, estimate + half)


def _mean_gap_interval(
    gap: np.ndarray, cluster: np.ndarray, n_boot: int, rng: np.random.Generator
) -> tuple[tuple[float, float, float], str]:
    """Mean gap with a 95% interval over clusters (seeds, or single pairs), and how it was made:
    none from 1 cluster, Student t over the cluster means from fewer than MIN_BOOT_CLUSTERS, else a
    percentile bootstrap of clusters."""
    labels, inverse = np.unique(cluster, return_inverse=True)
    sums, counts = np.bincount(inverse, gap), np.bincount(inverse)
    if labels.size < 2:
        return (float(gap.mean()), float("nan"), float("nan")), "no interval"
    if labels.size < MIN_BOOT_CLUSTERS:
        means = sums / counts
        se = float(means.std(ddof=1) / np.sqrt(means.size))
        return _t_interval(float(means.mean()), se, means.size - 1), "95% t-interval"
    pick = rng.integers(0, labels.size, size=(n_boot, labels.size))
    return (float(gap.mean()), *interval(sums[pick].sum(1) / counts[pick].sum(1))), "95% bootstrap"


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slopes along the last axis; NaN where x does not vary."""
    xc = x - x.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * (y - y.mean(-1, keepdims=True))).sum(-1) / (xc**2).sum(-1)


def gap_slope(p: Pairs, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Slope of the relative gap per doubling of M, with a 95% interval: from the OLS standard error
    (Student t, n - 2 degrees of freedom) over fewer than MIN_BOOT_CLUSTERS pairs, else from
    resampled pairs. See `slope_method` for which."""
    x = np.log2(p.M)
    est = float(_slope(x, p.gap))
    if p.gap.size < 3 or np.unique(x).size < 2:  # no slope, or no degree of freedom left for its error
        return (est, float("nan"), float("nan"))
    if p.gap.size < MIN_BOOT_CLUSTERS:
        xc = x - x.mean()
        resid = p.gap - p.gap.mean() - est * xc
        se = float(np.sqrt((resid**2).sum() / (x.size - 2) / (xc**2).sum()))
        return _t_interval(est, se, x.size - 2)
    pick = rng.integers(0, x.size, size=(n_boot, x.size))
    return (est, *interval(_slope(x[pick], p.gap[pick])))


def slope_method(p: Pairs) -> str:
    """How `gap_slope` makes its interval for these pairs."""
    if p.gap.size < 3 or np.unique(p.M).size < 2:
        return f"no interval ({p.gap.size} pairs)"
    if p.gap.size < MIN_BOOT_CLUSTERS:
        return f"95% t-interval from the OLS standard error over {p.gap.size} pairs"
    return f"95% bootstrap over {p.gap.size} pairs"


def _rows(fit: Fit) -> np.ndarray:
    """Point estimate then up to _SURFACE_SAMPLES bootstrap rows, one row of law parameters each."""
    return np.vstack([list(fit.params.values()), fit.samples[:_SURFACE_SAMPLES]])


def _multiplier(fit: Fit, ref: Fit, C: float, M: float) -> np.ndarray:
    """k with L_fit(k C, M) = L_ref(C, M) along D = M N, by bisection in log k (inf if unreachable)."""
    own, base = _rows(fit), _rows(ref)
    n = min(len(own), len(base))
    target = chinchilla_at(C, M, *base[:n].T)
    lo, hi = np.full(n, -25.0), np.full(n, 25.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = chinchilla_at(C * np.exp(mid), M, *own[:n].T) > target
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    unreachable = chinchilla_at(C * np.exp(25.0), M, *own[:n].T) > target
    return np.where(unreachable, np.inf, np.exp(0.5 * (lo + hi)))


def _surface_gap(fit: Fit, ref: Fit, N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Fitted relative gap at cells (columns of N, D: variant, baseline): (rows of `_rows`, cells)."""
    own, base = _rows(fit)[:, :, None], _rows(ref)[:, :, None]
    n = min(len(own), len(base))
    law_own = chinchilla(N[:, 0], D[:, 0], *own[:n].transpose(1, 0, 2))
    return law_own / chinchilla(N[:, 1], D[:, 1], *base[:n].transpose(1, 0, 2)) - 1.0


def fitted_gap_curve(v: Verdict, M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fitted relative gap (estimate, low, high) along M for the largest paired shape, each side
    trained on D = r M N tokens with r its median D / (M N) in the sweep; NaN without a joint fit."""
    if v.joint is None:
        return (np.full(M.size, np.nan),) * 3
    top = v.pairs.N[:, 1] == v.pairs.N[:, 1].max()
    N = v.pairs.N[top].mean(0)
    r = np.median(v.pairs.D / (v.pairs.M[:, None] * v.pairs.N), axis=0)
    D = np.outer(M, r * N)  # (m, 2)
    curve = _surface_gap(v.joint.fits[v.variant], v.joint.fits[BASELINE], np.broadcast_to(N, D.shape), D)
    lo, hi = np.array([interval(c) for c in curve[1:].T]).T
    return curve[0], lo, hi


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), *interval(values[1:]))


def _pct(t: tuple[float, float, float]) -> str:
    ci = f"[{100 * t[1]:.1f}, {100 * t[2]:.1f}]" if np.isfinite(t[1:]).all() else "[no interval]"
    return f"{100 * t[0]:+.1f}% {ci}"


_VERBS = {
    LAGS_MORE: "grows from", SHRINKS: "shrinks from", ADVANTAGE_SHRINKS: "rises from", RISES: "rises from",
    PULLS_AHEAD: "falls from", FALLS: "falls from",
}  # fmt: skip


def _sentence(variant: str, gaps: list[Gap], slope: tuple, delta_beta: tuple, conclusion: str) -> str:
    first, last = gaps[0], gaps[-1]
    if len(gaps) == 1:
        body = f"gap {_pct(first.measured)} at M={first.M:g} only"
    elif verb := _VERBS.get(conclusion):
        body = f"gap {verb} {_pct(first.measured)} at M={first.M:g} to {_pct(last.measured)} at M={last.M:g}"
    else:
        body = f"gap {_pct(first.measured)} at M={first.M:g} and {_pct(last.measured)} at M={last.M:g}"
    if np.isfinite(slope[1:]).all():
        body += f"; slope {100 * slope[0]:+.2f}%/doubling [{100 * slope[1]:.2f}, {100 * slope[2]:.2f}]"
    if np.isfinite(delta_beta).all():
        body += f", Δβ {delta_beta[0]:+.3f} [{delta_beta[1]:.3f}, {delta_beta[2]:.3f}]"
    return f"{display_name(variant)}: {body}: {conclusion}"


def _sign(t: tuple[float, float, float]) -> int:
    """+1 if the interval is above 0, -1 if below, 0 if it covers 0 or there is none."""
    return 1 if t[1] > 0 else -1 if t[2] < 0 else 0


def _conclusion(slope: tuple[float, float, float], first: Gap, last: Gap) -> str:
    """Words for the slope's interval and the measured gap at the smallest and largest M: a claim
    about the sign of the gap only where its interval there excludes 0."""
    if not np.isfinite(slope[1:]).all():
        return TOO_FEW
    if slope[1] <= 0 <= slope[2]:
        return NO_EVIDENCE
    at_first, at_last = _sign(first.measured), _sign(last.measured)
    if slope[1] > 0:
        if at_last > 0:
            return LAGS_MORE
        return ADVANTAGE_SHRINKS if -1 in (at_first, at_last) else RISES
    if at_last < 0:
        return PULLS_AHEAD
    return SHRINKS if 1 in (at_first, at_last) else FALLS


def verdict(
    cols: Columns,
    variant: str,
    *,
    baseline: str = BASELINE,
    n_kind: str = "table",
    n_boot: int = 1000,
    seed: int = 0,
) -> Verdict:
    """Verdict for one variant against `baseline` from completed trials (normalised columns)."""
    p = pair(cols, variant, baseline)
    if p.gap.size == 0:
        raise AnalysisError(f"{variant}: no trials paired with {baseline} on the same {', '.join(PAIR_KEYS)}")
    rng = np.random.default_rng(seed)
    joint, note = None, ""
    mask = np.isin(cols["variant"], [variant, baseline])
    try:
        joint = fit_joint(
            cols["N"][mask], cols["D"][mask], cols["loss"][mask], cols["variant"][mask],
            n_kind=n_kind, n_boot=n_boot, seed=seed,
        )  # fmt: skip
    except AnalysisError as err:
        note = str(err)
    nan3 = (float("nan"),) * 3
    gaps = []
    for m in np.unique(p.M):
        at = p.M == m
        # resample seeds where there are enough to resample (3+), otherwise single trials
        by_seed = np.unique(p.seed[at]).size > 2
        cluster = p.seed[at] if by_seed else np.arange(at.sum())
        fitted = multiplier = nan3
        if joint is not None:
            own, ref = joint.fits[variant], joint.fits[baseline]
            fitted = _triple(_surface_gap(own, ref, p.N[at], p.D[at]).mean(axis=1))
            C = float(np.max(6.0 * p.N[at, 1] * p.D[at, 1]))  # the baseline's largest cell at this M
            multiplier = _triple(_multiplier(own, ref, C, float(np.median(p.D[at, 1] / p.N[at, 1]))))
        measured, method = _mean_gap_interval(p.gap[at], cluster, n_boot, rng)
        n = np.unique(cluster).size
        clusters = f"{n} {'seed' if by_seed else 'pair'}{'s' * (n > 1)}"
        method = f"{method} ({clusters})" if n < 2 else f"{method} over {clusters}"
        gaps.append(Gap(float(m), int(at.sum()), measured, fitted, multiplier, method, clusters))
    slope = gap_slope(p, n_boot, rng)
    delta_beta = joint.difference("beta", variant, baseline) if joint is not None else nan3
    conclusion = _conclusion(slope, gaps[0], gaps[-1])
    sentence = _sentence(variant, gaps, slope, delta_beta, conclusion)
    return Verdict(variant, gaps, slope, delta_beta, conclusion, sentence, p, joint, note, slope_method(p))


def verdicts(cols: Columns, *, n_kind: str = "table", n_boot: int = 1000, seed: int = 0) -> list[Verdict]:
    """A verdict for every variant other than the baseline, from completed trials."""
    found = sorted(set(cols["variant"].tolist()))
    if BASELINE not in found:
        raise AnalysisError(f"no '{BASELINE}' trials to compare against; variants found: {found}")
    if len(found) < 2:
        raise AnalysisError(f"only one variant ({BASELINE}); the verdict needs at least one tied variant too")
    return [verdict(cols, v, n_kind=n_kind, n_boot=n_boot, seed=seed) for v in found if v != BASELINE]
