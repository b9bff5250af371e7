"""Figures of a sweep; each function returns a matplotlib Figure (no pyplot state, Agg rendering)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from analysis.fit import Fit, interval
from analysis.laws import chinchilla
from analysis.names import BASELINE, display_name
from analysis.tables import Columns
from analysis.verdict import Verdict, fitted_gap_curve

_BAND = 200  # bootstrap rows drawn into interval bands


def _colors(variants: list[str]) -> dict[str, str]:
    others = sorted(set(variants) - {BASELINE})
    return {BASELINE: "black", **{v: f"C{i % 10}" for i, v in enumerate(others)}}


def _shapes(variants: list[str]) -> dict[str, str]:
    """A marker per variant, so that variants with equal values (e.g. the same KV cache) stay visible."""
    others = sorted(set(variants) - {BASELINE})
    return {BASELINE: "o", **{v: "s^Dv<>ph*"[i % 9] for i, v in enumerate(others)}}


def _variant_legend(fig: Figure, variants: list[str], marker: bool = False, shown: list[str] | None = None) -> None:
    """Legend outside the axes for the `shown` variants (default all), styled as among `variants`."""
    colors, shapes = _colors(variants), _shapes(variants)
    handles = [Line2D([], [], color=colors[v], marker=shapes[v] if marker else None, lw=0 if marker else 1,
                      label=display_name(v)) for v in sorted(set(variants if shown is None else shown))]  # fmt: skip
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")


def _plain(axis, subs: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9)) -> None:
    """Plain numbers at subs x 10^k on a log axis that spans a decade or so (losses, cache bytes),
    where matplotlib would label one tick or none."""
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _grid(n: int, width: float = 4.0) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, 3.2 * rows), layout="constrained")
    return fig, list(np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel()))


def loss_curves(evals: Columns, trials: Columns) -> Figure:
    """Validation loss vs tokens, one panel per model shape, one colour per variant."""
    info = {t: i for i, t in enumerate(trials["trial_id"])}
    shapes = sorted({(trials["d_model"][i], trials["n_layer"][i], trials["n_head"][i]) for i in info.values()})
    colors = _colors(list(trials["variant"]))
    fig, axes = _grid(len(shapes))
    for ax, shape in zip(axes, shapes, strict=False):
        for trial in np.unique(evals["trial_id"]):
            i = info.get(trial)
            if i is None or (trials["d_model"][i], trials["n_layer"][i], trials["n_head"][i]) != shape:
                continue
            rows = np.flatnonzero(evals["trial_id"] == trial)
            rows = rows[np.argsort(evals["step"][rows])]
            v = trials["variant"][i]
            ax.plot(evals["tokens"][rows], evals["val_loss"][rows], color=colors[v], lw=1, alpha=0.8)
        ax.set(xscale="log", xlabel="tokens", ylabel="validation loss", title="d={}, L={}, H={}".format(*shape))
    for ax in axes[len(shapes) :]:
        ax.set_visible(False)
    _variant_legend(fig, list(trials["variant"]))
    return fig


def _fixed_m_curve(trials: Columns, at: np.ndarray, n: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C, N, D) along the cells `at` (one variant, one M): N over their range, D = r N with r their
    median D / N, and C = k 6 N D with k the measured C / 6 N D interpolated in log N (k is 2-4 in
    the CPU toys, where attention and the output layer are a large share of the FLOPs)."""
    N, D, C = trials["N"][at], trials["D"][at], trials["C"][at]
    sizes = np.unique(N)
    ratio = np.array([np.median(C[N == s] / (6 * s * D[N == s])) for s in sizes])
    grid = np.geomspace(sizes[0], sizes[-1], n)
    tokens = np.median(D / N) * grid
    return np.interp(np.log(grid), np.log(sizes), ratio) * 6 * grid * tokens, grid, tokens


