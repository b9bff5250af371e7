"""Reading results: a results directory (trials + evals, hive-partitioned Parquet) or a generic
CSV/Parquet table with columns N, D, loss (optional variant, seed, C). The only module that reads files.

A table is a dict of equal-length numpy columns. Normalised columns that the fits use:
N (parameters), D (tokens), C (training FLOPs), M (token multiplier), loss, variant, seed, status.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from analysis import AnalysisError
from analysis.laws import training_flops

Columns = dict[str, np.ndarray]
N_KINDS = ("non_embedding", "total")
_TRIAL_COLUMNS = ("trial_id", "attempt", "status", "variant", "seed", "tokens_per_param", "params_total",
                  "params_non_embedding", "tokens", "flops", "final_val_loss")  # fmt: skip


def _to_columns(table: pa.Table) -> Columns:
    out = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        out[name] = col.to_numpy()
    return out


def _read_dataset(path: Path) -> Columns:
    try:
        return _to_columns(ds.dataset(path, format="parquet", partitioning="hive").to_table())
    except (pa.ArrowInvalid, OSError) as err:
        raise AnalysisError(f"cannot read {path}: {err}") from err


def select(cols: Columns, mask: np.ndarray) -> Columns:
    """Rows of a table where `mask` is true."""
    return {name: values[mask] for name, values in cols.items()}


def latest_attempts(cols: Columns) -> Columns:
    """One row per trial_id (per sweep, where there is a sweep column): the one with the largest attempt."""
    sweep = cols["sweep"].astype(str) if "sweep" in cols else np.zeros(cols["trial_id"].size, str)
    order = np.lexsort((cols["attempt"], cols["trial_id"], sweep))
    ids, sweeps = cols["trial_id"][order], sweep[order]
    last = np.r_[(ids[1:] != ids[:-1]) | (sweeps[1:] != sweeps[:-1]), True]
    return select(cols, order[last])


def manifest_ids(directory: str | Path, sweep: str) -> set[str] | None:
    """Trial ids that the latest spec of `sweep` expands to (DIR/manifests/<sweep>.json), or None
    where the sweep has no manifest."""
    path = Path(directory) / "manifests" / f"{sweep}.json"
    if not path.is_file():
        return None
    try:
        return {str(t["trial_id"]) for t in json.loads(path.read_text())["trials"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AnalysisError(f"cannot read the manifest {path}: {err}") from err


def load_sweep_trials(
    directory: str | Path, n_kind: str = "non_embedding", sweep: str | None = None
) -> tuple[Columns, dict[str, int]]:
    """`load_trials`, and per sweep the number of latest-attempt rows left out because their trial
    ids are not in the sweep's manifest (trials of an earlier spec: a changed spec gives new ids)."""
    path = Path(directory) / "trials"
    if n_kind not in N_KINDS:
        raise AnalysisError(f"unknown parameter count {n_kind!r}; use one of {N_KINDS}")
    if not path.is_dir() or not any(path.rglob("*.parquet")):
        raise AnalysisError(f"no trial results (Parquet files) under {path}")
    cols = _read_dataset(path)
    if missing := set(_TRIAL_COLUMNS) - set(cols):
        raise AnalysisError(f"{path}: trials lack column(s) {sorted(missing)}")
    if "sweep" in cols:
        cols["sweep"] = cols["sweep"].astype(str)
    if sweep is not None:
        found = sorted(set(cols["sweep"].tolist())) if "sweep" in cols else []
        if sweep not in found:
            raise AnalysisError(f"no trials of sweep {sweep!r} under {path}; sweeps found: {found}")
        cols = select(cols, cols["sweep"] == sweep)
    cols = latest_attempts(cols)
    stale: dict[str, int] = {}
    if "sweep" in cols:
        keep = np.ones(cols["trial_id"].size, bool)
        for name in sorted(set(cols["sweep"].tolist())):
            ids = manifest_ids(directory, name)
            if ids is None:  # no manifest (e.g. results written by hand): every row counts
                continue
            at = cols["sweep"] == name
            gone = at & ~np.isin(cols["trial_id"].astype(str), list(ids))
            keep &= ~gone
            if gone.any():
                stale[name] = int(gone.sum())
        cols = select(cols, keep)
    if "schedule" in cols:  # a WSD trunk is the shared stable phase of its branches, not a budget of its own
        cols = select(cols, cols["schedule"].astype(str) != "wsd-trunk")
    cols.update(
        N=cols[f"params_{n_kind}"].astype(float),
        D=cols["tokens"].astype(float),
        C=cols["flops"].astype(float),
        M=cols["tokens_per_param"].astype(float),
        loss=cols["final_val_loss"].astype(float),
        variant=cols["variant"].astype(str),
    )
    return cols, stale


