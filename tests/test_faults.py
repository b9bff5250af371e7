"""The fault table: real faults (corrupted and truncated files, a full filesystem, a torn journal, a
killed node) injected into real components; each row counts trials lost and trials run twice.

| fault                                            | where                 | recovery                           |
|--------------------------------------------------|-----------------------|------------------------------------|
| checkpoint content corrupted (digest mismatch)   | tiedattn/train.py     | previous checkpoint, exact loss    |
| checkpoint and its previous one truncated        | tiedattn/train.py     | restart from step 0, exact loss    |
| filesystem full while checkpointing              | tiedattn/train.py     | no temp file left; resume          |
| token cache truncated / corrupted on disk        | tiedattn/data.py      | rebuilt under the lock, warned     |
| filesystem full while writing the token cache    | tiedattn/data.py      | no temp file left, path named      |
| Optuna journal: torn last record, glued record   | orchestrator/tune.py  | torn record dropped, warned        |
| corrupt / wrongly shaped lr.json                 | orchestrator/tune.py  | ignored unless the spec tunes: 2   |
| worker node killed mid-trial (two-node cluster)  | Ray + runner          | trials resume on the head          |

The figures (faults injected, trials lost, trials duplicated) are printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from records.store import read_trials
from tests.conftest import TINY_VOCAB
from tests.test_orchestrator import ray_cluster, write_spec  # noqa: F401 (ray_cluster: a fixture)
from tiedattn.data import prepare_data
from tiedattn.model import ModelConfig
from tiedattn.train import TrainConfig, Trial, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(d_model=32, n_layer=2, n_head=4, vocab_size=TINY_VOCAB, seq_len=32)
TABLE: list[tuple[str, int, int, int]] = []  # (fault, injected, trials lost, trials duplicated)


@pytest.fixture(scope="module", autouse=True)
def fault_table(request):
    yield
    if TABLE:
        with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            _print_table(request.config.pluginmanager.get_plugin("terminalreporter").write_line)


def _print_table(write) -> None:
    write("")
    write(f"{'fault':58} {'injected':>8} {'lost':>5} {'dup':>5}")
    for fault, injected, lost, dup in TABLE:
        write(f"{fault:58} {injected:8d} {lost:5d} {dup:5d}")
    totals = [sum(r[i] for r in TABLE) for i in (1, 2, 3)]
    write(f"{'total':58} {totals[0]:8d} {totals[1]:5d} {totals[2]:5d}")


def _trial(data, workdir: Path | None = None, **train_kw) -> Trial:
    kw = {"tokens": 16_384, "batch_size": 8, "lr": 1e-2, "threads": 1, "eval_tokens": 4096, "n_evals": 4}
    return Trial(TINY, TrainConfig(**{**kw, **train_kw}), data, workdir=str(workdir) if workdir else None)


@pytest.fixture(scope="module")
def whole(tiny_data):
    """The trial never stopped: every recovery below must end at its loss (1e-6)."""
    return train(_trial(tiny_data))


# ---------------------------------------------------------------- checkpoints


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tiny_data, tmp_path, whole):
    trial = _trial(tiny_data, tmp_path / "run")
    assert train(trial, stop=lambda step: step == 37).status == "interrupted"  # checkpoints at 16 (eval), 37
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert (tmp_path / "run" / "checkpoint.prev.pt").exists()
    # Silent corruption: a valid file whose weights changed (a flipped bit on disk), its digest unchanged.
    saved = torch.load(ckpt, weights_only=True)
    next(iter(saved["model"].values())).view(-1)[0] += 1.0
    torch.save(saved, ckpt)
    with pytest.warns(UserWarning, match="does not match its digest"):
        resumed = train(trial)
    s = resumed.summary
    assert resumed.status == "completed" and s["resumed_from_step"] == 16
    assert "checkpoint.prev.pt" in s["checkpoint_recovered"] and "corrupt" in s["checkpoint_recovered"]
    assert abs(s["final_val_loss"] - whole.summary["final_val_loss"]) < 1e-6
    assert (tmp_path / "run" / "checkpoint.pt.bad").exists()  # kept for a look, never rotated into use
    TABLE.append(("checkpoint content corrupted (digest)", 1, 0, 0))


def test_truncated_checkpoints_restart_the_trial(tiny_data, tmp_path, whole):
    trial = _trial(tiny_data, tmp_path / "run")
    train(trial, stop=lambda step: step == 37)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        path = tmp_path / "run" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        resumed = train(trial)
    s = resumed.summary
    assert resumed.status == "completed" and s["resumed_from_step"] is None
    assert s["checkpoint_recovered"].endswith("restarted from step 0")
    assert abs(s["final_val_loss"] - whole.summary["final_val_loss"]) < 1e-6
    TABLE.append(("checkpoint + previous truncated", 2, 0, 0))


_FILL_UP = """
def fill_up(path):  # unbuffered: a buffered file would fail again at close
    fd = os.open(path, os.O_CREAT | os.O_WRONLY)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError:
        pass
    os.close(fd)
