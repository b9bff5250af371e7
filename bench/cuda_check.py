"""The CUDA path in one short script, for a machine with a GPU (a benchmark and smoke check, not a test).

Checks, on the real trainer (tiedattn.train.train) and real stdlib text:
  1. flash SDPA is available for the model's shapes (bf16, causal);
  2. a trial trains with bf16 autocast + fused AdamW, eagerly and with torch.compile, and its loss falls;
  3. a trial stopped half-way and resumed from its checkpoint ends near the uninterrupted one
     (bf16 kernels are not bitwise deterministic: the tolerance is loose, 1e-2);
and prints tokens/s and MFU = achieved training FLOP/s / the GPU's dense bf16 peak (--peak-tflops,
default 989 for an H100/H200 SXM).

    python bench/cuda_check.py [--d-model 768 --n-layer 12 --n-head 12] [--tokens 20000000] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from tiedattn.data import DataConfig
from tiedattn.model import ModelConfig
from tiedattn.train import TrainConfig, Trial, train


def flash_ok(cfg: ModelConfig, batch: int) -> bool:
    q = torch.randn(batch, cfg.n_head, cfg.seq_len, cfg.head_dim, device="cuda", dtype=torch.bfloat16)
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return True
    except RuntimeError:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="baseline")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--n-layer", type=int, default=12)
    p.add_argument("--n-head", type=int, default=12)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tokens", type=int, default=20_000_000)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("cuda_check: no CUDA device here; run it on a GPU machine")
    model = ModelConfig(
        variant=args.variant,
        d_model=args.d_model,
        n_layer=args.n_layer,
        n_head=args.n_head,
        vocab_size=8192,
        seq_len=args.seq_len,
    )
    data = DataConfig(vocab_size=8192, max_bytes=64_000_000)
    tcfg = TrainConfig(tokens=args.tokens, batch_size=args.batch_size, lr=6e-4, n_evals=4, eval_tokens=262_144)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "flash_sdpa": flash_ok(model, 2)}
    for compiled in (False, True):
        trial = Trial(model, dataclasses.replace(tcfg, compile=compiled), data)
        s = train(trial).summary
        out[f"compile={compiled}"] = {
            "status": s["status"],
            "final_val_loss": s["final_val_loss"],
            "tokens_per_s": s["tokens_per_s"],
            "mfu": s["tokens_per_s"] * s["flops_per_token"] / (args.peak_tflops * 1e12),
        }
    with tempfile.TemporaryDirectory() as tmp:
        short = dataclasses.replace(tcfg, tokens=args.tokens // 4)
        whole = train(Trial(model, short, data)).summary["final_val_loss"]
        trial = Trial(model, short, data, workdir=tmp)
        half = train(trial, stop=lambda step: step == (short.tokens // (short.batch_size * args.seq_len)) // 2)
        resumed = train(trial).summary
        out["resume"] = {
            "stopped": half.status,
            "whole": whole,
            "resumed": resumed["final_val_loss"],
            "ok": abs(resumed["final_val_loss"] - whole) < 1e-2,
        }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
