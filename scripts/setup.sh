#!/usr/bin/env bash
# Create .venv if missing and install tiedsweep into it; a no-op when nothing changed.
# Torch: on a machine without CUDA, the CPU build torch==2.13.0 (an unpinned torch pulls a multi-GB
# CUDA build); set TIEDSWEEP_TORCH_INDEX=https://download.pytorch.org/whl/cpu where pip's default
# index would not give a CPU wheel. On a CUDA machine an installed CUDA torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.tiedsweep-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && exit 0
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  .venv/bin/python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || pip install torch
else
  .venv/bin/python -c "import torch" 2>/dev/null || \
    pip install torch==2.13.0 ${TIEDSWEEP_TORCH_INDEX:+--index-url "$TIEDSWEEP_TORCH_INDEX"}
fi
pip install -e ".[dev]"
echo "$want" > "$stamp"
