//! Where and how the Redis Streams sink writes: the server URL, the stream key, trimming.

use std::time::Duration;

use txoutbox_core::{Error, NameTemplate, Result};

/// How long a batch's pipeline waits for the server's replies by default.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest field Redis takes by default (`proto-max-bulk-len`, 512 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// The Redis Streams sink's settings. The URL's password never appears in `Debug` output or logs.
///
/// ```
/// use txoutbox_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://:s3cret@cache:6379/0").stream_key("outbox:{topic}")?.max_len(1_000_000);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), txoutbox_core::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) stream_key: NameTemplate,
    pub(crate) max_len: Option<usize>,
    pub(crate) response_timeout: Duration,
    pub(crate) max_message_bytes: usize,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url_redacted())
            .field("stream_key", &self.stream_key.as_str())
            .field("max_len", &self.max_len)
            .field("response_timeout", &self.response_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://[user][:password]@host:6379/db`, `rediss://`
    /// for TLS), writing to the stream `{topic}`, untrimmed, with a 10 s reply timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream_key: NameTemplate::default(),
            max_len: None,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The stream each message is added to: `{topic}` (the default), `outbox:{topic}`,
    /// `{topic}:{key}`, … ([`NameTemplate`]).
    pub fn stream_key(mut self, template: &str) -> Result<Self> {
        self.stream_key = NameTemplate::new(template)
            .map_err(|why| Error::Config(format!("Redis stream key template {template:?}: {why}")))?;
        Ok(self)
    }

    /// Trim each stream to about this many entries as messages are added (`XADD … MAXLEN ~ n`);
    /// by default streams grow until consumers trim them.
    #[must_use]
    pub fn max_len(mut self, entries: usize) -> Self {
        self.max_len = Some(entries);
        self
    }

    /// How long a batch waits for the server's replies before its messages count as transient
    /// failures (sent again).
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The largest message (payload and headers) the sink sends; larger rows are dead-lettered
    /// at once.
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The stream key template.
    pub fn stream_key_template(&self) -> &NameTemplate {
        &self.stream_key
    }

    /// The URL with its password shown as `***` (for logs and status pages): the user
    /// information's password, and a `pass=` query parameter (`redis+unix://…?pass=…`).
    pub fn url_redacted(&self) -> String {
        txoutbox_core::redact_url(&self.url)
    }

    /// Checks the settings before connecting.
    pub fn validate(&self) -> Result<()> {
        redis::Client::open(self.url.as_str()).map_err(|e| {
            Error::Config(format!(
                "Redis URL {:?} is not valid: {e} (e.g. redis://:password@host:6379/0, rediss:// for TLS)",
                self.url_redacted()
            ))
        })?;
        if self.response_timeout.is_zero() {
            return Err(Error::Config("the Redis reply timeout must be above zero".into()));
        }
        if self.max_message_bytes == 0 || self.max_len == Some(0) {
            return Err(Error::Config(
                "the Redis message limit and stream length must be above zero".into(),
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
        let config = RedisConfig::new("redis://relay:pw@h:6379/0");
        assert_eq!(config.url_redacted(), "redis://relay:***@h:6379/0");
        assert!(!format!("{config:?}").contains("pw"));
        assert_eq!(
            RedisConfig::new("redis://:pw@h:1?pass=pw2").url_redacted(),
            "redis://:***@h:1?pass=***"
        );
        assert!(config.validate().is_ok());
        assert!(RedisConfig::new("http://h").validate().is_err());
        assert!(RedisConfig::new("redis://h").stream_key("{nope}").is_err());
        assert!(RedisConfig::new("redis://h").max_len(0).validate().is_err());
    }
}
