"""A sweep's planned trials as a manifest (records/manifest.py), so `resume` and `status` need no spec.

The trials are serialized from the frozen dataclasses (every config field) and rebuilt from them.
"""

from __future__ import annotations

import dataclasses

from orchestrator.sweep import Sweep, SweepTrial
from records.layout import manifest_path
from records.manifest import ManifestError, read_manifest_doc, sweeps_in, write_manifest_doc
from tiedattn.config import ModelConfig, TrainConfig, Trial
from tiedattn.data import DataConfig

__all__ = ["read_manifest", "sweeps_in", "write_manifest"]


def write_manifest(results_dir: str, sweep: Sweep, spec_text: str) -> None:
    trials = [dataclasses.asdict(st) for st in sweep.trials]
    write_manifest_doc(results_dir, sweep.name, sweep.path, spec_text, trials)


def _trial(d: dict) -> SweepTrial:
    t = d["trial"]
    train = {**t["train"], "save_at_steps": tuple(t["train"]["save_at_steps"])}
    trial = Trial(
        ModelConfig(**t["model"]), TrainConfig(**train), DataConfig(**t["data"]), t["workdir"], t["init_from"]
    )
    return SweepTrial(**{**d, "trial": trial})


def read_manifest(results_dir: str, sweep: str) -> tuple[dict, list[SweepTrial]]:
    """(the manifest's header: name, spec_path, spec_text; its trials). FileNotFoundError if none;
    records.manifest.ResultsVersionError if another results version wrote it, ManifestError if a
    trial in it does not match this version's configs (a key missing or unknown)."""
    doc = read_manifest_doc(results_dir, sweep)
    trials = []
    for i, d in enumerate(doc["trials"]):
        try:
            trials.append(_trial(d))
        except (KeyError, TypeError) as e:
            raise mismatch(results_dir, sweep, i, e) from None
    return {k: v for k, v in doc.items() if k != "trials"}, trials


def mismatch(results_dir: str, sweep: str, i: int, e: Exception) -> ManifestError:
    """The one-line error for a manifest trial that lacks (or mistypes) what this version reads."""
    path = manifest_path(results_dir, sweep)[2]
    return ManifestError(f"{path}: trials[{i}] does not match this tiedsweep's configs ({type(e).__name__}: "
                         f"{e}); run the sweep's spec again to rewrite it")  # fmt: skip
