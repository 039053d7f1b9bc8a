//! Compares Rust logical-replication clients on what txoutbox's WAL mode does: stream a pgoutput
//! slot (`messages 'true'`) and decode Begin / transactional logical Message / Commit, confirming
//! the commit end LSN after every transaction.
//!
//! `wal-client-compare [--messages N] [--tx-size M] [--content-bytes B] [--runs R] [--clients a,b]`
//! reads `TXOUTBOX_POSTGRES_URL`. For every run and client (alternating), the parent process
//! creates a fresh slot (pgoutput) and publication, writes N messages with
//! `pg_logical_emit_message(true, 'cmp', ...)` in transactions of M (one `unnest` statement each),
//! then starts itself as a child (`stream <client> <slot> <publication> <N>`) that streams the slot
//! until all N messages were decoded, so each child's VmHWM is that client's alone. The parent
//! drops the slot and publication afterwards, also when the child failed.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const PREFIX: &str = "cmp";
const OBJECT_PREFIX: &str = "walcmp_";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("stream") {
        return child(&args[1..]).await;
    }
    parent(&args).await
}

fn url() -> Result<String> {
    std::env::var("TXOUTBOX_POSTGRES_URL").context("set TXOUTBOX_POSTGRES_URL")
}

// ---------------------------------------------------------------------------------------------
// Parent: set up, spawn, clean up, report.

struct Opts {
    messages: usize,
    tx_size: usize,
    content_bytes: usize,
    runs: usize,
    clients: Vec<String>,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        messages: 200_000,
        tx_size: 1_000,
        content_bytes: 100,
        runs: 3,
        clients: vec![
            "pgwire-replication".into(),
            "pg_walstream".into(),
            "pg_walstream-rustls".into(),
        ],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().cloned().context("missing value");
        match a.as_str() {
            "--messages" => o.messages = v()?.parse()?,
            "--tx-size" => o.tx_size = v()?.parse()?,
            "--content-bytes" => o.content_bytes = v()?.parse()?,
            "--runs" => o.runs = v()?.parse()?,
            "--clients" => o.clients = v()?.split(',').map(String::from).collect(),
            other => bail!("unknown argument {other}"),
        }
    }
    if o.messages % o.tx_size != 0 {
        bail!("--messages must be a multiple of --tx-size");
    }
    Ok(o)
}

async fn sql() -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&url()?, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("connection error: {e}");
        }
    });
    Ok(client)
}

