"""The verdict: does a tied variant fall further behind QKV, beyond what its parameter count
explains, the longer it is trained?

Null hypothesis: no effect of tying. The variant behaves like the baseline at its own parameter
count: its loss is the baseline's loss surface at the variant's own (N, D). A tied variant of a
baseline's shape has fewer parameters (Q-K=V ~8% fewer non-embedding ones), and under this null
its raw gap still grows with M, because a constant absolute deficit is a growing share of a falling
loss. So the verdict tests the gap *beyond capacity*, per pair of trials on one cell:

    g_i = L_variant,i / (L_baseline,i * T_i) - 1,
    T_i = L_hat(N_variant,i, D_variant,i) / L_hat(N_baseline,i, D_baseline,i)

with L_hat the baseline's Chinchilla fit, L(N, D) = E + A / N**alpha + B / D**beta (T = 1, no fit
needed, where both sides have the same N and D). The measured baseline loss is carried to the
variant's own (N, D) by the fitted surface, so only the fit's local slope enters, not its level.

The tested statistic is the slope of g in log2 M *within (size, seed) chains* (chain fixed
effects, so sizes that differ only in level, or are missing at the largest M, add no slope):
the change of the gap beyond capacity per doubling of M. Its 95% interval and p-value treat whole
chains as the independent units (analysis.trend: a cluster-robust Student t from fewer than
trend.BOOT_CLUSTERS chains, a cluster bootstrap from more), with the baseline fit's bootstrap
spread of T added. Across the tied variants of a report the p-values are Holm-corrected; the trend
is "grows" or "shrinks" where the corrected p < ALPHA, "none" where it is not and the data can
tell (NONE_NEEDS), else "unresolved". The raw gap L_variant / L_baseline - 1 stays in every
report, labelled raw. Δβ from a joint fit (shared E and alpha) is shown only where that fit is
trustworthy, and labelled with its assumption.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from analysis import AnalysisError
from analysis.cells import Pairs, baseline_name, pair
from analysis.fit import Fit, JointFit, fit_chinchilla, fit_joint, interval
from analysis.laws import chinchilla, chinchilla_at
from analysis.names import display_name
from analysis.tables import Columns, select
from analysis.trend import Slope, holm, within_slope

QUESTION = (
    "Question: does the variant fall further behind QKV, beyond its parameter count, the more tokens per "
    "parameter M it is trained on? Null: no effect of tying (the variant's loss is QKV's fitted loss surface "
    "at the variant's own N and D); tested: the slope per doubling of M, within (size, seed) chains, of the "
    "gap beyond capacity L_variant / (L_QKV x L_hat_QKV(N_variant, D_variant) / L_hat_QKV(N_QKV, D_QKV)) - 1; "
    "the raw gap L_variant / L_QKV - 1 is shown beside it."
)
STATISTIC = "slope per doubling of M of the gap beyond capacity (within size-seed chains)"
ALPHA = 0.05  # after Holm's correction across the report's tests
WIDE_SLOPE = 0.005  # a slope interval wider than +-0.5%/doubling (+-4% over 8 doublings) cannot tell
NONE_NEEDS = (3, 3)  # "none" needs at least 3 informative chains and 3 distinct M; fewer: "unresolved"
MIN_BOOT_CLUSTERS = 8  # per-M gap means: Student t over fewer clusters (pairs or seeds), bootstrap over more
_SURFACE_SAMPLES = 200  # bootstrap rows used for fitted gaps, multipliers and the capacity transport
_TREND_WORDS = {"grows": 1, "shrinks": -1}
LAGS_MORE = "lags more with more tokens"  # grows, gap at the largest M > 0
ADVANTAGE_SHRINKS = "its advantage shrinks with more tokens"  # grows, gap < 0 at one end
RISES = "gap grows towards zero or above, its sign not resolved"  # grows, gap covers 0 at both ends
SHRINKS = "gap shrinks with more tokens"  # shrinks, gap > 0 at one end
PULLS_AHEAD = "pulls ahead with more tokens"  # shrinks, gap at the largest M < 0
FALLS = "gap falls towards zero or below, its sign not resolved"  # shrinks, gap covers 0 at both ends
NO_EVIDENCE = "no evidence of a growing gap"
TOO_FEW = "too few paired cells to tell whether the gap grows"
TOO_WIDE = "interval too wide to tell whether the gap grows"


@dataclass(frozen=True)
class Gap:
    """Gaps at one token multiplier; (estimate, low, high) triples, NaN where not available."""

    M: float
    n_pairs: int
    measured: tuple[float, float, float]  # raw: L_variant / L_baseline - 1, mean over pairs
    fitted: tuple[float, float, float]  # raw, from the joint fit at the pairs' cells
    compute_multiplier: tuple[float, float, float]  # in C = 6ND units: the variant's compute for the baseline's loss
    method: str = ""  # how the measured intervals were made: "95% t-interval over 3 pairs", ...
    clusters: str = ""  # what they were resampled or averaged over: "3 pairs", "12 seeds"
    beyond: tuple[float, float, float] = (np.nan,) * 3  # gap beyond capacity (the tested quantity)
    multiplier_flops: float = np.nan  # compute_multiplier's estimate in measured FLOPs


@dataclass(frozen=True)
class HeldOutGap:
    """The gap-beyond-capacity trend fitted on M <= M_max / 4, its prediction at M_max scored."""

    M_fit: float  # largest M fitted on
    M_test: float
    predicted: float  # mean over the chains measured at M_test
    measured: float
    noise: float  # s.e. of the mean error over chains (prediction and measurement noise): the floor for `error`
    n_chains: int

    @property
    def error(self) -> float:
        return self.predicted - self.measured


@dataclass(frozen=True)
class Verdict:
    variant: str
    gaps: list[Gap]
    slope: tuple[float, float, float]  # the tested statistic: gap beyond capacity per doubling of M
    delta_beta: tuple[float, float, float]
    conclusion: str
    sentence: str
    pairs: Pairs
    joint: JointFit | None
    note: str  # why there is no joint fit, if there is none
    slope_method: str = ""
    trend: str = "unresolved"  # grows | shrinks | none | unresolved
    p: float = np.nan  # two-sided, slope = 0, before Holm
    p_holm: float = np.nan
    family: int = 1  # tests in the Holm family
    raw_slope: tuple[float, float, float] = (np.nan,) * 3  # the same slope of the raw gap, for reference
    capacity: str = ""  # how the gap beyond capacity was made
    beyond: np.ndarray | None = None  # per pair: gap beyond capacity (point estimate)
    delta_beta_ok: str = ""  # empty where Δβ can be shown, else why not
    warnings: tuple[str, ...] = ()
    held_out: HeldOutGap | None = None
    sweep: str = ""
    seq_len: float = np.nan
    n_chains: int = 0
    where: str = ""  # "sweep a, seq_len 512" where a report has several sweeps or seq_lens

    @property
    def label(self) -> str:
        """The variant's paper name, with its sweep and seq_len where a report has several."""
        return display_name(self.variant) + (f" ({self.where})" if self.where else "")


