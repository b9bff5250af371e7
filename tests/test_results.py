"""Results tables on real Parquet files: schema, atomic layout, latest-attempt reads, compaction."""

from __future__ import annotations

import math
import os
import shutil
import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from records.store import (
    EVALS_SCHEMA,
    SCHEMA_VERSION,
    TRIALS_SCHEMA,
    compact,
    next_attempt,
    read_evals,
    read_trials,
    trial_status,
    write_attempt,
)

CONFIG = {
    "variant": "qk_v",
    "d_model": 16,
    "n_layer": 2,
    "n_head": 2,
    "d_ff": 64,
    "n_kv_head": 2,
    "vocab_size": 256,
    "seq_len": 32,
    "pos": "rope",
    "norm": "rmsnorm",
    "bias": False,
    "tie_embeddings": True,
    "batch_size": 4,
    "lr": 3e-3,
    "schedule": "wsd",
    "warmup_frac": 0.1,
    "cooldown_frac": 0.2,
    "cooldown_shape": "linear",
    "weight_decay": 0.1,
    "seed": 0,
    "tokens_per_param": 20.0,
    "tokens_basis": "baseline",
    "n_basis": "non_embedding",
    "match": "none",
    "corpus": "tinytext",
    "corpus_fingerprint": "abc123",
}


def trial(trial_id: str, attempt: int = 0, status: str = "completed", **extra: object) -> dict:
    row = {"trial_id": trial_id, "attempt": attempt, "status": status, **CONFIG}
    if status == "completed":
        row |= {"final_train_loss": 3.0, "final_val_loss": 3.1}
    row |= {"started_at": 1.7e9, "finished_at": datetime(2024, 1, 1, tzinfo=timezone.utc), **extra}
    return row


def evals(n: int) -> list[dict]:
    return [{"step": s, "tokens": 128 * s, "train_loss": 5.0 - s, "val_loss": None, "lr": 1e-3} for s in range(n)]


def part_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_roundtrip_schema_and_layout(tmp_path: Path) -> None:
    write_attempt(str(tmp_path), "s1", trial("t-1", resumed_from_step=None), evals(3))
    (trial_file,) = part_files(tmp_path / "trials")
    (eval_file,) = part_files(tmp_path / "evals")
    assert trial_file.parent.name == eval_file.parent.name == "sweep=s1"
    assert trial_file.name.startswith("part-t-1-a0-") and trial_file.suffix == ".parquet"
    on_disk = pq.read_schema(trial_file)
    assert on_disk.equals(TRIALS_SCHEMA, check_metadata=True)
    assert on_disk.metadata[b"tiedsweep.schema_version"] == str(SCHEMA_VERSION).encode()
    assert pq.read_schema(eval_file).equals(EVALS_SCHEMA)

    trials = read_trials(str(tmp_path))
    assert trials.schema.names == [*TRIALS_SCHEMA.names, "sweep"]
    assert trials.schema.field("sweep").type == pa.string()
    row = trials.to_pylist()[0]
    assert row["sweep"] == "s1" and row["schema_version"] == SCHEMA_VERSION
    assert row["branch_of"] is None and row["params_total"] is None  # optional keys -> null
    assert row["started_at"] == datetime.fromtimestamp(1.7e9, tz=timezone.utc)
    ev = read_evals(str(tmp_path), "s1")
    assert ev["step"].to_pylist() == [0, 1, 2]
    assert set(ev["trial_id"].to_pylist()) == {"t-1"} and set(ev["attempt"].to_pylist()) == {0}


def test_bad_rows_raise_and_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        write_attempt(str(tmp_path), "s", trial("t", learning_rate=1.0), [])
    with pytest.raises(ValueError, match="partition"):
        write_attempt(str(tmp_path), "s", trial("t", sweep="s"), [])
    row = trial("t")
    del row["seed"]
    with pytest.raises(ValueError, match="seed"):
        write_attempt(str(tmp_path), "s", row, [])
    with pytest.raises(ValueError, match="status"):
        write_attempt(str(tmp_path), "s", trial("t", status="ok"), [])
    with pytest.raises(ValueError, match="eval row"):
        write_attempt(str(tmp_path), "s", trial("t"), [{"step": 0, "tokens": 0, "loss": 1.0}])
    with pytest.raises(ValueError, match="does not match"):
        write_attempt(str(tmp_path), "s", trial("t"), [{"step": 0, "tokens": 0, "attempt": 3}])
    with pytest.raises(ValueError, match="sweep"):
        write_attempt(str(tmp_path), "../up", trial("t"), [])
    assert part_files(tmp_path) == []


