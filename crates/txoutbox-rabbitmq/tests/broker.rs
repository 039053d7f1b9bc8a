//! The RabbitMQ sink against a real broker (`TXOUTBOX_RABBITMQ_URL`, quorum queues): what reaches
//! the queues, read back with the AMQP client, and how each failure is classified.

use std::time::{Duration, Instant};

use txoutbox_core::{OutboxMessage, Sink, SinkErrorKind};
use txoutbox_rabbitmq::{KEY_HEADER, RabbitMqConfig, RabbitMqSink};
use txoutbox_testing::rabbitmq::{TestQueues, url};
use txoutbox_testing::sinks::{message, send};

fn sink_for(queues: &TestQueues) -> RabbitMqSink {
    RabbitMqSink::new(
        &RabbitMqConfig::new(url())
            .routing_key(&queues.routing_key_template())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_message_arrives_whole_and_persistent() {
    let queues = TestQueues::new("rmq-whole", &["orders".into()]).await;
    let sink = sink_for(&queues);
    let sent = message(
        1,
        "orders",
        Some(&[0xff, 0, b'k']),
        b"{\"n\":1}",
        &[("b", "2"), ("a", "1"), ("b", "3")],
    );
    assert_eq!(send(&sink, vec![sent.clone()]).await, [Ok(())]);
    let records = queues.take_all("orders").await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.payload.as_deref(), Some(&b"{\"n\":1}"[..]));
    assert_eq!(
        r.key.as_deref(),
        Some(&[0xff, 0, b'k'][..]),
        "the key's bytes as they are"
    );
    assert_eq!(
        r.header(txoutbox_core::MESSAGE_ID_HEADER),
        Some(&*sent.message_id)
    );
    assert_eq!(
        r.header(txoutbox_core::CREATED_AT_HEADER),
        Some(
            sent.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .as_str()
        )
    );
    let b: Vec<&[u8]> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "b")
        .map(|(_, v)| &v[..])
        .collect();
    assert_eq!(b, [b"2", b"3"], "a name given twice keeps both values in order");
    assert!(r.headers.iter().any(|(n, _)| n == KEY_HEADER));
    assert_eq!(r.timestamp_ms, Some(sent.created_at.timestamp() * 1000));
    queues.delete().await;
}

#[tokio::test]
async fn an_unroutable_message_fails_for_good_with_what_to_do() {
    let queues = TestQueues::new("rmq-unroutable", &["orders".into()]).await;
    let sink = sink_for(&queues);
    let outcome = send(&sink, vec![message(1, "nowhere", None, b"x", &[])]).await;
    let error = outcome[0].as_ref().unwrap_err();
    assert_eq!(error.kind(), SinkErrorKind::Permanent, "{error}");
    assert!(error.to_string().contains("no queue is bound"), "{error}");
    queues.delete().await;
}

#[tokio::test]
async fn rows_amqp_cannot_carry_are_rejected_and_hold_back_their_key() {
    let queues = TestQueues::new("rmq-hostile", &["orders".into()]).await;
    let sink = RabbitMqSink::new(
        &RabbitMqConfig::new(url())
            .routing_key(&queues.routing_key_template())
            .unwrap()
            .max_message_bytes(10_000),
    )
    .unwrap();
    let long_name = "n".repeat(256);
    let mut unreadable = message(6, "orders", Some(b"d"), b"", &[]);
    unreadable.malformed = Some("column `headers` is not a JSON object".into());
    let batch = vec![
        message(1, "orders", Some(b"a"), b"1", &[(&long_name, "v")]),
        message(2, "orders", Some(b"a"), b"2", &[]),
        message(3, "orders", Some(b"b"), b"3", &[]),
        message(4, &"t".repeat(300), Some(b"c"), b"4", &[]),
        message(5, "orders", Some(b"e"), &[b'x'; 10_001], &[]),
        unreadable,
        message(7, "orders", Some(b"b"), b"7", &[]),
    ];
    let outcomes = send(&sink, batch).await;
    let kinds: Vec<Option<SinkErrorKind>> = outcomes
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            Some(SinkErrorKind::Rejected),
            Some(SinkErrorKind::Deferred),
            None,
            Some(SinkErrorKind::Rejected),
            Some(SinkErrorKind::Rejected),
            Some(SinkErrorKind::Rejected),
            None,
        ],
        "{outcomes:?}"
    );
    assert!(
        outcomes[3]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("routing key")
    );
    assert!(
        outcomes[4]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("max_message_size")
    );
    let payloads: Vec<Vec<u8>> = queues
        .take_all("orders")
        .await
        .into_iter()
        .map(|r| r.payload.unwrap())
        .collect();
    assert_eq!(payloads, [b"3".to_vec(), b"7".to_vec()]);
    queues.delete().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_transient_and_a_missing_exchange_fails_the_probe() {
    let sink = RabbitMqSink::new(&RabbitMqConfig::new("amqp://guest:guest@127.0.0.1:1/%2f")).unwrap();
    let started = Instant::now();
    let outcomes = send(
        &sink,
        vec![
            message(1, "a", Some(b"k"), b"1", &[]),
            message(2, "a", None, b"2", &[]),
        ],
    )
    .await;
    assert!(
        outcomes
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.is_transient() && e.is_unsent())),
        "{outcomes:?}"
    );
    assert!(sink.probe().await.unwrap_err().is_transient());
    assert!(started.elapsed() < Duration::from_secs(25));
    let missing =
        RabbitMqSink::new(&RabbitMqConfig::new(url()).exchange(txoutbox_testing::unique("no-exchange")))
            .unwrap();
    let probe = missing.probe().await.unwrap_err();
    assert!(probe.to_string().contains("cannot be used"), "{probe}");
    let live = RabbitMqSink::new(&RabbitMqConfig::new(url()).exchange("amq.direct")).unwrap();
    assert_eq!(live.probe().await, Ok(()));
}

#[tokio::test]
async fn unroutable_messages_among_routable_ones_each_get_their_own_outcome() {
    let queues = TestQueues::new("rmq-mixed", &["orders".into()]).await;
    let sink = sink_for(&queues);
    // Pipelined: the broker coalesces acknowledgements, and returns may ride on any of them.
    let batch: Vec<OutboxMessage> = (0..400)
        .map(|i| {
            let topic = if i % 3 == 0 { "nowhere" } else { "orders" };
            message(
                i,
                topic,
                Some(format!("k{i}").as_bytes()),
                i.to_string().as_bytes(),
                &[],
            )
        })
        .collect();
    let outcomes = send(&sink, batch).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        if i % 3 == 0 {
            let error = outcome.as_ref().unwrap_err();
            assert_eq!(error.kind(), SinkErrorKind::Permanent, "{i}: {error}");
        } else {
            assert_eq!(outcome, &Ok(()), "{i}");
        }
    }
    let payloads: Vec<String> = queues
        .take_all("orders")
        .await
        .into_iter()
        .map(|r| String::from_utf8(r.payload.unwrap()).unwrap())
        .collect();
    let expected: Vec<String> = (0..400)
        .filter(|i| i % 3 != 0)
        .map(|i: i64| i.to_string())
        .collect();
    assert_eq!(payloads, expected);
    queues.delete().await;
}
