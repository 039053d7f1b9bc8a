//! JetStream publish errors sorted into the relay's classes, at the boundary.

use std::error::Error as _;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use txoutbox_core::{SinkError, SinkErrorKind};

/// Turns a failed publish of one message to `subject` into a classified [`SinkError`] whose
/// message says what to do.
///
/// - No stream takes the subject: permanent for the message (an attempt counts; it is
///   dead-lettered after the last one), like a Kafka topic that does not exist.
/// - Larger than the server's `max_payload`: rejected, never deliverable as it is.
/// - A stream at its limits (`discard: new`), an ack that did not come in time, a connection
///   lost, too many acks pending, a JetStream API error of the server: transient (retried
///   without counting an attempt).
pub(crate) fn classify(error: &PublishError, subject: &str) -> SinkError {
    let code = api_error(error).map(|e| e.error_code());
    let (kind, hint) = match error.kind() {
        PublishErrorKind::StreamNotFound => (
            SinkErrorKind::Permanent,
            " (no JetStream stream takes this subject: add one whose subjects match it, e.g. \
             `nats stream add --subjects '<topic>.>'`, then replay the message)",
        ),
        PublishErrorKind::MaxPayloadExceeded => (
            SinkErrorKind::Rejected,
            " (raise the server's max_payload, then replay the message)",
        ),
        PublishErrorKind::TimedOut => (
            SinkErrorKind::Transient,
            " (no acknowledgement in time: the server is slow, unreachable, or no JetStream \
             answers for the subject)",
        ),
        PublishErrorKind::Other if code == Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => (
            SinkErrorKind::Rejected,
            " (larger than the stream's max_msg_size: raise it, then replay the message)",
        ),
        PublishErrorKind::Other if code.is_some_and(is_stream_full) => (
            SinkErrorKind::Transient,
            " (the stream is at its limits and discards new messages: retried until it takes them)",
        ),
        _ => (SinkErrorKind::Transient, ""),
    };
    let detail = match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    };
    SinkError::new(
        kind,
        Some(match code {
            Some(code) => format!("JetStream{}", code.0),
            None => format!("{:?}", error.kind()),
        }),
        format!("subject `{subject}`: {detail}{hint}"),
    )
}

/// The JetStream API error (with its code) behind a publish error, if the server sent one.
fn api_error(error: &PublishError) -> Option<&jetstream::Error> {
    error.source()?.downcast_ref::<jetstream::Error>()
}

/// Codes of a stream that refuses messages because it is full (messages, bytes, storage).
fn is_stream_full(code: ErrorCode) -> bool {
    // The store refused it ("maximum messages exceeded", "maximum bytes exceeded" with
    // `discard: new`), or the server has no room left.
    code == ErrorCode::STREAM_STORE_FAILED || code == ErrorCode::STORAGE_RESOURCES_EXCEEDED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_kinds_into_classes() {
        let missing = classify(&PublishError::new(PublishErrorKind::StreamNotFound), "orders");
        assert_eq!(missing.kind(), SinkErrorKind::Permanent);
        assert!(missing.to_string().contains("nats stream add"), "{missing}");
        assert!(missing.to_string().contains("`orders`"), "{missing}");
        let large = classify(&PublishError::new(PublishErrorKind::MaxPayloadExceeded), "o");
        assert_eq!(large.kind(), SinkErrorKind::Rejected);
        for transient in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
            PublishErrorKind::Other,
        ] {
            assert!(
                classify(&PublishError::new(transient), "o").is_transient(),
                "{transient:?}"
            );
        }
    }
}
