"""The layout of a results directory DIR (a local path, file://, or a URI pyarrow.fs understands):

    DIR/trials/sweep=<name>/part-<trial_id>-a<attempt>-<uuid8>.parquet   one row per attempt (store.py)
    DIR/evals/sweep=<name>/part-<trial_id>-a<attempt>-<uuid8>.parquet    that attempt's eval curve
    DIR/manifests/<name>.json                                           planned trials (manifest.py)
    DIR/tuning/<name>/{optuna.journal, lr.json, runs/}                  learning-rate tuning (tuning.py)
    DIR/logs/<name>/<trial_id>.log                                      one log per trial (local DIR only)
    DIR/leases/<name>/<trial_id>.json                                   trial leases (local DIR only)
    DIR/checkpoints/<name>/<trial_id>/                                  checkpoints (or --checkpoint-dir)

Every other module asks this one for a path; none builds one by hand.
"""

from __future__ import annotations

import os
import re

import pyarrow.fs as pafs

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TRUNK_SCHEDULE = "wsd-trunk"  # the `schedule` of a WSD trunk's row: the stable phase, not a budget of its own


def check_name(value: str, what: str) -> str:
    """Raise ValueError unless `value` is safe as a path component and a hive partition value."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r}: use letters, digits, '.', '_', '-' (not first)")
    return value


def is_local(results_dir: str) -> bool:
    """A plain path or file:// URI: a POSIX filesystem (leases, logs, tuning journals work there)."""
    return "://" not in results_dir or results_dir.startswith("file://")


def local_path(results_dir: str) -> str:
    return results_dir.removeprefix("file://")


def filesystem_for(results_dir: str) -> tuple[pafs.FileSystem, str]:
    """(file system, base path) of DIR."""
    if "://" in results_dir:
        return pafs.FileSystem.from_uri(results_dir)
    return pafs.LocalFileSystem(), os.path.abspath(results_dir)


def table_dir(results_dir: str, table: str) -> tuple[pafs.FileSystem, str]:
    """(file system, DIR/<table>) for table "trials" or "evals"."""
    fs, base = filesystem_for(results_dir)
    return fs, f"{base}/{table}"


def manifest_path(results_dir: str, sweep: str) -> tuple[pafs.FileSystem, str, str]:
    """(file system, DIR/manifests, DIR/manifests/<sweep>.json)."""
    fs, base = filesystem_for(results_dir)
    return fs, f"{base}/manifests", f"{base}/manifests/{check_name(sweep, 'sweep')}.json"


def tuning_dir(results_dir: str, sweep: str) -> str:
    return os.path.join(local_path(results_dir), "tuning", sweep)


def log_path(results_dir: str, sweep: str, trial_id: str) -> str | None:
    """DIR/logs/<sweep>/<trial_id>.log, or None where DIR is an object store (no logs there)."""
    return os.path.join(local_path(results_dir), "logs", sweep, f"{trial_id}.log") if is_local(results_dir) else None


def leases_dir(results_dir: str, sweep: str) -> str:
    if not is_local(results_dir):
        raise ValueError(f"leases need a POSIX filesystem, not {results_dir!r}; run a single driver")
    return os.path.join(os.path.abspath(local_path(results_dir)), "leases", check_name(sweep, "sweep"))


def checkpoints_dir(results_dir: str, sweep: str, checkpoint_dir: str | None = None) -> str:
    """Checkpoints of a sweep's trials: <checkpoint_dir or DIR/checkpoints>/<sweep>."""
    return os.path.join(checkpoint_dir or os.path.join(local_path(results_dir), "checkpoints"), sweep)
