"""An in-memory index of one sweep's results for a driver: the latest outcome of each trial and the
highest attempt number in use, kept fresh by reading only the files it has not seen.

A refresh lists the two partition directories (names only) and reads nothing it has read before:
a part file's name carries its trial and attempt (`part-<trial_id>-a<attempt>-<uuid8>.parquet`,
store.write_attempt), so evals files are counted from their names alone and a trials file is read
once, for four columns of its one row. A `part-compacted-*` file (store.compact) is new content
under a new name, so it is read like any other new file; the part files it replaced just leave the
listing. Its cost per refresh is a listing, which auto-compaction (the runner, store.compact) keeps to
a few hundred names, plus the files added since the last one.
"""

from __future__ import annotations

import re

import pyarrow.dataset as ds
import pyarrow.fs as pafs

from records.layout import check_name, table_dir
from records.schema import EVALS_SCHEMA, TRIALS_SCHEMA

_PART = re.compile(r"part-(?P<trial_id>.+)-a(?P<attempt>\d+)-[0-9a-f]{8}\.parquet")
COMPACTED_PREFIX = "part-compacted-"  # store.compact's merged files
_COLUMNS = ["trial_id", "attempt", "status", "tokens"]
# compact() may delete a part file between our listing and our read; a re-listing finds the merged
# file instead (it is written before any source is deleted). Three tries covers back-to-back compactions.
_READ_TRIES = 3


def part_name(trial_id: str, attempt: int, uuid8: str) -> str:
    """The name of one attempt's part file, in trials/ and evals/ alike."""
    return f"part-{trial_id}-a{attempt}-{uuid8}.parquet"


def parse_part_name(name: str) -> tuple[str, int] | None:
    """(trial_id, attempt) of a part file written by write_attempt; None for any other name
    (a compacted file, or one written by hand)."""
    m = _PART.fullmatch(name)
    return (m["trial_id"], int(m["attempt"])) if m else None


def _is_data(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith((".", "_"))


class TrialIndex:
    """trial_id -> (attempt, status, tokens) of its latest committed attempt, and trial_id -> the
    highest attempt in either table (evals count: a crash between the evals file and the trials row
    leaves that number taken). Fill with refresh(); record this driver's own writes with add()."""

    def __init__(self, results_dir: str, sweep: str) -> None:
        check_name(sweep, "sweep")
        self.latest: dict[str, tuple[int, str, int]] = {}
        self.highest: dict[str, int] = {}
        self.files_read = 0  # files opened by refresh(), for tests and the bench
        self._dirs = {}
        for table, schema in (("trials", TRIALS_SCHEMA), ("evals", EVALS_SCHEMA)):
            fs, root = table_dir(results_dir, table)
            self._dirs[table] = (fs, f"{root}/sweep={sweep}", schema)
        self._seen: dict[str, set[str]] = {"trials": set(), "evals": set()}

    def next_attempt(self, trial_id: str) -> int:
        """1 + the highest attempt of `trial_id` in either table as of the last refresh or add (0 if none)."""
        return self.highest.get(trial_id, -1) + 1

    def status(self, trial_id: str) -> dict | None:
        """{"status", "tokens", "attempt"} of the trial's latest committed attempt, or None."""
        entry = self.latest.get(trial_id)
        return None if entry is None else {"attempt": entry[0], "status": entry[1], "tokens": entry[2]}

    def part_files(self, table: str = "trials") -> tuple[int, int]:
        """(one-attempt part files, compacted files) in the partition as of the last refresh."""
        compacted = sum(name.startswith(COMPACTED_PREFIX) for name in self._seen[table])
        return len(self._seen[table]) - compacted, compacted

    def add(self, trial_id: str, attempt: int, status: str, tokens: int, names: list[str] = ()) -> None:
        """Record an attempt this driver wrote (`names`: its trials files, so refresh() does not read them)."""
        self._note(trial_id, attempt, status, tokens)
        self._seen["trials"].update(names)

    def refresh(self) -> None:
        """Read what other drivers (or a compaction) added since the last refresh."""
        for table in ("evals", "trials"):
            for attempt in range(_READ_TRIES):
                try:
                    self._refresh(table)
                    break
                except FileNotFoundError:  # compacted away between listing and reading: list again
                    if attempt == _READ_TRIES - 1:
                        raise

    def _note(self, trial_id: str, attempt: int, status: str | None, tokens: int | None) -> None:
        if attempt > self.highest.get(trial_id, -1):
            self.highest[trial_id] = attempt
        if status is not None and attempt >= self.latest.get(trial_id, (-1,))[0]:
            self.latest[trial_id] = (attempt, status, tokens)

    def _refresh(self, table: str) -> None:
        fs, directory, schema = self._dirs[table]
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        names = {i.base_name for i in infos if i.type == pafs.FileType.File and _is_data(i.base_name)}
        new = names - self._seen[table]
        to_read = []
        for name in new:
            parsed = parse_part_name(name)
            if parsed is not None and table == "evals":
                self._note(*parsed, None, None)  # the name says all an evals file tells the index
            else:
                to_read.append(f"{directory}/{name}")
        if to_read:
            columns = _COLUMNS if table == "trials" else ["trial_id", "attempt"]
            rows = ds.dataset(to_read, schema=schema, format="parquet", filesystem=fs).to_table(columns=columns)
            self.files_read += len(to_read)
            cols = [rows[c].to_pylist() for c in columns]
            if table == "trials":
                for trial_id, attempt, status, tokens in zip(*cols, strict=True):
                    self._note(trial_id, attempt, status, tokens)
            else:
                for trial_id, attempt in zip(*cols, strict=True):
                    self._note(trial_id, attempt, None, None)
        self._seen[table] = names  # names gone (merged by a compaction) are forgotten
