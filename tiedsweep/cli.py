"""`tiedsweep` command line: each package registers its own subcommands.

tiedattn: model-info, train   orchestrator: run, submit, resume, status, compact, tune
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
    return parser


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
