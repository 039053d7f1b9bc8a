//! JetStream publish errors sorted into the relay's classes, at the boundary.

use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;

use async_nats::jetstream::context::{GetStreamByNameErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use txoutbox_core::{SinkError, SinkErrorKind};

/// How long the lookup of a subject's stream may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns a failed publish of one message to `subject` into a classified [`SinkError`] whose
/// message says what to do.
///
/// - Larger than the server's `max_payload`, the stream's `max_msg_size` or its header limit:
///   rejected, never deliverable as it is.
/// - No stream answered (`no responders`), a sealed stream, a subject answered by something that
///   is not a stream: permanent for the message (an attempt counts; it is dead-lettered after the
///   last one), like a Kafka topic that does not exist. [`classify_failure`] first asks whether a
///   stream takes the subject: one that does is in a leader election or restarting (transient).
/// - A stream at its limits (`discard: new`), an acknowledgement that did not come in time, a
///   connection lost, too many acknowledgements pending, any other server error: transient
///   (retried without counting an attempt).
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
            " (no acknowledgement in time: the server is slow or unreachable, or no stream \
             answers for the subject)",
        ),
        PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId => (
            SinkErrorKind::Permanent,
            " (the stream's expectation was not met)",
        ),
        PublishErrorKind::Other if code == Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => (
            SinkErrorKind::Rejected,
            " (larger than the stream's max_msg_size: raise it, then replay the message)",
        ),
        PublishErrorKind::Other if code == Some(ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM) => (
            SinkErrorKind::Rejected,
            " (the headers are larger than a stream takes, 64 KiB)",
        ),
        PublishErrorKind::Other if code == Some(ErrorCode::STREAM_SEALED) => (
            SinkErrorKind::Permanent,
            " (the stream is sealed and takes no more messages: route the subject to another \
             stream, then replay the message)",
        ),
        PublishErrorKind::Other if code == Some(ErrorCode::STREAM_NOT_MATCH) => {
            (SinkErrorKind::Permanent, " (the stream refused the message)")
        }
        PublishErrorKind::Other if code.is_some_and(is_stream_full) => (
            SinkErrorKind::Transient,
            " (the stream is at its limits and discards new messages: retried until it takes them)",
        ),
        PublishErrorKind::Other if not_a_stream(error) => (
            SinkErrorKind::Permanent,
            " (something that is not a JetStream stream answered on this subject: a service \
             subscribed to it; route the subject to a stream, then replay the message)",
        ),
        _ => (SinkErrorKind::Transient, ""),
    };
    SinkError::new(
        kind,
        Some(match code {
            Some(code) => format!("JetStream{}", code.0),
            None => format!("{:?}", error.kind()),
        }),
        format!("subject `{subject}`: {error}{hint}"),
    )
}

/// What the lookups of this batch found for the subjects no stream answered.
pub(crate) type StreamLookups = HashMap<String, SinkError>;

/// [`classify`], but a subject no stream answered is looked up first (once per batch): when a
/// stream takes it, the stream is in a leader election, restarting or recovering, and the
/// failure is transient; when none does, it is permanent.
pub(crate) async fn classify_failure(
    jetstream: &jetstream::Context,
    lookups: &mut StreamLookups,
    error: &PublishError,
    subject: &str,
) -> SinkError {
    let classified = classify(error, subject);
    if error.kind() != PublishErrorKind::StreamNotFound {
        return classified;
    }
    if let Some(known) = lookups.get(subject) {
        return known.clone();
    }
    let found = tokio::time::timeout(LOOKUP_TIMEOUT, jetstream.stream_by_subject(subject)).await;
    let result = match found {
        Ok(Err(lookup)) if matches!(lookup.kind(), GetStreamByNameErrorKind::NotFound) => classified,
        Ok(Ok(stream)) => SinkError::new(
            SinkErrorKind::Transient,
            Some("StreamNotAnswering".into()),
            format!(
                "subject `{subject}`: stream `{stream}` takes it but did not answer (a leader \
                 election, or JetStream restarting); sent again later"
            ),
        ),
        _ => SinkError::new(
            SinkErrorKind::Transient,
            Some("JetStreamNotAnswering".into()),
            format!(
                "subject `{subject}`: no stream answered and JetStream did not say whether one \
                 takes the subject (JetStream unavailable?); sent again later"
            ),
        ),
    };
    lookups.insert(subject.to_owned(), result.clone());
    result
}

/// The JetStream API error (with its code) behind a publish error, if the server sent one.
fn api_error(error: &PublishError) -> Option<&jetstream::Error> {
    error.source()?.downcast_ref::<jetstream::Error>()
}

/// Whether the answer to the publish was no JetStream acknowledgement at all.
fn not_a_stream(error: &PublishError) -> bool {
    error
        .source()
        .is_some_and(|source| source.downcast_ref::<serde_json::Error>().is_some())
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
        let not_stream = serde_json::from_str::<u8>("x").unwrap_err();
        let answered = classify(
            &PublishError::with_source(PublishErrorKind::Other, not_stream),
            "o",
        );
        assert_eq!(answered.kind(), SinkErrorKind::Permanent, "{answered}");
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
