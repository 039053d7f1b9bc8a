//! txoutbox benchmarks against the services named by the environment
//! (`TXOUTBOX_KAFKA_BOOTSTRAP`, `TXOUTBOX_POSTGRES_URL`, `TXOUTBOX_MYSQL_URL`): relay throughput vs. a raw producer,
//! the cost of `publish` in a business transaction, commit → Kafka latency, and the inbox against a
//! bare consumer.
//!
//! `cargo run --release -p txoutbox-bench -- all --json target/bench.json`
//! `cargo build --release -p txoutbox-cli -p txoutbox-bench && target/release/txoutbox-bench console`

mod ack_latency;
mod backlog;
mod common;
mod console;
mod drain;
mod enqueue;
mod inbox;
mod latency;
mod memory;
mod nodes;
mod plain_table;
mod sinks;
mod store_kind;
mod throughput;
mod writes;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "txoutbox-bench",
    about = "txoutbox benchmarks (PostgreSQL, SQLite, MariaDB, Kafka)"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Backlog: pending rows of the small case.
    #[arg(long, global = true, default_value_t = 10_000)]
    backlog_small: u64,
    /// Backlog: pending rows of the large case (and settled rows of the third).
    #[arg(long, global = true, default_value_t = 10_000_000)]
    backlog_large: u64,
    /// Console: pending rows in the table.
    #[arg(long, global = true, default_value_t = 1_000_000)]
    console_pending: u64,
    /// Console: dead rows beside them.
    #[arg(long, global = true, default_value_t = 1_000)]
    console_dead: u64,
    /// Console: page loads timed per page (after the first, cold one).
    #[arg(long, global = true, default_value_t = 20)]
    console_loads: usize,
    /// Memory: rows with large payloads.
    #[arg(long, global = true, default_value_t = 20)]
    memory_rows: u64,
    /// Memory: the payload of each, in MiB.
    #[arg(long, global = true, default_value_t = 50)]
    memory_payload_mib: usize,
    /// Memory: the size of the one WAL transaction, in GiB (0: skip it).
    #[arg(long, global = true, default_value_t = 3.0)]
    memory_wal_gib: f64,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Throughput: messages per run.
    #[arg(long, global = true, default_value_t = 200_000)]
    messages: usize,
    /// Throughput: distinct keys.
    #[arg(long, global = true, default_value_t = 1_000)]
    keys: usize,
    /// Throughput: relay batch sizes to try (max_in_flight is 4x each).
    #[arg(long, global = true, value_delimiter = ',', default_values_t = vec![1_000usize, 5_000])]
    batch_sizes: Vec<usize>,
    /// Throughput: max_in_flight as a multiple of the batch size.
    #[arg(long, global = true, default_value_t = 4)]
    inflight_factor: usize,
    /// Writes, drain and inbox: skip the PostgreSQL runs.
    #[arg(long, global = true)]
    no_postgres: bool,
    /// Throughput: skip the SQLite relay runs.
    #[arg(long, global = true)]
    no_sqlite: bool,
    /// Throughput and enqueue: skip the MySQL / MariaDB runs (`TXOUTBOX_MYSQL_URL`).
    #[arg(long, global = true)]
    no_mysql: bool,
    /// Enqueue: sequential transactions per variant.
    #[arg(long, global = true, default_value_t = 5_000)]
    transactions: usize,
    /// Enqueue: rows per bulk statement.
    #[arg(long, global = true, default_value_t = 1_000)]
    bulk_rows: usize,
    /// Enqueue: bulk repetitions.
    #[arg(long, global = true, default_value_t = 50)]
    bulk_reps: usize,
    /// Latency: steady rates in messages per second.
    #[arg(long, global = true, value_delimiter = ',', default_values_t = vec![500.0f64, 2_000.0])]
    rates: Vec<f64>,
    /// Latency: seconds per rate.
    #[arg(long, global = true, default_value_t = 5.0)]
    seconds: f64,
    /// Writes: concurrent writers (SQLite always one).
    #[arg(long, global = true, default_value_t = 4)]
    writers: usize,
    /// Writes: rows per round, split between the writers.
    #[arg(long, global = true, default_value_t = 300_000)]
    write_rows: usize,
    /// Writes: rows (single-row inserts) per transaction.
    #[arg(long, global = true, default_value_t = 1_000)]
    rows_per_transaction: usize,
    /// Writes, drain and inbox: rounds.
    #[arg(long, global = true, default_value_t = 5)]
    rounds: usize,
    /// Inbox: records in each round's topic, each with its own message id.
    #[arg(long, global = true, default_value_t = 100_000)]
    inbox_records: usize,
    /// Inbox: partitions of each round's topic.
    #[arg(long, global = true, default_value_t = 8)]
    inbox_partitions: i32,
    /// Inbox: records per transaction of both consumers (the inbox's records_per_transaction).
    #[arg(long, global = true, default_value_t = 1)]
    inbox_records_per_transaction: usize,
    /// Drain: backlog sizes.
    #[arg(long, global = true, value_delimiter = ',', default_values_t = vec![300_000usize, 1_000_000])]
    drain_backlogs: Vec<usize>,
    /// Nodes: the backlog each run drains.
    #[arg(long, global = true, default_value_t = 300_000)]
    nodes_backlog: usize,
    /// Sinks: the messages each round publishes.
    #[arg(long, global = true, default_value_t = 300_000)]
    sinks_messages: usize,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Raw producer vs. relay drain rate (PostgreSQL, SQLite, MySQL, discard sink).
    Throughput,
    /// publish / publish_all overhead on PostgreSQL and MySQL / MariaDB.
    Enqueue,
    /// Commit → Kafka latency through the relay vs. raw producer latency.
    Latency,
    /// Claim cost with a small and a huge backlog, and beside many settled rows (PostgreSQL;
    /// not part of `all`: filling 10 million rows takes minutes).
    Backlog,
    /// Web console page load (overview, dead letters) in headless Chromium with a large pending
    /// backlog (PostgreSQL; needs the `txoutbox` release binary beside this one; not part of `all`).
    Console,
    /// Peak memory of the daemon with 50 MB payloads and one WAL transaction of several GB
    /// (PostgreSQL; needs the `txoutbox` release binary beside this one; not part of `all`).
    Memory,
    /// What an outbox row costs its writer against a plain outbox table: concurrent writers,
    /// single-row inserts (PostgreSQL, SQLite, MySQL / MariaDB; not part of `all`).
    Writes,
    /// The relay with default settings draining a freshly written, never analyzed backlog
    /// against the raw producer and a plain relay on a plain outbox table, round by round
    /// (PostgreSQL, SQLite, MySQL / MariaDB; not part of `all`).
    Drain,
    /// The inbox consumer against a bare consumer doing the same database write without
    /// de-duplication, round by round (PostgreSQL, SQLite, MySQL / MariaDB; not part of `all`).
    Inbox,
    /// One backlog drained by 1, 2 and 3 work-balanced relay nodes, beside a single-mode relay,
    /// an exactly-once exclusive relay and the raw producer, round by round (PostgreSQL,
    /// MySQL / MariaDB; not part of `all`).
    Nodes,
    /// Each sink other than Kafka (NATS JetStream, RabbitMQ, Redis Streams) against its broker's
    /// own client, round by round, the relay draining a settled PostgreSQL table (needs
    /// TXOUTBOX_NATS_URL, TXOUTBOX_RABBITMQ_URL, TXOUTBOX_REDIS_URL; not part of `all`).
    Sinks,
    /// Every scenario but `backlog`, `console`, `memory`, `writes`, `drain`, `inbox` and
    /// `nodes`, one after the other.
    All,
}

