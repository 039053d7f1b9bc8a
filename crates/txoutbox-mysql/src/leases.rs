//! Relay-node membership and bucket leases on MySQL / MariaDB (exclusive and work-balance
//! modes), in the tables of the migration `0002_relay_leases.sql`.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};
use txoutbox_core::Completion;
use txoutbox_core::Result;
use txoutbox_core::coordination::{Claimed, ExpiredLease, LeaseInfo, Leases, LiveNode, Ownership};

use crate::error::db_error;
use crate::sql::{bind_padded, padded_len};
use crate::store::MySqlStore;

/// Rows are spread over this many buckets by the table's generated `bucket` column.
const BUCKETS: i32 = 64;

/// A lease's length in microseconds, as the statements bind it.
fn micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)
}

impl MySqlStore {
    /// Creates the buckets' lease rows if missing, then runs the claim `statement` (? node,
    /// ? epoch, ? lease, the buckets, ? node, ? epoch).
    async fn create_and_take(
        &self,
        statement: String,
        node: &str,
        epoch: i64,
        buckets: &[i32],
        ttl: Duration,
    ) -> Result<()> {
        let n = padded_len(buckets.len());
        bind_padded(sqlx::query(AssertSqlSafe(self.sql().leases.create(n))), buckets)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        let take = sqlx::query(AssertSqlSafe(statement))
            .bind(node)
            .bind(epoch)
            .bind(micros(ttl));
        bind_padded(take, buckets)
            .bind(node)
            .bind(epoch)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Of `buckets`, those whose lease names the session (run out or not), read in `tx`.
    async fn owned(
        &self,
        node: &str,
        epoch: i64,
        buckets: &[i32],
        tx: &mut sqlx::MySqlConnection,
    ) -> Result<Vec<i32>> {
        let statement = self.sql().leases.owned(padded_len(buckets.len()));
        bind_padded(
            sqlx::query(AssertSqlSafe(statement)).bind(node).bind(epoch),
            buckets,
        )
        .fetch_all(tx)
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| row.try_get::<i32, _>(0).map_err(db_error))
        .collect()
    }

    /// Of `buckets`, those the session holds — read in `tx` when given.
    async fn held(
        &self,
        node: &str,
        epoch: i64,
        buckets: &[i32],
        tx: Option<&mut sqlx::MySqlConnection>,
    ) -> Result<Vec<i32>> {
        let statement = self.sql().leases.held(padded_len(buckets.len()));
        let query = bind_padded(
            sqlx::query(AssertSqlSafe(statement)).bind(node).bind(epoch),
            buckets,
        );
        let rows = match tx {
            Some(conn) => query.fetch_all(conn).await,
            None => query.fetch_all(self.pool()).await,
        }
        .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get::<i32, _>(0).map_err(db_error))
            .collect()
    }
}

impl Leases for MySqlStore {
    fn bucket_count(&self) -> i32 {
        BUCKETS
    }

    fn attach(&mut self, ownership: Ownership) {
        self.ownership = Some(ownership);
    }

