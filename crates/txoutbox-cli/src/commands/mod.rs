//! One module per subcommand.

pub(crate) mod cleanup;
pub(crate) mod dead_letters;
pub(crate) mod inbox;
pub(crate) mod migrate;
pub(crate) mod probe;
pub(crate) mod relay;
pub(crate) mod status;
pub(crate) mod wal;