def capacity_transport(p: Pairs, base: Fit | None, rows: int = _SURFACE_SAMPLES) -> tuple[np.ndarray, str]:
    """T per pair (first row: the fit's point estimate, then up to `rows` bootstrap refits), T =
    L_hat(N_variant, D_variant) / L_hat(N_baseline, D_baseline); all ones where N and D agree."""
    if np.allclose(p.N[:, 0], p.N[:, 1], rtol=1e-9) and np.allclose(p.D[:, 0], p.D[:, 1], rtol=1e-9):
        return np.ones((1, p.gap.size)), "none needed: the variant and QKV have the same N and D in every pair"
    if base is None:
        raise AnalysisError("the variant's N or D differs from QKV's and there is no QKV fit to carry its loss there")
    law = np.vstack([list(base.params.values()), base.samples[:rows]])[:, :, None]
    law = law[np.isfinite(law).all(axis=(1, 2))]
    law = law.transpose(1, 0, 2)
    T = chinchilla(p.N[:, 0], p.D[:, 0], *law) / chinchilla(p.N[:, 1], p.D[:, 1], *law)
    ratio = np.median(p.N[:, 0] / p.N[:, 1])
    how = (f"QKV's Chinchilla fit carries its loss to the variant's own N (median N_variant / N_QKV = {ratio:.3f}) "
           f"and D; capacity effect {100 * (T[0].min() - 1):+.2f}% to {100 * (T[0].max() - 1):+.2f}%")  # fmt: skip
    return T, how + (f", its spread over {len(T) - 1} refits in the interval" if len(T) > 2 else "")


