//! `txoutbox inbox parked | replay | purge` end to end on PostgreSQL, SQLite and MariaDB: the
//! inbox table created by txoutbox-inbox's `migrate()`, records parked by its
//! `InboxStore::park`, the binary listing, marking and deleting them, and the table checked with
//! plain SQL (and the consumer's own `replays()` for what an operator marked).

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use sqlx::AssertSqlSafe;
use support::ok;
use txoutbox_core::TableName;
use txoutbox_inbox::{InboxMessage, InboxStore, MySqlInbox, PgInbox, SqliteInbox};

/// Values that must never be printed.
const SECRET_PAYLOAD: &str = "secret-payload";
const SECRET_HEADER: &str = "secret-header";

/// A database with an inbox table.
trait Db: Sized {
    type Store: InboxStore;
    async fn new() -> Self;
    /// The URL the binary connects with.
    fn url(&self) -> String;
    /// `--inbox-table`'s value (`None`: the default, inbox_messages).
    fn table_arg(&self) -> Option<String>;
    fn inbox(&self) -> Self::Store;
    /// Creates the inbox table with the store's `migrate()`.
    async fn migrate(&self);
    /// Moves a record's `received_at` back by two hours.
    async fn age(&self, consumer: &str, id: &str);
    /// (consumer, message id, status) of every row, sorted.
    async fn rows(&self) -> Vec<(String, String, String)>;
    async fn drop_db(self);
}

struct Pg(txoutbox_testing::postgres::TestSchema);

impl Pg {
    fn table(&self) -> TableName {
        TableName::with_schema(&self.0.schema, "inbox_messages").unwrap()
    }
}

impl Db for Pg {
    type Store = PgInbox;

    async fn new() -> Self {
        Self(txoutbox_testing::postgres::TestSchema::new().await)
    }

    fn url(&self) -> String {
        txoutbox_testing::postgres::url()
    }

    fn table_arg(&self) -> Option<String> {
        Some(self.table().to_string())
    }

    fn inbox(&self) -> PgInbox {
        PgInbox::with_table(self.0.pool.clone(), self.table())
    }

    async fn migrate(&self) {
        self.inbox().migrate().await.unwrap();
    }

    async fn age(&self, consumer: &str, id: &str) {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET received_at = now() - interval '2 hours' WHERE consumer = $1 AND message_id = $2",
            self.table().quoted()
        )))
        .bind(consumer)
        .bind(id)
        .execute(&self.0.pool)
        .await
        .unwrap();
    }

    async fn rows(&self) -> Vec<(String, String, String)> {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT consumer, message_id, status FROM {} ORDER BY consumer, message_id",
            self.table().quoted()
        )))
        .fetch_all(&self.0.pool)
        .await
        .unwrap()
    }

    async fn drop_db(self) {
        self.0.drop_schema().await;
    }
}

struct Lite(txoutbox_testing::sqlite::TestDb);

impl Db for Lite {
    type Store = SqliteInbox;

    async fn new() -> Self {
        Self(txoutbox_testing::sqlite::TestDb::new().await)
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.path.display())
    }

    fn table_arg(&self) -> Option<String> {
        None
    }

    fn inbox(&self) -> SqliteInbox {
        SqliteInbox::new(self.0.pool.clone())
    }

    async fn migrate(&self) {
        self.inbox().migrate().await.unwrap();
    }

    async fn age(&self, consumer: &str, id: &str) {
        sqlx::query(
            "UPDATE inbox_messages SET received_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 hours') \
             WHERE consumer = ?1 AND message_id = ?2",
        )
        .bind(consumer)
        .bind(id)
        .execute(&self.0.pool)
        .await
        .unwrap();
    }

    async fn rows(&self) -> Vec<(String, String, String)> {
        sqlx::query_as(
            "SELECT consumer, message_id, status FROM inbox_messages ORDER BY consumer, message_id",
        )
        .fetch_all(&self.0.pool)
        .await
        .unwrap()
    }

    async fn drop_db(self) {
        self.0.pool.close().await;
    }
}

struct Maria(txoutbox_testing::mysql::TestDatabase);

impl Maria {
    fn table(&self) -> TableName {
        TableName::with_schema(&self.0.database, "inbox_messages").unwrap()
    }
}

