//! Typed topic definitions: the name, the key, the headers and the serialization of a message type.

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::error::{BoxError, Error, Result};
use crate::message::NewMessage;
use crate::publish_strategy::PublishStrategy;

type KeyFn<T> = dyn Fn(&T) -> Option<Vec<u8>> + Send + Sync;
type HeadersFn<T> = dyn Fn(&T) -> Vec<(String, String)> + Send + Sync;
type EncodeFn<T> = dyn Fn(&T) -> Result<Vec<u8>, BoxError> + Send + Sync;

/// The definition of the Kafka topic a message type `T` is published to.
///
/// Define it once per message type and register it in [`Topics`](crate::Topics):
///
/// ```
/// use serde::Serialize;
/// use txoutbox_core::Topic;
///
/// #[derive(Serialize)]
/// struct OrderCreated { order_id: i64, customer: String }
///
/// let topic = Topic::<OrderCreated>::json("orders")?
///     .key(|order| order.order_id.to_string())
///     .header("source", "shop")
///     .headers_with(|order| vec![("customer".into(), order.customer.clone())]);
/// assert_eq!(topic.name(), "orders");
/// # Ok::<(), txoutbox_core::Error>(())
/// ```
pub struct Topic<T> {
    name: String,
    key: Option<Arc<KeyFn<T>>>,
    static_headers: Vec<(String, String)>,
    headers: Option<Arc<HeadersFn<T>>>,
    encode: Arc<EncodeFn<T>>,
    strategy: PublishStrategy,
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            key: self.key.clone(),
            static_headers: self.static_headers.clone(),
            headers: self.headers.clone(),
            encode: self.encode.clone(),
            strategy: self.strategy,
        }
    }
}

impl<T> std::fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .field("message_type", &std::any::type_name::<T>())
            .field("keyed", &self.key.is_some())
            .field("static_headers", &self.static_headers)
            .field("strategy", &self.strategy)
            .finish()
    }
}

impl<T: Serialize> Topic<T> {
    /// A topic whose messages are serialized as JSON with serde (the default serialization).
    pub fn json(name: impl Into<String>) -> Result<Self> {
        Self::with_encoder(name, |message: &T| {
            serde_json::to_vec(message).map_err(|e| Box::new(e) as BoxError)
        })
    }
}

impl<T: AsRef<[u8]>> Topic<T> {
    /// A topic whose messages are already bytes, sent as they are.
    pub fn bytes(name: impl Into<String>) -> Result<Self> {
        Self::with_encoder(name, |message: &T| Ok(message.as_ref().to_vec()))
    }
}

impl<T> Topic<T> {
    /// A topic with a custom serializer (Avro, protobuf, ...).
    pub fn with_encoder<F>(name: impl Into<String>, encode: F) -> Result<Self>
    where
        F: Fn(&T) -> Result<Vec<u8>, BoxError> + Send + Sync + 'static,
    {
        let name = name.into();
        validate_topic_name(&name)?;
        Ok(Self {
            name,
            key: None,
            static_headers: Vec::new(),
            headers: None,
            encode: Arc::new(encode),
            strategy: PublishStrategy::default(),
        })
    }

    /// Derives the Kafka key from the message. Messages with equal keys go to the same partition
    /// and are sent in the order they were written. Without a key, records are spread freely.
    #[must_use]
    pub fn key<K, F>(mut self, key: F) -> Self
    where
        K: AsRef<[u8]>,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.key = Some(Arc::new(move |m: &T| Some(key(m).as_ref().to_vec())));
        self
    }

    /// Adds a header sent with every message of this topic.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.static_headers.push((name.into(), value.into()));
        self
    }

    /// Derives further headers from each message.
    #[must_use]
    pub fn headers_with<F>(mut self, headers: F) -> Self
    where
        F: Fn(&T) -> Vec<(String, String)> + Send + Sync + 'static,
    {
        self.headers = Some(Arc::new(headers));
        self
    }

    /// Sets how messages of this topic reach Kafka.
    #[must_use]
    pub fn strategy(mut self, strategy: PublishStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The Kafka topic name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The publish strategy.
    pub fn publish_strategy(&self) -> PublishStrategy {
        self.strategy
    }

    /// Encodes a message into the row `publish` writes. With the `opentelemetry` feature, the
    /// current span's `traceparent` joins the headers (unless they name one already).
    pub fn encode(&self, message: &T) -> Result<NewMessage> {
        self.encode_traced(message, &crate::trace_context::current())
    }

    /// Encodes with the given trace-context headers (computed once for a batch).
    pub(crate) fn encode_traced(&self, message: &T, trace: &[(String, String)]) -> Result<NewMessage> {
        let payload = (self.encode)(message).map_err(|source| Error::Encode {
            topic: self.name.clone(),
            source,
        })?;
        let mut headers = self.static_headers.clone();
        if let Some(dynamic) = &self.headers {
            headers.extend(dynamic(message));
        }
        crate::trace_context::add_to(&mut headers, trace);
        Ok(NewMessage {
            strategy: self.strategy,
            message_id: Uuid::now_v7(),
            topic: self.name.clone(),
            key: self.key.as_ref().and_then(|key| key(message)),
            payload: Some(payload),
            headers,
        })
    }
}

/// Checks a name against Kafka's topic rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.`
/// or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidTopicName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are reserved");
    }
    if name.len() > 249 {
        return invalid("it is longer than 249 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return invalid("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Order {
        id: u32,
    }

    #[test]
    fn encodes_key_headers_and_json() {
        let topic = Topic::<Order>::json("orders")
            .unwrap()
            .key(|o| o.id.to_string())
            .header("a", "1")
            .headers_with(|o| vec![("id".into(), o.id.to_string())]);
        let message = topic.encode(&Order { id: 7 }).unwrap();
        assert_eq!(message.topic, "orders");
        assert_eq!(message.key.as_deref(), Some(&b"7"[..]));
        assert_eq!(message.payload.as_deref(), Some(&br#"{"id":7}"#[..]));
        assert_eq!(
            message.headers,
            vec![("a".into(), "1".into()), ("id".into(), "7".into())]
        );
        assert_ne!(
            topic.encode(&Order { id: 7 }).unwrap().message_id,
            message.message_id
        );
    }

    #[test]
    fn raw_bytes_topic_sends_bytes_as_they_are() {
        let topic = Topic::<Vec<u8>>::bytes("raw").unwrap();
        assert_eq!(
            topic.encode(&vec![0, 159, 146]).unwrap().payload,
            Some(vec![0, 159, 146])
        );
        assert_eq!(topic.encode(&vec![1]).unwrap().key, None);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for good in ["a", "orders.v1", "A_b-c", &"x".repeat(249)] {
            validate_topic_name(good).unwrap();
        }
        for bad in ["", ".", "..", "has space", "slash/", "ü", &"x".repeat(250)] {
            let err = Topic::<Order>::json(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidTopicName { .. }), "{bad:?}");
        }
    }
}
