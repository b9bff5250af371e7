"""Synthetic sweeps with known ground truth (a Chinchilla surface and a planted gap), written in the
results schema; for the tests and the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.laws import chinchilla
from analysis.tables import Columns

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022
VOCAB = 256
# every variant gets the baseline's 12 d_model**2 weights per layer, so that the planted gap is the
# whole gap; tying K=V halves the KV cache
_KV_FACTOR = {"tied_kv": 0.5, "tied_qkv": 0.5}


def synthetic_trials(
    *, gaps: dict[str, tuple[float, float]] | None = None, d_models: tuple[int, ...] = (64, 128, 256, 512),
    multipliers: tuple[float, ...] = (5, 10, 20, 40, 80), seeds: tuple[int, ...] = (0,), n_layer: int = 4,
    noise: float = 0.003, truth: dict[str, float] = TRUTH, rng: int = 0,
) -> Columns:  # fmt: skip
    """Completed trials: baseline loss from `truth` at (N, D = M N), times exp(noise * z); each variant
    in `gaps` (name -> (gap at the smallest M, change per doubling of M)) multiplies that by 1 + gap."""
    gaps = {"tied_kv": (0.02, 0.0)} if gaps is None else gaps
    gen = np.random.default_rng(rng)
    rows: list[dict] = []
    for variant, (g0, g1) in {"baseline": (0.0, 0.0), **gaps}.items():
        for d, m, s in np.array(np.meshgrid(d_models, multipliers, seeds, indexing="ij")).reshape(3, -1).T:
            n_non = 12 * n_layer * int(d) ** 2
            tokens = int(m * n_non)
            gap = g0 + g1 * np.log2(m / min(multipliers))
            loss = chinchilla(n_non, tokens, **truth) * (1 + gap) * np.exp(noise * gen.standard_normal())
            rows.append(
                dict(
                    trial_id=f"{variant}-{d}-{m:g}-{s}",
                    attempt=0,
                    status="completed",
                    variant=variant,
                    d_model=int(d),
                    n_layer=n_layer,
                    n_head=4,
                    seed=int(s),
                    lr=3e-3,
                    schedule="cosine",
                    tokens_per_param=float(m),
                    params_total=n_non + VOCAB * int(d),
                    params_non_embedding=n_non,
                    tokens=tokens,
                    flops=6.0 * n_non * tokens,
                    kv_bytes_per_token=int(4 * n_layer * int(d) * _KV_FACTOR.get(variant, 1.0)),
                    final_val_loss=float(loss),
                    final_train_loss=float(loss) - 0.01,
                    epochs=1.0,
                )
            )
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def write_results(directory: str | Path, trials: Columns, sweep: str = "synthetic") -> Path:
    """Write trials (and five-point eval curves of completed ones) as DIR/{trials,evals}/sweep=<sweep>/."""
    directory = Path(directory)
    n = len(trials["trial_id"])
    evals = {k: [] for k in ("trial_id", "attempt", "step", "tokens", "train_loss", "val_loss", "lr")}
    for i in range(n):
        if trials["status"][i] != "completed":
            continue
        for step, frac in enumerate((0.2, 0.4, 0.6, 0.8, 1.0)):
            loss = trials["final_val_loss"][i] * (1 + 0.5 * (1 - frac))
            for key, value in zip(
                evals, (trials["trial_id"][i], trials["attempt"][i], step, int(frac * trials["tokens"][i]),
                        loss, loss, trials["lr"][i]), strict=True,
            ):  # fmt: skip
                evals[key].append(value)
    for table, cols in (("trials", trials), ("evals", evals)):
        path = directory / table / f"sweep={sweep}"
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({k: np.asarray(v) for k, v in cols.items()}), path / "part-0.parquet")
    return directory
