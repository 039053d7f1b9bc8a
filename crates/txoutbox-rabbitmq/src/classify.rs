//! What a publish's confirm (or its absence) means for the relay.

use lapin::Confirmation;
use txoutbox_core::{SinkError, SinkErrorKind};

/// The failure of a message the broker returned as unroutable (mandatory, no queue bound).
pub(crate) fn unroutable(exchange: &str, routing_key: &str) -> SinkError {
    let exchange = if exchange.is_empty() {
        "(the default exchange)"
    } else {
        exchange
    };
    SinkError::new(
        SinkErrorKind::Permanent,
        Some("Unroutable".into()),
        format!(
            "exchange `{exchange}`, routing key `{routing_key}`: unroutable: no queue is bound for this \
             routing key; declare one and bind it, then replay the message"
        ),
    )
}

/// The outcome of a publish to `exchange` with `routing_key`, from the broker's confirm, a
/// client error, or no confirm within the timeout (`None`). A returned message is not this
/// publish's: returns are matched by message id ([`unroutable`]).
pub(crate) fn outcome(
    confirm: Option<lapin::Result<Confirmation>>,
    exchange: &str,
    routing_key: &str,
) -> Result<(), SinkError> {
    let exchange = if exchange.is_empty() {
        "(the default exchange)"
    } else {
        exchange
    };
    match confirm {
        Some(Ok(Confirmation::Ack(_))) => Ok(()),
        Some(Ok(Confirmation::Nack(_))) => Err(SinkError::new(
            SinkErrorKind::Transient,
            Some("Nack".into()),
            format!(
                "exchange `{exchange}`, routing key `{routing_key}`: the broker did not store the message \
                 (nack: a queue at its length limit with overflow reject-publish, or the broker is out of \
                 resources); sent again later"
            ),
        )),
        Some(Ok(Confirmation::NotRequested)) => Err(SinkError::transient(
            "the broker sent no confirm (confirms are not on for the channel)",
        )),
        Some(Err(error)) => Err(SinkError::new(
            SinkErrorKind::Transient,
            Some("ChannelLost".into()),
            format!(
                "exchange `{exchange}`, routing key `{routing_key}`: no confirm, the channel or connection failed: {error}"
            ),
        )),
        None => Err(SinkError::new(
            SinkErrorKind::Transient,
            Some("ConfirmTimeout".into()),
            format!(
                "exchange `{exchange}`, routing key `{routing_key}`: no confirm in time (the broker is slow, \
                 blocked by a resource alarm, or unreachable)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(outcome(Some(Ok(Confirmation::Ack(None))), "", "q"), Ok(()));
        let nack = outcome(Some(Ok(Confirmation::Nack(None))), "x", "q").unwrap_err();
        assert!(nack.is_transient(), "{nack}");
        let late = outcome(None, "", "q").unwrap_err();
        assert!(
            late.is_transient() && late.to_string().contains("default exchange"),
            "{late}"
        );
    }
}
