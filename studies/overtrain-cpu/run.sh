#!/usr/bin/env bash
# The whole study from scratch on this machine's embedded Ray: tune the learning rates, train every
# trial, compact the results, write the report (wall time as measured: README.md). Run it again, or
# `tiedsweep resume`, to continue after an interruption: finished trials and proxies are kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
S=studies/overtrain-cpu
ts() { .venv/bin/python -m tiedsweep "$@"; }
ts tune "$S/spec.toml" --results "$S/results" --quiet
ts run "$S/spec.toml" --results "$S/results" --quiet ||
  ts resume "$S/results" --quiet  # once more, from their checkpoints, for trials a fault left unfinished
ts compact "$S/results"
ts report "$S/results" --out "$S/report"
