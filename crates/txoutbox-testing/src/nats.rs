//! A JetStream stream per test and a reader that brings back what reached it, as [`Record`]s.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use base64::Engine as _;
use futures::StreamExt as _;

use crate::kafka::Record;

/// The test server (`TXOUTBOX_NATS_URL`).
pub fn url() -> String {
    crate::required_env("TXOUTBOX_NATS_URL")
}

/// A stream of its own for one test: it takes every subject under a unique prefix.
#[derive(Debug)]
pub struct TestStream {
    /// The stream's name.
    pub name: String,
    /// The subjects' prefix: the stream takes `<prefix>.>`.
    pub prefix: String,
    jetstream: jetstream::Context,
}

impl TestStream {
    /// Creates the stream with JetStream's default settings (file storage, limits retention, a
    /// two-minute duplicate window).
    pub async fn new(prefix: &str) -> Self {
        let name = crate::unique(prefix).replace(['.', '-'], "_");
        let client = async_nats::connect(url()).await.expect("connect to NATS");
        let jetstream = jetstream::new(client);
        jetstream
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                ..Default::default()
            })
            .await
            .expect("create the stream");
        Self {
            prefix: name.clone(),
            name,
            jetstream,
        }
    }

    /// The sink's subject template that lands every topic in this stream: `<prefix>.{topic}`.
    pub fn subject_template(&self) -> String {
        format!("{}.{{topic}}", self.prefix)
    }

    /// How many messages the stream holds.
    pub async fn count(&self) -> u64 {
        let mut stream = self.jetstream.get_stream(&self.name).await.expect("the stream");
        stream.info().await.expect("stream info").state.messages
    }

    /// Every message of the stream in stream order, as records: the topic is the subject after
    /// the prefix, the key comes from `txoutbox-key` (or `txoutbox-key-base64`), the offset is
    /// the stream sequence.
    pub async fn read_all(&self) -> Vec<Record> {
        let total = self.count().await;
        let stream = self.jetstream.get_stream(&self.name).await.expect("the stream");
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("a consumer");
        let mut messages = consumer.messages().await.expect("consume");
        let mut records = Vec::with_capacity(total as usize);
        while (records.len() as u64) < total {
            let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
                .await
                .expect("the stream's messages within 30 s")
                .expect("a message")
                .expect("no error");
            let offset = message.info().expect("message info").stream_sequence as i64;
            records.push(record(&self.prefix, &message, offset));
        }
        records
    }

    /// Deletes the stream.
    pub async fn delete(self) {
        let _ = self.jetstream.delete_stream(&self.name).await;
    }
}

/// A JetStream message as a [`Record`].
fn record(prefix: &str, message: &jetstream::Message, offset: i64) -> Record {
    let subject = message.subject.as_str();
    let topic = subject
        .strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('.'))
        .unwrap_or(subject)
        .to_owned();
    let mut headers = Vec::new();
    let mut key = None;
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            for value in values {
                headers.push((name.to_string(), value.as_str().as_bytes().to_vec()));
            }
        }
        if let Some(text) = map.get("txoutbox-key") {
            key = Some(text.as_str().as_bytes().to_vec());
        } else if let Some(encoded) = map.get("txoutbox-key-base64") {
            key = Some(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_str())
                    .expect("base64 key"),
            );
        }
    }
    Record {
        topic,
        partition: 0,
        offset,
        key,
        payload: Some(message.payload.to_vec()),
        headers,
        timestamp_ms: None,
    }
}
