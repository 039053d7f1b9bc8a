//! The error type of txoutbox, classified at the boundary.

use std::error::Error as StdError;

/// A boxed error from a driver (sqlx, rdkafka, serde) kept as the source of an [`Error`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in txoutbox.
///
/// Each variant's message says what is wrong and what to do. [`Error::is_retryable`] tells whether
/// the same call may succeed later without any change (a lost connection, a deadlock, a broker
/// that is not reachable yet).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message type was published for which no topic was defined.
    #[error(
        "no topic is defined for message type `{type_name}`: add `Topic::<{type_name}>::json(\"name\")` \
         (or `Topic::bytes`) to the `Topics` given to the outbox"
    )]
    UnknownTopic {
        /// The Rust type name of the message.
        type_name: &'static str,
    },

    /// Two topics were defined for the same message type.
    #[error("a topic is already defined for message type `{type_name}`: define each message type once")]
    DuplicateTopic {
        /// The Rust type name of the message.
        type_name: &'static str,
    },

    /// A topic name breaks Kafka's rules.
    #[error("invalid Kafka topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A schema or table name is not a plain SQL identifier.
    #[error("invalid {what} name {value:?}: {reason}")]
    InvalidIdentifier {
        /// What the identifier names (`schema`, `table`).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A message could not be serialized for its topic.
    #[error("could not serialize a message for topic `{topic}`: {source}")]
    Encode {
        /// The topic the message was meant for.
        topic: String,
        /// The serializer's error.
        #[source]
        source: BoxError,
    },

    /// The database failed or refused a statement.
    #[error("database error{}: {source}", if *.retryable { " (transient, will be retried)" } else { "" })]
    Database {
        /// The driver's error.
        #[source]
        source: BoxError,
        /// Whether the same statement may succeed later unchanged.
        retryable: bool,
    },

    /// The outbox table is missing or older than this version of txoutbox expects.
    #[error(
        "the outbox table {table} is not ready: {reason}; run the migrations first (`migrate()` or `txoutbox migrate`)"
    )]
    SchemaNotReady {
        /// The qualified table name.
        table: String,
        /// What was found.
        reason: String,
    },

    /// The message transport (Kafka) failed.
    #[error("sink error: {0}")]
    Sink(#[from] crate::sink::SinkError),

    /// The relay was shut down before the operation could finish.
    #[error("the relay is shut down")]
    Shutdown,
}

impl Error {
    /// Whether retrying the same operation later, unchanged, may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Database { retryable, .. } => *retryable,
            Error::Sink(e) => e.is_transient(),
            _ => false,
        }
    }

    /// Wraps a database driver error, with the store's verdict on whether it is transient.
    pub fn database(source: impl Into<BoxError>, retryable: bool) -> Self {
        Error::Database {
            source: source.into(),
            retryable,
        }
    }
}

/// `Result` with txoutbox's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
