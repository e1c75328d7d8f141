#!/usr/bin/env bash
# The main job: install (pinned) and run the demo tour: train, generate, save, convert, verify, three backends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
