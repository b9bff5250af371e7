"""The GPU path measured in one prepared run that fits in 10 minutes of one GPU (an H200 in mind).

    timeout 600 .venv/bin/python bench/gpu_check.py [--json] > gpu_check.json

Parts, each skipped (and said so) when the time left cannot fit it:
  1. bench/cuda_check.py at a 10M shape: flash SDPA, bf16 autocast + fused AdamW, eager and compiled,
     exact-enough resume (its own tolerance);
  2. MFU of the 10M, 85M and 300M ladder shapes (orchestrator/ladder.py) trained with bf16 + compile:
     steady tokens/s between the trainer's loss reads after compiling, times accounting's
     FLOPs/token, over the device peak (accounting.PEAK_TFLOPS_BF16 by name, or --peak-tflops);
  3. a 16-trial mini sweep packed on the GPU with gpus = 0.0625 per trial (`tiedsweep run`): its wall
     time against the sum of its trials' wall times;
  4. with more than one GPU, one trial on 2 Ray Train workers (NCCL) against 1 worker: tokens/s and
     final val loss.
Without CUDA it prints {"skipped": "..."} and exits 0, so CI can run it anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from orchestrator.ladder import LADDER
from records.store import read_trials
from tiedattn.data import DataConfig
from tiedattn.model import ModelConfig
from tiedattn.train import TrainConfig, Trial, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_S = 570  # of the 600 s a run may take: the rest for start-up and writing out
DATA = DataConfig(vocab_size=8192, max_bytes=64_000_000)  # as bench/cuda_check.py: one token cache for both
PY = sys.executable
MFU_TOKENS = {"10M": 30_000_000, "85M": 12_000_000, "300M": 5_000_000}  # ~30-60 s each at 40% of an H200
SWEEP = """
name = "gpu-pack"
[data]
corpus = "stdlib"
vocab_size = 8192
max_bytes = 64_000_000
[train]
batch_size = 32
n_evals = 2
eval_tokens = 65536
[resources]
cpus = 0.5
gpus = 0.0625  # 16 trials share one GPU
[grid]
variant = ["QKV", "Q-K=V", "Q=K=V", "GQA-4"]
size = ["t3", "t4"]
tokens_per_param = [10, 20]  # 1M-6.7M tokens a trial
seq_len = [512]
"""


def cuda_check(left: float) -> dict:
    cmd = [PY, os.path.join(ROOT, "bench", "cuda_check.py"), "--d-model", "384", "--n-layer", "6", "--n-head", "8"]
    cmd += ["--tokens", "8000000", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=left, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr[-2000:]}


def mfu(size: str, peak_tflops: float | None) -> dict:
    model = ModelConfig(**LADDER[size], vocab_size=8192, seq_len=1024)
    tcfg = TrainConfig(tokens=MFU_TOKENS[size], batch_size=32, lr=6e-4, n_evals=2, eval_tokens=131_072, compile=True)
    tcfg = dataclasses.replace(tcfg, peak_tflops=peak_tflops)
    reads: list[tuple[float, int]] = []
    s = train(Trial(model, tcfg, DATA), progress=lambda p: reads.append((time.time(), p["step"]))).summary
    (t0, s0), (t1, s1) = reads[len(reads) // 2], reads[-1]  # the second half: compiled and warm
    steady = (s1 - s0) * tcfg.batch_size * 1024 / (t1 - t0) if s1 > s0 else None
    peak = s["flops_per_s"] / s["mfu"] if s["mfu"] else None
    return {
        "status": s["status"],
        "compiled": s["compiled"],
        "tokens_per_s_steady": steady,
        "mfu_steady": steady * s["flops_per_token"] / peak if peak and steady else None,
        "mfu_whole_run": s["mfu"],  # compile and evals included
        "final_val_loss": s["final_val_loss"],
        "wall_s": s["wall_s"],
    }


def packed_sweep(left: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "pack.toml")
        open(spec, "w").write(SWEEP)
        t0 = time.time()
        cmd = [PY, "-m", "tiedsweep", "run", spec, "--results", os.path.join(tmp, "results"), "--quiet"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=left, check=False, cwd=ROOT)
        wall = time.time() - t0
        rows = read_trials(os.path.join(tmp, "results"), "gpu-pack").to_pylist() if out.returncode == 0 else []
    done = [r for r in rows if r["status"] == "completed"]
    return {
        "rc": out.returncode,
        "trials": len(rows),
        "completed": len(done),
        "sweep_wall_s": wall,
        "sum_trial_wall_s": sum(r["wall_s"] for r in done),
        "packing": sum(r["wall_s"] for r in done) / wall if done else None,
        "stderr_tail": out.stderr[-1500:] if out.returncode else None,
    }


def ddp_two_gpus() -> dict:
    from orchestrator.raybackend.ddp import train_ddp

    model = ModelConfig(**LADDER["85M"], vocab_size=8192, seq_len=1024)
    trial = Trial(model, TrainConfig(tokens=6_000_000, batch_size=32, lr=6e-4, n_evals=2, compile=True), DATA)
    one, two = train(trial).summary, train_ddp(trial, 2, cpus=4, gpus=1).summary
    return {
        "tokens_per_s_1": one["tokens_per_s"],
        "tokens_per_s_2": two["tokens_per_s"],
        "speedup": two["tokens_per_s"] / one["tokens_per_s"],
        "val_loss_1": one["final_val_loss"],
        "val_loss_2": two["final_val_loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peak-tflops", type=float, default=None, help="default: by device name")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device here: run bench/gpu_check.py on a GPU machine"}))
        return
    start = time.time()
    out: dict = {"device": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "torch": torch.__version__}
    parts = [("cuda_check", 150, lambda left: cuda_check(left))]
    parts += [(f"mfu_{size}", 110, lambda left, size=size: mfu(size, args.peak_tflops)) for size in MFU_TOKENS]
    parts += [("packed_sweep", 120, packed_sweep)]
    if torch.cuda.device_count() > 1:
        parts += [("ddp_2gpu", 120, lambda left: ddp_two_gpus())]
    for name, need, run in parts:  # need: a part's rough length; skipped rather than cut off by the timeout
        left = BUDGET_S - (time.time() - start)
        if left < need:
            out[name] = {"skipped": f"{left:.0f} s left, needs ~{need} s"}
            continue
        t0 = time.time()
        try:
            out[name] = run(left)
        except Exception as e:  # a part's failure is a figure too; the others still run
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        out[name]["part_s"] = time.time() - t0
        print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
