//! RabbitMQ: our own node (Debian's `rabbitmq-server`) on loopback, run as the current user with
//! its data, logs, Erlang cookie and ports of its own under `<services dir>/rabbitmq`, on
//! RabbitMQ's stock settings otherwise (the default `guest` user, which may connect from loopback).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::files::write;
use crate::loopback_daemon::{LoopbackDaemon, Started, service_dir};
use crate::process::{refuse_taken_port, spawn, which};
use crate::{Settings, say};

/// The server script that runs the node in the foreground (not the package's wrapper, which
/// switches to the `rabbitmq` user).
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Our broker's URL on `port`.
pub fn url(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// Our node: `<services dir>/rabbitmq`.
pub fn daemon(settings: &Settings) -> LoopbackDaemon {
    let dir = service_dir(settings, "rabbitmq");
    LoopbackDaemon {
        name: "rabbitmq",
        // The VM names its home (this folder) on its command line.
        marker: dir.display().to_string(),
        dir,
        port: settings.rabbitmq_port,
        ready_line: "Server startup complete",
    }
}

/// Our broker's URL while it runs.
pub fn local_url(settings: &Settings) -> Option<String> {
    let d = daemon(settings);
    d.pid()?;
    Some(url(d.running_port()))
}

/// The environment of our node (and of `rabbitmqctl` against it): its name, folders, ports, and
/// a home of its own for the Erlang cookie. Erlang's port mapper listens on loopback only, on a
/// port of our own.
fn node_env(dir: &Path, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("HOME", dir.display().to_string()),
        ("RABBITMQ_NODENAME", "txoutbox@localhost".into()),
        ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
        ("RABBITMQ_NODE_PORT", port.to_string()),
        ("RABBITMQ_DIST_PORT", (port + 1).to_string()),
        // The distribution port listens on loopback too (it would take every interface).
        (
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}".into(),
        ),
        ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
        ("ERL_EPMD_PORT", (port + 2).to_string()),
        ("RABBITMQ_MNESIA_BASE", dir.join("mnesia").display().to_string()),
        ("RABBITMQ_LOG_BASE", dir.join("log").display().to_string()),
        ("RABBITMQ_LOGS", "-".into()),
        (
            "RABBITMQ_CONFIG_FILE",
            dir.join("rabbitmq.conf").display().to_string(),
        ),
        // Not the package's /etc/rabbitmq/conf.d, advanced.config or rabbitmq-env.conf either.
        ("RABBITMQ_CONFIG_FILES", dir.join("conf.d").display().to_string()),
        (
            "RABBITMQ_ADVANCED_CONFIG_FILE",
            dir.join("advanced.config").display().to_string(),
        ),
        (
            "RABBITMQ_CONF_ENV_FILE",
            dir.join("rabbitmq-env.conf").display().to_string(),
        ),
        (
            "RABBITMQ_ENABLED_PLUGINS_FILE",
            dir.join("enabled_plugins").display().to_string(),
        ),
        (
            "RABBITMQ_PID_FILE",
            dir.join("rabbitmq.pid").display().to_string(),
        ),
        // Exec the VM in place of the script, so the pid we keep is the node's.
        ("RUNNING_UNDER_SYSTEMD", "true".into()),
    ]
}

/// Phase 1 of `up`: starts our node (installing Debian's `rabbitmq-server` when missing); does
/// not wait.
pub fn launch(settings: &Settings) -> Result<Option<Started>> {
    let d = daemon(settings);
    if d.already_running() {
        return Ok(None);
    }
    let t0 = Instant::now();
    let port = d.port;
    if port > u16::MAX - 2 {
        anyhow::bail!("rabbitmq: TXOUTBOX_RABBITMQ_PORT={port} leaves no room for its two Erlang ports");
    }
    for (p, var) in [
        (port, "TXOUTBOX_RABBITMQ_PORT"),
        (port + 1, "TXOUTBOX_RABBITMQ_PORT (+1: Erlang distribution)"),
        (port + 2, "TXOUTBOX_RABBITMQ_PORT (+2: Erlang port mapper)"),
    ] {
        refuse_taken_port("rabbitmq", p, var)?;
    }
    if !Path::new(SERVER).is_file() || which("rabbitmqctl").is_none() {
        crate::packages::apt_install(settings, &["rabbitmq-server"]).context("rabbitmq")?;
        // Should the package's own node have started, stop it: we run our own.
        if let Ok(out) = Command::new("rabbitmqctl").arg("stop").output()
            && !out.status.success()
        {
            say!(
                "rabbitmq: could not stop the package's own node (it does not clash with ours): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    d.write_port()?;
    // Stock settings; the config file only has to exist. No plugins (no management port).
    write(
        &d.dir.join("rabbitmq.conf"),
        "# txoutbox-services: RabbitMQ's defaults\n",
    )?;
    write(&d.dir.join("enabled_plugins"), "[].\n")?;
    let env = node_env(&d.dir, port);
    let mut args = Vec::new();
    let (child, offset) = {
        // spawn() takes no environment: pass it through `env`.
        args.push("-i".to_owned());
        args.extend(
            std::env::vars()
                .filter(|(k, _)| k == "PATH" || k == "LANG")
                .map(|(k, v)| format!("{k}={v}")),
        );
        args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        args.push(SERVER.to_owned());
        spawn(
            "rabbitmq-server",
            Path::new("/usr/bin/env"),
            &args,
            &d.dir,
            &d.log(),
            Some(&d.pid_file()),
        )?
    };
    say!("rabbitmq: starting on 127.0.0.1:{port}…");
    Ok(Some(Started::new(t0, child, offset)))
}

/// Phase 2: waits until the node accepts connections.
pub fn wait(settings: &Settings, started: Option<Started>) -> Result<()> {
    daemon(settings).wait(settings, started)
}

/// Stops our node (SIGTERM: a clean shutdown; SIGKILL after 60 s).
pub fn down(settings: &Settings) -> Result<()> {
    let d = daemon(settings);
    let stopped = d.down(Duration::from_secs(60));
    // The port mapper the node started outlives it; it is ours (its own port), so stop it too,
    // whether the node stopped cleanly or not.
    let _ = Command::new("epmd")
        .arg("-kill")
        .env("ERL_EPMD_PORT", (d.running_port() + 2).to_string())
        .output();
    stopped
}
