//! A private [Toxiproxy](https://github.com/Shopify/toxiproxy) server for the network-fault
//! tests: a TCP proxy in front of a loopback port that adds latency, resets connections or lets
//! them hang, through its HTTP API.
//!
//! The server binary is `TXOUTBOX_TOXIPROXY_BIN`, else `~/.cache/txoutbox/toxiproxy/bin/server`,
//! which the services' launcher builds (Toxiproxy 2.12.0 with `go install` from the Go module
//! proxy) on first use, ~1 min (`scripts/services.sh toxiproxy` does the same).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::instances::free_port;

/// The Toxiproxy server binary (built on first use).
pub fn toxiproxy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TXOUTBOX_TOXIPROXY_BIN") {
        return bin.into();
    }
    txoutbox_services::Settings::from_env()
        .and_then(|settings| txoutbox_services::tools::toxiproxy(&settings))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A running Toxiproxy server on a free loopback port; killed when dropped.
#[derive(Debug)]
pub struct Toxiproxy {
    api_port: u16,
    child: Child,
}

impl Toxiproxy {
    /// Starts the server; returns once its API answers.
    pub fn start() -> Self {
        let bin = toxiproxy_bin();
        let api_port = free_port();
        let child = Command::new(&bin)
            .args(["-host", "127.0.0.1", "-port", &api_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let me = Self { api_port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while me.request("GET", "/version", "").is_err() {
            assert!(Instant::now() < deadline, "Toxiproxy did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// Creates a proxy `name` listening on `127.0.0.1:listen` (e.g. a [`free_port`]) in front of
    /// `upstream` (`host:port`).
    pub fn proxy(&self, name: &str, listen: u16, upstream: &str) {
        self.call(
            "POST",
            "/proxies",
            &format!(
                r#"{{"name":"{name}","listen":"127.0.0.1:{listen}","upstream":"{upstream}","enabled":true}}"#
            ),
        );
    }

    /// Adds a toxic to proxy `proxy` on both directions' `stream` (`upstream`: client → server,
    /// `downstream`: server → client); `attributes` is a JSON object, e.g. `{"latency":300}`.
    /// Toxic types: `latency`, `reset_peer`, `timeout`, `bandwidth`, `slow_close`, `limit_data`.
    pub fn add_toxic(&self, proxy: &str, name: &str, kind: &str, stream: &str, attributes: &str) {
        self.call(
            "POST",
            &format!("/proxies/{proxy}/toxics"),
            &format!(
                r#"{{"name":"{name}","type":"{kind}","stream":"{stream}","toxicity":1.0,"attributes":{attributes}}}"#
            ),
        );
    }

    /// Removes a toxic.
    pub fn remove_toxic(&self, proxy: &str, name: &str) {
        self.call("DELETE", &format!("/proxies/{proxy}/toxics/{name}"), "");
    }

    fn call(&self, method: &str, path: &str, body: &str) -> String {
        match self.request(method, path, body) {
            Ok((status, text)) if (200..300).contains(&status) => text,
            Ok((status, text)) => panic!("Toxiproxy {method} {path}: HTTP {status}: {text}"),
            Err(e) => panic!("Toxiproxy {method} {path}: {e}"),
        }
    }

    /// One HTTP/1.1 request (`Connection: close`); the status and the body.
    fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.api_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
