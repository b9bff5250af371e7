"""Trial and eval results: Parquet files with one declared schema (schema.py), hive-partitioned by
sweep (layout.py). The readers here are the only ones: the orchestrator and analysis both use them.

DIR is a local path or a URI that pyarrow.fs understands (s3://, gs://, file://). Every file has
one writer and appears under its final name in one move, so readers never see half a file. The
trials row is the commit marker: write_attempt writes the evals file first, and read_evals returns
only evals whose attempt has a trials row. pandas, polars and DuckDB read the same directories
(polars and DuckDB infer the sweep column's type, so there a sweep named 2024 reads as an integer).

A file under trials/ or evals/ that is not a readable results file (a stray note, a foreign or
corrupt Parquet file) is skipped with one warning naming it (SkippedFileWarning), and compact()
leaves it where it is; a file written by a newer schema version stops the read with one line
(ResultsVersionError): its rows may mean what this version cannot know.
"""

from __future__ import annotations

import contextlib
import time
import uuid
import warnings
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from records.index import COMPACTED_PREFIX, part_name
from records.layout import TRUNK_SCHEDULE, check_name, filesystem_for, table_dir
from records.manifest import ResultsVersionError, manifest_ids
from records.schema import ENUMS, EVALS_SCHEMA, SCHEMA_VERSION, TRIALS_SCHEMA

_SWEEP = pa.field("sweep", pa.string(), metadata={"doc": "hive partition key: the sweep=<name> directory"})
_PARTITIONING = ds.partitioning(pa.schema([_SWEEP]), flavor="hive")
_TRIAL_KEYS = ["trial_id", "attempt"]
_EVAL_KEYS = ["trial_id", "attempt", "step"]
# The leading "_" hides temp files from pyarrow/pandas discovery (ignore_prefixes ['.', '_']); the
# suffix hides them from the "*.parquet" globs polars and DuckDB use, which skip no prefixes.
_TMP_PREFIX, _TMP_SUFFIX = "_tmp-", ".tmp"
# A temp file is written and moved within seconds; one an hour old was left by a crashed writer.
_STALE_TMP_S = 3600.0
# compact() may delete a part file between a reader's listing and its read; re-listing finds the
# merged file instead. Three tries covers back-to-back compactions.
_READ_TRIES = 3
# Columns without which a row means nothing: a file lacking one is not a tiedsweep results file.
_KEYS = {"trials": ("trial_id", "attempt", "status"), "evals": ("trial_id", "attempt", "step")}


class SkippedFileWarning(UserWarning):
    """A file under trials/ or evals/ that is not a readable results file; its rows are left out."""


def _timestamp(value: object, column: str) -> object:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"{column}: naive datetime; pass a timezone-aware one or unix seconds")
    return value


def _to_table(rows: list[dict], schema: pa.Schema, what: str) -> pa.Table:
    for row in rows:
        unknown = sorted(set(row) - set(schema.names))
        if unknown:
            hint = " (sweep is the partition directory, not a column)" if "sweep" in unknown else ""
            raise ValueError(f"{what}: unknown column(s) {unknown}{hint}")
        missing = [f.name for f in schema if not f.nullable and row.get(f.name) is None]
        if missing:
            raise ValueError(f"{what}: required column(s) missing: {missing}")
        for column, allowed in ENUMS.items():
            if column in schema.names and row[column] not in allowed:
                raise ValueError(f"{what}: {column}={row[column]!r} not in {allowed}")
    return pa.Table.from_pylist(rows, schema=schema)


def _write_atomic(filesystem: pafs.FileSystem, directory: str, name: str, table: pa.Table) -> None:
    filesystem.create_dir(directory, recursive=True)
    tmp = f"{directory}/{_TMP_PREFIX}{uuid.uuid4().hex}{_TMP_SUFFIX}"
    try:
        pq.write_table(table, tmp, filesystem=filesystem)
        # LocalFileSystem.move is rename(2), atomic on POSIX; on object stores the final key
        # appears in one server-side copy, never partially.
        filesystem.move(tmp, f"{directory}/{name}")
    except BaseException:
        if filesystem.get_file_info(tmp).type == pafs.FileType.File:
            filesystem.delete_file(tmp)
        raise


