//! A fresh SQLite database file per test.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// A database file of its own, removed on drop.
#[derive(Debug)]
pub struct TestDb {
    pub pool: SqlitePool,
    pub path: PathBuf,
}

impl TestDb {
    pub async fn new() -> Self {
        let path = std::env::temp_dir().join(format!("{}.sqlite", crate::unique("txoutbox")));
        let pool = Self::connect(&path, 4).await;
        Self { pool, path }
    }

    /// Another pool over the same file (an application pool beside the relay's).
    pub async fn connect(path: &std::path::Path, size: u32) -> SqlitePool {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        SqlitePoolOptions::new()
            .max_connections(size)
            .connect_with(options)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}
