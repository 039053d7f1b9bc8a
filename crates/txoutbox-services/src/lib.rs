//! The local services of txoutbox's demo, tests and CI, all on loopback: Apache Kafka 4.1.1
//! (KRaft, jars from Maven Central), PostgreSQL and MariaDB (our own instances, not the system
//! ones), a NATS server with JetStream (built with `go install`), RabbitMQ and Redis (Debian's packages), plus the tools some tests need (Toxiproxy, headless Chromium).
//!
//! One implementation for two users: the `txoutbox-services` binary (which `scripts/services.sh`
//! wraps; see [`cli`] for its commands) and the private instances of `txoutbox-testing`, which
//! use the same jar cache, broker configuration writer, storage formatting, `initdb`/`pg_ctl`
//! driving and package installation.

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod cli;
pub mod env_file;
pub mod files;
pub mod kafka;
pub mod kafka_config;
pub mod kafka_service;
pub mod lock;
pub mod loopback_daemon;
pub mod mariadb;
pub mod nats;
pub mod packages;
pub mod postgres;
pub mod process;
pub mod rabbitmq;
pub mod redis;
pub mod settings;
pub mod tools;

pub use settings::Settings;

/// Prints a progress line on stderr (stdout carries only a command's result).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { eprintln!($($arg)*) };
}
