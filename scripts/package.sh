#!/usr/bin/env bash
# Packages every publishable crate as `cargo publish` would, then builds what a user builds from
# the packages. Compile only: no services needed. Prints the time each step took.
#
#   1. `cargo package` of the workspace without its internal crates (`publish = false`): one
#      `.crate` per crate, each unpacked to <target>/package/<name>-<version>/ (the path
#      dev-dependencies without a version are gone there, as on crates.io). With
#      PACKAGE_VERIFY=1, cargo's verification step too: each crate's lib built on its own, with
#      its own default features, against the packages before it. Every crate's feature set
#      builds the dependencies again: in two clean-clone CI runs on two cores this script took
#      928 s with it and 431 s without, so by default the steps below build the packages
#      instead, all of them together (and fail if one was not built).
#   2. A fresh project outside the workspace, generated in <target>/package-check: its
#      `[dependencies]` are the README quickstart's, as written there, and every txoutbox crate is
#      patched to its unpacked package (`path =`). It builds the quickstart (PostgreSQL + Kafka; its
#      code runs inside `async fn quickstart(pool: sqlx::PgPool)`) and an SQLite variant (the
#      facade's default features and the inbox).
#   3. `cargo install --path` of the unpacked txoutbox-cli (debug profile, into
#      <target>/package-check/install), then `txoutbox --version`. With step 2 this builds every
#      packaged crate from its package.
#
# Every step shares the workspace's target directory and builds dependencies with the workspace's
# dev profile, so the dependencies are compiled once for all of them.
#
#   scripts/package.sh
#   PACKAGE_VERIFY=1 scripts/package.sh   # and cargo's verification of each crate on its own
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step_started=$SECONDS

step_done() {
    echo "package.sh: $1 in $((SECONDS - step_started)) s" >&2
    step_started=$SECONDS
}

target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
target_dir="$(cd "$target_dir" && pwd)"
export CARGO_TARGET_DIR="$target_dir"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"

# The workspace's dev profile for the builds outside it (the verification step and the fresh
# project have no profile of their own): the same settings make the same dependency artefacts.
profile=(
    --config 'profile.dev.debug="line-tables-only"'
    --config 'profile.dev.package."*".opt-level=1'
    --config 'profile.dev.package."*".debug=false'
)

