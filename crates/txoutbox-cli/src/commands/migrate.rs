//! `txoutbox migrate`.

use crate::database::{Create, Database, wal_outbox};
use crate::error::CliError;
use crate::target::{Source, Target};

/// Creates or upgrades the outbox table; in WAL mode, also the replication slot and its
/// publication (the table then keeps dead letters).
pub(crate) async fn run(target: &Target) -> Result<(), CliError> {
    let database = Database::connect(target, Create::IfMissing, 1).await?;
    match (&target.source, &database) {
        (Source::Table, _) => {
            database.migrate().await?;
            println!("outbox table {} is ready", database.table());
        }
        (Source::Wal(config), Database::Postgres(pool, _)) => {
            wal_outbox(config)?.migrate(pool).await?;
            println!(
                "WAL mode is ready: replication slot {}, publication {}, dead-letter table {}",
                config.slot,
                config.publication,
                database.table()
            );
        }
        (Source::Wal(_), _) => return Err(crate::database::wal_needs_postgres()),
    }
    Ok(())
}
