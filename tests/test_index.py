"""The driver's in-memory index of a sweep's results (records/index.py) on real Parquet files:
it agrees with the full readers, reads each file once, numbers attempts from names, and follows
compactions and other writers."""

from __future__ import annotations

from pathlib import Path

from records.index import TrialIndex, parse_part_name, part_name
from records.store import compact, next_attempt, trial_status, write_attempt
from tests.test_results import evals, trial


def test_part_names_round_trip() -> None:
    assert parse_part_name(part_name("qk_v-d32l1h4f128-m20-s0-ab12cd34", 3, "0f0f0f0f")) == (
        "qk_v-d32l1h4f128-m20-s0-ab12cd34",
        3,
    )
    assert parse_part_name("part-compacted-0123abcd.parquet") is None
    assert parse_part_name("by-hand.parquet") is None


def _agrees(index: TrialIndex, d: str, ids: list[str]) -> None:
    assert {t: index.status(t)["status"] for t in index.latest} == trial_status(d, "s")
    assert [index.next_attempt(t) for t in ids] == [next_attempt(d, "s", t) for t in ids]


def test_index_reads_each_new_file_once_and_agrees_with_the_readers(tmp_path: Path) -> None:
    d = str(tmp_path)
    write_attempt(d, "s", trial("a", 0, "failed"), evals(2))
    write_attempt(d, "s", trial("b", 0), [])
    index = TrialIndex(d, "s")
    index.refresh()
    assert index.files_read == 2  # two trials files; the evals file is counted from its name
    _agrees(index, d, ["a", "b", "c"])

    write_attempt(d, "s", trial("a", 1), evals(3))  # another driver
    name = write_attempt(d, "s", trial("c", 0, "diverged"), [])  # this driver
    index.add("c", 0, "diverged", None, [name])
    index.refresh()
    assert index.files_read == 3  # only a's new trials file
    assert index.status("a") == {"attempt": 1, "status": "completed", "tokens": None}
    _agrees(index, d, ["a", "b", "c"])
    index.refresh()
    assert index.files_read == 3  # nothing new: a listing, no reads


def test_orphan_evals_take_their_attempt_number(tmp_path: Path) -> None:
    d = str(tmp_path)
    write_attempt(d, "s", trial("a", 0), evals(2))
    write_attempt(d, "s", trial("a", 1), evals(5))
    next((tmp_path / "trials" / "sweep=s").glob("part-a-a1-*")).unlink()  # crashed before its row
    index = TrialIndex(d, "s")
    index.refresh()
    assert index.status("a")["attempt"] == 0 and index.next_attempt("a") == 2


def test_index_follows_compactions(tmp_path: Path) -> None:
    d = str(tmp_path)
    for i in range(3):
        write_attempt(d, "s", trial(f"t{i}"), evals(2))
    index = TrialIndex(d, "s")
    index.refresh()
    write_attempt(d, "s", trial("t0", 1, "failed"), evals(1))  # unseen by the index, then merged
    compact(d, "s")
    index.refresh()  # reads the one compacted file of each table, nothing else
    assert index.files_read == 3 + 2 and index.part_files() == (0, 1)
    assert index.status("t0")["status"] == "failed"
    _agrees(index, d, ["t0", "t1", "t2", "t9"])

    fresh = TrialIndex(d, "s")  # a driver started after the compaction
    fresh.refresh()
    assert fresh.latest == index.latest and fresh.highest == index.highest


def test_compacting_parts_only_leaves_merged_files_and_reads_the_same(tmp_path: Path) -> None:
    d = str(tmp_path)
    for i in range(3):
        write_attempt(d, "s", trial(f"t{i}"), evals(2))
    compact(d, "s")
    write_attempt(d, "s", trial("t0", 1, "failed"), evals(1))
    write_attempt(d, "s", trial("t3"), [])
    before = trial_status(d, "s")
    counts = compact(d, "s", parts_only=True)
    assert counts["trials"]["files_before"] == 2 and counts["trials"]["files_after"] == 1
    names = sorted(p.name for p in (tmp_path / "trials" / "sweep=s").iterdir())
    assert len(names) == 2 and all(n.startswith("part-compacted-") for n in names)
    assert trial_status(d, "s") == before and next_attempt(d, "s", "t0") == 2
    index = TrialIndex(d, "s")
    index.refresh()
    assert index.part_files() == (0, 2) and index.next_attempt("t0") == 2
