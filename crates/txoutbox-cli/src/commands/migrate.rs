//! `txoutbox migrate`.

use crate::database::{Create, Database};
use crate::error::CliError;
use crate::settings::Target;

/// Creates or upgrades the outbox table.
pub async fn run(target: &Target) -> Result<(), CliError> {
    let database = Database::connect(target, Create::IfMissing, 1).await?;
    database.migrate().await?;
    println!("outbox table {} is ready", database.table());
    Ok(())
}
