//! The web console's settings, as the daemon's settings give them.

use std::fmt;

use txoutbox_core::TableName;

use crate::database::Database;

/// The shortest token accepted, so that a guessable one is refused at start.
pub(crate) const MIN_TOKEN_LEN: usize = txoutbox_axum::MIN_TOKEN_LEN;

/// The console's settings.
#[derive(Clone, Default)]
pub(crate) struct ConsoleSettings {
    /// The bearer token that actions need; `None` makes the console read-only.
    pub token: Option<String>,
    /// Whether the dead-letter view may show payloads.
    pub show_payloads: bool,
    /// A consumer inbox's table in the relay's database, shown at `/ui/inbox`.
    pub inbox_table: Option<TableName>,
    /// The outbox database, set by the daemon once connected.
    pub database: Option<Database>,
}

impl fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.debug_struct("ConsoleSettings")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("show_payloads", &self.show_payloads)
            .field("inbox_table", &self.inbox_table)
            .finish_non_exhaustive()
    }
}
