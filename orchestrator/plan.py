"""`tiedsweep run --dry-run`: a sweep's trial table (or, past SUMMARY_OVER trials, a summary), total
compute and a time estimate, before anything runs."""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from operator import attrgetter

from orchestrator.sweep import Sweep
from tiedattn.accounting import account
from tiedattn.config import total_steps
from tiedattn.variants import parse_variant


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
        import torch  # only here: the CLI's dry run stays free of torch's ~1 s import

        n = torch.cuda.device_count()
        return max(1, int(n / sweep.gpus)), f"{n} GPUs here / {sweep.gpus:g} per trial"
    n = os.cpu_count() or 1
    return max(1, int(n / sweep.cpus)), f"{n} CPUs here / {sweep.cpus:g} per trial"


SUMMARY_OVER = 200  # trials: past this the dry run prints a summary (--all: every row)
TOP = 20  # the most expensive trials the summary lists
HEADER = ("id", "variant", "shape", "N non-emb", "N total", "tokens", "tokens_per_param", "FLOPs", "epochs", "",
          "workers", "est. time")  # fmt: skip


def _seconds(t, flops_per_s: float, step_s: float) -> float:
    """A trial's estimated time: FLOPs / (flops_per_s x workers), data parallelism taken as linear,
    plus step_s per optimizer step it runs (a WSD branch: its cooldown's, from its branch_step on).
    Tiny models are bound by that per-step overhead (Python, kernel launches, the optimizer over every
    tensor), not by FLOPs: on 2 CPU cores a d32 2-layer model took 65 s for 1,500 steps whose FLOPs
    say 21 s (sweeps/recall.toml)."""
    tc = t.trial.train
    steps = total_steps(tc, tc.seq_len or t.trial.model.seq_len) - (t.branch_step or 0)
    return t.flops / flops_per_s / t.workers + step_s * steps


