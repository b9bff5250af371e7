"""`tiedsweep report`: fits, gaps and verdicts of a results directory as report.md and report.html."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from analysis import AnalysisError, accuracy, plots
from analysis.fit import (
    CHINCHILLA,
    OVERTRAINING,
    Fit,
    HoldOut,
    describe_bounds,
    fit_chinchilla,
    fit_overtraining,
    holdout,
)
from analysis.names import display_name
from analysis.render import Block, Section, markdown, to_html
from analysis.tables import Columns, completed, load_evals, load_sweep_trials, select
from analysis.verdict import BASELINE, Verdict, verdict, verdicts

TINY_PARAMS = 10_000_000  # below this the models are CPU toys; say so in the report


@dataclass(frozen=True)
class Analysis:
    trials: Columns  # completed trials with a finite loss
    excluded: dict[str, int]  # left-out trials by status
    stale: dict[str, int]  # per sweep, rows of trials no longer in the sweep's spec (its manifest), left out
    evals: Columns | None
    fits: dict[str, Fit]  # per-variant Chinchilla surfaces
    overtraining: dict[str, Fit]
    holdouts: dict[str, HoldOut]
    notes: list[str]  # fits that could not be made, and why
    verdicts: list[Verdict]
    n_kind: str


def analyse(
    results_dir: str | Path, *, n_kind: str = "non_embedding", n_boot: int = 1000, seed: int = 0,
    sweep: str | None = None,
) -> Analysis:  # fmt: skip
    """Everything the report shows, from a results directory: one sweep, or all of them (pairs never
    cross sweeps); each sweep's trials restricted to those its manifest lists."""
    everything, stale = load_sweep_trials(results_dir, n_kind, sweep)
    everything = select(everything, ~accuracy.is_task(everything))  # task trials: accuracy.sections
    trials, excluded = completed(everything)
    if trials["loss"].size == 0:
        raise AnalysisError(f"{results_dir}: no completed trials (left out: {excluded}; {_stale_text(stale)})")
    fits, over, held, notes = {}, {}, {}, []
    for v in sorted(set(trials["variant"].tolist())):
        at = trials["variant"] == v
        N, D, C, loss = (trials[k][at] for k in ("N", "D", "C", "loss"))
        for store, make, args in (
            (fits, fit_chinchilla, dict(N=N, D=D, loss=loss, variant=v, n_kind=n_kind, n_boot=n_boot, seed=seed)),
            (over, fit_overtraining, dict(C=C, M=D / N, loss=loss, variant=v, n_boot=n_boot, seed=seed)),
            (held, holdout, dict(N=N, D=D, loss=loss, C=C)),
        ):
            try:
                store[v] = make(**args)
            except AnalysisError as err:
                notes.append(f"{display_name(v)}: {err}")
    found = []
    for v in sorted(set(trials["variant"].tolist())):
        if v == BASELINE:
            continue
        try:  # one variant without paired cells must not cost the others their verdict
            found.append(verdict(trials, v, n_kind=n_kind, n_boot=n_boot, seed=seed))
        except AnalysisError as err:
            notes.append(f"{display_name(v)}: no verdict: {err}")
    if not found:
        verdicts(trials, n_kind=n_kind, n_boot=n_boot, seed=seed)  # raises the clear reason (no baseline, ...)
    notes += [f"{display_name(v.variant)} joint fit: {v.note}" for v in found if v.note]
    notes += [
        f"{display_name(v.variant)} vs {display_name(BASELINE)}: cells with several rows per variant were "
        f"averaged: {'; '.join(v.pairs.averaged)}"
        for v in found
        if v.pairs.averaged
    ]
    notes += _bound_notes(fits, over, found)
    if stale:
        notes.append(_stale_text(stale))
    evals = load_evals(results_dir)
    if evals is not None:  # curves of the trials analysed only, not of other sweeps or earlier specs
        evals = select(evals, np.isin(evals["trial_id"], everything["trial_id"]))
        if "sweep" in evals and "sweep" in everything:
            evals = select(evals, np.isin(evals["sweep"].astype(str), everything["sweep"]))
    return Analysis(trials, excluded, stale, evals, fits, over, held, notes, found, n_kind)


def _stale_text(stale: dict[str, int]) -> str:
    """One clause per sweep: "demo: 12 rows of trials no longer in the sweep's spec left out"."""
    return "; ".join(f"{name}: {n} rows of trials no longer in the sweep's spec left out" for name, n in stale.items())