def test_latest_attempt_status_and_dedupe(tmp_path: Path) -> None:
    d = str(tmp_path)
    write_attempt(d, "s", trial("a", 0, "failed", error="OOM"), evals(2))
    write_attempt(d, "s", trial("a", 1, "diverged", final_train_loss=math.nan), evals(4))
    write_attempt(d, "s", trial("b", 0, "interrupted"), [])
    write_attempt(d, "other", trial("a", 0), evals(1))

    latest = read_trials(d, "s")
    assert latest["trial_id"].to_pylist() == ["a", "b"]
    assert latest["attempt"].to_pylist() == [1, 0]
    assert math.isnan(latest["final_train_loss"][0].as_py())
    assert read_trials(d, latest=False)["attempt"].to_pylist() == [0, 0, 1, 0]
    assert read_trials(d)["sweep"].to_pylist() == ["other", "s", "s"]
    assert trial_status(d, "s") == {"a": "diverged", "b": "interrupted"}
    assert read_evals(d, "s")["step"].to_pylist() == [0, 1, 2, 3]  # attempt 1 only
    assert next_attempt(d, "s", "a") == 2 and next_attempt(d, "s", "new") == 0

    # A copied part file is what readers see while compact() runs: rows must not double.
    for table in ("trials", "evals"):
        src = next((tmp_path / table / "sweep=s").glob("part-a-a1-*"))
        shutil.copy(src, src.with_name("part-copy.parquet"))
    assert read_trials(d, "s", latest=False).num_rows == 3
    assert read_evals(d, "s").num_rows == 4


def test_uncommitted_attempt_is_invisible_but_numbered(tmp_path: Path) -> None:
    d = str(tmp_path)
    write_attempt(d, "s", trial("a", 0), evals(2))
    write_attempt(d, "s", trial("a", 1), evals(5))
    # A writer that crashed between its evals file and its trials row.
    next((tmp_path / "trials" / "sweep=s").glob("part-a-a1-*")).unlink()
    assert read_trials(d, "s")["attempt"].to_pylist() == [0]
    assert read_evals(d, "s")["step"].to_pylist() == [0, 1]
    assert next_attempt(d, "s", "a") == 2  # attempt 1's orphan evals must not join a new attempt 1


def test_temp_files_are_ignored(tmp_path: Path) -> None:
    d = str(tmp_path)
    write_attempt(d, "s", trial("a"), evals(1))
    part = tmp_path / "trials" / "sweep=s"
    # Half-written files under both temp spellings: pyarrow skips "_" names whatever the suffix.
    (part / "_tmp-0.tmp").write_bytes(b"PAR1 half a file")
    (part / "_tmp-1.parquet").write_bytes(b"PAR1 half a file")
    assert len(ds.dataset(str(tmp_path / "trials"), format="parquet", partitioning="hive").files) == 1
    assert read_trials(d)["trial_id"].to_pylist() == ["a"]


def test_empty_results_dir(tmp_path: Path) -> None:
    trials = read_trials(str(tmp_path / "nothing"))
    assert trials.num_rows == 0 and trials.schema.names == [*TRIALS_SCHEMA.names, "sweep"]
    assert read_evals(str(tmp_path), "s").schema.names == [*EVALS_SCHEMA.names, "sweep"]
    assert trial_status(str(tmp_path), "s") == {}
    assert compact(str(tmp_path))["trials"]["files_before"] == 0


def test_compact_merges_then_deletes(tmp_path: Path) -> None:
    d = str(tmp_path)
    for i in range(4):
        write_attempt(d, "s", trial(f"t{i}"), evals(3))
    write_attempt(d, "s", trial("t0", 1), evals(2))
    write_attempt(d, "keep", trial("k"), evals(1))
    stale = tmp_path / "trials" / "sweep=s" / "_tmp-dead.tmp"
    stale.write_bytes(b"crashed")
    os.utime(stale, (0, 0))
    before = (read_trials(d, latest=False), read_evals(d))

    counts = compact(d, "s")
    assert counts["trials"] == {
        "files_before": 5,
        "files_after": 1,
        "rows_before": 5,
        "rows_after": 5,
        "stale_tmp_removed": 1,
    }
    assert counts["evals"]["files_before"] == 5 and counts["evals"]["rows_after"] == 14
    assert len(part_files(tmp_path / "trials" / "sweep=s")) == 1
    assert len(part_files(tmp_path / "trials" / "sweep=keep")) == 1
    assert read_trials(d, latest=False).equals(before[0])
    assert read_evals(d).equals(before[1])

    write_attempt(d, "s", trial("t9"), [])
    counts = compact(d)
    assert counts["trials"]["files_before"] == 3 and counts["trials"]["files_after"] == 2
    assert compact(d)["trials"]["files_before"] == 2  # idempotent
    assert next_attempt(d, "s", "t0") == 2


def test_file_uri(tmp_path: Path) -> None:
    uri = tmp_path.as_uri()
    write_attempt(uri, "s", trial("a"), evals(2))
    assert read_trials(str(tmp_path))["trial_id"].to_pylist() == ["a"]
    assert read_evals(uri)["step"].to_pylist() == [0, 1]
    assert compact(uri)["evals"]["files_after"] == 1


