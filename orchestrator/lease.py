"""Trial leases: two drivers on one results directory never run the same trial at once.

A lease is DIR/leases/<sweep>/<trial_id>.json holding {"owner", "acquired_at", "heartbeat"}. Its
owner refreshes the heartbeat every ttl_s/4 (LeaseKeeper); anyone may take over a lease whose
heartbeat is older than ttl_s, because its driver is presumed dead. Every check-then-write
(acquire, heartbeat, release) runs under an exclusive flock on DIR/leases/<sweep>/.lock, so a
takeover cannot interleave with the owner's refresh or release. Lease files are replaced whole
(temp file + rename), so a reader never sees half a lease.

Leases need a POSIX filesystem whose flock holds across the drivers' hosts: a local disk, NFSv4
(Linux emulates flock with NFS byte-range locks) or Lustre mounted with `-o flock`. Object stores
(s3://, gs://) have no such lock: leases_supported() is False there and the orchestrator must run
one driver per results directory. Heartbeats are unix times compared across hosts, so ttl_s must
dwarf clock skew (NTP keeps it well under a second; the default ttl_s is 60).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from records.layout import check_name, is_local, leases_dir


@dataclass(frozen=True)
class Lease:
    owner: str  # host:pid:uuid8 of the driver holding it
    acquired_at: float  # unix seconds
    heartbeat: float  # unix seconds of the owner's last refresh


def new_owner() -> str:
    """A driver's owner id, host:pid:uuid8; the uuid keeps ids unique across pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def leases_supported(results_dir: str) -> bool:
    """True when results_dir is on a filesystem where leases work (a path or file:// URI)."""
    return is_local(results_dir)


def _path(results_dir: str, sweep: str, trial_id: str) -> str:
    return os.path.join(leases_dir(results_dir, sweep), f"{check_name(trial_id, 'trial_id')}.json")


