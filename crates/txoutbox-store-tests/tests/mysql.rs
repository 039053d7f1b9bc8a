//! The store conformance suite on MySQL / MariaDB (each case in a fresh database, the table named
//! with it), plus what only this store has: the server version check, multi-row inserts split by
//! `max_allowed_packet`, late commits found behind the cursor, and one active relay per table.

use txoutbox_store_tests::mysql::MySqlHarness;

txoutbox_store_tests::store_conformance!(MySqlHarness);
