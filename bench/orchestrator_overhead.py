"""Scheduling overhead of a sweep on the embedded Ray, and Parquet write/read times (a benchmark).

overhead = wall / (sum of the trials' own wall times / parallel slots) - 1, where a trial's own
wall time (row `wall_s`) runs from entering `train()` to its summary, so the overhead covers Ray
start-up, scheduling, process start, result transfer, Parquet writes and leases. Two sweeps: many
short trials (overhead dominates) and a few ~30 s trials (the goal there is < 5%).

Parquet: write N attempt rows one file each (as the driver does), read them back, compact, read again.

    .venv/bin/python bench/orchestrator_overhead.py [--short 16] [--long 4] [--rows 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orchestrator.raybackend.pool import RayPool, connect, shutdown
from orchestrator.runner import RunOptions, run_trials
from orchestrator.spec import load_spec
from records import store as results
from tiedattn.data import prepare_data

SPEC = """
name = "{name}"
[data]
corpus = "stdlib"
vocab_size = 512
max_bytes = 1_500_000
[train]
batch_size = 8
n_evals = 2
eval_tokens = 2048
[resources]
cpus = 1
[grid]
variant = ["QKV"]
size = [{{ d_model = 32, n_layer = 1, n_head = 4 }}]
tokens_per_param = {multipliers}
seq_len = [32]
"""


def sweep_overhead(tmp: str, name: str, multipliers: list[float], slots: int) -> dict:
    path = os.path.join(tmp, f"{name}.toml")
    with open(path, "w") as f:
        f.write(SPEC.format(name=name, multipliers=multipliers))
    sweep = load_spec(path)
    prepare_data(sweep.data)  # tokenized once, outside the timing
    out = os.path.join(tmp, "results")
    t0 = time.perf_counter()
    run_trials(name, sweep.trials, out, RunOptions(num_cpus=slots, quiet=True), "bench", RayPool(None, slots))
    wall = time.perf_counter() - t0
    rows = results.read_trials(out, name).to_pylist()
    busy = sum(r["wall_s"] for r in rows)
    return {
        "trials": len(rows),
        "mean_trial_s": busy / len(rows),
        "wall_s": wall,
        "ideal_s": busy / slots,
        "overhead": wall / (busy / slots) - 1,
    }


def parquet_times(tmp: str, n: int) -> dict:
    out = os.path.join(tmp, "parquet")
    row = {
        "trial_id": "x",
        "attempt": 0,
        "status": "completed",
        "variant": "baseline",
        "d_model": 64,
        "n_layer": 2,
        "n_head": 4,
        "d_ff": 256,
        "n_kv_head": 4,
        "vocab_size": 1024,
        "seq_len": 64,
        "pos": "rope",
        "norm": "layernorm",
        "bias": True,
        "tie_embeddings": True,
        "batch_size": 16,
        "lr": 3e-3,
        "schedule": "cosine",
        "warmup_frac": 0.05,
        "cooldown_frac": 0.2,
        "cooldown_shape": "1-sqrt",
        "weight_decay": 0.1,
        "seed": 0,
        "tokens_per_param": 10.0,
        "tokens_basis": "baseline",
        "n_basis": "non_embedding",
        "match": "none",
        "corpus": "stdlib",
        "corpus_fingerprint": "f",
        "final_val_loss": 4.0,
        "started_at": datetime.now(timezone.utc),
        "finished_at": datetime.now(timezone.utc),
    }
    evals = [{"step": s, "tokens": s * 1024, "train_loss": 4.0, "val_loss": 4.1, "lr": 1e-3} for s in range(8)]
    t0 = time.perf_counter()
    for i in range(n):
        results.write_attempt(out, "bench", {**row, "trial_id": f"t{i:05d}"}, evals)
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert results.read_trials(out, "bench").num_rows == n
    read = time.perf_counter() - t0
    t0 = time.perf_counter()
    results.compact(out)
    compact = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert results.read_trials(out, "bench").num_rows == n
    read_compacted = time.perf_counter() - t0
    return {
        "rows": n,
        "write_ms_per_attempt": 1e3 * write / n,
        "read_s": read,
        "compact_s": compact,
        "read_compacted_s": read_compacted,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", type=int, default=16, help="short trials (~2 s)")
    p.add_argument("--long", type=int, default=4, help="long trials (~30 s on a quiet 2-core machine)")
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        connect(None, args.slots)  # Ray start-up, timed apart from the sweeps' scheduling overhead
        startup = time.perf_counter() - t0
        # Distinct multipliers give distinct trials; 12.8k non-embedding params x M tokens each.
        short = sweep_overhead(tmp, "short", [4 + 0.01 * i for i in range(args.short)], args.slots)
        long = sweep_overhead(tmp, "long", [200 + 0.01 * i for i in range(args.long)], args.slots)
        shutdown()
        parquet = parquet_times(tmp, args.rows)
    out = {"ray_startup_s": startup, "short": short, "long": long, "parquet": parquet}
    if args.json:
        print(json.dumps(out))
        return
    print(f"embedded Ray start-up: {startup:.1f} s (once per driver, not counted below)")
    for name, s in (("short", short), ("long", long)):
        print(
            f"{name:>5}: {s['trials']} trials of {s['mean_trial_s']:.1f} s on {args.slots} slots: wall "
            f"{s['wall_s']:.1f} s vs ideal {s['ideal_s']:.1f} s -> overhead {s['overhead']:+.1%}"
        )
    q = parquet
    print(
        f"parquet: {q['rows']} attempts written at {q['write_ms_per_attempt']:.1f} ms each; read {q['read_s']:.2f} s;"
        f" compact {q['compact_s']:.2f} s; read after compaction {q['read_compacted_s']:.3f} s"
    )


if __name__ == "__main__":
    main()