def write_attempt(results_dir: str, sweep: str, trial_row: dict, eval_rows: list[dict], key: str | None = None) -> str:
    """Write one attempt's outcome row and eval rows: evals file first, then the trials file; returns
    the files' name (the same in both tables; records.index reads trial and attempt from it).

    key names the files (default: a fresh one): a retry that passes the key of the failed try
    replaces what that try wrote (an evals file without its trials row) instead of adding to it.

    Missing nullable keys become null; unknown keys, missing required keys or bad enum values raise
    ValueError before anything is written. Eval rows inherit trial_id and attempt from trial_row.
    `started_at`/`finished_at` take timezone-aware datetimes or unix seconds.
    """
    check_name(sweep, "sweep")
    row = dict(trial_row)
    if row.setdefault("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ValueError(f"schema_version {row['schema_version']} != {SCHEMA_VERSION}")
    for column in ("started_at", "finished_at"):
        row[column] = _timestamp(row.get(column), column)
    trials = _to_table([row], TRIALS_SCHEMA, "trial row")
    trial_id, attempt = check_name(row["trial_id"], "trial_id"), row["attempt"]
    if attempt < 0:
        raise ValueError(f"attempt {attempt} < 0")
    ident = {"trial_id": trial_id, "attempt": attempt}
    for e in eval_rows:
        clash = {k: e[k] for k in ident if k in e and e[k] != ident[k]}
        if clash:
            raise ValueError(f"eval row {clash} does not match the trial row {ident}")
    evals = _to_table([{**e, **ident} for e in eval_rows], EVALS_SCHEMA, "eval row")

    filesystem, base = filesystem_for(results_dir)
    name = part_name(trial_id, attempt, check_name(key, "key") if key else uuid.uuid4().hex[:8])
    if evals.num_rows:
        _write_atomic(filesystem, f"{base}/evals/sweep={sweep}", name, evals)
    _write_atomic(filesystem, f"{base}/trials/sweep={sweep}", name, trials)
    return name


def _scan(
    results_dir: str, table: str, schema: pa.Schema, sweep: str | None, where: pc.Expression | None = None
) -> pa.Table:
    filesystem, root = table_dir(results_dir, table)
    source = root if sweep is None else f"{root}/sweep={check_name(sweep, 'sweep')}"
    read_schema = schema.append(_SWEEP)

    def scan() -> pa.Table:
        if filesystem.get_file_info(source).type != pafs.FileType.Directory:
            return read_schema.empty_table()
        dataset = ds.dataset(
            source,
            schema=read_schema,  # casts files from older schema versions to this one
            format="parquet",
            filesystem=filesystem,
            partitioning=_PARTITIONING,
            partition_base_dir=root,
        )
        try:
            found = dataset.to_table(filter=where)
        except (pa.ArrowException, OSError) as e:
            if isinstance(e, FileNotFoundError):  # a part compact() just merged: list again
                raise
        else:
            if _plausible(found, table):
                return found
        # Something under `source` is not a results file: read file by file, skipping those.
        return _scan_files(filesystem, source, root, read_schema, table, where)

    for _ in range(_READ_TRIES - 1):
        with contextlib.suppress(FileNotFoundError):
            return scan()
    return scan()


def _plausible(found: pa.Table, table: str) -> bool:
    """No row without its keys (a foreign Parquet file's rows), none from a newer schema version."""
    if any(found[k].null_count for k in _KEYS[table]):
        return False
    newest = pc.max(found["schema_version"]).as_py() if table == "trials" and found.num_rows else None
    return newest is None or newest <= SCHEMA_VERSION


def _read_part(filesystem: pafs.FileSystem, path: str, schema: pa.Schema, table: str) -> pa.Table | str:
    """One part file's rows in `schema`, or why it is skipped. ResultsVersionError if a newer
    schema version wrote it; FileNotFoundError (compact() merged it meanwhile) passes through."""
    try:
        found = pq.read_schema(path, filesystem=filesystem)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as e:
        return f"not a readable Parquet file ({str(e).splitlines()[0]})"
    version = (found.metadata or {}).get(b"tiedsweep.schema_version", b"1")
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise ResultsVersionError(
            f"{path}: written by results schema version {version.decode(errors='replace')}, this tiedsweep reads "
            f"versions up to {SCHEMA_VERSION}: use a newer tiedsweep"
        )
    if missing := [k for k in _KEYS[table] if k not in found.names]:
        return f"not a tiedsweep {table} file (no {', '.join(missing)} column)"
    try:
        rows = ds.dataset(path, schema=schema, format="parquet", filesystem=filesystem).to_table()
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as e:
        return f"unreadable ({str(e).splitlines()[0]})"
    if any(rows[k].null_count for k in _KEYS[table]):
        return f"rows without {'/'.join(_KEYS[table])}"
    return rows


def _good_parts(filesystem: pafs.FileSystem, paths: list[str], schema: pa.Schema, table: str) -> dict[str, pa.Table]:
    """path -> rows of each readable part; one SkippedFileWarning per other file (once per process)."""
    good = {}
    for path in paths:
        rows = _read_part(filesystem, path, schema, table)
        if isinstance(rows, str):
            warnings.warn(f"{path}: skipped: {rows}", SkippedFileWarning, stacklevel=2)
        else:
            good[path] = rows
    return good


def _scan_files(filesystem: pafs.FileSystem, source: str, root: str, read_schema: pa.Schema, table: str,
                where: pc.Expression | None) -> pa.Table:  # fmt: skip
    infos = filesystem.get_file_info(pafs.FileSelector(source, recursive=True))
    # pyarrow's discovery ignores names starting with "." or "_" (temp files among them)
    paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_")))
    file_schema = pa.schema([f for f in read_schema if f.name != "sweep"], metadata=read_schema.metadata)
    parts = []
    for path, rows in _good_parts(filesystem, paths, file_schema, table).items():
        folder, _, name = path[len(root) + 1 :].partition("/")
        if not (name and folder.startswith("sweep=")):
            warnings.warn(f"{path}: skipped: not in a sweep=<name> folder", SkippedFileWarning, stacklevel=2)
            continue
        sweep = folder.removeprefix("sweep=")
        parts.append(rows.append_column(_SWEEP, pa.array([sweep] * rows.num_rows, pa.string())))
    found = pa.concat_tables(parts) if parts else read_schema.empty_table()
    return found.filter(where) if where is not None else found


def _first_per_key(table: pa.Table, keys: list[str], order: list[tuple[str, str]]) -> pa.Table:
    """Sort by `order`, then keep the first row of each distinct `keys` value, in sorted order."""
    table = table.sort_by(order)
    rows = table.select(keys).append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    return table.take(rows.group_by(keys).aggregate([("_row", "min")])["_row_min"].sort())


def read_trials(results_dir: str, sweep: str | None = None, latest: bool = True) -> pa.Table:
    """Trials rows (plus the `sweep` column), sorted by sweep, trial_id, attempt.

    latest=True keeps only each trial's highest attempt; either way a (trial_id, attempt) row that
    appears twice (a compaction in progress) comes back once.
    """
    table = _scan(results_dir, "trials", TRIALS_SCHEMA, sweep)
    order = [("sweep", "ascending"), ("trial_id", "ascending")]
    if latest:
        return _first_per_key(table, ["sweep", "trial_id"], [*order, ("attempt", "descending")])
    return _first_per_key(table, ["sweep", *_TRIAL_KEYS], [*order, ("attempt", "ascending")])


def read_evals(results_dir: str, sweep: str | None = None) -> pa.Table:
    """Eval rows of each trial's latest attempt that has a trials row, sorted by sweep, trial_id, step."""
    committed = read_trials(results_dir, sweep).select(["sweep", *_TRIAL_KEYS])
    evals = _scan(results_dir, "evals", EVALS_SCHEMA, sweep)
    evals = evals.join(committed, keys=["sweep", *_TRIAL_KEYS], join_type="left semi")
    return _first_per_key(evals, ["sweep", *_EVAL_KEYS], [(k, "ascending") for k in ["sweep", *_EVAL_KEYS]])


def trial_status(results_dir: str, sweep: str) -> dict[str, str]:
    """trial_id -> status of its latest attempt."""
    table = read_trials(results_dir, sweep)
    return dict(zip(table["trial_id"].to_pylist(), table["status"].to_pylist(), strict=True))


def next_attempt(results_dir: str, sweep: str, trial_id: str) -> int:
    """1 + the highest attempt of `trial_id` in either table (0 for a new trial).

    Evals count too: an attempt that crashed between its evals file and its trials row left evals
    under its number, and reusing that number would attach them to the new attempt.
    """
    where = pc.field("trial_id") == trial_id
    highest = [
        pc.max(_scan(results_dir, table, schema, sweep, where)["attempt"]).as_py()
        for table, schema in (("trials", TRIALS_SCHEMA), ("evals", EVALS_SCHEMA))
    ]
    return max((a for a in highest if a is not None), default=-1) + 1


def _partition_dirs(filesystem: pafs.FileSystem, root: str, sweep: str | None) -> list[str]:
    wanted = None if sweep is None else f"sweep={check_name(sweep, 'sweep')}"
    infos = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.Directory and i.base_name.startswith("sweep=") and wanted in (None, i.base_name)
    )


