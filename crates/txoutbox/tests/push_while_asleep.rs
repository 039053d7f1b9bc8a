//! PostgreSQL push wake-ups only while a relay sleeps (migrations 4 and 5): inserts made while the
//! relay is awake and busy send no notification; one insert wakes a sleeping relay at once; a
//! version 3 table is upgraded by `migrate`.
#![cfg(feature = "postgres")]

mod common;

use std::time::{Duration, Instant};

use common::{Event, keyed, relay_config, start_relay};
use sqlx::postgres::PgListener;
use sqlx::{AssertSqlSafe, PgPool};
use txoutbox::postgres::PgOutbox;
use txoutbox::{Store, Topics};
use txoutbox_testing::kafka::{count, new_topic};
use txoutbox_testing::postgres::TestSchema;

/// The relay's flag: `None` when the row is missing.
async fn flag(db: &TestSchema) -> Option<bool> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT awake FROM {}",
        db.qualify("outbox_messages_relay_state")
    )))
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

async fn pending(db: &TestSchema) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE status = 'pending'",
        db.qualify("outbox_messages")
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Sends `marker` on the channel and returns the payloads received before it. Notifications
/// reach a listener in commit order, so this collects exactly those of the transactions that
/// committed before the marker, without waiting for a silence.
async fn until_marker(listener: &mut PgListener, pool: &PgPool, channel: &str, marker: &str) -> Vec<String> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(marker)
        .execute(pool)
        .await
        .unwrap();
    let mut before = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("the marker notification did not arrive")
            .unwrap();
        if n.payload() == marker {
            return before;
        }
        before.push(n.payload().to_owned());
    }
}

