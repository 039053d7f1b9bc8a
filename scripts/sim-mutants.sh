#!/usr/bin/env bash
# Proves the engine simulation catches real bugs: builds the simulation once per engine mutant
# (each reintroduces a bug the simulation found or an earlier fix removed, with
# `--cfg txoutbox_sim_mutant="..."`) and runs seeds until one fails. Prints, per mutant, how many
# seeds and how long it took; fails if a mutant survives TXOUTBOX_SIM_SEEDS seeds (default 2000).
#
#   scripts/sim-mutants.sh                 # every mutant it catches within 2,000 seeds
#   scripts/sim-mutants.sh early_release   # one; also those that need more seeds
#                                          # (TXOUTBOX_SIM_SEEDS=8000 ... takeover_ignores_parked)
#                                          # and those it does not catch yet (scope_grew_during_read,
#                                          # half_budget_end, pause_ignores_resume, poison_pauses_all,
#                                          # epoch_after_drain)
#
# Each mutant builds in its own target directory (target/sim-mutants/NAME): the cfg changes the
# flags of every crate, so sharing one directory would rebuild the dependencies every time.
set -euo pipefail
cd "$(dirname "$0")/.."

all=(late_rows_forgotten early_release rescan_restarts_pass stale_failures_pause shutdown_gives_up parked_reload_forgets released_while_read refusal_keeps_epoch)
mutants=("${@:-${all[@]}}")
seeds="${TXOUTBOX_SIM_SEEDS:-2000}"
survived=0
for mutant in "${mutants[@]}"; do
    out=$(CARGO_TARGET_DIR="target/sim-mutants/$mutant" \
        RUSTFLAGS="--cfg txoutbox_sim_mutant=\"$mutant\"" \
        TXOUTBOX_SIM_HUNT=1 TXOUTBOX_SIM_SEEDS="$seeds" \
        cargo test -q -p txoutbox-sim --test simulation every_seed -- --nocapture 2>&1 || true)
    line=$(grep -m1 '^HUNT:' <<<"$out" || echo "HUNT: did not run (see below)")
    printf '%-22s %s\n' "$mutant" "${line#HUNT: }"
    if ! grep -q 'failed after' <<<"$line"; then
        survived=1
        tail -20 <<<"$out"
    fi
done
exit "$survived"
