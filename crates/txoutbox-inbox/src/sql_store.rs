//! What the three SQL inboxes share: their statements and, written once, the `InboxStore`
//! implementation over them (each database gives its pool, transaction type, how a transaction
//! begins and how an age is bound).

/// The statements of one inbox table, rendered for its database and table.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    /// Records a message id (`true` when it was not there).
    pub(crate) claim: String,
    /// Records a parked record with its contents.
    pub(crate) park: String,
    /// Reads records marked for replay.
    pub(crate) replays: String,
    /// Takes a replay (`replay` → `handled`).
    pub(crate) claim_replay: String,
    /// Parks a replay that failed again.
    pub(crate) repark: String,
    /// Deletes a batch of old handled ids.
    pub(crate) remove_handled: String,
}

/// Most records one claim statement takes (a batch larger than this takes several): far below
/// every database's limit of bound parameters.
pub(crate) const CLAIMS_PER_STATEMENT: usize = 100;

/// `messages` without the copies of an id (the first of each stays, in order): a claim
/// statement then never meets an id twice, and needs no order of its rows.
pub(crate) fn distinct_by_id<'m>(
    messages: &[&'m crate::message::InboxMessage],
) -> Vec<&'m crate::message::InboxMessage> {
    let mut seen = std::collections::HashSet::with_capacity(messages.len());
    messages
        .iter()
        .copied()
        .filter(|message| seen.insert(message.id.as_str()))
        .collect()
}

/// Which of `messages` the claim statements that recorded the ids in `inserted` claimed: the
/// first message of each inserted id, in order; copies and ids that were there stay `false`.
pub(crate) fn claimed_in_order(
    messages: &[&crate::message::InboxMessage],
    mut inserted: std::collections::HashSet<String>,
) -> Vec<bool> {
    messages
        .iter()
        .map(|message| inserted.remove(message.id.as_str()))
        .collect()
}

/// `$query` with each of `$messages`' claim values bound in turn (consumer, id, topic,
/// partition, offset), for a [`multi_row`] claim.
macro_rules! bind_claims {
    ($query:expr, $consumer:expr, $messages:expr) => {{
        let mut query = $query;
        for message in $messages {
            query = query
                .bind($consumer)
                .bind(message.id.as_str())
                .bind(message.topic.as_str())
                .bind(message.partition)
                .bind(message.offset);
        }
        query
    }};
}
pub(crate) use bind_claims;

/// `INSERT … VALUES` with `rows` copies of `row`, between `head` and `tail`.
pub(crate) fn multi_row(head: &str, row: &str, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + (row.len() + 2) * rows + tail.len());
    sql.push_str(head);
    for n in 0..rows {
        if n > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql.push_str(tail);
    sql
}

