"""Trial leases on a real filesystem, raced by real processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from orchestrator.lease import (
    LeaseKeeper,
    acquire,
    heartbeat,
    leases_supported,
    new_owner,
    read_lease,
    release,
)

N_PROCS, N_TRIALS = 4, 20


def make_stale(d: str, sweep: str, trial_id: str, age_s: float) -> None:
    path = Path(d) / "leases" / sweep / f"{trial_id}.json"
    lease = json.loads(path.read_text())
    lease["heartbeat"] -= age_s
    path.write_text(json.dumps(lease))


def test_second_owner_refused(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert acquire(d, "s", "t", "A")
    assert not acquire(d, "s", "t", "B")
    assert acquire(d, "s", "t", "A")  # re-acquiring our own lease refreshes it
    assert read_lease(d, "s", "t").owner == "A"
    assert acquire(d, "s", "other", "B")  # leases are per trial
    assert acquire(d, "s2", "t", "B")  # and per sweep


def test_stale_lease_taken_over(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert acquire(d, "s", "t", "A", ttl_s=60)
    make_stale(d, "s", "t", age_s=30)
    assert not acquire(d, "s", "t", "B", ttl_s=60)  # 30 s old is still live
    make_stale(d, "s", "t", age_s=60)
    assert acquire(d, "s", "t", "B", ttl_s=60)
    assert read_lease(d, "s", "t").owner == "B"
    assert not heartbeat(d, "s", "t", "A")  # the old owner learns it lost the lease
    assert not release(d, "s", "t", "A")
    assert read_lease(d, "s", "t").owner == "B"


def test_corrupt_lease_taken_over_only_when_old(tmp_path: Path) -> None:
    d = str(tmp_path)
    acquire(d, "s", "t", "A")
    path = tmp_path / "leases" / "s" / "t.json"
    path.write_text("{trunc")
    assert not acquire(d, "s", "t", "B", ttl_s=60)
    old = time.time() - 120
    os.utime(path, (old, old))
    assert acquire(d, "s", "t", "B", ttl_s=60)


def test_release_only_by_owner(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert acquire(d, "s", "t", "A")
    assert not release(d, "s", "t", "B")
    assert read_lease(d, "s", "t").owner == "A"
    assert heartbeat(d, "s", "t", "A")
    assert release(d, "s", "t", "A")
    assert read_lease(d, "s", "t") is None
    assert not heartbeat(d, "s", "t", "A")
    assert acquire(d, "s", "t", "B")


def test_object_store_not_supported(tmp_path: Path) -> None:
    assert leases_supported(str(tmp_path)) and leases_supported(tmp_path.as_uri())
    assert not leases_supported("s3://bucket/results")
    with pytest.raises(ValueError, match="single driver"):
        acquire("s3://bucket/results", "s", "t", "A")
    assert acquire(tmp_path.as_uri(), "s", "t", "A")
    assert read_lease(str(tmp_path), "s", "t").owner == "A"


def _race(d: str, barrier: Barrier, results: mp.Queue) -> None:
    owner = new_owner()
    barrier.wait()  # start together so every acquire contends
    won = [t for t in range(N_TRIALS) if acquire(d, "s", f"t{t}", owner, ttl_s=60)]
    results.put((owner, won))


@pytest.mark.parametrize("stale_first", [False, True], ids=["fresh", "takeover"])
def test_process_race_gives_one_owner_per_trial(tmp_path: Path, stale_first: bool) -> None:
    d = str(tmp_path)
    if stale_first:  # every trial held by a dead driver: the race is over takeovers
        for t in range(N_TRIALS):
            acquire(d, "s", f"t{t}", "dead:1:0")
            make_stale(d, "s", f"t{t}", age_s=3600)
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(d, barrier, results)) for _ in range(N_PROCS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(timeout=20)
        assert p.exitcode == 0
    wins = Counter(t for _, won in outcomes for t in won)
    assert wins == Counter(range(N_TRIALS))  # every trial exactly once
    for owner, won in outcomes:
        assert all(read_lease(d, "s", f"t{t}").owner == owner for t in won)


def test_keeper_keeps_lease_fresh_beyond_ttl(tmp_path: Path) -> None:
    d, ttl = str(tmp_path), 0.4
    with LeaseKeeper(d, ttl_s=ttl) as keeper:
        assert keeper.acquire("s", "t")
        time.sleep(3 * ttl)
        assert not acquire(d, "s", "t", "B", ttl_s=ttl)
        assert keeper.held == {("s", "t")} and keeper.lost == set()
    assert read_lease(d, "s", "t") is None  # leaving the block released it
    assert acquire(d, "s", "t", "B", ttl_s=ttl)


def test_keeper_reports_lost_lease(tmp_path: Path) -> None:
    d, ttl = str(tmp_path), 0.4
    with LeaseKeeper(d, owner="A", ttl_s=ttl) as keeper:
        assert keeper.acquire("s", "t") and keeper.acquire("s", "u")
        assert keeper.held == {("s", "t"), ("s", "u")}
        make_stale(d, "s", "t", age_s=60)
        assert acquire(d, "s", "t", "B", ttl_s=ttl)  # e.g. the driver was suspended past ttl
        keeper.beat()
        assert keeper.lost == {("s", "t")} and keeper.held == {("s", "u")}
        keeper.release("s", "u")
        assert keeper.held == set()
    assert read_lease(d, "s", "t").owner == "B"  # exiting did not touch the lease it lost
    assert read_lease(d, "s", "u") is None


STATUS_SPEC = """
name = "st"
[data]
corpus = "stdlib"
vocab_size = 512
[grid]
variant = ["QKV", "Q-K=V"]
size = ["t1"]
tokens_per_param = [1, 2, 4]
"""


def test_status_counts_live_leases_as_running(tmp_path: Path) -> None:
    """status reads the leases that exist (one listing): a live owner's lease is a running trial, a
    dead driver's or a stale one is not, and a completed trial stays completed whatever its lease."""
    from orchestrator.manifest import write_manifest
    from orchestrator.spec import load_spec
    from orchestrator.status import format_status, sweep_status
    from records.store import write_attempt

    (tmp_path / "s.toml").write_text(STATUS_SPEC)
    sweep = load_spec(str(tmp_path / "s.toml"), fingerprint=False)
    d = str(tmp_path / "results")
    write_manifest(d, sweep, STATUS_SPEC)
    done, live, dead, stale, leased_done = sweep.trials[:5]
    for st, tokens in ((done, 1000), (leased_done, 10)):
        row = st.failed_row(0, None, status="completed") | {"tokens": tokens, "corpus_fingerprint": "f"}
        write_attempt(d, "st", row, [])
    me = new_owner()
    for st, owner in ((live, me), (dead, f"{me.split(':')[0]}:999999999:0badf00d"), (stale, me), (leased_done, me)):
        assert acquire(d, "st", st.trial_id, owner)
    make_stale(d, "st", stale.trial_id, age_s=3600)
    (Path(d) / "leases" / "st" / ".junk.tmp").write_text("{")  # a lease being written: not a trial
    status = sweep_status(d)["st"]
    assert status["totals"] == {"completed": 2, "running": 1, "pending": 3}
    assert status["tokens_done"] == 1010
    assert status["tokens_left"] == sum(st.trial.train.tokens for st in sweep.trials[1:4] + sweep.trials[5:])
    assert status["by_cell"]["baseline"]["d32l1h4f128"] == {"completed": 1, "running": 1, "pending": 1}
    assert "st: 6 trials: 2 completed, 1 running, 3 pending" in format_status({"st": status})
