"""The orchestrator as a sweep grows to 10^4-10^6 trials (a benchmark; issue 13's done-when).

bookkeeping: a results partition already holding n trials (one compacted file, as the driver's
auto-compaction leaves it, written with the real schema and writer), then W more trials recorded as
the driver records them: refresh the index (list, read new names), number the attempt, write the
row with write_attempt, note it in the index, compact past `--compact-over` files. W > compact_over,
so each figure includes one compaction. Per trial = the loop's wall time / W.

ids: records.ids.TrialIds (the grid's path) against trial_id() (the definition) on the trials of a
10^4-trial grid, in one process, side by side.

dry run: `tiedsweep run SPEC --dry-run` of a grid of ~n trials as a whole command (interpreter start
included; the corpus tokenized once beforehand). status: `tiedsweep status DIR` of a ~10^4-trial
sweep, 70% completed (one compacted trials file), two trials leased. Both print wall and CPU time
(user + sys of the command): wall follows the machine's load, CPU much less. --against DIR runs the
same commands with the code of another checkout (e.g. `git worktree add /tmp/main main`) beside.
Dry run 10^5, CPU s, side by side with main (113ceba), machine busy (two runs, load 3.3-3.5 on 2
cores; README): 1.8-2.0 s CPU, 1.9-2.1 s wall vs 3.5-4.3 s, 3.6-4.6 s (ids made when first read).
Status 10^4, two runs at load 7-8: 1.4-1.5 s CPU, 3.6-4.1 s wall.

sweep: `--sweeps 50 1000` runs sweeps of that many tiny trials (~0.1 s of training each) on one
embedded Ray (started once, its workers warmed up by a first small sweep, neither timed) with the
real runner; per trial = wall / trials, and the rest = that - the trials' mean train() wall_s /
slots (Ray, process hand-offs, the driver's bookkeeping, writes): the load shifts train() between
sweeps run one after the other. Minutes.

    .venv/bin/python bench/many_trials.py [--sizes 100 1000 10000] [--window 300] [--dry-run 100000]
        [--status 10000] [--against DIR] [--sweeps 50 1000] [--slots 2]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _command(args: list[str], tree: str) -> dict:
    """A `tiedsweep` command run whole in a new interpreter with `tree`'s code: wall, CPU, stdout size."""
    env = {**os.environ, "PYTHONPATH": tree}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tiedsweep", *args], cwd=tree, env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "stdout_bytes": len(out.stdout)}


def dry_run(n: int, tmp: str, tree: str) -> dict:
    from tiedattn.data import DataConfig, prepare_data

    cache = os.path.join(tmp, "cache")
    prepare_data(DataConfig(corpus="stdlib", vocab_size=512, max_bytes=1_500_000, cache_dir=cache))
    spec = os.path.join(tmp, f"big{n}.toml")
    trials = big_spec(spec, n, cache)
    return {"trials": trials, **_command(["run", spec, "--dry-run"], tree)}


def ids(n: int, tmp: str) -> dict:
    from orchestrator.spec import load_spec
    from records.ids import TrialIds, data_key, trial_id

    spec = os.path.join(tmp, f"ids{n}.toml")
    big_spec(spec, n, os.path.join(tmp, "cache"))
    sweep = load_spec(spec, fingerprint=False)
    times = {}
    for name in ("trial_id", "TrialIds"):
        fast = TrialIds(data_key(sweep.data, None))
        t0 = time.process_time()
        for st in sweep.trials:
            t = st.trial
            if name == "TrialIds":
                got = fast.trial(t.model, t.train, st.budget, shape_id=st.shape_id)
            else:
                got = trial_id(t.model, t.train, data_key(t.data, None), st.budget, shape_id=st.shape_id)
            assert got == st.trial_id
        times[name] = (time.process_time() - t0) / len(sweep.trials) * 1e6
    return {"trials": len(sweep.trials), **times}


