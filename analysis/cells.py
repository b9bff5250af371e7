"""Comparison cells: which trials of a variant and of the baseline are one comparison, and which
chain (size and seed, along M) a pair belongs to. Pure functions of a table's columns.

A *cell* is everything a variant's trial and its baseline trial share: the shape, the token
multiplier M, the seed, the sequence length, position encoding, corpus and sweep. Not the learning
rate (tuned per variant by design: with several rates in a cell, each variant's best one counts) and
not the variant's own width changes (n_kv_head for GQA; d_ff where match = "params" sets it).
A *chain* is a cell without M: one size and seed trained to every budget, whose trials share a seed
(and, with schedule = "wsd-branches", a trunk), so their errors are not independent along M.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis import AnalysisError

Columns = dict[str, np.ndarray]  # as analysis.tables, which imports this module

SHAPE_KEYS = ("d_model", "n_layer", "n_head", "d_ff")
# equal within a cell when present; "sweep" first: pairs never cross sweeps
CONFIG_KEYS = ("sweep", "seq_len", "pos", "corpus_fingerprint", "batch_size", "schedule", "vocab_size")


def size_labels(cols: Columns) -> np.ndarray:
    """One label per row naming its model size: the `size` column of a plain table, else the shape
    (d_model, n_layer, n_head, and d_ff unless match = "params" derived it per variant)."""
    n = cols["variant"].size
    if "size" in cols:
        return np.array([str(s) for s in cols["size"]])
    present = [k for k in SHAPE_KEYS if k in cols]
    if not present:
        raise AnalysisError("no `size` column and no shape columns (d_model, n_layer, n_head): cannot tell sizes apart")
    matched = cols["match"].astype(str) == "params" if "match" in cols else np.zeros(n, bool)
    labels = []
    for i in range(n):
        parts = [f"{k}={cols[k][i]}" for k in present if not (k == "d_ff" and matched[i])]
        labels.append(" ".join(parts))
    return np.array(labels)


def _config(cols: Columns) -> np.ndarray:
    keys = [k for k in CONFIG_KEYS if k in cols]
    n = cols["variant"].size
    return np.array(["|".join(f"{k}={cols[k][i]}" for k in keys) for i in range(n)], dtype=str)  # str even when empty


def cell_ids(cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    """(cell, chain) label per row: the ONE pairing rule of the verdict.

    With a `cell_id` column (the orchestrator's id of a comparison cell: equal for every variant of
    one shape, budget, seq_len, pos, corpus and sweep; not lr) the cell is cell_id and seed. Without
    it the cell is derived from size, M, seed and CONFIG_KEYS. The chain is always size, seed and
    CONFIG_KEYS: the cell without M.
    """
    n = cols["variant"].size
    seed = cols["seed"].astype(str) if "seed" in cols else np.zeros(n, str)
    chain = np.char.add(np.char.add(_config(cols), "|size="), size_labels(cols))
    chain = np.char.add(np.char.add(chain, "|seed="), seed)
    if "cell_id" in cols:
        cell = np.char.add(np.char.add(cols["cell_id"].astype(str), "|seed="), seed)
    else:
        cell = np.char.add(np.char.add(chain, "|M="), np.array([f"{m:.6g}" for m in cols["M"]]))
    return cell, chain


def table_cells(cols: Columns) -> Columns:
    """A plain table's `size` and `M` where it has none: without `size`, the rows of each variant
    (within each sweep and seq_len) are ranked by N, equal N one size, so the k-th smallest size of
    a variant pairs with the k-th smallest of the baseline; without `M`, M = D / N of the baseline's
    rows of the same size (every variant trained on the baseline's token budget keeps its M), or
    D / N where the size has no baseline row."""
    cols = dict(cols)
    n = cols["N"].size
    if n == 0:  # nothing to label: the caller says the table has no usable rows
        return {"size": np.array([], dtype=str), "M": np.array([], dtype=float)} | cols
    group = _config({k: cols[k] for k in ("sweep", "seq_len") if k in cols} | {"variant": cols["variant"]})
    if "size" not in cols:
        size = np.empty(n, dtype=object)
        for g in np.unique(group):
            for v in np.unique(cols["variant"]):
                at = (group == g) & (cols["variant"] == v)
                ranks = np.searchsorted(np.unique(cols["N"][at]), cols["N"][at])
                size[at] = [f"size {r + 1}" for r in ranks]
        cols["size"] = size.astype(str)
    if "M" not in cols:
        base = np.array([baseline_name(cols["variant"]) == v for v in cols["variant"]])
        keys = np.char.add(np.char.add(group, "|"), cols["size"].astype(str))
        n_base = {k: float(np.median(cols["N"][base & (keys == k)])) for k in np.unique(keys[base])}
        cols["M"] = cols["D"] / np.array([n_base.get(k, N) for k, N in zip(keys, cols["N"], strict=True)])
    return cols


BASELINE_NAMES = ("baseline", "QKV")  # the registry's key and the paper's name


def baseline_name(variants: np.ndarray) -> str | None:
    """Which name the baseline has in this table ("baseline" or "QKV"), None if neither occurs."""
    found = set(np.asarray(variants, dtype=str).tolist())
    return next((b for b in BASELINE_NAMES if b in found), None)


@dataclass(frozen=True)
class Pairs:
    """A variant's trials matched to the baseline's on the same cell, one pair per cell; per side
    (columns: variant, baseline) the row of the lowest-loss learning rate where a cell had several."""

    M: np.ndarray
    seed: np.ndarray
    gap: np.ndarray  # raw relative gap: L_variant / L_baseline - 1
    N: np.ndarray  # (n, 2): variant, baseline
    D: np.ndarray  # (n, 2)
    chain: np.ndarray  # chain label of each pair (size, seed, config): the bootstrap's cluster
    size: np.ndarray  # size label
    seq_len: np.ndarray  # NaN where the table has none
    sweep: np.ndarray  # "" where the table has none
    flops: np.ndarray | None = None  # (n, 2) measured training FLOPs, None where not recorded
    lr: np.ndarray | None = None  # (n, 2) the rate each side's cell used, None where not recorded
    chose: tuple[str, ...] = ()  # cells where a side had several rates: which one counted

    def select(self, mask: np.ndarray) -> Pairs:
        """The pairs where `mask` is true."""

        def pick(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[mask]

        return Pairs(
            self.M[mask], self.seed[mask], self.gap[mask], self.N[mask], self.D[mask], self.chain[mask],
            self.size[mask], self.seq_len[mask], self.sweep[mask], pick(self.flops), pick(self.lr), self.chose,
        )  # fmt: skip


def _best_rows(cols: Columns, rows: list[int]) -> tuple[list[int], str]:
    """The rows of one side of a cell that count: those of the rate with the lowest mean loss (all
    rows where there is no lr column or a single rate); and, with several rates, which one won."""
    if "lr" not in cols:
        return rows, ""
    lrs = cols["lr"][rows]
    rates = np.unique(lrs)
    if rates.size < 2:
        return rows, ""
    mean = [np.mean(cols["loss"][np.asarray(rows)[lrs == r]]) for r in rates]
    best = rates[int(np.argmin(mean))]
    tried = ", ".join(f"{r:g}" for r in rates)
    return [r for r, lr in zip(rows, lrs, strict=True) if lr == best], f"lr {best:g} of {tried}"


def pair(cols: Columns, variant: str, baseline: str | None = None) -> Pairs:
    """Pair completed trials of `variant` with the baseline's on the same cell (`cell_ids`); rows
    of one side of a cell at one rate are averaged, and with several rates the best one counts."""
    baseline = baseline or baseline_name(cols["variant"]) or BASELINE_NAMES[0]
    cell, chain = cell_ids(cols)
    rows: dict[str, dict[str, list[int]]] = {variant: {}, baseline: {}}
    for i, v in enumerate(cols["variant"]):
        if v in rows:
            rows[v].setdefault(cell[i], []).append(i)
    common = sorted(set(rows[variant]) & set(rows[baseline]))
    picked, chose = [], []
    for key in common:
        sides = [_best_rows(cols, rows[v][key]) for v in (variant, baseline)]
        picked.append([s[0] for s in sides])
        if any(s[1] for s in sides):
            first = rows[baseline][key][0]
            seed = cols["seed"][first] if "seed" in cols else 0
            where = f"M={cols['M'][first]:g}, {size_labels(cols)[first]}, seed={seed}"
            chose.append(where + ": " + "; ".join(f"{v} {s[1] or 'one rate'}" for v, s in
                                                  zip((variant, baseline), sides, strict=True)))  # fmt: skip

    def mean(name: str) -> np.ndarray:
        return np.array([[np.mean(cols[name][i].astype(float)) for i in both] for both in picked]).reshape(-1, 2)

    def first(values: np.ndarray) -> np.ndarray:
        return np.array([values[both[1][0]] for both in picked])

    n = len(picked)
    loss = mean("loss")
    return Pairs(
        M=mean("M")[:, 1], seed=mean("seed")[:, 1] if "seed" in cols else np.zeros(n),
        gap=loss[:, 0] / loss[:, 1] - 1.0,
        N=mean("N"), D=mean("D"), chain=first(chain) if n else np.array([], str),
        size=first(size_labels(cols)) if n else np.array([], str),
        seq_len=mean("seq_len")[:, 1] if "seq_len" in cols else np.full(n, np.nan),
        sweep=first(cols["sweep"].astype(str)) if "sweep" in cols and n else np.full(n, ""),
        flops=mean("flops") if "flops" in cols else None, lr=mean("lr") if "lr" in cols else None,
        chose=tuple(chose),
    )  # fmt: skip
