"""The recall sweep's summary tables (README.md): MQAR accuracy per variant per num_kv_pairs.

One table per width (d_model), then one that pools the widths where QKV learns the task (solves at
least half of its trials there): a width where QKV does not learn tests nothing about tying.

Each cell: the mean final held-out accuracy over the trials (seeds, and widths when pooled) with a 95%
t-interval (mean +- t_{0.975, n-1} s / sqrt(n), analysis.accuracy.mean_interval, clipped to [0, 1];
pooled widths count as draws); how many trials solved the task (accuracy >= 0.99); and the gap to QKV
on the same (width, seed), with its t-interval. `tiedsweep report RESULTS --sweep recall` gives the
per-width figures with the plots.

    .venv/bin/python studies/recall-cpu/table.py [RESULTS] [--sweep recall-d32]
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from analysis.accuracy import mean_interval
from analysis.names import BASELINE, display_name
from records.store import read_trials

RESULTS = Path(__file__).resolve().parent / "results"
SOLVED = 0.99


def accuracies(results: Path, sweep: str) -> dict[tuple[str, int], dict[tuple[int, int], float]]:
    """(variant, num_kv_pairs) -> {(d_model, seed): final accuracy} of the sweep's completed trials."""
    out: dict[tuple[str, int], dict[tuple[int, int], float]] = defaultdict(dict)
    for r in read_trials(str(results), sweep).to_pylist():
        if r["status"] == "completed":
            out[(r["variant"], int(r["num_kv_pairs"]))][(int(r["d_model"]), int(r["seed"]))] = r["final_val_accuracy"]
    return out


def _ci(x: float, half: float, signed: bool = False) -> str:
    """'mean [low, high]', the interval clipped to what the quantity can be ([0, 1]; a gap [-1, 1])."""
    s = f"{x:+.3f}" if signed else f"{x:.3f}"
    if math.isnan(half):
        return s
    lo, hi = max(x - half, -1.0 if signed else 0.0), min(x + half, 1.0)
    return f"{s} [{lo:.2f}, {hi:.2f}]"


def cell(acc: dict[tuple[int, int], float], base: dict[tuple[int, int], float]) -> str:
    """'mean [low, high] (k/n solved); gap mean [low, high]' over the trials in acc."""
    if not acc:
        return "-"
    x = np.array(list(acc.values()))
    text = f"{_ci(*mean_interval(x))} ({(x >= SOLVED).sum()}/{x.size})"
    common = sorted(set(acc) & set(base))
    if base is not acc and common:
        text += f"; gap {_ci(*mean_interval(np.array([acc[k] - base[k] for k in common])), signed=True)}"
    return text


def learned_widths(acc: dict[tuple[str, int], dict[tuple[int, int], float]]) -> list[int]:
    """Widths where QKV solves (accuracy >= SOLVED) at least half of its completed trials."""
    by: dict[int, list[float]] = defaultdict(list)
    for (v, _), trials in acc.items():
        for (d, _), a in trials.items():
            if v == BASELINE:
                by[d].append(a)
    return sorted(d for d, a in by.items() if np.mean(np.array(a) >= SOLVED) >= 0.5)


def table(everything: dict[tuple[str, int], dict[tuple[int, int], float]], widths: list[int]) -> list[str]:
    """`accuracies` restricted to `widths`, as a markdown table: a row per variant, a column per pairs."""
    acc = {key: {k: a for k, a in by.items() if k[0] in widths} for key, by in everything.items()}
    pairs = sorted({k for _, k in acc})
    variants = sorted({v for v, _ in acc}, key=lambda v: (v != BASELINE, display_name(v)))
    lines = [f"| variant | {' | '.join(f'{k} pairs' for k in pairs)} |", "|---" * (len(pairs) + 1) + "|"]
    for v in variants:
        cells = [cell(acc.get((v, k), {}), acc.get((BASELINE, k), {})) for k in pairs]
        lines.append(f"| {display_name(v)} | {' | '.join(cells)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", type=Path, default=RESULTS)
    ap.add_argument("--sweep", default="recall", help="recall (sweeps/recall.toml) or recall-d32 (its d32 arm)")
    args = ap.parse_args()
    acc = accuracies(args.results, args.sweep)  # read once
    for d in sorted({d for by in acc.values() for d, _ in by}):
        print(f"d_model {d}:\n" + "\n".join(table(acc, [d])) + "\n")
    pooled = learned_widths(acc)
    if len(pooled) < 2:  # one width: its own table above is the pooled one
        return
    print(f"pooled over d_model {', '.join(map(str, pooled))} (where QKV learns MQAR):")
    print("\n".join(table(acc, pooled)))


if __name__ == "__main__":
    main()