def _epochs(t, train_tokens: int | None) -> float | None:
    """Epochs of unique data a trial trains on (None: corpus size unknown)."""
    if train_tokens is None:
        return None
    T = t.trial.train.seq_len or t.trial.model.seq_len
    return t.trial.train.tokens / max(1, (train_tokens - 1) // T * T)


def _cells(t, train_tokens: int | None, seconds: float) -> tuple[str, ...]:
    """One trial's row of the table; seconds: its estimated time (_seconds)."""
    m, tc = t.trial.model, t.trial.train
    acct = account(m)  # cached per model: a sweep repeats each over budgets and seeds
    epochs = _epochs(t, train_tokens)
    params = (acct.params_non_embedding, acct.params_total, tc.tokens)
    cells = (t.trial_id, parse_variant(m.variant).paper, m.label, *map(_si, params), f"{t.tokens_per_param:g}",
             f"{t.flops:.2e}", "?" if epochs is None else f"{epochs:.2f}", "R" if epochs and epochs > 1 else "",
             str(t.workers), _duration(seconds))  # fmt: skip
    return cells


def _table(rows, widths: list[int]) -> Iterator[str]:
    for r in rows:
        yield "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))


def _widths(rows) -> list[int]:
    widths = [len(h) for h in HEADER]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    return widths


def _by(trials, times, key, label) -> list[str]:
    """Trials, FLOPs and trial-hours (times: each trial's estimated seconds) per label(key(t)), the label
    made once per distinct key (a 10^5-trial summary spent ~0.15 s naming each trial's variant): keys
    that compare equal print alike (no budget is -0.0)."""
    groups: dict = {}
    labels: dict = {}
    for t, seconds in zip(trials, times, strict=True):
        k = key(t)
        name = labels.get(k)
        if name is None:
            name = labels[k] = label(k)
        n, flops, s = groups.get(name, (0, 0.0, 0.0))
        groups[name] = (n + 1, flops + t.flops, s + seconds * t.workers)
    width = max(len(str(k)) for k in groups)
    return [f"  {k!s:<{width}}  {n:>8} trials  {f:.3g} FLOPs  {s / 3600:.3g} trial-hours"
            for k, (n, f, s) in groups.items()]  # fmt: skip


def dry_run_lines(sweep: Sweep, train_tokens: int | None, slots: int | None = None,
                  full: bool | None = None) -> Iterator[str]:  # fmt: skip
    """The dry run, line by line: one row per trial (full=True, or None with <= SUMMARY_OVER trials)
    or a summary (counts and cost by variant, shape and tokens_per_param; the TOP most expensive
    trials), then the sweep's total compute. Rows are made twice (widths, then lines), never held.

    train_tokens: the corpus's training tokens (prepare_data(sweep.data).train.size), for epochs;
    None shows "?". slots: trials run at once (None: what this machine fits). Times are FLOPs /
    (sweep.flops_per_s * workers), data parallelism taken as linear; wall time packs trials
    longest-first, a W-worker trial onto the W least-loaded slots at once.
    """
    trials, rate, step_s = sweep.trials, sweep.flops_per_s, sweep.step_s
    times = [_seconds(t, rate, step_s) for t in trials]  # once each: the table, groups, total and packing
    full = len(trials) <= SUMMARY_OVER if full is None else full
    repeats = []  # (trial, epochs) of trials that see their data more than once
    if train_tokens is not None:
        repeats = [(t, e) for t in trials if (e := _epochs(t, train_tokens)) > 1]
    if full:
        widths = _widths(_cells(t, train_tokens, s) for t, s in zip(trials, times, strict=True))
        yield from _table([HEADER], widths)
        yield from _table((_cells(t, train_tokens, s) for t, s in zip(trials, times, strict=True)), widths)
    else:
        top = heapq.nlargest(TOP, zip(trials, times, strict=True), key=lambda ts: ts[0].flops)
        yield f"{len(trials)} trials: a summary (--all prints every row)"
        yield "by variant:"
        yield from _by(trials, times, attrgetter("trial.model.variant"), lambda v: parse_variant(v).paper)
        yield "by shape:"
        yield from _by(trials, times, attrgetter("shape_id"), str)
        yield "by tokens_per_param:"
        yield from _by(trials, times, attrgetter("tokens_per_param"), lambda x: f"{x:g}")
        yield f"the {len(top)} most expensive trials:"
        rows = [_cells(t, train_tokens, s) for t, s in top]
        yield from _table([HEADER, *rows], _widths(rows))
    if slots is None:
        slots, why = local_slots(sweep)
    else:
        why = "given"
    loads = [0.0] * slots
    for s, w in sorted(((s, t.workers) for t, s in zip(trials, times, strict=True)), reverse=True):  # longest first
        if w == 1:  # onto the least-loaded slot
            heapq.heapreplace(loads, loads[0] + s)
            continue
        group = heapq.nsmallest(min(w, slots), loads)  # onto the W least-loaded slots at once
        for load in group:
            loads.remove(load)
        loads += [max(group) + s * w / min(w, slots)] * len(group)
        heapq.heapify(loads)
    t0 = trials[0]
    total = sum(t.flops for t in trials)
    yield ""
    yield (f"sweep {sweep.name}: {len(trials)} trials; tokens_per_param = tokens / N ({t0.n_basis} params of the "
           f"{t0.tokens_basis} model of each shape); match = {t0.match}; R = repeats data (epochs > 1)")  # fmt: skip
    hours = sum(s * t.workers for t, s in zip(trials, times, strict=True)) / 3600
    yield (f"total: {total:.3g} FLOPs, {hours:.3g} trial-hours (worker-hours), "
           f"~{_duration(max(loads))} wall on {slots} parallel slots ({why})")  # fmt: skip
    per_step, keys = (f" + {step_s:g} s per step", "flops_per_s, step_s") if step_s else ("", "flops_per_s")
    yield f"times are estimates: FLOPs / {rate:.3g} FLOP/s per trial{per_step} (set [resources] {keys})"
    if full:
        for t, e in repeats:
            yield f"warning: {t.trial_id} repeats data: {e:.2f} epochs of {train_tokens:,} tokens"
    elif repeats:
        worst = max(e for _, e in repeats)
        yield (f"warning: {len(repeats)} trials repeat data (up to {worst:.2f} epochs of {train_tokens:,} tokens; "
               "--all lists them)")  # fmt: skip


def dry_run_table(sweep: Sweep, train_tokens: int | None, slots: int | None = None, full: bool | None = None) -> str:
    """dry_run_lines(...) as one string."""
    return "\n".join(dry_run_lines(sweep, train_tokens, slots, full))
