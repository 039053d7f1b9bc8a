//! The store conformance cases that need only txoutbox's API, against the simulated store the
//! engine's simulation runs on (`txoutbox-sim`): its table must mean what the database stores'
//! tables mean.

use txoutbox_store_tests::sim::SimHarness;

txoutbox_store_tests::store_conformance!(api SimHarness);
