"""Sweeps end to end on a real Ray, real Parquet and real training: no-op reruns, grid extension,
a killed worker, a killed driver, Ctrl-C, a `ray start` cluster, and bad specs."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from orchestrator.manifest import read_manifest
from orchestrator.spec import load_spec
from records.store import read_trials
from tests.conftest import TINY_VOCAB
from tiedattn.train import train
from tiedsweep.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def write_spec(
    path: Path,
    cache_dir: str,
    name: str = "t",
    variants=("QKV", "Q-K=V"),
    multipliers=(2, 4),
    train: str = "",
    schedule: str = "cosine",
    seeds=(0,),
    cpus: float = 1,
    sizes=("{ d_model = 32, n_layer = 1, n_head = 4 }",),
    n_evals: int = 3,
    extra: str = "",
) -> Path:
    """A tiny sweep on the tests' stdlib corpus; `train` and `extra` (e.g. a [tune] section) are TOML text."""
    path.write_text(f"""
name = "{name}"
[data]
corpus = "stdlib"
vocab_size = {TINY_VOCAB}
max_bytes = 1_500_000
cache_dir = "{cache_dir}"
[train]
batch_size = 8
n_evals = {n_evals}
eval_tokens = 2048
{train}
{extra}
[resources]
cpus = {cpus}
[grid]
variant = {json.dumps(list(variants))}
size = [{", ".join(sizes)}]
tokens_per_param = {json.dumps(list(multipliers))}
seq_len = [32]
seed = {json.dumps(list(seeds))}
schedule = ["{schedule}"]
""")
    return path


def _rows(results: Path, sweep: str, latest: bool = True) -> list[dict]:
    return read_trials(str(results), sweep, latest=latest).to_pylist()