"""
_FULL_DISK = """
import json, os, resource, signal, sys
from tiedattn.data import DataConfig
from tiedattn.model import ModelConfig
from tiedattn.train import TrainConfig, Trial, train

workdir, mode, data = sys.argv[1], sys.argv[2], DataConfig(**json.loads(sys.argv[3]))
model = ModelConfig(d_model=32, n_layer=2, n_head=4, vocab_size={vocab}, seq_len=32)
cfg = TrainConfig(tokens=16_384, batch_size=8, lr=1e-2, threads=1, eval_tokens=4096, n_evals=4, checkpoint_every_s=0)
trial = Trial(model, cfg, data, workdir=os.path.join(workdir, "run"))
filler = os.path.join(workdir, "filler")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # RLIMIT_FSIZE: a write past the limit fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

def fill(p):  # after step 20's checkpoint: the disk is full from here on
    if p["step"] != 20:
        return
    if mode == "tmpfs":
        fill_up(filler)
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))

try:
    train(trial, progress=fill)
    error = None
except OSError as e:
    error = str(e)
left = sorted(os.listdir(trial.workdir))
if mode == "tmpfs":
    os.unlink(filler)
else:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
result = train(trial)
print(json.dumps({{**result.summary, "full_error": error, "left": left, "status": result.status}}))
"""


def _in_tmpfs(
    script: str, args: list[str], workdir: Path, size: str = "16m"
) -> tuple[str, subprocess.CompletedProcess]:
    """Run `python -c script workdir MODE *args` on a real full-able filesystem: a small tmpfs in a
    private mount namespace (unshare; the mount vanishes with the process), else the same script
    with RLIMIT_FSIZE (writes fail with EFBIG) where mounting is not allowed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    python = [sys.executable, "-c", _FILL_UP + script]
    if shutil.which("unshare"):
        mount = f'mount -t tmpfs -o size={size} tmpfs {workdir} && exec "$0" "$@"'
        out = subprocess.run(["unshare", "-rm", "sh", "-c", mount, *python, str(workdir), "tmpfs", *args],
                             env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        if out.returncode == 0 or "Traceback" in out.stderr:
            return "tmpfs", out
    out = subprocess.run([*python, str(workdir), "fsize", *args], env=env, capture_output=True, text=True, timeout=300)
    return "fsize", out


def test_disk_full_while_checkpointing_leaves_no_temp_file(tiny_data, tmp_path, whole):
    prepare_data(tiny_data)  # the token cache lives outside the full filesystem
    data = json.dumps(dataclasses.asdict(tiny_data))
    (tmp_path / "fs").mkdir()
    mode, out = _in_tmpfs(_FULL_DISK.format(vocab=TINY_VOCAB), [data], tmp_path / "fs")
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.splitlines()[-1])
    assert "cannot write checkpoint" in r["full_error"] and "checkpoint.pt" in r["full_error"], r["full_error"]
    if mode == "tmpfs":
        assert "No space left" in r["full_error"] and "(0 bytes free there)" in r["full_error"]
    assert not [n for n in r["left"] if ".tmp-" in n], r["left"]  # the space the failure row needs is free
    assert r["status"] == "completed" and r["resumed_from_step"] == 20
    assert abs(r["final_val_loss"] - whole.summary["final_val_loss"]) < 1e-6
    TABLE.append((f"filesystem full while checkpointing ({mode})", 1, 0, 0))


# ---------------------------------------------------------------- token caches