def _mean_gap_interval(
    gap: np.ndarray, cluster: np.ndarray, n_boot: int, rng: np.random.Generator
) -> tuple[tuple[float, float, float], str]:
    """Mean gap with a 95% interval over clusters: none from 1 cluster, Student t over the cluster
    means from fewer than MIN_BOOT_CLUSTERS (over n clusters the bootstrap's interval lies within the
    observed range, which covers the mean with probability 1 - 2^(1-n) at best), else a percentile
    bootstrap of clusters."""
    from scipy import stats

    labels, inverse = np.unique(cluster, return_inverse=True)
    sums, counts = np.bincount(inverse, gap), np.bincount(inverse)
    if labels.size < 2:
        return (float(gap.mean()), float("nan"), float("nan")), "no interval"
    if labels.size < MIN_BOOT_CLUSTERS:
        means = sums / counts
        half = float(stats.t.ppf(0.975, means.size - 1)) * float(means.std(ddof=1) / np.sqrt(means.size))
        return (float(means.mean()), float(means.mean()) - half, float(means.mean()) + half), "95% t-interval"
    pick = rng.integers(0, labels.size, size=(n_boot, labels.size))
    return (float(gap.mean()), *interval(sums[pick].sum(1) / counts[pick].sum(1))), "95% bootstrap"


def gap_slope(p: Pairs, gap: np.ndarray | None = None, *, rows: np.ndarray | None = None, n_boot: int = 1000,
              rng: np.random.Generator | None = None) -> Slope:  # fmt: skip
    """Slope of `gap` (default the raw gap) in log2 M within the pairs' chains, interval over chains."""
    gap = p.gap if gap is None else gap
    return within_slope(np.log2(p.M), gap, p.chain, p.chain, y_rows=rows, n_boot=n_boot, rng=rng)


def incomplete_grid(p: Pairs) -> str:
    """A warning naming the sizes that lack some of the M values others have; empty if complete."""
    every = np.unique(p.M)
    missing = {s: sorted(set(every) - set(p.M[p.size == s])) for s in np.unique(p.size)}
    missing = {s: m for s, m in missing.items() if m}
    if not missing:
        return ""
    parts = "; ".join(f"{s} lacks M = {', '.join(f'{m:g}' for m in ms)}" for s, ms in missing.items())
    return f"incomplete grid ({parts}): the slope is within (size, seed) chains: missing cells cost power, not bias"


def held_out_gap(p: Pairs, beyond: np.ndarray) -> HeldOutGap | None:
    """Fit the within-chain slope on pairs with M <= M_max / 4, predict the gap beyond capacity at
    M_max for each chain measured there (its own level over the fitted M, plus the slope), and score
    the mean prediction against the measured mean, beside the standard error of that mean error over
    chains (the noise floor); None without two fitted M values at or below M_max / 4."""
    M_test = float(p.M.max())
    train = p.M <= M_test / 4
    if np.unique(p.M[train]).size < 2:
        return None
    fitted = gap_slope(p.select(train), beyond[train]).estimate
    if not np.isfinite(fitted):
        return None
    x = np.log2(p.M)
    preds, measured = [], []
    for c in np.unique(p.chain[p.M == M_test]):
        own = train & (p.chain == c)
        if own.sum() == 0:
            continue
        preds.append(beyond[own].mean() + fitted * (np.log2(M_test) - x[own].mean()))
        measured.append(beyond[(p.chain == c) & (p.M == M_test)].mean())
    if len(preds) < 2:
        return None
    noise = float(np.std(np.subtract(preds, measured), ddof=1) / np.sqrt(len(preds)))
    M_fit = float(p.M[train].max())
    return HeldOutGap(M_fit, M_test, float(np.mean(preds)), float(np.mean(measured)), noise, len(preds))


