"""Tuned learning rates: DIR/tuning/<sweep>/lr.json, read by the spec (lr = "tuned") and the report.

lr.json: {variant: {"sizes": {shape_id: {"N", "lr", "best_val_loss", "n_trials"[, "warmup_frac"]}},
"rule": {"log_c", "p", "formula"[, "lr_min", "lr_max", "n_range"]} or null}}; written by
orchestrator/tune.py next to its Optuna journal.
"""

from __future__ import annotations

import json
import math
import os

from records.layout import is_local, tuning_dir

TUNED = "tuned"  # `lr = "tuned"` in a sweep spec
JOURNAL, LR_FILE = "optuna.journal", "lr.json"


def lr_path(results_dir: str, sweep: str) -> str:
    return os.path.join(tuning_dir(results_dir, sweep), LR_FILE)


def journal_path(results_dir: str, sweep: str) -> str:
    return os.path.join(tuning_dir(results_dir, sweep), JOURNAL)


def tuned_sweeps(results_dir: str) -> list[str]:
    """Names of the sweeps with a tuning journal in results_dir."""
    if not is_local(results_dir):
        return []
    root = os.path.dirname(tuning_dir(results_dir, "x"))
    names = os.listdir(root) if os.path.isdir(root) else []
    return sorted(n for n in names if os.path.exists(journal_path(results_dir, n)))


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _shape_error(doc: object) -> str | None:
    """What in a parsed lr.json is not what `tiedsweep tune` writes (a hand edit, another version), or None."""
    if not isinstance(doc, dict):
        return f"expected an object of variants, got {type(doc).__name__}"
    for variant, entry in doc.items():
        sizes = entry.get("sizes") if isinstance(entry, dict) else None
        if not isinstance(sizes, dict):
            return f"{variant}: expected an object with 'sizes'"
        for label, size in sizes.items():
            if not isinstance(size, dict) or not (_number(size.get("lr")) and size["lr"] > 0):
                return f"{variant}.sizes.{label}.lr: expected a positive number"
        rule = entry.get("rule")
        if rule is not None and not (isinstance(rule, dict) and _number(rule.get("log_c")) and _number(rule.get("p"))):
            return f"{variant}.rule: expected numbers log_c and p"
    return None


class TunedFileError(ValueError):
    """lr.json exists but cannot be used; the message names the file."""


def read_tuned(results_dir: str, sweep: str) -> dict | None:
    """The parsed DIR/tuning/<sweep>/lr.json, or None if there is none (or DIR is an object store).
    TunedFileError if it is unreadable or not shaped as `tiedsweep tune` writes it."""
    if not is_local(results_dir):
        return None
    path = lr_path(results_dir, sweep)
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise TunedFileError(f"{path}: unreadable ({e}); run tiedsweep tune again to rewrite it") from None
    if problem := _shape_error(doc):
        raise TunedFileError(f"{path}: {problem}; run tiedsweep tune again to rewrite it")
    return doc


def tuned_lr(lrs: dict, variant: str, shape_id: str, n: int) -> float:
    """The tuned rate of (variant, shape) if that shape was tuned, else the variant's rule at N:
    lr = exp(log_c) * N^p, clipped to the searched [lr_min, lr_max].
    KeyError (its message names what is missing) if the variant has no tuning results."""
    if variant not in lrs:
        raise KeyError(f"no tuned rate for variant '{variant}' (tuned: {', '.join(lrs) or 'none'})")
    entry = lrs[variant]
    if shape_id in entry["sizes"]:
        return float(entry["sizes"][shape_id]["lr"])
    rule = entry.get("rule")
    if rule is None:
        raise KeyError(f"variant '{variant}' has no tuned rate (no proxy of it completed)")
    lr = math.exp(rule["log_c"]) * n ** rule["p"]
    return min(max(lr, rule.get("lr_min", lr)), rule.get("lr_max", lr))
