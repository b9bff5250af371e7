"""The verdict: does a tied variant fall further behind the baseline as M = D / N grows?

From the sweep's own cells, paired by configuration and seed: the relative loss gap
L_variant / L_baseline - 1 at each M with a bootstrap interval, and its slope in log2 M.
From fitted surfaces (a joint Chinchilla fit of variant and baseline, shared E and alpha): the
difference in beta and the effective-compute multiplier. No claim beyond what the intervals support.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis import AnalysisError
from analysis.fit import Fit, JointFit, fit_joint, interval
from analysis.laws import chinchilla, chinchilla_at
from analysis.names import BASELINE, display_name
from analysis.tables import Columns

PAIR_KEYS = ("d_model", "n_layer", "n_head", "tokens_per_param", "seed")
_EXTRA_KEYS = ("seq_len", "batch_size", "schedule", "vocab_size", "dataset")  # paired on when present
_SURFACE_SAMPLES = 200  # bootstrap rows used for fitted gaps and multipliers
LAGS_MORE = "lags more with more tokens"
SHRINKS = "gap shrinks with more tokens"
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


@dataclass(frozen=True)
class Gap:
    """Gap at one token multiplier; (estimate, low, high) triples, NaN where not available."""

    M: float
    n_pairs: int
    measured: tuple[float, float, float]
    fitted: tuple[float, float, float]
    compute_multiplier: tuple[float, float, float]  # compute the variant needs / baseline's, same loss


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


def pair(cols: Columns, variant: str, baseline: str = BASELINE) -> Pairs:
    """Pair completed trials of `variant` and `baseline` on PAIR_KEYS (and any _EXTRA_KEYS present)."""
    keys = [k for k in (*PAIR_KEYS, *_EXTRA_KEYS) if k in cols]
    rows: dict[str, dict[tuple, list[int]]] = {variant: {}, baseline: {}}
    for i, v in enumerate(cols["variant"]):
        if v in rows:
            rows[v].setdefault(tuple(cols[k][i] for k in keys), []).append(i)
    common = sorted(set(rows[variant]) & set(rows[baseline]), key=str)
    idx = [[rows[variant][key], rows[baseline][key]] for key in common]

    def mean(name: str) -> np.ndarray:
        return np.array([[np.mean(cols[name][i]) for i in both] for both in idx]).reshape(-1, 2)

    loss = mean("loss")
    return Pairs(mean("M")[:, 1], mean("seed")[:, 1], loss[:, 0] / loss[:, 1] - 1.0, mean("N"), mean("D"))


def _mean_gap_interval(gap: np.ndarray, cluster: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple:
    """Mean gap with a bootstrap interval over clusters (seeds, or single pairs)."""
    labels, inverse = np.unique(cluster, return_inverse=True)
    if labels.size < 2:
        return (float(gap.mean()), float("nan"), float("nan"))
    sums, counts = np.bincount(inverse, gap), np.bincount(inverse)
    pick = rng.integers(0, labels.size, size=(n_boot, labels.size))
    return (float(gap.mean()), *interval(sums[pick].sum(1) / counts[pick].sum(1)))


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slopes along the last axis; NaN where x does not vary."""
    xc = x - x.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * (y - y.mean(-1, keepdims=True))).sum(-1) / (xc**2).sum(-1)


def gap_slope(p: Pairs, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Slope of the relative gap per doubling of M, with an interval from resampled pairs."""
    x = np.log2(p.M)
    if p.gap.size < 3 or np.unique(x).size < 2:  # no slope, or none to resample
        return (float(_slope(x, p.gap)), float("nan"), float("nan"))
    pick = rng.integers(0, x.size, size=(n_boot, x.size))
    return (float(_slope(x, p.gap)), *interval(_slope(x[pick], p.gap[pick])))


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


def _sentence(variant: str, gaps: list[Gap], slope: tuple, delta_beta: tuple, conclusion: str) -> str:
    first, last = gaps[0], gaps[-1]
    if len(gaps) == 1:
        body = f"gap {_pct(first.measured)} at M={first.M:g} only"
    elif verb := {LAGS_MORE: "grows from", SHRINKS: "shrinks from"}.get(conclusion):
        body = f"gap {verb} {_pct(first.measured)} at M={first.M:g} to {_pct(last.measured)} at M={last.M:g}"
    else:
        body = f"gap {_pct(first.measured)} at M={first.M:g} and {_pct(last.measured)} at M={last.M:g}"
    if np.isfinite(slope[1:]).all():
        body += f"; slope {100 * slope[0]:+.2f}%/doubling [{100 * slope[1]:.2f}, {100 * slope[2]:.2f}]"
    if np.isfinite(delta_beta).all():
        body += f", Δβ {delta_beta[0]:+.3f} [{delta_beta[1]:.3f}, {delta_beta[2]:.3f}]"
    return f"{display_name(variant)}: {body}: {conclusion}"


def _conclusion(slope: tuple[float, float, float]) -> str:
    if not np.isfinite(slope[1:]).all():
        return TOO_FEW
    if slope[1] > 0:
        return LAGS_MORE
    return SHRINKS if slope[2] < 0 else NO_EVIDENCE


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
        cluster = p.seed[at] if np.unique(p.seed[at]).size > 2 else np.arange(at.sum())
        fitted = multiplier = nan3
        if joint is not None:
            own, ref = joint.fits[variant], joint.fits[baseline]
            fitted = _triple(_surface_gap(own, ref, p.N[at], p.D[at]).mean(axis=1))
            C = float(np.max(6.0 * p.N[at, 1] * p.D[at, 1]))  # the baseline's largest cell at this M
            multiplier = _triple(_multiplier(own, ref, C, float(np.median(p.D[at, 1] / p.N[at, 1]))))
        measured = _mean_gap_interval(p.gap[at], cluster, n_boot, rng)
        gaps.append(Gap(float(m), int(at.sum()), measured, fitted, multiplier))
    slope = gap_slope(p, n_boot, rng)
    delta_beta = joint.difference("beta", variant, baseline) if joint is not None else nan3
    conclusion = _conclusion(slope)
    sentence = _sentence(variant, gaps, slope, delta_beta, conclusion)
    return Verdict(variant, gaps, slope, delta_beta, conclusion, sentence, p, joint, note)


def verdicts(cols: Columns, *, n_kind: str = "table", n_boot: int = 1000, seed: int = 0) -> list[Verdict]:
    """A verdict for every variant other than the baseline, from completed trials."""
    found = sorted(set(cols["variant"].tolist()))
    if BASELINE not in found:
        raise AnalysisError(f"no '{BASELINE}' trials to compare against; variants found: {found}")
    if len(found) < 2:
        raise AnalysisError(f"only one variant ({BASELINE}); the verdict needs at least one tied variant too")
    return [verdict(cols, v, n_kind=n_kind, n_boot=n_boot, seed=seed) for v in found if v != BASELINE]
