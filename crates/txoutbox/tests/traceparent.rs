//! The publishing span's W3C trace context reaches the consumer in the record's headers.
#![cfg(all(feature = "opentelemetry", feature = "sqlite"))]

mod common;

use std::time::Duration;

use common::{Event, drained, keyed, relay_config, start_relay};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
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
