//! The axum example (`examples/axum_service.rs`) against real PostgreSQL and Kafka: orders posted
//! over HTTP reach Kafka (read back by an independent consumer), the relay's routes mounted in
//! the service answer (`/live`, `/health`, `/status`, `/metrics` with the `table` label, the
//! console, and the guard refuses a foreign `Host`), one token stops the server and then the
//! relay; and two such services in one process (two relays on two tables) keep apart series.
//!
//! Skipped, saying so, when `TXOUTBOX_POSTGRES_URL` or `TXOUTBOX_KAFKA_BOOTSTRAP` is not set.
#![cfg(all(feature = "postgres", feature = "kafka", feature = "axum"))]

#[path = "../examples/axum_service.rs"]
#[allow(dead_code)] // reason: the example's `main`; the test runs its `serve`
mod axum_service;

use std::sync::OnceLock;
use std::time::Duration;

use axum_service::{Settings, serve};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use txoutbox::axum::{PrometheusHandle, install_prometheus};
use txoutbox_testing::eventually;
use txoutbox_testing::kafka;
use txoutbox_testing::postgres::TestSchema;

/// The process's one Prometheus recorder, shared by every service the tests start.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| install_prometheus().expect("install the Prometheus recorder"))
        .clone()
}

/// The services' addresses, or `None` (the test is skipped) when they are not named.
fn services() -> Option<(String, String)> {
    match (
        std::env::var("TXOUTBOX_POSTGRES_URL"),
        std::env::var("TXOUTBOX_KAFKA_BOOTSTRAP"),
    ) {
        (Ok(postgres), Ok(kafka)) => Some((postgres, kafka)),
        _ => {
            eprintln!(
                "skipped: TXOUTBOX_POSTGRES_URL and TXOUTBOX_KAFKA_BOOTSTRAP are not both set \
                 (`eval \"$(scripts/services.sh up)\"`, or scripts/test.sh)"
            );
            None
        }
    }
}

/// One running service: the example's `serve` on a port of its own, over a schema and a topic
/// of its own.
struct Service {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    db: TestSchema,
    topic: String,
}

impl Service {
    async fn start(postgres: &str, kafka_bootstrap: &str) -> Self {
        txoutbox_testing::init_tracing();
        let db = TestSchema::new().await;
        let topic = kafka::new_topic("axum-orders", 3).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let settings = Settings {
            database_url: postgres.to_owned(),
            kafka_bootstrap: kafka_bootstrap.to_owned(),
            schema: Some(db.schema.clone()),
            topic: topic.clone(),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(settings, listener, prometheus(), shutdown.clone()));
        let service = Self {
            base,
            http: reqwest::Client::new(),
            shutdown,
            task,
            db,
            topic,
        };
        assert!(
            eventually(Duration::from_secs(30), || async {
                service.get("/live").await.0 == 200
            })
            .await,
            "/live never answered 200"
        );
        service
    }

    /// The outbox table's name, as the `table` label shows it.
    fn table(&self) -> String {
        self.db.table().to_string()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match self.http.get(format!("{}{path}", self.base)).send().await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    async fn place_order(&self, customer: &str, total_cents: i64) -> i64 {
        let response = self
            .http
            .post(format!("{}/orders", self.base))
            .json(&serde_json::json!({ "customer": customer, "total_cents": total_cents }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "POST /orders");
        let body: Value = response.json().await.unwrap();
        body["order_id"].as_i64().unwrap()
    }

    /// Stops the server, then the relay: the example's shutdown.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the service stops within 30 s")
            .unwrap()
            .expect("the service stops cleanly");
        self.db.drop_schema().await;
    }
}

/// The value of the series of `name` whose labels include every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (series, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| series.split(',').any(|l| l == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_posted_over_http_reach_kafka_and_the_mounted_routes_answer() {
    let Some((postgres, kafka_bootstrap)) = services() else {
        return;
    };
    let service = Service::start(&postgres, &kafka_bootstrap).await;

    let customers = ["alice", "bob", "carol", "alice", "dave"];
    let mut ids = Vec::new();
    for (i, customer) in customers.iter().enumerate() {
        ids.push(service.place_order(customer, 1_000 + i as i64).await);
    }

