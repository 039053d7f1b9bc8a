#!/usr/bin/env bash
# The whole test suite: starts (or reuses) PostgreSQL, MariaDB, Kafka, NATS, RabbitMQ and Redis on loopback, then runs every test
# of the workspace against them. Extra arguments go to `cargo test` (e.g. a test name filter).
#
#   scripts/test.sh
#   TXOUTBOX_POSTGRES_URL=postgres://... TXOUTBOX_MYSQL_URL=mysql://... TXOUTBOX_KAFKA_BOOTSTRAP=host:9092 scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh up kafka postgres mariadb nats rabbitmq redis >/dev/null
eval "$(scripts/services.sh env)"
export TXOUTBOX_KAFKA_BOOTSTRAP TXOUTBOX_POSTGRES_URL TXOUTBOX_MYSQL_URL TXOUTBOX_NATS_URL TXOUTBOX_RABBITMQ_URL TXOUTBOX_REDIS_URL

cargo test --workspace --all-features --locked --no-fail-fast "$@"
