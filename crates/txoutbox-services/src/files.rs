//! File helpers whose errors name the path: what every service's set-up writes.

use std::path::Path;

use anyhow::{Context, Result};

/// `mkdir -p`, with the folder in the error.
pub fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create the folder {}", dir.display()))
}

/// `chmod`, with the path in the error.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Writes a file, with its path in the error.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}
