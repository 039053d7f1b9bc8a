//! `txoutbox relay`: the daemon.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};
use txoutbox_core::coordination::Coordination;
use txoutbox_core::{HealthCheck, Relay, Retention, Sink, Store, metrics as names};
use txoutbox_kafka::{ExactlyOnceSink, KafkaSink};

use crate::database::{Create, Database, mysql_outbox, pg_outbox, redact, sqlite_outbox};
use crate::error::CliError;
use crate::history::History;
use crate::http::{AppState, router};
use crate::settings::{RelaySettings, Target};

/// Runs the relay until SIGTERM or SIGINT.
pub async fn run(target: &Target, settings: RelaySettings) -> Result<(), CliError> {
    let prometheus = install_recorder()?;
    let create = if settings.migrate {
        Create::IfMissing
    } else {
        Create::Never
    };
    let database = Database::connect(target, create, 4).await?;
    if settings.migrate {
        database.migrate().await?;
    }
    info!(database = %redact(&target.database_url), table = %database.table(), "outbox database connected");
    let mut settings = settings;
    if let Some(console) = settings.console.as_mut() {
        console.database = Some(database.clone());
    }
    match settings.exactly_once.clone() {
        Some(exactly_once) => {
            let sink = ExactlyOnceSink::new(&settings.kafka, exactly_once)?;
            relay_with(&database, sink, settings, prometheus).await
        }
        None => {
            let sink = KafkaSink::new(&settings.kafka)?;
            relay_with(&database, sink, settings, prometheus).await
        }
    }
}

/// Builds the relay for the database and serves it.
async fn relay_with<K: Sink>(
    database: &Database,
    sink: K,
    settings: RelaySettings,
    prometheus: PrometheusHandle,
) -> Result<(), CliError> {
    match database {
        Database::Postgres(pool, table) => {
            let store = pg_outbox(table).store(pool.clone());
            let relay = Relay::coordinated(
                store.clone(),
                sink,
                settings.relay.clone(),
                settings.coordination.clone(),
            )?;
            serve(relay, store, settings, prometheus).await
        }
        Database::Sqlite(pool, table) => {
            if settings.coordination != Coordination::Single {
                return Err(CliError::usage(
                    "SQLite supports one relay per database file: run it with --coordination single (the default)",
                ));
            }
            let store = sqlite_outbox(table).store(pool.clone());
            let relay = Relay::new(store.clone(), sink, settings.relay.clone())?;
            serve(relay, store, settings, prometheus).await
        }
        Database::MySql(pool, table) => {
            if settings.coordination != Coordination::Single {
                return Err(CliError::usage(
                    "MySQL/MariaDB runs one active relay per table (others stand by on a server lock): use \
                     --coordination single (the default)",
                ));
            }
            let store = mysql_outbox(table).store(pool.clone());
            let relay = Relay::new(store.clone(), sink, settings.relay.clone())?;
            serve(relay, store, settings, prometheus).await
        }
    }
}

fn install_recorder() -> Result<PrometheusHandle, CliError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::DELIVERY_LATENCY.to_owned()),
            &[
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(names::BATCH_MESSAGES.to_owned()),
                &[
                    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
                ],
            )
        })
        .map_err(|e| CliError::runtime(format!("cannot set up metrics: {e}")))?
        .install_recorder()
        .map_err(|e| CliError::runtime(format!("cannot set up metrics: {e}")))?;
    names::describe();
    Ok(handle)
}

async fn serve<S, K>(
    relay: Relay<S, K>,
    store: S,
    settings: RelaySettings,
    prometheus: PrometheusHandle,
) -> Result<(), CliError>
where
    S: Store + Retention + Clone,
    K: Sink,
{
    let monitor = relay.monitor();
    let state = Arc::new(AppState {
        prometheus,
        health: RwLock::new(None),
        monitor: monitor.clone(),
        published: History::default(),
        ownership: relay.ownership(),
        console: crate::ui::Console::from_settings(&settings),
    });
    let mut background = tokio::task::JoinSet::new();

    // Listen first: a port that is taken is a configuration error to report before relaying.
    if let Some(address) = &settings.http_listen {
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
            CliError::usage(format!(
                "cannot listen on {address} for /metrics and /health: {e}. Choose another address with \
                 --http-listen (or `off`)"
            ))
        })?;
        info!(address = %listener.local_addr().map_or_else(|_| address.clone(), |a| a.to_string()), "serving /metrics, /health, /live, /status");
        let app = router(Arc::clone(&state));
        background.spawn(async move {
            if let Err(e) = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
            {
                error!(error = %e, "the HTTP server stopped");
            }
        });
    }

    let health = HealthCheck::new(store.clone(), settings.health).with_relay(monitor.clone());
    let health_state = Arc::clone(&state);
    let interval = settings.health_interval;
    background.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            let report = health.check().await;
            let mut latest = health_state.health.write().unwrap_or_else(|p| p.into_inner());
            let changed = latest.as_ref().is_none_or(|old| old.healthy != report.healthy);
            if changed && !report.healthy {
                warn!(reasons = ?report.reasons, "unhealthy");
            } else if changed {
                info!("healthy");
            }
            *latest = Some(report);
        }
    });

    let rate_state = Arc::clone(&state);
    background.spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            let now = ticker.tick().await;
            rate_state.published.record(now, rate_state.monitor.published());
            if let Some(console) = &rate_state.console {
                console.record_second(&rate_state, now);
            }
        }
    });

    if let Some(retention) = settings.retention {
        let store = store.clone();
        let ownership = state.ownership.clone();
        background.spawn(async move {
            let mut ticker = tokio::time::interval(retention.interval);
            loop {
                ticker.tick().await;
                // Of several coordinated relays, only the one leading (holding the table's lease,
                // or bucket 0) purges: one node, never several DELETEs competing.
                if ownership.as_ref().is_some_and(|o| !o.leads()) {
                    continue;
                }
                let before = Utc::now() - TimeDelta::from_std(retention.keep_for).unwrap_or(TimeDelta::MAX);
                match crate::commands::cleanup::purge(&store, before, retention.batch).await {
                    Ok(0) => {}
                    Ok(n) => info!(rows = n, "retention purged published rows"),
                    Err(e) => warn!(error = %e, "retention could not purge published rows; will try again"),
                }
            }
        });
    }

    let shutdown = async {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            error!("cannot listen for SIGTERM/SIGINT; stop the relay with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
    };
    let outcome = relay.run_until(shutdown).await;
    // Dropping the set aborts the HTTP server and the timers.
    drop(background);
    outcome.map_err(CliError::from)
}
