"""`tiedsweep model-info` and `tiedsweep train`: plan one model, train one trial."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time

from tiedattn.accounting import account
from tiedattn.attention import parse_variant
from tiedattn.data import DataConfig, DataError
from tiedattn.model import ConfigError, ModelConfig


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="baseline", help="canonical name or paper alias (QKV, Q-K=V, GQA-4, ...)")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=None, help="MLP width (default 4 * d_model)")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--pos", choices=["rope", "learned"], default="rope")
    p.add_argument("--norm", choices=["layernorm", "rmsnorm"], default="layernorm")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _from_flags(cls: type, args: argparse.Namespace):
    """A config dataclass from the flags: every field that has a flag of its name (--d-model -> d_model)."""
    flags = {f.name for f in dataclasses.fields(cls)} & set(vars(args))
    return cls(**{name: getattr(args, name) for name in flags})


def _model_config(args: argparse.Namespace) -> ModelConfig:
    return _from_flags(ModelConfig, args)


def _fail(message: str) -> int:
    print(f"tiedsweep: error: {message}", file=sys.stderr)
    return 2


def model_info(args: argparse.Namespace) -> int:
    cfg = _model_config(args)
    try:
        acct = account(cfg, dtype=args.dtype)
    except (ConfigError, ValueError) as e:
        return _fail(str(e))
    info = {
        "variant": parse_variant(cfg.variant).name,
        "paper": parse_variant(cfg.variant).paper,
        **acct.as_dict(),
        "kv_dtype": args.dtype,
        "d_ff": cfg.ff,
        "seq_len": cfg.seq_len,
    }
    if args.json:
        print(json.dumps(info))
        return 0
    for key, value in info.items():
        print(f"{key:>22}  {value:,}" if isinstance(value, (int, float)) else f"{key:>22}  {value}")
    return 0


def _progress_bar(stream=sys.stderr):
    last = [0.0]

    def show(p: dict) -> None:
        now = time.time()
        if now - last[0] < 0.5 and p["step"] < p["steps"]:
            return
        last[0] = now
        done = int(30 * p["step"] / p["steps"])
        stream.write(
            f"\r[{'#' * done}{'.' * (30 - done)}] step {p['step']}/{p['steps']} "
            f"loss {p['loss']:.3f} lr {p['lr']:.2e} {p['tokens_per_s']:,.0f} tok/s"
        )
        if p["step"] == p["steps"]:
            stream.write("\n")
        stream.flush()

    return show


@contextlib.contextmanager
def _stdout_to_stderr():
    """Point file descriptor 1 at stderr (children, Ray workers and C++ logs included); yield the real stdout."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    try:
        with os.fdopen(os.dup(real), "w") as out:
            yield out
    finally:
        sys.stdout.flush()
        os.dup2(real, 1)
        os.close(real)


def train_cmd(args: argparse.Namespace) -> int:
    if not args.json:
        return _train(args, sys.stdout)
    with _stdout_to_stderr() as out:  # --json: one object on stdout, every log line on stderr
        return _train(args, out)


def _train(args: argparse.Namespace, out) -> int:
    from tiedattn.train import TrainConfig, Trial, check, train

    trial = Trial(
        model=_model_config(args),
        train=_from_flags(TrainConfig, args),  # --compile/--no-compile, --peak-tflops included
        data=DataConfig(
            corpus=args.corpus, tokenizer=args.tokenizer, vocab_size=args.vocab_size, max_bytes=args.max_bytes
        ),
        workdir=args.workdir,
    )
    try:
        check(trial)
        progress = None if args.json else _progress_bar()
        if args.workers > 1:
            if args.run_workers is None:
                return _fail("--workers: data-parallel training runs through the tiedsweep command (Ray Train)")
            result = args.run_workers(trial, args.workers)  # progress: in the workers' logs
        else:
            result = train(trial, progress=progress)
    except (ConfigError, DataError) as e:
        return _fail(str(e))
    if args.json:
        print(json.dumps({**result.summary, "evals": result.evals}), file=out, flush=True)
        return 0 if result.status == "completed" else 1
    s = result.summary
    print(
        f"{s['variant']}: {s['params_non_embedding']:,} non-embedding params, {s['tokens']:,} tokens "
        f"({s['epochs']:.2f} epochs{', REPEATS DATA' if s['repeats_data'] else ''}), status {result.status}"
    )
    print(f"{'tokens':>12} {'train loss':>11} {'val loss':>9}")
    for e in result.evals:
        print(f"{e['tokens']:>12,} {e['train_loss']:>11.4f} {e['val_loss']:>9.4f}")
    print(f"{s['tokens_per_s']:,.0f} tokens/s, {s['wall_s']:.1f} s")
    return 0 if result.status == "completed" else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model-info", help="params, FLOPs and KV-cache bytes of one model config")
    _model_args(p)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="KV-cache dtype")
    p.set_defaults(func=model_info)

    p = sub.add_parser("train", help="train one model (one trial) and print its loss curve")
    _model_args(p)
    p.add_argument("--tokens", type=int, required=True, help="training tokens")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--schedule", choices=["cosine", "wsd"], default="cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-evals", type=int, default=8)
    p.add_argument("--corpus", default="stdlib", help="stdlib | folder | glob | .jsonl/.parquet shards")
    p.add_argument("--tokenizer", default="bpe", help="'bpe' (train one) or a tokenizer.json path")
    p.add_argument("--max-bytes", type=int, default=None, help="cap on corpus text")
    p.add_argument("--workdir", default=None, help="checkpoint folder (resumes if a checkpoint is there)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="default: when it pays (compile_pays)"
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for mfu (default: by GPU name)")
    p.add_argument("--workers", type=int, default=1, help="data-parallel workers (Ray Train; same result as 1)")
    p.set_defaults(func=train_cmd, run_workers=None)  # tiedsweep.cli sets run_workers (tiedattn knows no Ray)
