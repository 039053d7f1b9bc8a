//! Drives the real `txoutbox` binary: runs commands, starts the daemon on a free port, reads its
//! HTTP endpoints.

#![allow(dead_code)] // reason: each test binary uses part of the support module

pub(crate) mod help;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use txoutbox_testing::eventually;
use txoutbox_testing::postgres::TestSchema;

/// The binary under test.
pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_txoutbox")
}

/// `txoutbox <args>` against the test schema's outbox; waits for it.
pub(crate) fn txoutbox(db: &TestSchema, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
        .env("TXOUTBOX_TABLE", format!("{}.outbox_messages", db.schema))
        .env("TXOUTBOX_KAFKA_BOOTSTRAP", txoutbox_testing::kafka::bootstrap())
        .env_remove("TXOUTBOX_CONFIG")
        .output()
        .expect("run txoutbox")
}

/// Stdout of a command that must succeed.
pub(crate) fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "txoutbox failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A free loopback port (released before the daemon binds it).
pub(crate) use txoutbox_testing::instances::free_port;

/// A running `txoutbox relay`.
pub(crate) struct Daemon {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `txoutbox relay <args>` on the test schema and waits until `/live` answers.
    pub(crate) async fn start(db: &TestSchema, args: &[&str]) -> Self {
        let table = format!("{}.outbox_messages", db.schema);
        Self::start_on(&txoutbox_testing::postgres::url(), &table, args).await
    }

    /// Starts `txoutbox relay <args>` on any outbox and waits until `/live` answers.
    pub(crate) async fn start_on(database_url: &str, table: &str, args: &[&str]) -> Self {
        Self::start_with_env(database_url, table, args, &[]).await
    }

    /// Starts `txoutbox relay <args>` with extra environment variables (e.g. a secret that must
    /// not appear on the command line) and waits until `/live` answers.
    pub(crate) async fn start_with_env(
        database_url: &str,
        table: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}.log", txoutbox_testing::unique("txoutbox-daemon")));
        let child = Command::new(binary())
            .arg("relay")
            .args(["--http-listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("TXOUTBOX_DATABASE_URL", database_url)
            .env("TXOUTBOX_TABLE", table)
            .env("TXOUTBOX_KAFKA_BOOTSTRAP", txoutbox_testing::kafka::bootstrap())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start txoutbox relay");
        let daemon = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let live = eventually(Duration::from_secs(30), || async {
            matches!(daemon.get("/live").await, Some((200, _)))
        })
        .await;
        assert!(live, "the daemon did not come up: {}", daemon.logs());
        daemon
    }

    /// GET a path: status code and body, `None` when nothing answers.
    pub(crate) async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let code = response.status().as_u16();
        Some((code, response.text().await.ok()?))
    }

    /// POSTs a JSON `body` to a path with extra headers: status code and body.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("the daemon answers");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// The daemon's log so far.
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`KILL`, `STOP`, `CONT`, ...).
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Waits for the process to exit by itself; its exit code.
    pub(crate) fn wait(&mut self) -> Option<i32> {
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// Whether the process has exited (without waiting).
    pub(crate) fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// `kill -9`, and waits for the process to go.
    pub(crate) fn kill9(mut self) -> String {
        self.signal("KILL");
        let _ = self.child.wait();
        self.logs()
    }

    /// The daemon's `/status` as JSON (`Null` when it does not answer).
    pub(crate) async fn status(&self) -> serde_json::Value {
        match self.get("/status").await {
            Some((200, body)) => serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::Null,
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the log.
    pub(crate) fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success());
        let status = self.child.wait().expect("wait for the daemon");
        let logs = self.logs();
        assert!(status.success(), "the daemon exited with {status}: {logs}");
        logs
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a sample in Prometheus text, parsed by an independent parser.
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("/metrics is valid Prometheus text");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// A pseudo-random number from the clock (no seed to keep).
pub(crate) fn rand_ms(salt: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos / 1_000) ^ (salt as u64 * 7_919)
}

/// A number from the environment variable `name` (longer test runs), or `default`.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}
