//! The daemon with `--sink nats|rabbitmq|redis`, run as a platform team runs it: rows inserted
//! through the table contract in plain SQL while the daemon is killed with SIGKILL twice, read
//! back with each broker's own client. Nothing lost and no key out of order on any of them; no
//! duplicate in a NATS stream (the rows a killed daemon had sent but not yet deleted go again and
//! the stream's duplicate window, `Nats-Msg-Id`, drops them); on RabbitMQ and Redis, which keep
//! no message ids, the resends are counted.

mod support;

use std::time::Duration;

use sqlx::AssertSqlSafe;
use support::Daemon;
use txoutbox_testing::kafka::{Record, Verdict, verdict};
use txoutbox_testing::postgres::TestSchema;

const TOTAL: i64 = 20_000;
const CHUNK: i64 = 100;
const KEYS: i64 = 97;

/// The key and sequence number of a row written below: payload `<key>:<seq>`.
fn key_seq(record: &Record) -> (String, u64) {
    let text = std::str::from_utf8(record.payload.as_deref().unwrap()).unwrap();
    let (key, seq) = text.split_once(':').unwrap();
    (key.to_owned(), seq.parse().unwrap())
}

/// Starts the daemon with `sink_flags` on a fresh outbox, inserts [`TOTAL`] rows on topic
/// `orders` in transactions of [`CHUNK`] while killing the daemon twice, waits until the outbox is
/// empty, stops it; checks `/status` names `kind`; what `read` then finds, judged.
async fn killed_twice_mid_stream<F, Fut>(kind: &str, sink_flags: &[&str], read: F) -> Verdict
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Vec<Record>>,
{
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let mut flags = vec!["--migrate", "--poll-interval", "50ms", "--batch-size", "200"];
    flags.extend_from_slice(sink_flags);
    let mut daemon = Daemon::start(&db, &flags).await;
    let status = daemon.status().await;
    assert_eq!(status["sink"]["kind"], kind, "{status}");

    let table = db.qualify("outbox_messages");
    let mut kills = 0;
    let kill_after = [TOTAL / 3 / CHUNK * CHUNK, 2 * TOTAL / 3 / CHUNK * CHUNK];
    for start in (0..TOTAL).step_by(CHUNK as usize) {
        // One transaction of CHUNK rows, ids in seq order; key k<seq % KEYS>.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (topic, key, payload) \
             SELECT 'orders', convert_to('k' || (i % {KEYS}), 'UTF8'), \
                    convert_to('k' || (i % {KEYS}) || ':' || i, 'UTF8') \
             FROM generate_series($1::bigint, $2::bigint) AS i ORDER BY i"
        )))
        .bind(start)
        .bind(start + CHUNK - 1)
        .execute(&db.pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        if kill_after.contains(&start) {
            let logs = daemon.kill9();
            assert!(!logs.contains("panicked"), "{logs}");
            kills += 1;
            daemon = Daemon::start(&db, &flags).await;
        }
    }
    assert_eq!(kills, 2);
    let drained = txoutbox_testing::eventually(Duration::from_secs(120), || async {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&db.pool)
            .await
            .unwrap()
            == 0
    })
    .await;
    assert!(drained, "the daemon did not drain the outbox: {}", daemon.logs());
    let logs = daemon.stop();
    assert!(!logs.contains("panicked"), "{logs}");
    db.drop_schema().await;
    let verdict = verdict(&read().await, key_seq);
    eprintln!("{kind}: {verdict:?}");
    assert_eq!(verdict.distinct as i64, TOTAL, "{kind}: {verdict:?}");
    assert_eq!(verdict.order_violations, 0, "{kind}: {verdict:?}");
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_daemon_killed_mid_stream_loses_nothing_keeps_key_order_and_stores_no_duplicate() {
    let stream = txoutbox_testing::nats::TestStream::new("cli-nats").await;
    let (url, subject) = (txoutbox_testing::nats::url(), stream.subject_template());
    let flags = ["--sink", "nats", "--nats-url", &url, "--nats-subject", &subject];
    let verdict = killed_twice_mid_stream("nats", &flags, || stream.read_all()).await;
    assert_eq!(
        verdict.duplicates, 0,
        "resends after a kill fall in the stream's duplicate window: {verdict:?}"
    );
    stream.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_daemon_killed_mid_stream_loses_nothing_and_keeps_key_order() {
    let topics = ["orders".to_owned()];
    let queues = txoutbox_testing::rabbitmq::TestQueues::new("cli-rabbitmq", &topics).await;
    let (url, routing_key) = (txoutbox_testing::rabbitmq::url(), queues.routing_key_template());
    let flags = [
        "--sink",
        "rabbitmq",
        "--rabbitmq-url",
        &url,
        "--rabbitmq-routing-key",
        &routing_key,
    ];
    killed_twice_mid_stream("rabbitmq", &flags, || queues.take_all("orders")).await;
    queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_daemon_killed_mid_stream_loses_nothing_and_keeps_key_order() {
    let streams = txoutbox_testing::redis::TestStreams::new("cli-redis").await;
    let (url, stream_key) = (txoutbox_testing::redis::url(), streams.stream_key_template());
    let flags = [
        "--sink",
        "redis",
        "--redis-url",
        &url,
        "--redis-stream-key",
        &stream_key,
    ];
    killed_twice_mid_stream("redis", &flags, || streams.read_all("orders")).await;
    streams.delete(&["orders".to_owned()]).await;
}

/// A command line, its extra environment, and what its usage error must say.
type UsageCase = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn sink_settings_that_cannot_work_are_usage_errors() {
    let db = TestSchema::new().await;
    let cases: [UsageCase; 7] = [
        (
            &["relay", "--sink", "rabbitmq"],
            &[("TXOUTBOX_RABBITMQ_URL", "")],
            "--sink rabbitmq needs --rabbitmq-url",
        ),
        (
            &["relay", "--sink", "rabbitmq", "--rabbitmq-url", "http://h:5672"],
            &[],
            "must start with amqp:// or amqps://",
        ),
        (
            &[
                "relay",
                "--sink",
                "redis",
                "--redis-url",
                "redis://h:1",
                "--redis-stream-key",
                "{topic}:{id}",
            ],
            &[],
            "only {topic} and {key} are placeholders",
        ),
        (
            &["relay", "--sink", "nats"],
            &[("TXOUTBOX_NATS_URL", "")],
            "--sink nats needs --nats-url",
        ),
        (
            &[
                "relay",
                "--sink",
                "nats",
                "--nats-url",
                "nats://127.0.0.1:1",
                "--nats-subject",
                "{topic}.{id}",
            ],
            &[],
            "only {topic} and {key} are placeholders",
        ),
        (
            &[
                "relay",
                "--sink",
                "nats",
                "--nats-url",
                "nats://127.0.0.1:1",
                "--delivery",
                "exactly-once",
            ],
            &[],
            "exactly-once delivery needs Kafka transactions",
        ),
        (
            &[
                "relay",
                "--sink",
                "nats",
                "--nats-url",
                "nats://127.0.0.1:1",
                "--nats-user",
                "relay",
            ],
            &[],
            "needs a password in TXOUTBOX_NATS_PASSWORD",
        ),
    ];
    for (args, env, expected) in cases {
        let output = std::process::Command::new(support::binary())
            .args(args)
            .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
            .env("TXOUTBOX_TABLE", format!("{}.outbox_messages", db.schema))
            .env_remove("TXOUTBOX_NATS_PASSWORD")
            .env_remove("TXOUTBOX_RABBITMQ_URL")
            .env_remove("TXOUTBOX_REDIS_URL")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    db.drop_schema().await;
}
