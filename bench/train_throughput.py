"""Training throughput: tokens/s and achieved FLOP/s as a fraction of this machine's fp32 matmul peak.

    .venv/bin/python bench/train_throughput.py [--quick] [--threads N] [--json]

Measures the peak (best of several 2048^3 fp32 matmuls, before and after the rest), and times
real training steps of the trainer's own path (GPT, tiedattn.train's AdamW groups, forward +
backward + clip + step on real packed batches of the stdlib corpus) for d = 64..384, 4 layers,
head dim 64, T = 256, 4096 tokens per step; median of 10 steps after 2 warmup steps. FLOPs per
token are accounting.account's (6 x matmul weights + 12 x n_layer x d x T, PaLM's convention),
so "% peak" is an MFU against the measured peak. ~1.5 min on an idle 2-core machine (--quick:
~30 s); other jobs on the cores slow 2-thread steps up to 10x, so per-group time is capped.

At d = 256 a plain nanoGPT-style SDPA model (`RefGPT`: fused c_attn split, learned positions, no
RoPE) of the same shape runs alongside, one step of each model in turn (ABAB...), and our
tokens/s is reported as the median of per-round time ratios against it: the machine is shared
and noisy, and only ratios measured side by side mean much. On a 2-core machine the reference
was measured at ~196 GFLOP/s (fp32) against a matmul peak of ~330; ratio >= 0.9 is the target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tiedattn.accounting import account
from tiedattn.data import Batches, DataConfig, prepare_data
from tiedattn.model import GPT, ModelConfig
from tiedattn.train import TrainConfig, _optimizer

N_LAYER, HEAD_DIM, SEQ_LEN, BATCH = 4, 64, 256, 16  # 4096 tokens per step
REF_D = 256  # the width at which the reference runs side by side
DATA = DataConfig(corpus="stdlib", vocab_size=4096, max_bytes=2_000_000)  # ~600k tokens, BPE in ~3 s


class RefGPT(nn.Module):
    """Reference: a plain nanoGPT-style model (c_attn(x).split, learned positions, SDPA, tied head).

    Same shapes, biases and tanh-GELU as GPT with pos="learned", so its FLOPs are that
    config's; only the implementation differs.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.wte, self.wpe = nn.Embedding(cfg.vocab_size, d), nn.Embedding(cfg.seq_len, d)
        self.h = nn.ModuleList(
            nn.ModuleDict(
                {
                    "ln_1": nn.LayerNorm(d),
                    "c_attn": nn.Linear(d, 3 * d),
                    "c_proj": nn.Linear(d, d),
                    "ln_2": nn.LayerNorm(d),
                    "c_fc": nn.Linear(d, 4 * d),
                    "mlp_proj": nn.Linear(4 * d, d),
                }
            )
            for _ in range(cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = idx.shape
        C, H = self.cfg.d_model, self.cfg.n_head
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))  # (B, T, C)
        for blk in self.h:
            q, k, v = blk["c_attn"](blk["ln_1"](x)).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + blk["c_proj"](y.transpose(1, 2).reshape(B, T, C))
            x = x + blk["mlp_proj"](F.gelu(blk["c_fc"](blk["ln_2"](x)), approximate="tanh"))
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


@dataclass
class Runner:
    """One model being timed: `step()` is one full optimizer step, batch fetch included."""

    name: str
    cfg: ModelConfig  # whose accounting gives the FLOPs per token
    step: Callable[[], None]
    times: list[float] = field(default_factory=list)

    def timed_step(self) -> None:
        t0 = time.perf_counter()
        self.step()
        self.times.append(time.perf_counter() - t0)


def make_runner(name: str, model: nn.Module, cfg: ModelConfig, batches: Batches) -> Runner:
    """The loop body of tiedattn.train.train on CPU (autocast is disabled there, so left out)."""
    tcfg = TrainConfig(tokens=1)
    optimizer = _optimizer(model, tcfg, fused=False)  # reads only model.parameters()
    n = 0

    def step() -> None:
        nonlocal n
        x, y = batches.get(n)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        n += 1

    return Runner(name, cfg, step)


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n x n fp32 matmul (2 n^3 FLOPs) over `repeats` runs."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    for _ in range(2):
        torch.mm(a, b, out=c)
    best = min(_time(lambda: torch.mm(a, b, out=c)) for _ in range(repeats))
    return 2 * n**3 / best


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_interleaved(runners: list[Runner], warmup: int, steps: int, budget_s: float) -> None:
    """Round-robin one step of each runner per round, so load changes hit all of them alike.

    Stops after `steps` timed rounds, or after 3 once `budget_s` is spent: a loaded machine
    (other jobs on the 2 cores) can make steps 5x slower, and the bench should still end.
    """
    for _ in range(warmup):
        for r in runners:
            r.step()
    t0 = time.perf_counter()
    for i in range(steps):
        if i >= 3 and time.perf_counter() - t0 > budget_s:
            break
        for r in runners:
            r.timed_step()


