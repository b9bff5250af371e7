"""`tiedsweep report`: fits, gaps and verdicts of a results directory as report.md and report.html."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from analysis import AnalysisError, accuracy, plots
from analysis.cells import baseline_name
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
from analysis.laws import flops_6nd
from analysis.names import display_name
from analysis.render import Block, Section, markdown, to_html
from analysis.tables import Columns, completed, load_evals, load_sweep_trials, load_table, select
from analysis.verdict import QUESTION, STATISTIC, SeqLenTrend, Verdict, groups, seq_len_trends, verdicts
from records.tuning import TunedFileError, read_tuned

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
    seq_len_trends: list[SeqLenTrend] = field(default_factory=list)
    table: bool = False  # read from a plain CSV/Parquet table, not a results directory


def analyse(
    results_dir: str | Path, *, n_kind: str = "non_embedding", n_boot: int = 1000, seed: int = 0,
    sweep: str | None = None,
) -> Analysis:  # fmt: skip
    """Everything the report shows, from a results directory (one sweep, or all of them: pairs never
    cross sweeps; each sweep's trials restricted to those its manifest lists) or from a plain
    CSV/Parquet table (`tables.load_table`). Synthetic-task trials are left out (analysis.accuracy)."""
    table = Path(results_dir).is_file()
    if table:
        everything, stale, n_kind = load_table(results_dir), {}, "table"
    else:
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
            # Gadre et al.'s law is derived with C = 6 N D; measured FLOPs / 6ND drifts with size (2.6 at
            # 10M to 1.3 at 300M non-embedding parameters), which would bend eta
            (over, fit_overtraining,
             dict(C=flops_6nd(N, D), M=D / N, loss=loss, variant=v, n_boot=n_boot, seed=seed)),
            (held, holdout, dict(N=N, D=D, loss=loss, C=C)),
        ):  # fmt: skip
            try:
                store[v] = make(**args)
            except AnalysisError as err:
                notes.append(f"{display_name(v)}: {err}")
    base = baseline_name(trials["variant"])
    base_fits = {g: fits[base] for g in groups(trials)} if len(groups(trials)) == 1 and base in fits else None
    found = verdicts(trials, n_kind=n_kind, n_boot=n_boot, seed=seed, notes=notes, base_fits=base_fits)
    notes += [f"{v.label} joint fit: {v.note}" for v in found if v.note]
    notes += _bound_notes(fits, over, found)
    if stale:
        notes.append(_stale_text(stale))
    evals = None if table else load_evals(results_dir)
    if evals is not None:  # curves of the trials analysed only, not of other sweeps or earlier specs
        evals = select(evals, np.isin(evals["trial_id"], everything["trial_id"]))
        if "sweep" in evals and "sweep" in everything:
            evals = select(evals, np.isin(evals["sweep"].astype(str), everything["sweep"]))
    trends = seq_len_trends(found, n_boot=n_boot, seed=seed)
    return Analysis(trials, excluded, stale, evals, fits, over, held, notes, found, n_kind, trends, table)


def _stale_text(stale: dict[str, int]) -> str:
    """One clause per sweep: "demo: 12 rows of trials no longer in the sweep's spec left out"."""
    return "; ".join(f"{name}: {n} rows of trials no longer in the sweep's spec left out" for name, n in stale.items())


def _and(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def _bound_notes(fits: dict[str, Fit], over: dict[str, Fit], found: list[Verdict]) -> list[str]:
    """One note per kind of fit and set of flags (`Fit.at_bounds`), naming the variants it applies to;
    and one per fit with intervals too wide to mean anything (`Fit.too_wide`)."""
    flagged: list[tuple[str, str, dict[str, str]]] = []
    for kind, store in (("Chinchilla fit{s}", fits), ("over-training fit{s}", over)):
        flagged += [(kind, display_name(v), f.at_bounds) for v, f in sorted(store.items())]
    for v in found:  # the verdict's Δβ and fitted gaps come from these
        if v.joint is not None:
            flags = {k: f for fit in v.joint.fits.values() for k, f in fit.at_bounds.items()}
            flagged.append(("joint fit{s} with QKV", v.label, flags))
    groups: dict[tuple[str, str, int], list[str]] = {}
    for kind, name, flags in flagged:
        if flags:
            groups.setdefault((kind, describe_bounds(flags), len(flags)), []).append(name)
    notes = [
        f"{_and(names)} {kind.format(s='s' * (len(names) > 1))}: {text}: the sweep does not constrain "
        f"{'them' if n > 1 else 'it'}; too few sizes/budgets"
        for (kind, text, n), names in groups.items()
    ]
    for kind, store in (("Chinchilla fit", fits), ("over-training fit", over)):
        for v, f in sorted(store.items()):
            if wide := {k: w for k, w in f.too_wide.items() if k not in f.at_bounds}:
                notes.append(f"{display_name(v)} {kind}: too wide to mean anything: "
                             + "; ".join(f"{k}'s {w}" for k, w in wide.items()))  # fmt: skip
    return notes


def _ci(t: tuple[float, float, float], scale: float = 1.0, fmt: str = ".3g") -> str:
    ci = f" [{scale * t[1]:{fmt}}, {scale * t[2]:{fmt}}]" if np.isfinite(t[1:]).all() else ""
    return f"{scale * t[0]:{fmt}}{ci}" if np.isfinite(t[0]) else "n/a"


def _fit_table(fits: dict[str, Fit], names: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [
            display_name(v),
            str(f.n_points),
            *(
                _ci((f.params[p], *f.intervals[p]), fmt=".4g")
                + "*" * (p in f.at_bounds)
                + "~" * (p in f.too_wide and p not in f.at_bounds)
                for p in names
            ),
        ]
        for v, f in sorted(fits.items())
    ]
    return (["variant", "cells", *names], rows)


def _starred(fits: dict[str, Fit]) -> list[Block]:
    out: list[Block] = []
    if any(f.at_bounds for f in fits.values()):
        out.append("Values marked * are at a bound of the fit, or their intervals reach one: the sweep does not "
                   "constrain them (see Notes)")  # fmt: skip
    if any(set(f.too_wide) - set(f.at_bounds) for f in fits.values()):
        out.append("Values marked ~ have a 95% interval wider than the estimate itself: too wide to mean anything")
    return out


def _basis(a: Analysis) -> list[Block]:
    t = a.trials
    total = t["params_total"] if "params_total" in t else t["N"]
    non = t["params_non_embedding"] if "params_non_embedding" in t else t["N"]
    tokens = t["tokens"] if "tokens" in t else t["D"]
    what = "in total" if "params_total" in t else "(N as given)"
    lines = [
        f"sweeps: {', '.join(sorted(set(t['sweep'].tolist())))}" if "sweep" in t else "sweeps: -",
        f"{t['loss'].size} completed trials; left out: "
        + (", ".join(f"{n} {status}" for status, n in sorted(a.excluded.items())) or "none"),
        f"model sizes: {total.min():,.0f} to {total.max():,.0f} parameters {what}"
        + (f" ({non.min():,.0f} to {non.max():,.0f} non-embedding)" if "params_non_embedding" in t else ""),
        f"training tokens: {tokens.min():,.0f} to {tokens.max():,.0f}; tokens per parameter M: "
        + ", ".join(f"{m:g}" for m in np.unique(t["M"])),
        f"seeds: {', '.join(str(s) for s in np.unique(t['seed']))}; fits use "
        + ("N as the table gives it" if a.table else f"N = {a.n_kind} parameters"),
    ]
    if "seq_len" in t:
        lines.append("sequence lengths: " + ", ".join(f"{q:g}" for q in np.unique(t["seq_len"].astype(float))))
    if a.stale:
        lines.insert(2, _stale_text(a.stale))
    blocks: list[Block] = [lines]
    if total.max() < TINY_PARAMS:
        blocks.append(
            f"Tiny CPU models (largest {total.max():,.0f} parameters, under {TINY_PARAMS:,}): "
            "not evidence about large models."
        )
    return blocks


def _gap_tables(a: Analysis) -> list[Block]:
    blocks: list[Block] = []
    for v in a.verdicts:
        blocks.append(f"{v.label} vs QKV (gaps in %; gap beyond capacity: the tested quantity; raw: L_variant / "
                      "L_QKV - 1; compute multiplier: the variant's compute for QKV's loss at QKV's largest cell at "
                      "that M, over QKV's, in C = 6ND units, and in measured FLOPs beside it)")  # fmt: skip
        rows = [
            [f"{g.M:g}", str(g.n_pairs), _ci(g.beyond, 100, ".2f"), _ci(g.measured, 100, ".2f"), g.clusters,
             _ci(g.fitted, 100, ".2f"), _ci(g.compute_multiplier, 1, ".3g"), _ci((g.multiplier_flops, np.nan, np.nan))]
            for g in v.gaps
        ]  # fmt: skip
        header = ["M", "pairs", "gap beyond capacity", "raw gap", "interval over", "fitted raw gap",
                  "compute multiplier (6ND)", "(measured FLOPs)"]  # fmt: skip
        blocks.append((header, rows))
        methods: dict[str, list[str]] = {}
        for g in v.gaps:
            methods.setdefault(g.method, []).append(f"{g.M:g}")
        lines = [
            "measured gap intervals: "
            + "; ".join(f"{method} at M = {', '.join(Ms)}" for method, Ms in methods.items())
            + "; fitted gaps and multipliers: 95% bootstrap of the joint fit",
            f"capacity: {v.capacity}",
            f"tested: {STATISTIC}: {_ci(v.slope, 100, '+.3f')}% ({v.slope_method}); p = {v.p:.3g}, "
            f"Holm-adjusted over {v.family} test{'s' * (v.family > 1)}: {v.p_holm:.3g}; trend: {v.trend}",
            "raw gap's slope per doubling of M (not tested; includes the capacity effect): "
            f"{_ci(v.raw_slope, 100, '+.3f')}%",
        ]
        if v.delta_beta_ok:
            lines.append(f"Δβ not shown: {v.delta_beta_ok}")
        else:
            lines.append(f"Δβ (joint fit assuming shared E and α; not the test): {_ci(v.delta_beta, 1, '+.3f')}")
        if h := v.held_out:
            lines.append(
                f"held out: the trend fitted on M <= {h.M_fit:g} predicts the gap beyond capacity at M = {h.M_test:g} "
                f"as {100 * h.predicted:+.2f}%, measured {100 * h.measured:+.2f}% over {h.n_chains} chains: error "
                f"{100 * h.error:+.2f} points against a noise floor (s.e. of the mean error over chains) of "
                f"{100 * h.noise:.2f}"
            )
        else:
            lines.append("held out: not scored (needs two M values at or below a quarter of the largest)")
        lines += [f"warning: {w}" for w in v.warnings]
        blocks.append(lines)
    for t in a.seq_len_trends:
        at = ", ".join(f"{q:g}: {_ci(g, 100, '+.2f')}%" for q, g in zip(t.seq_lens, t.gaps, strict=True))
        blocks.append([
            f"{display_name(t.variant)}{f' (sweep {t.sweep})' if t.sweep else ''}: gap beyond capacity by seq_len "
            f"(mean over M, 95% t over chains): {at}",
            f"slope per +1024 tokens of context, within (size, seed, M) cells: {_ci(t.slope.triple, 100, '+.3f')}% "
            f"({t.slope.method}; p = {t.slope.p:.3g}, not Holm-corrected with the M trends)",
        ])  # fmt: skip
    return blocks


def _lrs(a: Analysis) -> list[Block]:
    """The rates the trials used, and, where a cell had several, which one each verdict counted."""
    t = a.trials
    if "lr" not in t:
        return ["no lr column: every trial of a cell counts"]
    rows = []
    for v in sorted(set(t["variant"].tolist())):
        at = t["variant"] == v
        rows.append([display_name(v), ", ".join(f"{lr:g}" for lr in np.unique(t["lr"][at]))])
    blocks: list[Block] = [(["variant", "learning rate(s)"], rows)]
    chose = [f"{v.label}: {c}" for v in a.verdicts for c in v.pairs.chose]
    if chose:
        blocks += ["Cells with several rates: each variant's lowest-loss rate in the cell counts (the verdict "
                   "compares each variant at its best rate, not an average over rates):", chose]  # fmt: skip
    else:
        blocks.append("Every cell has one rate per variant.")
    return blocks


def _tuned_rates(results_dir: str | Path, sweeps: list[str]) -> list[Block]:
    """What `tiedsweep tune` found (records.tuning: DIR/tuning/<sweep>/lr.json), for the sweeps that were tuned."""
    lines = []
    for sweep in sweeps:
        try:
            tuned = read_tuned(str(results_dir), sweep) or {}
        except TunedFileError as e:  # the rows carry the rates they trained with; only this section is lost
            lines.append(f"{sweep}: tuning results unreadable: {e}")
            continue
        for variant, entry in sorted(tuned.items()):
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
    if "kv_bytes_per_token" in a.trials:  # results directories; plain tables rarely have it
        figs["kv_cache"] = plots.kv_cache(a.trials)
    if a.fits:
        figs["residuals"] = plots.residuals(a.trials, a.fits)
    return figs


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _gaps_json(v: Verdict, key: str) -> list[dict]:
    return [{"M": g.M, "gap": _finite(getattr(g, key)[0]), "interval": [_finite(x) for x in getattr(g, key)[1:]],
             "pairs": g.n_pairs} for g in v.gaps]  # fmt: skip


def verdict_json(v: Verdict) -> dict:
    """One entry of `--json`'s "verdicts" list."""
    h = v.held_out
    return {
        "sweep": v.sweep or None,
        "variant": display_name(v.variant),
        "seq_len": _finite(v.seq_len),
        "trend": v.trend,
        "conclusion": v.conclusion,
        "statistic": STATISTIC,
        "estimate": _finite(v.slope[0]),
        "interval": [_finite(v.slope[1]), _finite(v.slope[2])],
        "method": v.slope_method,
        "p_value": _finite(v.p),
        "p_holm": _finite(v.p_holm),
        "holm_family": v.family,
        "chains": v.n_chains,
        "capacity": v.capacity,
        "raw_gaps": _gaps_json(v, "measured"),
        "gaps_beyond_capacity": _gaps_json(v, "beyond"),
        "raw_slope": {"estimate": _finite(v.raw_slope[0]), "interval": [_finite(x) for x in v.raw_slope[1:]]},
        "delta_beta": None if v.delta_beta_ok else {
            "assumes": "shared E and alpha", "estimate": _finite(v.delta_beta[0]),
            "interval": [_finite(x) for x in v.delta_beta[1:]]},
        "held_out": None if h is None else {
            "fit_on_M_up_to": h.M_fit, "M": h.M_test, "predicted": h.predicted, "measured": h.measured,
            "error": h.error, "noise_floor": h.noise, "chains": h.n_chains},
        "warnings": list(v.warnings),
        "sentence": v.sentence,
    }  # fmt: skip


def summary_json(a: Analysis) -> dict:
    """What `tiedsweep report --json` prints: the question, the null, and one entry per verdict."""
    return {
        "question": QUESTION,
        "holm": f"p_holm: Holm's correction across the {len(a.verdicts)} verdicts of this report",
        "verdicts": [verdict_json(v) for v in a.verdicts],
        "seq_len_trends": [
            {"sweep": t.sweep or None, "variant": display_name(t.variant), "seq_lens": t.seq_lens,
             "gaps_beyond_capacity": [[_finite(x) for x in g] for g in t.gaps],
             "slope_per_1024_tokens": _finite(t.slope.estimate),
             "interval": [_finite(t.slope.low), _finite(t.slope.high)], "p_value": _finite(t.slope.p),
             "method": t.slope.method}
            for t in a.seq_len_trends
        ],
        "notes": a.notes,
    }  # fmt: skip


def write_report(
    results_dir: str | Path, out_dir: str | Path | None = None, n_boot: int = 1000, sweep: str | None = None
) -> dict:
    """Write report.md, report.html and the figures (PNG, SVG) into out_dir (default DIR/report, or
    DIR/report/<sweep> for one sweep; for a plain table, report/ beside it), for `sweep` or, without
    one, every sweep under DIR.

    Returns {"markdown": path, "html": path, "figures": [paths], "verdicts": [sentences], "json": dict}.
    """
    table = Path(results_dir).is_file()
    acc_sections, acc_figs = [], {}
    if not table:  # task accuracy reads a results directory's evals
        all_trials = load_sweep_trials(results_dir, sweep=sweep)[0]
        acc_sections, acc_figs = accuracy.sections(all_trials, _evals_of(results_dir, all_trials))
    try:
        a = analyse(results_dir, n_boot=n_boot, sweep=sweep)
    except AnalysisError:
        if not acc_sections:  # neither a loss analysis nor task accuracy: nothing to report
            raise
        a = None  # a sweep of synthetic tasks only
    root = Path(results_dir).parent if table else Path(results_dir)
    default = root / "report" if sweep is None else root / "report" / sweep
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
    family = a.verdicts[0].family if a and a.verdicts else 0
    sweeps = a.trials.get("sweep", np.array([])).tolist() if a else []
    sections: list[Section] = [] if a is None else [
        ("Verdict", [QUESTION, [v.sentence for v in a.verdicts],
                     f"p: two-sided for slope = 0, Holm-corrected across the {family} verdict(s) of this report; "
                     "intervals: unadjusted 95%."]),
        ("What this is based on", _basis(a)),
        ("Learning rates", [*_lrs(a), *([] if a.table else _tuned_rates(results_dir, sorted(set(sweeps))))]),
        ("Chinchilla fits: L(N, D) = E + A/N^alpha + B/D^beta (95% bootstrap intervals)",
         [_fit_table(a.fits, CHINCHILLA), *_starred(a.fits), "Held-out largest-compute cells:", held or ["none"]]),
        ("Over-training law: L(C, M) = E + (a M^eta + b M^-eta) C^-eta, C = 6ND",
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
        "json": summary_json(a) if a else {"question": QUESTION, "verdicts": []},
    }


def _evals_of(results_dir: str | Path, trials: Columns) -> Columns | None:
    evals = load_evals(results_dir)
    return None if evals is None else select(evals, np.isin(evals["trial_id"], trials["trial_id"]))