async fn drop_objects(db: &tokio_postgres::Client, slot: Option<&str>) -> Result<()> {
    // Only inactive slots can be dropped; wait a little for a child's walsender to go away.
    for _ in 0..100 {
        let rows = db
            .query(
                "SELECT slot_name, active FROM pg_replication_slots WHERE slot_name LIKE $1",
                &[&slot
                    .map(String::from)
                    .unwrap_or_else(|| format!("{OBJECT_PREFIX}%"))],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        let mut busy = false;
        for r in rows {
            let (name, active): (String, bool) = (r.get(0), r.get(1));
            if active {
                busy = true;
            } else {
                db.execute("SELECT pg_drop_replication_slot($1)", &[&name])
                    .await?;
            }
        }
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pubs = db
        .query(
            "SELECT pubname FROM pg_publication WHERE pubname LIKE $1",
            &[&slot
                .map(String::from)
                .unwrap_or_else(|| format!("{OBJECT_PREFIX}%"))],
        )
        .await?;
    for p in pubs {
        let name: String = p.get(0);
        db.batch_execute(&format!("DROP PUBLICATION IF EXISTS \"{name}\""))
            .await?;
    }
    Ok(())
}

struct RunResult {
    client: String,
    run: usize,
    ok: bool,
    line: String,
}

async fn parent(args: &[String]) -> Result<()> {
    let o = parse_opts(args)?;
    let db = sql().await?;
    drop_objects(&db, None).await?; // leftovers of an interrupted earlier run
    let version: String = db.query_one("SHOW server_version", &[]).await?.get(0);
    println!(
        "PostgreSQL {version}; {} messages of {} bytes in transactions of {}, {} runs",
        o.messages, o.content_bytes, o.tx_size, o.runs
    );
    let mut results = Vec::new();
    let outcome = async {
        for run in 1..=o.runs {
            for client in &o.clients {
                let r = one_run(&db, &o, client, run).await;
                let r = match r {
                    Ok(r) => r,
                    Err(e) => RunResult {
                        client: client.clone(),
                        run,
                        ok: false,
                        line: format!("error: {e:#}"),
                    },
                };
                println!("run {} {:<22} {}", r.run, r.client, r.line);
                results.push(r);
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // Always: slots retain WAL.
    drop_objects(&db, None).await?;
    outcome?;
    if results.iter().any(|r| !r.ok) {
        bail!("some runs failed");
    }
    Ok(())
}

async fn one_run(db: &tokio_postgres::Client, o: &Opts, client: &str, run: usize) -> Result<RunResult> {
    let name = format!("{OBJECT_PREFIX}{}_{run}", client.replace('-', "_").to_lowercase());
    let res = async {
        db.batch_execute(&format!("CREATE PUBLICATION \"{name}\""))
            .await?;
        db.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&name],
        )
        .await?;
        // Write the backlog: one statement (one transaction) per tx_size messages.
        let write_started = Instant::now();
        let stmt = db
            .prepare(&format!(
                "SELECT count(pg_logical_emit_message(true, '{PREFIX}', e)) FROM unnest($1::bytea[]) AS u(e)"
            ))
            .await?;
        let mut seq = 0usize;
        for _ in 0..o.messages / o.tx_size {
            let batch: Vec<Vec<u8>> = (0..o.tx_size)
                .map(|_| {
                    seq += 1;
                    let mut c = format!("{seq:012}").into_bytes();
                    c.resize(o.content_bytes, b'x');
                    c
                })
                .collect();
            db.query_one(&stmt, &[&batch]).await?;
        }
        let write_secs = write_started.elapsed().as_secs_f64();
        let before: String = db
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await?
            .get(0);
        let exe = std::env::current_exe()?;
        let child = tokio::process::Command::new(exe)
            .args(["stream", client, &name, &name, &o.messages.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
            .await
            .context("child timed out after 600 s")??;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            bail!("child failed ({}): {stdout}", out.status);
        }
        // Give the last status update a moment, then read where the slot was confirmed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after: String = db
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await?
            .get(0);
        Ok(format!(
            "{stdout} write_s={write_secs:.2} confirmed {before} -> {after}"
        ))
    }
    .await;
    let dropped = drop_objects(db, Some(&name)).await;
    let line = res?;
    dropped?;
    Ok(RunResult {
        client: client.to_string(),
        run,
        ok: true,
        line,
    })
}

// ---------------------------------------------------------------------------------------------
// Child: stream one slot with one client.

fn proc_status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of this process (all threads).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ')' : state(0) ... utime is field 14 overall => index 11 here, stime 12.
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// What each client reports; printed as one line for the parent.
#[derive(Default)]
struct Tally {
    messages: usize,
    transactions: usize,
    content_bytes: usize,
    last_commit_end: u64,
    last_commit_time: String,
    first_event: Option<Instant>,
    /// When the Commit of the last transaction was decoded (the end of the measured time).
    done: Option<Instant>,
}

async fn child(args: &[String]) -> Result<()> {
    let [client, slot, publication, n] = args else {
        bail!("usage: stream <client> <slot> <publication> <messages>")
    };
    let n: usize = n.parse()?;
    let cpu0 = cpu_secs();
    let started = Instant::now();
    let tally = match client.as_str() {
        "pgwire-replication" => pgwire(slot, publication, n).await?,
        "pg_walstream" => walstream_libpq(slot, publication, n).await?,
        "pg_walstream-rustls" => walstream_rustls(slot, publication, n).await?,
        other => bail!("unknown client {other}"),
    };
    let secs = tally
        .done
        .context("no commit")?
        .duration_since(started)
        .as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    if tally.messages != n {
        bail!("decoded {} messages, expected {n}", tally.messages);
    }
    let first = tally
        .first_event
        .map(|t| t.duration_since(started).as_secs_f64())
        .unwrap_or(0.0);
    println!(
        "msgs={} txs={} bytes={} secs={:.3} msgs_per_s={:.0} first_event_s={:.3} cpu_s={:.2} hwm_kib={} last_end={:X}/{:X} last_commit={}",
        tally.messages,
        tally.transactions,
        tally.content_bytes,
        secs,
        n as f64 / secs,
        first,
        cpu,
        proc_status("VmHWM:"),
        tally.last_commit_end >> 32,
        tally.last_commit_end & 0xffff_ffff,
        tally.last_commit_time,
    );
    Ok(())
}

struct Conn {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
}

/// Minimal URL parsing (postgres://user:password@host:port/db), enough for the benchmark.
fn parse_url(url: &str) -> Result<Conn> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .context("URL must start with postgres://")?;
    let rest = rest.split('?').next().unwrap_or(rest);
    let (auth, hostpart) = rest.rsplit_once('@').context("URL needs user@host")?;
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, database) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse()?),
        None => (hostport, 5432),
    };
    Ok(Conn {
        host: host.into(),
        port,
        user: user.into(),
        password: password.into(),
        database: if database.is_empty() {
            user.into()
        } else {
            database.into()
        },
    })
}

