//! Relay-node membership and bucket leases on PostgreSQL (exclusive and work-balance modes).

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};
use txoutbox_core::Completion;
use txoutbox_core::Result;
use txoutbox_core::coordination::{Claimed, ExpiredLease, LeaseInfo, Leases, LiveNode, Ownership};

use crate::error::db_error;
use crate::store::PgStore;

/// Rows are spread over this many buckets by the table's generated `bucket` column.
pub(crate) const BUCKETS: i32 = 64;

fn millis(ttl: Duration) -> f64 {
    ttl.as_secs_f64() * 1_000.0
}

impl Leases for PgStore {
    fn bucket_count(&self) -> i32 {
        BUCKETS
    }

    fn attach(&mut self, ownership: Ownership) {
        self.ownership = Some(ownership);
    }

    async fn join(&self, node: &str, mode: &str, ttl: Duration) -> Result<i64> {
        let sql = &self.sql().leases;
        sqlx::query(AssertSqlSafe(Arc::clone(&sql.forget_dead_nodes)))
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        sqlx::query_scalar(AssertSqlSafe(Arc::clone(&sql.join)))
            .bind(node)
            .bind(mode)
            .bind(millis(ttl))
            .fetch_one(self.pool())
            .await
            .map_err(db_error)
    }

    async fn heartbeat(&self, node: &str, epoch: i64, ttl: Duration) -> Result<Option<Vec<LiveNode>>> {
        let rows = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql().leases.heartbeat)))
            .bind(node)
            .bind(epoch)
            .bind(millis(ttl))
            .fetch_all(self.pool())
            .await
            .map_err(db_error)?;
        let alive = rows
            .first()
            .map(|row| row.try_get::<bool, _>("alive"))
            .transpose()
            .map_err(db_error)?
            .unwrap_or(false);
        if !alive {
            return Ok(None);
        }
        rows.iter()
            .map(|row| {
                Ok(LiveNode {
                    node_id: row.try_get("node_id")?,
                    mode: row.try_get("mode")?,
                    epoch: row.try_get("epoch")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map(Some)
            .map_err(db_error)
    }

    async fn claim(&self, node: &str, epoch: i64, buckets: &[i32], ttl: Duration) -> Result<Vec<i32>> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.sql().leases.claim)))
            .bind(node)
            .bind(epoch)
            .bind(buckets)
            .bind(millis(ttl))
            .fetch_all(self.pool())
            .await
            .map_err(db_error)
    }

    async fn claim_fresh(&self, node: &str, epoch: i64, buckets: &[i32], ttl: Duration) -> Result<Claimed> {
        if buckets.is_empty() {
            return Ok(Claimed::default());
        }
        let rows = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql().leases.claim_fresh)))
            .bind(node)
            .bind(epoch)
            .bind(buckets)
            .bind(millis(ttl))
            .fetch_all(self.pool())
            .await
            .map_err(db_error)?;
        let mut claimed = Claimed::default();
        for row in &rows {
            let bucket: i32 = row.try_get("bucket").map_err(db_error)?;
            let owner: Option<String> = row.try_get("expired_owner").map_err(db_error)?;
            let owner_epoch: Option<i64> = row.try_get("expired_epoch").map_err(db_error)?;
            match (owner, owner_epoch) {
                (Some(node_id), Some(epoch)) => claimed.expired.push(ExpiredLease {
                    bucket,
                    node_id,
                    epoch,
                }),
                _ => claimed.held.push(bucket),
            }
        }
        claimed.held.sort_unstable();
        Ok(claimed)
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
        let mut tx = self.pool().begin().await.map_err(db_error)?;
        let mut taken: Vec<i32> = sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.sql().leases.take_over)))
            .bind(node)
            .bind(epoch)
            .bind(buckets)
            .bind(millis(ttl))
            .bind(from)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        if !taken.is_empty() && !ids.is_empty() {
            // The fenced completion sees this transaction's leases: it completes the rows of the
            // buckets just taken (and of this session's others), nobody else's.
            sqlx::query(AssertSqlSafe(Arc::clone(
                self.sql().complete(completion, false, true),
            )))
            .bind(ids)
            .bind(node)
            .bind(epoch)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        taken.sort_unstable();
        Ok(taken)
    }

    async fn release(&self, node: &str, epoch: i64, buckets: &[i32]) -> Result<()> {
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql().leases.release)))
            .bind(node)
            .bind(epoch)
            .bind(buckets)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn leave(&self, node: &str, epoch: i64) -> Result<()> {
        let sql = &self.sql().leases;
        let mut tx = self.pool().begin().await.map_err(db_error)?;
        sqlx::query(AssertSqlSafe(Arc::clone(&sql.release_all)))
            .bind(node)
            .bind(epoch)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(AssertSqlSafe(Arc::clone(&sql.leave)))
            .bind(node)
            .bind(epoch)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let rows = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql().leases.list)))
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
