//! `txoutbox cleanup`: retention, once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use txoutbox_core::Retention;

use crate::cli::CleanupArgs;
use crate::database::{Create, Database};
use crate::error::CliError;
use crate::target::Target;
use crate::with_store;

/// Purges published rows older than the retention period.
pub(crate) async fn run(
    target: &Target,
    args: &CleanupArgs,
    configured: Option<Duration>,
) -> Result<(), CliError> {
    let older_than = args.older_than.or(configured).ok_or_else(|| {
        CliError::usage(
            "how old must published rows be? pass --older-than (e.g. 7d) or set [retention] \
             keep_published_for in the config file",
        )
    })?;
    if args.batch == 0 {
        return Err(CliError::usage("--batch must be at least 1"));
    }
    let database = Database::connect(target, Create::Never, 1).await?;
    let before = txoutbox_core::ago(older_than);
    let purged = with_store!(&database, store => purge(&store, before, args.batch).await?);
    println!(
        "purged {purged} published rows older than {}",
        humantime::format_duration(older_than)
    );
    Ok(())
}

/// Deletes in statements of at most `batch` rows until none is left: never one long DELETE.
pub(crate) async fn purge(
    store: &impl Retention,
    before: DateTime<Utc>,
    batch: usize,
) -> Result<u64, CliError> {
    let mut total = 0;
    loop {
        let purged = store.purge_published(before, batch).await?;
        total += purged;
        if purged < batch as u64 {
            return Ok(total);
        }
    }
}