    /// The epoch comes from a one-row counter, taken in the same transaction as the node's row.
    async fn join(&self, node: &str, mode: &str, ttl: Duration) -> Result<i64> {
        let sql = &self.sql().leases;
        sqlx::query(AssertSqlSafe(sql.forget_dead_nodes.as_str()))
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        let mut tx = self.pool().begin().await.map_err(db_error)?;
        sqlx::query(AssertSqlSafe(sql.next_epoch.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(AssertSqlSafe(sql.join.as_str()))
            .bind(node)
            .bind(mode)
            .bind(micros(ttl))
            .bind(mode)
            .bind(micros(ttl))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let epoch: i64 = sqlx::query_scalar(AssertSqlSafe(sql.epoch_of.as_str()))
            .bind(node)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(epoch)
    }

    /// The session is alive when, after the renewal, its row has its epoch and has not expired
    /// (no reliance on affected-row counts, which a connection option changes).
    async fn heartbeat(&self, node: &str, epoch: i64, ttl: Duration) -> Result<Option<Vec<LiveNode>>> {
        let sql = &self.sql().leases;
        sqlx::query(AssertSqlSafe(sql.renew.as_str()))
            .bind(micros(ttl))
            .bind(node)
            .bind(epoch)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        let rows = sqlx::query(AssertSqlSafe(sql.live_nodes.as_str()))
            .bind(node)
            .fetch_all(self.pool())
            .await
            .map_err(db_error)?;
        let mut live = Vec::with_capacity(rows.len());
        let mut alive = false;
        for row in &rows {
            let found = LiveNode {
                node_id: row.try_get("node_id").map_err(db_error)?,
                mode: row.try_get("mode").map_err(db_error)?,
                epoch: row.try_get("epoch").map_err(db_error)?,
            };
            let unexpired = row.try_get::<i64, _>("alive").map_err(db_error)? != 0;
            alive |= unexpired && found.node_id == node && found.epoch == epoch;
            live.push(found);
        }
        Ok(alive.then_some(live))
    }

    /// Three statements: the buckets' rows are created if missing, the free, expired or own ones
    /// taken, and those the session holds afterwards read back.
    async fn claim(&self, node: &str, epoch: i64, buckets: &[i32], ttl: Duration) -> Result<Vec<i32>> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let statement = self.sql().leases.claim(padded_len(buckets.len()));
        self.create_and_take(statement, node, epoch, buckets, ttl).await?;
        self.held(node, epoch, buckets, None).await
    }

    /// The claim without taking expired leases, then the expired ones listed (advisory: the
    /// take-over statement checks the holder again).
    async fn claim_fresh(&self, node: &str, epoch: i64, buckets: &[i32], ttl: Duration) -> Result<Claimed> {
        if buckets.is_empty() {
            return Ok(Claimed::default());
        }
        let sql = &self.sql().leases;
        let n = padded_len(buckets.len());
        self.create_and_take(sql.claim_fresh(n), node, epoch, buckets, ttl)
            .await?;
        let held = self.held(node, epoch, buckets, None).await?;
        let expired = bind_padded(sqlx::query(AssertSqlSafe(sql.expired(n))), buckets)
            .bind(node)
            .bind(epoch)
            .fetch_all(self.pool())
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| {
                Ok(ExpiredLease {
                    bucket: row.try_get("bucket")?,
                    node_id: row.try_get("owner")?,
                    epoch: row.try_get("epoch")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)?;
        Ok(Claimed { held, expired })
    }

    async fn take_over(
        &self,
        node: &str,
        epoch: i64,
        from: i64,
        buckets: &[i32],
        ids: &[i64],
        completion: Completion,
        ttl: Duration,
    ) -> Result<Vec<i32>> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let sql = &self.sql().leases;
        let n = padded_len(buckets.len());
        let mut tx = self.pool().begin().await.map_err(db_error)?;
        let before = self.owned(node, epoch, buckets, &mut tx).await?;
        let take = sqlx::query(AssertSqlSafe(sql.take_over(n)))
            .bind(node)
            .bind(epoch)
            .bind(micros(ttl));
        bind_padded(take, buckets)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let owned = self.owned(node, epoch, buckets, &mut tx).await?;
        let taken: Vec<i32> = owned.iter().copied().filter(|b| !before.contains(b)).collect();
        if !taken.is_empty() && !ids.is_empty() {
            // The fenced completion sees this transaction's leases: it completes the rows of the
            // buckets just taken (and of this session's others), nobody else's.
            self.complete_on(&mut tx, ids, completion, Some((node, epoch)))
                .await?;
        }
        // MySQL reads the clock afresh in every statement: the completion's fence saw the leases
        // valid only if they still are now (a pause longer than the lease would have made it
        // complete nothing while the leases name this session). Otherwise undo and try again.
        let held = self.held(node, epoch, buckets, Some(&mut tx)).await?;
        if owned.iter().any(|b| !held.contains(b)) {
            tx.rollback().await.map_err(db_error)?;
            return Err(txoutbox_core::Error::database(
                "the take-over of a lost session's leases outlasted the lease; it is tried again",
                true,
            ));
        }
        tx.commit().await.map_err(db_error)?;
        Ok(taken)
    }

    async fn release(&self, node: &str, epoch: i64, buckets: &[i32]) -> Result<()> {
        if buckets.is_empty() {
            return Ok(());
        }
        let sql = &self.sql().leases;
        let release = sqlx::query(AssertSqlSafe(sql.release(padded_len(buckets.len()))))
            .bind(node)
            .bind(epoch);
        bind_padded(release, buckets)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn leave(&self, node: &str, epoch: i64) -> Result<()> {
        let sql = &self.sql().leases;
        let mut tx = self.pool().begin().await.map_err(db_error)?;
        for statement in [&sql.release_all, &sql.leave] {
            sqlx::query(AssertSqlSafe(statement.as_str()))
                .bind(node)
                .bind(epoch)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let rows = sqlx::query(AssertSqlSafe(self.sql().leases.list.as_str()))
            .fetch_all(self.pool())
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(LeaseInfo {
                    bucket: row.try_get("bucket")?,
                    owner: row.try_get("owner")?,
                    epoch: row.try_get("epoch")?,
                    lease_until: row.try_get("lease_until")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }
}
