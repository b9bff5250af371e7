"""The committed CPU study (studies/overtrain-cpu): its spec still names the trials its results hold,
and its verdicts, recomputed from the committed results, equal the committed verdict.json in every
number the report prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from analysis.report import write_report
from orchestrator.spec import load_spec, tuned_for_spec
from records.store import read_trials

STUDY = Path(__file__).resolve().parent.parent / "studies" / "overtrain-cpu"
RESULTS = STUDY / "results"


def _printed(x):
    """As the report prints it: floats to 3 significant digits, in lists and dicts too."""
    if isinstance(x, float):
        return float(f"{x:.3g}")
    if isinstance(x, dict):
        return {k: _printed(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_printed(v) for v in x]
    return x


def _recorded() -> list[dict]:
    if not (RESULTS / "trials").exists():
        pytest.skip("no committed results yet (studies/overtrain-cpu/README.md)")
    return read_trials(str(RESULTS), "overtrain-cpu").to_pylist()


def test_the_spec_still_names_every_recorded_trial():
    rows = _recorded()
    sweep = load_spec(str(STUDY / "spec.toml"), tuned=tuned_for_spec(str(STUDY / "spec.toml"), str(RESULTS)))
    if {r["corpus_fingerprint"] for r in rows} != {sweep.trials[0].row()["corpus_fingerprint"]}:
        pytest.skip(f"the stdlib corpus of Python {sys.version.split()[0]} is not the study's (3.11.7): other ids")
    assert {r["trial_id"] for r in rows} <= {t.trial_id for t in sweep.trials}  # a code change moved no id
    assert all(r["status"] in ("completed", "interrupted", "failed", "diverged") for r in rows)


def test_the_committed_verdict_regenerates(tmp_path):
    _recorded()
    committed = STUDY / "report" / "verdict.json"
    if not committed.exists():
        pytest.skip("no committed report yet: the study is still running")
    out = write_report(RESULTS, tmp_path)  # as run.sh: tiedsweep report RESULTS --out report
    assert _printed(out["json"]) == _printed(json.loads(committed.read_text()))
