//! Where and how the RabbitMQ sink publishes: the broker URI, the exchange, the routing key.

use std::time::Duration;

use txoutbox_core::{Error, NameTemplate, Result};

/// How long a publish waits for the broker's confirm by default.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest message sent by default: RabbitMQ 4's `max_message_size` (16 MiB; 3.x allows
/// 128 MiB). A larger message would make the broker close the channel.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The longest routing key AMQP carries (a short string).
pub(crate) const MAX_ROUTING_KEY_BYTES: usize = 255;

/// The RabbitMQ sink's settings. The URI's password never appears in `Debug` output or logs.
///
/// ```
/// use txoutbox_rabbitmq::RabbitMqConfig;
///
/// let config = RabbitMqConfig::new("amqp://relay:s3cret@rabbit:5672/%2f")
///     .exchange("events")
///     .routing_key("{topic}")?;
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), txoutbox_core::Error>(())
/// ```
#[derive(Clone)]
pub struct RabbitMqConfig {
    pub(crate) uri: String,
    pub(crate) exchange: String,
    pub(crate) routing_key: NameTemplate,
    pub(crate) confirm_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) connection_name: String,
}

impl std::fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("uri", &self.uri_redacted())
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key.as_str())
            .field("confirm_timeout", &self.confirm_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

impl RabbitMqConfig {
    /// Settings for the broker at `uri` (`amqp://user:password@host:5672/vhost`, `amqps://` for
    /// TLS), publishing to the default exchange (`""`: a message goes to the queue its routing key
    /// names) with the routing key `{topic}`, a 30 s confirm timeout and a 16 MiB message limit.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            exchange: String::new(),
            routing_key: NameTemplate::default(),
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            connection_name: "txoutbox-relay".to_owned(),
        }
    }

    /// The exchange every message is published to (`""`, the default exchange, routes by queue
    /// name).
    #[must_use]
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// The routing key of each message: `{topic}` (the default), `{key}`, `orders.{topic}`, …
    /// ([`NameTemplate`]).
    pub fn routing_key(mut self, template: &str) -> Result<Self> {
        self.routing_key = NameTemplate::new(template)
            .map_err(|why| Error::Config(format!("RabbitMQ routing key template {template:?}: {why}")))?;
        Ok(self)
    }

    /// How long a publish waits for the broker's confirm before it counts as a transient
    /// failure (the relay sends it again).
    #[must_use]
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// The largest message (payload and headers, in bytes) the sink sends; larger rows are
    /// dead-lettered at once. Set it to the broker's `max_message_size`.
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The connection's name, shown by the broker (`rabbitmqctl list_connections client_properties`).
    #[must_use]
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// The exchange.
    pub fn exchange_name(&self) -> &str {
        &self.exchange
    }

    /// The routing key template.
    pub fn routing_key_template(&self) -> &NameTemplate {
        &self.routing_key
    }

    /// The URI with its password shown as `***` (for logs and status pages).
    pub fn uri_redacted(&self) -> String {
        txoutbox_core::redact_url(&self.uri)
    }

    /// Checks the settings before connecting.
    pub fn validate(&self) -> Result<()> {
        if !(self.uri.starts_with("amqp://") || self.uri.starts_with("amqps://")) {
            return Err(Error::Config(format!(
                "RabbitMQ URI {:?} must start with amqp:// or amqps:// (e.g. amqp://user:password@host:5672/%2f)",
                self.uri_redacted()
            )));
        }
        self.uri.parse::<lapin::uri::AMQPUri>().map_err(|e| {
            Error::Config(format!(
                "RabbitMQ URI {:?} is not valid: {e}",
                self.uri_redacted()
            ))
        })?;
        if self.exchange.len() > MAX_ROUTING_KEY_BYTES {
            return Err(Error::Config(
                "the RabbitMQ exchange name is longer than 255 bytes".into(),
            ));
        }
        if self.confirm_timeout.is_zero() {
            return Err(Error::Config(
                "the RabbitMQ confirm timeout must be above zero".into(),
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(Error::Config(
                "the RabbitMQ message limit must be above zero".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_and_validates() {
        let config = RabbitMqConfig::new("amqp://relay:pw:x@h:5672/v");
        assert_eq!(config.uri_redacted(), "amqp://relay:***@h:5672/v");
        assert!(!format!("{config:?}").contains("pw"));
        assert!(config.validate().is_ok());
        assert!(RabbitMqConfig::new("http://h").validate().is_err());
        assert!(
            RabbitMqConfig::new("amqp://h")
                .exchange("x".repeat(256))
                .validate()
                .is_err()
        );
        assert!(
            RabbitMqConfig::new("amqp://h")
                .routing_key("{topic}.{nope}")
                .is_err()
        );
        assert!(
            RabbitMqConfig::new("amqp://h")
                .confirm_timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
    }
}
