#!/usr/bin/env bash
# Local services for txoutbox's demo, tests and CI (Kafka KRaft, PostgreSQL, MariaDB, NATS,
# RabbitMQ, Redis on loopback):
# builds and runs the launcher, crates/txoutbox-services (`scripts/services.sh help` for its
# commands and settings). Cargo's output goes to stderr: stdout is the command's result
# (`eval "$(scripts/services.sh env)"`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo build -q --locked --manifest-path "$root/Cargo.toml" -p txoutbox-services --bin txoutbox-services >&2
target=${CARGO_TARGET_DIR:-$(cargo metadata -q --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
[[ $target == /* ]] || target="$PWD/$target"
exec "$target/debug/txoutbox-services" "$@"
