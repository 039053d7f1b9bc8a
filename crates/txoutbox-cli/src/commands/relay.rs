//! `txoutbox relay`: the daemon.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};
use txoutbox_axum::{AllowedHosts, Console, PrometheusHandle, RelayRoutes};
use txoutbox_core::coordination::{Coordination, Leases};
use txoutbox_core::{HealthCheck, HealthReport, Relay, Retention, Sink, Store, metrics as names};
use txoutbox_kafka::{ExactlyOnceSink, KafkaSink};
use txoutbox_nats::NatsSink;
use txoutbox_postgres::PgStore;
use txoutbox_postgres_wal::PgWalStore;
use txoutbox_rabbitmq::RabbitMqSink;
use txoutbox_redis::RedisSink;

use crate::database::{
    Create, Database, mysql_outbox, pg_outbox, redact, sqlite_outbox, wal_needs_postgres, wal_outbox,
};
use crate::error::CliError;
use crate::inbox_table::InboxTable;
use crate::settings::RelaySettings;
use crate::sink_settings::SinkSettings;
use crate::target::{Source, Target};

/// Runs the relay until SIGTERM or SIGINT.
pub(crate) async fn run(target: &Target, settings: RelaySettings) -> Result<(), CliError> {
    let prometheus = txoutbox_axum::install_prometheus()?;
    let create = if settings.migrate {
        Create::IfMissing
    } else {
        Create::Never
    };
    let database = Database::connect(target, create, 4).await?;
    if settings.migrate {
        match (&target.source, &database) {
            (Source::Table, _) => database.migrate().await?,
            (Source::Wal(config), Database::Postgres(pool, _)) => wal_outbox(config)?.migrate(pool).await?,
            (Source::Wal(_), _) => return Err(wal_needs_postgres()),
        }
    }
    info!(database = %redact(&target.database_url), table = %database.table(), "outbox database connected");
    let mut settings = settings;
    if let Some(console) = settings.console.as_mut() {
        console.database = Some(Database::connect_console(target).await?);
    }
    match (settings.sink.clone(), settings.exactly_once.clone()) {
        (SinkSettings::Nats(config), _) => {
            let sink = NatsSink::connect(&config).await?;
            relay_with(target, &database, sink, settings, prometheus).await
        }
        (SinkSettings::Rabbitmq(config), _) => {
            let sink = RabbitMqSink::new(&config)?;
            relay_with(target, &database, sink, settings, prometheus).await
        }
        (SinkSettings::Redis(config), _) => {
            let sink = RedisSink::new(&config)?;
            relay_with(target, &database, sink, settings, prometheus).await
        }
        (SinkSettings::Kafka, Some(exactly_once)) => {
            let sink = ExactlyOnceSink::new(&settings.kafka, exactly_once)?;
            relay_with(target, &database, sink, settings, prometheus).await
        }
        (SinkSettings::Kafka, None) => {
            let sink = KafkaSink::new(&settings.kafka)?;
            relay_with(target, &database, sink, settings, prometheus).await
        }
    }
}

/// Builds the relay for the database and serves it.
async fn relay_with<K: Sink>(
    target: &Target,
    database: &Database,
    sink: K,
    settings: RelaySettings,
    prometheus: PrometheusHandle,
) -> Result<(), CliError> {
    wait_for_brokers(&sink, &settings).await?;
    if let Source::Wal(config) = &target.source {
        let Database::Postgres(pool, _) = database else {
            return Err(wal_needs_postgres());
        };
        // The replication connection uses the same URL, its libpq TLS parameters included.
        let store = wal_outbox(config)?.store(pool.clone(), &target.database_url)?;
        info!(slot = %config.slot, prefix = %config.prefix, "relaying from the write-ahead log (WAL mode)");
        if settings.relay.allowed_topics.is_none() {
            tracing::warn!(
                "WAL mode without --allowed-topics: any role that can connect to the database can call \
                 pg_logical_emit_message and have this relay publish any record to any topic its Kafka \
                 principal may write; list the topics (docs/wal-mode.md, \"Who can publish\")"
            );
        }
        let relay = Relay::new(store.clone(), sink, settings.relay.clone())?;
        return serve(
            relay,
            store.clone(),
            None::<PgStore>,
            Some(store),
            settings,
            prometheus,
        )
        .await;
    }
    match database {
        Database::Postgres(pool, table) => {
            serve_coordinated(pg_outbox(table).store(pool.clone()), sink, settings, prometheus).await
        }
        Database::Sqlite(pool, table) => {
            if settings.coordination != Coordination::Single {
                return Err(CliError::usage(
                    "SQLite supports one relay per database file: run it with --coordination single (the default)",
                ));
            }
            let store = sqlite_outbox(table).store(pool.clone());
            let relay = Relay::new(store.clone(), sink, settings.relay.clone())?;
            serve(relay, store.clone(), Some(store), None, settings, prometheus).await
        }
        Database::MySql(pool, table) => {
            serve_coordinated(
                mysql_outbox(table).store(pool.clone()),
                sink,
                settings,
                prometheus,
            )
            .await
        }
    }
}

