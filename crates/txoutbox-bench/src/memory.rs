//! Peak memory of the `txoutbox relay` daemon (the release binary beside this one) on inputs
//! that would hold gigabytes if reads and buffers were bounded in rows: rows with 50 MB payloads
//! (sent, with limits raised to take them, and refused unread with Kafka's default limits), and,
//! in WAL mode, one transaction of several GB. The peak is the kernel's high-water mark of the
//! daemon's resident set (`VmHWM` in `/proc/<pid>/status`), read once everything is delivered.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::AssertSqlSafe;
use txoutbox::postgres::PgOutbox;
use txoutbox::{Store, Topics};
use txoutbox_testing::postgres::TestSchema;

/// One measured run.
#[derive(Debug, Serialize)]
pub(crate) struct MemoryCase {
    /// What was relayed.
    pub case: String,
    /// Messages relayed (delivered or dead-lettered).
    pub messages: u64,
    /// Their payloads, in MiB.
    pub payload_mib: f64,
    /// The daemon's peak resident set, in MiB.
    pub peak_rss_mib: f64,
    /// From the daemon's start to the last message settled.
    pub seconds: f64,
}

/// Every case.
#[derive(Debug, Serialize)]
pub(crate) struct MemoryResult {
    /// The runs, in order.
    pub cases: Vec<MemoryCase>,
}

/// A running daemon, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn start(table: &str, args: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new(crate::common::daemon_binary("memory")?)
            .args(["relay", "--http-listen", "off"])
            .args(args)
            .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
            .env("TXOUTBOX_TABLE", table)
            .env("TXOUTBOX_KAFKA_BOOTSTRAP", txoutbox_testing::kafka::bootstrap())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the daemon")?;
        Ok(Self(child))
    }

    /// The peak resident set so far, in MiB.
    fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("VmHWM")?;
        Ok(kib / 1024.0)
    }
}

