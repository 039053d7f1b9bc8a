//! librdkafka errors sorted into the relay's classes, at the boundary.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use txoutbox_core::{SinkError, SinkErrorKind};

/// Whether an error code means this message can never be delivered as it is.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        MessageSizeTooLarge
            | InvalidMessageSize
            | MessageBatchTooLarge
            | UnknownTopicOrPartition
            | UnknownTopic
            | TopicAuthorizationFailed
            | InvalidTopic
            | UnknownPartition
            | InvalidRecord
            | InvalidMessage
            | PolicyViolation
            | UnsupportedForMessageFormat
            | InvalidRequiredAcks
            | InvalidTimestamp
    )
}

/// Turns a librdkafka error about one message into a classified [`SinkError`] whose message says
/// what to do.
pub(crate) fn classify(error: &KafkaError, topic: &str) -> SinkError {
    let Some(code) = error.rdkafka_error_code() else {
        return SinkError::new(SinkErrorKind::Transient, None, error.to_string());
    };
    let hint = match code {
        RDKafkaErrorCode::MessageSizeTooLarge
        | RDKafkaErrorCode::InvalidMessageSize
        | RDKafkaErrorCode::MessageBatchTooLarge => {
            " (the message is larger than the broker's or the topic's `max.message.bytes`, or the \
             producer's `message.max.bytes`: raise the limit, then replay the message)"
        }
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
            " (create the topic: the relay does not ask brokers to create topics unless \
             `allow.auto.create.topics=true` is set; replay the message once it exists)"
        }
        RDKafkaErrorCode::TopicAuthorizationFailed => " (grant the relay's principal WRITE on the topic)",
        _ => "",
    };
    let kind = if is_permanent(code) {
        SinkErrorKind::Permanent
    } else {
        SinkErrorKind::Transient
    };
    SinkError::new(
        kind,
        Some(format!("{code:?}")),
        format!("topic `{topic}`: {error}{hint}"),
    )
}

/// Classifies librdkafka's refusal to take one message (`produce` failed before enqueueing it).
/// Nothing of the message was sent, so the refusal is [`unsent`](SinkError::unsent). Codes
/// librdkafka returns there about the record itself — larger than `message.max.bytes`, a topic
/// name it cannot use (longer than 512 bytes: `InvalidArgument`), an invalid partition — can
/// never succeed and are [`Rejected`](SinkErrorKind::Rejected); the others keep their class (a
/// topic not known yet is retried, the producer failing is transient).
pub(crate) fn classify_refusal(error: &KafkaError, topic: &str) -> SinkError {
    use RDKafkaErrorCode::*;
    let classified = classify(error, topic);
    let never = matches!(
        error.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidArgument
                | InvalidTopic
                | UnknownPartition
                | InvalidRecord
        )
    );
    let classified = if never {
        SinkError::new(
            SinkErrorKind::Rejected,
            classified.code().map(str::to_owned),
            classified.to_string(),
        )
    } else {
        classified
    };
    classified.unsent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_codes_into_classes() {
        let too_large = classify(
            &KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
            "t",
        );
        assert_eq!(too_large.kind(), SinkErrorKind::Permanent);
        assert!(too_large.to_string().contains("max.message.bytes"), "{too_large}");
        assert_eq!(too_large.code(), Some("MessageSizeTooLarge"));
        // Refused by librdkafka before it took the message: never sent, and never sendable.
        let refused = classify_refusal(
            &KafkaError::MessageProduction(RDKafkaErrorCode::InvalidArgument),
            "t",
        );
        assert_eq!(refused.kind(), SinkErrorKind::Rejected);
        assert!(refused.is_unsent());
        let unknown = classify_refusal(
            &KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic),
            "t",
        );
        assert_eq!(
            unknown.kind(),
            SinkErrorKind::Permanent,
            "a topic may be created later"
        );
        assert!(unknown.is_unsent());
        for transient in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::RequestTimedOut,
        ] {
            assert!(
                classify(&KafkaError::MessageProduction(transient), "t").is_transient(),
                "{transient:?}"
            );
        }
    }
}
