"""Scale-out figures on CPU: one trial on 1 vs 2 Ray Train workers, Ray Data tokenization on 1 vs 2
workers, and torch.compile vs eager across the built-in t1-t4 shapes.

    .venv/bin/python bench/scale.py [--parts ddp,tokenize,compile] [--json]

Every figure is a ratio of runs made side by side in this one process, on the same data, because
the machine is shared and absolute rates swing with other jobs' load:
  ddp       the trainer on t4 (d=96, L=3) for 48 steps of 16 x 256 tokens, 1 thread per worker:
            tokens/s of the training loop (Ray Train start-up excluded; reported apart as wall s);
  tokenize  `tiedsweep tokenize` of ~4 MB of stdlib sources with a trained 4096 BPE, 1 then 2 actors
            (tokenizer training excluded: both runs load the same tokenizer.json);
  compile   per shape, 40 steps eager and 40 steps under torch.compile, 1 thread: steady tokens/s
            after step 10, and the compile time (the compiled run's first step minus an eager one).
Measured on 2 cores under load ~18 from other jobs: ddp ~5 min, tokenize ~2 min, compile ~10 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orchestrator.ladder import LADDER
from orchestrator.raybackend.ddp import train_ddp
from orchestrator.raybackend.tokenize import tokenize
from tiedattn.data import DataConfig
from tiedattn.model import ModelConfig
from tiedattn.train import TrainConfig, Trial, train

DATA = DataConfig(corpus="stdlib", vocab_size=4096, max_bytes=2_000_000)
T, B = 256, 16


def _model(size: str) -> ModelConfig:
    return ModelConfig(**LADDER[size], vocab_size=4096, seq_len=T)


def ddp() -> dict:
    trial = Trial(_model("t4"), TrainConfig(tokens=48 * B * T, batch_size=B, threads=1, n_evals=2, compile=False), DATA)
    one = train(trial).summary
    t0 = time.time()
    two = train_ddp(trial, 2).summary
    wall = time.time() - t0
    return {
        "tokens_per_s_1": one["tokens_per_s"],
        "tokens_per_s_2": two["tokens_per_s"],
        "speedup": two["tokens_per_s"] / one["tokens_per_s"],
        "val_loss_rel_diff": abs(two["final_val_loss"] / one["final_val_loss"] - 1),
        "ray_train_wall_s": wall,
        "ray_train_startup_s": wall - two["wall_s"],
    }


def tokenization() -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus")
        os.makedirs(corpus)
        lib = os.path.dirname(os.__file__)
        size = 0
        for name in sorted(os.listdir(lib)):  # ~4 MB of top-level stdlib modules, one document each
            if name.endswith(".py") and size < 4_000_000:
                text = open(os.path.join(lib, name), encoding="utf-8", errors="replace").read()
                open(os.path.join(corpus, name), "w").write(text)
                size += len(text.encode())
        cfg = DataConfig(corpus=corpus, vocab_size=4096)
        tokenize(cfg, os.path.join(tmp, "warm"), workers=1)  # trains the BPE once; warms Ray Data
        cfg = dataclasses.replace(cfg, tokenizer=os.path.join(tmp, "warm", "tokenizer.json"))
        for workers in (1, 2):
            t0 = time.time()
            m = tokenize(cfg, os.path.join(tmp, f"w{workers}"), workers=workers)
            out[f"tokens_per_s_{workers}"] = (m["tokens"]["train"] + m["tokens"]["val"]) / (time.time() - t0)
        out["bytes"], out["tokens"] = size, m["tokens"]["train"] + m["tokens"]["val"]
    out["speedup"] = out["tokens_per_s_2"] / out["tokens_per_s_1"]
    return out


def compiled_vs_eager(shapes: str = "t1,t2,t3,t4", steps: int = 40, after: int = 10) -> dict:
    out = {}
    for size in shapes.split(","):
        row = {}
        for mode in ("eager", "compiled"):
            times = [time.time()]
            tcfg = TrainConfig(tokens=steps * B * T, batch_size=B, threads=1, n_evals=1, compile=mode == "compiled")
            train(Trial(_model(size), tcfg, DATA), progress=lambda p, times=times: times.append(time.time()))
            row[mode] = {
                "tokens_per_s": (steps - after) * B * T / (times[-1] - times[after]),
                "first_step_s": times[1] - times[0],  # start-up + the first step (+ compiling)
            }
        row["speedup"] = row["compiled"]["tokens_per_s"] / row["eager"]["tokens_per_s"]
        row["compile_s"] = row["compiled"]["first_step_s"] - row["eager"]["first_step_s"]
        out[size] = row
        print(json.dumps({size: row}), file=sys.stderr, flush=True)  # a shape at a time: compiling is slow
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="ddp,tokenize,compile")
    p.add_argument("--shapes", default="t1,t2,t3,t4", help="compile: ladder shapes")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    parts = {"ddp": ddp, "tokenize": tokenization, "compile": lambda: compiled_vs_eager(args.shapes)}
    out = {}
    for name in args.parts.split(","):
        t0 = time.time()
        out[name] = parts[name]()
        out[name]["bench_s"] = time.time() - t0
        print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
