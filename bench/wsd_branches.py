"""WSD branches against independent runs, side by side in one process (a benchmark, not a test).

For one small shape and budgets M = 4, 8, 16, 32, 64 tokens/param it trains:
  cosine: one independent cosine run per budget (the classic sweep);
  wsd:    one independent WSD run per budget (what each branch must reproduce);
  branch: one WSD trunk to the last branch point, then one cooldown branch per budget
          (orchestrator/branches.py, as `schedule = "wsd-branches"` runs them).
and prints total tokens, FLOPs and wall time of each plan, their ratios, and per budget the final
validation loss of every plan (branch - wsd should be 0 up to float noise; branch - cosine is
what the cheaper schedule costs or gains). Hägele et al. 2024 report WSD cooldowns matching
cosine at ~35-40% less compute over a sweep.

    .venv/bin/python bench/wsd_branches.py [--size t1] [--multipliers 4 8 16 32 64] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orchestrator.spec import load_spec
from tiedattn.train import train

SPEC = """
name = "bench-wsd"
[data]
corpus = "stdlib"
vocab_size = 1024
max_bytes = 8_000_000
[train]
batch_size = 16
n_evals = 2
eval_tokens = 16384
cooldown_frac = {cooldown}
cooldown_shape = "1-sqrt"
[grid]
variant = ["QKV"]
size = ["{size}"]
tokens_per_param = {multipliers}
seq_len = [64]
schedule = ["{schedule}"]
"""


def _sweep(tmp: str, schedule: str, args: argparse.Namespace):
    path = os.path.join(tmp, f"{schedule}.toml")
    with open(path, "w") as f:
        f.write(
            SPEC.format(size=args.size, multipliers=list(args.multipliers), schedule=schedule, cooldown=args.cooldown)
        )
    return load_spec(path)


def _train(trial, workdir: str | None = None, init_from: str | None = None) -> tuple[dict, float]:
    trial = dataclasses.replace(
        trial, workdir=workdir, init_from=init_from, train=dataclasses.replace(trial.train, threads=1)
    )
    t0 = time.perf_counter()
    result = train(trial)
    return result.summary, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="t1")
    p.add_argument("--multipliers", type=float, nargs="+", default=[4, 8, 16, 32, 64])
    p.add_argument("--cooldown", type=float, default=0.2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cosine, branches = _sweep(tmp, "cosine", args), _sweep(tmp, "wsd-branches", args)
        # Prepare the data once, outside the timings.
        _train(
            dataclasses.replace(
                cosine.trials[0].trial, train=dataclasses.replace(cosine.trials[0].trial.train, tokens=1024)
            )
        )
        plans = {"cosine": {}, "wsd": {}, "branch": {}}
        cost = {name: {"tokens": 0, "flops": 0.0, "wall_s": 0.0} for name in plans}

        def add(plan: str, m: float | None, summary: dict, wall: float, tokens: int) -> None:
            cost[plan]["tokens"] += tokens
            cost[plan]["flops"] += summary["flops_per_token"] * tokens
            cost[plan]["wall_s"] += wall
            if m is not None:
                plans[plan][m] = summary["final_val_loss"]

        for st in cosine.trials:
            s, wall = _train(st.trial)
            add("cosine", st.tokens_per_param, s, wall, s["tokens"])
        trunk = next(st for st in branches.trials if st.role == "trunk")
        trunk_dir = os.path.join(tmp, "trunk")
        s, wall = _train(trunk.trial, workdir=trunk_dir)
        add("branch", None, s, wall, s["tokens"])
        for st in (st for st in branches.trials if st.role == "branch"):
            start = os.path.join(trunk_dir, f"branch-{st.branch_step}.pt")
            s, wall = _train(st.trial, workdir=os.path.join(tmp, st.trial_id), init_from=start)
            add("branch", st.tokens_per_param, s, wall, s["tokens"] - st.branch_step * s["tokens"] // s["steps"])
            s, wall = _train(st.trial)  # the same budget as an independent WSD run
            add("wsd", st.tokens_per_param, s, wall, s["tokens"])

    out = {
        "size": args.size,
        "cooldown_frac": args.cooldown,
        "cost": cost,
        "ratio_branch_vs_cosine": {k: cost["branch"][k] / cost["cosine"][k] for k in ("flops", "wall_s")},
        "final_val_loss": plans,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"shape {args.size}, budgets M = {args.multipliers}, cooldown {args.cooldown:.0%} (1-sqrt), 1 thread")
    for name, c in cost.items():
        print(f"  {name:>7}: {c['tokens']:>11,} tokens  {c['flops']:.3e} FLOPs  {c['wall_s']:7.1f} s")
    r = out["ratio_branch_vs_cosine"]
    print(f"  branches / independent cosine: FLOPs x{r['flops']:.3f}, wall x{r['wall_s']:.3f}")
    print(f"  {'M':>6} {'cosine':>9} {'wsd':>9} {'branch':>9} {'br-wsd':>10} {'br-cos':>9}")
    for m in sorted(plans["branch"]):
        c, w, b = plans["cosine"][m], plans["wsd"][m], plans["branch"][m]
        print(f"  {m:>6g} {c:>9.4f} {w:>9.4f} {b:>9.4f} {b - w:>+10.2e} {b - c:>+9.4f}")


if __name__ == "__main__":
    main()
