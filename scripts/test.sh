#!/usr/bin/env bash
# The README's test command: the whole default test suite (heavy checks marked `slow` run in nox).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=3 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q -m "not slow" -p no:cacheprovider "$@"
