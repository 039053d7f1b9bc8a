//! The txoutbox demo on the embedded default: SQLite + a local Kafka broker.
//!
//! Places a few orders, each committed together with its `OrderPlaced` event, rolls one back,
//! and reads the events back from Kafka with an independent consumer.
//!
//! Run it with `scripts/demo.sh` (starts the broker), or against your own broker:
//! `TXOUTBOX_KAFKA_BOOTSTRAP=host:9092 cargo run -p txoutbox --example demo`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use txoutbox::kafka::{KafkaConfig, KafkaSink};
use txoutbox::sqlite::SqliteOutbox;
use txoutbox::{Relay, RelayConfig, Topic, Topics};

const TOPIC: &str = "txoutbox-demo.orders";

/// The event each committed order publishes.
#[derive(Debug, Serialize)]
struct OrderPlaced {
    order_id: i64,
    customer: String,
    total_cents: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Colours only for a person at a terminal, and never under NO_COLOR (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(colour)
        .init();
    let bootstrap = std::env::var("TXOUTBOX_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());

    // 1. The application's database: a SQLite file with a business table and the outbox table.
    let dir = std::env::temp_dir().join("txoutbox-demo");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("shop.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total_cents INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await?;
    let topics = Topics::new().with(
        Topic::<OrderPlaced>::json(TOPIC)?
            .key(|o| o.customer.clone())
            .header("event-type", "OrderPlaced"),
    )?;
    let outbox = SqliteOutbox::new(topics);
    outbox.migrate(&pool).await?;
    println!("database   {} (orders + outbox_messages)", path.display());

    // 2. The topic, and where it ends now (the demo reads only what this run adds).
    ensure_topic(&bootstrap).await?;
    let start = end_offsets(&bootstrap)?;
    println!("kafka      {bootstrap}, topic {TOPIC}");

    // 3. The relay, in this process.
    let sink = KafkaSink::new(&KafkaConfig::new(&bootstrap))?;
    let relay = Relay::new(outbox.store(pool.clone()), sink, RelayConfig::default())?.start();
    // Each outbox transaction's commit wakes the relay: events leave at once, not at the next poll.
    let outbox = outbox.with_wakeup(relay.wakeup());

    // 4. Business transactions: each order and its event commit together, or not at all.
    let orders = [
        ("alice", 2_500),
        ("bob", 1_200),
        ("alice", 830),
        ("carol", 15_000),
        ("bob", 99),
    ];
    let mut committed = 0;
    for (i, (customer, total_cents)) in orders.iter().enumerate() {
        let order_id = i as i64 + 1;
        let mut tx = outbox.begin(&pool).await?;
        sqlx::query("INSERT INTO orders (id, customer, total_cents) VALUES (?, ?, ?)")
            .bind(order_id)
            .bind(customer)
            .bind(total_cents)
            .execute(&mut *tx)
            .await?;
        let event = OrderPlaced {
            order_id,
            customer: customer.to_string(),
            total_cents: *total_cents,
        };
        let message_id = tx.publish(&event).await?;
        tx.commit().await?; // the order and its event commit together, and the relay wakes
        committed += 1;
        println!("committed  order #{order_id} for {customer} with its event {message_id}");
    }
    let mut tx = outbox.begin(&pool).await?;
    sqlx::query("INSERT INTO orders (id, customer, total_cents) VALUES (99, 'mallory', 1)")
        .execute(&mut *tx)
        .await?;
    tx.publish(&OrderPlaced {
        order_id: 99,
        customer: "mallory".into(),
        total_cents: 1,
    })
    .await?;
    tx.rollback().await?;
    println!("rolled back order #99 for mallory: its event must never reach Kafka");

    // 5. Read the events back from Kafka with an independent consumer.
    let started = Instant::now();
    let records = read_back(&bootstrap, &start, committed).await?;
    println!(
        "\nread back from Kafka in {}:",
        txoutbox::HumanDuration(started.elapsed())
    );
    for (partition, offset, key, value, message_id) in &records {
        println!(
            "  partition {partition} offset {offset:>4}  key {key:<6} {value}  (message-id {message_id})"
        );
    }
    relay.shutdown().await?;
    let mallory = records.iter().any(|r| r.2 == "mallory");
    println!(
        "\n{committed} orders committed, {} events read back from Kafka, rolled-back event seen: {}",
        records.len(),
        if mallory { "YES (bug!)" } else { "no" }
    );
    anyhow::ensure!(
        records.len() == committed && !mallory,
        "the demo did not see what it expected"
    );
    Ok(())
}

async fn ensure_topic(bootstrap: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics(&[NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1))], &options)
        .await?
    {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => anyhow::bail!("cannot create topic {topic}: {e}"),
        }
    }
    Ok(())
}

fn consumer(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "txoutbox-demo-reader")
        .set("enable.auto.commit", "false")
        .create()?)
}

/// Where each partition ends now. A topic created a moment ago may not have its leaders yet
/// ("not leader for partition"): asked again for up to 30 s.
fn end_offsets(bootstrap: &str) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer = consumer(bootstrap)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ends = (|| -> anyhow::Result<HashMap<i32, i64>> {
            let metadata = consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(10))?;
            let partitions = metadata
                .topics()
                .first()
                .map(|t| t.partitions())
                .unwrap_or_default();
            anyhow::ensure!(
                !partitions.is_empty(),
                "the broker lists no partitions of {TOPIC} yet"
            );
            let mut ends = HashMap::new();
            for p in partitions {
                ends.insert(
                    p.id(),
                    consumer
                        .fetch_watermarks(TOPIC, p.id(), Duration::from_secs(10))?
                        .1,
                );
            }
            Ok(ends)
        })();
        match ends {
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            ends => return ends,
        }
    }
}

type Seen = (i32, i64, String, String, String);

async fn read_back(bootstrap: &str, start: &HashMap<i32, i64>, expected: usize) -> anyhow::Result<Vec<Seen>> {
    let consumer = consumer(bootstrap)?;
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in start {
        assignment.add_partition_offset(TOPIC, *partition, Offset::Offset(*offset))?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    // Read until every committed event arrived, then a moment longer to catch any stray one.
    let mut quiet_until = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|t| Instant::now() < t) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        let message_id = message
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == txoutbox::MESSAGE_ID_HEADER)
                    .map(|h| text(h.value))
            })
            .unwrap_or_default();
        seen.push((
            message.partition(),
            message.offset(),
            text(message.key()),
            text(message.payload()),
            message_id,
        ));
        if seen.len() >= expected {
            quiet_until.get_or_insert(Instant::now() + Duration::from_millis(500));
        }
    }
    Ok(seen)
}
