"""Figures of a sweep; each function returns a matplotlib Figure (no pyplot state, Agg rendering)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from analysis.fit import Fit, interval
from analysis.laws import chinchilla, chinchilla_optimal
from analysis.names import BASELINE, display_name
from analysis.tables import Columns
from analysis.verdict import Verdict, fitted_gap_curve

_BAND = 200  # bootstrap rows drawn into interval bands


def _colors(variants: list[str]) -> dict[str, str]:
    others = sorted(set(variants) - {BASELINE})
    return {BASELINE: "black", **{v: f"C{i % 10}" for i, v in enumerate(others)}}


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
        labelled = set()
        for trial in np.unique(evals["trial_id"]):
            i = info.get(trial)
            if i is None or (trials["d_model"][i], trials["n_layer"][i], trials["n_head"][i]) != shape:
                continue
            rows = np.flatnonzero(evals["trial_id"] == trial)
            rows = rows[np.argsort(evals["step"][rows])]
            v = trials["variant"][i]
            label = None if v in labelled else display_name(v)
            labelled.add(v)
            ax.plot(evals["tokens"][rows], evals["val_loss"][rows], color=colors[v], lw=1, alpha=0.8, label=label)
        ax.set(xscale="log", xlabel="tokens", ylabel="validation loss", title="d={}, L={}, H={}".format(*shape))
        ax.legend(fontsize="small")
    for ax in axes[len(shapes) :]:
        ax.set_visible(False)
    return fig


def frontier(trials: Columns, fits: dict[str, Fit]) -> Figure:
    """Final loss vs training FLOPs, all cells; per-variant compute-optimal curves of the fitted
    Chinchilla surfaces with 95% bands (FLOPs scaled by the sweep's median C / 6 N D per variant)."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(list(trials["variant"]))
    grid = np.geomspace(trials["C"].min() / 2, trials["C"].max() * 2, 100)
    for v in sorted(set(trials["variant"].tolist())):
        at = trials["variant"] == v
        ax.scatter(trials["C"][at], trials["loss"][at], s=12, color=colors[v], label=display_name(v))
        if v in fits:
            kappa = np.median(trials["C"][at] / (6 * trials["N"][at] * trials["D"][at]))
            ax.plot(grid, chinchilla_optimal(grid / kappa, **fits[v].params), color=colors[v], lw=1)
            band = chinchilla_optimal(grid / kappa, *fits[v].samples[:_BAND, :, None].transpose(1, 0, 2))
            if len(band):
                ax.fill_between(grid, *np.array([interval(b) for b in band.T]).T, color=colors[v], alpha=0.2)
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel="final validation loss")
    ax.legend(fontsize="small")
    return fig


def gaps(verdicts: list[Verdict]) -> Figure:
    """Relative loss gap vs token multiplier per variant: measured (mean over pairs, 95% interval,
    single pairs faint) over the fitted gap of the largest shape with its 95% band."""
    fig, axes = _grid(len(verdicts))
    for ax, v in zip(axes, verdicts, strict=False):
        Ms = np.array([g.M for g in v.gaps])
        grid = np.geomspace(Ms.min() / 1.5, Ms.max() * 1.5, 60)
        est, lo, hi = (100 * a for a in fitted_gap_curve(v, grid))
        ax.plot(grid, est, color="C0", lw=1, label="fit, largest shape")
        ax.fill_between(grid, lo, hi, color="C0", alpha=0.2)
        ax.scatter(v.pairs.M, 100 * v.pairs.gap, s=8, color="grey", alpha=0.5, label="pairs")
        g = 100 * np.array([x.measured for x in v.gaps])
        ax.errorbar(Ms, g[:, 0], yerr=np.abs(g[:, 1:].T - g[:, 0]), fmt="o", color="C3", label="mean, 95% CI")
        ax.axhline(0, color="black", lw=0.5)
        ax.set(xscale="log", xlabel="tokens per parameter M", ylabel="loss gap vs QKV (%)")
        ax.set_title(display_name(v.variant))
        ax.legend(fontsize="small")
    for ax in axes[len(verdicts) :]:
        ax.set_visible(False)
    return fig


def kv_cache(trials: Columns) -> Figure:
    """KV-cache bytes per token vs final loss, one colour per variant."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(list(trials["variant"]))
    for v in sorted(set(trials["variant"].tolist())):
        at = trials["variant"] == v
        ax.scatter(trials["kv_bytes_per_token"][at], trials["loss"][at], s=12, color=colors[v], label=display_name(v))
    ax.set(xscale="log", xlabel="KV-cache bytes per token", ylabel="final validation loss")
    ax.legend(fontsize="small")
    return fig


def residuals(trials: Columns, fits: dict[str, Fit]) -> Figure:
    """Relative residuals loss / fitted - 1 of each variant's Chinchilla fit vs training FLOPs."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(list(trials["variant"]))
    for v, fit in sorted(fits.items()):
        at = trials["variant"] == v
        rel = trials["loss"][at] / chinchilla(trials["N"][at], trials["D"][at], **fit.params) - 1
        ax.scatter(trials["C"][at], 100 * rel, s=12, color=colors[v], label=display_name(v))
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xscale="log", xlabel="training FLOPs C", ylabel="residual (%)")
    ax.legend(fontsize="small")
    return fig
