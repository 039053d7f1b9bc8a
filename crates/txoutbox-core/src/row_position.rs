//! Where each column of the table contract sits in a store's relay read.
//!
//! Every store reads the same columns in this order (each in its own SQL dialect), and decodes
//! them by position: a lookup by name per column and row cost a tenth of the polling relay's CPU
//! in a profile. A store whose read puts other columns first adds their count.

/// `id`.
pub const ID: usize = 0;
/// `message_id`.
pub const MESSAGE_ID: usize = 1;
/// `topic`.
pub const TOPIC: usize = 2;
/// `key`.
pub const KEY: usize = 3;
/// `payload`.
pub const PAYLOAD: usize = 4;
/// `headers` (as text).
pub const HEADERS: usize = 5;
/// `created_at`.
pub const CREATED_AT: usize = 6;
/// `attempts`.
pub const ATTEMPTS: usize = 7;
/// `next_attempt_at`.
pub const NEXT_ATTEMPT_AT: usize = 8;
/// `bucket`.
pub const BUCKET: usize = 9;
/// How many columns the read has; a store's own extra columns follow.
pub const COUNT: usize = 10;
