#!/usr/bin/env bash
# Set up .venv if needed, then run the main job on the embedded default: the demo sweep
# (sweeps/demo.toml: 4 variants x 3 tiny sizes x 3 token multipliers, trained on the Python
# standard library's own sources) on a local Ray, then fits, plots and the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tiedsweep run sweeps/demo.toml --results results --report "$@"
