"""Stage what the next machine needs to continue this study: every result file, and the checkpoints
of whatever has not completed (a running trial's checkpoint.pt; a WSD trunk's checkpoint.pt and the
branch-<step>.pt points its pending branches start from). Run from the repository root, then commit:

    .venv/bin/python studies/overtrain-cpu/save_progress.py && git commit -m "overtrain-cpu: progress"

Checkpoints are ignored by .gitignore (they are large and only matter while a chain is unfinished),
so they are added with --force; a finished chain's checkpoints are never staged.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from records.store import read_trials

STUDY = Path(__file__).resolve().parent
SWEEP = "overtrain-cpu"
_TRUNK = re.compile(r"trunk-(?P<chain>.+)-s(?P<seed>\d+)-[0-9a-f]{8}")
_TRIAL = re.compile(r"(?P<chain>.+)-m[0-9.e-]+-s(?P<seed>\d+)-[0-9a-f]{8}")


def to_stage(results: Path) -> list[Path]:
    rows = read_trials(str(results), SWEEP).to_pylist()
    done = {r["trial_id"] for r in rows if r["status"] == "completed"}
    ckpts = results / "checkpoints" / SWEEP
    trials = [p.name for p in ckpts.iterdir() if p.is_dir()] if ckpts.exists() else []
    open_chains = {(m["chain"], m["seed"]) for t in trials if t not in done and (m := _TRIAL.fullmatch(t))}
    out = []
    for t in trials:
        trunk = _TRUNK.fullmatch(t)
        if trunk and (t not in done or (trunk["chain"], trunk["seed"]) in open_chains):
            out += sorted((ckpts / t).glob("branch-*.pt"))
        if t not in done:
            out += [p for p in (ckpts / t / "checkpoint.pt",) if p.exists()]
    return out


def main() -> None:
    results = STUDY / "results"
    subprocess.run(["git", "add", str(results)], check=True)
    staged = to_stage(results)
    if staged:
        subprocess.run(["git", "add", "--force", *map(str, staged)], check=True)
    size = sum(p.stat().st_size for p in staged)
    print(f"staged the results and {len(staged)} checkpoint files ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