def _rows(fit: Fit) -> np.ndarray:
    """Point estimate then up to _SURFACE_SAMPLES bootstrap rows, one row of law parameters each."""
    return np.vstack([list(fit.params.values()), fit.samples[:_SURFACE_SAMPLES]])


def _multiplier(fit: Fit, ref: Fit, C: float, M: float) -> np.ndarray:
    """k with L_fit(k C, M) = L_ref(C, M) along D = M N, C = 6 N D, by bisection in log k (inf if unreachable)."""
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
    """Fitted raw gap (estimate, low, high) along M for the largest paired shape, each side trained
    on D = r M N tokens with r its median D / (M N) in the sweep; NaN without a joint fit."""
    if v.joint is None:
        return (np.full(M.size, np.nan),) * 3
    top = v.pairs.N[:, 1] == v.pairs.N[:, 1].max()
    N = v.pairs.N[top].mean(0)
    r = np.median(v.pairs.D / (v.pairs.M[:, None] * v.pairs.N), axis=0)
    D = np.outer(M, r * N)  # (m, 2)
    base = next(k for k in v.joint.fits if k != v.variant)
    curve = _surface_gap(v.joint.fits[v.variant], v.joint.fits[base], np.broadcast_to(N, D.shape), D)
    lo, hi = np.array([interval(c) for c in curve[1:].T]).T
    return curve[0], lo, hi


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), *interval(values[1:]))


def _pct(t: tuple[float, float, float]) -> str:
    ci = f"[{100 * t[1]:.1f}, {100 * t[2]:.1f}]" if np.isfinite(t[1:]).all() else "[no interval]"
    return f"{100 * t[0]:+.1f}% {ci}"


def _sign(t: tuple[float, float, float]) -> int:
    """+1 if the interval is above 0, -1 if below, 0 if it covers 0 or there is none."""
    return 1 if t[1] > 0 else -1 if t[2] < 0 else 0


def _trend(slope: tuple[float, float, float], p_holm: float, n_chains: int, n_M: int) -> str:
    """grows / shrinks where Holm's p < ALPHA; none where not and the data can tell; else unresolved."""
    if not np.isfinite(slope[1:]).all() or not np.isfinite(p_holm):
        return "unresolved"
    if p_holm < ALPHA:
        return "grows" if slope[0] > 0 else "shrinks"
    narrow = -WIDE_SLOPE <= slope[1] and slope[2] <= WIDE_SLOPE
    return "none" if narrow and n_chains >= NONE_NEEDS[0] and n_M >= NONE_NEEDS[1] else "unresolved"


def _conclusion(trend: str, first: tuple, last: tuple, slope: tuple = (np.nan,) * 3) -> str:
    """Words for the trend and the gap beyond capacity at the smallest and largest M: a claim about
    the gap's sign only where its interval there excludes 0."""
    if trend == "unresolved":
        return TOO_FEW if not np.isfinite(slope[1:]).all() else TOO_WIDE
    if trend == "none":
        return NO_EVIDENCE
    at_first, at_last = _sign(first), _sign(last)
    if trend == "grows":
        if at_last > 0:
            return LAGS_MORE
        return ADVANTAGE_SHRINKS if -1 in (at_first, at_last) else RISES
    if at_last < 0:
        return PULLS_AHEAD
    return SHRINKS if 1 in (at_first, at_last) else FALLS


_VERBS = {
    LAGS_MORE: "grows from", SHRINKS: "shrinks from", ADVANTAGE_SHRINKS: "rises from", RISES: "rises from",
    PULLS_AHEAD: "falls from", FALLS: "falls from",
}  # fmt: skip