/// Serves a relay over a table store that coordinates (any `--coordination` mode), with
/// retention over the same store.
async fn serve_coordinated<S, K>(
    store: S,
    sink: K,
    settings: RelaySettings,
    prometheus: PrometheusHandle,
) -> Result<(), CliError>
where
    S: Store + Leases + Retention,
    K: Sink,
{
    let relay = Relay::coordinated(
        store.clone(),
        sink,
        settings.relay.clone(),
        settings.coordination.clone(),
    )?;
    serve(relay, store.clone(), Some(store), None, settings, prometheus).await
}

/// Waits up to `--broker-wait` for the Kafka brokers to answer a metadata request; an error
/// that says what to check when they never do. Zero starts without asking.
async fn wait_for_brokers<K: Sink>(sink: &K, settings: &RelaySettings) -> Result<(), CliError> {
    if settings.broker_wait.is_zero() {
        return Ok(());
    }
    let started = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        let error = match sink.probe().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if started.elapsed() >= settings.broker_wait {
            let wait = settings.broker_wait.as_secs_f64().round();
            return Err(CliError::runtime(match &settings.sink {
                SinkSettings::Kafka => format!(
                    "cannot reach the Kafka brokers at {} within {wait} s: {error}. Check --kafka-bootstrap \
                     (TXOUTBOX_KAFKA_BOOTSTRAP), that the brokers run and are reachable from here, and the \
                     security settings (security.protocol, ssl.*, sasl.*); --broker-wait 0s starts without \
                     waiting for them",
                    settings.kafka.get("bootstrap.servers").unwrap_or("(not set)"),
                ),
                SinkSettings::Nats(_) => format!(
                    "cannot reach NATS JetStream at {} within {wait} s: {error}. Check --nats-url \
                     (TXOUTBOX_NATS_URL), that the server runs with JetStream enabled and is reachable \
                     from here, and the credentials and TLS settings (--nats-*); --broker-wait 0s starts \
                     without waiting for it",
                    settings.sink.destination().unwrap_or_default(),
                ),
                SinkSettings::Rabbitmq(_) => format!(
                    "cannot use RabbitMQ at {} within {wait} s: {error}. Check --rabbitmq-url \
                     (TXOUTBOX_RABBITMQ_URL), that the broker runs and is reachable from here, the \
                     user's permissions on the virtual host, and --rabbitmq-exchange; --broker-wait 0s \
                     starts without waiting for it",
                    settings.sink.destination().unwrap_or_default(),
                ),
                SinkSettings::Redis(_) => format!(
                    "cannot reach Redis at {} within {wait} s: {error}. Check --redis-url \
                     (TXOUTBOX_REDIS_URL), that the server runs and is reachable from here, and the \
                     password; --broker-wait 0s starts without waiting for it",
                    settings.sink.destination().unwrap_or_default(),
                ),
            }));
        }
        if !warned {
            warn!(error = %error, sink = settings.sink.name(), wait = %txoutbox_core::HumanDuration(settings.broker_wait), "the brokers do not answer yet; waiting for them");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What `/status` shows of the sink: its kind and where it publishes (no credentials).
fn sink_status(settings: &RelaySettings) -> serde_json::Value {
    match &settings.sink {
        SinkSettings::Kafka => serde_json::json!({
            "kind": "kafka",
            "bootstrap_servers": settings.kafka.get("bootstrap.servers"),
            "exactly_once": settings.exactly_once.is_some(),
        }),
        SinkSettings::Nats(config) => serde_json::json!({
            "kind": "nats",
            "servers": config.servers_redacted(),
            "subject": config.subject_template().as_str(),
        }),
        SinkSettings::Rabbitmq(config) => serde_json::json!({
            "kind": "rabbitmq",
            "url": config.uri_redacted(),
            "exchange": config.exchange_name(),
            "routing_key": config.routing_key_template().as_str(),
        }),
        SinkSettings::Redis(config) => serde_json::json!({
            "kind": "redis",
            "url": config.url_redacted(),
            "stream_key": config.stream_key_template().as_str(),
        }),
    }
}

/// Serves `relay` until a signal: HTTP endpoints, health checks, the publish rate, retention
/// over `purger` (table sources) and, in WAL mode, the slot's health and gauges over `wal`.
async fn serve<S, K, R>(
    relay: Relay<S, K>,
    store: S,
    purger: Option<R>,
    wal: Option<PgWalStore>,
    settings: RelaySettings,
    prometheus: PrometheusHandle,
) -> Result<(), CliError>
where
    S: Store + Clone,
    K: Sink,
    R: Retention + 'static,
{
    let monitor = relay.monitor();
    let ownership = relay.ownership();
    let mut routes = RelayRoutes::new(monitor.clone())
        .prometheus(prometheus)
        .allowed_hosts(AllowedHosts::new(
            settings.http_listen.as_deref(),
            &settings.http_allowed_hosts,
        ));
    if let Some(ownership) = ownership.clone() {
        routes = routes.ownership(ownership, &settings.coordination);
    }
    if let Some(console) = console(&settings)? {
        routes = routes.console(console);
    }
    let reports = routes.reports();
    reports.set_status("wal_slot", serde_json::Value::Null);
    reports.set_status("sink", sink_status(&settings));
    let mut background = tokio::task::JoinSet::new();
    // WAL mode: the slot lost or the stream stopped for good stops the daemon (exit code 2).
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<txoutbox_core::Error>(2);
    if let Some(store) = wal.clone() {
        let fatal = fatal_tx.clone();
        background.spawn(async move {
            let _ = fatal.send(store.stream_stopped().await).await;
        });
    }

    // SIGTERM/SIGINT are taken over before /live answers: a supervisor that stops the daemon as
    // soon as it is up gets a clean shutdown, not the default action (death by the signal).
    let signals = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));

    // Listen first: a port that is taken is a configuration error to report before relaying.
    if let Some(address) = &settings.http_listen {
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
            CliError::usage(format!(
                "cannot listen on {address} for /metrics and /health: {e}. Choose another address with \
                 --http-listen (or `off`)"
            ))
        })?;
        info!(address = %listener.local_addr().map_or_else(|_| address.clone(), |a| a.to_string()), "serving /metrics, /health, /live, /status");
        let app = routes.into_router()?;
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

    // The daemon's own health timer: in WAL mode its report includes the replication slot.
    let health = HealthCheck::new(store.clone(), settings.health).with_relay(monitor.clone());
    let interval = settings.health_interval;
    let min_safe_wal_size = settings.min_safe_wal_size;
    let wal_health = wal.clone();
    let slot_lost = fatal_tx;
    background.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            let mut report = health.check().await;
            if let Some(store) = &wal_health {
                let (slot, lost) = check_slot(store, &mut report, min_safe_wal_size).await;
                reports.set_status("wal_slot", slot.unwrap_or_default());
                if lost {
                    let _ = slot_lost.try_send(store.slot_invalidated());
                }
            }
            reports.publish(report);
        }
    });

    if let (Some(retention), Some(store)) = (settings.retention, purger) {
        background.spawn(async move {
            let mut ticker = tokio::time::interval(retention.interval);
            loop {
                ticker.tick().await;
                // Of several coordinated relays, only the one leading (holding the table's lease,
                // or bucket 0) purges: one node, never several DELETEs competing.
                if ownership.as_ref().is_some_and(|o| !o.leads()) {
                    continue;
                }
                let before = txoutbox_core::ago(retention.keep_for);
                match crate::commands::cleanup::purge(&store, before, retention.batch).await {
                    Ok(0) => {}
                    Ok(n) => info!(rows = n, "retention purged published rows"),
                    Err(e) => warn!(error = %e, "retention could not purge published rows; will try again"),
                }
            }
        });
    }

    let fatal = std::sync::OnceLock::new();
    let shutdown = async {
        let signals = async {
            let (Ok(mut term), Ok(mut int)) = signals else {
                error!("cannot listen for SIGTERM/SIGINT; stop the relay with SIGKILL");
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
            }
        };
        tokio::select! {
            () = signals => {}
            Some(error) = fatal_rx.recv() => {
                // Never skip silently: stop (finishing what is in flight) and say why.
                error!(%error, "the WAL relay cannot go on: shutting down");
                let _ = fatal.set(error);
            }
        }
    };
    let outcome = relay.run_until(shutdown).await;
    // Dropping the set aborts the HTTP server and the timers (the routes' own end with them).
    drop(background);
    if let Some(error) = fatal.into_inner() {
        return Err(CliError::from(error));
    }
    if let Some(store) = wal
        && outcome.is_ok()
    {
        // Let PostgreSQL record the last confirmed position, so a successor replays less.
        match store.flush_confirmation(Duration::from_secs(5)).await {
            Ok(true) => info!("the replication slot's position is recorded"),
            Ok(false) => warn!(
                "the replication slot's last position was not recorded within 5s; a successor resends it"
            ),
            Err(e) => warn!(error = %e, "could not check the replication slot's recorded position"),
        }
    }
    outcome.map_err(CliError::from)
}

