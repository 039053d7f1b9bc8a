//! `txoutbox migrate`.

use crate::cli::{MigrateArgs, Switch};
use crate::database::{Create, Database, pg_outbox, wal_outbox};
use crate::error::CliError;
use crate::target::{Source, Target};

/// Creates or upgrades the outbox table; in WAL mode, also the replication slot and its
/// publication (the table then keeps dead letters). `--push-wakeups` sets the PostgreSQL table's
/// wake-up trigger after the migrations.
pub(crate) async fn run(target: &Target, args: &MigrateArgs) -> Result<(), CliError> {
    let database = Database::connect(target, Create::IfMissing, 1).await?;
    match (&target.source, &database, args.push_wakeups) {
        (Source::Table, Database::Postgres(pool, table), Some(push)) => {
            let outbox = pg_outbox(table);
            outbox.migrate(pool).await?;
            outbox.set_push_wakeups(pool, push == Switch::On).await?;
            println!(
                "outbox table {table} is ready; push wake-ups are {}",
                if push == Switch::On { "on" } else { "off" }
            );
        }
        (_, _, Some(_)) => {
            return Err(CliError::usage(
                "--push-wakeups is for PostgreSQL's table mode (other stores and WAL mode have no \
                 wake-up trigger); leave it out",
            ));
        }
        (Source::Table, _, None) => {
            database.migrate().await?;
            println!("outbox table {} is ready", database.table());
        }
        (Source::Wal(config), Database::Postgres(pool, _), None) => {
            wal_outbox(config)?.migrate(pool).await?;
            println!(
                "WAL mode is ready: replication slot {}, publication {}, dead-letter table {}",
                config.slot,
                config.publication,
                database.table()
            );
        }
        (Source::Wal(_), _, None) => return Err(crate::database::wal_needs_postgres()),
    }
    Ok(())
}