def _sentence(v: Verdict) -> str:
    """One line: the tested gap at the ends, its slope with interval and Holm p, the raw gap where
    it differs, Δβ only where trustworthy; ends with the conclusion."""
    adjusted = not v.capacity.startswith("none needed")
    what = "gap beyond capacity" if adjusted else "gap"
    first, last = v.gaps[0], v.gaps[-1]
    if len(v.gaps) == 1:
        body = f"{what} {_pct(first.beyond)} at M={first.M:g} only"
    elif verb := _VERBS.get(v.conclusion):
        body = f"{what} {verb} {_pct(first.beyond)} at M={first.M:g} to {_pct(last.beyond)} at M={last.M:g}"
    else:
        body = f"{what} {_pct(first.beyond)} at M={first.M:g} and {_pct(last.beyond)} at M={last.M:g}"
    if np.isfinite(v.slope[1:]).all():
        body += f"; slope {100 * v.slope[0]:+.2f}%/doubling [{100 * v.slope[1]:.2f}, {100 * v.slope[2]:.2f}]"
        body += f", p = {v.p_holm:.2g}" + (f" (Holm, {v.family} tests)" if v.family > 1 else "")
    if adjusted:
        body += f"; raw gap {100 * first.measured[0]:+.1f}% to {100 * last.measured[0]:+.1f}%"
    if not v.delta_beta_ok and np.isfinite(v.delta_beta).all():
        body += f"; Δβ (shared E, α) {v.delta_beta[0]:+.3f} [{v.delta_beta[1]:.3f}, {v.delta_beta[2]:.3f}]"
    return f"{v.label}: {body}: {v.conclusion}"


def _finish(v: Verdict, p_holm: float, family: int) -> Verdict:
    n_M = np.unique(v.pairs.M).size
    trend = _trend(v.slope, p_holm, v.n_chains, n_M)
    conclusion = _conclusion(trend, v.gaps[0].beyond, v.gaps[-1].beyond, v.slope)
    v = replace(v, p_holm=p_holm, family=family, trend=trend, conclusion=conclusion)
    return replace(v, sentence=_sentence(v))


def _delta_beta_ok(joint: JointFit | None) -> str:
    """Empty where the joint fit's Δβ can be shown; else why not."""
    if joint is None:
        return "no joint fit"
    for fit in joint.fits.values():
        if fit.at_bounds:
            return f"{display_name(fit.variant)}'s joint fit has parameters at their bounds"
        if wide := [k for k in ("E", "alpha", "beta") if k in fit.too_wide]:
            return f"{display_name(fit.variant)}'s joint fit leaves {', '.join(wide)} too loose to mean anything"
    return ""