def _and(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def _bound_notes(fits: dict[str, Fit], over: dict[str, Fit], found: list[Verdict]) -> list[str]:
    """One note per kind of fit and set of flags (`Fit.at_bounds`), naming the variants it applies to."""
    flagged: list[tuple[str, str, dict[str, str]]] = []
    for kind, store in (("Chinchilla fit{s}", fits), ("over-training fit{s}", over)):
        flagged += [(kind, v, f.at_bounds) for v, f in sorted(store.items())]
    for v in found:  # the verdict's Δβ and fitted gaps come from these
        if v.joint is not None:
            flags = {**v.joint.fits[BASELINE].at_bounds, **v.joint.fits[v.variant].at_bounds}
            flagged.append((f"joint fit{{s}} with {display_name(BASELINE)}", v.variant, flags))
    groups: dict[tuple[str, str, int], list[str]] = {}
    for kind, v, flags in flagged:
        if flags:
            groups.setdefault((kind, describe_bounds(flags), len(flags)), []).append(display_name(v))
    return [
        f"{_and(names)} {kind.format(s='s' * (len(names) > 1))}: {text}: the sweep does not constrain "
        f"{'them' if n > 1 else 'it'}; too few sizes/budgets"
        for (kind, text, n), names in groups.items()
    ]


def _ci(t: tuple[float, float, float], scale: float = 1.0, fmt: str = ".3g") -> str:
    ci = f" [{scale * t[1]:{fmt}}, {scale * t[2]:{fmt}}]" if np.isfinite(t[1:]).all() else ""
    return f"{scale * t[0]:{fmt}}{ci}" if np.isfinite(t[0]) else "n/a"


def _fit_table(fits: dict[str, Fit], names: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [
            display_name(v),
            str(f.n_points),
            *(_ci((f.params[p], *f.intervals[p]), fmt=".4g") + "*" * (p in f.at_bounds) for p in names),
        ]
        for v, f in sorted(fits.items())
    ]
    return (["variant", "cells", *names], rows)


def _starred(fits: dict[str, Fit]) -> list[Block]:
    if any(f.at_bounds for f in fits.values()):
        return ["Values marked * are at a bound of the fit, or their intervals reach one: the sweep does not "
                "constrain them (see Notes)"]  # fmt: skip
    return []


def _basis(a: Analysis) -> list[Block]:
    t = a.trials
    params, tokens = t["params_total"], t["tokens"]
    lines = [
        f"sweeps: {', '.join(sorted(set(t['sweep'].tolist())))}" if "sweep" in t else "sweeps: -",
        f"{t['loss'].size} completed trials; left out: "
        + (", ".join(f"{n} {status}" for status, n in sorted(a.excluded.items())) or "none"),
        f"model sizes: {params.min():,} to {params.max():,} parameters in total "
        f"({t['params_non_embedding'].min():,} to {t['params_non_embedding'].max():,} non-embedding)",
        f"training tokens: {tokens.min():,} to {tokens.max():,}; tokens per parameter M: "
        + ", ".join(f"{m:g}" for m in np.unique(t["M"])),
        f"seeds: {', '.join(str(s) for s in np.unique(t['seed']))}; fits use N = {a.n_kind} parameters",
    ]
    if a.stale:
        lines.insert(2, _stale_text(a.stale))
    blocks: list[Block] = [lines]
    if params.max() < TINY_PARAMS:
        blocks.append(
            f"Tiny CPU models (largest {params.max():,} parameters, under {TINY_PARAMS:,}): "
            "not evidence about large models."
        )
    return blocks


def _gap_tables(a: Analysis) -> list[Block]:
    blocks: list[Block] = []
    for v in a.verdicts:
        blocks.append(f"{display_name(v.variant)} vs QKV (gaps in %, compute multiplier: the variant's compute "
                      "for the baseline's loss at the baseline's largest cell, over the baseline's)")  # fmt: skip
        rows = [
            [f"{g.M:g}", str(g.n_pairs), _ci(g.measured, 100, ".2f"), g.clusters, _ci(g.fitted, 100, ".2f"),
             _ci(g.compute_multiplier, 1, ".3g")]
            for g in v.gaps
        ]  # fmt: skip
        header = ["M", "pairs", "measured gap", "interval over", "fitted gap", "compute multiplier"]
        blocks.append((header, rows))
        methods: dict[str, list[str]] = {}
        for g in v.gaps:
            methods.setdefault(g.method, []).append(f"{g.M:g}")
        blocks.append(
            "measured gap intervals: "
            + "; ".join(f"{method} at M = {', '.join(Ms)}" for method, Ms in methods.items())
            + "; fitted gaps and multipliers: 95% bootstrap of the joint fit"
        )
        blocks.append(
            f"slope per doubling of M: {_ci(v.slope, 100, '+.2f')}% ({v.slope_method}); "
            f"Δβ: {_ci(v.delta_beta, 1, '+.3f')}"
        )
    return blocks


def _lrs(t: Columns) -> tuple[list[str], list[list[str]]]:
    rows = []
    for v in sorted(set(t["variant"].tolist())):
        at = t["variant"] == v
        rows.append([display_name(v), ", ".join(f"{lr:g}" for lr in np.unique(t["lr"][at]))])
    return (["variant", "learning rate(s)"], rows)


def _tuned_rates(results_dir: str | Path, sweeps: list[str]) -> list[Block]:
    """What `tiedsweep tune` found (DIR/tuning/<sweep>/lr.json), for the sweeps that were tuned."""
    lines = []
    for sweep in sweeps:
        path = Path(results_dir) / "tuning" / sweep / "lr.json"
        if not path.is_file():
            continue
        for variant, entry in sorted(json.loads(path.read_text()).items()):
            at = ", ".join(f"{size} (N = {e['N']:,}): {e['lr']:.3g}" for size, e in entry["sizes"].items())
            rule = entry["rule"]
            rule = f"rule lr(N) = {math.exp(rule['log_c']):.3g} x N^{rule['p']:.3f}" if rule else "no rule"
            lines.append(f"{sweep}, {display_name(variant)}: best {at or 'none'}; {rule}")
    if not lines:
        return []
    return [
        'Peak rates were tuned per variant (`tiedsweep tune`, TPE on short proxy runs); a spec with lr = "tuned" '
        "trains each cell at its size's tuned rate, or at the variant's rule for untuned sizes. The table above "
        "lists the rates the trials actually used.",
        lines,
    ]


def _figures(a: Analysis) -> dict[str, Figure]:
    figs = {"frontier": plots.frontier(a.trials, a.fits), "gaps": plots.gaps(a.verdicts)}
    if a.evals is not None:
        figs["loss_curves"] = plots.loss_curves(a.evals, a.trials)
    figs["kv_cache"] = plots.kv_cache(a.trials)
    if a.fits:
        figs["residuals"] = plots.residuals(a.trials, a.fits)
    return figs


def write_report(
    results_dir: str | Path, out_dir: str | Path | None = None, n_boot: int = 1000, sweep: str | None = None
) -> dict:
    """Write report.md, report.html and the figures (PNG, SVG) into out_dir (default DIR/report, or
    DIR/report/<sweep> for one sweep), for `sweep` or, without one, every sweep under DIR.

    Returns {"markdown": path, "html": path, "figures": [paths], "verdicts": [sentences]}.
    """
    all_trials = load_sweep_trials(results_dir, sweep=sweep)[0]
    acc_sections, acc_figs = accuracy.sections(all_trials, _evals_of(results_dir, all_trials))
    try:
        a = analyse(results_dir, n_boot=n_boot, sweep=sweep)
    except AnalysisError:
        if not acc_sections:  # neither a loss analysis nor task accuracy: nothing to report
            raise
        a = None  # a sweep of synthetic tasks only
    default = Path(results_dir) / "report" if sweep is None else Path(results_dir) / "report" / sweep
    out = Path(out_dir) if out_dir is not None else default
    out.mkdir(parents=True, exist_ok=True)
    pngs, files = [], []
    for name, fig in {**(_figures(a) if a else {}), **acc_figs}.items():
        for ext in ("png", "svg"):
            fig.savefig(out / f"{name}.{ext}", dpi=100)
            files.append(out / f"{name}.{ext}")
        pngs.append(out / f"{name}.png")
    holdouts = sorted(a.holdouts.items()) if a else []
    held = [f"{display_name(v)}: mean |error| {100 * h.mean_abs:.2f}% on {h.rel_error.size} cells with "
            f"C >= {h.threshold:.3g} (fitted on {h.n_train})" for v, h in holdouts]  # fmt: skip
    sections: list[Section] = [] if a is None else [
        ("Verdict", [[v.sentence for v in a.verdicts]]),
        ("What this is based on", _basis(a)),
        ("Learning rates", [_lrs(a.trials), *_tuned_rates(results_dir, sorted(set(a.trials.get("sweep", []))))]),
        ("Chinchilla fits: L(N, D) = E + A/N^alpha + B/D^beta (95% bootstrap intervals)",
         [_fit_table(a.fits, CHINCHILLA), *_starred(a.fits), "Held-out largest-compute cells:", held or ["none"]]),
        ("Over-training law: L(C, M) = E + (a M^eta + b M^-eta) C^-eta",
         [_fit_table(a.overtraining, OVERTRAINING), *_starred(a.overtraining)]),
        ("Gaps", _gap_tables(a)),
        ("Notes", [a.notes or ["none"]]),
    ]  # fmt: skip
    sections += [*acc_sections, ("Figures", pngs)]
    title = f"tiedsweep report: {Path(results_dir).resolve().name}" + (f", sweep {sweep}" if sweep else "")
    (out / "report.md").write_text(markdown(title, sections))
    (out / "report.html").write_text(to_html(title, sections))
    return {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "figures": files,
        "verdicts": [v.sentence for v in a.verdicts] if a else [],
    }


def _evals_of(results_dir: str | Path, trials: Columns) -> Columns | None:
    evals = load_evals(results_dir)
    return None if evals is None else select(evals, np.isin(evals["trial_id"], trials["trial_id"]))
