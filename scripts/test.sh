#!/usr/bin/env bash
# Set up (model, test tools, chromium) and run the whole test suite.
# PLAYGROUND_TEST_CPU=avx2|default (or avx512) runs it with ATen, oneDNN and MKL limited to that
# instruction set, as on a CPU that has no more (docs/testing.md); unset: the CPU's own best.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${PLAYGROUND_TEST_CPU:-}" in
  "") ;;
  avx512) export ATEN_CPU_CAPABILITY=avx512 ONEDNN_MAX_CPU_ISA=AVX512_CORE MKL_ENABLE_INSTRUCTIONS=AVX512 ;;
  avx2) export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ;;
  default) export ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 ;;
  *) echo "PLAYGROUND_TEST_CPU must be avx512, avx2 or default, got '${PLAYGROUND_TEST_CPU}'" >&2; exit 2 ;;
esac
bash scripts/setup.sh --test
exec python3 -m pytest -q "$@"
