//! `txoutbox probe`: asks a running relay's HTTP port for `/live` (or another path) and exits 0
//! when it answers `200`, 1 otherwise. It is the container image's health check: the runtime image
//! has no curl or wget, and the probe reads the address the relay itself was configured with, so
//! the check follows `TXOUTBOX_HTTP_LISTEN`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::Args;

use crate::error::CliError;

/// How long the probe waits for an answer: below the 5 s a container health check usually allows.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Flags of `txoutbox probe`.
#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// The path to ask at the relay's configured HTTP address (TXOUTBOX_HTTP_LISTEN or the config
    /// file; 0.0.0.0 and [::] are asked on loopback), or a whole http:// URL.
    #[arg(default_value = "/live")]
    pub target: String,
}

/// Sends one GET and reports its status line; an answer other than `200` (or none) is an error.
pub(crate) async fn run(args: &ProbeArgs, listen: &str) -> Result<(), CliError> {
    let url = url(&args.target, listen)?;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        // The relay is on this host: an HTTP_PROXY of the environment must not carry the probe.
        .no_proxy()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot build an HTTP client: {e}")))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| CliError::runtime(format!("{url}: no answer ({e})")))?;
    let status = response.status();
    if status == reqwest::StatusCode::OK {
        println!("{url}: {status}");
        Ok(())
    } else {
        Err(CliError::runtime(format!("{url}: {status}")))
    }
}

/// The URL to ask: `target` itself when it is a URL, else `target` as a path at `listen`.
fn url(target: &str, listen: &str) -> Result<String, CliError> {
    if target.starts_with("http://") || target.starts_with("https://") {
        return Ok(target.to_owned());
    }
    if !target.starts_with('/') {
        return Err(CliError::usage(format!(
            "`{target}` is neither a path nor a URL: write e.g. /live, /health or http://127.0.0.1:9464/live"
        )));
    }
    if listen == "off" || listen.is_empty() {
        return Err(CliError::usage(
            "the relay's HTTP port is off (TXOUTBOX_HTTP_LISTEN=off): there is nothing to probe",
        ));
    }
    let host = match listen.parse::<SocketAddr>() {
        Ok(address) if address.ip().is_unspecified() => {
            let loopback = match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            SocketAddr::new(loopback, address.port()).to_string()
        }
        _ => listen.to_owned(),
    };
    Ok(format!("http://{host}{target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_asked_at_the_listen_address_on_loopback() {
        assert_eq!(
            url("/live", "0.0.0.0:9464").unwrap(),
            "http://127.0.0.1:9464/live"
        );
        assert_eq!(url("/health", "[::]:8080").unwrap(), "http://[::1]:8080/health");
        assert_eq!(
            url("/live", "127.0.0.1:9464").unwrap(),
            "http://127.0.0.1:9464/live"
        );
        assert_eq!(
            url("/live", "relay.internal:9464").unwrap(),
            "http://relay.internal:9464/live"
        );
        assert_eq!(url("http://10.0.0.1:1/x", "off").unwrap(), "http://10.0.0.1:1/x");
    }

    #[test]
    fn nothing_to_probe_is_a_usage_error() {
        assert_eq!(url("/live", "off").unwrap_err().exit_code, 2);
        assert_eq!(url("live", "0.0.0.0:9464").unwrap_err().exit_code, 2);
    }
}
