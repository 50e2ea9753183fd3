#!/usr/bin/env bash
# The one GPU benchmark (bench/gpu_suite.py): prune steps at LLaMA-7B shapes in resident and non-resident
# mode, evaluation against a bare forward, peak memory, the projected wall time of the paper's COPAL job,
# and 2:4 through semi-structured sparse tensors; one JSON file in bench/results/. Needs this repository and
# a Python with torch (CUDA), transformers, tqdm, numpy and safetensors; no Hydra, no install of the package.
#   bench/gpu_suite.sh              # on a CUDA GPU (refuses to run without one)
#   bench/gpu_suite.sh --cpu-smoke  # its CPU path on tiny shapes
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
missing=$("$PY" - <<'PYEOF'
import importlib.util
print(" ".join(m for m in ("torch", "transformers", "tqdm", "numpy", "safetensors") if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
  echo "gpu_suite: $PY lacks: $missing (install them, or bring them as wheels and put them on PYTHONPATH)" >&2
  exit 2
fi
export PYTHONPATH="$PWD/src:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" bench/gpu_suite.py "$@"
