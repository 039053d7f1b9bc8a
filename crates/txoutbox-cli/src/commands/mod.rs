//! One module per subcommand.

pub mod cleanup;
pub mod dead_letters;
pub mod migrate;
pub mod relay;
pub mod status;
pub mod wal;
