"""Accuracy on synthetic tasks (MQAR, list tasks) and what V = aQ + bK learned, for the report.

A cell is (task, difficulty, seq_len, shape); difficulty is num_kv_pairs for MQAR and list_len for
the list tasks. Per variant and cell the report gives the mean final accuracy over seeds with a 95%
t-interval (mean +- t_{0.975, n-1} s / sqrt(n); none with one seed), and the gap to QKV: the mean
over seeds of (variant - QKV) on the same seed, with the same interval. Null: the gap is 0.

Where the sweep trains several learning rates, each (variant, cell) is reported at the rate with the
best mean accuracy over seeds (as zoology picks its best rate per cell). That choice is made on the
same held-out set it is reported on, so the figures are slightly optimistic for every variant alike.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from analysis.names import BASELINE, display_name
from analysis.render import Block
from analysis.tables import Columns, select


def is_task(cols: Columns) -> np.ndarray:
    """Rows of a synthetic task (not language modelling); rows written before tasks existed are text."""
    if "task" not in cols:
        return np.zeros(cols["trial_id"].size, bool)
    task = np.array([t if isinstance(t, str) else "lm" for t in cols["task"]], dtype=object)
    return task != "lm"


def _int(x) -> int | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def _cell(t: Columns, i: int) -> tuple:
    """(task, difficulty name, difficulty, seq_len, d_model, n_layer, n_head) of row i."""
    task = str(t["task"][i])
    if task == "mqar":
        return task, "num_kv_pairs", _int(t["num_kv_pairs"][i]), int(t["seq_len"][i]), *_shape(t, i)
    return task, "list_len", _int(t["list_len"][i]), int(t["seq_len"][i]), *_shape(t, i)


def _shape(t: Columns, i: int) -> tuple[int, int, int]:
    return int(t["d_model"][i]), int(t["n_layer"][i]), int(t["n_head"][i])


def mean_interval(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval (NaN half-width for fewer than 2 values)."""
    x = np.asarray(x, float)
    if x.size < 2:
        return float(x.mean()) if x.size else math.nan, math.nan
    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def best_lr(trials: Columns) -> Columns:
    """Task trials at the best learning rate of each (variant, cell): highest mean accuracy over seeds."""
    groups: dict[tuple, dict[float, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i in range(trials["trial_id"].size):
        groups[(str(trials["variant"][i]), _cell(trials, i))][float(trials["lr"][i])].append(i)
    keep = np.zeros(trials["trial_id"].size, bool)
    for by_lr in groups.values():
        lr = max(by_lr, key=lambda r: np.mean([trials["final_val_accuracy"][i] for i in by_lr[r]]))
        keep[by_lr[lr]] = True
    return select(trials, keep)


def accuracy_rows(trials: Columns) -> list[dict]:
    """One dict per (cell, variant): accuracy mean/interval over seeds, gap to QKV on paired seeds."""
    t = best_lr(trials)
    by: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    lrs: dict[tuple, float] = {}
    for i in range(t["trial_id"].size):
        cell, v = _cell(t, i), str(t["variant"][i])
        by[cell][v][int(t["seed"][i])] = float(t["final_val_accuracy"][i])
        lrs[(cell, v)] = float(t["lr"][i])
    rows = []
    for cell in sorted(by, key=lambda c: (c[0], c[2] or 0, c[3], c[4:])):
        base = by[cell].get(BASELINE, {})
        for v in sorted(by[cell], key=lambda v: (v != BASELINE, display_name(v))):
            seeds = by[cell][v]
            acc, half = mean_interval(np.array(list(seeds.values())))
            common = sorted(set(seeds) & set(base))
            gap, gap_half = (
                mean_interval(np.array([seeds[s] - base[s] for s in common])) if common and v != BASELINE
                else (math.nan, math.nan)
            )  # fmt: skip
            task, dname, dval, T, d, L, H = cell
            rows.append(dict(task=task, difficulty=dname, value=dval, seq_len=T, d_model=d, n_layer=L, n_head=H,
                             variant=v, n=len(seeds), accuracy=acc, half=half, gap=gap, gap_half=gap_half,
                             lr=lrs[(cell, v)]))  # fmt: skip
    return rows


def _pm(x: float, half: float, signed: bool = False) -> str:
    if math.isnan(x):
        return "-"
    s = f"{x:+.3f}" if signed else f"{x:.3f}"
    return s if math.isnan(half) else f"{s} ± {half:.3f}"


def accuracy_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["task", "difficulty", "seq_len", "shape", "variant", "seeds", "lr", "accuracy (95% CI)", "gap to QKV"]
    body = [
        [r["task"], f"{r['difficulty']} {r['value']}", str(r["seq_len"]), _label(r), display_name(r["variant"]),
         str(r["n"]), f"{r['lr']:.2g}", _pm(r["accuracy"], r["half"]), _pm(r["gap"], r["gap_half"], signed=True)]
        for r in rows
    ]  # fmt: skip
    return header, body


def _label(r: dict) -> str:
    return f"d{r['d_model']}l{r['n_layer']}h{r['n_head']}"


def _colors(variants: list[str]) -> dict[str, str]:
    others = sorted(set(variants) - {BASELINE})
    return {BASELINE: "black", **{v: f"C{i % 10}" for i, v in enumerate(others)}}


def accuracy_plot(rows: list[dict]) -> Figure:
    """Accuracy vs difficulty (num_kv_pairs for MQAR), one line per variant, a panel per (task, shape)."""
    panels = sorted({(r["task"], r["seq_len"], r["d_model"], r["n_layer"], r["n_head"]) for r in rows})
    colors = _colors([r["variant"] for r in rows])
    cols = min(len(panels), 3)
    fig = Figure(figsize=(4.2 * cols, 3.3 * -(-len(panels) // cols)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(-(-len(panels) // cols), cols, squeeze=False).ravel())
    for ax, (task, T, d, L, H) in zip(axes, panels, strict=False):
        mine = [r for r in rows if (r["task"], r["seq_len"], _label(r)) == (task, T, f"d{d}l{L}h{H}")]
        for v in sorted({r["variant"] for r in mine}, key=lambda v: (v != BASELINE, v)):
            pts = sorted((r["value"], r["accuracy"], 0.0 if math.isnan(r["half"]) else r["half"]) for r in mine
                         if r["variant"] == v)  # fmt: skip
            x, y, e = (np.array(c, float) for c in zip(*pts, strict=True))
            ax.errorbar(x, y, yerr=e, color=colors[v], marker="o", ms=3, capsize=2, label=display_name(v))
        ax.set_title(f"{task}, d{d}l{L}h{H}, seq_len {T}", fontsize="small")
        ax.set_xlabel(mine[0]["difficulty"])
        ax.set_ylabel("final val accuracy")
        ax.set_ylim(-0.02, 1.02)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    return fig


def linear_v_final(evals: Columns) -> list[dict]:
    """Per V = aQ + bK trial, its last eval's (a, b) per layer and head."""
    if evals is None or "linear_v_a" not in evals:
        return []
    last: dict[str, int] = {}
    for i, (trial, a) in enumerate(zip(evals["trial_id"], evals["linear_v_a"], strict=True)):
        if isinstance(a, str) and (trial not in last or evals["step"][i] > evals["step"][last[trial]]):
            last[trial] = i
    out = []
    for trial, i in sorted(last.items()):
        a_h, b_h = json.loads(evals["linear_v_a"][i]), json.loads(evals["linear_v_b"][i])
        for layer, (a_l, b_l) in enumerate(zip(a_h, b_h, strict=True)):
            for head, (a, b) in enumerate(zip(a_l, b_l, strict=True)):
                out.append(dict(trial_id=str(trial), layer=layer, head=head, a=float(a), b=float(b)))
    return out


def linear_v_plot(points: list[dict]) -> Figure:
    """Where V = aQ + bK's (a_h, b_h) end up, per layer, against V = K (0, 1), V = Q (1, 0), V = Q - K (1, -1)."""
    fig = Figure(figsize=(5.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for layer in sorted({p["layer"] for p in points}):
        mine = [p for p in points if p["layer"] == layer]
        ax.scatter([p["a"] for p in mine], [p["b"] for p in mine], s=12, alpha=0.7, label=f"layer {layer}")
    for (a, b), name in (((0, 1), "V=K (start)"), ((1, 0), "V=Q"), ((1, -1), "V=Q-K")):
        ax.scatter([a], [b], marker="x", color="black", s=40)
        ax.annotate(name, (a, b), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("a (weight on Q)")
    ax.set_ylabel("b (weight on K)")
    ax.set_title("V = aQ + bK: learned (a, b) per head at the last eval", fontsize="small")
    ax.legend(fontsize="small")
    return fig


def linear_v_summary(points: list[dict]) -> list[str]:
    """One line per layer: median (a, b) and how many heads sit nearest V=K, V=Q, V=Q-K."""
    refs = {"V=K": (0.0, 1.0), "V=Q": (1.0, 0.0), "V=Q-K": (1.0, -1.0)}
    lines = []
    for layer in sorted({p["layer"] for p in points}):
        mine = [p for p in points if p["layer"] == layer]
        near = defaultdict(int)
        for p in mine:
            near[min(refs, key=lambda r: (p["a"] - refs[r][0]) ** 2 + (p["b"] - refs[r][1]) ** 2)] += 1
        a, b = np.median([p["a"] for p in mine]), np.median([p["b"] for p in mine])
        counts = ", ".join(f"{near[r]} nearest {r}" for r in refs)
        lines.append(f"layer {layer}: median a = {a:.3f}, b = {b:.3f} over {len(mine)} heads ({counts})")
    return lines


def sections(trials: Columns, evals: Columns | None) -> tuple[list[tuple[str, list[Block]]], dict[str, Figure]]:
    """Report sections and figures for task accuracy and linear_v coefficients (empty when neither)."""
    out: list[tuple[str, list[Block]]] = []
    figs: dict[str, Figure] = {}
    done = select(trials, (trials["status"] == "completed") & is_task(trials))
    if done["trial_id"].size and "final_val_accuracy" in done:
        done = select(done, np.isfinite(done["final_val_accuracy"].astype(float)))
    if done["trial_id"].size:
        rows = accuracy_rows(done)
        out.append(("Task accuracy (final val accuracy on answer tokens; mean over seeds, 95% t-interval; "
                    "gap = variant - QKV on the same seed)", [accuracy_table(rows)]))  # fmt: skip
        figs["accuracy"] = accuracy_plot(rows)
    points = linear_v_final(evals)
    if points:
        out.append(("What V = aQ + bK learned (a_h, b_h at each trial's last eval)", [linear_v_summary(points)]))
        figs["linear_v"] = linear_v_plot(points)
    return out, figs
