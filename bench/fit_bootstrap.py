"""Benchmark: Chinchilla fit of 240 points with 1000 bootstrap resamples (should take seconds).

Run: .venv/bin/python bench/fit_bootstrap.py [--points 240] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis.fit import fit_chinchilla
from analysis.laws import chinchilla
from analysis.synthetic import TRUTH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=240)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # 8 sizes x 6 token multipliers x 5 seeds = 240 cells
    N, M = np.meshgrid(np.geomspace(1e7, 1e9, 8), [5.0, 10.0, 20.0, 40.0, 80.0, 160.0])
    N, M = np.resize(N.ravel(), args.points), np.resize(M.ravel(), args.points)
    D = M * N
    loss = chinchilla(N, D, **TRUTH) * np.exp(0.005 * rng.standard_normal(N.size))
    start = time.perf_counter()
    fit = fit_chinchilla(N, D, loss, n_boot=args.n_boot)
    seconds = time.perf_counter() - start
    print(f"{args.points} points, {args.n_boot} bootstrap resamples: {seconds:.2f} s")
    for name, value in fit.params.items():
        lo, hi = fit.intervals[name]
        print(f"  {name:5s} {value:9.4g} [{lo:.4g}, {hi:.4g}]  truth {TRUTH[name]:g}")


if __name__ == "__main__":
    main()