def verdict(
    cols: Columns, variant: str, *, baseline: str | None = None, n_kind: str = "table", n_boot: int = 1000,
    seed: int = 0, base_fit: Fit | None = None, surfaces: bool = True,
) -> Verdict:  # fmt: skip
    """Verdict for one variant against the baseline from completed trials (normalised columns) of
    one sweep and seq_len (see `verdicts` for several). `base_fit`: the baseline's Chinchilla fit
    (made here from its rows when needed and not given); `surfaces`: also the joint fit (fitted gaps,
    compute multipliers, Δβ), which the trend itself does not use."""
    baseline = baseline or baseline_name(cols["variant"]) or "baseline"
    p = pair(cols, variant, baseline)
    if p.gap.size == 0:
        raise AnalysisError(f"{variant}: no trials paired with {baseline} on the same cells (size, M, seed, ...)")
    rng = np.random.default_rng(seed)
    at_base = cols["variant"] == baseline
    if base_fit is None and not (np.allclose(p.N[:, 0], p.N[:, 1]) and np.allclose(p.D[:, 0], p.D[:, 1])):
        try:
            base_fit = fit_chinchilla(cols["N"][at_base], cols["D"][at_base], cols["loss"][at_base], variant=baseline,
                                      n_kind=n_kind, n_boot=min(n_boot, _SURFACE_SAMPLES), seed=seed)  # fmt: skip
        except AnalysisError as err:
            raise AnalysisError(f"{variant}: no gap beyond capacity: QKV's Chinchilla fit failed: {err}") from err
    T, capacity = capacity_transport(p, base_fit)
    beyond_rows = (1.0 + p.gap) / T - 1.0
    beyond = beyond_rows[0]
    slope = gap_slope(p, beyond, rows=beyond_rows[1:] if len(T) > 2 else None, n_boot=n_boot, rng=rng)
    raw = gap_slope(p, n_boot=n_boot, rng=rng)
    joint, note = None, ""
    if surfaces:
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
        by_seed = np.unique(p.seed[at]).size > 2  # resample seeds where there are 3+, else single pairs
        cluster = p.seed[at] if by_seed else np.arange(at.sum())
        fitted = multiplier = nan3
        flops = float("nan")
        if joint is not None:
            own, ref = joint.fits[variant], joint.fits[baseline]
            fitted = _triple(_surface_gap(own, ref, p.N[at], p.D[at]).mean(axis=1))
            C = float(np.max(6.0 * p.N[at, 1] * p.D[at, 1]))  # the baseline's largest cell at this M, in 6ND
            multiplier = _triple(_multiplier(own, ref, C, float(np.median(p.D[at, 1] / p.N[at, 1]))))
            if p.flops is not None:  # 6ND -> measured FLOPs at each side's own FLOPs / 6ND ratio
                r = np.median(p.flops[at] / (6.0 * p.N[at] * p.D[at]), axis=0)
                flops = multiplier[0] * r[0] / r[1]
        measured, method = _mean_gap_interval(p.gap[at], cluster, n_boot, rng)
        adjusted, _ = _mean_gap_interval(beyond[at], cluster, n_boot, rng)
        n = np.unique(cluster).size
        clusters = f"{n} {'seed' if by_seed else 'pair'}{'s' * (n > 1)}"
        method = f"{method} ({clusters})" if n < 2 else f"{method} over {clusters}"
        gaps.append(Gap(float(m), int(at.sum()), measured, fitted, multiplier, method, clusters, adjusted, flops))
    delta_beta = joint.difference("beta", variant, baseline) if joint is not None else nan3
    warnings = tuple(w for w in (incomplete_grid(p),) if w)
    if np.isfinite(slope.low) and slope.high - slope.low > 2 * WIDE_SLOPE:
        warnings += (f"the slope's interval is wider than ±{100 * WIDE_SLOPE:.1f}%/doubling: it cannot tell",)
    v = Verdict(
        variant, gaps, slope.triple, delta_beta, "", "", p, joint, note, slope.method, p=slope.p,
        raw_slope=raw.triple, capacity=capacity, beyond=beyond, delta_beta_ok=_delta_beta_ok(joint),
        warnings=warnings, held_out=held_out_gap(p, beyond), sweep=str(p.sweep[0]),
        seq_len=float(p.seq_len[0]), n_chains=slope.n_clusters,
    )  # fmt: skip
    return _finish(v, slope.p, 1)


def groups(cols: Columns) -> list[tuple[str, float]]:
    """The (sweep, seq_len) groups of a table: one verdict per variant in each."""
    n = cols["variant"].size
    sweep = cols["sweep"].astype(str) if "sweep" in cols else np.full(n, "")
    if "seq_len" not in cols:
        return [(s, float("nan")) for s in sorted(set(sweep.tolist()))]
    seq = cols["seq_len"].astype(float)
    return sorted({(s, float(q)) for s, q in zip(sweep.tolist(), seq.tolist(), strict=True)})


def _group_rows(cols: Columns, group: tuple[str, float]) -> np.ndarray:
    n = cols["variant"].size
    at = np.ones(n, bool)
    if "sweep" in cols:
        at &= cols["sweep"].astype(str) == group[0]
    if "seq_len" in cols and np.isfinite(group[1]):
        at &= cols["seq_len"].astype(float) == group[1]
    return at


def _base_fit(cols: Columns, baseline: str, n_kind: str, n_boot: int, seed: int) -> Fit | None:
    """The baseline's Chinchilla fit for one group, made once for all its variants, where some
    variant has an N or D the baseline lacks (else none is needed); None where it cannot be made
    (`verdict` then says why, if it needs one)."""
    at = cols["variant"] == baseline
    own = set(zip(cols["N"][at].tolist(), cols["D"][at].tolist(), strict=True))
    if set(zip(cols["N"][~at].tolist(), cols["D"][~at].tolist(), strict=True)) <= own:
        return None
    try:
        return fit_chinchilla(cols["N"][at], cols["D"][at], cols["loss"][at], variant=baseline, n_kind=n_kind,
                              n_boot=min(n_boot, _SURFACE_SAMPLES), seed=seed)  # fmt: skip
    except AnalysisError:
        return None


