//! What the chaos tests share: the message they write, the writers, the relay process, the
//! read-back report.

#![allow(dead_code)] // reason: each chaos test uses a different part of this module

use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::PgPool;
use txoutbox_core::Store;
use txoutbox_postgres::PgOutbox;
use txoutbox_testing::kafka::{Record, Verdict, read_all_from, verdict};

/// The message every chaos writer commits: its key and its number within the key (1, 2, 3, …).
#[derive(Serialize)]
pub(crate) struct Event {
    pub key: String,
    pub seq: u64,
}

/// A number from the environment, or the default.
pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads a record's key and sequence number back from its JSON payload.
pub(crate) fn key_seq(r: &Record) -> (String, u64) {
    let v: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
    (v["key"].as_str().unwrap().to_owned(), v["seq"].as_u64().unwrap())
}

/// The relay process; killed (SIGKILL) when dropped, so a failing test leaves no relay behind.
pub(crate) struct RelayProcess(Option<Child>);

impl std::ops::Deref for RelayProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for RelayProcess {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the relay process (`txoutbox-chaos-relay`) with these environment variables. Its log
/// level is `TXOUTBOX_CHAOS_RELAY_LOG` (default `error`).
pub(crate) fn spawn_relay(env: &[(&str, &str)]) -> RelayProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_txoutbox-chaos-relay"));
    command.env(
        "RUST_LOG",
        std::env::var("TXOUTBOX_CHAOS_RELAY_LOG").unwrap_or_else(|_| "error".into()),
    );
    for (k, v) in env {
        command.env(k, v);
    }
    RelayProcess(Some(command.spawn().expect("start the relay process")))
}

/// Stops the relay process gracefully (SIGTERM) and waits for it.
pub(crate) fn stop_relay(mut relay: RelayProcess) {
    let mut child = relay.0.take().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
}

/// Whether the relay empties the outbox within `timeout`.
pub(crate) async fn drains(store: &impl Store, timeout: Duration) -> bool {
    txoutbox_testing::eventually(timeout, || async {
        store.backlog().await.map(|b| b.pending == 0).unwrap_or(false)
    })
    .await
}

/// How a run ends: the relay process must have stayed up; it is stopped; the outbox must have
/// drained (`drained`, from [`drains`]); then the topic is read back from the broker.
pub(crate) async fn stop_and_read_back(
    relay: RelayProcess,
    drained: bool,
    store: &impl Store,
    bootstrap: &str,
    topic: &str,
) -> (Vec<Record>, Verdict) {
    let mut relay = relay;
    assert!(
        relay.try_wait().unwrap().is_none(),
        "the relay process exited during the run"
    );
    stop_relay(relay);
    assert!(
        drained,
        "the relay did not drain the outbox: {:?}",
        store.backlog().await
    );
    let records = read_all_from(bootstrap, &[topic.to_owned()]).await;
    let v = verdict(&records, key_seq);
    (records, v)
}

/// Wall-clock milliseconds since the epoch (comparable with the broker's LogAppendTime).
pub(crate) fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Message `n` of a run with `keys` keys: key `n % keys`, and its number within the key.
pub(crate) fn event(n: u64, keys: u64) -> Event {
    Event {
        key: format!("key-{}", n % keys),
        seq: n / keys + 1,
    }
}

/// What the writers went through.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Attempts that failed (the database was away).
    pub failed_attempts: u64,
    /// Failed commits that had in fact committed (found by their marker row): not written again.
    pub ambiguous_commits: u64,
}

impl std::ops::Add for WriterStats {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            commits: self.commits + o.commits,
            failed_attempts: self.failed_attempts + o.failed_attempts,
            ambiguous_commits: self.ambiguous_commits + o.ambiguous_commits,
        }
    }
}

/// Writers committing `total` messages over `keys` keys on PostgreSQL, `per_tx` per transaction.
#[derive(Debug, Clone)]
pub(crate) struct PgWriters {
    pub total: u64,
    pub keys: u64,
    pub writers: u64,
    pub per_tx: u64,
    /// Spread the writes evenly over this time (zero: as fast as possible).
    pub spread: Duration,
    /// `"schema"."table"` of the marker rows, one per committed transaction.
    pub markers: String,
}

