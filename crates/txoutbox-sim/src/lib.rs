//! The txoutbox relay engine under simulation.
//!
//! The real engine (`txoutbox_core::Relay`: fetcher, sender, completer, held and parked keys,
//! epochs, drain on shutdown) runs against simulated parts on virtual time:
//!
//! - an in-memory outbox table ([`table`]) with the table contract's semantics: ids are taken
//!   at insert and become visible at commit, so transactions commit late below the relay's
//!   cursor; rows are completed, fail, back off and die;
//! - a [store](store::SimStore) over it whose calls fail, hang past the relay's
//!   `store_timeout`, or are applied and then answer too late;
//! - a scripted broker ([`broker`]) with per-partition queues, acknowledgements in any order
//!   across partitions, failures of every class (transient, permanent, rejected, deferred),
//!   outcomes lost after a record landed, outages, and a producer that dies with the relay
//!   (a random prefix of what it held lands); in exactly-once mode, transactions that commit,
//!   abort (spoiling the sink until the relay moves its epoch on) or lose their outcome, progress
//!   that a restarted relay recovers, and a new relay that fences a zombie one;
//! - writers ([`writers`]) committing and rolling back transactions, with poison rows;
//! - relay crashes at any moment (the relay's task is dropped at an arbitrary await point,
//!   as `kill -9` would end it) and restarts on the same table, and graceful shutdowns.
//!
//! Every random choice comes from one seed; a run is a pure function of it, so a failing seed
//! is replayed exactly (`TXOUTBOX_SIM_SEED=…`). [`run`] checks the [invariants] during the run
//! and at its end. `docs/architecture.md` ("The engine under simulation") says what is
//! simulated, what is not, and why the end-to-end chaos tests stay the final word.

pub mod broker;
pub mod invariants;
pub mod leases;
mod pump;
pub mod record;
mod schedule;
pub mod sim_sink;
pub mod store;
pub mod table;
mod transactions;
pub mod world;
pub mod writers;

pub use schedule::{Outcome, Settings, run};
pub use world::{Faults, Shared, World, lock};
