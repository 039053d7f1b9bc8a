//! Redis: our own `redis-server` (Debian's package) on loopback, its data in
//! `<services dir>/redis`, on Redis's stock settings but for the address, port and folder.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::loopback_daemon::{LoopbackDaemon, Started, service_dir};
use crate::process::{refuse_taken_port, spawn, which};
use crate::{Settings, say};

/// Our server's URL on `port`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// Our server: `<services dir>/redis`.
pub fn daemon(settings: &Settings) -> LoopbackDaemon {
    let dir = service_dir(settings, "redis");
    let mut daemon = LoopbackDaemon {
        name: "redis",
        marker: String::new(),
        dir,
        port: settings.redis_port,
        ready_line: "Ready to accept connections",
    };
    // Its process title names its address: the port it was started on, whatever the setting now.
    daemon.marker = format!("127.0.0.1:{}", daemon.running_port());
    daemon
}

/// Our server's URL while it runs.
pub fn local_url(settings: &Settings) -> Option<String> {
    let d = daemon(settings);
    d.pid()?;
    Some(url(d.running_port()))
}

/// Phase 1 of `up`: starts our server (installing Debian's `redis-server` when missing); does
/// not wait.
pub fn launch(settings: &Settings) -> Result<Option<Started>> {
    let d = daemon(settings);
    if d.already_running() {
        return Ok(None);
    }
    let t0 = Instant::now();
    refuse_taken_port("redis", d.port, "TXOUTBOX_REDIS_PORT")?;
    if which("redis-server").is_none() {
        crate::packages::apt_install(settings, &["redis-server"]).context("redis")?;
    }
    let server = which("redis-server").context("redis: redis-server not found (package redis-server)")?;
    d.write_port()?;
    // No config file: Redis's defaults (RDB snapshots, no append-only file) but for these.
    let args = vec![
        "--bind".to_owned(),
        "127.0.0.1".to_owned(),
        "--port".to_owned(),
        d.port.to_string(),
        "--dir".to_owned(),
        d.dir.display().to_string(),
        "--daemonize".to_owned(),
        "no".to_owned(),
    ];
    let (child, offset) = spawn(
        "redis-server",
        &server,
        &args,
        &d.dir,
        &d.log(),
        Some(&d.pid_file()),
    )?;
    say!("redis: starting on 127.0.0.1:{}…", d.port);
    Ok(Some(Started::new(t0, child, offset)))
}

/// Phase 2: waits until the server accepts connections.
pub fn wait(settings: &Settings, started: Option<Started>) -> Result<()> {
    daemon(settings).wait(settings, started)
}

/// Stops our server (SIGTERM: it saves its snapshot and exits; SIGKILL after 30 s).
pub fn down(settings: &Settings) -> Result<()> {
    daemon(settings).down(Duration::from_secs(30))
}
