//! `txoutbox status`: the backlog per topic, dead letters, and a running relay's rate.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use txoutbox_core::{Statistics, TopicStats};

use crate::cli::StatusArgs;
use crate::database::{Create, Database, redact, wal_outbox};
use crate::error::CliError;
use crate::target::{Source, Target};
use crate::with_store;

/// What `status` shows; also its JSON form.
#[derive(Debug, Serialize)]
struct Status {
    table: String,
    database: String,
    pending: u64,
    oldest_pending_age_seconds: Option<f64>,
    dead: u64,
    published_kept: u64,
    topics: Vec<TopicStats>,
    /// What the relay at the configured HTTP address says about itself, if one answers there.
    relay: Option<serde_json::Value>,
    relay_url: String,
    /// WAL mode: the replication slot (the table then holds dead letters only).
    #[serde(skip_serializing_if = "Option::is_none")]
    wal_slot: Option<serde_json::Value>,
}

/// The JSON view of a replication slot, for `status` and the daemon's `/status`.
pub(crate) fn slot_json(
    status: &txoutbox_postgres_wal::SlotStatus,
    lag_seconds: Option<f64>,
    problems: &[String],
) -> serde_json::Value {
    serde_json::json!({
        "slot": status.slot,
        "active": status.active,
        "confirmed_lsn": status.confirmed_lsn,
        "lag_bytes": status.lag_bytes,
        "lag_seconds": lag_seconds,
        "wal_status": status.wal_status,
        "safe_wal_size": status.safe_wal_size,
        "max_slot_wal_keep_size": status.max_slot_wal_keep_size,
        "buffered": status.buffered,
        "problems": problems,
    })
}

/// Shows the status once, or redraws it every `--watch` interval until interrupted.
pub(crate) async fn run(target: &Target, args: &StatusArgs, relay_url: String) -> Result<(), CliError> {
    let database = Database::connect(target, Create::Never, 1).await?;
    let relay_url = normalize(&relay_url);
    let Some(interval) = args.watch else {
        return show(&collect(&database, target, &relay_url).await?, args.json, false);
    };
    // One listener for the whole watch, polled while the status is read as well as between
    // redraws: an interrupt that arrives during a redraw is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let redraw = async {
            show(&collect(&database, target, &relay_url).await?, args.json, true)?;
            tokio::time::sleep(interval).await;
            Ok::<(), CliError>(())
        };
        tokio::select! {
            listening = &mut interrupted => {
                return listening
                    .map_err(|e| CliError::runtime(format!("cannot listen for Ctrl-C: {e}")));
            }
            redrawn = redraw => redrawn?,
        }
    }
}

/// Prints one status: a JSON line, or the text for people (`clear` first clears the screen).
fn show(status: &Status, json: bool, clear: bool) -> Result<(), CliError> {
    if json {
        println!(
            "{}",
            serde_json::to_string(status).map_err(|e| CliError::runtime(e.to_string()))?
        );
    } else {
        if clear {
            // Clear the screen and go home, then redraw.
            print!("\x1b[2J\x1b[H");
        }
        print_human(status, Utc::now());
    }
    Ok(())
}

async fn collect(database: &Database, target: &Target, relay_url: &str) -> Result<Status, CliError> {
    let topics = with_store!(database, store => store.topic_stats().await?);
    let wal_slot = match (&target.source, database) {
        (Source::Wal(config), Database::Postgres(pool, _)) => {
            let status = wal_outbox(config)?.slot_status(pool).await?;
            let problems = status.problems(None);
            Some(slot_json(&status, None, &problems))
        }
        _ => None,
    };
    let now = Utc::now();
    let oldest: Option<DateTime<Utc>> = topics.iter().filter_map(|t| t.oldest_pending).min();
    Ok(Status {
        table: database.table().to_string(),
        database: redact(&target.database_url),
        pending: topics.iter().map(|t| t.pending).sum(),
        oldest_pending_age_seconds: oldest.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1e3),
        dead: topics.iter().map(|t| t.dead).sum(),
        published_kept: topics.iter().map(|t| t.published).sum(),
        relay: relay_status(relay_url).await,
        relay_url: relay_url.to_owned(),
        topics,
        wal_slot,
    })
}

fn normalize(url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        url.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", url.trim_end_matches('/'))
    }
}

/// The relay's own `/status`, or `None` when no relay answers there.
async fn relay_status(base: &str) -> Option<serde_json::Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .ok()?;
    let response = client.get(format!("{base}/status")).send().await.ok()?;
    response.json().await.ok()
}

fn age(seconds: f64) -> String {
    humantime::format_duration(Duration::from_secs(seconds.round() as u64)).to_string()
}

fn print_human(status: &Status, now: DateTime<Utc>) {
    println!("outbox {} on {}", status.table, status.database);
    println!();
    if let Some(slot) = &status.wal_slot {
        let mb = |v: &serde_json::Value| {
            v.as_f64().map_or_else(
                || "unlimited".to_owned(),
                |b| format!("{:.1} MB", b / 1_048_576.0),
            )
        };
        println!(
            "WAL mode: replication slot {} ({}), {} behind, wal_status {}, {} of WAL left before invalidation",
            slot["slot"].as_str().unwrap_or_default(),
            if slot["active"].as_bool().unwrap_or(false) {
                "streamed by a relay"
            } else {
                "no relay streams it"
            },
            mb(&slot["lag_bytes"]),
            slot["wal_status"].as_str().unwrap_or_default(),
            mb(&slot["safe_wal_size"]),
        );
        for problem in slot["problems"].as_array().into_iter().flatten() {
            println!("  - {}", problem.as_str().unwrap_or_default());
        }
        println!("the table below holds dead letters only (pending messages are in the WAL)");
        println!();
    }
    println!(
        "{:<32}  {:>10}  {:>14}  {:>8}  {:>10}",
        "TOPIC", "PENDING", "OLDEST", "DEAD", "PUBLISHED"
    );
    for t in &status.topics {
        let oldest = t.oldest_pending.map_or_else(
            || "-".to_owned(),
            |at| age((now - at).num_milliseconds().max(0) as f64 / 1e3),
        );
        println!(
            "{:<32}  {:>10}  {:>14}  {:>8}  {:>10}",
            t.topic, t.pending, oldest, t.dead, t.published
        );
    }
    println!(
        "{:<32}  {:>10}  {:>14}  {:>8}  {:>10}",
        "total",
        status.pending,
        status
            .oldest_pending_age_seconds
            .map_or_else(|| "-".to_owned(), age),
        status.dead,
        status.published_kept
    );
    println!();
    match &status.relay {
        None => println!("relay: none answers at {}", status.relay_url),
        Some(relay) => {
            let rate = relay
                .get("publish_rate_per_second")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            let healthy = relay
                .pointer("/health/healthy")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            println!(
                "relay at {}: publishing {rate:.0} msg/s over the last minute, {} published since it started; {}",
                status.relay_url,
                relay
                    .get("published_total")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
                if healthy { "healthy" } else { "UNHEALTHY" }
            );
            if let Some(reasons) = relay
                .pointer("/health/reasons")
                .and_then(serde_json::Value::as_array)
            {
                for reason in reasons {
                    println!("  - {}", reason.as_str().unwrap_or_default());
                }
            }
        }
    }
}
