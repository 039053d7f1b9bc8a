//! The application's handler and how it reports failure.

use std::future::Future;

use txoutbox_core::BoxError;

use crate::message::InboxMessage;

/// The application's code for one record, run inside the transaction that records its id.
///
/// Whatever it does with `tx` — business rows, `publish` of follow-up messages through an outbox
/// on the same database — commits together with the inbox row, or not at all. It runs at most
/// once successfully per message id; a failed run is rolled back and retried.
///
/// ```
/// use txoutbox_inbox::{Handler, HandlerError, InboxMessage};
///
/// struct CountOrders;
///
/// impl Handler<sqlx::Transaction<'static, sqlx::Postgres>> for CountOrders {
///     async fn handle(
///         &self,
///         tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
///         message: &InboxMessage,
///     ) -> Result<(), HandlerError> {
///         let order: serde_json::Value = message.json().map_err(HandlerError::permanent)?;
///         sqlx::query("UPDATE stats SET orders = orders + 1 WHERE customer = $1")
///             .bind(order["customer"].as_str())
///             .execute(&mut **tx)
///             .await?; // a database error: transient, retried
///         Ok(())
///     }
/// }
/// ```
pub trait Handler<Tx>: Send + Sync + 'static {
    /// Handles one record in `tx`. An error rolls the transaction back.
    fn handle(
        &self,
        tx: &mut Tx,
        message: &InboxMessage,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A handler's failure: transient (retried with back-off, then parked) or permanent (parked at
/// once). `?` on any error type makes a transient one.
#[derive(Debug)]
pub struct HandlerError {
    permanent: bool,
    source: BoxError,
}

impl HandlerError {
    /// A failure that may go away (a lock timeout, a service that is down): retried.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self {
            permanent: false,
            source: source.into(),
        }
    }

    /// A failure no retry can mend (a payload that does not parse): parked at once.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self {
            permanent: true,
            source: source.into(),
        }
    }

    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The underlying error.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.permanent { "permanent" } else { "transient" };
        write!(f, "{kind} handler error: {}", self.source)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::transient(error)
    }
}
