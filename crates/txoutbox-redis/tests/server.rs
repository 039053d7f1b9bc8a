//! The Redis Streams sink against a real server (`TXOUTBOX_REDIS_URL`, stock settings): what
//! reaches the streams, read back with `XRANGE`, and how each failure is classified.

use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use txoutbox_core::{OutboxMessage, Sink, SinkErrorKind};
use txoutbox_redis::{RedisConfig, RedisSink};
use txoutbox_testing::redis::{TestStreams, url};
use txoutbox_testing::sinks::{message, send};

fn sink_for(streams: &TestStreams) -> RedisSink {
    RedisSink::new(
        &RedisConfig::new(url())
            .stream_key(&streams.stream_key_template())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_message_arrives_whole_with_its_headers_in_order() {
    let streams = TestStreams::new("redis-whole").await;
    let sink = sink_for(&streams);
    let sent = message(
        1,
        "orders",
        Some(&[0xff, 0, b'k']),
        b"{\"n\":1}",
        &[("b", "2"), ("a", "1"), ("b", "3")],
    );
    let mut tombstone = message(2, "orders", None, b"", &[]);
    tombstone.payload = None;
    assert_eq!(send(&sink, vec![sent.clone(), tombstone]).await, [Ok(()), Ok(())]);
    let records = streams.read_all("orders").await;
    assert_eq!(records.len(), 2, "{records:?}");
    let r = &records[0];
    assert_eq!(r.payload.as_deref(), Some(&b"{\"n\":1}"[..]));
    assert_eq!(r.key.as_deref(), Some(&[0xff, 0, b'k'][..]));
    assert_eq!(
        r.header(txoutbox_core::MESSAGE_ID_HEADER),
        Some(&*sent.message_id)
    );
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[2..],
        ["b", "a", "b"],
        "headers keep the row's order, repeats included"
    );
    assert_eq!(records[1].payload, None, "a NULL payload has no field");
    streams.delete(&["orders".into()]).await;
}

#[tokio::test]
async fn a_key_of_another_type_fails_for_good_and_holds_back_nothing_else() {
    let streams = TestStreams::new("redis-wrongtype").await;
    let mut connection = redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let taken = format!("{}:taken", streams.prefix);
    let _: () = connection.set(&taken, "a string").await.unwrap();
    let sink = sink_for(&streams);
    let mut unreadable = message(3, "orders", Some(b"u"), b"", &[]);
    unreadable.malformed = Some("column `headers` is not a JSON object".into());
    let outcomes = send(
        &sink,
        vec![
            message(1, "taken", Some(b"a"), b"1", &[]),
            message(2, "orders", Some(b"b"), b"2", &[]),
            unreadable,
            message(4, "orders", Some(b"u"), b"4", &[]),
        ],
    )
    .await;
    let error = outcomes[0].as_ref().unwrap_err();
    assert_eq!(error.kind(), SinkErrorKind::Permanent, "{error}");
    assert!(error.to_string().contains("not a stream"), "{error}");
    assert_eq!(outcomes[1], Ok(()));
    assert_eq!(outcomes[2].as_ref().unwrap_err().kind(), SinkErrorKind::Rejected);
    assert_eq!(outcomes[3].as_ref().unwrap_err().kind(), SinkErrorKind::Deferred);
    let _: i64 = connection.del(&taken).await.unwrap();
    streams.delete(&["orders".into()]).await;
}

#[tokio::test]
async fn too_large_is_rejected_and_trimming_keeps_streams_short() {
    let streams = TestStreams::new("redis-limits").await;
    let config = RedisConfig::new(url())
        .stream_key(&streams.stream_key_template())
        .unwrap()
        .max_len(10)
        .max_message_bytes(1_000);
    let sink = RedisSink::new(&config).unwrap();
    let large = send(&sink, vec![message(1, "orders", None, &[b'x'; 1_001], &[])]).await;
    assert_eq!(large[0].as_ref().unwrap_err().kind(), SinkErrorKind::Rejected);
    let batch: Vec<OutboxMessage> = (0..500).map(|i| message(i, "orders", None, b"x", &[])).collect();
    assert!(send(&sink, batch).await.iter().all(Result::is_ok));
    assert!(streams.count("orders").await < 500, "MAXLEN ~ 10 trims");
    streams.delete(&["orders".into()]).await;
}

#[tokio::test]
async fn an_unreachable_server_is_transient_and_the_probe_says_so() {
    let sink =
        RedisSink::new(&RedisConfig::new("redis://127.0.0.1:1/").response_timeout(Duration::from_secs(2)))
            .unwrap();
    let started = Instant::now();
    let outcomes = send(&sink, vec![message(1, "a", Some(b"k"), b"1", &[])]).await;
    assert!(
        outcomes[0].as_ref().is_err_and(|e| e.is_transient()),
        "{outcomes:?}"
    );
    assert!(sink.probe().await.unwrap_err().is_transient());
    assert!(started.elapsed() < Duration::from_secs(30));
    let live = RedisSink::new(&RedisConfig::new(url())).unwrap();
    assert_eq!(live.probe().await, Ok(()));
}