/// An error text without NUL characters (PostgreSQL's text refuses them).
pub(crate) fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', ""))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// `impl InboxStore for $inbox` over `self.pool` and `self.sql` (a [`Statements`]).
macro_rules! sql_inbox_store {
    (
        $inbox:ty,
        $db:ty,
        begin = |$pool:ident| $begin:expr,
        age = |$age:ident| $age_param:expr,
        duplicate = |$error:ident| $duplicate:expr $(,)?
    ) => {
        impl $crate::store::InboxStore for $inbox {
            type Tx = sqlx::Transaction<'static, $db>;

            async fn begin(&self) -> txoutbox_core::Result<Self::Tx> {
                let $pool = &self.pool;
                $begin.await.map_err($crate::error::db_error)
            }

            async fn claim(
                &self,
                tx: &mut Self::Tx,
                consumer: &str,
                message: &$crate::message::InboxMessage,
            ) -> txoutbox_core::Result<bool> {
                let done = sqlx::query(sqlx::AssertSqlSafe(self.sql.claim.as_str()))
                    .bind(consumer)
                    .bind(&message.id)
                    .bind(&message.topic)
                    .bind(message.partition)
                    .bind(message.offset)
                    .execute(&mut **tx)
                    .await;
                match done {
                    Ok(done) => Ok(done.rows_affected() == 1),
                    Err($error) if $duplicate => Ok(false),
                    Err(e) => Err($crate::error::db_error(e)),
                }
            }

            async fn claim_all(
                &self,
                tx: &mut Self::Tx,
                consumer: &str,
                messages: &[&$crate::message::InboxMessage],
            ) -> txoutbox_core::Result<Vec<bool>> {
                let distinct = $crate::sql_store::distinct_by_id(messages);
                let mut inserted = std::collections::HashSet::with_capacity(distinct.len());
                for chunk in distinct.chunks($crate::sql_store::CLAIMS_PER_STATEMENT) {
                    inserted.extend(self.claim_chunk(tx, consumer, chunk).await?);
                }
                Ok($crate::sql_store::claimed_in_order(messages, inserted))
            }

            async fn commit(&self, tx: Self::Tx) -> txoutbox_core::Result<()> {
                tx.commit().await.map_err($crate::error::db_error)
            }

            async fn rollback(&self, tx: Self::Tx) -> txoutbox_core::Result<()> {
                tx.rollback().await.map_err($crate::error::db_error)
            }

            async fn park(
                &self,
                consumer: &str,
                message: &$crate::message::InboxMessage,
                attempts: u32,
                error: &str,
            ) -> txoutbox_core::Result<()> {
                let done = sqlx::query(sqlx::AssertSqlSafe(self.sql.park.as_str()))
                    .bind(consumer)
                    .bind(&message.id)
                    .bind(&message.topic)
                    .bind(message.partition)
                    .bind(message.offset)
                    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
                    .bind($crate::sql_store::without_nul(error))
                    .bind(message.key.as_deref())
                    .bind(message.payload.as_deref())
                    .bind(message.headers_json())
                    .execute(&self.pool)
                    .await;
                match done {
                    Ok(_) => Ok(()),
                    Err($error) if $duplicate => Ok(()),
                    Err(e) => Err($crate::error::db_error(e)),
                }
            }

            async fn replays(
                &self,
                consumer: &str,
                limit: u32,
            ) -> txoutbox_core::Result<Vec<$crate::message::InboxMessage>> {
                let rows: Vec<$crate::message::ParkedRow> =
                    sqlx::query_as(sqlx::AssertSqlSafe(self.sql.replays.as_str()))
                        .bind(consumer)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::error::db_error)?;
                Ok(rows
                    .into_iter()
                    .map($crate::message::replayed_message)
                    .collect())
            }

            async fn claim_replay(
                &self,
                tx: &mut Self::Tx,
                consumer: &str,
                message: &$crate::message::InboxMessage,
            ) -> txoutbox_core::Result<bool> {
                let done = sqlx::query(sqlx::AssertSqlSafe(self.sql.claim_replay.as_str()))
                    .bind(consumer)
                    .bind(&message.id)
                    .execute(&mut **tx)
                    .await
                    .map_err($crate::error::db_error)?;
                Ok(done.rows_affected() == 1)
            }

            async fn repark(
                &self,
                consumer: &str,
                message: &$crate::message::InboxMessage,
                error: &str,
            ) -> txoutbox_core::Result<()> {
                sqlx::query(sqlx::AssertSqlSafe(self.sql.repark.as_str()))
                    .bind($crate::sql_store::without_nul(error))
                    .bind(consumer)
                    .bind(&message.id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::error::db_error)?;
                Ok(())
            }

            async fn remove_handled(
                &self,
                consumer: &str,
                age: std::time::Duration,
                limit: u32,
            ) -> txoutbox_core::Result<u64> {
                let $age = age;
                let done = sqlx::query(sqlx::AssertSqlSafe(self.sql.remove_handled.as_str()))
                    .bind(consumer)
                    .bind($age_param)
                    .bind(i64::from(limit))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::error::db_error)?;
                Ok(done.rows_affected())
            }
        }
    };
}

/// Creates the migrations table `$migrations` if missing and applies the steps of `$steps` the
/// table `$table` still needs, each with its version recorded, on `$conn` (a connection or
/// transaction the caller locked). `$applied_at` is the column's type and default; `$insert`
/// the statement that records a step (`{migrations}` in it is the table).
macro_rules! apply_migrations {
    (
        $conn:expr,
        steps = $steps:expr,
        table = $table:expr,
        migrations = $migrations:expr,
        applied_at = $applied_at:literal,
        insert = $insert:literal,
        values = $values:expr $(,)?
    ) => {{
        let migrations = $migrations;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {migrations} (version INTEGER PRIMARY KEY, \
             name TEXT NOT NULL, applied_at {})",
            $applied_at
        )))
        .execute(&mut *$conn)
        .await
        .map_err($crate::error::db_error)?;
        let applied: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(max(version), 0) FROM {migrations}"
        )))
        .fetch_one(&mut *$conn)
        .await
        .map_err($crate::error::db_error)?;
        for step in $steps.pending($table, applied)? {
            sqlx::raw_sql(sqlx::AssertSqlSafe(step.render($values)))
                .execute(&mut *$conn)
                .await
                .map_err($crate::error::db_error)?;
            sqlx::query(sqlx::AssertSqlSafe(format!($insert, migrations = migrations)))
                .bind(step.version)
                .bind(step.name)
                .execute(&mut *$conn)
                .await
                .map_err($crate::error::db_error)?;
        }
    }};
}

pub(crate) use {apply_migrations, sql_inbox_store};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::InboxMessage;

    #[test]
    fn a_batch_claims_the_first_copy_of_each_new_id() {
        let batch: Vec<InboxMessage> = ["a", "b", "a", "c", "b", "d"]
            .iter()
            .enumerate()
            .map(|(n, id)| InboxMessage::new("t", 0, n as i64).with_id(*id))
            .collect();
        let refs: Vec<&InboxMessage> = batch.iter().collect();
        let distinct: Vec<&str> = distinct_by_id(&refs).iter().map(|m| m.id()).collect();
        assert_eq!(distinct, ["a", "b", "c", "d"]);
        // "c" was there before: the statement recorded a, b and d.
        let inserted = ["a", "b", "d"].iter().map(|id| (*id).to_owned()).collect();
        assert_eq!(
            claimed_in_order(&refs, inserted),
            [true, true, false, false, false, true]
        );
        assert_eq!(multi_row("I ", "(?)", 3, ";"), "I (?), (?), (?);");
    }
}
