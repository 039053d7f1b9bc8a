//! Core of [txoutbox](https://docs.rs/txoutbox): message and topic types, errors, the [`Store`]
//! and [`Sink`] traits, and the relay engine. This crate holds no SQL and no Kafka code: the store
//! crates (PostgreSQL, PostgreSQL WAL mode, SQLite, MySQL/MariaDB) and the Kafka sink implement its
//! traits. Applications depend on the
//! `txoutbox` facade instead.

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod child_task;
mod clock;
pub mod coordination;
mod created_at_text;
mod error;
mod health;
mod human;
pub mod id_ranges;
mod identifier;
mod immediate;
mod interner;
mod maintenance;
mod message;
mod metric_labels;
pub mod metrics;
mod name_template;
mod progress_record;
mod publish_strategy;
mod refused_keys;
pub mod relay;
mod retry;
mod row_fields;
pub mod row_position;
mod schema;
mod sink;
mod store;
mod stream_positions;
mod topic;
mod topics;
mod trace_context;
mod url_redaction;
mod wakeup;

/// The byte buffer of [`OutboxMessage`] keys and payloads, for stores and sinks written outside
/// this workspace.
pub use bytes;
/// The simulation's virtual wall clock (the `simulation` feature, for `txoutbox-sim`).
#[cfg(feature = "simulation")]
pub use clock::virtual_clock;
pub use created_at_text::CreatedAtText;
pub use error::{BoxError, Error, Result};
pub use health::{HealthCheck, HealthReport, HealthThresholds};
pub use human::HumanDuration;
pub use identifier::{DEFAULT_TABLE, TableName};
pub use immediate::{Immediate, ImmediateSend};
pub use interner::Interner;
pub use maintenance::{
    DeadLetter, DeadLetterFilter, DeadLetters, DeadPayload, Retention, Statistics, TopicStats, ago,
};
pub use message::{
    CREATED_AT_HEADER, MESSAGE_ID_HEADER, NewMessage, OutboxMessage, headers_from_json, headers_to_json,
    message_id_text,
};
pub use metric_labels::MetricLabels;
pub use name_template::NameTemplate;
pub use progress_record::ProgressRecord;
pub use publish_strategy::PublishStrategy;
pub use refused_keys::RefusedKeys;
pub use relay::{
    AllowedTopics, Condition, DeadLetterTopic, OnDeadLetter, Relay, RelayConfig, RelayHandle, RelayMonitor,
    UNREADABLE_TOPIC,
};
pub use retry::RetryPolicy;
pub use row_fields::{RowFields, UnfitColumn};
pub use schema::{Migration, Migrations, check_schema_version};
pub use sink::{BatchDelivery, DeliveryResult, DeliveryTracker, Sink, SinkError, SinkErrorKind, TakenOver};
pub use store::{Backlog, Completion, Failure, ReadLimit, Store, in_id_order};
pub use stream_positions::StreamPositions;
pub use topic::{Topic, validate_topic_name};
pub use topics::Topics;
pub use trace_context::{TRACEPARENT_HEADER, TRACESTATE_HEADER};
pub use url_redaction::redact_url;
pub use wakeup::Wakeup;
