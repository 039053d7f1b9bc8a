//! Streams per test on the test Redis, and a reader that brings back their entries as [`Record`]s.

use redis::AsyncCommands as _;

use crate::kafka::Record;

/// The test server (`TXOUTBOX_REDIS_URL`).
pub fn url() -> String {
    crate::required_env("TXOUTBOX_REDIS_URL")
}

/// Streams of a test's own: the sink's stream key template `<prefix>:{topic}`.
#[derive(Debug)]
pub struct TestStreams {
    /// The streams' prefix.
    pub prefix: String,
    connection: redis::aio::MultiplexedConnection,
}

impl TestStreams {
    /// A prefix of its own (the streams appear with their first entry).
    pub async fn new(prefix: &str) -> Self {
        let client = redis::Client::open(url()).expect("Redis URL");
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        Self {
            prefix: crate::unique(prefix),
            connection,
        }
    }

    /// The sink's stream key template that gives each topic a stream of this test.
    pub fn stream_key_template(&self) -> String {
        format!("{}:{{topic}}", self.prefix)
    }

    /// How many entries the stream of `topic` holds.
    pub async fn count(&self, topic: &str) -> u64 {
        let mut connection = self.connection.clone();
        connection
            .xlen(format!("{}:{topic}", self.prefix))
            .await
            .expect("XLEN")
    }

    /// Every entry of the stream of `topic` in stream order: the key from `txoutbox-key`, the
    /// payload from `payload`, headers from the `header:<name>` fields (and the `txoutbox-…`
    /// fields as headers too); the offset is the position in the stream.
    pub async fn read_all(&self, topic: &str) -> Vec<Record> {
        let mut connection = self.connection.clone();
        let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(format!("{}:{topic}", self.prefix))
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await
            .expect("XRANGE");
        entries
            .into_iter()
            .enumerate()
            .map(|(offset, (_, fields))| {
                let (mut key, mut payload, mut headers) = (None, None, Vec::new());
                for pair in fields.chunks(2) {
                    let [field, value] = pair else { continue };
                    let field = String::from_utf8_lossy(field).into_owned();
                    match field.as_str() {
                        "txoutbox-key" => key = Some(value.clone()),
                        "payload" => payload = Some(value.clone()),
                        other => {
                            let name = other.strip_prefix("header:").unwrap_or(other);
                            headers.push((name.to_owned(), value.clone()));
                        }
                    }
                }
                Record {
                    topic: topic.to_owned(),
                    partition: 0,
                    offset: offset as i64,
                    key,
                    payload,
                    headers,
                    timestamp_ms: None,
                }
            })
            .collect()
    }

    /// Deletes the streams of `topics`.
    pub async fn delete(self, topics: &[String]) {
        let mut connection = self.connection.clone();
        for topic in topics {
            let _: redis::RedisResult<i64> = connection.del(format!("{}:{topic}", self.prefix)).await;
        }
    }
}
