//! Push wake-ups: LISTEN on the table's channel, wake the relay on each notification.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tracing::{debug, warn};
use txoutbox_core::Wakeup;

/// Listens on `channel` until aborted. A lost connection is re-established with back-off, and
/// the relay is woken each time (notifications sent while it was down are lost; the wake-up makes
/// the relay look at once instead of waiting for its poll interval).
pub(crate) async fn listen(pool: PgPool, channel: String, wakeup: Wakeup) {
    let mut delay = Duration::from_millis(100);
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(error) = listener.listen(&channel).await {
                    warn!(%error, channel, "could not LISTEN for outbox wake-ups; retrying");
                } else {
                    debug!(channel, "listening for outbox wake-ups");
                    delay = Duration::from_millis(100);
                    // Anything committed while the listener was away would go unnoticed.
                    wakeup.notify();
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => wakeup.notify(),
                            Ok(None) => {
                                warn!(channel, "the wake-up connection was lost; reconnecting");
                                wakeup.notify();
                                break;
                            }
                            Err(error) => {
                                warn!(%error, channel, "the wake-up connection failed; reconnecting");
                                wakeup.notify();
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => warn!(%error, channel, "could not connect for outbox wake-ups; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
