"""Calibration of the verdict: how often it says "grows" when the truth does not grow, and how often
it does when it does, on simulated sweeps whose truth is written here from the literature.

Truth: the Chinchilla surface as refitted by Epoch AI (Besiroglu et al. 2024, "Chinchilla Scaling:
A replication attempt", eq. 2): L(N, D) = E + A / N**alpha + B / D**beta with E = 1.8172,
A = 482.01, B = 2085.43, alpha = 0.3478, beta = 0.3658 (N non-embedding parameters, D tokens). It
is coded below, not taken from analysis.laws. The variant is Q-K=V: a QKV shape with one of its 12
d_model**2 weight matrices per layer gone, N_variant = 11/12 N_QKV, trained on QKV's tokens
(tokens_basis = "baseline"), so D = M N_QKV for both.

Scenarios (each run `--sweeps` times; the rate's Monte Carlo error is sqrt(p (1 - p) / sweeps)):
  capacity    overtrain design (4 sizes, 10M-85M, x M in {1, 4, 16, 64, 256} x 3 seeds, 0.3%
              lognormal noise per trial); the variant is QKV's law at its own N: no effect of tying.
  size-only   thin, incomplete grid (3 sizes x the same M x 2 seeds; the largest size lacks M = 64
              and 256, the middle one M = 256); beyond capacity, a gap that depends on size only
              (+3%, +1.5%, +0.5%), constant in M.
  correlated  overtrain design, capacity-only truth; each (variant, size, seed) chain's error is a
              random walk along the M grid (0.15% per step) plus 0.15% of independent noise.
  power       overtrain design; beyond capacity, +0.25% per doubling of M.
  family      (with --family) 5 tied variants, all capacity-only, in one sweep: the share of sweeps
              with at least one false "grows" after Holm's correction.
The verdict is `analysis.verdict.verdicts` itself (its statistic and intervals; the joint fit, which
the trend does not use, is skipped). Its interval adds the spread of the capacity correction over
refits of QKV's surface; `--n-boot 0` (the default here, for speed) leaves that out: on these designs
it moves the slope's interval by less than 0.0001 percentage points per doubling.

Run: .venv/bin/python bench/verdict_calibration.py [--sweeps 400] [--jobs 2] [--n-boot 0] [--family]
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import Pool

import numpy as np

# Epoch AI's refit of Chinchilla (Besiroglu et al. 2024)
E, A, B, ALPHA, BETA = 1.8172, 482.01, 2085.43, 0.3478, 0.3658
SIZES = (10e6, 20e6, 40e6, 85e6)  # QKV non-embedding parameters, as the overtrain sweep's smaller shapes
THIN_SIZES = (10e6, 40e6, 150e6)
MULTIPLIERS = (1.0, 4.0, 16.0, 64.0, 256.0)
TIED_SHARE = 11 / 12  # Q-K=V keeps 11 of a layer's 12 d_model**2 matrices
NOISE = 0.003
PLANTED = 0.0025  # per doubling of M, beyond capacity (the power scenario)
GOALS = {"capacity": ("<=", 0.05), "size-only": ("<=", 0.05), "correlated": ("<=", 0.05), "power": (">=", 0.80),
         "family": ("<=", 0.05)}  # fmt: skip


def truth(N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Epoch AI's Chinchilla surface: L = E + A / N**alpha + B / D**beta."""
    return E + A / N**ALPHA + B / D**BETA


