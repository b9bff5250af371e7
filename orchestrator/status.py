"""`tiedsweep status`: where a sweep stands, from its manifest, results and leases (and its tuning)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from orchestrator.lease import leases_supported, owner_alive, read_leases
from orchestrator.manifest import mismatch, sweeps_in
from records.manifest import read_manifest_doc
from records.store import read_trials
from records.tuning import tuned_sweeps

LEASE_TTL_S = 60.0  # the drivers' default (RunOptions.lease_ttl_s)
STATUSES = ("completed", "running", "pending", "failed", "diverged", "interrupted")


def sweep_status(results_dir: str, sweep: str | None = None) -> dict:
    """{sweep: {"by_cell": {variant: {shape_id: {status: n}}}, "totals", "tokens_done", "tokens_left", "eta_s"}}.

    ETA = FLOPs left / the FLOP rate completed trials achieved per trial, divided by the number of
    trials running now (at least 1): a rough figure, stated as such. Reads the manifest's trials as
    plain dicts (rebuilding 10^4 SweepTrials took most of the time), five columns of the trials
    table, and the leases that exist.
    """
    tuned = set(tuned_sweeps(results_dir))
    names = [sweep] if sweep else sorted(set(sweeps_in(results_dir)) | tuned)
    if not names:
        raise FileNotFoundError(f"{results_dir}: no sweep manifest found")
    out = {}
    for name in names:
        tuning = None  # never tuned here
        if name in tuned:  # optuna (and pandas: ~0.5 s) only then
            from orchestrator.tune import tuning_status

            tuning = tuning_status(results_dir, name)
        try:
            trials = read_manifest_doc(results_dir, name)["trials"]  # orchestrator.manifest: SweepTrial dicts
        except FileNotFoundError:
            if tuning is None:
                raise
            out[name] = {"tuning": tuning}  # tuned, not run yet
            continue
        table = read_trials(results_dir, name).select(["trial_id", "status", "tokens", "flops", "wall_s"]).to_pylist()
        rows = {r["trial_id"]: r for r in table}
        leases = read_leases(results_dir, name) if leases_supported(results_dir) else {}
        now = time.time()
        by_cell: dict = defaultdict(lambda: defaultdict(Counter))
        totals: Counter = Counter()
        tokens_done = tokens_left = flops_left = 0.0
        for i, st in enumerate(trials):
            try:
                row = rows.get(st["trial_id"])
                cell = by_cell[st["trial"]["model"]["variant"]][st["shape_id"]]
                tokens, flops = st["trial"]["train"]["tokens"], st["flops"]
            except (KeyError, TypeError) as e:  # a damaged manifest, as read_manifest reports it
                raise mismatch(results_dir, name, i, e) from None
            state = row["status"] if row else "pending"
            lease = leases.get(st["trial_id"]) if state != "completed" else None
            if lease is not None and now - lease.heartbeat < LEASE_TTL_S and owner_alive(lease.owner):
                state = "running"  # a dead driver's lease is not a running trial
            cell[state] += 1
            totals[state] += 1
            if state == "completed":
                tokens_done += row["tokens"] or 0
            else:
                tokens_left += tokens
                flops_left += flops
        # Rows of trials an earlier spec of this sweep planned: a new manifest never hides them.
        planned = {st["trial_id"] for st in trials}
        earlier = Counter(r["status"] for r in table if r["trial_id"] not in planned)
        done = [r for r in table if r["status"] == "completed" and r.get("wall_s")]
        rate = sum(r["flops"] for r in done) / sum(r["wall_s"] for r in done) if done else None
        eta = flops_left / rate / max(1, totals["running"]) if rate else None
        out[name] = {
            "trials": len(trials),
            "totals": {s: totals[s] for s in STATUSES if totals[s]},
            "by_cell": {v: {size: dict(c) for size, c in sizes.items()} for v, sizes in by_cell.items()},
            "tokens_done": int(tokens_done),
            "tokens_left": int(tokens_left),
            "eta_s": eta,
            "earlier": dict(earlier),  # status -> trials with results that the current spec no longer lists
        } | ({"tuning": tuning} if tuning is not None else {})
    return out


def format_status(report: dict) -> str:
    if any("tuning" in s for s in report.values()):
        from orchestrator.tune import format_tuning
    lines = []
    for name, s in report.items():
        if "trials" not in s:
            lines += [f"{name}: not run yet; learning-rate tuning:", *format_tuning(s["tuning"])]
            continue
        totals = ", ".join(f"{n} {k}" for k, n in s["totals"].items())
        eta = f"{s['eta_s'] / 60:.1f} min (rough)" if s["eta_s"] is not None else "? (no completed trial yet)"
        lines.append(f"{name}: {s['trials']} trials: {totals}")
        lines.append(f"  tokens done {s['tokens_done']:,}, left {s['tokens_left']:,}; ETA {eta}")
        if s.get("earlier"):
            counts = ", ".join(f"{n} {k}" for k, n in sorted(s["earlier"].items()))
            lines.append(f"  earlier specs: {counts} (trials no longer in the spec; results kept, left out of reports)")
        for variant, sizes in s["by_cell"].items():
            cells = "  ".join(f"{size}: " + "/".join(f"{n} {k}" for k, n in c.items()) for size, c in sizes.items())
            lines.append(f"  {variant:>14}  {cells}")
        if "tuning" in s:
            lines += ["  learning-rate tuning:", *("  " + line for line in format_tuning(s["tuning"]))]
    return "\n".join(lines)
