//! Advisory file locks (`flock`, as the `flock` program takes them), so that two invocations do
//! not start the same service at once, and two services folders do not fetch into one jar cache.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long to wait for a lock another invocation holds.
pub const LOCK_WAIT: Duration = Duration::from_secs(900);

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the exclusive lock on `path` (created when missing), waiting up to [`LOCK_WAIT`].
    /// `holder` says in the error who else might hold it.
    pub fn acquire(path: &Path, holder: &str) -> Result<Self> {
        if let Some(dir) = path.parent() {
            crate::files::mkdir(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("open the lock file {}", path.display()))?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(TryLockError::WouldBlock) => {
                    bail!("timed out waiting for {} ({holder})", path.display())
                }
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("lock {}", path.display()));
                }
            }
        }
    }
}
