//! The NATS sink against a real nats-server with JetStream (`TXOUTBOX_NATS_URL`): what reaches the
//! stream, read back with NATS's own client, and how each failure is classified.

use std::time::{Duration, Instant};

use txoutbox_core::{OutboxMessage, Sink, SinkErrorKind};
use txoutbox_nats::{KEY_BASE64_HEADER, KEY_HEADER, NatsConfig, NatsSink};
use txoutbox_testing::nats::{TestStream, url};
use txoutbox_testing::sinks::{message, send};

async fn sink_for(stream: &TestStream) -> NatsSink {
    let config = NatsConfig::new(url())
        .subject(&stream.subject_template())
        .unwrap();
    NatsSink::connect(&config).await.unwrap()
}

#[tokio::test]
async fn a_message_arrives_whole_and_a_resend_is_stored_once() {
    let stream = TestStream::new("nats-whole").await;
    let sink = sink_for(&stream).await;
    let sent = message(
        1,
        "orders",
        Some(b"order-1"),
        b"{\"n\":1}",
        &[("b", "2"), ("a", "1"), ("b", "3")],
    );
    let binary = message(2, "orders", Some(&[0xff, 0x00, b'k']), b"two", &[]);
    assert_eq!(
        send(&sink, vec![sent.clone(), binary.clone()]).await,
        [Ok(()), Ok(())]
    );
    // The relay sends a message again when its acknowledgement was lost: the stream keeps one.
    assert_eq!(send(&sink, vec![sent.clone()]).await, [Ok(())]);
    let records = stream.read_all().await;
    assert_eq!(
        records.len(),
        2,
        "the resend is dropped by the duplicate window: {records:?}"
    );
    let first = &records[0];
    assert_eq!(first.topic, "orders");
    assert_eq!(first.payload.as_deref(), Some(&b"{\"n\":1}"[..]));
    assert_eq!(first.header(KEY_HEADER), Some("order-1"));
    assert_eq!(
        first.header(txoutbox_core::MESSAGE_ID_HEADER),
        Some(&*sent.message_id)
    );
    assert_eq!(first.header("Nats-Msg-Id"), Some(&*sent.message_id));
    assert_eq!(
        first.header(txoutbox_core::CREATED_AT_HEADER),
        Some(
            sent.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .as_str()
        )
    );
    let b: Vec<&[u8]> = first
        .headers
        .iter()
        .filter(|(n, _)| n == "b")
        .map(|(_, v)| &v[..])
        .collect();
    assert_eq!(b, [b"2", b"3"], "a name's values keep their order");
    assert_eq!(records[1].key.as_deref(), Some(&[0xff, 0x00, b'k'][..]));
    assert!(records[1].header(KEY_BASE64_HEADER).is_some());
    stream.delete().await;
}

#[tokio::test]
async fn rows_nats_cannot_carry_are_rejected_and_hold_back_their_key() {
    let stream = TestStream::new("nats-hostile").await;
    let sink = sink_for(&stream).await;
    let mut unreadable = message(6, "orders", Some(b"d"), b"", &[]);
    unreadable.malformed = Some("column `headers` is not a JSON object".into());
    let batch = vec![
        message(1, "orders", Some(b"a"), b"1", &[("x", "line\r\nPUB evil 0")]),
        message(2, "orders", Some(b"a"), b"2", &[]),
        message(3, "orders", Some(b"b"), b"3", &[]),
        message(4, "orders", Some(b"c"), b"4", &[("bad name", "v")]),
        message(5, "a..b", Some(b"e"), b"5", &[]),
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
        ]
    );
    let why = outcomes[0].as_ref().unwrap_err().to_string();
    assert!(why.contains("line break"), "{why}");
    let why = outcomes[4].as_ref().unwrap_err().to_string();
    assert!(why.contains("no valid NATS subject"), "{why}");
    assert!(outcomes.iter().flatten().count() == 2);
    let records = stream.read_all().await;
    let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_deref().unwrap()).collect();
    assert_eq!(
        payloads,
        [b"3", b"7"],
        "only the carriable rows reached the stream, in order"
    );
    stream.delete().await;
}

#[tokio::test]
async fn a_subject_no_stream_takes_fails_for_the_message_with_what_to_do() {
    let config = NatsConfig::new(url())
        .subject(&format!(
            "{}.{{topic}}",
            txoutbox_testing::unique("nostream").replace('-', "_")
        ))
        .unwrap();
    let sink = NatsSink::connect(&config).await.unwrap();
    let outcome = send(&sink, vec![message(1, "orders", None, b"x", &[])]).await;
    let error = outcome[0].as_ref().unwrap_err();
    assert_eq!(error.kind(), SinkErrorKind::Permanent, "{error}");
    assert!(error.to_string().contains("nats stream add"), "{error}");
}

#[tokio::test]
async fn a_message_over_max_payload_is_rejected_before_it_is_sent() {
    let stream = TestStream::new("nats-large").await;
    let sink = sink_for(&stream).await;
    // Unknown until the sink met the server (the daemon probes before it relays).
    sink.probe().await.unwrap();
    let limit = sink.max_message_bytes().unwrap();
    assert!(limit >= 1024 * 1024, "the server's max_payload: {limit}");
    let outcome = send(
        &sink,
        vec![message(1, "orders", Some(b"k"), &vec![b'x'; limit + 1], &[])],
    )
    .await;
    let error = outcome[0].as_ref().unwrap_err();
    assert_eq!(error.kind(), SinkErrorKind::Rejected, "{error}");
    assert!(error.is_unsent());
    assert!(error.to_string().contains("max_payload"), "{error}");
    assert_eq!(stream.count().await, 0);
    stream.delete().await;
}

#[tokio::test]
async fn an_unreachable_server_is_transient_and_the_probe_says_so() {
    // Nothing listens on port 1: the sink starts anyway (it reconnects for ever).
    let config = NatsConfig::new("nats://127.0.0.1:1").ack_timeout(Duration::from_millis(500));
    let sink = NatsSink::connect(&config).await.unwrap();
    let started = Instant::now();
    let probe = sink.probe().await.unwrap_err();
    assert!(probe.is_transient(), "{probe}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let outcome = send(&sink, vec![message(1, "orders", Some(b"k"), b"x", &[])]).await;
    let error = outcome[0].as_ref().unwrap_err();
    assert!(error.is_transient(), "{error}");
    let live = NatsSink::connect(&NatsConfig::new(url())).await.unwrap();
    assert_eq!(live.probe().await, Ok(()));
}

#[tokio::test]
async fn a_batch_larger_than_the_acknowledgements_in_flight_goes_through() {
    let stream = TestStream::new("nats-window").await;
    let config = NatsConfig::new(url())
        .subject(&stream.subject_template())
        .unwrap()
        .max_acks_in_flight(2);
    let sink = NatsSink::connect(&config).await.unwrap();
    let batch: Vec<OutboxMessage> = (0..50)
        .map(|i| message(i, "orders", Some(b"k"), i.to_string().as_bytes(), &[]))
        .collect();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), send(&sink, batch))
        .await
        .expect("a batch of 50 through a window of 2 must not wait for ever");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let payloads: Vec<String> = stream
        .read_all()
        .await
        .iter()
        .map(|r| String::from_utf8(r.payload.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(payloads, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
    stream.delete().await;
}