    // An independent consumer reads every event, keyed by customer.
    let topics = [service.topic.clone()];
    assert!(
        eventually(Duration::from_secs(30), || async {
            kafka::count(&topics).await == 5
        })
        .await,
        "the five events never all reached Kafka"
    );
    let records = kafka::read_all(&topics).await;
    assert_eq!(records.len(), 5, "each event once");
    let mut seen: Vec<(String, i64)> = records
        .iter()
        .map(|r| {
            let event: Value = serde_json::from_str(r.payload_str()).unwrap();
            assert_eq!(event["customer"].as_str(), Some(r.key_str()), "keyed by customer");
            (r.key_str().to_owned(), event["order_id"].as_i64().unwrap())
        })
        .collect();
    seen.sort_by_key(|(_, id)| *id);
    let expected: Vec<(String, i64)> = customers.iter().map(|c| c.to_string()).zip(ids).collect();
    assert_eq!(seen, expected);

    // The mounted routes: healthy once the check ran with nothing pending.
    assert!(
        eventually(Duration::from_secs(15), || async {
            let (code, body) = service.get("/health").await;
            code == 200
                && serde_json::from_str::<Value>(&body)
                    .is_ok_and(|h| h["backlog"]["pending"] == 0 && h["healthy"] == true)
        })
        .await,
        "/health never answered 200 with nothing pending: {:?}",
        service.get("/health").await
    );
    let (code, status) = service.get("/status").await;
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["published_total"], 5);
    assert_eq!(status["table"].as_str(), Some(service.table().as_str()));

    let table = service.table();
    let (code, metrics) = service.get("/metrics").await;
    assert_eq!(code, 200);
    let published = sample(
        &metrics,
        "txoutbox_messages_published_total",
        &[("table", &table), ("topic", &service.topic)],
    );
    assert_eq!(
        published,
        Some(5.0),
        "published, labelled by table and topic:\n{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "txoutbox_delivery_latency_seconds_count",
            &[("table", &table)]
        ) >= Some(5.0),
        "the latency histogram of this table:\n{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "txoutbox_up",
            &[("table", &table), ("component", "relay")]
        ),
        Some(1.0)
    );

    // The console is served, and every route stays behind the guard.
    let (code, page) = service.get("/ui").await;
    assert_eq!(code, 200);
    assert!(page.contains("txoutbox console"), "{page}");
    let foreign = service
        .http
        .get(format!("{}/metrics", service.base))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        foreign.status().as_u16(),
        403,
        "a request to a foreign Host (DNS rebinding)"
    );
    let cross_site = service
        .http
        .post(format!("{}/ui/api/dead-letters/purge", service.base))
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({ "all": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status().as_u16(), 403, "a cross-site action");

    // One token stops the server, then the relay.
    let base = service.base.clone();
    service.stop().await;
    assert!(
        reqwest::get(format!("{base}/live")).await.is_err(),
        "the server still answers after the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_relays_in_one_process_keep_apart_series() {
    let Some((postgres, kafka_bootstrap)) = services() else {
        return;
    };
    let (first, second) = tokio::join!(
        Service::start(&postgres, &kafka_bootstrap),
        Service::start(&postgres, &kafka_bootstrap)
    );
    for i in 0..2 {
        first.place_order("erin", i).await;
    }
    for i in 0..3 {
        second.place_order("frank", i).await;
    }
    let (a, b) = (first.table(), second.table());
    assert_ne!(a, b);
    let series_apart = || async {
        // Either service's /metrics renders the process's one recorder: both relays' series.
        let (_, metrics) = first.get("/metrics").await;
        let published = |table: &str, topic: &str| {
            sample(
                &metrics,
                "txoutbox_messages_published_total",
                &[("table", table), ("topic", topic)],
            )
        };
        let pending = |table: &str| sample(&metrics, "txoutbox_pending_messages", &[("table", table)]);
        published(&a, &first.topic) == Some(2.0)
            && published(&b, &second.topic) == Some(3.0)
            && pending(&a) == Some(0.0)
            && pending(&b) == Some(0.0)
    };
    assert!(
        eventually(Duration::from_secs(30), series_apart).await,
        "each relay's series under its own table label:\n{}",
        first.get("/metrics").await.1
    );
    for (service, published) in [(&first, 2), (&second, 3)] {
        let status: Value = serde_json::from_str(&service.get("/status").await.1).unwrap();
        assert_eq!(status["published_total"], published, "each relay counts its own");
    }
    first.stop().await;
    second.stop().await;
}