impl Db for Maria {
    type Store = MySqlInbox;

    async fn new() -> Self {
        Self(txoutbox_testing::mysql::TestDatabase::new().await)
    }

    fn url(&self) -> String {
        txoutbox_testing::mysql::url()
    }

    fn table_arg(&self) -> Option<String> {
        Some(self.table().to_string())
    }

    fn inbox(&self) -> MySqlInbox {
        MySqlInbox::with_table(self.0.pool.clone(), self.table())
    }

    async fn migrate(&self) {
        self.inbox().migrate().await.unwrap();
    }

    async fn age(&self, consumer: &str, id: &str) {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET received_at = NOW(6) - INTERVAL 2 HOUR WHERE consumer = ? AND message_id = ?",
            self.0.qualify("inbox_messages")
        )))
        .bind(consumer)
        .bind(id)
        .execute(&self.0.pool)
        .await
        .unwrap();
    }

    async fn rows(&self) -> Vec<(String, String, String)> {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT consumer, message_id, status FROM {} ORDER BY consumer, message_id",
            self.0.qualify("inbox_messages")
        )))
        .fetch_all(&self.0.pool)
        .await
        .unwrap()
    }

    async fn drop_db(self) {
        self.0.drop_database().await;
    }
}

/// `txoutbox inbox <args>` on `db`'s inbox table, with no outbox settings from the environment.
fn inbox<D: Db>(db: &D, args: &[&str]) -> Output {
    let mut command = Command::new(support::binary());
    command
        .arg("inbox")
        .args(args)
        .env("TXOUTBOX_DATABASE_URL", db.url())
        .env_remove("TXOUTBOX_TABLE")
        .env_remove("TXOUTBOX_INBOX_TABLE")
        .env_remove("TXOUTBOX_CONFIG");
    if let Some(table) = db.table_arg() {
        command.args(["--inbox-table", &table]);
    }
    command.output().expect("run txoutbox inbox")
}

/// Stdout and stderr of a command that must fail with `code`.
fn failed(output: &Output, code: i32) -> String {
    let text =
        String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(code), "{text}");
    text
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// (consumer, message id, status) triples, for comparisons.
fn triples(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|(c, m, s)| ((*c).to_owned(), (*m).to_owned(), (*s).to_owned()))
        .collect()
}

/// Parks `id` for `consumer` with a secret payload and header and `error`.
async fn park<S: InboxStore>(store: &S, consumer: &str, id: &str, offset: i64, error: &str) {
    let message = InboxMessage::new("orders", 2, offset)
        .with_id(id)
        .with_key("k")
        .with_payload(SECRET_PAYLOAD)
        .with_header("authorization", SECRET_HEADER)
        .with_header("txoutbox-message-id", id);
    store.park(consumer, &message, 5, error).await.unwrap();
}

