//! Errors the CLI reports: what is wrong and what to do, and the exit code.

use std::fmt;

/// A failed command.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
    /// 2 for bad usage or configuration, 1 for a failure at run time.
    pub exit_code: u8,
}

impl CliError {
    /// Bad flags, environment or config file (exit code 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: 2,
        }
    }

    /// A failure while running (exit code 1).
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<txoutbox_core::Error> for CliError {
    fn from(error: txoutbox_core::Error) -> Self {
        match error {
            txoutbox_core::Error::Config(_) | txoutbox_core::Error::InvalidIdentifier { .. } => {
                Self::usage(error.to_string())
            }
            other => Self::runtime(other.to_string()),
        }
    }
}
