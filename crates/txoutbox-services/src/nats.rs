//! NATS: our own `nats-server` with JetStream on loopback, built with `go install` on first use
//! (Go module proxy), its store in `<services dir>/nats`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::loopback_daemon::{LoopbackDaemon, Started, service_dir};
use crate::process::{refuse_taken_port, spawn};
use crate::{Settings, say};

/// The nats-server version `go install` builds.
pub const NATS_SERVER_VERSION: &str = "v2.15.3";

/// Our server's URL on `port`.
pub fn url(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

/// Our server: `<services dir>/nats`, JetStream's store in `jetstream` below it.
pub fn daemon(settings: &Settings) -> LoopbackDaemon {
    let dir = service_dir(settings, "nats");
    LoopbackDaemon {
        name: "nats",
        marker: store_arg(&dir),
        dir,
        port: settings.nats_port,
        ready_line: "Server is ready",
    }
}

/// The argument that names our server's store (and marks its process).
fn store_arg(dir: &std::path::Path) -> String {
    format!("--store_dir={}", dir.join("jetstream").display())
}

/// The `nats-server` binary in `~/.cache/txoutbox/nats-server/bin`, built from its Go module on
/// first use (~1 min; needs Go 1.24+).
pub fn server_binary(settings: &Settings) -> Result<PathBuf> {
    crate::tools::go_install(
        settings,
        "nats-server",
        "nats-server",
        &format!("github.com/nats-io/nats-server/v2@{NATS_SERVER_VERSION}"),
        NATS_SERVER_VERSION,
        "1.24",
    )
}

/// Our server's URL while it runs.
pub fn local_url(settings: &Settings) -> Option<String> {
    let d = daemon(settings);
    d.pid()?;
    Some(url(d.running_port()))
}

/// Phase 1 of `up`: starts our server (building it on first use); does not wait.
pub fn launch(settings: &Settings) -> Result<Option<Started>> {
    let d = daemon(settings);
    if d.already_running() {
        return Ok(None);
    }
    refuse_taken_port("nats", d.port, "TXOUTBOX_NATS_PORT")?;
    let server = server_binary(settings)?;
    // After the first build: it is not the server's start.
    let t0 = Instant::now();
    d.write_port()?;
    // Stock settings but for the address, port and store: JetStream's defaults (limits, a
    // two-minute duplicate window per stream) are what the tests run against.
    let args = vec![
        "--addr=127.0.0.1".to_owned(),
        format!("--port={}", d.port),
        "--jetstream".to_owned(),
        d.marker.clone(),
        "--server_name=txoutbox-nats".to_owned(),
    ];
    let (child, offset) = spawn(
        "nats-server",
        &server,
        &args,
        &d.dir,
        &d.log(),
        Some(&d.pid_file()),
    )?;
    say!("nats: starting on 127.0.0.1:{}…", d.port);
    Ok(Some(Started::new(t0, child, offset)))
}

/// Phase 2: waits until the server accepts connections.
pub fn wait(settings: &Settings, started: Option<Started>) -> Result<()> {
    daemon(settings).wait(settings, started)
}

/// Stops our server (SIGTERM; SIGKILL after 30 s).
pub fn down(settings: &Settings) -> Result<()> {
    daemon(settings).down(Duration::from_secs(30))
}