def compact(results_dir: str, sweep: str | None = None, parts_only: bool = False) -> dict[str, dict[str, int]]:
    """Merge each sweep partition's part files into one file per table, then delete the sources.

    parts_only: merge only the one-attempt part files and leave earlier `part-compacted-*` files as
    they are, so a compaction costs what was added since the last one, not the whole sweep (the
    driver's auto-compaction; readers drop rows that two files share).

    The merged file is written atomically before any source is deleted; readers drop the duplicate
    rows visible in between. Temp files older than an hour (crashed writers) are removed too.
    Returns per table: files_before, files_after, rows_before, rows_after, stale_tmp_removed.
    """
    filesystem, base = filesystem_for(results_dir)
    counts: dict[str, dict[str, int]] = {}
    for table, schema, keys in (("trials", TRIALS_SCHEMA, _TRIAL_KEYS), ("evals", EVALS_SCHEMA, _EVAL_KEYS)):
        c = counts[table] = dict.fromkeys(
            ["files_before", "files_after", "rows_before", "rows_after", "stale_tmp_removed"], 0
        )
        for directory in _partition_dirs(filesystem, f"{base}/{table}", sweep):
            for tries_left in range(_READ_TRIES - 1, -1, -1):
                try:
                    _compact_partition(filesystem, directory, schema, keys, c, table, parts_only)
                    break
                except FileNotFoundError:  # another compaction merged and removed a part we listed
                    if not tries_left:
                        raise
    return counts


