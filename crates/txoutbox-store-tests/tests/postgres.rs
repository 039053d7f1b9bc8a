//! The store conformance suite on PostgreSQL (each case in a fresh schema, which is not in the
//! connection's `search_path`), plus what only PostgreSQL has: schemas and roles.

use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use txoutbox_core::{Error, Store, TableName};
use txoutbox_postgres::PgOutbox;
use txoutbox_store_tests::postgres::PgHarness;
use txoutbox_store_tests::{OrderCreated, topics};
use txoutbox_testing::postgres::{TestSchema, url};
use txoutbox_testing::unique;

txoutbox_store_tests::store_conformance!(PgHarness);

async fn execute(pool: &PgPool, sql: String) {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(pool)
        .await
        .expect("admin statement");
}

/// Migrates, then publishes one message and fetches it back.
async fn migrate_and_use(outbox: &PgOutbox, pool: &PgPool) -> txoutbox_core::Result<usize> {
    outbox.migrate(pool).await?;
    let store = outbox.store(pool.clone());
    store.check().await?;
    outbox.publish(pool, &OrderCreated::new(1)).await?;
    Ok(store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await?
        .len())
}

/// A table in a schema that does not exist yet: `check` says to run the migrations (rather than
/// failing with a database error), and `migrate` creates the schema.
#[tokio::test]
async fn table_in_a_schema_that_does_not_exist_yet() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::with_pool_size(2).await;
    let schema = unique("absent");
    let outbox = PgOutbox::with_table(
        topics(),
        TableName::with_schema(&schema, "outbox_messages").unwrap(),
    );

    let checked = outbox.store(db.pool.clone()).check().await;
    let used = migrate_and_use(&outbox, &db.pool).await;
    execute(&db.pool, format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
    db.drop_schema().await;

    let err = checked.expect_err("check before migrate");
    assert!(matches!(err, Error::SchemaNotReady { .. }), "{err:?}");
    assert_eq!(used.expect("migrate creates the schema"), 1);
}

/// Least privilege: an application role that may only use and create in a schema its DBA made
/// (no CREATE on the database) can migrate, publish and relay a table in that schema.
#[tokio::test]
async fn migrate_needs_no_database_privilege_when_the_schema_exists() {
    txoutbox_testing::init_tracing();
    (async {
        let db = TestSchema::with_pool_size(2).await;
        let role = unique("app");
        execute(
            &db.pool,
            format!(
                "CREATE ROLE \"{role}\" LOGIN PASSWORD 'store-tests'; \
                     GRANT USAGE, CREATE ON SCHEMA \"{}\" TO \"{role}\"",
                db.schema
            ),
        )
        .await;
        let options: PgConnectOptions = url().parse().expect("TXOUTBOX_POSTGRES_URL");
        let app = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.username(&role).password("store-tests"))
            .await
            .expect("connect as the application role");

        let used = migrate_and_use(&PgOutbox::with_table(topics(), db.table()), &app).await;

        app.close().await;
        execute(
            &db.pool,
            format!(
                "DROP SCHEMA \"{}\" CASCADE; DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\"",
                db.schema
            ),
        )
        .await;
        db.drop_schema().await;
        assert_eq!(used.expect("migrate as the application role"), 1);
    })
    .await;
}

/// Two services whose outbox tables share a schema that does not exist yet start at the same time:
/// both migrations succeed (one advisory lock serializes txoutbox migrations of a database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_of_two_tables_in_a_new_schema() {
    txoutbox_testing::init_tracing();
    (async {
        let db = TestSchema::with_pool_size(4).await;
        let mut errors = Vec::new();
        for _ in 0..5 {
            let schema = unique("shared");
            let outbox =
                |table| PgOutbox::with_table(topics(), TableName::with_schema(&schema, table).unwrap());
            let (a, b) = (outbox("orders_outbox"), outbox("billing_outbox"));
            let (ra, rb) = tokio::join!(a.migrate(&db.pool), b.migrate(&db.pool));
            errors.extend(ra.err().into_iter().chain(rb.err()).map(|e| e.to_string()));
            execute(&db.pool, format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
        }
        db.drop_schema().await;
        assert!(errors.is_empty(), "{errors:#?}");
    })
    .await;
}
