"""The driver's bookkeeping per trial as a sweep grows, and the dry run of a large grid (a benchmark).

Bookkeeping: a results partition already holding n trials (one compacted file, as the driver's
auto-compaction leaves it, written with the real schema and writer), then W more trials recorded as
the driver records them: refresh the index (list, read new names), number the attempt, write the
row with write_attempt, note it in the index, compact past `--compact-over` files. W > compact_over,
so each figure includes one compaction. Per trial = the loop's wall time / W.

Dry run: `tiedsweep run SPEC --dry-run` of a grid of ~n trials as a whole command (interpreter start
included), the corpus tokenized once beforehand.

    .venv/bin/python bench/many_trials.py [--sizes 100 1000 10000] [--window 300] [--dry-run 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow.parquet as pq

from orchestrator.runner import _MERGED_MAX
from records import store
from records.index import TrialIndex
from records.schema import EVALS_SCHEMA, TRIALS_SCHEMA
from tests.test_results import evals, trial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prefill(results: str, n: int) -> None:
    """n completed trials (3 eval rows each) in one compacted file per table, as auto-compaction leaves them."""
    rows = [trial(f"t{i:06d}") for i in range(n)]
    for row in rows:
        row["schema_version"] = store.SCHEMA_VERSION
        for c in ("started_at", "finished_at"):
            row[c] = store._timestamp(row[c], c)
    tables = {
        "trials": store._to_table(rows, TRIALS_SCHEMA, "trial row"),
        "evals": store._to_table(
            [{**e, "trial_id": r["trial_id"], "attempt": 0} for r in rows for e in evals(3)], EVALS_SCHEMA, "eval row"
        ),
    }
    for name, table in tables.items():
        directory = os.path.join(results, name, "sweep=b")
        os.makedirs(directory)
        pq.write_table(table, os.path.join(directory, f"part-compacted-{uuid.uuid4().hex[:8]}.parquet"))


def bookkeeping(n: int, window: int, compact_over: int) -> dict:
    with tempfile.TemporaryDirectory() as results:
        prefill(results, n)
        index = TrialIndex(results, "b")
        t0 = time.perf_counter()
        index.refresh()  # once per driver start
        start_s = time.perf_counter() - t0
        compactions, writing = 0, 0.0
        t0 = time.perf_counter()
        for i in range(window):
            trial_id = f"new{i:06d}"
            index.refresh()
            attempt = index.next_attempt(trial_id)
            w0 = time.perf_counter()
            name = store.write_attempt(results, "b", trial(trial_id, attempt), evals(3))
            writing += time.perf_counter() - w0
            index.add(trial_id, attempt, "completed", None, [name])
            if index.part_files()[0] > compact_over:  # as orchestrator.runner._SweepRun.record
                index.refresh()
                parts, merged = index.part_files()
                if parts > compact_over:
                    store.compact(results, "b", parts_only=merged < _MERGED_MAX)
                    compactions += 1
        per_trial = (time.perf_counter() - t0 - writing) / window
        assert len(index.latest) == n + window
    return {"n": n, "start_s": start_s, "per_trial_ms": per_trial * 1e3, "write_ms": writing / window * 1e3,
            "compactions": compactions}  # fmt: skip


def big_spec(path: str, n: int, cache_dir: str) -> int:
    """A spec of ~n trials: 6 variants x 6 sizes x 6 budgets x n/216 seeds. Returns its trial count."""
    seeds = max(1, round(n / 216))
    with open(path, "w") as f:
        f.write(f"""
name = "big"
[data]
corpus = "stdlib"
vocab_size = 512
max_bytes = 1_500_000
cache_dir = "{cache_dir}"
[train]
batch_size = 8
[resources]
cpus = 1
[grid]
variant = ["QKV", "Q-K=V", "Q=K-V", "Q=K=V", "GQA-4", "Q-GQA-4"]
size = ["10M", "20M", "40M", "85M", "150M", "300M"]
tokens_per_param = [1, 5, 20, 100, 300, 1000]
seq_len = [1024]
seed = {list(range(seeds))}
""")
    return 216 * seeds


def dry_run(n: int, tmp: str) -> dict:
    from tiedattn.data import DataConfig, prepare_data

    cache = os.path.join(tmp, "cache")
    prepare_data(DataConfig(corpus="stdlib", vocab_size=512, max_bytes=1_500_000, cache_dir=cache))
    spec = os.path.join(tmp, f"big{n}.toml")
    trials = big_spec(spec, n, cache)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tiedsweep", "run", spec, "--dry-run"], cwd=ROOT, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return {"trials": trials, "wall_s": time.perf_counter() - t0, "stdout_bytes": len(out.stdout)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--window", type=int, default=300, help="trials recorded per size (> --compact-over)")
    p.add_argument("--compact-over", type=int, default=256)
    p.add_argument("--dry-run", type=int, nargs="*", default=[100000], help="grid sizes to dry-run")
    args = p.parse_args()
    base = None
    for n in args.sizes:
        r = bookkeeping(n, args.window, args.compact_over)
        base = base or r["per_trial_ms"]
        print(f"bookkeeping, {n:>6} trials in the sweep: {r['per_trial_ms']:6.2f} ms/trial "
              f"({r['per_trial_ms'] / base:.2f}x of {args.sizes[0]}; {r['compactions']} compaction(s) in "
              f"{args.window} trials; write_attempt itself {r['write_ms']:.1f} ms/trial, not counted), "
              f"index fill at start {r['start_s']:.3f} s", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.dry_run:
            r = dry_run(n, tmp)
            print(f"dry run, {r['trials']:>7} trials: {r['wall_s']:.1f} s (whole command), "
                  f"{r['stdout_bytes'] / 1e6:.2f} MB printed", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
