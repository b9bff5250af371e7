"""Reading results: a results directory (through records.store, the readers the orchestrator uses too)
or a generic CSV/Parquet table with columns N, D, loss (optional variant, seed, C). The only module
of analysis that reads files.

A table is a dict of equal-length numpy columns. Normalised columns that the fits use:
N (parameters), D (tokens), C (training FLOPs), M (token multiplier), loss, variant, seed, status.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from analysis import AnalysisError
from analysis.cells import table_cells
from analysis.laws import flops_6nd
from records.layout import is_local
from records.manifest import ManifestError
from records.store import planned_trials, read_evals

Columns = dict[str, np.ndarray]
N_KINDS = ("non_embedding", "total")


def _to_columns(table: pa.Table) -> Columns:
    out = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        out[name] = col.to_numpy()
    return out


def select(cols: Columns, mask: np.ndarray) -> Columns:
    """Rows of a table where `mask` is true."""
    return {name: values[mask] for name, values in cols.items()}


def load_sweep_trials(
    directory: str | Path, n_kind: str = "non_embedding", sweep: str | None = None
) -> tuple[Columns, dict[str, int]]:
    """`load_trials`, and per sweep the number of latest-attempt rows left out because their trial
    ids are not in the sweep's manifest (trials of an earlier spec: a changed spec gives new ids)."""
    local = is_local(str(directory))  # else a URI (s3://, gs://) the orchestrator wrote to
    path = Path(directory) / "trials" if local else f"{directory}/trials"
    if n_kind not in N_KINDS:
        raise AnalysisError(f"unknown parameter count {n_kind!r}; use one of {N_KINDS}")
    if local and (not path.is_dir() or not any(path.rglob("*.parquet"))):
        raise AnalysisError(f"no trial results (Parquet files) under {path}")
    try:
        table, stale = planned_trials(str(directory), None)
    except (pa.ArrowInvalid, OSError, ManifestError) as err:
        raise AnalysisError(f"cannot read {path}: {err}") from err
    # records reads every column of the schema; one no row has (written by hand, or by an older
    # version) is left out, so that pairing and plots see only the columns the results carry
    cols = _to_columns(table.select([c for c in table.column_names if table[c].null_count < max(1, len(table))]))
    cols["sweep"] = cols["sweep"].astype(str)
    if sweep is not None:
        found = sorted(set(cols["sweep"].tolist()))
        if sweep not in found:
            raise AnalysisError(f"no trials of sweep {sweep!r} under {path}; sweeps found: {found}")
        cols = select(cols, cols["sweep"] == sweep)
        stale = {k: n for k, n in stale.items() if k == sweep}
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
    """Evaluation curves under DIR/evals (each trial's latest attempt that has a trials row), or None."""
    path = Path(directory) / "evals"
    if is_local(str(directory)) and (not path.is_dir() or not any(path.rglob("*.parquet"))):
        return None
    evals = read_evals(str(directory))
    return _to_columns(evals) if evals.num_rows else None


def load_table(path: str | Path, n_kind: str = "non_embedding") -> Columns:
    """A results directory (its trials) or a generic CSV/Parquet table with columns N (or
    params_non_embedding), D (or tokens), loss; missing columns default to variant 'all', seed 0,
    C = 6 N D, status 'completed', and `size` and M as `cells.table_cells` derives them."""
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
    for name, alias in (("N", "params_non_embedding"), ("D", "tokens")):  # the results schema's names
        if name not in cols and alias in cols:
            cols[name] = cols[alias]
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
    cols.setdefault("C", flops_6nd(cols["N"], cols["D"]))
    cols = table_cells(cols)  # size (rank of N per variant) and M (D / N of the baseline's size) where absent
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
