#!/usr/bin/env bash
# The demo on the embedded default: SQLite + a local Kafka broker (installed and started on first
# use). Places orders, each committed with its event, and reads the events back from Kafka.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh up kafka >/dev/null
eval "$(scripts/services.sh env)"
export TXOUTBOX_KAFKA_BOOTSTRAP

cargo run --quiet --locked -p txoutbox --example demo