def test_sweep_runs_once_and_extends(local_ray, cache_dir, tmp_path, capsys):
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "s.toml", cache_dir)
    assert main(["run", str(spec), "--results", str(results), "--quiet"]) == 0
    rows = _rows(results, "t")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert {r["variant"] for r in rows} == {"baseline", "tied_kv"}
    # Same token stream for a shape: the baseline's N sets every variant's budget.
    by_m = {}
    for r in rows:
        by_m.setdefault(r["tokens_per_param"], set()).add(r["tokens"])
    assert all(len(tokens) == 1 for tokens in by_m.values())
    assert all(r["git_sha"] and r["host"] and r["final_val_loss"] > 0 for r in rows)
    assert (results / "logs" / "t").is_dir() and len(list((results / "logs" / "t").glob("*.log"))) == 4

    capsys.readouterr()
    assert main(["run", str(spec), "--results", str(results), "--quiet"]) == 0  # a no-op
    assert "nothing to run" in capsys.readouterr().out
    assert len(_rows(results, "t", latest=False)) == 4

    write_spec(spec, cache_dir, multipliers=(2, 4, 8))  # one more column of the grid
    assert main(["run", str(spec), "--results", str(results), "--quiet"]) == 0
    rows = _rows(results, "t", latest=False)
    assert len(rows) == 6 and sorted(r["tokens_per_param"] for r in rows).count(8.0) == 2

    capsys.readouterr()
    assert main(["status", str(results), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["t"]
    assert status["totals"] == {"completed": 6} and status["tokens_left"] == 0

    # A refused run (resources no node has) writes nothing: the manifest, status and report stand.
    manifest = (results / "manifests" / "t.json").read_bytes()
    write_spec(tmp_path / "big.toml", cache_dir, cpus=64)
    assert main(["run", str(tmp_path / "big.toml"), "--results", str(results)]) == 2
    assert (results / "manifests" / "t.json").read_bytes() == manifest
    # An accepted spec that drops cells: their rows are still shown, as trials of an earlier spec.
    write_spec(spec, cache_dir, multipliers=(2,))
    assert main(["run", str(spec), "--results", str(results), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", str(results), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["t"]
    assert status["totals"] == {"completed": 2} and status["earlier"] == {"completed": 4}
    assert main(["status", str(results)]) == 0
    assert "earlier specs: 4 completed" in capsys.readouterr().out


def test_killed_worker_is_retried_and_resumes_exactly(local_ray, cache_dir, tmp_path):
    results = tmp_path / "results"
    spec = write_spec(
        tmp_path / "s.toml",
        cache_dir,
        name="kw",
        variants=("Q-K=V",),
        multipliers=(60,),
        train="checkpoint_every_s = 0.2",
    )
    sweep = load_spec(str(spec))
    (st,) = sweep.trials
    workdir = results / "checkpoints" / "kw" / st.trial_id
    runner = threading.Thread(target=main, args=(["run", str(spec), "--results", str(results), "--quiet"],))
    runner.start()
    deadline = time.time() + 120
    while not (workdir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # a few more checkpoints: the kill lands mid-training, not at step 0
    os.kill(int((workdir / "worker.pid").read_text()), signal.SIGKILL)
    runner.join(timeout=300)
    (row,) = _rows(results, "kw")
    assert row["status"] == "completed", row["error"]
    assert row["resumed_from_step"] and 0 < row["resumed_from_step"] < row["steps"]
    threads = torch.get_num_threads()
    try:  # the same trial, never killed, with the worker's thread count
        whole = train(dataclasses.replace(st.trial, train=dataclasses.replace(st.trial.train, threads=1)))
    finally:
        torch.set_num_threads(threads)
    assert abs(row["final_val_loss"] - whole.summary["final_val_loss"]) < 1e-6


def _driver(args: list[str], env: dict | None = None, preexec_fn=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tiedsweep", *args],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        preexec_fn=preexec_fn,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_killed_driver_then_resume_completes_each_trial_once(cache_dir, tmp_path):
    results = tmp_path / "results"
    spec = write_spec(
        tmp_path / "s.toml", cache_dir, name="kd", multipliers=(4, 30), seeds=(0, 1), train="checkpoint_every_s = 0.5"
    )
    driver = _driver(["run", str(spec), "--results", str(results), "--num-cpus", "2", "--quiet"])
    deadline = time.time() + 180
    while time.time() < deadline and not list((results / "trials").glob("*/*.parquet")):
        time.sleep(0.2)
    assert list((results / "trials").glob("*/*.parquet")), driver.communicate()[0]
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the embedded Ray it started, mid-sweep
    driver.wait()
    done_before = {r["trial_id"] for r in _rows(results, "kd") if r["status"] == "completed"}
    assert 0 < len(done_before) < 8
    out = subprocess.run(
        [sys.executable, "-m", "tiedsweep", "resume", str(results), "--num-cpus", "2", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = _rows(results, "kd", latest=False)
    completed = [r["trial_id"] for r in rows if r["status"] == "completed"]
    assert sorted(completed) == sorted(set(completed)) and len(completed) == 8  # each exactly once
    assert not any(r["trial_id"] in done_before for r in rows if r["attempt"] > 0)  # finished ones not re-run


def test_ctrl_c_checkpoints_and_records_interrupted(cache_dir, tmp_path):
    """The driver inherits SIGINT ignored, as a background job (`cmd &`) and some CI shells start it:
    the runner's own handler makes Ctrl-C work anyway (and the same handler serves a terminal)."""
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "s.toml", cache_dir, name="cc", variants=("QKV",), multipliers=(200,))
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    driver = _driver(["run", str(spec), "--results", str(results), "--num-cpus", "2"], preexec_fn=ignore_sigint)
    ckpt = next(iter([results / "checkpoints" / "cc"]))
    deadline = time.time() + 120
    while time.time() < deadline and not list(ckpt.glob("*/checkpoint.pt")):
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode == 1, out
    (row,) = _rows(results, "cc")
    assert row["status"] == "interrupted" and row["steps"] > 0, out
    assert not (ckpt / ".stop").exists()
    (_, (st,)) = read_manifest(str(results), "cc")
    assert st.trial_id == row["trial_id"]


def test_bad_spec_exit_2_nothing_submitted(tmp_path, cache_dir):
    spec = write_spec(tmp_path / "bad.toml", cache_dir, variants=("QKV", "Q-K=W"))
    text = spec.read_text().replace("batch_size = 8", "batch_size = 8\nbatch_sise = 4")
    spec.write_text(text.replace("tokens_per_param = [2, 4]", "tokens_per_param = [-1]"))
    out = subprocess.run(
        [sys.executable, "-m", "tiedsweep", "run", str(spec), "--results", str(tmp_path / "r")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) >= 3 and all(str(spec) in line for line in lines), out.stderr
    assert any("Q-K=W" in line for line in lines) and any("batch_sise" in line for line in lines)
    assert any("tokens_per_param" in line for line in lines)
    assert not (tmp_path / "r").exists()


def test_resources_no_node_has(local_ray, cache_dir, tmp_path, capsys):
    spec = write_spec(tmp_path / "big.toml", cache_dir, cpus=64)
    assert main(["run", str(spec), "--results", str(tmp_path / "r")]) == 2
    assert "no node has that" in capsys.readouterr().err
    assert not (tmp_path / "r" / "trials").exists()


@pytest.fixture
def ray_cluster(cache_dir, tmp_path):
    """A `ray start --head` cluster on 127.0.0.1 with token auth, stopped by its process group: never the
    global stop command, which would end every Ray process on the machine."""
    import secrets
    import socket

    ports = []
    for _ in range(4):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    gcs, dashboard, agent_http, agent_grpc = ports
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           # Ray resolves 127.0.0.1 to the host's network address unless this is off: keep it all on loopback.
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "TIEDSWEEP_CACHE": cache_dir}  # fmt: skip
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            # Not the default agent ports: another Ray on this machine (the tests' embedded one) holds them,
            # and a cluster whose job agent cannot bind refuses every submission ("No available agent").
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            "--disable-usage-stats",
            "--include-dashboard=true",
        ],
        env=env,
        start_new_session=True,
        stdout=open(tmp_path / "ray.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        probe = (
            f"from ray.job_submission import JobSubmissionClient as C; C('http://127.0.0.1:{dashboard}').list_jobs()"
        )
        deadline = time.time() + 120
        while subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0:
            if time.time() > deadline or head.poll() is not None:  # up when the Jobs API answers
                raise RuntimeError((tmp_path / "ray.log").read_text())
            time.sleep(1)
        yield env, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}"
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the cluster we started: its whole process group
        head.wait()


def test_ray_start_cluster_run_address_and_submit(ray_cluster, cache_dir, tmp_path):
    env, gcs, dashboard = ray_cluster
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "c.toml", cache_dir, name="cl", multipliers=(2,))
    # Without the cluster's token the driver is refused, with a hint.
    bad = subprocess.run([sys.executable, "-m", "tiedsweep", "run", str(spec), "--results", str(results),
                          "--address", gcs], cwd=ROOT, env={**env, "RAY_AUTH_TOKEN": "wrong"},
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "token" in bad.stderr.lower(), bad.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "tiedsweep", "run", str(spec), "--results", str(results),
                          "--address", gcs, "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert {r["status"] for r in _rows(results, "cl")} == {"completed"} and len(_rows(results, "cl")) == 2

    # submit: the spec must live in the uploaded working_dir, so put a copy under the repo for the test.
    spec_in_repo = ROOT / "sweeps" / f"_test_{os.getpid()}.toml"
    spec_in_repo.write_text(spec.read_text().replace('name = "cl"', 'name = "cl-submit"'))
    try:
        out = subprocess.run([sys.executable, "-m", "tiedsweep", "submit", str(spec_in_repo), "--address", dashboard,
                              "--results", str(results)], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=400)  # fmt: skip
    finally:
        spec_in_repo.unlink()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "SUCCEEDED" in out.stdout
    assert {r["status"] for r in _rows(results, "cl-submit")} == {"completed"}


def test_worker_refuses_a_corpus_other_than_the_sweeps(cache_dir, tmp_path):
    """A node whose corpus differs (another stdlib, edited files) must not train under the sweep's ids."""
    from orchestrator.execute import Paths, execute

    spec = write_spec(tmp_path / "s.toml", cache_dir, variants=("QKV",), multipliers=(2,))
    (st,) = load_spec(str(spec)).trials
    row, evals = execute(
        dataclasses.replace(st, corpus_fingerprint="0" * 16), 0, Paths(str(tmp_path / "w"), None, None)
    )
    assert row["status"] == "failed" and "not the same data" in row["error"] and evals == []


def test_two_drivers_on_one_results_dir_run_each_trial_once(cache_dir, tmp_path):
    """Both drivers also compact as they go (--compact-over 2), while the other writes and refreshes its
    index: one run covers the leases and compaction under a second writer (~70 s each on 2 cores)."""
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "s.toml", cache_dir, name="two", multipliers=(8, 12, 16))
    args = ["run", str(spec), "--results", str(results), "--num-cpus", "1", "--quiet", "--compact-over", "2"]
    first, second = _driver(args), _driver(args)
    outs = [d.communicate(timeout=400)[0] for d in (first, second)]
    assert first.returncode == second.returncode == 0, outs
    rows = _rows(results, "two", latest=False)
    assert sorted(r["trial_id"] for r in rows) == sorted({r["trial_id"] for r in rows}) and len(rows) == 6
    assert {r["status"] for r in rows} == {"completed"} and {r["attempt"] for r in rows} == {0}
    # A driver leases only what it can run now (1 slot each here), so both share the work.
    assert all(re.search(r"two: [1-6] completed", out) for out in outs), outs
    assert len(list((results / "trials" / "sweep=two").glob("*.parquet"))) <= 3


def test_progress_line_shows_the_running_trials_live_rate(tmp_path, capsys):
    """The live tok/s is the sum of the running trials' latest log rates (as execute._logger writes
    them); with none running, or no rate logged yet, the last finished trial's rate."""
    from orchestrator.execute import _logger
    from orchestrator.runner import _Progress

    logs = []
    for i, rate in enumerate((1200.0, 34.5)):
        log, _, progress = _logger(str(tmp_path / f"t{i}.log"))
        progress({"step": 3, "steps": 9, "loss": 5.0, "lr": 1e-3, "tokens_per_s": rate - 1000})
        progress({"step": 9, "steps": 9, "loss": 4.0, "lr": 1e-3, "tokens_per_s": rate})
        log.close()
        logs.append(str(tmp_path / f"t{i}.log"))
    shown = _Progress(total=4, flops_left=1e9, quiet=False)
    shown.logs = lambda: [*logs, str(tmp_path / "not-yet.log")]
    shown.show(running=3, force=True)
    assert "now 1,234 tok/s" in capsys.readouterr().err
    shown.done({"status": "completed", "tokens_per_s": 777.0}, 1e8)
    shown.show(running=0, force=True)
    assert "last 777 tok/s" in capsys.readouterr().err