impl PgWriters {
    /// Creates the marker table.
    pub(crate) async fn create_markers(&self, pool: &PgPool) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {} (writer bigint, batch bigint, PRIMARY KEY (writer, batch))",
            self.markers
        )))
        .execute(pool)
        .await
        .unwrap();
    }

    /// Spawns the writers. Writer `w` owns the keys `k % writers == w`, so each key's
    /// transactions are serialized. A transaction that fails is retried; when its commit failed,
    /// its marker row says whether it had committed after all, so no message is written twice and
    /// exactly `total` messages commit.
    pub(crate) fn spawn(
        &self,
        pool: &PgPool,
        outbox: &PgOutbox,
    ) -> Vec<tokio::task::JoinHandle<WriterStats>> {
        assert_eq!(self.keys % self.writers, 0, "keys must be a multiple of writers");
        let started = Instant::now();
        (0..self.writers)
            .map(|w| {
                let (pool, outbox, plan) = (pool.clone(), outbox.clone(), self.clone());
                tokio::spawn(async move { plan.write(w, pool, outbox, started).await })
            })
            .collect()
    }

    async fn write(&self, w: u64, pool: PgPool, outbox: PgOutbox, started: Instant) -> WriterStats {
        let mut stats = WriterStats::default();
        let mine: Vec<u64> = (w..self.total).step_by(self.writers as usize).collect();
        for (batch_no, chunk) in mine.chunks(self.per_tx as usize).enumerate() {
            if !self.spread.is_zero() {
                // Pacing: message n is due at n/total of the spread.
                let due = started + self.spread.mul_f64(chunk[0] as f64 / self.total as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let events: Vec<Event> = chunk.iter().map(|&n| event(n, self.keys)).collect();
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let attempt = async {
                    let mut tx = pool.begin().await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO {} (writer, batch) VALUES ($1, $2)",
                        self.markers
                    )))
                    .bind(w as i64)
                    .bind(batch_no as i64)
                    .execute(&mut *tx)
                    .await?;
                    outbox
                        .publish_all(&mut *tx, &events)
                        .await
                        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(())
                };
                match attempt.await {
                    Ok(()) => {
                        stats.commits += 1;
                        break;
                    }
                    Err(error) => {
                        stats.failed_attempts += 1;
                        assert!(
                            Instant::now() < deadline,
                            "writer {w} could not commit for 5 minutes: {error}"
                        );
                        if self.committed(&pool, w, batch_no as u64, deadline).await {
                            stats.commits += 1;
                            stats.ambiguous_commits += 1;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await; // retry pacing while the database is away
                    }
                }
            }
        }
        stats
    }

    /// Whether writer `w`'s transaction `batch` committed (asks until the database answers).
    async fn committed(&self, pool: &PgPool, w: u64, batch: u64, deadline: Instant) -> bool {
        loop {
            let found = sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE writer = $1 AND batch = $2)",
                self.markers
            )))
            .bind(w as i64)
            .bind(batch as i64)
            .fetch_one(pool)
            .await;
            match found {
                Ok(found) => return found,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "writer {w} could not reach the database: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await; // the database is away
                }
            }
        }
    }
}

/// Waits for the writers; their stats summed.
pub(crate) async fn join_writers(writers: Vec<tokio::task::JoinHandle<WriterStats>>) -> WriterStats {
    let mut sum = WriterStats::default();
    for w in writers {
        sum = sum + w.await.unwrap();
    }
    sum
}

/// The first broker append time at or after `since_ms` (records of a LogAppendTime topic).
pub(crate) fn first_append_since(records: &[Record], since_ms: i64) -> Option<i64> {
    records
        .iter()
        .filter_map(|r| r.timestamp_ms)
        .filter(|&t| t >= since_ms)
        .min()
}

/// The append time of the first record with this key.
pub(crate) fn append_time_of_key(records: &[Record], key: &str) -> Option<i64> {
    records
        .iter()
        .filter(|r| r.key_str() == key)
        .filter_map(|r| r.timestamp_ms)
        .min()
}

/// Milliseconds as seconds with one decimal, signed.
pub(crate) fn secs(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// For a failing run: the keys that went backwards, as `offset:seq` in partition order.
pub(crate) fn print_violations(records: &[Record], v: &Verdict) {
    for key in v.violating_keys.iter().take(3) {
        let mut rs: Vec<(i64, u64)> = records
            .iter()
            .filter_map(|r| {
                let (k, seq) = key_seq(r);
                (&k == key).then_some((r.offset, seq))
            })
            .collect();
        rs.sort();
        let seqs: Vec<String> = rs.iter().map(|(o, s)| format!("{o}:{s}")).collect();
        eprintln!("key {key} went backwards: offset:seq {}", seqs.join(" "));
    }
}

/// Pending rows with an id at most `max_id` (the backlog a relay must work off).
pub(crate) async fn pending_up_to(pool: &PgPool, table: &str, max_id: i64) -> Option<i64> {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE status = 'pending' AND id <= $1"
    )))
    .bind(max_id)
    .fetch_one(pool)
    .await
    .ok()
}

/// The highest row id and the pending count right now.
pub(crate) async fn max_id_and_pending(pool: &PgPool, table: &str) -> (i64, i64) {
    sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(max(id), 0), count(*) FILTER (WHERE status = 'pending') FROM {table}"
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}
