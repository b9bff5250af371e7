"""`tiedsweep` command line: each package registers its own subcommands.

tiedattn: model-info, train   orchestrator: run, submit, resume, status, compact, tune, tokenize
analysis: fit, report
"""

from __future__ import annotations

import argparse
import sys
import warnings


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
    return parser


def _report(results: str, sweep: str) -> None:
    """`run --report`: fits, plots and the report of the sweep just run; its exit code stands."""
    from analysis import AnalysisError
    from analysis.report import write_report

    try:
        out = write_report(results, sweep=sweep)
        print(f"report: {out.get('html', out)}")
    except AnalysisError as e:  # e.g. every trial failed
        print(f"tiedsweep: no report: {e}", file=sys.stderr)


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"  # one line naming what is wrong, not the source line that noticed it


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _warning_line
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        if getattr(args, "report", False) and getattr(args, "ran_sweep", None) and code != 2:
            _report(args.results, args.ran_sweep)
        return code
    except (OSError, ValueError) as e:  # a disk, a permission, a bad table: one line, not a traceback
        print(f"tiedsweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tiedsweep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
