//! NATS: our own `nats-server` with JetStream on loopback, built with `go install` on first use
//! (Go module proxy), its store in `<services dir>/nats`.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::files::{mkdir, write};
use crate::lock::Lock;
use crate::process::{
    has_arg, is_executable, log_tail, pid_alive, port_accepts, read_pid, refuse_taken_port, run_logged,
    since, spawn, stop_pid, which,
};
use crate::{Settings, say};

/// The nats-server version `go install` builds.
pub const NATS_SERVER_VERSION: &str = "v2.15.3";

/// Our server's URL on `port`.
pub fn url(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

/// The `nats-server` binary in `~/.cache/txoutbox/nats-server/bin`, built from its Go module on
/// first use (~1 min; needs Go 1.24+).
pub fn server_binary(settings: &Settings) -> Result<PathBuf> {
    let dir = settings.cache_dir().join("nats-server");
    let server = dir.join("bin/nats-server");
    let built = || {
        is_executable(&server)
            && std::fs::read_to_string(dir.join("version")).is_ok_and(|v| v.trim() == NATS_SERVER_VERSION)
    };
    if built() {
        return Ok(server);
    }
    let go = which("go")
        .or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|p| is_executable(p)))
        .context("nats: needs Go (1.24 or later) to build nats-server; none found")?;
    mkdir(&dir)?;
    let _lock =
        Lock::acquire(&dir.join(".lock"), "another invocation building nats-server").context("nats")?;
    if !built() {
        let t0 = Instant::now();
        say!("nats: building nats-server {NATS_SERVER_VERSION} with go install (first run, ~1 min)…");
        let mut install = Command::new(go);
        install
            .env("GOBIN", dir.join("bin"))
            .arg("install")
            .arg(format!("github.com/nats-io/nats-server/v2@{NATS_SERVER_VERSION}"));
        run_logged(&mut install, &dir.join("build.log"), "nats: go install")?;
        write(&dir.join("version"), format!("{NATS_SERVER_VERSION}\n"))?;
        say!("nats: built in {} s", since(t0));
    }
    Ok(server)
}

/// Our server's folder (JetStream store, pid, log, port).
fn root(settings: &Settings) -> PathBuf {
    settings.services_dir.join("nats")
}

/// The argument that marks our server's process (its store folder).
fn store_arg(settings: &Settings) -> String {
    format!("--store_dir={}", root(settings).join("jetstream").display())
}

/// The pid of our running server.
pub fn pid(settings: &Settings) -> Option<u32> {
    let pid = read_pid(&root(settings).join("pid"))?;
    (pid_alive(pid) && has_arg(pid, &store_arg(settings))).then_some(pid)
}

fn running_port(settings: &Settings) -> u16 {
    std::fs::read_to_string(root(settings).join("port"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(settings.nats_port)
}

/// Our server's URL while it runs.
pub fn local_url(settings: &Settings) -> Option<String> {
    pid(settings)?;
    Some(url(running_port(settings)))
}

/// A server that was started and that [`wait`] waits for.
#[derive(Debug)]
pub struct Pending {
    t0: Instant,
    child: Child,
    /// The log's length before this start's first line.
    log_offset: u64,
}

/// Phase 1 of `up`: starts our server (building it on first use); does not wait.
pub fn launch(settings: &Settings) -> Result<Option<Pending>> {
    if let Some(pid) = pid(settings) {
        say!(
            "nats: already running on 127.0.0.1:{} (pid {pid})",
            running_port(settings)
        );
        return Ok(None);
    }
    let t0 = Instant::now();
    let port = settings.nats_port;
    refuse_taken_port("nats", port, "TXOUTBOX_NATS_PORT")?;
    let server = server_binary(settings)?;
    let root = root(settings);
    mkdir(&root)?;
    write(&root.join("port"), format!("{port}\n"))?;
    // Stock settings but for the address, port and store: JetStream's defaults (limits, a
    // two-minute duplicate window per stream) are what the tests run against.
    let args = vec![
        "--addr=127.0.0.1".to_owned(),
        format!("--port={port}"),
        "--jetstream".to_owned(),
        store_arg(settings),
        "--server_name=txoutbox-nats".to_owned(),
    ];
    let (child, log_offset) = spawn(
        "nats-server",
        &server,
        &args,
        &root,
        &root.join("nats.log"),
        Some(&root.join("pid")),
    )?;
    say!("nats: starting on 127.0.0.1:{port}…");
    Ok(Some(Pending {
        t0,
        child,
        log_offset,
    }))
}

/// Phase 2: waits until the server accepts connections.
pub fn wait(settings: &Settings, pending: Option<Pending>) -> Result<()> {
    let Some(mut p) = pending else { return Ok(()) };
    let log = root(settings).join("nats.log");
    let pid = p.child.id();
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!(
                "nats: nats-server (pid {pid}) exited while starting ({status}); log: {}\n{}",
                log.display(),
                log_tail(&log, 40)
            );
        }
        if port_accepts(settings.nats_port)
            && crate::process::file_contains_since(&log, p.log_offset, "Server is ready")
        {
            break;
        }
        if p.t0.elapsed() > settings.timeout {
            bail!(
                "nats: not ready after {} s; log: {}\n{}",
                settings.timeout.as_secs(),
                log.display(),
                log_tail(&log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say!(
        "nats: ready on 127.0.0.1:{} in {} s (pid {pid}, log {})",
        settings.nats_port,
        since(p.t0),
        log.display()
    );
    Ok(())
}

/// Stops our server (SIGTERM; SIGKILL after 30 s).
pub fn down(settings: &Settings) -> Result<()> {
    let Some(pid) = pid(settings) else {
        say!("nats: not running");
        return Ok(());
    };
    let t0 = Instant::now();
    stop_pid(pid, "TERM", Duration::from_secs(30), "nats")?;
    let _ = std::fs::remove_file(root(settings).join("pid"));
    say!("nats: stopped in {} s", since(t0));
    Ok(())
}

/// Our server's status line (without the external case).
pub fn status(settings: &Settings) -> String {
    match pid(settings) {
        Some(pid) => format!(
            "nats       running   127.0.0.1:{}  pid {pid}  {}",
            running_port(settings),
            root(settings).display()
        ),
        None => "nats       stopped".to_owned(),
    }
}

/// Deletes our server's data (stopped first by the caller).
pub fn delete_data(settings: &Settings) {
    let _ = std::fs::remove_dir_all(root(settings));
}