publishable=()
internal=()
for manifest in crates/*/Cargo.toml; do
    name="$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n 1)"
    if grep -q '^publish = false' "$manifest"; then
        internal+=(--exclude "$name")
    else
        publishable+=("$name")
    fi
done

# With PACKAGE_VERIFY=1, cargo verifies each package against the others through a temporary registry in
# <target>/package/tmp-registry. It unpacks that registry's crates into $CARGO_HOME/registry/src/
# once per registry path and never again, and it treats what it built from them as unchanged while
# the version is (registry sources count as immutable; their files carry the tarball's fixed
# mtimes). A second run at the same path would verify each crate against the previous run's
# dependencies. So every run starts without them: the unpacked sources, the packages, and the
# compiled txoutbox crates (the workspace builds them again on its next build). Without it, the
# same start makes the builds below compile every package afresh.
rm -rf "$target_dir/package"
for name in "${publishable[@]}"; do
    rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$name-$version"
done
clean_packages=()
for name in "${publishable[@]}"; do
    clean_packages+=(-p "$name")
done
cargo clean --quiet "${clean_packages[@]}"
step_done "removed the previous run's packages, their unpacked sources and builds"

case "${PACKAGE_VERIFY:-0}" in
    0) verify=(--no-verify) ;;
    1) verify=() ;;
    *) echo "package.sh: PACKAGE_VERIFY is 0 (the default) or 1, not $PACKAGE_VERIFY" >&2; exit 1 ;;
esac
# --allow-dirty: this checks the working tree as it is; publishing is not done here.
cargo package --workspace "${internal[@]}" --locked --allow-dirty "${verify[@]}" "${profile[@]}"
step_done "cargo package ${verify[*]} (${publishable[*]})"

unpacked() {
    echo "$target_dir/package/$1-$version"
}
for name in "${publishable[@]}"; do
    # cargo unpacks a package only to verify it.
    if [[ ! -d "$(unpacked "$name")" ]]; then
        tar -xzf "$target_dir/package/$name-$version.crate" -C "$target_dir/package"
    fi
    if [[ ! -f "$(unpacked "$name")/Cargo.toml" ]]; then
        echo "package.sh: $(unpacked "$name") is missing" >&2
        exit 1
    fi
done

# The first ```$1 block of README.md's "## Quickstart" section.
quickstart_block() {
    awk -v fence="\`\`\`$1" '
        /^## / { in_section = ($0 == "## Quickstart") }
        inside && /^```/ { exit }
        inside { print }
        in_section && $0 == fence { inside = 1 }
    ' README.md
}

check="$target_dir/package-check"
rm -rf "$check"
mkdir -p "$check/src/bin" "$check/sqlite/src/bin"
dependencies="$(quickstart_block toml)"
quickstart="$(quickstart_block rust)"
if [[ -z "$dependencies" || -z "$quickstart" ]]; then
    echo "package.sh: README.md's Quickstart has no toml or rust block" >&2
    exit 1
fi

# A project's manifest: its name ($1), its [dependencies] block ($2), the txoutbox crates patched
# to their unpacked packages.
manifest() {
    printf '[package]\nname = "%s"\nversion = "0.0.0"\nedition = "2024"\npublish = false\n\n' "$1"
    printf '# A workspace of its own, not a member of the one it is generated in.\n[workspace]\n\n'
    echo "$2"
    echo
    echo "# The txoutbox crates resolve to their unpacked packages, not to crates.io."
    echo "[patch.crates-io]"
    for name in "${publishable[@]}"; do
        [[ "$name" == txoutbox-cli ]] && continue
        echo "$name = { path = \"$(unpacked "$name")\" }"
    done
}
manifest txoutbox-package-check "$dependencies" >"$check/Cargo.toml"
# The SQLite variant: the facade with its default features, as an SQLite user writes it, and the
# inbox (the one crate neither the quickstart nor the daemon builds).
manifest txoutbox-package-check-sqlite '[dependencies]
txoutbox = { version = "0.1", features = ["inbox"] }   # default features (sqlite, kafka) and the inbox
sqlx = { version = "0.9", features = ["runtime-tokio", "sqlite"] }
serde = { version = "1", features = ["derive"] }' >"$check/sqlite/Cargo.toml"
{
    echo "//! README.md's quickstart, as written there (compiled, never run)."
    echo "#![allow(unused)]"
    echo
    echo "async fn quickstart(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {"
    echo "$quickstart"
    echo "    Ok(())"
    echo "}"
    echo
    echo "fn main() {"
    echo "    let _ = quickstart;"
    echo "}"
} >"$check/src/bin/quickstart.rs"
cat >"$check/sqlite/src/bin/sqlite.rs" <<'EOF'
//! The quickstart on SQLite (default features): an outbox transaction wakes the relay when it
//! commits. Compiled, never run.
#![allow(unused)]

use serde::Serialize;
use txoutbox::kafka::{KafkaConfig, KafkaSink};
use txoutbox::sqlite::SqliteOutbox;
use txoutbox::{Relay, RelayConfig, Topic, Topics};

#[derive(Serialize)]
struct OrderCreated {
    order_id: i64,
    customer: String,
}

async fn quickstart(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
    let topics = Topics::new().with(Topic::<OrderCreated>::json("orders")?.key(|o| o.order_id.to_string()))?;
    let outbox = SqliteOutbox::new(topics);
    outbox.migrate(&pool).await?;
    let sink = KafkaSink::new(&KafkaConfig::new("127.0.0.1:9092"))?;
    let relay = Relay::new(outbox.store(pool.clone()), sink, RelayConfig::default())?.start();
    let outbox = outbox.with_wakeup(relay.wakeup());

    let mut tx = outbox.begin(&pool).await?;
    sqlx::query("INSERT INTO orders (id, customer) VALUES (?, ?)")
        .bind(42_i64)
        .bind("alice")
        .execute(&mut *tx)
        .await?;
    tx.publish(&OrderCreated { order_id: 42, customer: "alice".into() }).await?;
    tx.commit().await?;

    relay.shutdown().await?;
    Ok(())
}

fn main() {
    let _ = quickstart;
}
EOF
# The workspace's lock: the same dependency versions as the workspace, so the same artefacts.
cp Cargo.lock "$check/Cargo.lock"
cp Cargo.lock "$check/sqlite/Cargo.lock"
echo "package.sh: the patches of crates the quickstart does not use are reported unused" >&2
# What each build compiled (or found fresh), as cargo's JSON messages, to check below that every
# package was built.
artifacts="$check/artifacts.jsonl"
json=(--message-format=json-render-diagnostics)
cargo build --manifest-path "$check/Cargo.toml" --bins "${profile[@]}" "${json[@]}" >"$artifacts"
cargo build --manifest-path "$check/sqlite/Cargo.toml" --bins "${profile[@]}" "${json[@]}" >>"$artifacts"
step_done "the fresh project (README quickstart on PostgreSQL, SQLite variant)"

# The daemon from its package, with the Cargo.lock it carries (the workspace's versions, as
# `cargo install --locked` would use them), its txoutbox dependencies repointed at their unpacked
# packages. The debug profile shares the dependencies built above; a release build would compile
# every one of them again.
cli="$(unpacked txoutbox-cli)"
patches=()
# Dev-dependencies too: cargo resolves them (and finds them on crates.io) even for an install.
for name in $(sed -n 's/^\[\(dev-\)\{0,1\}dependencies\.\(txoutbox[a-z-]*\)\]$/\2/p' "$cli/Cargo.toml" | sort -u); do
    patches+=(--config "patch.crates-io.$name.path=\"$(unpacked "$name")\"")
done
# Without them cargo would build the daemon from crates.io's txoutbox crates, not these packages.
[[ ${#patches[@]} -gt 0 ]] || { echo "package.sh: found no txoutbox dependency in $cli/Cargo.toml" >&2; exit 1; }
cargo metadata --manifest-path "$cli/Cargo.toml" --format-version 1 "${patches[@]}" >/dev/null
cargo install --locked --debug --path "$cli" --root "$check/install" --target-dir "$target_dir" \
    "${profile[@]}" "${patches[@]}" "${json[@]}" >>"$artifacts"
"$check/install/bin/txoutbox" --version
step_done "cargo install --debug of the packaged txoutbox-cli"

# A publishable crate that none of the builds above depends on would go unchecked: say which.
unbuilt=()
for name in "${publishable[@]}"; do
    if ! grep -q "\"manifest_path\":\"$(unpacked "$name")/Cargo.toml\"" "$artifacts"; then
        unbuilt+=("$name")
    fi
done
if [[ ${#unbuilt[@]} -gt 0 ]]; then
    echo "package.sh: no build above compiled ${unbuilt[*]} from its package: add it to the fresh project's dependencies" >&2
    exit 1
fi

echo "package.sh: packaged and built ${#publishable[@]} crates in $((SECONDS - started)) s" >&2