@contextlib.contextmanager
def _locked(sweep_dir: str) -> Iterator[None]:
    os.makedirs(sweep_dir, exist_ok=True)
    fd = os.open(os.path.join(sweep_dir, ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, also if the process dies
        yield
    finally:
        os.close(fd)


def _read(path: str) -> Lease | None:
    try:
        with open(path) as f:
            return Lease(**json.load(f))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        # Unreadable (a disk filled mid-write, a hand edit): age it by mtime so it is taken over
        # once stale rather than blocking the trial forever.
        mtime = os.path.getmtime(path)
        return Lease(owner="", acquired_at=mtime, heartbeat=mtime)


def _write(path: str, lease: Lease) -> None:
    # The "." prefix keeps temp files out of listings of *.json leases.
    tmp = os.path.join(os.path.dirname(path), f".{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(lease), f)
        os.replace(tmp, path)
    except OSError as e:  # a full disk: a heartbeat every ttl_s/4 must not leave a temp file each time
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(e.errno, f"{e.strerror} (writing the lease '{path}')") from e


def owner_alive(owner: str) -> bool:
    """False only when the owner is a process on this host that no longer exists (a SIGKILLed
    driver): its lease is stale now, not ttl_s from now. Owners on other hosts count as alive."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lease(results_dir: str, sweep: str, trial_id: str) -> Lease | None:
    """The current lease on a trial, or None."""
    return _read(_path(results_dir, sweep, trial_id))


def read_leases(results_dir: str, sweep: str) -> dict[str, Lease]:
    """trial_id -> lease of every leased trial of a sweep: one listing, then only the leases there
    (status of 10^4 trials opened a path per unfinished trial)."""
    try:
        names = os.listdir(leases_dir(results_dir, sweep))
    except FileNotFoundError:
        return {}
    leases = {}
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            lease = _read(os.path.join(leases_dir(results_dir, sweep), name))
            if lease is not None:  # released between the listing and the read
                leases[name.removesuffix(".json")] = lease
    return leases


def acquire(results_dir: str, sweep: str, trial_id: str, owner: str, ttl_s: float = 60.0) -> bool:
    """Take the lease if it is free, stale (heartbeat older than ttl_s, or its owner a dead process
    on this host) or already ours."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s {ttl_s} <= 0")
    path = _path(results_dir, sweep, trial_id)
    with _locked(os.path.dirname(path)):
        current, now = _read(path), time.time()
        if current is None or now - current.heartbeat > ttl_s or not owner_alive(current.owner):
            _write(path, Lease(owner, acquired_at=now, heartbeat=now))
            return True
        if current.owner == owner:
            _write(path, Lease(owner, acquired_at=current.acquired_at, heartbeat=now))
            return True
        return False


def _if_ours(results_dir: str, sweep: str, trial_id: str, owner: str, action) -> bool:
    """Under the lock: action(path, lease) if the lease is ours; False (and nothing done) otherwise."""
    path = _path(results_dir, sweep, trial_id)
    with _locked(os.path.dirname(path)):
        current = _read(path)
        if current is None or current.owner != owner:
            return False
        action(path, current)
        return True


def heartbeat(results_dir: str, sweep: str, trial_id: str, owner: str) -> bool:
    """Refresh our lease; False (and nothing written) if it is gone or someone took it over."""
    refresh = lambda path, lease: _write(path, dataclasses.replace(lease, heartbeat=time.time()))  # noqa: E731
    return _if_ours(results_dir, sweep, trial_id, owner, refresh)


def release(results_dir: str, sweep: str, trial_id: str, owner: str) -> bool:
    """Remove the lease if it is ours; False (and nothing removed) otherwise."""
    return _if_ours(results_dir, sweep, trial_id, owner, lambda path, lease: os.remove(path))


class LeaseKeeper:
    """One driver's leases, heartbeaten from a daemon thread every ttl_s/4.

        with LeaseKeeper(results_dir) as keeper:
            if keeper.acquire(sweep, trial_id):
                ...run the trial...
                keeper.release(sweep, trial_id)

    Leaving the block stops the thread and releases the leases still held. A lease someone else
    took over (our heartbeats lapsed past ttl_s, e.g. the driver was suspended) moves from `held`
    to `lost`: another driver may now be running that trial too.
    """

    def __init__(self, results_dir: str, owner: str | None = None, ttl_s: float = 60.0) -> None:
        self.results_dir = results_dir
        self.owner = owner or new_owner()
        self.ttl_s = ttl_s
        self.held: set[tuple[str, str]] = set()
        self.lost: set[tuple[str, str]] = set()
        self._mutex = threading.Lock()  # guards held/lost between the driver and the thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def acquire(self, sweep: str, trial_id: str) -> bool:
        """Acquire a lease and keep it fresh until released."""
        if not acquire(self.results_dir, sweep, trial_id, self.owner, self.ttl_s):
            return False
        with self._mutex:
            self.held.add((sweep, trial_id))
            self.lost.discard((sweep, trial_id))
        return True

    def release(self, sweep: str, trial_id: str) -> None:
        """Stop heartbeating a lease, then remove it if it is still ours."""
        with self._mutex:
            self.held.discard((sweep, trial_id))
        release(self.results_dir, sweep, trial_id, self.owner)

    def beat(self) -> None:
        """Heartbeat every held lease once (the thread calls this every ttl_s/4)."""
        with self._mutex:
            keys = sorted(self.held)
        for key in keys:
            try:
                ours = heartbeat(self.results_dir, *key, self.owner)
            except OSError:
                # A transient shared-filesystem error: retry next beat. If the errors persist past
                # ttl_s the lease goes stale and the next successful beat reports it lost.
                continue
            if not ours:
                with self._mutex:
                    if key in self.held:  # not released by the driver meanwhile
                        self.held.discard(key)
                        self.lost.add(key)

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            self.beat()

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with self._mutex:
            keys = sorted(self.held)
        for key in keys:
            self.release(*key)