@pytest.fixture
def small_data(tiny_data, tmp_path):
    """A cache of its own (the session's is shared): 200 kB of stdlib, a 300-token BPE."""
    return dataclasses.replace(tiny_data, max_bytes=200_000, vocab_size=300, cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_damaged_token_cache_is_rebuilt_never_used(small_data, damage):
    good = prepare_data(small_data)
    train_bin = Path(good.train.filename)
    expected = np.array(good.train)
    del good
    raw = bytearray(train_bin.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # same size, one token changed: only the checksum sees it
        raw[len(raw) // 3] ^= 0x01
    train_bin.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="token cache: .*(bytes, its metadata says|checksum).*rebuilding"):
        again = prepare_data(small_data)
    assert np.array_equal(np.array(again.train), expected)
    assert not list(Path(small_data.cache_dir).glob("*.tmp"))
    TABLE.append((f"token cache {damage} on disk", 1, 0, 0))


def test_damaged_tokenizer_is_trained_again(small_data):
    good = prepare_data(small_data)
    tok = Path(good.tokenizer_path)
    expected = np.array(good.train)
    tok.write_text(tok.read_text()[:100])
    with pytest.warns(UserWarning, match="tokenizer: cannot load .*training it again"):
        again = prepare_data(small_data)
    assert np.array_equal(np.array(again.train), expected)
    TABLE.append(("BPE tokenizer truncated on disk", 1, 0, 0))


_FULL_CACHE = """
import json, os, signal, resource, sys
from tiedattn.data import DataConfig, prepare_data
workdir, mode, data = sys.argv[1], sys.argv[2], DataConfig(**json.loads(sys.argv[3]))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
if mode == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    prepare_data(data)
    error = None
except OSError as e:
    error = str(e)
print(json.dumps({"error": error, "left": sorted(os.listdir(data.cache_dir))}))
"""


def test_disk_full_while_writing_the_token_cache(small_data, tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    data = json.dumps(dataclasses.asdict(dataclasses.replace(small_data, cache_dir=str(fs / "cache"))))
    mode, out = _in_tmpfs(_FULL_CACHE, [data], fs, size="128k")
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.splitlines()[-1])
    assert r["error"] and str(fs / "cache") in r["error"], r
    assert not [n for n in r["left"] if n.endswith(".tmp")], r["left"]
    TABLE.append((f"filesystem full while writing the token cache ({mode})", 1, 0, 0))


# ---------------------------------------------------------------- tuning files


def _journal(results: Path, sweep: str = "t") -> Path:
    """A real Optuna journal with one study of three finished trials, as `tune` leaves it."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from records.layout import tuning_dir
    from records.tuning import JOURNAL

    folder = Path(tuning_dir(str(results), sweep))
    folder.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
    study = optuna.create_study(study_name=f"{sweep}-QKV-d32l1h4", storage=store)
    study.set_user_attr("n_trials", 4)
    for lr in (1e-3, 3e-3, 1e-2):
        study.enqueue_trial({"lr": lr})
        study.optimize(lambda t: (math.log10(t.suggest_float("lr", 1e-4, 1e-1, log=True)) + 2.5) ** 2, n_trials=1)
    return folder / JOURNAL


def test_torn_journal_record_is_dropped_and_tuning_status_works(tmp_path, capsys):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from orchestrator.tune import tuning_status
    from tiedsweep.cli import main

    results = tmp_path / "results"
    path = _journal(results)
    whole = path.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    path.write_bytes(whole + last[: len(last) // 2])  # a driver killed mid-append: half a record
    # Another writer appends before anyone repairs it: its record is glued onto the torn one.
    name = "t-QKV-d32l1h4"
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))
    study.set_user_attr("note", "after the tear")
    with pytest.raises(ValueError):  # from here on, Optuna alone fails on every write: stuck for good
        study.set_user_attr("note", "and again")

    (study_status,) = tuning_status(str(results), "t")
    assert study_status["finished"] == 3 and study_status["best_lr"] == pytest.approx(3e-3)
    assert "dropped" in capsys.readouterr().err
    repaired = path.read_bytes()
    assert repaired.startswith(whole) and repaired.count(b"\n") == whole.count(b"\n") + 2  # both later records kept
    assert main(["status", str(results)]) == 0 and name in capsys.readouterr().out
    TABLE.append(("Optuna journal: torn record, then a glued append", 1, 0, 0))


def _spec_with_lr(tmp_path: Path, cache_dir: str, lr: str) -> Path:
    return write_spec(tmp_path / "s.toml", cache_dir, name="lrj", variants=("QKV",), multipliers=(2,), train=lr)


@pytest.mark.parametrize(
    "content", ['{"QKV": {"sizes": {"d32l1h4": {"lr": 0.003', '["QKV"]', '{"QKV": {"sizes": {"d32l1h4": {"lr": "x"}}}}']
)
def test_bad_lr_json_only_stops_specs_that_tune(tmp_path, cache_dir, content, capsys):
    from tiedsweep.cli import main

    results = tmp_path / "results"
    (results / "tuning" / "lrj").mkdir(parents=True)
    lr_json = results / "tuning" / "lrj" / "lr.json"
    lr_json.write_text(content)
    run = ["run", "--results", str(results), "--dry-run"]
    assert main([*run, str(_spec_with_lr(tmp_path, cache_dir, ""))]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ") and str(lr_json) in err, err
    assert main([*run, str(_spec_with_lr(tmp_path, cache_dir, 'lr = "tuned"'))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(lr_json) in err, err
    TABLE.append(("lr.json corrupt or wrongly shaped", 1, 0, 0))


# ---------------------------------------------------------------- tiedsweep fit on bad tables


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ("", "no usable rows (no rows)"),  # header only
        ("1e6,2e7,nan\n2e6,4e7,nan\n", "no usable rows (2 rows: 2 non-finite loss)"),
        ("1e6,2e7,3.1\n2e6,4e7,abc\n", "line 3: loss = 'abc' is not a number"),
        ("1e6,2e7,3.1\n-2e6,4e7,3.0\n", "line 3: N = -2e+06 is not a positive number"),
        ("1e6,2e7,3.1\n1e6,4e7,3.0\n", "variant all: chinchilla fit needs at least 6 points"),
    ],
)
def test_fit_refuses_unusable_tables_in_one_line(tmp_path, capsys, rows, says):
    from tiedsweep.cli import main

    table = tmp_path / "t.csv"
    table.write_text("N,D,loss\n" + rows)
    assert main(["fit", str(table), "--n-boot", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{table}: {says}" in err, err


def test_fit_refuses_n_boot_below_one(tmp_path, capsys):
    from tiedsweep.cli import main

    table = tmp_path / "t.csv"
    table.write_text("N,D,loss\n1e6,2e7,3.1\n")
    for n in ("0", "-3"):
        assert main(["fit", str(table), "--n-boot", n]) == 2
        assert f"--n-boot: must be >= 1, got {n}" in capsys.readouterr().err


# ---------------------------------------------------------------- security: Ray's sockets, submit's shell


def _listening(root_pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of root_pid and its descendants,
    read from /proc (Linux): the sockets' inodes in /proc/net/tcp{,6}, matched to each process's fds."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A":  # LISTEN
                hexip, port = f[1].split(":")
                raw = bytes.fromhex(hexip)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
                sockets[int(f[9])] = (str(ipaddress.ip_address(raw)), int(port, 16))
    found = []
    for pid in _descendants(root_pid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        found += [(name, *sockets[int(t[8:-1])]) for t in links if t.startswith("socket:[") and int(t[8:-1]) in sockets]
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


_EMBEDDED = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import ray
from orchestrator.raybackend.pool import connect
from tests.test_faults import _listening
connect(None, num_cpus=1)
ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker process too
time.sleep(1.0)  # agents bind a moment after start
print(json.dumps(_listening(os.getpid())))
ray.shutdown()
"""


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only(tmp_path):
    import secrets

    env = {**os.environ, "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # never writes ~/.ray/auth_token
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the runner sets it, not the caller
    out = subprocess.run([sys.executable, "-c", _EMBEDDED, str(ROOT)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    found = [tuple(s) for s in json.loads(out.stdout.splitlines()[-1])]
    names = {name for name, _, _ in found}
    assert {"gcs_server", "raylet"} <= names, found  # the servers are there, and were read
    assert [s for s in found if not _loopback(s[1])] == [], found


@pytest.mark.slow
def test_submit_quotes_paths_with_spaces_and_shell_metacharacters(ray_cluster, cache_dir, tmp_path):  # noqa: F811
    env, _, dashboard = ray_cluster
    # Unquoted, Ray's shell would run `touch .../PWNED` and split the results path at its spaces.
    results = Path(f"{tmp_path}/r dir; touch {tmp_path}/PWNED; #")
    spec = write_spec(tmp_path / "c.toml", cache_dir, name="quoted", variants=("QKV",), multipliers=(2,))
    spec_in_repo = ROOT / "sweeps" / f"_test {os.getpid()} it's $(touch PWNED2).toml"
    spec_in_repo.write_text(spec.read_text())
    try:
        out = subprocess.run([sys.executable, "-m", "tiedsweep", "submit", str(spec_in_repo), "--address", dashboard,
                              "--results", str(results)], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=400)  # fmt: skip
    finally:
        spec_in_repo.unlink()
    assert out.returncode == 0 and "SUCCEEDED" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert not (tmp_path / "PWNED").exists() and not (ROOT / "PWNED2").exists()
    assert [r["status"] for r in read_trials(str(results), "quoted").to_pylist()] == ["completed"]
    TABLE.append(("submit: metacharacters and spaces in paths", 1, 0, 0))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            children.setdefault(int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(
                int(d)
            )
        except OSError:
            pass
    found, todo = set(), [pid]
    while todo:
        found.add(p := todo.pop())
        todo += children.get(p, [])
    return found


@pytest.mark.slow
def test_worker_node_killed_mid_trial_resumes_on_the_head(cache_dir, tmp_path):
    """Two nodes on loopback addresses (`ray start`, token auth): the head 127.0.0.2 (1 CPU), a worker
    node 127.0.0.3 (2 CPUs). The worker node's whole process group is SIGKILLed while a trial it runs
    has a checkpoint: Ray re-runs that task on the head, which resumes from the checkpoint.
    127.0.0.2/3 rather than 127.0.0.1: Ray replaces 127.0.0.1 by the host's address on a cluster
    node, and a worker node refuses to start with the single-machine switch the embedded Ray uses."""
    import secrets

    port = _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "TIEDSWEEP_CACHE": cache_dir,
    }
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    # The GCS declares a silent node dead after 1 s x 3 missed health checks, not Ray's 3 s x 5.
    env |= {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    common = ["--block", "--disable-usage-stats", "--dashboard-agent-listen-port=0"]
    nodes = []

    def start(args: list[str], log: str) -> subprocess.Popen:
        nodes.append(subprocess.Popen([ray_bin, "start", *args, *common], env=env, start_new_session=True,
                                      stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT))  # fmt: skip
        return nodes[-1]

    results = tmp_path / "results"
    # m24/m32 (~1,200-1,600 steps) and a checkpoint every 0.25 s: at m8 and 0.5 s an idle machine once
    # finished the trial (~390 steps) between its first checkpoint and the kill: it completed on the
    # worker and nothing resumed. Now the kill lands ~850-1,000 steps before the end.
    spec = write_spec(tmp_path / "mn.toml", cache_dir, name="mn", variants=("QKV",), multipliers=(24, 32),
                      train="checkpoint_every_s = 0.25")  # fmt: skip
    try:
        start(
            ["--head", f"--port={port}", "--node-ip-address=127.0.0.2", "--num-cpus=1", "--include-dashboard=false"],
            "head.log",
        )
        worker = start([f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3", "--num-cpus=2"], "worker.log")
        probe = (
            f"import ray; ray.init(address='127.0.0.2:{port}'); assert len([n for n in ray.nodes() if n['Alive']]) == 2"
        )
        deadline = time.time() + 120
        while subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0:  # ~20 s
            assert time.time() < deadline and all(n.poll() is None for n in nodes), (
                tmp_path / "worker.log"
            ).read_text()
            time.sleep(2)
        driver = subprocess.Popen([sys.executable, "-m", "tiedsweep", "run", str(spec), "--results", str(results),
                                   "--address", f"127.0.0.2:{port}", "--quiet"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        on_worker = None
        deadline = time.time() + 180
        while on_worker is None and time.time() < deadline and driver.poll() is None:
            node_pids = _descendants(worker.pid)
            for workdir in (results / "checkpoints" / "mn").glob("*"):
                pid_file, ckpt = workdir / "worker.pid", workdir / "checkpoint.pt"
                if ckpt.exists() and pid_file.exists() and int(pid_file.read_text() or 0) in node_pids:
                    on_worker = workdir.name
            time.sleep(0.2)
        assert on_worker, "no trial ran on the worker node"
        # A checkpoint is written only after a step, so killing now is mid-trial (and at once: see above).
        os.killpg(worker.pid, signal.SIGKILL)  # the node: raylet, agents and its workers, not a machine-wide stop
        worker.wait()
        out, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0, out[-3000:]
    finally:
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
    rows = read_trials(str(results), "mn", latest=False).to_pylist()
    completed = [r["trial_id"] for r in rows if r["status"] == "completed"]
    lost, duplicated = 2 - len(set(completed)), len(completed) - len(set(completed))
    (moved,) = [r for r in rows if r["trial_id"] == on_worker and r["status"] == "completed"]
    assert moved["resumed_from_step"] and 0 < moved["resumed_from_step"] < moved["steps"], moved
    TABLE.append(("worker node killed mid-trial (two nodes)", 1, lost, duplicated))
    assert lost == 0 and duplicated == 0, rows


_FULL_LEASE = """
import json, os, resource, signal, sys
from orchestrator.lease import acquire, heartbeat, new_owner
workdir, mode = sys.argv[1], sys.argv[2]
results, owner = os.path.join(workdir, "results"), new_owner()
assert acquire(results, "s", "t0", owner)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
if mode == "tmpfs":
    fill_up(os.path.join(workdir, "filler"))
else:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
errors = []
for beat in range(3):  # three heartbeats on a full disk
    try:
        heartbeat(results, "s", "t0", owner)
    except OSError as e:
        errors.append(str(e))
folder = os.path.join(results, "leases", "s")
print(json.dumps({"errors": errors, "left": sorted(os.listdir(folder))}))
"""


def test_disk_full_lease_heartbeats_leave_no_temp_files(tmp_path):
    (tmp_path / "fs").mkdir()
    mode, out = _in_tmpfs(_FULL_LEASE, [], tmp_path / "fs", size="1m")
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.splitlines()[-1])
    assert len(r["errors"]) == 3 and all("writing the lease" in e and "t0" in e for e in r["errors"]), r
    assert not [n for n in r["left"] if n.endswith(".tmp")], r["left"]
    TABLE.append((f"filesystem full during lease heartbeats ({mode})", 3, 0, 0))


# ---------------------------------------------------------------- resume after a fault mid-sweep


def _once(rows: list[dict], n: int) -> tuple[int, int]:
    """(trials lost, trials duplicated) of a sweep of n trials: each must have one completed row."""
    completed = [r["trial_id"] for r in rows if r["status"] == "completed"]
    return n - len(set(completed)), len(completed) - len(set(completed))


_KILL_MID_WRITE = """
import os, signal, sys
import records.store as store

real = store._write_atomic

def write(filesystem, directory, name, table):
    real(filesystem, directory, name, table)
    if "/evals/" in directory:  # the attempt's evals file is on disk, its trials row (the commit) is not
        os.kill(os.getpid(), signal.SIGKILL)

store._write_atomic = write
from tiedsweep.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_driver_killed_mid_result_write_then_resume(local_ray, cache_dir, tmp_path):
    from records.store import read_evals
    from tiedsweep.cli import main

    results = tmp_path / "results"
    spec = write_spec(tmp_path / "s.toml", cache_dir, name="dw", variants=("QKV",), multipliers=(2,))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, "-c", _KILL_MID_WRITE, "run", str(spec), "--results", str(results),
                               "--num-cpus", "2", "--quiet"], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    out, _ = driver.communicate(timeout=300)
    with contextlib.suppress(ProcessLookupError):  # the embedded Ray it started
        os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == -signal.SIGKILL, out[-3000:]
    assert list((results / "evals").glob("*/*.parquet")) and not list((results / "trials").glob("*/*.parquet"))
    assert main(["resume", str(results), "--quiet"]) == 0
    rows = read_trials(str(results), "dw", latest=False).to_pylist()
    lost, duplicated = _once(rows, 1)
    TABLE.append(("driver killed mid result write, then resume", 1, lost, duplicated))
    assert lost == duplicated == 0 and len(rows) == 1, rows
    assert rows[0]["attempt"] == 1 and rows[0]["resumed_from_step"] == rows[0]["steps"], rows  # not trained again
    evals = read_evals(str(results), "dw").to_pylist()  # the torn attempt's evals are not read
    assert {(e["trial_id"], e["attempt"]) for e in evals} == {(r["trial_id"], r["attempt"]) for r in rows}


@pytest.mark.slow
def test_worker_killed_mid_checkpoint_write_resumes(local_ray, cache_dir, tmp_path):
    import threading

    from orchestrator.spec import load_spec
    from tiedsweep.cli import main

    results = tmp_path / "results"
    # A checkpoint every step: one is nearly always being written.
    spec = write_spec(tmp_path / "s.toml", cache_dir, name="wc", variants=("QKV",), multipliers=(1,),
                      train="checkpoint_every_s = 0")  # fmt: skip
    (st,) = load_spec(str(spec)).trials
    workdir = results / "checkpoints" / "wc" / st.trial_id
    runner = threading.Thread(target=main, args=(["run", str(spec), "--results", str(results), "--quiet"],))
    runner.start()
    killed, deadline = None, time.time() + 120
    while killed is None and runner.is_alive() and time.time() < deadline:
        with contextlib.suppress(FileNotFoundError):
            names = os.listdir(workdir)
            tmp = [n for n in names if ".pt.tmp-" in n]
            if tmp and "checkpoint.pt" in names:  # a save in progress, after a complete one
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(tmp[0].rsplit("-", 1)[1]), signal.SIGKILL)
                    killed = tmp[0]
        time.sleep(0.002)  # the worker needs the CPU more than this loop does
    runner.join(timeout=300)
    assert killed, "no checkpoint write was caught in progress"
    rows = read_trials(str(results), "wc", latest=False).to_pylist()
    lost, duplicated = _once(rows, 1)
    TABLE.append(("worker killed mid checkpoint write", 1, lost, duplicated))
    assert lost == duplicated == 0 and len(rows) == 1, rows
    assert rows[0]["resumed_from_step"], rows  # from the last complete checkpoint, not from scratch
    assert not [n for n in os.listdir(workdir) if ".tmp-" in n]  # the killed writer's temp file is gone
    log = (results / "logs" / "wc" / f"{st.trial_id}.log").read_text()
    assert log.count(" start ") == 2 and "resumed from step" in log, log


_FULL_RESULTS = """
import json, os, resource, signal, sys
import orchestrator.runner as runner
from records.store import read_trials
from tiedsweep.cli import main

workdir, mode, spec, ckpt = sys.argv[1:5]
results, filler = os.path.join(workdir, "results"), os.path.join(workdir, "filler")
runner.WRITE_RETRY_S = (0.1, 0.1)  # the driver gives up in 0.2 s, not ~15 s
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
real = runner.write_attempt

def write_attempt(*args, **kw):  # the results folder fills up once the first result is in
    name = real(*args, **kw)
    if not os.path.exists(filler):
        if mode == "tmpfs":
            fill_up(filler)
        else:
            open(filler, "w").close()
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    return name

runner.write_attempt = write_attempt
common = ["--checkpoint-dir", ckpt, "--num-cpus", "2", "--quiet"]
code = main(["run", spec, "--results", results, *common])
left = [os.path.join(d, n) for d, _, names in os.walk(results) for n in names if "tmp" in n]
os.unlink(filler)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
again = main(["resume", results, *common])
rows = read_trials(results, "full", latest=False).to_pylist()
print(json.dumps({"code": code, "again": again, "left": left,
                  "rows": [[r["trial_id"], r["attempt"], r["status"]] for r in rows]}))
"""


@pytest.mark.slow
def test_results_folder_full_then_resume(cache_dir, tmp_path):
    spec = write_spec(tmp_path / "s.toml", cache_dir, name="full", variants=("QKV",), multipliers=(2, 4))
    (tmp_path / "fs").mkdir()
    mode, out = _in_tmpfs(_FULL_RESULTS, [str(spec), str(tmp_path / "ckpt")], tmp_path / "fs", size="4m")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    r = json.loads(out.stdout.splitlines()[-1])
    error = [line for line in out.stderr.splitlines() if line.startswith("tiedsweep: error:")]
    assert r["code"] == 2 and len(error) == 1 and "tiedsweep resume" in error[0], out.stderr[-3000:]
    assert ("No space left" if mode == "tmpfs" else "too large") in error[0], error
    assert r["left"] == [] and r["again"] == 0, r
    rows = [{"trial_id": t, "attempt": a, "status": s} for t, a, s in r["rows"]]
    lost, duplicated = _once(rows, 2)
    TABLE.append((f"results folder full mid-sweep, then resume ({mode})", 1, lost, duplicated))
    assert lost == duplicated == 0, rows
