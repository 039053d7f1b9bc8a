//! Tracing: the publishing span's W3C trace context reaches the consumer in the record's headers,
//! and the relay's claim, send and mark steps run in spans of their own.
#![cfg(all(feature = "opentelemetry", feature = "sqlite"))]

mod common;

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Event, drained, keyed, relay_config, start_relay};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use tracing::Instrument;
use tracing::field::Field;
use tracing::span::{Attributes, Id};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use txoutbox::sqlite::SqliteOutbox;
use txoutbox::{TRACEPARENT_HEADER, Topics};
use txoutbox_testing::kafka::{new_topic, read_all};

#[tokio::test(flavor = "current_thread")]
async fn a_message_published_in_a_traced_span_carries_its_traceparent() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("txoutbox-test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let topic = new_topic("traceparent", 1).await;
    let db = txoutbox_testing::sqlite::TestDb::new().await;
    let outbox = SqliteOutbox::new(Topics::new().with(keyed::<0>(&topic)).unwrap());
    outbox.migrate(&db.pool).await.unwrap();

    let span = tracing::info_span!("place_order");
    let expected = async {
        let context = tracing::Span::current().context();
        let span_context = context.span().span_context().clone();
        assert!(
            span_context.is_valid(),
            "the test's span has an OpenTelemetry context"
        );
        let mut tx = db.pool.begin().await.unwrap();
        outbox
            .publish(
                &mut *tx,
                &Event::<0> {
                    key: "k".into(),
                    seq: 1,
                },
            )
            .await
            .unwrap();
        outbox
            .publish_all(
                &mut *tx,
                &[Event::<0> {
                    key: "k".into(),
                    seq: 2,
                }],
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    }
    .instrument(span)
    .await;
    // Outside any span: no header.
    let mut tx = db.pool.begin().await.unwrap();
    outbox
        .publish(
            &mut *tx,
            &Event::<0> {
                key: "k".into(),
                seq: 3,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let store = outbox.store(db.pool.clone());
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();

    let records = read_all(&[topic]).await;
    let parents: Vec<Option<&str>> = records.iter().map(|r| r.header(TRACEPARENT_HEADER)).collect();
    assert_eq!(parents, [Some(expected.as_str()), Some(expected.as_str()), None]);
}

/// Records every span opened: its name and fields.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut fields = String::new();
        attrs.record(&mut |field: &Field, value: &dyn fmt::Debug| {
            let _ = write!(fields, "{}={value:?} ", field.name());
        });
        let name = attrs.metadata().name().to_owned();
        self.0.lock().unwrap().push((name, fields.trim_end().to_owned()));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_relay_claims_sends_and_marks_in_spans() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let topic = new_topic("spans", 1).await;
    let db = txoutbox_testing::sqlite::TestDb::new().await;
    let outbox = SqliteOutbox::new(Topics::new().with(keyed::<0>(&topic)).unwrap());
    outbox.migrate(&db.pool).await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let events: Vec<Event<0>> = (0..5).map(|seq| Event { key: "k".into(), seq }).collect();
    outbox.publish_all(&mut *tx, &events).await.unwrap();
    tx.commit().await.unwrap();

    let store = outbox.store(db.pool.clone());
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();
    assert_eq!(read_all(&[topic]).await.len(), 5);

    let spans = spans.0.lock().unwrap().clone();
    let rows_in = |name: &str| -> usize {
        spans
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, fields)| {
                let rows = fields.split(' ').find_map(|f| f.strip_prefix("rows=")).unwrap();
                rows.parse::<usize>().unwrap()
            })
            .sum()
    };
    assert!(
        spans.iter().any(|(name, _)| name == "txoutbox.claim"),
        "no claim span: {spans:?}"
    );
    assert_eq!(rows_in("txoutbox.send"), 5, "{spans:?}");
    assert_eq!(rows_in("txoutbox.mark"), 5, "{spans:?}");
}
