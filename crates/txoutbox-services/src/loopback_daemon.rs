//! A single-process server of ours on a loopback port (NATS, RabbitMQ, Redis): its folder under
//! the services folder, pid file, log, the port it was started on, readiness by a log line, stop
//! by signal, and a status line.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::process::{file_contains_since, log_tail, pid_alive, port_accepts, read_pid, since, stop_pid};
use crate::{Settings, say};

/// One kind of server: its name, folder and how it shows it is ready.
#[derive(Debug, Clone)]
pub struct LoopbackDaemon {
    /// The service's name (`nats`, `rabbitmq`, `redis`).
    pub name: &'static str,
    /// Its folder (data, pid, port, log).
    pub dir: PathBuf,
    /// The port `up` starts it on.
    pub port: u16,
    /// A text only our process's command line holds (its data folder).
    pub marker: String,
    /// The log line that says it accepts clients.
    pub ready_line: &'static str,
}

/// A server that was started and that [`LoopbackDaemon::wait`] waits for.
#[derive(Debug)]
pub struct Started {
    t0: Instant,
    child: Child,
    log_offset: u64,
}

impl Started {
    /// A server just spawned at `t0`, its log's length before its first line.
    pub fn new(t0: Instant, child: Child, log_offset: u64) -> Self {
        Self {
            t0,
            child,
            log_offset,
        }
    }
}

impl LoopbackDaemon {
    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// Its pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }

    /// The pid of our running server: the pid file's process, alive, with our marker.
    pub fn pid(&self) -> Option<u32> {
        let pid = read_pid(&self.pid_file())?;
        (pid_alive(pid) && cmdline_contains(pid, &self.marker)).then_some(pid)
    }

    /// The port it was started on (the configured one before its first start).
    pub fn running_port(&self) -> u16 {
        std::fs::read_to_string(self.dir.join("port"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(self.port)
    }

    /// Records the port of this start.
    pub fn write_port(&self) -> Result<()> {
        crate::files::mkdir(&self.dir)?;
        crate::files::write(&self.dir.join("port"), format!("{}\n", self.port))
    }

    /// Waits until it accepts connections and logged its ready line.
    pub fn wait(&self, settings: &Settings, started: Option<Started>) -> Result<()> {
        let Some(mut s) = started else { return Ok(()) };
        let log = self.log();
        let pid = s.child.id();
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                bail!(
                    "{}: the server (pid {pid}) exited while starting ({status}); log: {}\n{}",
                    self.name,
                    log.display(),
                    log_tail(&log, 40)
                );
            }
            if port_accepts(self.port) && file_contains_since(&log, s.log_offset, self.ready_line) {
                break;
            }
            if s.t0.elapsed() > settings.timeout {
                bail!(
                    "{}: not ready after {} s; log: {}\n{}",
                    self.name,
                    settings.timeout.as_secs(),
                    log.display(),
                    log_tail(&log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        say!(
            "{}: ready on 127.0.0.1:{} in {} s (pid {pid}, log {})",
            self.name,
            self.port,
            since(s.t0),
            log.display()
        );
        Ok(())
    }

    /// Whether it already runs (then says so).
    pub fn already_running(&self) -> bool {
        match self.pid() {
            Some(pid) => {
                say!(
                    "{}: already running on 127.0.0.1:{} (pid {pid})",
                    self.name,
                    self.running_port()
                );
                true
            }
            None => false,
        }
    }

    /// Stops it (SIGTERM; SIGKILL after `timeout`).
    pub fn down(&self, timeout: Duration) -> Result<()> {
        let Some(pid) = self.pid() else {
            say!("{}: not running", self.name);
            return Ok(());
        };
        let t0 = Instant::now();
        stop_pid(pid, "TERM", timeout, self.name)?;
        let _ = std::fs::remove_file(self.pid_file());
        say!("{}: stopped in {} s", self.name, since(t0));
        Ok(())
    }

    /// Its status line (without the external case).
    pub fn status(&self) -> String {
        match self.pid() {
            Some(pid) => format!(
                "{:<10} running   127.0.0.1:{}  pid {pid}  {}",
                self.name,
                self.running_port(),
                self.dir.display()
            ),
            None => format!("{:<10} stopped", self.name),
        }
    }

    /// Deletes its folder (stopped first by the caller).
    pub fn delete_data(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether process `pid`'s command line holds `needle` anywhere.
fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
}

/// `settings`' folder for service `name`.
pub fn service_dir(settings: &Settings, name: &str) -> PathBuf {
    settings.services_dir.join(name)
}
