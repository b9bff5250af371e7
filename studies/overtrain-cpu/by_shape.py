"""Per shape: does each size alone show the trend the verdict pools? (the study README's shape tables:
each shape's slope, then the raw gap at every (shape, M))

The verdict (analysis.verdict) pools every (size, seed) chain. Here each shape gets its own slope,
computed with the verdict's own pieces: analysis.cells.pair matches each tied variant's trial to QKV's
on the same cell, and analysis.trend.within_slope fits the raw gap L_variant / L_QKV - 1 on log2 M
within the shape's 3 seed chains, with a cluster-robust t interval over those chains (2 degrees of
freedom: wide). The gap here is raw, not beyond capacity. With `match = "params"` every variant of a
shape has QKV's non-embedding N within 0.8%, so the capacity term T is ~1.

    .venv/bin/python studies/overtrain-cpu/by_shape.py [RESULTS]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from analysis.accuracy import mean_interval
from analysis.cells import Pairs, pair
from analysis.names import display_name
from analysis.tables import completed, load_trials
from analysis.trend import within_slope

RESULTS = Path(__file__).resolve().parent / "results"
TIED = ("tied_kv", "tied_qk", "tied_qkv")
# analysis.cells.size_labels -> the CPU ladder's names (spec.toml's sizes)
LADDER = {"d_model=32 n_layer=1 n_head=4": "t1", "d_model=48 n_layer=2 n_head=4": "t2",
          "d_model=64 n_layer=2 n_head=4": "t3"}  # fmt: skip


def _mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (analysis.accuracy.mean_interval, as bounds)."""
    m, half = mean_interval(x)
    return m, m - half, m + half


def _shapes(results: Path) -> Iterator[tuple[str, str, Pairs]]:
    """(variant, shape name, its pairs with QKV) for each tied variant and shape, smallest shape first."""
    cols, _ = completed(load_trials(results))
    for variant in TIED:
        p = pair(cols, variant)
        for size in sorted(set(p.size), key=lambda s: np.median(p.N[p.size == s, 1])):
            yield display_name(variant), LADDER.get(size, size), p.select(p.size == size)


def rows(results: Path) -> list[dict]:
    """One row per (tied variant, shape): slope per doubling of M and the gap at the shape's largest M."""
    out = []
    for variant, size, q in _shapes(results):
        slope = within_slope(np.log2(q.M), q.gap, q.chain, q.chain)
        top = q.M.max()
        out.append({"variant": variant, "size": size, "N": float(np.median(q.N[:, 1])),
                    "chains": int(np.unique(q.chain).size), "slope": slope.triple, "M_max": float(top),
                    "gap_at_max": _mean_ci(q.gap[q.M == top])})  # fmt: skip
    return out


def gap_table(results: Path) -> list[dict]:
    """The raw gap per (tied variant, shape, M): mean over seeds with its 95% t-interval."""
    return [{"variant": variant, "size": size, "M": m, "gap": _mean_ci(q.gap[q.M == m])}
            for variant, size, q in _shapes(results) for m in sorted(set(q.M))]  # fmt: skip


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    print(
        "| variant | shape (N) | chains | raw gap slope per doubling of M, % [95% CI] | largest M "
        "| raw gap there, % [95% CI] |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows(results):
        s, g = [100 * x for x in r["slope"]], [100 * x for x in r["gap_at_max"]]
        print(
            f"| {r['variant']} | {r['size']} ({r['N'] / 1e3:.1f}k) | {r['chains']} "
            f"| {s[0]:+.2f} [{s[1]:+.2f}, {s[2]:+.2f}] | {r['M_max']:g} | {g[0]:+.2f} [{g[1]:+.2f}, {g[2]:+.2f}] |"
        )

    print("\n| variant | shape | " + " | ".join(f"M = {m:g}" for m in (1, 4, 16, 64, 256, 1000)) + " |")
    print("|---|---|" + "---|" * 6)
    cells: dict[tuple[str, str], dict[float, tuple]] = {}
    for r in gap_table(results):
        cells.setdefault((r["variant"], r["size"]), {})[r["M"]] = r["gap"]
    for (variant, size), by_m in cells.items():
        row = [_pct(by_m[m]) if m in by_m else "" for m in (1, 4, 16, 64, 256, 1000)]
        print(f"| {variant} | {size} | " + " | ".join(row) + " |")


def _pct(g: tuple[float, float, float]) -> str:
    return f"{100 * g[0]:+.1f} [{100 * g[1]:+.1f}, {100 * g[2]:+.1f}]"


if __name__ == "__main__":
    main()
