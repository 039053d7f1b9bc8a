#!/usr/bin/env bash
# The whole test suite on a busy machine: one busy loop per core runs beside it at normal
# priority (as a build or another service would), so a test that waits on time instead of on a
# condition fails here first. Arguments go to scripts/test.sh.
#
#   scripts/test-busy.sh                 # every test
#   scripts/test-busy.sh -p txoutbox-cli # one crate
set -euo pipefail
cd "$(dirname "$0")/.."

cores=$(nproc)
busy=()
for _ in $(seq "$cores"); do
    bash -c 'while :; do :; done' &
    busy+=($!)
done
trap 'kill "${busy[@]}" 2>/dev/null || true' EXIT
echo "test-busy: $cores busy loops beside the suite (pids ${busy[*]})" >&2
scripts/test.sh "$@"
