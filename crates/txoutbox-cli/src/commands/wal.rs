//! `txoutbox wal drop-slot`.

use crate::cli::WalCommand;
use crate::database::{Create, Database, wal_outbox};
use crate::error::CliError;
use crate::target::{Source, Target};

/// Runs a WAL-mode action.
pub(crate) async fn run(target: &Target, command: &WalCommand) -> Result<(), CliError> {
    let Source::Wal(config) = &target.source else {
        return Err(CliError::usage(
            "`txoutbox wal` acts on WAL mode's replication slot: add --source wal (and --wal-slot if it is \
             not the default `txoutbox`)",
        ));
    };
    let WalCommand::DropSlot { confirm } = command;
    let database = Database::connect(target, Create::Never, 1).await?;
    let Database::Postgres(pool, _) = &database else {
        return Err(crate::database::wal_needs_postgres());
    };
    let outbox = wal_outbox(config)?;
    let status = match outbox.slot_status(pool).await {
        Ok(status) => status,
        Err(txoutbox_core::Error::Config(_)) => {
            // No slot: drop the publication alone, if one is left over.
            outbox.drop_slot(pool).await?;
            println!("there is no replication slot {}: nothing to drop", config.slot);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if !confirm {
        return Err(CliError::usage(format!(
            "refusing to drop the replication slot {}: messages committed since its last confirmed \
             position ({} bytes of WAL behind, wal_status {}) would never be relayed. Stop the relays \
             of this slot, then run again with --confirm",
            config.slot, status.lag_bytes, status.wal_status
        )));
    }
    if status.active {
        return Err(CliError::runtime(format!(
            "the replication slot {} is streamed by a relay now: stop it first, then drop the slot",
            config.slot
        )));
    }
    outbox.drop_slot(pool).await?;
    println!(
        "dropped the replication slot {} and the publication {} ({} bytes of WAL were kept for it)",
        config.slot, config.publication, status.lag_bytes
    );
    Ok(())
}