def frontier(trials: Columns, fits: dict[str, Fit]) -> Figure:
    """Final loss vs training FLOPs, all cells (marker: token multiplier M), and each variant's fitted
    Chinchilla surface along every M of the sweep, over that M's cells; 95% bootstrap band for the
    baseline only (for every variant when there is no baseline)."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    variants = sorted(set(trials["variant"].tolist()))
    colors = _colors(variants)
    Ms = np.unique(trials["M"])
    markers = dict(zip(Ms, "osD^v<>ph*", strict=False))
    banded = {BASELINE} if BASELINE in fits else set(fits)
    for v in variants:
        at = trials["variant"] == v
        for m in Ms:
            cell = at & (trials["M"] == m)
            ax.scatter(trials["C"][cell], trials["loss"][cell], s=18, color=colors[v], marker=markers.get(m, "o"),
                       edgecolor="white", linewidth=0.4, zorder=3)  # fmt: skip
            if v not in fits or np.unique(trials["N"][cell]).size < 2:
                continue
            C, N, D = _fixed_m_curve(trials, cell)
            ax.plot(C, chinchilla(N, D, **fits[v].params), color=colors[v], lw=0.8, zorder=2)
            if v in banded and len(fits[v].samples):
                band = chinchilla(N, D, *fits[v].samples[:_BAND, :, None].transpose(1, 0, 2))
                lo, hi = np.array([interval(b) for b in band.T]).T
                ax.fill_between(C, lo, hi, color=colors[v], alpha=0.12, lw=0, zorder=1)
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs C (measured)", ylabel="final validation loss")
    _plain(ax.yaxis)
    handles = [Line2D([], [], color=colors[v], marker="o", lw=0.8, label=display_name(v)) for v in variants]
    handles += [Line2D([], [], color="grey", marker=markers[m], lw=0, label=f"M = {m:g}") for m in markers]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    band = f"; band: 95% bootstrap, {', '.join(display_name(v) for v in sorted(banded))}" if banded else ""
    ax.set_title(f"lines: fitted L(N, D) at each M{band}", fontsize="small")
    return fig


def gaps(verdicts: list[Verdict]) -> Figure:
    """Relative loss gap vs token multiplier per verdict: the raw gap measured (mean over pairs, 95%
    interval, single pairs faint) over the fitted raw gap of the largest shape with its 95% band, and
    the gap beyond capacity (the verdict's tested quantity) where the variant's N or D differs."""
    fig, axes = _grid(len(verdicts))
    for ax, v in zip(axes, verdicts, strict=False):
        Ms = np.array([g.M for g in v.gaps])
        grid = np.geomspace(Ms.min() / 1.5, Ms.max() * 1.5, 60)
        est, lo, hi = (100 * a for a in fitted_gap_curve(v, grid))
        ax.plot(grid, est, color="C0", lw=1, label="fit, largest shape")
        ax.fill_between(grid, lo, hi, color="C0", alpha=0.2)
        ax.scatter(v.pairs.M, 100 * v.pairs.gap, s=8, color="grey", alpha=0.5, label="pairs")
        g = 100 * np.array([x.measured for x in v.gaps])
        ax.errorbar(Ms, g[:, 0], yerr=np.abs(g[:, 1:].T - g[:, 0]), fmt="o", color="C3", label="raw gap: mean, 95% CI")
        if not v.capacity.startswith("none needed"):  # the tested quantity, where it differs from the raw gap
            b = 100 * np.array([x.beyond for x in v.gaps])
            ax.errorbar(Ms * 1.06, b[:, 0], yerr=np.abs(b[:, 1:].T - b[:, 0]), fmt="s", color="C2",
                        label="gap beyond capacity (tested)")  # fmt: skip
        ax.axhline(0, color="black", lw=0.5)
        ax.set(xscale="log", xlabel="tokens per parameter M", ylabel="loss gap vs QKV (%)")
        ax.set_title(v.label)
    for ax in axes[len(verdicts) :]:
        ax.set_visible(False)
    if verdicts:  # one legend for all panels, outside them: the bands fill the panels
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small")
    return fig


def kv_cache(trials: Columns) -> Figure:
    """KV-cache bytes per token vs final loss, one colour per variant."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    variants = list(trials["variant"])
    colors, shapes = _colors(variants), _shapes(variants)
    for v in sorted(set(variants)):
        at = trials["variant"] == v
        ax.scatter(trials["kv_bytes_per_token"][at], trials["loss"][at], s=16, color=colors[v], marker=shapes[v],
                   alpha=0.8)  # fmt: skip
    ax.set(xscale="log", xlabel="KV-cache bytes per token", ylabel="final validation loss")
    _plain(ax.xaxis, (1, 2, 5))
    _variant_legend(fig, variants, marker=True)
    return fig


def residuals(trials: Columns, fits: dict[str, Fit]) -> Figure:
    """Relative residuals loss / fitted - 1 of each variant's Chinchilla fit vs training FLOPs."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors, shapes = _colors(list(trials["variant"])), _shapes(list(trials["variant"]))
    for v, fit in sorted(fits.items()):
        at = trials["variant"] == v
        rel = trials["loss"][at] / chinchilla(trials["N"][at], trials["D"][at], **fit.params) - 1
        ax.scatter(trials["C"][at], 100 * rel, s=16, color=colors[v], marker=shapes[v], alpha=0.8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xscale="log", xlabel="training FLOPs C (measured)", ylabel="residual: loss / fitted - 1 (%)")
    _variant_legend(fig, list(trials["variant"]), marker=True, shown=list(fits))
    return fig