def _compact_partition(
    filesystem: pafs.FileSystem,
    directory: str,
    schema: pa.Schema,
    keys: list[str],
    c: dict[str, int],
    table: str,
    parts_only: bool = False,
) -> None:
    """Merge one partition's part files into one (only the uncompacted ones with parts_only); files
    that are not readable results files stay as they are (one warning each), stale temp files go."""
    parts, stale = [], []
    for info in filesystem.get_file_info(pafs.FileSelector(directory)):
        name = info.base_name
        if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
            if info.mtime_ns is not None and time.time() - info.mtime_ns / 1e9 > _STALE_TMP_S:
                stale.append(info.path)
        elif name.endswith(".parquet") and not name.startswith((".", "_")):
            if not (parts_only and name.startswith(COMPACTED_PREFIX)):
                parts.append(info.path)
    for path in stale:
        with contextlib.suppress(FileNotFoundError):  # a concurrent compact removed it first
            filesystem.delete_file(path)
    good = _good_parts(filesystem, parts, schema, table)  # anything else stays, untouched
    parts = list(good)
    rows = sum(t.num_rows for t in good.values())
    merged = None
    if len(parts) > 1:
        merged = _first_per_key(pa.concat_tables(good.values()), keys, [(k, "ascending") for k in keys])
    # Counted only once the reads succeeded: a retry after FileNotFoundError starts from scratch.
    c["stale_tmp_removed"] += len(stale)
    c["files_before"] += len(parts)
    c["rows_before"] += rows
    if merged is not None:
        _write_atomic(filesystem, directory, f"{COMPACTED_PREFIX}{uuid.uuid4().hex[:8]}.parquet", merged)
        for path in parts:
            with contextlib.suppress(FileNotFoundError):  # a concurrent compact merged and removed it first
                filesystem.delete_file(path)
        rows = merged.num_rows
    c["files_after"] += min(len(parts), 1)
    c["rows_after"] += rows


def planned_trials(results_dir: str, sweep: str | None = None) -> tuple[pa.Table, dict[str, int]]:
    """The results a sweep's analysis reads: the latest attempt of each trial that its sweep's
    manifest lists (every row of a sweep without a manifest), WSD trunks left out (a trunk is the
    shared stable phase of its branches, not a budget of its own); and per sweep the number of
    rows left out because their ids are not in the manifest (trials of an earlier spec)."""
    table = read_trials(results_dir, sweep)
    stale: dict[str, int] = {}
    keep = pc.fill_null(pc.not_equal(table["schedule"], TRUNK_SCHEDULE), True)
    for name in sorted(set(table["sweep"].to_pylist())):
        ids = manifest_ids(results_dir, name)
        if ids is None:  # no manifest (e.g. results written by hand): every row counts
            continue
        at = pc.equal(table["sweep"], name)
        gone = pc.and_(at, pc.invert(pc.is_in(table["trial_id"], pa.array(sorted(ids), pa.string()))))
        keep = pc.and_(keep, pc.invert(gone))
        if n := pc.sum(gone).as_py():
            stale[name] = n
    return table.filter(keep), stale
