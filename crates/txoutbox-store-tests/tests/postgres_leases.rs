//! The lease conformance cases ([`txoutbox_store_tests::leases`]) on PostgreSQL.

txoutbox_store_tests::lease_conformance!(txoutbox_store_tests::postgres::PgHarness);
