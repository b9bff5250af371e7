"""Subcommands of this package (registered by tiedsweep.cli): fit, report."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from analysis import AnalysisError
from records.schema import ENUMS

if TYPE_CHECKING:
    from analysis.fit import Fit

# The fits' modules (scipy, pandas: ~1 s) are imported by the commands that use them, not by every
# `tiedsweep` command that builds this parser (a dry run or status would pay ~1 s for nothing).


def register(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser(
        "fit", help="fit L(N, D) = E + A/N^alpha + B/D^beta per variant, with bootstrap intervals",
        description="TABLE is a results directory or a CSV/Parquet file with columns N, D, loss "
        "(optional: variant, seed, C).",
    )  # fmt: skip
    fit.add_argument("table", type=Path)
    fit.add_argument("--json", action="store_true", help="print one JSON object")
    fit.add_argument("--n-basis", "--n-kind", dest="n_kind", choices=ENUMS["n_basis"], default="non_embedding",
                     help="N for results directories (--n-kind: its old name)")  # fmt: skip
    fit.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(func=_run_fit)
    report = sub.add_parser(
        "report", help="write report.md and report.html for a results directory or a plain table",
        description="TABLE is a results directory or a CSV/Parquet file with columns variant, N (or "
        "params_non_embedding: each variant's own N), D (or tokens), loss; optional seed, M (else D / N of "
        "the baseline of the same size), seq_len, lr, sweep and size (naming the shape; without it the "
        "rows of each variant pair by rank of N).",
    )  # fmt: skip
    report.add_argument("table", type=Path, metavar="TABLE")
    report.add_argument("--sweep", default=None, help="only this sweep (default: every sweep under DIR)")
    report.add_argument("--out", type=Path, default=None, help="output folder (default DIR/report[/SWEEP])")
    report.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    report.add_argument("--json", action="store_true", help="print one JSON object (the verdicts) instead of text")
    report.set_defaults(func=_run_report)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _fit_json(f: Fit) -> dict:
    return {
        "variant": f.variant, "law": f.law, "n_points": f.n_points, "n_kind": f.n_kind, **f.params,
        "intervals": {k: [_finite(lo), _finite(hi)] for k, (lo, hi) in f.intervals.items()},
        "at_bounds": f.at_bounds,
    }  # fmt: skip


def _run_fit(args: argparse.Namespace) -> int:
    from analysis.fit import describe_bounds, fit_chinchilla
    from analysis.names import display_name
    from analysis.tables import completed, load_table

    try:
        if args.n_boot < 1:
            raise AnalysisError(f"--n-boot: must be >= 1, got {args.n_boot}")
        cols = load_table(args.table, args.n_kind)
        n_kind = args.n_kind if args.table.is_dir() else "table"
        n_rows = len(cols["loss"])
        cols, excluded = completed(cols)
        if not len(cols["loss"]):
            why = ", ".join(f"{n} {status}" for status, n in sorted(excluded.items()))
            raise AnalysisError(f"{args.table}: no usable rows ({f'{n_rows} rows: {why}' if n_rows else 'no rows'})")
        fits = []
        for v in sorted(set(cols["variant"].tolist())):
            at = cols["variant"] == v
            N, D, loss = cols["N"][at], cols["D"][at], cols["loss"][at]
            try:
                fits.append(fit_chinchilla(N, D, loss, variant=v, n_kind=n_kind, n_boot=args.n_boot, seed=args.seed))
            except AnalysisError as err:
                raise AnalysisError(f"{args.table}: variant {v}: {err}") from None
    except AnalysisError as err:
        print(f"tiedsweep fit: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"table": str(args.table), "left_out": excluded, "fits": [_fit_json(f) for f in fits]}))
        return 0
    print(f"L(N, D) = E + A/N^alpha + B/D^beta, N = {n_kind}; 95% bootstrap intervals ({args.n_boot} resamples)")
    if excluded:
        print("left out: " + ", ".join(f"{n} {status}" for status, n in sorted(excluded.items())))
    for f in fits:
        cells = ", ".join(f"{k}={v:.4g} [{lo:.4g}, {hi:.4g}]" for (k, v), (lo, hi) in zip(
            f.params.items(), f.intervals.values(), strict=True))  # fmt: skip
        print(f"{display_name(f.variant)} ({f.n_points} points): {cells}")
        if f.at_bounds:
            print(f"  at bounds: {describe_bounds(f.at_bounds)}: not constrained by these data")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from analysis.report import write_report  # matplotlib only when a report is made
    from analysis.verdict import QUESTION

    try:
        if args.n_boot < 1:
            raise AnalysisError(f"--n-boot: must be >= 1, got {args.n_boot}")
        out = write_report(args.table, args.out, n_boot=args.n_boot, sweep=args.sweep)
    except AnalysisError as err:
        print(f"tiedsweep report: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**out["json"], "markdown": str(out["markdown"]), "html": str(out["html"])}))
        return 0
    if out["verdicts"]:  # a sweep of synthetic tasks only has no loss verdict: its tables are in the report
        print(QUESTION)
        print("\n".join(out["verdicts"]))
    print(f"wrote {out['markdown']} and {out['html']}")
    return 0