/// Waits until `done` says so (checked every 200 ms), at most `timeout`.
async fn wait<F, Fut>(timeout: Duration, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    while !done().await? {
        if Instant::now() > deadline {
            bail!("not done within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Rows of `payload_mib` MiB payloads in a fresh table, relayed by a daemon with `args`.
async fn large_payloads(
    case: &str,
    rows: u64,
    payload_mib: usize,
    topic_configs: &[(&str, &str)],
    args: &[&str],
) -> anyhow::Result<MemoryCase> {
    let db = TestSchema::with_pool_size(2).await;
    let outbox = PgOutbox::with_table(Topics::new(), db.table());
    outbox.migrate(&db.pool).await.context("migrate")?;
    let topic = txoutbox_testing::kafka::new_topic_on(
        &txoutbox_testing::kafka::bootstrap(),
        "memory-large",
        3,
        topic_configs,
    )
    .await;
    eprintln!("[memory] {case}: writing {rows} rows of {payload_mib} MiB ...");
    for i in 0..rows {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (topic, key, payload) VALUES ($1, convert_to($2, 'UTF8'), \
             convert_to(repeat('x', $3), 'UTF8'))",
            db.qualify("outbox_messages")
        )))
        .bind(&topic)
        .bind(format!("k{}", i % 4))
        .bind(i32::try_from(payload_mib << 20)?)
        .execute(&db.pool)
        .await?;
    }
    let table = format!("{}.outbox_messages", db.schema);
    let started = Instant::now();
    let daemon = Daemon::start(&table, args)?;
    let store = outbox.store(db.pool.clone());
    wait(Duration::from_secs(600), || async {
        Ok(store.backlog().await?.pending == 0)
    })
    .await?;
    let result = MemoryCase {
        case: case.to_owned(),
        messages: rows,
        payload_mib: (rows as f64) * payload_mib as f64,
        peak_rss_mib: daemon.peak_rss_mib()?,
        seconds: started.elapsed().as_secs_f64(),
    };
    drop(daemon);
    db.drop_schema().await;
    eprintln!("[memory] {case}: peak {:.0} MiB", result.peak_rss_mib);
    Ok(result)
}

/// One WAL transaction of `gib` GiB of 1 KiB messages, relayed from a slot.
async fn one_large_transaction(gib: f64) -> anyhow::Result<MemoryCase> {
    const PAYLOAD: u64 = 1024;
    let messages = (gib * f64::from(1u32 << 30) / PAYLOAD as f64) as u64;
    let db = TestSchema::with_pool_size(2).await;
    let slot = txoutbox_testing::unique("memory_wal");
    let prefix = txoutbox_testing::unique("txoutbox");
    let table = format!("{}.outbox_messages", db.schema);
    let wal = ["--source", "wal", "--wal-slot", &slot, "--wal-prefix", &prefix];
    let migrated = Command::new(crate::common::daemon_binary("memory")?)
        .arg("migrate")
        .args(wal)
        .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
        .env("TXOUTBOX_TABLE", &table)
        .output()?;
    if !migrated.status.success() {
        bail!("migrate: {}", String::from_utf8_lossy(&migrated.stderr));
    }
    let topic = txoutbox_testing::kafka::new_topic("memory-wal", 3).await;
    eprintln!("[memory] WAL: one transaction of {messages} messages ({gib} GiB) ...");
    let written = Instant::now();
    // The envelope built in SQL, as the table contract's WAL section shows.
    sqlx::query(
        "SELECT count(pg_logical_emit_message(true, $1, \
           '\\x01'::bytea || uuid_send(gen_random_uuid()) \
           || int4send(octet_length(convert_to($2, 'UTF8'))) || convert_to($2, 'UTF8') \
           || int4send(octet_length(convert_to('k' || (g % 100), 'UTF8'))) || convert_to('k' || (g % 100), 'UTF8') \
           || int4send($3::int) || convert_to(repeat('x', $3::int), 'UTF8') \
           || int4send(-1))) \
         FROM generate_series(1, $4::bigint) AS g",
    )
    .bind(&prefix)
    .bind(&topic)
    .bind(PAYLOAD as i32)
    .bind(i64::try_from(messages)?)
    .execute(&db.pool)
    .await
    .context("emit")?;
    eprintln!(
        "[memory] WAL: committed in {:.0} s; relaying ...",
        written.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let daemon = Daemon::start(&table, &wal)?;
    let topics = [topic];
    wait(Duration::from_secs(1800), || async {
        Ok(txoutbox_testing::kafka::count(&topics).await >= messages as i64)
    })
    .await?;
    let result = MemoryCase {
        case: format!("WAL mode: one transaction of {gib} GiB (1 KiB messages)"),
        messages,
        payload_mib: (messages * PAYLOAD) as f64 / f64::from(1u32 << 20),
        peak_rss_mib: daemon.peak_rss_mib()?,
        seconds: started.elapsed().as_secs_f64(),
    };
    drop(daemon);
    let dropped = Command::new(crate::common::daemon_binary("memory")?)
        .args(["wal", "drop-slot", "--confirm"])
        .args(wal)
        .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
        .env("TXOUTBOX_TABLE", &table)
        .output()?;
    if !dropped.status.success() {
        eprintln!("[memory] drop-slot: {}", String::from_utf8_lossy(&dropped.stderr));
    }
    db.drop_schema().await;
    eprintln!("[memory] WAL: peak {:.0} MiB", result.peak_rss_mib);
    Ok(result)
}

/// Runs every case: `rows` rows of `payload_mib` MiB (sent, then refused), and one WAL
/// transaction of `wal_gib` GiB.
pub(crate) async fn run(rows: u64, payload_mib: usize, wal_gib: f64) -> anyhow::Result<MemoryResult> {
    let limit = ((payload_mib + 1) << 20).to_string();
    let producer_limit = format!("message.max.bytes={limit}");
    let mut cases = vec![
        large_payloads(
            &format!("{rows} rows of {payload_mib} MiB, sent (limits raised)"),
            rows,
            payload_mib,
            &[("max.message.bytes", &limit)],
            &["-X", &producer_limit],
        )
        .await?,
        large_payloads(
            &format!("{rows} rows of {payload_mib} MiB, Kafka's default limits (dead-lettered unread)"),
            rows,
            payload_mib,
            &[],
            &[],
        )
        .await?,
    ];
    if wal_gib > 0.0 {
        cases.push(one_large_transaction(wal_gib).await?);
    }
    Ok(MemoryResult { cases })
}
