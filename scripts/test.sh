#!/usr/bin/env bash
# Set up (model, test tools, chromium) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec python3 -m pytest -q "$@"
