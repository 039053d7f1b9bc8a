//! The lease conformance cases ([`txoutbox_store_tests::leases`]) on MySQL / MariaDB.

txoutbox_store_tests::lease_conformance!(txoutbox_store_tests::mysql::MySqlHarness);
