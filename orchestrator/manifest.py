"""A sweep's planned trials, stored in its results directory so `resume` and `status` need no spec.

DIR/manifests/<sweep>.json holds the expanded trials of the latest `run` of that sweep (every
config field, serialized from the frozen dataclasses), plus a copy of the spec text. Written
atomically (temp file + rename) like everything under DIR.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

from orchestrator.results import check_name, filesystem_for
from orchestrator.spec import Sweep, SweepTrial
from tiedattn.data import DataConfig
from tiedattn.model import ModelConfig
from tiedattn.train import TrainConfig, Trial


def _path(results_dir: str, sweep: str) -> tuple:
    fs, base = filesystem_for(results_dir)
    return fs, f"{base}/manifests", f"{base}/manifests/{check_name(sweep, 'sweep')}.json"


def write_manifest(results_dir: str, sweep: Sweep, spec_text: str) -> None:
    fs, folder, path = _path(results_dir, sweep.name)
    doc = {
        "name": sweep.name,
        "spec_path": sweep.path,
        "spec_text": spec_text,
        "trials": [dataclasses.asdict(st) for st in sweep.trials],
    }
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/_tmp-{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(doc).encode())
    fs.move(tmp, path)


def _trial(d: dict) -> SweepTrial:
    t = d["trial"]
    train = {**t["train"], "save_at_steps": tuple(t["train"]["save_at_steps"])}
    trial = Trial(
        ModelConfig(**t["model"]), TrainConfig(**train), DataConfig(**t["data"]), t["workdir"], t["init_from"]
    )
    return SweepTrial(**{**d, "trial": trial})


def read_manifest(results_dir: str, sweep: str) -> tuple[dict, list[SweepTrial]]:
    """(the manifest's header: name, spec_path, spec_text; its trials). FileNotFoundError if none."""
    fs, _, path = _path(results_dir, sweep)
    with fs.open_input_stream(path) as f:
        doc = json.loads(f.read())
    return {k: v for k, v in doc.items() if k != "trials"}, [_trial(d) for d in doc["trials"]]


def sweeps_in(results_dir: str) -> list[str]:
    """Names of the sweeps that have a manifest in results_dir."""
    import pyarrow.fs as pafs

    fs, folder, _ = _path(results_dir, "x")
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(i.base_name[:-5] for i in infos if i.base_name.endswith(".json") and not i.base_name.startswith("_"))