async fn pgwire(slot: &str, publication: &str, n: usize) -> Result<Tally> {
    use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
    let c = parse_url(&url()?)?;
    let cfg = ReplicationConfig::new(c.host, c.user, c.password, c.database, slot, publication)
        .with_port(c.port)
        .with_tls(TlsConfig::disabled())
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1))
        .with_application_name("walcmp-pgwire");
    let mut client = ReplicationClient::connect(cfg).await?;
    let mut t = Tally::default();
    let mut in_tx = false;
    while t.messages < n || in_tx {
        let Some(event) = client.recv().await? else {
            bail!("stream ended after {} messages", t.messages)
        };
        t.first_event.get_or_insert_with(Instant::now);
        match event {
            ReplicationEvent::Begin {
                commit_time_micros, ..
            } => {
                in_tx = true;
                t.last_commit_time = commit_time_micros.to_string();
            }
            ReplicationEvent::Message {
                transactional,
                prefix,
                content,
                ..
            } => {
                if in_tx && transactional && prefix == PREFIX {
                    t.messages += 1;
                    t.content_bytes += content.len();
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                in_tx = false;
                t.transactions += 1;
                t.last_commit_end = end_lsn.0;
                client.update_applied_lsn(end_lsn);
                t.done = Some(Instant::now());
            }
            _ => {}
        }
    }
    // Not measured: let the final confirmation go out (status_interval 1 s), as the relay would.
    let metrics = client.metrics();
    for _ in 0..60 {
        if metrics.last_applied_lsn().0 >= t.last_commit_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.shutdown().await.ok();
    Ok(t)
}

macro_rules! walstream_impl {
    ($name:ident, $krate:ident) => {
        async fn $name(slot: &str, publication: &str, n: usize) -> Result<Tally> {
            use $krate::{CancellationToken, EventType, LogicalReplicationStream, ReplicationStreamConfig};
            let mut conn = url()?;
            conn.push_str(if conn.contains('?') { "&" } else { "?" });
            conn.push_str("replication=database&application_name=walcmp-walstream&sslmode=disable");
            let cfg = ReplicationStreamConfig::builder(slot, publication)
                .with_protocol_version(1)
                .with_messages(true)
                .with_feedback_interval(Duration::from_secs(1));
            let mut stream = LogicalReplicationStream::new(&conn, cfg).await?;
            stream.start(None).await?;
            let cancel = CancellationToken::new();
            let mut t = Tally::default();
            let mut in_tx = false;
            while t.messages < n || in_tx {
                let event = stream.next_event(&cancel).await?;
                t.first_event.get_or_insert_with(Instant::now);
                match event.event_type {
                    EventType::Begin {
                        commit_timestamp, ..
                    } => {
                        in_tx = true;
                        t.last_commit_time = commit_timestamp.to_rfc3339();
                    }
                    EventType::Message {
                        flags,
                        prefix,
                        content,
                        ..
                    } => {
                        if in_tx && flags & 1 == 1 && &*prefix == PREFIX {
                            t.messages += 1;
                            t.content_bytes += content.len();
                        }
                    }
                    EventType::Commit { end_lsn, .. } => {
                        in_tx = false;
                        t.transactions += 1;
                        t.last_commit_end = end_lsn.value();
                        stream.shared_lsn_feedback.update_flushed_lsn(end_lsn);
                        stream.shared_lsn_feedback.update_applied_lsn(end_lsn);
                        t.done = Some(Instant::now());
                    }
                    _ => {}
                }
            }
            // Not measured: send the final confirmation now.
            stream.send_feedback().await.ok();
            stream.stop().await.ok();
            Ok(t)
        }
    };
}

walstream_impl!(walstream_libpq, pg_walstream);
walstream_impl!(walstream_rustls, pg_walstream_rustls);
