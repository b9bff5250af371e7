"""`tiedsweep run --dry-run`: a sweep's trial table, total compute and a time estimate, before anything runs."""

from __future__ import annotations

import heapq
import os

import torch

from orchestrator.sweep import Sweep
from tiedattn.accounting import account
from tiedattn.attention import parse_variant


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _duration(seconds: float) -> str:
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.0f} s"


def local_slots(sweep: Sweep) -> tuple[int, str]:
    """Trials this machine runs at once with the sweep's per-trial resources, and why."""
    if sweep.gpus > 0:
        n = torch.cuda.device_count()
        return max(1, int(n / sweep.gpus)), f"{n} GPUs here / {sweep.gpus:g} per trial"
    n = os.cpu_count() or 1
    return max(1, int(n / sweep.cpus)), f"{n} CPUs here / {sweep.cpus:g} per trial"


def dry_run_table(sweep: Sweep, train_tokens: int | None, slots: int | None = None) -> str:
    """One row per trial, then the sweep's total compute and a line per trial that repeats data.

    train_tokens: the corpus's training tokens (prepare_data(sweep.data).train.size), for epochs;
    None shows "?". slots: trials run at once (None: what this machine fits). Times are FLOPs /
    (sweep.flops_per_s * workers), data parallelism taken as linear; wall time packs trials
    longest-first, a W-worker trial onto the W least-loaded slots at once.
    """
    header = ("id", "variant", "shape", "N non-emb", "N total", "tokens", "tokens_per_param", "FLOPs", "epochs", "")
    header += ("workers", "est. time")
    rows, warnings, seconds = [header], [], []
    for t in sweep.trials:
        m, tc = t.trial.model, t.trial.train
        T = tc.seq_len or m.seq_len
        acct = account(m)
        epochs = None if train_tokens is None else tc.tokens / max(1, (train_tokens - 1) // T * T)
        repeats = epochs is not None and epochs > 1
        seconds.append(t.flops / sweep.flops_per_s / t.workers)
        params = (acct.params_non_embedding, acct.params_total, tc.tokens)
        cells = [t.trial_id, parse_variant(m.variant).paper, m.label, *map(_si, params), f"{t.tokens_per_param:g}"]
        cells.append(f"{t.flops:.2e}")
        rows.append(
            (
                *cells,
                "?" if epochs is None else f"{epochs:.2f}",
                "R" if repeats else "",
                str(t.workers),
                _duration(seconds[-1]),
            )
        )
        if repeats:
            warnings.append(f"warning: {t.trial_id} repeats data: {epochs:.2f} epochs of {train_tokens:,} tokens")
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    if slots is None:
        slots, why = local_slots(sweep)
    else:
        why = "given"
    loads = [0.0] * slots
    for s, w in sorted(zip(seconds, (t.workers for t in sweep.trials), strict=True), reverse=True):
        group = heapq.nsmallest(min(w, slots), loads)  # longest first onto the least-loaded slots
        for load in group:
            loads.remove(load)
        loads += [max(group) + s * w / min(w, slots)] * len(group)
        heapq.heapify(loads)
    device_s = sum(s * t.workers for s, t in zip(seconds, sweep.trials, strict=True))
    t0 = sweep.trials[0]
    lines += [
        "",
        f"sweep {sweep.name}: {len(sweep.trials)} trials; tokens_per_param = tokens / N ({t0.n_basis} params of the "
        f"{t0.tokens_basis} model of each shape); match = {t0.match}; R = repeats data (epochs > 1)",
        f"total: {sum(t.flops for t in sweep.trials):.3g} FLOPs, {device_s / 3600:.3g} trial-hours (worker-hours), "
        f"~{_duration(max(loads))} wall on {slots} parallel slots ({why})",
        f"times are estimates: FLOPs / {sweep.flops_per_s:.3g} FLOP/s per trial (set [resources] flops_per_s)",
        *warnings,
    ]
    return "\n".join(lines)