async fn commands_list_replay_and_purge_parked_records<D: Db>() {
    let db = D::new().await;

    // No table yet: a clear error, nothing created.
    let missing = failed(&inbox(&db, &["parked"]), 1);
    assert!(
        missing.contains("no inbox table") && missing.contains("run the consumer's migrate() first"),
        "{missing}"
    );

    db.migrate().await;
    let store = db.inbox();
    let long_error = format!("handler failed: {}", "x".repeat(200));
    for (n, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        park(&store, "g1", id, n as i64, &long_error).await;
    }
    park(&store, "g2", "a", 9, "other consumer").await;
    // A handled id of g1: no command touches it.
    let handled = InboxMessage::new("orders", 2, 10).with_id("h");
    let mut tx = store.begin().await.unwrap();
    assert!(store.claim(&mut tx, "g1", &handled).await.unwrap());
    store.commit(tx).await.unwrap();
    db.age("g1", "d").await;

    // parked --json: every parked record, the handled id not, no payload or header value.
    let listed = ok(&inbox(&db, &["parked", "--json"]));
    assert!(
        !listed.contains(SECRET_PAYLOAD) && !listed.contains(SECRET_HEADER),
        "{listed}"
    );
    let listed = json(&listed);
    let ids: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["consumer"].as_str().unwrap().to_owned(),
                r["message_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [("g1", "d"), ("g1", "a"), ("g1", "b"), ("g1", "c"), ("g2", "a")]
            .map(|(c, m)| (c.to_owned(), m.to_owned())),
        "oldest first per consumer"
    );
    let b = &listed[2];
    assert_eq!(b["status"], "dead");
    assert_eq!(b["topic"], "orders");
    assert_eq!(b["partition"], 2);
    assert_eq!(b["offset"], 1);
    assert_eq!(b["attempts"], 5);
    assert_eq!(b["last_error"], long_error.as_str());
    assert_eq!(b["payload_bytes"], SECRET_PAYLOAD.len());
    assert_eq!(b["key_bytes"], 1);
    assert_eq!(
        b["header_names"],
        serde_json::json!(["authorization", "txoutbox-message-id"])
    );
    assert!(b["received_at"].is_string(), "{b}");

    let one = json(&ok(&inbox(&db, &["parked", "--consumer", "g2", "--json"])));
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["last_error"], "other consumer");
    let limited = json(&ok(&inbox(&db, &["parked", "--limit", "2", "--json"])));
    assert_eq!(limited.as_array().unwrap().len(), 2);

    // The table: one line per record, the error cut, no secret.
    let human = ok(&inbox(&db, &["parked", "--consumer", "g1"]));
    assert!(human.starts_with("CONSUMER"), "{human}");
    assert_eq!(human.lines().count(), 5, "{human}");
    assert!(human.contains("orders/2/1") && human.contains('…'), "{human}");
    assert!(!human.contains(&long_error), "{human}");
    assert!(
        !human.contains(SECRET_PAYLOAD) && !human.contains(SECRET_HEADER),
        "{human}"
    );
    let none = ok(&inbox(&db, &["parked", "--consumer", "nobody"]));
    assert!(none.contains("no parked records of consumer nobody"), "{none}");

    // Replay and purge name what they act on.
    let unsaid = failed(&inbox(&db, &["replay", "--consumer", "g1"]), 2);
    assert!(unsaid.contains("--id") && unsaid.contains("--all"), "{unsaid}");
    failed(&inbox(&db, &["purge", "--consumer", "g1"]), 2);
    failed(&inbox(&db, &["purge", "--all"]), 2);
    failed(
        &inbox(&db, &["purge", "--consumer", "g1", "--all", "--id", "a"]),
        2,
    );

    // replay --id: g1's a only (not g2's a); an unknown id is reported.
    let replayed = ok(&inbox(
        &db,
        &[
            "replay",
            "--consumer",
            "g1",
            "--id",
            "a",
            "--id",
            "zzz",
            "--id",
            "a",
        ],
    ));
    assert!(
        replayed.contains("marked 1 dead records of consumer g1 for replay"),
        "{replayed}"
    );
    assert!(
        replayed.contains("1 of the 2 ids given are not dead records"),
        "{replayed}"
    );
    let replays = store.replays("g1", 10).await.unwrap();
    assert_eq!(
        replays.iter().map(|m| m.id()).collect::<Vec<_>>(),
        ["a"],
        "the consumer finds what the operator marked"
    );
    assert_eq!(
        replays[0].payload(),
        Some(SECRET_PAYLOAD.as_bytes()),
        "with its payload"
    );
    assert!(store.replays("g2", 10).await.unwrap().is_empty());

    // purge --older-than: only the record parked two hours ago.
    let purged = ok(&inbox(&db, &["purge", "--consumer", "g1", "--older-than", "1h"]));
    assert!(
        purged.contains("purged 1 parked records of consumer g1 parked more than 1h ago"),
        "{purged}"
    );
    let purged = ok(&inbox(
        &db,
        &["purge", "--consumer", "g1", "--older-than", "1000000years"],
    ));
    assert!(purged.contains("purged 0 parked records"), "{purged}");
    let purged = ok(&inbox(&db, &["purge", "--consumer", "g1", "--id", "b"]));
    assert!(purged.contains("purged 1 parked records"), "{purged}");
    assert_eq!(
        db.rows().await,
        triples(&[
            ("g1", "a", "replay"),
            ("g1", "c", "dead"),
            ("g1", "h", "handled"),
            ("g2", "a", "dead"),
        ])
    );

    // replay --all marks the dead rest; purge --all takes dead and marked ones, never handled ids
    // or another consumer's.
    let replayed = ok(&inbox(&db, &["replay", "--consumer", "g1", "--all"]));
    assert!(replayed.contains("marked 1 dead records"), "{replayed}");
    let purged = ok(&inbox(&db, &["purge", "--consumer", "g1", "--all"]));
    assert!(
        purged.contains("purged 2 parked records of consumer g1"),
        "{purged}"
    );
    assert_eq!(
        db.rows().await,
        triples(&[("g1", "h", "handled"), ("g2", "a", "dead")])
    );
    let none = ok(&inbox(&db, &["parked", "--consumer", "g1"]));
    assert!(none.contains("no parked records of consumer g1"), "{none}");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_parked_records_are_listed_replayed_and_purged() {
    commands_list_replay_and_purge_parked_records::<Pg>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_parked_records_are_listed_replayed_and_purged() {
    commands_list_replay_and_purge_parked_records::<Lite>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_parked_records_are_listed_replayed_and_purged() {
    commands_list_replay_and_purge_parked_records::<Maria>().await;
}

#[test]
fn a_bad_inbox_table_name_is_refused_before_connecting() {
    let output = Command::new(support::binary())
        .args(["inbox", "parked", "--inbox-table", "inbox;drop table x"])
        .env("TXOUTBOX_DATABASE_URL", "postgres://app:hunter2@127.0.0.1:1/shop")
        .env_remove("TXOUTBOX_CONFIG")
        .output()
        .unwrap();
    let text = failed(&output, 2);
    assert!(text.contains("--inbox-table"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn an_unreachable_inbox_database_is_named_as_such() {
    let output = Command::new(support::binary())
        .args(["inbox", "parked"])
        .env("TXOUTBOX_DATABASE_URL", "postgres://app:hunter2@127.0.0.1:1/shop")
        .env_remove("TXOUTBOX_CONFIG")
        .output()
        .unwrap();
    let text = failed(&output, 1);
    assert!(
        text.contains("cannot connect to the inbox database at postgres://app:***@127.0.0.1:1/shop"),
        "{text}"
    );
}

/// A console action's body, its headers, the expected status.
type ActionCase<'a> = (Value, Vec<(&'a str, &'a str)>, u16);

/// POSTs a console inbox action; status code and body.
async fn console_action(
    daemon: &support::Daemon,
    action: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String) {
    daemon
        .post_json(&format!("/ui/api/inbox/{action}"), body, headers)
        .await
}

/// The console's inbox view (`txoutbox relay --ui --ui-inbox-table`) in headless Chromium and
/// through its API: before the consumer created its table it says so; then it lists the parked
/// records without a key, payload or header value, replays one with the token (which the
/// consumer's own `replays()` then finds), purges a consumer's records, and refuses actions
/// without the token, from another site, or without a consumer and a choice of records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_parked_inbox_records_and_replays_and_purges_them() {
    const TOKEN: &str = "console-inbox-token-0123456789";
    let wait = std::time::Duration::from_secs(30);
    let Some(browser) = txoutbox_testing::browser::Browser::start().await else {
        return;
    };
    let db = Pg::new().await;
    let outbox = format!("{}.outbox_messages", db.0.schema);
    ok(&support::txoutbox(&db.0, &["migrate"]));
    let daemon = support::Daemon::start_with_env(
        &db.url(),
        &outbox,
        &["--ui", "--ui-inbox-table", &db.table().to_string()],
        &[("TXOUTBOX_UI_TOKEN", TOKEN)],
    )
    .await;

    // No inbox table yet: the view says what to do.
    let (code, body) = daemon.get("/ui/api/inbox/parked").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("no inbox table") && body.contains("migrate()"),
        "{body}"
    );

    db.migrate().await;
    let store = db.inbox();
    for (n, id) in ["a", "b", "c"].iter().enumerate() {
        park(&store, "g1", id, n as i64, "Handler: order 17 has no customer").await;
    }
    park(&store, "g2", "a", 9, "other consumer").await;

    // The overview links the inbox; the inbox view lists the four records.
    let (_, overview) = daemon.get("/ui/api/overview").await.unwrap();
    assert_eq!(json(&overview)["inbox"], Value::from(db.table().to_string()));
    browser.goto(&format!("{}/ui/inbox", daemon.base)).await;
    let listed = browser
        .wait_until(
            "document.querySelectorAll('#inbox-table tbody tr[data-id]').length === 4",
            wait,
        )
        .await;
    assert!(
        listed,
        "{:?} {}",
        browser.text("#inbox-table").await,
        daemon.logs()
    );
    let page = browser
        .eval("return document.body.innerText", serde_json::json!([]))
        .await;
    let page = page.as_str().unwrap_or_default();
    assert!(page.contains("order 17 has no customer"), "the error: {page}");
    assert!(page.contains("authorization"), "the header names: {page}");
    assert!(
        !page.contains(SECRET_PAYLOAD) && !page.contains(SECRET_HEADER),
        "a payload or header value is shown: {page}"
    );
    assert!(
        browser
            .eval(
                "return !document.getElementById('nav-inbox').hidden",
                serde_json::json!([])
            )
            .await
            .as_bool()
            .unwrap_or(false),
        "the inbox link is hidden"
    );

    // Replay g1's "b" with the token, in the page.
    browser.type_into("#token", TOKEN).await;
    browser.click("#token-use").await;
    browser
        .click("#inbox-table tbody tr[data-consumer='g1'][data-id='b'] button.replay")
        .await;
    browser.click("#confirm-yes").await;
    let replayed = browser
        .wait_until(
            "document.getElementById('notice').textContent.includes('1 parked record of g1 marked for replay')",
            wait,
        )
        .await;
    assert!(replayed, "{:?}", browser.text("#notice").await);
    let replays = store.replays("g1", 10).await.unwrap();
    assert_eq!(replays.iter().map(|m| m.id()).collect::<Vec<_>>(), ["b"]);
    let marked = browser
        .wait_until(
            "document.querySelector(\"#inbox-table tr[data-consumer='g1'][data-id='b'] td.status\")?.textContent === 'replay'",
            wait,
        )
        .await;
    assert!(marked, "{:?}", browser.text("#inbox-table").await);
    // docs/operations.md's picture: `TXOUTBOX_SCREENSHOTS=$PWD/crates/txoutbox-cli/assets/screenshots`.
    let screenshots = std::env::var_os("TXOUTBOX_SCREENSHOTS").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
        std::path::PathBuf::from,
    );
    browser.screenshot(&screenshots.join("console-inbox.png")).await;

    // Refusals: no token, another site, no consumer, no choice, both choices.
    let auth = format!("Bearer {TOKEN}");
    let all_g1 = serde_json::json!({ "consumer": "g1", "all": true });
    let cases: [ActionCase<'_>; 5] = [
        (all_g1.clone(), vec![], 401),
        (
            all_g1.clone(),
            vec![("authorization", &auth), ("origin", "https://evil.example")],
            403,
        ),
        (
            serde_json::json!({ "consumer": " ", "all": true }),
            vec![("authorization", &auth)],
            400,
        ),
        (
            serde_json::json!({ "consumer": "g1" }),
            vec![("authorization", &auth)],
            400,
        ),
        (
            serde_json::json!({ "consumer": "g1", "all": true, "ids": ["a"] }),
            vec![("authorization", &auth)],
            400,
        ),
    ];
    for (body, headers, expected) in &cases {
        let (code, text) = console_action(&daemon, "purge", body, headers).await;
        assert_eq!(code, *expected, "{body} {headers:?}: {text}");
    }
    assert_eq!(db.rows().await.len(), 4, "a refused action changed the table");

    // Purge all of g1 through the API: g2's record stays.
    let (code, text) = console_action(&daemon, "purge", &all_g1, &[("authorization", &auth)]).await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(json(&text)["records"], 3, "{text}");
    assert_eq!(db.rows().await, triples(&[("g2", "a", "dead")]));
    let (_, listed) = daemon.get("/ui/api/inbox/parked?consumer=g1").await.unwrap();
    assert_eq!(json(&listed)["rows"], serde_json::json!([]), "{listed}");

    let logs = daemon.stop();
    assert!(
        logs.contains("inbox purge") && logs.contains("records=3"),
        "{logs}"
    );
    assert!(!logs.contains(TOKEN), "the token reached the log");
    drop(browser);
    db.drop_db().await;
}
