//! End to end on PostgreSQL: application transaction → outbox table → relay → Kafka → consumer.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;

use common::cases::{self, three_new_topics};
use common::{Event, three_topics};
use sqlx::AssertSqlSafe;
use txoutbox::postgres::{PgOutbox, PgStore};
use txoutbox_testing::postgres::TestSchema;

#[derive(Clone)]
struct Pg {
    db: Arc<TestSchema>,
    outbox: PgOutbox,
}

impl Pg {
    async fn new(topics: &[String]) -> Self {
        txoutbox_testing::init_tracing();
        let db = TestSchema::new().await;
        let outbox = PgOutbox::with_table(three_topics(topics), db.table());
        outbox.migrate(&db.pool).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {} (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)",
            db.qualify("orders")
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        Self {
            db: Arc::new(db),
            outbox,
        }
    }

    async fn teardown(self) {
        drop(self.outbox);
        if let Ok(db) = Arc::try_unwrap(self.db) {
            db.drop_schema().await;
        }
    }
}

cases::impl_e2e_db!(Pg, PgStore, sqlx::Postgres, |db: &Pg| db.db.qualify("orders"));

impl Pg {
    /// The relay's store.
    fn store_over_pool(&self) -> PgStore {
        self.outbox.store(self.db.pool.clone())
    }
}

