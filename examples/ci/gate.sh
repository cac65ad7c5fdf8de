#!/usr/bin/env bash
# Compile MODEL for BOARD, benchmark it, and gate latency, size and arena
# against a baseline. Exit code 1 (and a table) when something regressed.
#
#   examples/ci/gate.sh BOARD [MODEL] [OUT_DIR] [BASE_MODEL]
#
# Simulated boards (rv32-mcu-sim, stm32h7) use the committed baseline
# examples/ci/baselines/BOARD.json: their cycle counts are deterministic, so
# one run is the measurement and the gate is exact.
# Boards timed by the wall clock (host) have no committed baseline -- a number
# measured on another machine means nothing here -- so BASE_MODEL (the model
# of the target branch) is benchmarked first, on this same runner, and the
# gate uses the noise-aware rule with repeated runs (docs/reports.md).
set -euo pipefail

board="${1:?usage: gate.sh BOARD [MODEL] [OUT_DIR] [BASE_MODEL]}"
model="${2:-edgekit/examples/digits_cnn.onnx}"
out="${3:-ci-out}"
base_model="${4:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$out"

baseline="$here/baselines/$board.json"
runs=(--runs 1 --warmup 0)
if [[ ! -f "$baseline" ]]; then
    if [[ -z "$base_model" ]]; then
        echo "no $baseline: pass the target branch's model as BASE_MODEL to measure one here" >&2
        exit 2
    fi
    runs=(--runs 30 --warmup 5)
    baseline="$out/$board.base.json"
    edgekit -q compile "$base_model" --board "$board" -o "$out/$board.base.ekpkg"
    edgekit -q bench "$out/$board.base.ekpkg" "${runs[@]}" --json "$baseline"
fi

edgekit -q compile "$model" --board "$board" -o "$out/$board.ekpkg"
edgekit bench "$out/$board.ekpkg" "${runs[@]}" \
    --baseline "$baseline" --max-regression 5% \
    --json "$out/$board.json" --junit "$out/$board.junit.xml" \
    --report "$out/$board.html" --markdown "$out/$board.md"
