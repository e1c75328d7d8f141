#!/usr/bin/env bash
# Create .venv and install the library with every backend and the test tools, at the pinned versions.
# torch 2.13.0 is the CPU build (pip finds it locally on the project machines; elsewhere use
# --index-url https://download.pytorch.org/whl/cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q -c constraints.txt "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
pip install -q -c constraints.txt -e ".[all,test]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import bart_core, torch, tensorflow, jax, flax, transformers" 2>/dev/null || {
  echo "setup.sh: installation failed" >&2; exit 1; }