def simulate(scenario: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One simulated sweep as a plain table (variant, size, seed, N, D, M, loss, status)."""
    thin = scenario == "size-only"
    sizes, seeds = (THIN_SIZES, 2) if thin else (SIZES, 3)
    variants = [f"tied_{k}" for k in range(5)] if scenario == "family" else ["tied_kv"]
    rows = []
    for s, n_base in enumerate(sizes):
        for seed in range(seeds):
            for variant in ["baseline", *variants]:
                n = n_base if variant == "baseline" else TIED_SHARE * n_base
                walk = np.cumsum(0.0015 * rng.standard_normal(len(MULTIPLIERS)))
                for k, m in enumerate(MULTIPLIERS):
                    if thin and ((s == 2 and m >= 64) or (s == 1 and m >= 256)):
                        continue  # the largest, longest cells are the ones a real sweep lacks
                    loss = truth(n, m * n_base)
                    if variant != "baseline" and scenario == "size-only":
                        loss *= 1 + (0.03, 0.015, 0.005)[s]
                    if variant != "baseline" and scenario == "power":
                        loss *= 1 + PLANTED * np.log2(m / MULTIPLIERS[0])
                    if scenario == "correlated":
                        loss *= np.exp(walk[k] + 0.0015 * rng.standard_normal())
                    else:
                        loss *= np.exp(NOISE * rng.standard_normal())
                    rows.append((variant, f"size {s}", seed, n, m * n_base, m, loss))
    cols = list(zip(*rows, strict=True))
    names = ("variant", "size", "seed", "N", "D", "M", "loss")
    out = {k: np.array(v) for k, v in zip(names, cols, strict=True)}
    out["C"] = 6 * out["N"] * out["D"]
    out["status"] = np.full(out["N"].size, "completed")
    return out


def one(job: tuple[str, int, int]) -> tuple[str, list[str], list[float], list[float]]:
    """The verdicts' trends for one simulated sweep, and each tested slope and its interval's ends."""
    from analysis.verdict import verdicts

    scenario, i, n_boot = job
    cols = simulate(scenario, np.random.default_rng([i, len(scenario)]))
    found = verdicts(cols, n_boot=n_boot, seed=i, surfaces=False)
    return scenario, [v.trend for v in found], [v.slope[0] for v in found], [v.slope[1:] for v in found]


def summary(scenarios: list[str], results: list[tuple], seconds: float, jobs: int, n_boot: int) -> str:
    """The table of rates, Monte Carlo errors, goals and coverage, from the sweeps done so far."""
    done = {s: sum(r[0] == s for r in results) for s in scenarios}
    lines = [f"{min(done.values())}-{max(done.values())} simulated sweeps per scenario, {n_boot} refits of QKV's "
             f"surface each; {seconds:.0f} s on {jobs} processes"]  # fmt: skip
    head = ("grows", 16), ("goal", 7), ("none", 6), ("unres.", 6), ("mean slope", 11), ("coverage", 9)
    lines.append(f"{'scenario':11s} " + " ".join(f"{h:>{w}s}" for h, w in head))
    for s in scenarios:
        trends = [r[1] for r in results if r[0] == s]
        if not trends:
            continue
        slopes = np.array([x for r in results if r[0] == s for x in r[2]])
        ends = np.array([x for r in results if r[0] == s for x in r[3]])
        rate = np.mean(["grows" in t for t in trends]) if s == "family" else np.mean([t[0] == "grows" for t in trends])
        flat = [x for t in trends for x in t]
        true = PLANTED if s == "power" else 0.0
        cover = np.mean((ends[:, 0] <= true) & (true <= ends[:, 1]))
        mc = np.sqrt(max(rate * (1 - rate), 1 / len(trends)) / len(trends))  # at 0 or 1: the error of 1 in n
        op, goal = GOALS[s]
        met = rate <= goal if op == "<=" else rate >= goal
        share = {k: 100 * flat.count(k) / len(flat) for k in ("none", "unresolved")}
        lines.append(
            f"{s:11s} {100 * rate:6.1f}% ± {100 * mc:4.1f}  {op}{100 * goal:3.0f}% {share['none']:5.1f}% "
            f"{share['unresolved']:5.1f}% {100 * slopes.mean():+9.3f}%  {100 * cover:7.1f}%  "
            + ("met" if met else "NOT MET")
        )  # fmt: skip
    lines.append("grows: share of sweeps whose verdict says 'grows' (± its Monte Carlo standard error; family: at "
                 "least one of 5); coverage: share of 95% intervals of the tested slope that contain the true one "
                 "(0, or +0.25%/doubling for power)")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=400, help="simulated sweeps per scenario")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=0, help="refits of QKV's surface per sweep (0: point fit)")
    parser.add_argument("--family", action="store_true", help="also 5 null variants in one sweep (Holm)")
    parser.add_argument("--only", nargs="*", default=None, help="scenarios to run (default: all four)")
    args = parser.parse_args()
    scenarios = args.only or ["capacity", "size-only", "correlated", "power"] + ["family"] * args.family
    jobs = [(s, i, args.n_boot) for i in range(args.sweeps) for s in scenarios]  # interleaved: any prefix is balanced
    start = time.perf_counter()
    results = []
    with Pool(args.jobs) as pool:
        for k, r in enumerate(pool.imap(one, jobs, chunksize=2), 1):
            results.append(r)
            if k % (25 * len(scenarios)) == 0 and k < len(jobs):  # progress, usable if the run is cut short
                print(summary(scenarios, results, time.perf_counter() - start, args.jobs, args.n_boot), flush=True)
    print(summary(scenarios, results, time.perf_counter() - start, args.jobs, args.n_boot))


if __name__ == "__main__":
    main()