/// The web console the settings ask for, if any (once its database is connected).
fn console(settings: &RelaySettings) -> Result<Option<Console>, CliError> {
    let Some(console) = settings.console.as_ref() else {
        return Ok(None);
    };
    let Some(database) = console.database.clone() else {
        return Ok(None);
    };
    let address = settings.http_listen.as_deref().unwrap_or_default();
    let loopback = address
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
        || address.starts_with("localhost:");
    info!(
        path = "/ui",
        read_only = console.token.is_none(),
        show_payloads = console.show_payloads,
        "serving the web console"
    );
    if !loopback {
        warn!(
            %address,
            "the web console is served on a non-loopback address: anyone who reaches it can read the \
             backlog and the dead letters' keys and errors; put it behind an authenticating proxy"
        );
    }
    let mut served = Console::from_store(Arc::new(database.clone())).show_payloads(console.show_payloads);
    if let Some(table) = &console.inbox_table {
        info!(path = "/ui/inbox", table = %table, "the console shows the inbox table's parked records");
        served = served.with_inbox(InboxTable::unchecked(database.with_table(table.clone())));
    }
    if let Some(token) = &console.token {
        served = served.with_token(token.clone())?;
    }
    Ok(Some(served))
}

/// WAL mode: reads the slot, sets its gauges and fails `report` on an invalidated slot or one
/// close to invalidation; returns the slot's view for `/status` and whether it is invalidated.
async fn check_slot(
    store: &PgWalStore,
    report: &mut HealthReport,
    min_safe_wal_size: Option<u64>,
) -> (Option<serde_json::Value>, bool) {
    let mut lost = false;
    let slot = match store.slot_status().await {
        Ok(status) => {
            // Commit time of the oldest message read from the slot and not yet confirmed.
            let lag_seconds = report
                .backlog
                .as_ref()
                .and_then(|b| b.oldest_pending)
                .map_or(0.0, |t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1e3);
            names::record_wal_slot(
                &status.slot,
                status.lag_bytes,
                lag_seconds,
                status.safe_wal_size,
                status.is_lost(),
            );
            lost = status.is_lost();
            let problems = status.problems(min_safe_wal_size);
            report.reasons.extend(problems.iter().cloned());
            Some(crate::commands::status::slot_json(
                &status,
                Some(lag_seconds),
                &problems,
            ))
        }
        Err(e) => {
            report
                .reasons
                .push(format!("cannot read the replication slot: {e}"));
            None
        }
    };
    report.healthy = report.reasons.is_empty();
    (slot, lost)
}
