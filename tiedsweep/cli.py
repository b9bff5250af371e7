"""`tiedsweep` command line: each package registers its own subcommands.

tiedattn: model-info, train   orchestrator: run, submit, resume, status, compact, tune, tokenize
analysis: fit, report
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from analysis import cli as analysis_cli
    from orchestrator import cli as orchestrator_cli
    from tiedattn import cli as tiedattn_cli

    parser = argparse.ArgumentParser(
        prog="tiedsweep", description="Scaling-law sweeps of tied attention projections on Ray."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (tiedattn_cli, orchestrator_cli, analysis_cli):
        module.register(sub)
    sub.choices["train"].set_defaults(run_workers=_train_workers)
    p = sub.add_parser("tokenize", help="tokenize a corpus into shards on Ray Data, for corpus = 'tokenized:DIR'")
    p.add_argument("corpus", help="folder | glob | .txt/.jsonl/.parquet file(s), as [data] corpus; or 'stdlib'")
    p.add_argument("--out", required=True, help="output folder: shards/, tokenizer.json, manifest.json")
    p.add_argument("--tokenizer", default="bpe", help="'bpe' (train one on a sample) or a tokenizer.json path")
    p.add_argument("--vocab-size", type=int, default=4096, help="for --tokenizer bpe")
    p.add_argument("--val-fraction", type=float, default=0.02)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="tokenizer actors (one CPU each)")
    p.add_argument("--address", default=None, help="Ray cluster (default: a local Ray)")
    p.set_defaults(func=_tokenize)
    return parser


def _tokenize(args: argparse.Namespace) -> int:
    import json
    import time

    from orchestrator.raybackend.tokenize import tokenize
    from tiedattn.data import DataConfig

    cfg = DataConfig(
        corpus=args.corpus,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        val_fraction=args.val_fraction,
        split_seed=args.split_seed,
    )
    t0 = time.time()
    m = tokenize(cfg, args.out, workers=args.workers, address=args.address)
    seconds = time.time() - t0
    total = m["tokens"]["train"] + m["tokens"]["val"]
    print(json.dumps({k: m[k] for k in ("fingerprint", "documents", "tokens", "dtype", "vocab_size")}))
    print(
        f"{len(m['shards'])} shards, {total:,} tokens in {seconds:.1f} s ({total / seconds:,.0f} tokens/s)",
        file=sys.stderr,
    )
    return 0


def _train_workers(trial, workers: int, progress=None):
    """`tiedsweep train --workers N`: the trial on N Ray Train workers (orchestrator/raybackend/ddp.py)."""
    from orchestrator.raybackend.ddp import train_ddp

    return train_ddp(trial, workers, progress=progress)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError) as e:  # a disk, a permission, a bad table: one line, not a traceback
        print(f"tiedsweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tiedsweep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
