"""The learning-rate pilot's choice: each variant's rate for sweeps/recall.toml (README.md's pilot table).

Best = the lowest final held-out loss over the rates sweeps/recall_lr.toml tried. Not the highest
accuracy (analysis.accuracy.best_lr's rule for the report): a variant that does not learn MQAR sits
on the ~0.13 plateau at every rate, where accuracies differ by noise (0.133 vs 0.134) and cannot
rank rates, while the loss still does.

    .venv/bin/python studies/recall-cpu/pick_rates.py [RESULTS]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from records.store import read_trials

RESULTS = Path(__file__).resolve().parent / "results"
PILOT = "recall-lr"  # sweeps/recall_lr.toml's sweep name


def pick(results: Path) -> dict[str, tuple[float, dict[float, tuple[float, float]]]]:
    """variant (paper name) -> (its kept rate, {rate: (final accuracy, final loss)})."""
    by: dict[str, dict[float, tuple[float, float]]] = defaultdict(dict)
    for r in read_trials(str(results), PILOT).to_pylist():
        if r["status"] == "completed":
            by[r["variant_paper"]][r["lr"]] = (r["final_val_accuracy"], r["final_val_loss"])
    return {v: (min(rates, key=lambda lr: rates[lr][1]), rates) for v, rates in sorted(by.items())}


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    for variant, (kept, rates) in pick(results).items():
        cells = " | ".join(f"{lr:g}: {acc:.3f} / {loss:.3f}" for lr, (acc, loss) in sorted(rates.items()))
        print(f"| {variant} | {cells} | {kept:g} |")


if __name__ == "__main__":
    main()
