//! A relay started while the broker is unreachable keeps its messages pending, says so in its
//! logs, and catches up once the broker is there. Its own binary: it captures the process's logs.
#![cfg(feature = "sqlite")]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Event, drained, keyed, relay_config, verify};
use tokio::net::{TcpListener, TcpStream};
use txoutbox::kafka::{KafkaConfig, KafkaSink};
use txoutbox::sqlite::SqliteOutbox;
use txoutbox::{Relay, Store, Topics};
use txoutbox_testing::kafka::{new_topic, read_all};
use txoutbox_testing::sqlite::TestDb;

/// Log lines of the whole process, for the assertion on what the relay told its operator.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Forwards every connection on `listener` to the real broker.
async fn forward(listener: TcpListener, broker: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(&broker).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_while_the_broker_is_unreachable_and_flow_once_it_is_there() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let topic = new_topic("unreachable", 3).await;
    let db = TestDb::new().await;
    let outbox = SqliteOutbox::new(Topics::new().with(keyed::<0>(&topic)).unwrap());
    outbox.migrate(&db.pool).await.unwrap();
    let events: Vec<Event<0>> = (0..100)
        .map(|i| Event {
            key: format!("k{}", i % 7),
            seq: i,
        })
        .collect();
    outbox.publish_all(&db.pool, &events).await.unwrap();

    // Nothing listens on this port yet: the broker is unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = KafkaSink::new(
        &KafkaConfig::new(format!("127.0.0.1:{port}"))
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "200"),
    )
    .unwrap();
    let store = outbox.store(db.pool.clone());
    let relay = Relay::new(store.clone(), sink, relay_config()).unwrap().start();

    let told = txoutbox_testing::eventually(Duration::from_secs(30), || async {
        logs.text().contains("Kafka broker problem")
    })
    .await;
    assert!(
        told,
        "the relay should log that the broker is unreachable; logs:\n{}",
        logs.text()
    );
    assert_eq!(
        store.backlog().await.unwrap().pending,
        100,
        "nothing may leave the outbox yet"
    );

    // The broker becomes reachable.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(forward(listener, txoutbox_testing::kafka::bootstrap()));
    drained(&store, Duration::from_secs(60)).await;
    relay.shutdown().await.unwrap();

    let verdict = verify(&read_all(&[topic]).await);
    assert_eq!(
        (verdict.distinct, verdict.order_violations),
        (100, 0),
        "{verdict:?}"
    );
}
