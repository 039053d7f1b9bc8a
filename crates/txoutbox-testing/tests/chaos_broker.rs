//! The Kafka broker stopped in the middle of a run: the relay (its own process) keeps going while
//! writers commit messages with many keys on PostgreSQL; the broker (a private node, so the tests
//! sharing the common broker are not disturbed) is stopped, left down, and started again on the
//! same data folder. An independent consumer checks that nothing was lost and no key went
//! backwards, and counts the duplicates; the recovery times are measured and printed.
//!
//! Light by default (part of the test command): 5,000 messages, a 10 s outage. The full run:
//! `TXOUTBOX_CHAOS_MESSAGES=100000 TXOUTBOX_CHAOS_OUTAGE_SECS=30 scripts/test.sh -p txoutbox-testing --test chaos_broker -- --nocapture`
//! `TXOUTBOX_CHAOS_BROKER_MODE`: `stop` (SIGTERM, a controlled shutdown; the default), `kill`
//! (SIGKILL; also `TXOUTBOX_CHAOS_BROKER_KILL=1`) or `pause` (SIGSTOP, then SIGCONT: a hung broker
//! whose connections stay open).

mod chaos_common;

use std::time::{Duration, Instant, SystemTime};

use chaos_common::*;
use txoutbox_core::{Store, Topic, Topics};
use txoutbox_postgres::PgOutbox;
use txoutbox_testing::instances::KafkaNode;
use txoutbox_testing::kafka::{LOG_APPEND_TIME, new_topic_on};
use txoutbox_testing::postgres::TestSchema;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_mid_run_loses_nothing_and_the_relay_catches_up() {
    let mode = match std::env::var("TXOUTBOX_CHAOS_BROKER_MODE").as_deref() {
        _ if env_number("TXOUTBOX_CHAOS_BROKER_KILL", 0) == 1 => "kill",
        Ok("kill") => "kill",
        Ok("pause") => "pause",
        Ok("stop") | Err(_) => "stop",
        Ok(other) => panic!("TXOUTBOX_CHAOS_BROKER_MODE={other}: expected stop, kill or pause"),
    };
    outage_run(
        env_number("TXOUTBOX_CHAOS_MESSAGES", 5_000),
        Duration::from_secs(env_number("TXOUTBOX_CHAOS_OUTAGE_SECS", 10)),
        mode,
        &std::env::var("TXOUTBOX_CHAOS_KAFKA").unwrap_or_default(),
    )
    .await;
}

/// A broker outage longer than the producer's `message.timeout.ms` (10 s here, 300 s by default),
/// while writers keep committing: the messages queued at the start of the outage expire in
/// librdkafka before the later ones, the later ones are delivered when the broker returns, and the
/// expired ones would be re-sent after them. The relay prevents it: the first expiry purges the
/// producer's queue, batches read before a failure are not sent, and reading resumes once
/// everything in flight has settled, so every key is sent again in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_longer_than_the_message_timeout_keeps_key_order() {
    outage_run(20_000, Duration::from_secs(8), "stop", "message.timeout.ms=10000").await;
}

/// Writers commit `total` messages spread over three times `outage`; a third into the run the
/// private broker is stopped (`mode`: stop, kill or pause) for `outage`, then comes back. The
/// relay process gets the extra producer properties `kafka` (`name=value,…`).
async fn outage_run(total: u64, outage: Duration, mode: &str, kafka: &str) {
    txoutbox_testing::init_tracing();
    const KEYS: u64 = 400;
    const WRITERS: u64 = 4;

    let mut broker = KafkaNode::start().await;
    let bootstrap = broker.bootstrap();
    // LogAppendTime: each record says when the broker stored it.
    let topic = new_topic_on(&bootstrap, "chaos-broker", 3, &[LOG_APPEND_TIME]).await;
    let db = TestSchema::new().await;
    let topics = Topics::new()
        .with(Topic::<Event>::json(&topic).unwrap().key(|e| e.key.clone()))
        .unwrap();
    let outbox = PgOutbox::with_table(topics, db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());
    let table = db.table().quoted();

    let relay = spawn_relay(&[
        ("TXOUTBOX_CHAOS_SCHEMA", &db.schema),
        ("TXOUTBOX_KAFKA_BOOTSTRAP", &bootstrap),
        ("TXOUTBOX_CHAOS_KAFKA", kafka),
    ]);
    // The writes span the run: a third before the outage, a third during it, a third after.
    let plan = PgWriters {
        total,
        keys: KEYS,
        writers: WRITERS,
        per_tx: 20,
        spread: outage * 3,
        markers: db.qualify("chaos_batches"),
    };
    plan.create_markers(&db.pool).await;
    let writers = plan.spawn(&db.pool, &outbox);

    tokio::time::sleep(outage).await; // the moment of the outage: a third into the run, by design
    let (_, pending_at_stop) = max_id_and_pending(&db.pool, &table).await;
    let stop_began = SystemTime::now();
    match mode {
        "kill" => broker.kill().await,
        "pause" => broker.pause(),
        _ => broker.stop().await,
    }
    let stopped = SystemTime::now();
    tokio::time::sleep(outage).await; // the outage itself
    if mode == "pause" {
        broker.resume();
    } else {
        broker.restart().await;
    }
    let back = SystemTime::now();
    let back_instant = Instant::now();
    let (max_id_at_return, pending_at_return) = max_id_and_pending(&db.pool, &table).await;

    // Caught up: every row committed before the broker returned is delivered and completed.
    let caught_up = txoutbox_testing::eventually(Duration::from_secs(300), || async {
        pending_up_to(&db.pool, &table, max_id_at_return).await == Some(0)
    })
    .await;
    let catch_up_time = back_instant.elapsed();
    assert!(
        caught_up,
        "the relay did not catch up within 300 s of the broker's return: {:?}",
        store.backlog().await
    );

    let stats = join_writers(writers).await;
    let drained = drains(&store, Duration::from_secs(300)).await;

    let (records, v) = stop_and_read_back(relay, drained, &store, &bootstrap, &topic).await;
    let back_ms = epoch_ms(back);
    // The first record the broker stored after it went down (so, after it came back).
    let first = first_append_since(&records, epoch_ms(stopped)).map(|t| t - back_ms);
    let stored_during_stop = records
        .iter()
        .filter_map(|r| r.timestamp_ms)
        .filter(|&t| t >= epoch_ms(stop_began) && t < epoch_ms(stopped))
        .count();
    eprintln!(
        "chaos broker {mode}{}: {total} messages over {KEYS} keys, broker down {:.1} s ({} ms to stop, {stored_during_stop} records stored while stopping); \
         {} records read, {} distinct, {} lost, {} duplicates, {} order violations; \
         {pending_at_stop} pending at the stop, {pending_at_return} at the return; \
         first record stored {} after the broker was back, rows committed before its return all delivered {:.1} s after it; \
         writers: {} commits, {} failed attempts",
        if kafka.is_empty() {
            String::new()
        } else {
            format!(" ({kafka})")
        },
        back.duration_since(stopped).unwrap().as_secs_f64(),
        stopped.duration_since(stop_began).unwrap().as_millis(),
        v.records,
        v.distinct,
        total as i64 - v.distinct as i64,
        v.duplicates,
        v.order_violations,
        first.map_or("never".into(), secs),
        catch_up_time.as_secs_f64(),
        stats.commits,
        stats.failed_attempts,
    );
    print_violations(&records, &v);
    assert_eq!(v.distinct as u64, total, "messages lost (or extra): {v:?}");
    assert_eq!(v.order_violations, 0, "{v:?}");
    db.drop_schema().await;
}