def shape(d: int, vocab: int) -> ModelConfig:
    """The trainer's default model (baseline, RoPE, LayerNorm, biases) at width d."""
    return ModelConfig(d_model=d, n_layer=N_LAYER, n_head=d // HEAD_DIM, vocab_size=vocab, seq_len=SEQ_LEN)


def summarise(r: Runner, peak: float, ref: Runner | None) -> dict:
    tokens = BATCH * SEQ_LEN
    flops = account(r.cfg).flops_per_token * tokens
    s = statistics.median(r.times)
    row = {
        "name": r.name,
        "variant": r.cfg.variant,
        "pos": r.cfg.pos,
        "d_model": r.cfg.d_model,
        "n_layer": r.cfg.n_layer,
        "n_head": r.cfg.n_head,
        "tokens_per_step": tokens,
        "steps": len(r.times),
        "median_step_s": s,
        "step_s": r.times,  # every timed step, in order: shows what the machine's load did
        "tokens_per_s": tokens / s,
        "best_tokens_per_s": tokens / min(r.times),  # the least-contended step, on a shared machine
        "gflops_per_s": flops / s / 1e9,
        "frac_of_peak": flops / s / peak,
        "vs_ref": None,
        "best_vs_ref": None,
    }
    if ref is not None and ref is not r:  # paired per round: ref time / our time, > 1 = we are faster
        row["vs_ref"] = statistics.median(a / b for a, b in zip(ref.times, r.times, strict=True))
        row["best_vs_ref"] = min(ref.times) / min(r.times)  # least-contended step of each
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="d 64 and 256 only, few steps: a smoke run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--cache-dir", default=None, help="token cache (default $TIEDSWEEP_CACHE or ~/.cache/tiedsweep)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup, steps, budget_s = (1, 3, 5.0) if args.quick else (2, 10, 20.0)
    dims = (64, 256) if args.quick else (64, 128, 256, 384)

    repeats = 3 if args.quick else 10
    peak = matmul_peak(repeats=repeats)
    data = prepare_data(dataclasses.replace(DATA, cache_dir=args.cache_dir))
    batches = Batches(data.train, SEQ_LEN, BATCH, seed=0)
    groups: list[tuple[list[Runner], Runner | None]] = []  # (runners, the reference among them)
    for d in dims:
        torch.manual_seed(0)
        cfg = shape(d, vocab=data.vocab_size)
        group = [make_runner("ours", GPT(cfg), cfg, batches)]
        if d == REF_D:  # side by side: the reference, ours without RoPE (isolates its cost), tied_kv
            learned = dataclasses.replace(cfg, pos="learned")
            tied = dataclasses.replace(cfg, variant="tied_kv")
            group.insert(0, make_runner("ref nanoGPT", RefGPT(learned), learned, batches))
            group.append(make_runner("ours", GPT(learned), learned, batches))
            group.append(make_runner("ours", GPT(tied), tied, batches))
        print(f"d={d}: {len(group)} model(s), up to {steps} interleaved steps each", file=sys.stderr, flush=True)
        run_interleaved(group, warmup, steps, budget_s)
        groups.append((group, group[0] if d == REF_D else None))
    peak = max(peak, matmul_peak(repeats=repeats))  # again at the end: a busy moment lowers the best
    rows = [summarise(r, peak, ref) for group, ref in groups for r in group]
    ratio = next(
        r["vs_ref"] for r in rows if r["vs_ref"] is not None and r["pos"] == "rope" and r["variant"] == "baseline"
    )

    if args.json:
        out = {"threads": torch.get_num_threads(), "matmul_peak_gflops": peak / 1e9, "vs_ref": ratio, "rows": rows}
        print(json.dumps(out))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"fp32 matmul peak (2048^3, best of {2 * repeats}): {peak / 1e9:.1f} GFLOP/s")
    for i, row in enumerate(rows):
        _print_row(row, header=i == 0)
    verdict = "ok" if ratio >= 0.9 else "SLOWER than the reference"
    print(f"trainer (baseline, rope) vs plain SDPA GPT at d={REF_D}: {ratio:.3f} x its tokens/s (>= 0.9: {verdict})")


# (header, width, row -> text) of each printed column
_COLUMNS = [
    ("model", -12, lambda r: r["name"]),
    ("variant", -9, lambda r: r["variant"]),
    ("pos", -8, lambda r: r["pos"]),
    ("d", 4, lambda r: r["d_model"]),
    ("L", 2, lambda r: r["n_layer"]),
    ("H", 2, lambda r: r["n_head"]),
    ("ms/step", 8, lambda r: f"{r['median_step_s'] * 1e3:.1f}"),
    ("tok/s", 7, lambda r: f"{r['tokens_per_s']:.0f}"),
    ("best", 7, lambda r: f"{r['best_tokens_per_s']:.0f}"),
    ("GFLOP/s", 8, lambda r: f"{r['gflops_per_s']:.1f}"),
    ("%peak", 6, lambda r: f"{100 * r['frac_of_peak']:.1f}%"),
    ("vs ref", 7, lambda r: "" if r["vs_ref"] is None else f"{r['vs_ref']:.3f}"),
    ("best/ref", 8, lambda r: "" if r["best_vs_ref"] is None else f"{r['best_vs_ref']:.3f}"),
]


def _print_row(row: dict, header: bool) -> None:
    if header:
        print(" ".join(f"{h:{'<' if w < 0 else '>'}{abs(w)}}" for h, w, _ in _COLUMNS))
    print(" ".join(f"{f(row)!s:{'<' if w < 0 else '>'}{abs(w)}}" for _, w, f in _COLUMNS), flush=True)


if __name__ == "__main__":
    main()