def load_trials(directory: str | Path, n_kind: str = "non_embedding", sweep: str | None = None) -> Columns:
    """Latest attempt of every trial under DIR/trials (of `sweep` only, if given), all statuses, with
    the normalised columns (N = params_<n_kind>, D = tokens, C = flops, M = tokens_per_param,
    loss = final_val_loss). Where DIR/manifests/<sweep>.json exists, only the trials it lists."""
    return load_sweep_trials(directory, n_kind, sweep)[0]


def load_evals(directory: str | Path) -> Columns | None:
    """Evaluation curves under DIR/evals (latest attempt of each trial), or None if there are none."""
    path = Path(directory) / "evals"
    if not path.is_dir() or not any(path.rglob("*.parquet")):
        return None
    cols = _read_dataset(path)
    latest = {}
    for trial, attempt in zip(cols["trial_id"], cols["attempt"], strict=True):
        latest[trial] = max(attempt, latest.get(trial, attempt))
    keep = np.array([latest[t] == a for t, a in zip(cols["trial_id"], cols["attempt"], strict=True)], bool)
    return select(cols, keep)


def load_table(path: str | Path, n_kind: str = "non_embedding") -> Columns:
    """A results directory (its trials) or a generic CSV/Parquet table with columns N, D, loss;
    missing columns default to variant 'all', seed 0, C = 6 N D, M = D / N, status 'completed'."""
    path = Path(path)
    if path.is_dir():
        return load_trials(path, n_kind)
    if not path.is_file():
        raise AnalysisError(f"no such file or directory: {path}")
    try:
        table = pacsv.read_csv(path) if path.suffix.lower() == ".csv" else ds.dataset(path).to_table()
    except (pa.ArrowInvalid, OSError) as err:
        raise AnalysisError(f"cannot read {path}: {err}") from err
    cols = _to_columns(table)
    if missing := {"N", "D", "loss"} - set(cols):
        raise AnalysisError(f"{path}: missing column(s) {sorted(missing)}; a table needs N, D and loss")
    n = len(cols["N"])
    csv = path.suffix.lower() == ".csv"
    where = [f"line {i + 2}" if csv else f"row {i + 1}" for i in range(n)]  # as an editor numbers them
    cols = {k: (_numbers(v, path, k, where) if k in ("N", "D", "loss", "C") else v) for k, v in cols.items()}
    for k in ("N", "D"):
        if (bad := ~(cols[k] > 0) & np.isfinite(cols["loss"])).any():  # rows a fit would use
            i = int(np.argmax(bad))
            raise AnalysisError(f"{path}: {where[i]}: {k} = {cols[k][i]:g} is not a positive number")
    cols["variant"] = cols["variant"].astype(str) if "variant" in cols else np.full(n, "all")
    cols.setdefault("seed", np.zeros(n, dtype=int))
    cols.setdefault("C", training_flops(cols["N"], cols["D"]))
    cols.setdefault("M", cols["D"] / cols["N"])
    cols.setdefault("status", np.full(n, "completed"))
    return cols


def _numbers(values: np.ndarray, path: Path, column: str, where: list[str]) -> np.ndarray:
    """A column as floats; AnalysisError naming the file and row of the first value that is not one."""
    try:
        return values.astype(float)
    except (ValueError, TypeError):
        for i, v in enumerate(values):
            try:
                float(v)
            except (ValueError, TypeError):
                raise AnalysisError(f"{path}: {where[i]}: {column} = {v!r} is not a number") from None
        raise


def completed(cols: Columns) -> tuple[Columns, dict[str, int]]:
    """Completed trials with a finite loss, and the count of the others by status."""
    ok = (cols["status"] == "completed") & np.isfinite(cols["loss"])
    reasons = np.where(cols["status"] == "completed", "non-finite loss", cols["status"])
    names, counts = np.unique(reasons[~ok], return_counts=True)
    return select(cols, ok), dict(zip(names.tolist(), counts.tolist(), strict=True))