#[derive(Serialize, Default)]
struct Results {
    machine: serde_json::Value,
    throughput: Option<throughput::ThroughputResult>,
    enqueue: Option<enqueue::EnqueueResult>,
    latency: Option<latency::LatencyResult>,
    backlog: Option<backlog::BacklogResult>,
    console: Option<console::ConsoleResult>,
    memory: Option<memory::MemoryResult>,
    writes: Option<writes::WritesResult>,
    drain: Option<drain::DrainResult>,
    inbox: Option<inbox::InboxResult>,
    nodes: Option<nodes::NodesResult>,
    sinks: Option<sinks::SinksResult>,
}

fn machine() -> serde_json::Value {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    serde_json::json!({
        "nproc": nproc,
        "mem_total_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "started_at": chrono::Utc::now().to_rfc3339(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let want = |s: Scenario| cli.scenario == s || cli.scenario == Scenario::All;
    let mut results = Results {
        machine: machine(),
        ..Default::default()
    };
    if want(Scenario::Throughput) {
        results.throughput = Some(
            throughput::run(
                cli.messages,
                cli.keys,
                &cli.batch_sizes,
                cli.inflight_factor,
                !cli.no_sqlite,
                !cli.no_mysql,
            )
            .await,
        );
    }
    if want(Scenario::Enqueue) {
        results.enqueue =
            Some(enqueue::run(cli.transactions, cli.bulk_rows, cli.bulk_reps, !cli.no_mysql).await);
    }
    if want(Scenario::Latency) {
        ack_latency::install();
        results.latency = Some(latency::run(&cli.rates, cli.seconds).await);
    }
    if cli.scenario == Scenario::Backlog {
        results.backlog =
            Some(backlog::run(cli.backlog_small, cli.backlog_large, cli.batch_sizes[0], 30).await);
    }
    if cli.scenario == Scenario::Writes {
        let shape = writes::Shape {
            writers: cli.writers.max(1),
            rows: cli.write_rows,
            per_transaction: cli.rows_per_transaction.max(1),
            rounds: cli.rounds.max(1),
        };
        results.writes = Some(writes::run(shape, !cli.no_postgres, !cli.no_sqlite, !cli.no_mysql).await);
    }
    if cli.scenario == Scenario::Drain {
        results.drain = Some(
            drain::run(
                &cli.drain_backlogs,
                cli.rounds.max(1),
                cli.keys,
                !cli.no_postgres,
                !cli.no_sqlite,
                !cli.no_mysql,
            )
            .await,
        );
    }
    if cli.scenario == Scenario::Nodes {
        results.nodes = Some(
            nodes::run(
                cli.nodes_backlog.max(1),
                cli.rounds.max(1),
                cli.keys,
                !cli.no_mysql,
            )
            .await,
        );
    }
    if cli.scenario == Scenario::Sinks {
        results.sinks = Some(sinks::run(cli.sinks_messages.max(1), cli.rounds.max(1), cli.keys).await);
    }
    if cli.scenario == Scenario::Inbox {
        let shape = inbox::Shape {
            records: cli.inbox_records.max(1),
            keys: cli.keys.max(1),
            partitions: cli.inbox_partitions.max(1),
            rounds: cli.rounds.max(1),
            records_per_transaction: cli.inbox_records_per_transaction.max(1),
        };
        results.inbox = Some(inbox::run(shape, !cli.no_postgres, !cli.no_sqlite, !cli.no_mysql).await);
    }
    if cli.scenario == Scenario::Memory {
        results.memory =
            Some(memory::run(cli.memory_rows, cli.memory_payload_mib, cli.memory_wal_gib).await?);
    }
    if cli.scenario == Scenario::Console {
        results.console = Some(console::run(cli.console_pending, cli.console_dead, cli.console_loads).await?);
    }
    print_tables(&results);
    if let Some(path) = &cli.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn print_backlog(b: &backlog::BacklogResult) {
    println!(
        "\n== backlog scaling: claiming {} rows, {} reads per case ==",
        b.batch, b.reads
    );
    println!(
        "{:<36} {:>12} {:>12} {:>10} {:>18} {:>18}",
        "table", "pending", "settled", "fill s", "fetch_pending p50", "fetch_after p50"
    );
    for c in &b.cases {
        println!(
            "{:<36} {:>12} {:>12} {:>10.0} {:>18} {:>18}",
            c.shape,
            c.pending,
            c.settled,
            c.fill_seconds,
            ms(c.fetch_pending.p50_us),
            ms(c.fetch_after.p50_us)
        );
    }
    println!(
        "claim cost ratio: large/small backlog {:.2}x, beside many settled rows {:.2}x (target <= 1.5x)",
        b.pending_ratio, b.settled_ratio
    );
}

fn print_console(c: &console::ConsoleResult) {
    println!(
        "\n== web console: {} pending rows over {} topics, {} dead; navigation start -> first figures shown ==",
        c.pending, c.topics, c.dead
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10}",
        "measure", "cold", "p50", "p95", "max"
    );
    let row = |name: &str, cold: Option<f64>, p: &common::Percentiles| {
        println!(
            "{:<44} {:>10} {:>10} {:>10} {:>10}",
            name,
            cold.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms")),
            ms(p.p50_us),
            ms(p.p95_us),
            ms(p.max_us)
        )
    };
    row("overview page (browser)", Some(c.overview_cold_ms), &c.overview);
    row(
        "dead-letter page (browser)",
        Some(c.dead_letters_cold_ms),
        &c.dead_letters,
    );
    row("GET /ui/api/overview", None, &c.api_overview);
    row("GET /ui/api/dead-letters?limit=100", None, &c.api_dead_letters);
    row(
        "per-topic statistics (background, <= 1/30 s)",
        None,
        &c.topic_stats,
    );
    println!("target: page load < 200 ms with 1 million pending rows");
}

fn print_memory(m: &memory::MemoryResult) {
    println!("\n== memory: the daemon's peak resident set (VmHWM) ==");
    println!(
        "{:<72} {:>9} {:>11} {:>10} {:>8}",
        "case", "messages", "payload MiB", "peak MiB", "seconds"
    );
    for c in &m.cases {
        println!(
            "{:<72} {:>9} {:>11.0} {:>10.0} {:>8.1}",
            c.case, c.messages, c.payload_mib, c.peak_rss_mib, c.seconds
        );
    }
}

/// `[1.02, 1.10, ...]` with two decimals.
fn list(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    format!("[{}]", parts.join(", "))
}

/// Rates in thousands: `[43.6, 53.0]k`.
fn list_k(values: &[f64]) -> String {
    let thousands: Vec<f64> = values.iter().map(|v| v / 1000.0).collect();
    format!("{}k", list(&thousands))
}

fn print_writes(w: &writes::WritesResult) {
    println!("\n== writes: cost of an outbox row against a plain outbox table (plain rate / outbox rate) ==");
    for s in &w.stores {
        println!(
            "{:<10} {} writer(s) x {} rows, {} per transaction: ratio median {:.2}x, rounds {}; \
             plain rows/s {}, outbox rows/s {}",
            s.store,
            s.writers,
            s.rows_per_writer,
            s.rows_per_transaction,
            s.cost_ratio_median,
            list(&s.cost_ratio),
            list_k(&s.plain_rows_per_sec),
            list_k(&s.outbox_rows_per_sec),
        );
    }
}

fn print_drain(d: &drain::DrainResult) {
    println!(
        "\n== drain: default relay on a fresh, never analyzed backlog vs the raw producer and a plain relay ({} rounds, {} keys) ==",
        d.rounds, d.keys
    );
    for (n, raw) in &d.raw_msgs_per_sec {
        println!("raw producer, {n} messages: msg/s {}", list_k(raw));
    }
    for s in &d.stores {
        println!(
            "{:<10} backlog {:>9}: vs raw median {:.2}x, worst {:.2}x, rounds {}; vs the plain relay \
             median {:.2}x, rounds {} (plain relay msg/s {})",
            s.store,
            s.backlog,
            s.ratio_median,
            s.ratio_worst,
            list(&s.ratio_to_raw),
            s.ratio_to_plain_median,
            list(&s.ratio_to_plain),
            list_k(&s.plain_msgs_per_sec)
        );
    }
}

fn print_sinks(r: &sinks::SinksResult) {
    println!(
        "\n== sinks: the relay through each sink vs the broker's own client ({} rounds, {} keys) ==",
        r.rounds, r.keys
    );
    for s in &r.sinks {
        println!(
            "{:<8} {} messages: relay vs raw median {:.2}x, rounds {}; raw msg/s {}; relay msg/s {}; \
             relay to a discard sink msg/s {}",
            s.sink,
            s.messages,
            s.ratio_median,
            list(&s.ratio_to_raw),
            list_k(&s.raw_msgs_per_sec),
            list_k(&s.relay_msgs_per_sec),
            list_k(&s.discard_msgs_per_sec)
        );
    }
}

fn print_nodes(n: &nodes::NodesResult) {
    println!(
        "\n== nodes: one backlog of {} messages ({} keys) drained by relay nodes vs the raw producer ({} rounds) ==",
        n.backlog, n.keys, n.rounds
    );
    println!("raw producer: msg/s {}", list_k(&n.raw_msgs_per_sec));
    for r in &n.runs {
        println!(
            "{:<9} {:<24} vs raw median {:.2}x (steady {:.2}x), msg/s {}, steady msg/s {}, settled after s {}",
            r.store,
            r.setup,
            r.ratio_median,
            r.steady_ratio_median,
            list_k(&r.msgs_per_sec),
            list_k(&r.steady_msgs_per_sec),
            list(&r.settle_seconds),
        );
    }
}

fn print_inbox(i: &inbox::InboxResult) {
    println!(
        "\n== inbox: InboxConsumer vs a bare consumer doing the same write ({} records, {} partitions, \
         {} keys, {} lanes, pool {}, {} rounds) ==",
        i.records, i.partitions, i.keys, i.lanes, i.pool_size, i.rounds
    );
    for s in &i.stores {
        println!(
            "{:<10} inbox/bare median {:.2}x, min {:.2}x, max {:.2}x, rounds {}; bare records/s {}, \
             inbox records/s {}",
            s.store,
            s.ratio_median,
            s.ratio_min,
            s.ratio_max,
            list(&s.ratio),
            list_k(&s.bare_records_per_sec),
            list_k(&s.inbox_records_per_sec),
        );
    }
    println!("target: inbox >= 0.8x the bare consumer");
}

fn print_tables(r: &Results) {
    if let Some(w) = &r.writes {
        print_writes(w);
    }
    if let Some(d) = &r.drain {
        print_drain(d);
    }
    if let Some(i) = &r.inbox {
        print_inbox(i);
    }
    if let Some(n) = &r.nodes {
        print_nodes(n);
    }
    if let Some(s) = &r.sinks {
        print_sinks(s);
    }
    if let Some(b) = &r.backlog {
        print_backlog(b);
    }
    if let Some(m) = &r.memory {
        print_memory(m);
    }
    if let Some(c) = &r.console {
        print_console(c);
    }
    println!(
        "\nmachine: {} cores, {} GiB",
        r.machine["nproc"], r.machine["mem_total_gib"]
    );
    if let Some(t) = &r.throughput {
        println!(
            "\n== throughput: {} messages, {} keys, 100-byte payloads, {} partitions ==",
            t.messages, t.keys, t.partitions
        );
        println!(
            "{:<34} {:>10} {:>12} {:>9}  {:>8} {:>10} {:>11} {:>10} {:>9}",
            "run", "seconds", "msg/s", "vs raw", "fetches", "fetch ms", "rows read", "mark ms", "start ms"
        );
        println!(
            "{:<34} {:>10.2} {:>12.0} {:>9}",
            "raw rdkafka producer", t.raw.seconds, t.raw.msgs_per_sec, "1.00x"
        );
        for x in &t.relays {
            let name = format!(
                "relay {}/{} batch {} inflight {}",
                x.store, x.sink, x.batch_size, x.max_in_flight
            );
            let ratio = x
                .ratio_to_raw
                .map(|v| format!("{v:.2}x"))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<34} {:>10.2} {:>12.0} {:>9}  {:>8} {:>10.0} {:>11} {:>10.0} {:>9.0}{}",
                name,
                x.seconds,
                x.msgs_per_sec,
                ratio,
                x.store_stats.fetch_calls,
                x.store_stats.fetch_total_ms,
                x.store_stats.fetch_rows,
                x.store_stats.complete_total_ms,
                x.store_stats.start_ms,
                if x.timed_out { "  TIMED OUT" } else { "" }
            );
        }
    }
    if let Some(e) = &r.enqueue {
        println!("\n== enqueue (PostgreSQL, sequential, one connection) ==");
        println!("{:<44} {:>10} {:>10} {:>10}", "variant", "mean", "p50", "p99");
        let row = |name: &str, p: &common::Percentiles| {
            println!(
                "{:<44} {:>10} {:>10} {:>10}",
                name,
                format!("{:.0} µs", p.mean_us),
                format!("{:.0} µs", p.p50_us),
                format!("{:.0} µs", p.p99_us)
            )
        };
        row(
            &format!("(a) tx: insert order ({}x)", e.transactions),
            &e.tx_alone,
        );
        row("(b) tx: insert order + publish", &e.tx_with_publish);
        row(
            "(b') tx: insert order + plain 1-row insert",
            &e.tx_with_plain_insert,
        );
        println!(
            "    ratio b/a: mean {:.2}, p50 {:.2}",
            e.publish_ratio, e.publish_ratio_p50
        );
        println!(
            "    ratio b'/a (any second statement): mean {:.2}, p50 {:.2}",
            e.tx_with_plain_insert.mean_us / e.tx_alone.mean_us,
            e.tx_with_plain_insert.p50_us / e.tx_alone.p50_us
        );
        row(
            "(b_wal) tx: insert order + WAL-mode publish",
            &e.tx_with_wal_publish,
        );
        println!(
            "    ratio b_wal/a: mean {:.2}, p50 {:.2}",
            e.tx_with_wal_publish.mean_us / e.tx_alone.mean_us,
            e.wal_publish_ratio_p50
        );
        row(
            &format!(
                "(c) bulk UNNEST insert {} rows ({}x)",
                e.bulk_rows, e.bulk_repetitions
            ),
            &e.bulk_insert,
        );
        row(&format!("(d) publish_all {} rows", e.bulk_rows), &e.publish_all);
        println!(
            "    ratio d/c: mean {:.2}, p50 {:.2}",
            e.publish_all_ratio, e.publish_all_ratio_p50
        );
        row(
            &format!("(d_wal) WAL-mode publish_all {} rows", e.bulk_rows),
            &e.wal_publish_all,
        );
        println!(
            "    ratio d_wal/c: mean {:.2}, p50 {:.2}",
            e.wal_publish_all.mean_us / e.bulk_insert.mean_us,
            e.wal_publish_all_ratio_p50
        );
        if let Some(my) = &e.mysql {
            println!("\n== enqueue (MySQL / MariaDB, sequential, one connection) ==");
            println!("{:<44} {:>10} {:>10} {:>10}", "variant", "mean", "p50", "p99");
            row(
                &format!("(a) tx: insert order ({}x)", my.transactions),
                &my.tx_alone,
            );
            row("(b) tx: insert order + publish", &my.tx_with_publish);
            println!("    ratio b/a: p50 {:.2}", my.publish_ratio_p50);
            row(
                &format!(
                    "(c) multi-row insert {} rows ({}x)",
                    my.bulk_rows, my.bulk_repetitions
                ),
                &my.bulk_insert,
            );
            row(&format!("(d) publish_all {} rows", my.bulk_rows), &my.publish_all);
            println!("    ratio d/c: p50 {:.2}", my.publish_all_ratio_p50);
        }
    }
    if let Some(l) = &r.latency {
        println!(
            "\n== latency (relay on PostgreSQL, batch {}, poll {} ms, woken after each commit; {} writers) ==",
            l.relay_batch_size, l.relay_poll_interval_ms, l.writers
        );
        println!(
            "{:<38} {:>9} {:>10} {:>10} {:>10} {:>8}",
            "measure", "rate", "p50", "p95", "p99", "missing"
        );
        for x in &l.rates {
            let row = |name: &str, rate: f64, p: &common::Percentiles, missing: usize| {
                println!(
                    "{:<38} {:>9.0} {:>10} {:>10} {:>10} {:>8}",
                    name,
                    rate,
                    ms(p.p50_us),
                    ms(p.p95_us),
                    ms(p.p99_us),
                    missing
                )
            };
            println!("-- target {}/s", x.target_rate);
            row(
                "relay commit -> consumed",
                x.relay_achieved_rate,
                &x.relay_commit_to_consume,
                x.relay_missing,
            );
            row(
                "relay commit -> ack (its histogram)",
                x.relay_achieved_rate,
                &x.relay_commit_to_ack,
                0,
            );
            row(
                "exactly-once commit -> ack (histogram)",
                x.exactly_once_achieved_rate,
                &x.exactly_once_commit_to_ack,
                0,
            );
            row(
                "exactly-once commit -> consumed (rc)",
                x.exactly_once_achieved_rate,
                &x.exactly_once_commit_to_consume,
                x.exactly_once_missing,
            );
            row(
                "WAL relay commit -> consumed",
                x.wal_achieved_rate,
                &x.wal_commit_to_consume,
                x.wal_missing,
            );
            row(
                "WAL relay commit -> ack (histogram)",
                x.wal_achieved_rate,
                &x.wal_commit_to_ack,
                0,
            );
            row(
                "raw produce -> ack (callback)",
                x.raw_achieved_rate,
                &x.raw_produce_to_ack,
                0,
            );
            row(
                "raw produce -> consumed",
                x.raw_achieved_rate,
                &x.raw_produce_to_consume,
                x.raw_missing,
            );
            row(
                "raw produce -> ack, beside db commits",
                x.raw_beside_db_commit_rate,
                &x.raw_beside_db_produce_to_ack,
                0,
            );
        }
    }
}