def status_dir(n: int, tmp: str) -> str:
    """A results directory of a ~n-trial sweep: its manifest, 70% completed rows, 2 fresh leases."""
    from orchestrator.lease import acquire, new_owner
    from orchestrator.manifest import write_manifest
    from orchestrator.spec import load_spec

    spec = os.path.join(tmp, f"status{n}.toml")
    big_spec(spec, n, os.path.join(tmp, "cache"))
    sweep = load_spec(spec, fingerprint=False)
    results = os.path.join(tmp, f"status{n}")
    with open(spec) as f:
        write_manifest(results, sweep, f.read())
    done = sweep.trials[: len(sweep.trials) * 7 // 10]
    rows = [trial(st.trial_id, wall_s=10.0, flops=st.flops, tokens=st.trial.train.tokens) for st in done]
    for row in rows:
        row["schema_version"] = store.SCHEMA_VERSION
        for c in ("started_at", "finished_at"):
            row[c] = store._timestamp(row[c], c)
    directory = os.path.join(results, "trials", f"sweep={sweep.name}")
    os.makedirs(directory)
    table = store._to_table(rows, TRIALS_SCHEMA, "trial row")
    pq.write_table(table, os.path.join(directory, f"part-compacted-{uuid.uuid4().hex[:8]}.parquet"))
    owner = new_owner()  # this process: alive while the status runs, so both count as running
    for st in sweep.trials[-2:]:
        acquire(results, sweep.name, st.trial_id, owner)
    return results


SWEEP = """
name = "{name}"
[data]
corpus = "stdlib"
vocab_size = 512
max_bytes = 1_500_000
cache_dir = "{cache}"
[train]
batch_size = 8
n_evals = 1
eval_tokens = 1024
compile = false
[resources]
cpus = 1
[grid]
variant = ["QKV"]
size = [{{ d_model = 32, n_layer = 1, n_head = 4 }}]
tokens_per_param = [0.1]
seq_len = [32]
seed = {seeds}
"""


def sweep_wall(n: int, tmp: str, slots: int, name: str = "s") -> dict:
    """A sweep of n tiny trials (12.8k params x 0.1 tokens each: 5 steps of 8 x 32) through the runner on the
    embedded Ray that the caller started; wall per trial, and the trials' own mean wall_s."""
    from orchestrator.raybackend.pool import RayPool
    from orchestrator.runner import RunOptions, run_trials
    from orchestrator.spec import load_spec

    spec = os.path.join(tmp, f"{name}{n}.toml")
    with open(spec, "w") as f:
        f.write(SWEEP.format(name=f"{name}{n}", cache=os.path.join(tmp, "cache"), seeds=list(range(n))))
    sweep = load_spec(spec)
    out = os.path.join(tmp, f"{name}{n}")
    t0 = time.perf_counter()
    counts = run_trials(sweep.name, sweep.trials, out, RunOptions(num_cpus=slots, quiet=True), "bench",
                        RayPool(None, slots))  # fmt: skip
    wall = time.perf_counter() - t0
    rows = store.read_trials(out, sweep.name).select(["status", "wall_s"]).to_pylist()
    assert len(rows) == n and {r["status"] for r in rows} == {"completed"}, counts
    return {"trials": n, "wall_s": wall, "per_trial_s": wall / n, "train_s": sum(r["wall_s"] for r in rows) / n}


def _vs(r: dict, base: dict | None) -> str:
    if base is None:
        return ""
    return (f"; --against: {base['wall_s']:.1f} s wall, {base['cpu_s']:.1f} s CPU "
            f"({base['cpu_s'] / r['cpu_s']:.1f}x this CPU)")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 10000], help="bookkeeping: trials in the sweep")
    p.add_argument("--window", type=int, default=300, help="trials recorded per size (> --compact-over)")
    p.add_argument("--compact-over", type=int, default=256)
    p.add_argument("--ids", type=int, default=10000, help="grid size for ids (0: skip)")
    p.add_argument("--dry-run", type=int, nargs="*", default=[100000], help="grid sizes to dry-run")
    p.add_argument("--status", type=int, nargs="*", default=[10000], help="sweep sizes for status")
    p.add_argument("--against", default=None, help="another checkout: its dry run and status beside these")
    p.add_argument("--sweeps", type=int, nargs="*", default=[], help="sweeps of tiny trials, e.g. 50 1000")
    p.add_argument("--slots", type=int, default=2, help="--sweeps: embedded Ray CPUs")
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    base = None
    for n in args.sizes:
        r = bookkeeping(n, args.window, args.compact_over)
        base = base or r["per_trial_ms"]
        print(f"bookkeeping, {n:>6} trials in the sweep: {r['per_trial_ms']:6.2f} ms/trial "
              f"({r['per_trial_ms'] / base:.2f}x of {args.sizes[0]}; {r['compactions']} compaction(s) in "
              f"{args.window} trials; write_attempt itself {r['write_ms']:.1f} ms/trial, not counted), "
              f"index fill at start {r['start_s']:.3f} s", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        from tiedattn.data import DataConfig, prepare_data

        prepare_data(DataConfig(corpus="stdlib", vocab_size=512, max_bytes=1_500_000,
                                cache_dir=os.path.join(tmp, "cache")))  # fmt: skip
        if args.ids:
            r = ids(args.ids, tmp)
            ratio = r["trial_id"] / r["TrialIds"]
            print(f"ids of {r['trials']} trials: TrialIds {r['TrialIds']:.1f} us CPU per id, trial_id() "
                  f"{r['trial_id']:.1f} us ({ratio:.1f}x), the same strings", flush=True)  # fmt: skip
        for n in args.dry_run:
            r = dry_run(n, tmp, ROOT)
            other = dry_run(n, tmp, args.against) if args.against else None
            print(f"dry run, {r['trials']:>7} trials: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU (whole "
                  f"command), {r['stdout_bytes'] / 1e6:.2f} MB printed{_vs(r, other)}", flush=True)  # fmt: skip
        for n in args.status:
            results = status_dir(n, tmp)
            r = _command(["status", results], ROOT)
            other = _command(["status", results], args.against) if args.against else None
            print(f"status, {n} trials (70% completed): {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU (whole "
                  f"command){_vs(r, other)}", flush=True)  # fmt: skip
        if args.sweeps:
            from orchestrator.raybackend.pool import connect, shutdown

            os.environ["TIEDSWEEP_CACHE"] = os.path.join(tmp, "cache")  # the workers' token cache
            connect(None, args.slots)  # start-up once, not timed
            sweep_wall(2 * args.slots, tmp, args.slots, "warm")  # the workers' start-up (torch import) too
            first = None
            for n in args.sweeps:
                r = sweep_wall(n, tmp, args.slots)
                r["driver_s"] = r["per_trial_s"] - r["train_s"] / args.slots  # what is not the trials' train()
                first = first or r
                print(f"sweep of {n:>5} tiny trials on {args.slots} slots: {r['per_trial_s']:.3f} s wall per trial "
                      f"({r['per_trial_s'] / first['per_trial_s']:.2f}x of {first['trials']}); the trials' own "
                      f"train() {r['train_s']:.3f} s each; the rest {r['driver_s']:.3f} s per trial "
                      f"({r['driver_s'] / first['driver_s']:.2f}x)", flush=True)  # fmt: skip
            shutdown()


if __name__ == "__main__":
    main()
