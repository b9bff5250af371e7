#!/usr/bin/env bash
# Set up .venv if needed, then run the main job on the embedded default: one small model trained on
# the Python standard library's own sources, printing its loss curve.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tiedsweep train --variant Q-K=V --d-model 128 --n-layer 2 --n-head 4 --seq-len 128 \
  --vocab-size 2048 --max-bytes 8000000 --tokens 1000000 --batch-size 16 "$@"