def verdicts(
    cols: Columns, *, n_kind: str = "table", n_boot: int = 1000, seed: int = 0, notes: list[str] | None = None,
    base_fits: dict[tuple[str, float], Fit] | None = None, surfaces: bool = True,
) -> list[Verdict]:  # fmt: skip
    """A verdict for every tied variant in every (sweep, seq_len) group, the p-values Holm-corrected
    across all of them. Where `notes` is given, a variant without a verdict adds a note to it instead
    of raising (unless none has one)."""
    found = sorted(set(cols["variant"].tolist()))
    baseline = baseline_name(cols["variant"])
    if baseline is None:
        raise AnalysisError(f"no 'baseline' trials (QKV) to compare against; variants found: {found}")
    if len(found) < 2:
        raise AnalysisError(f"only one variant ({baseline}); the verdict needs at least one tied variant too")
    out: list[Verdict] = []
    errors = []
    for g in groups(cols):
        sub = select(cols, _group_rows(cols, g))
        base = (base_fits or {}).get(g) or _base_fit(sub, baseline, n_kind, n_boot, seed)
        for v in found:
            if v == baseline:
                continue
            try:
                out.append(verdict(sub, v, baseline=baseline, n_kind=n_kind, n_boot=n_boot, seed=seed, base_fit=base,
                                   surfaces=surfaces))  # fmt: skip
            except AnalysisError as err:
                where = _where(*g)
                errors.append(f"{display_name(v)}{f' ({where})' if where else ''}: no verdict: {err}")
    if not out:
        raise AnalysisError(errors[0] if errors else "no tied variant could be paired with QKV")
    if notes is not None:
        notes.extend(errors)
    adjusted = holm([v.p for v in out])
    family = int(np.isfinite([v.p for v in out]).sum())
    several = [len({v.sweep for v in out}) > 1, len({v.seq_len for v in out}) > 1]
    out = [replace(v, where=_where(v.sweep, v.seq_len, *several)) for v in out]
    return [_finish(v, float(q), family) for v, q in zip(out, adjusted, strict=True)]


def _where(sweep: str, seq_len: float, sweeps: bool = True, seq_lens: bool = True) -> str:
    parts = [f"sweep {sweep}"] if sweeps and sweep else []
    parts += [f"seq_len {seq_len:g}"] if seq_lens and np.isfinite(seq_len) else []
    return ", ".join(parts)


@dataclass(frozen=True)
class SeqLenTrend:
    """The gap beyond capacity at each seq_len (mean over the pairs there, 95% t over chains) and its
    slope per 1024 tokens of context within (size, seed, M) cells, interval over (size, seed) chains."""

    sweep: str
    variant: str
    seq_lens: list[float]
    gaps: list[tuple[float, float, float]]
    slope: Slope


def seq_len_trends(found: list[Verdict], n_boot: int = 1000, seed: int = 0) -> list[SeqLenTrend]:
    """One trend per (sweep, variant) with verdicts at two or more seq_len values."""
    out = []
    keys = sorted({(v.sweep, v.variant) for v in found if np.isfinite(v.seq_len)})
    for sweep, variant in keys:
        vs = sorted((v for v in found if (v.sweep, v.variant) == (sweep, variant)), key=lambda v: v.seq_len)
        if len(vs) < 2:
            continue
        x = np.concatenate([np.full(v.pairs.M.size, v.seq_len / 1024) for v in vs])
        y = np.concatenate([v.beyond for v in vs])
        ps = [v.pairs for v in vs]
        chain = np.concatenate([np.char.add(np.char.add(q.size.astype(str), "|"), q.seed.astype(str)) for q in ps])
        cell = np.concatenate([np.char.add(np.char.add(q.size.astype(str), "|"), (q.seed * 1e6 + q.M).astype(str))
                               for q in ps])  # fmt: skip
        rng = np.random.default_rng(seed)
        gaps = [_mean_gap_interval(v.beyond, v.pairs.chain, n_boot, rng)[0] for v in vs]
        slope = within_slope(x, y, cell, chain, n_boot=n_boot, rng=rng)
        out.append(SeqLenTrend(sweep, variant, [v.seq_len for v in vs], gaps, slope))
    return out