async fn commit_one(outbox: &PgOutbox, pool: &PgPool, seq: u64) {
    let mut tx = pool.begin().await.unwrap();
    outbox
        .publish(
            &mut *tx,
            &Event::<0> {
                key: format!("k{seq}"),
                seq,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awake_relay_silences_the_trigger_and_a_sleeping_one_is_woken_at_once() {
    txoutbox_testing::init_tracing();
    let topic = new_topic("asleep", 1).await;
    let topics = [topic.clone()];
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(Topics::new().with(keyed::<0>(&topic)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    outbox.set_push_wakeups(&db.pool, true).await.unwrap();
    let channel = format!("txoutbox_{}_outbox_messages", db.schema);
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen(&channel).await.unwrap();

    // A poll interval far beyond the test: only a push delivers in time. A small in-flight
    // window keeps the relay busy with the burst below for a while.
    let relay = start_relay(
        outbox.store(db.pool.clone()),
        relay_config()
            .with_poll_interval(Duration::from_secs(60))
            .with_batch_size(100)
            .with_max_in_flight(200),
    );
    let asleep = txoutbox_testing::eventually(Duration::from_secs(10), || async {
        flag(&db).await == Some(false)
    })
    .await;
    assert!(asleep, "an idle relay should declare itself asleep");

    // Asleep: one insert notifies and wakes the relay at once.
    until_marker(&mut listener, &db.pool, &channel, "asleep").await;
    let started = Instant::now();
    commit_one(&outbox, &db.pool, 1).await;
    let arrived =
        txoutbox_testing::eventually(Duration::from_secs(10), || async { count(&topics).await >= 1 }).await;
    let latency = started.elapsed();
    assert!(arrived, "the message did not arrive");
    assert!(
        latency < Duration::from_secs(1),
        "commit to Kafka took {latency:?} with a 60 s poll interval"
    );
    assert_eq!(
        until_marker(&mut listener, &db.pool, &channel, "after one").await,
        vec![String::new()],
        "the insert made while the relay slept should have notified once"
    );
    println!("asleep: commit to Kafka in {latency:?}");

    // A burst (one statement, so one notification) makes the relay awake and busy.
    let burst: i64 = 30_000;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (topic, key, payload) \
         SELECT $1, convert_to('b' || g, 'UTF8'), '\\x7b7d'::bytea FROM generate_series(1, $2) AS g",
        db.qualify("outbox_messages")
    )))
    .bind(&topic)
    .bind(burst)
    .execute(&db.pool)
    .await
    .unwrap();
    let awake = txoutbox_testing::eventually(Duration::from_secs(10), || async {
        flag(&db).await == Some(true)
    })
    .await;
    assert!(awake, "a relay with rows to send should declare itself awake");
    until_marker(&mut listener, &db.pool, &channel, "busy").await;

    // Every probe below committed while more rows were pending than the relay can have in
    // flight plus one batch: it had rows left to send, so it cannot have been asleep.
    let mut busy_probes: i64 = 0;
    for seq in 2..1_000 {
        commit_one(&outbox, &db.pool, seq).await;
        if pending(&db).await <= 300 {
            break;
        }
        busy_probes += 1;
    }
    let heard = until_marker(&mut listener, &db.pool, &channel, "probes").await;
    assert!(
        busy_probes >= 5,
        "only {busy_probes} probes while the relay was busy"
    );
    // The last probe may have committed after the relay caught up (and slept): at most it notifies.
    assert!(
        heard.len() <= 1,
        "{} notifications for {busy_probes} inserts made while the relay was awake and busy",
        heard.len()
    );
    println!(
        "awake: {busy_probes} inserts while busy, {} notifications",
        heard.len()
    );

    let total = 1 + burst + busy_probes + 1;
    let all = txoutbox_testing::eventually(Duration::from_secs(120), || async {
        count(&topics).await >= total
    })
    .await;
    assert!(all, "not all {total} messages arrived");
    let asleep = txoutbox_testing::eventually(Duration::from_secs(10), || async {
        flag(&db).await == Some(false)
    })
    .await;
    assert!(asleep, "the relay should sleep again once drained");

    // Asleep again: the next insert notifies and arrives at once.
    until_marker(&mut listener, &db.pool, &channel, "drained").await;
    let started = Instant::now();
    commit_one(&outbox, &db.pool, 5_000).await;
    let arrived =
        txoutbox_testing::eventually(Duration::from_secs(10), || async { count(&topics).await > total })
            .await;
    let latency = started.elapsed();
    assert!(arrived && latency < Duration::from_secs(1), "took {latency:?}");
    println!("asleep again: commit to Kafka in {latency:?}");

    relay.shutdown().await.unwrap();
    // The listener holds a pooled connection, which closing the pool waits for.
    drop(listener);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_upgrades_a_version_3_table_and_push_wakeups_notify_only_a_relay_declared_asleep() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(Topics::new(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let table = db.qualify("outbox_messages");
    let migrations = db.qualify("outbox_messages_migrations");
    // Back to version 3: migration 2's trigger function (enabled), no state table, no rows of
    // versions 4 to 7 (whose steps run again, harmlessly).
    let notify = db.qualify("outbox_messages_notify");
    let channel = format!("txoutbox_{}_outbox_messages", db.schema);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE {state}; DELETE FROM {migrations} WHERE version >= 4; \
         CREATE OR REPLACE FUNCTION {notify}() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$; \
         ALTER TABLE {table} ENABLE TRIGGER outbox_messages_notify; \
         INSERT INTO {table} (topic) VALUES ('kept');",
        state = db.qualify("outbox_messages_relay_state"),
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let versions = || async {
        sqlx::query_scalar::<_, i32>(AssertSqlSafe(format!(
            "SELECT version FROM {migrations} ORDER BY version"
        )))
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    assert_eq!(versions().await, vec![1, 2, 3]);
    assert!(outbox.store(db.pool.clone()).check().await.is_err());

    outbox.migrate(&db.pool).await.unwrap();
    assert_eq!(versions().await, vec![1, 2, 3, 4, 5, 6, 7]);
    // Idempotent: a second run changes nothing.
    outbox.migrate(&db.pool).await.unwrap();
    assert_eq!(versions().await, vec![1, 2, 3, 4, 5, 6, 7]);
    outbox.store(db.pool.clone()).check().await.unwrap();
    let kept: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(kept, 1, "the upgrade keeps the rows");

    // Version 7 turned push wake-ups off (writers pay nothing for them); the table keeps the
    // setting from then on.
    assert!(!outbox.push_wakeups(&db.pool).await.unwrap());
    outbox.set_push_wakeups(&db.pool, true).await.unwrap();
    assert!(outbox.push_wakeups(&db.pool).await.unwrap());
    outbox.migrate(&db.pool).await.unwrap();
    assert!(
        outbox.push_wakeups(&db.pool).await.unwrap(),
        "a migration run keeps the setting"
    );

    // The upgraded trigger, on: "asleep" notifies; "awake" and no row (no relay has declared
    // anything since the table was made or the database restarted) do not. Off: nothing does.
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen(&channel).await.unwrap();
    let state = db.qualify("outbox_messages_relay_state");
    let push_off = "push wake-ups off".to_owned();
    for (setup, notifies) in [
        (format!("DELETE FROM {state}"), false),
        (format!("INSERT INTO {state} (awake) VALUES (true)"), false),
        (format!("UPDATE {state} SET awake = false"), true),
        (format!("UPDATE {state} SET awake = true"), false),
        (format!("UPDATE {state} SET awake = false"), true),
        (push_off.clone(), false),
    ] {
        if setup == push_off {
            outbox.set_push_wakeups(&db.pool, false).await.unwrap();
            // The relay still says it is asleep; the disabled trigger is silent all the same.
            let asleep: bool = sqlx::query_scalar(AssertSqlSafe(format!("SELECT NOT awake FROM {state}")))
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert!(asleep);
        } else {
            sqlx::query(AssertSqlSafe(setup.clone()))
                .execute(&db.pool)
                .await
                .unwrap();
        }
        sqlx::query(AssertSqlSafe(format!("INSERT INTO {table} (topic) VALUES ('t')")))
            .execute(&db.pool)
            .await
            .unwrap();
        let heard = until_marker(&mut listener, &db.pool, &channel, "m").await;
        assert_eq!(heard.len(), usize::from(notifies), "after {setup}");
    }
    // The listener holds a pooled connection, which closing the pool waits for.
    drop(listener);
    db.drop_schema().await;
}
