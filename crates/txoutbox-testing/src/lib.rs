//! Test support for txoutbox: the services named by the environment (started by
//! `scripts/services.sh`), an isolated schema, database file and topic per test, and consumers
//! that read back what reached the broker.

#![allow(missing_docs)] // reason: internal test support, not published

pub mod browser;
pub mod instances;
pub mod kafka;
pub mod mysql;
pub mod nats;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod sinks;
pub mod sqlite;
pub mod toxiproxy;

use std::future::Future;
use std::time::{Duration, Instant};

/// A short random suffix for names of schemas, files and topics.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

/// Reads a required environment variable, with a message that says how to get it.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set. The integration tests need real services: run them with `scripts/test.sh`, \
             or `eval \"$(scripts/services.sh up)\"` first."
        )
    })
}

/// Installs a test tracing subscriber once (honours `RUST_LOG`, default `warn`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
