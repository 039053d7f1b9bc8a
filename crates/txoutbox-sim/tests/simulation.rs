//! The relay engine under simulation, over many seeds (see the crate docs).
//!
//! `TXOUTBOX_SIM_SEEDS=N` runs N seeds (default 1,000) from `TXOUTBOX_SIM_FIRST_SEED` (default 0);
//! `TXOUTBOX_SIM_SEED=S` replays one seed (`TXOUTBOX_SIM_TRACE=1` prints its trace,
//! `TXOUTBOX_SIM_LOG=txoutbox_core=debug` the engine's log beside it);
//! `TXOUTBOX_SIM_VERBOSE=1` prints a line per seed. Built with an engine mutant
//! (`scripts/sim-mutants.sh`), `TXOUTBOX_SIM_HUNT=1` runs seeds until one fails and reports how
//! many it took.

use txoutbox_sim::{Outcome, Settings, run};

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn report(outcome: &Outcome) -> String {
    format!(
        "seed {} broke {} invariant(s):\n  {}\n\nlast lines of its trace:\n{}\n\nreplay it with: TXOUTBOX_SIM_SEED={} cargo test -p txoutbox-sim --test simulation -- --nocapture",
        outcome.seed,
        outcome.violations.len(),
        outcome.violations.join("\n  "),
        outcome.trace.join("\n"),
        outcome.seed,
    )
}

#[test]
fn every_seed_keeps_every_invariant() {
    if let Some(seed) = env_u64("TXOUTBOX_SIM_SEED") {
        if let Ok(filter) = std::env::var("TXOUTBOX_SIM_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stdout)
                .without_time()
                .init();
        }
        let outcome = run(seed, &Settings { full_trace: true });
        if std::env::var_os("TXOUTBOX_SIM_TRACE").is_some() {
            println!("{}", outcome.trace.join("\n"));
        }
        assert!(outcome.violations.is_empty(), "{}", report(&outcome));
        return;
    }
    let seeds = env_u64("TXOUTBOX_SIM_SEEDS").unwrap_or(1_000);
    let first = env_u64("TXOUTBOX_SIM_FIRST_SEED").unwrap_or(0);
    if std::env::var_os("TXOUTBOX_SIM_HUNT").is_some() {
        let began = std::time::Instant::now();
        for seed in first..first + seeds {
            let outcome = run(seed, &Settings::default());
            if let Some(first_broken) = outcome.violations.first() {
                println!(
                    "HUNT: seed {seed} failed after {} seeds in {:.1?}: {first_broken}",
                    seed - first + 1,
                    began.elapsed()
                );
                return;
            }
        }
        panic!("HUNT: no seed of {seeds} failed");
    }
    let began = std::time::Instant::now();
    let verbose = std::env::var_os("TXOUTBOX_SIM_VERBOSE").is_some();
    // Seeds are independent (each runs on its own thread's runtime and virtual clock): spread
    // them over the cores.
    let workers = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let outcomes: Vec<Vec<Outcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for seed in (first..first + seeds).filter(|seed| seed % workers == worker) {
                        let started = std::time::Instant::now();
                        let mut outcome = run(seed, &Settings::default());
                        if verbose {
                            eprintln!(
                                "seed {seed}: {} rows, {} records, {} restarts, {} virtual ms in {:.0?}",
                                outcome.committed,
                                outcome.landed,
                                outcome.restarts,
                                outcome.virtual_ms,
                                started.elapsed()
                            );
                        }
                        if outcome.violations.is_empty() {
                            outcome.trace = Vec::new();
                        }
                        mine.push(outcome);
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
    outcomes.sort_by_key(|outcome| outcome.seed);
    if let Some(failed) = outcomes.iter().find(|outcome| !outcome.violations.is_empty()) {
        panic!("{}", report(failed));
    }
    let committed: usize = outcomes.iter().map(|o| o.committed).sum();
    let landed: usize = outcomes.iter().map(|o| o.landed).sum();
    let restarts: usize = outcomes.iter().map(|o| o.restarts).sum();
    println!(
        "{seeds} seeds in {:.1?} on {workers} threads: {committed} rows committed, {landed} records landed, {restarts} relay crashes and graceful restarts",
        began.elapsed()
    );
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [1, 2, 3] {
        let first = run(seed, &Settings { full_trace: true });
        let second = run(seed, &Settings { full_trace: true });
        assert!(first.trace.len() > 100, "a run of some length");
        assert_eq!(first, second, "seed {seed} took another path the second time");
    }
}