def test_readable_by_pandas_polars_duckdb(tmp_path: Path) -> None:
    d = str(tmp_path)
    write_attempt(d, "s1", trial("a"), evals(2))
    write_attempt(d, "s1", trial("a", 1, "failed"), [])
    write_attempt(d, "s2", trial("b"), evals(3))
    # A writer mid-flight: its temp file must not break any reader.
    (tmp_path / "trials" / "sweep=s1" / "_tmp-x.tmp").write_bytes(b"PAR1 partial")

    assert ds.dataset(f"{d}/trials", format="parquet", partitioning="hive").count_rows() == 3

    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(f"{d}/trials")
    assert len(frame) == 3 and sorted(frame["sweep"].astype(str)) == ["s1", "s1", "s2"]
    assert str(frame["started_at"].dt.tz) == "UTC"

    pl = pytest.importorskip("polars")
    frame = pl.read_parquet(f"{d}/trials/**/*.parquet", hive_partitioning=True)
    assert frame.height == 3 and sorted(frame["sweep"].to_list()) == ["s1", "s1", "s2"]
    lazy = pl.scan_parquet(f"{d}/evals/**/*.parquet", hive_partitioning=True)
    assert lazy.filter(pl.col("sweep") == "s2").collect().height == 3

    duckdb = pytest.importorskip("duckdb")
    ((n, sweeps),) = duckdb.sql(
        f"select count(*), count(distinct sweep) from read_parquet('{d}/trials/*/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert (n, sweeps) == (3, 2)


def test_reads_during_writes_and_compactions(tmp_path: Path) -> None:
    d, n = str(tmp_path), 40

    def write_and_compact() -> None:
        for i in range(n):
            write_attempt(d, "s", trial(f"t{i}"), evals(2))
            compact(d, "s")  # deletes files that the reader below may have just listed

    worker = threading.Thread(target=write_and_compact)
    worker.start()
    seen = 0
    while worker.is_alive() or seen < n:
        trials = read_trials(d, "s", latest=False)
        assert trials.num_rows >= seen  # never a row lost nor doubled, whatever the interleaving
        assert trials.num_rows == len(set(trials["trial_id"].to_pylist()))
        per_trial = Counter(read_evals(d, "s")["trial_id"].to_pylist())
        assert set(per_trial.values()) <= {2}  # a committed attempt has all its evals, once
        seen = trials.num_rows
    worker.join()
    assert seen == n


def test_unreadable_files_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    from records.store import SkippedFileWarning

    for i in range(2):
        write_attempt(str(tmp_path), "s", trial(f"t-{i}"), evals(2))
    folder = tmp_path / "trials" / "sweep=s"
    good = sorted(folder.iterdir())[0]
    strays = {
        "notes.txt": b"remember to rerun m8\n",  # a stray note
        "part-torn.parquet": good.read_bytes()[: good.stat().st_size // 2],  # a copy torn mid-write
        "foreign.parquet": None,  # someone else's table
    }
    for name, raw in strays.items():
        if raw is None:
            pq.write_table(pa.table({"a": [1, 2]}), folder / name)
        else:
            (folder / name).write_bytes(raw)
    (tmp_path / "evals" / "sweep=s" / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.warns(SkippedFileWarning) as caught:
        assert sorted(read_trials(str(tmp_path))["trial_id"].to_pylist()) == ["t-0", "t-1"]
        assert read_evals(str(tmp_path)).num_rows == 4
        assert next_attempt(str(tmp_path), "s", "t-0") == 1
        counts = compact(str(tmp_path))
        assert sorted(read_trials(str(tmp_path))["trial_id"].to_pylist()) == ["t-0", "t-1"]
    named = {str(w.message).split(": skipped: ")[0] for w in caught}
    assert {str(folder / n) for n in strays} | {str(tmp_path / "evals" / "sweep=s" / "junk.parquet")} <= named
    assert counts["trials"]["rows_after"] == 2 and counts["evals"]["rows_after"] == 4
    assert all((folder / n).exists() for n in strays)  # compact leaves what it cannot read where it is


def test_newer_schema_version_is_refused_in_one_line(tmp_path: Path) -> None:
    from records.manifest import ResultsVersionError

    write_attempt(str(tmp_path), "s", trial("t-0"), [])
    (path,) = part_files(tmp_path / "trials")
    table = pq.read_table(path)
    newer = table.replace_schema_metadata({b"tiedsweep.schema_version": str(SCHEMA_VERSION + 1).encode()})
    newer = newer.set_column(newer.schema.get_field_index("schema_version"), "schema_version",
                             pa.array([SCHEMA_VERSION + 1], pa.int32()))  # fmt: skip
    pq.write_table(newer, path.with_name("part-newer.parquet"))
    with pytest.raises(ResultsVersionError) as info:
        read_trials(str(tmp_path))
    line = str(info.value)
    assert "\n" not in line and "part-newer.parquet" in line and f"schema version {SCHEMA_VERSION + 1}" in line


def test_a_retried_write_replaces_what_the_failed_try_wrote(tmp_path: Path) -> None:
    """The driver retries a failed result write with the same key: no orphan evals file, no duplicate."""
    write_attempt(str(tmp_path), "s", trial("t-0"), evals(3), key="k1")  # a try whose success went unseen
    evals_file = part_files(tmp_path / "evals")
    write_attempt(str(tmp_path), "s", trial("t-0"), evals(3), key="k1")  # its retry
    assert part_files(tmp_path / "evals") == evals_file and len(part_files(tmp_path / "trials")) == 1
    assert read_evals(str(tmp_path)).num_rows == 3