/// A row no relay can read (its `headers` are JSON but no object) is dead-lettered at once, with
/// the reason, and its copy reaches the dead-letter topic through `broker`'s sink (`topics[2]`,
/// which the broker takes), while the good row after it is delivered.
#[cfg(any(feature = "nats", feature = "rabbitmq", feature = "redis"))]
async fn an_unreadable_row_is_copied_to_the_dead_letter_topic(
    broker: &impl common::broker::Broker,
    db: &Pg,
    topics: &[String],
) {
    let table = db.db.qualify("outbox_messages");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (topic, key, payload, headers) VALUES \
           ($1, convert_to('k', 'UTF8'), convert_to('unreadable', 'UTF8'), '[1, 2]'), \
           ($1, convert_to('k2', 'UTF8'), convert_to('good', 'UTF8'), NULL)"
    )))
    .bind(&topics[0])
    .execute(&db.db.pool)
    .await
    .unwrap();
    let store = db.store_over_pool();
    let config =
        common::relay_config().with_dead_letter_topic(txoutbox::DeadLetterTopic::new(&topics[2]).unwrap());
    let relay = broker.start_relay(store.clone(), config);
    common::drained(&store, std::time::Duration::from_secs(60)).await;
    let copies = txoutbox_testing::eventually(std::time::Duration::from_secs(30), || async {
        broker.read_all(&topics[2..]).await.len() == 1
    })
    .await;
    relay.shutdown().await.unwrap();
    assert!(copies, "no dead-letter copy arrived");
    let good: Vec<Option<Vec<u8>>> = broker
        .read_all(&topics[..1])
        .await
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(good, [Some(b"good".to_vec())]);
    let reason: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT last_error FROM {table} WHERE status = 'dead'"
    )))
    .fetch_one(&db.db.pool)
    .await
    .unwrap();
    assert!(reason.contains("headers"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_publishes_nothing() {
    let topics = three_new_topics("pg-rollback").await;
    let db = Pg::new(&topics).await;
    cases::rolled_back_transaction_publishes_nothing(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_over_three_topics_arrive_once_in_key_order() {
    let topics = three_new_topics("pg-10k").await;
    let db = Pg::new(&topics).await;
    cases::ten_thousand_messages_arrive_once_in_key_order(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_stream_and_started_again_loses_nothing() {
    let topics = three_new_topics("pg-restart").await;
    let db = Pg::new(&topics).await;
    cases::relay_stopped_mid_stream_and_restarted_loses_nothing(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_all_of_a_thousand_is_one_statement_and_all_arrive() {
    let topics = three_new_topics("pg-bulk").await;
    let pg = Pg::new(&topics).await;
    let counted = async {
        // A statement-level trigger counts the INSERT statements that reach the outbox table.
        let counter = pg.db.qualify("insert_statements");
        let func = pg.db.qualify("count_insert");
        let table = pg.outbox.table().quoted();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {counter} (n INT NOT NULL); INSERT INTO {counter} VALUES (0);
             CREATE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN UPDATE {counter} SET n = n + 1; RETURN NULL; END $$;
             CREATE TRIGGER count_insert AFTER INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {func}();"
        )))
        .execute(&pg.db.pool)
        .await
        .unwrap();
        let mut tx = pg.db.pool.begin().await.unwrap();
        let ids = pg
            .outbox
            .publish_all(&mut *tx, &cases::thousand_events())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let statements: i32 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT n FROM {counter}")))
            .fetch_one(&pg.db.pool)
            .await
            .unwrap();
        (ids, statements == 1)
    };
    cases::publish_all_is_one_statement_and_all_arrive(pg.clone(), &topics, counted).await;
    pg.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_missing_table_stops_with_a_clear_error() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(txoutbox::Topics::new(), db.table());
    cases::relay_on_a_missing_table_stops_with_a_clear_error(outbox.store(db.pool.clone())).await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_transaction_keeps_its_key_in_order() {
    let topics = three_new_topics("pg-late").await;
    let pg = Pg::new(&topics).await;
    cases::late_committing_transaction_keeps_its_key_in_order(pg.clone(), &topics).await;
    pg.teardown().await;
}

/// The same cases through the NATS JetStream sink: a stream of the test's own, read back with
/// NATS's own client.
#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use common::broker::Nats;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rolled_back_transaction_publishes_nothing_to_nats() {
        let nats = Nats::new("pg-rollback").await;
        let topics = nats.topics();
        let db = Pg::new(&topics).await;
        cases::rolled_back_transaction_publishes_nothing_on(&nats, db.clone(), &topics).await;
        db.teardown().await;
        nats.stream.delete().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_messages_reach_nats_once_in_key_order() {
        let nats = Nats::new("pg-10k").await;
        let topics = nats.topics();
        let db = Pg::new(&topics).await;
        cases::ten_thousand_messages_arrive_once_in_key_order_on(&nats, db.clone(), &topics).await;
        db.teardown().await;
        nats.stream.delete().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_relay_stopped_mid_stream_and_started_again_loses_nothing_on_nats() {
        let nats = Nats::new("pg-restart").await;
        let topics = nats.topics();
        let db = Pg::new(&topics).await;
        cases::relay_stopped_mid_stream_and_restarted_loses_nothing_on(&nats, db.clone(), &topics).await;
        db.teardown().await;
        nats.stream.delete().await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_row_is_dead_and_its_copy_reaches_the_dead_letter_topic_on_nats() {
        let nats = Nats::new("pg-dead").await;
        let topics = nats.topics();
        let db = Pg::new(&topics).await;
        an_unreadable_row_is_copied_to_the_dead_letter_topic(&nats, &db, &topics).await;
        db.teardown().await;
        nats.stream.delete().await;
    }
}

/// The same cases through the RabbitMQ sink: a quorum queue per topic, read back with the AMQP
/// client.
#[cfg(feature = "rabbitmq")]
mod rabbitmq {
    use super::*;
    use common::broker::Rabbit;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rolled_back_transaction_publishes_nothing_to_rabbitmq() {
        let (rabbit, topics) = Rabbit::new("pg-rollback").await;
        let db = Pg::new(&topics).await;
        cases::rolled_back_transaction_publishes_nothing_on(&rabbit, db.clone(), &topics).await;
        db.teardown().await;
        rabbit.queues.delete().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_messages_reach_rabbitmq_once_in_key_order() {
        let (rabbit, topics) = Rabbit::new("pg-10k").await;
        let db = Pg::new(&topics).await;
        cases::ten_thousand_messages_arrive_once_in_key_order_on(&rabbit, db.clone(), &topics).await;
        db.teardown().await;
        rabbit.queues.delete().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_relay_stopped_mid_stream_and_started_again_loses_nothing_on_rabbitmq() {
        let (rabbit, topics) = Rabbit::new("pg-restart").await;
        let db = Pg::new(&topics).await;
        cases::relay_stopped_mid_stream_and_restarted_loses_nothing_on(&rabbit, db.clone(), &topics).await;
        db.teardown().await;
        rabbit.queues.delete().await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_row_is_dead_and_its_copy_reaches_the_dead_letter_topic_on_rabbitmq() {
        let (rabbit, topics) = Rabbit::new("pg-dead").await;
        let db = Pg::new(&topics).await;
        an_unreadable_row_is_copied_to_the_dead_letter_topic(&rabbit, &db, &topics).await;
        db.teardown().await;
        rabbit.queues.delete().await;
    }
}

/// The same cases through the Redis Streams sink: a stream per topic, read back with `XRANGE`.
#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use common::broker::Redis;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rolled_back_transaction_publishes_nothing_to_redis() {
        let (redis, topics) = Redis::new("pg-rollback").await;
        let db = Pg::new(&topics).await;
        cases::rolled_back_transaction_publishes_nothing_on(&redis, db.clone(), &topics).await;
        db.teardown().await;
        redis.streams.delete(&topics).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_messages_reach_redis_once_in_key_order() {
        let (redis, topics) = Redis::new("pg-10k").await;
        let db = Pg::new(&topics).await;
        cases::ten_thousand_messages_arrive_once_in_key_order_on(&redis, db.clone(), &topics).await;
        db.teardown().await;
        redis.streams.delete(&topics).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_relay_stopped_mid_stream_and_started_again_loses_nothing_on_redis() {
        let (redis, topics) = Redis::new("pg-restart").await;
        let db = Pg::new(&topics).await;
        cases::relay_stopped_mid_stream_and_restarted_loses_nothing_on(&redis, db.clone(), &topics).await;
        db.teardown().await;
        redis.streams.delete(&topics).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_row_is_dead_and_its_copy_reaches_the_dead_letter_topic_on_redis() {
        let (redis, topics) = Redis::new("pg-dead").await;
        let db = Pg::new(&topics).await;
        an_unreadable_row_is_copied_to_the_dead_letter_topic(&redis, &db, &topics).await;
        db.teardown().await;
        redis.streams.delete(&topics).await;
    }
}
