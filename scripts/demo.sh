#!/usr/bin/env bash
# The main job in one command: builds the bridge and the default component,
# then runs `uns-kafka demo` (an embedded MQTT broker and librdkafka's mock
# Kafka cluster, sample UNS JSON and Sparkplug B messages, the records that
# arrived in Kafka printed). Extra arguments go to the demo, e.g.
#   bash scripts/demo.sh --mqtt localhost:1883 --kafka localhost:9092
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

ensure_build_deps
ensure_wasm_target

echo "==> building uns-kafka and the default component (release)" >&2
cargo build --release --locked -p uns-kafka
cargo build --release --locked -p uns-default --target wasm32-wasip2

exec "${CARGO_TARGET_DIR:-target}/release/uns-kafka" demo \
  --component "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/uns_default.wasm" "$@"
