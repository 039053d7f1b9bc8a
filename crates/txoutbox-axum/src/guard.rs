//! The checks every request to the relay's routes passes before any of them sees it: the `Host`
//! it was sent to (DNS rebinding) and the site it comes from (`Origin`, `Sec-Fetch-Site`).
//!
//! A page on another site can make a browser send requests to the relay's routes: to a loopback
//! or internal address through a DNS name that the page's own domain rebinds to it, or straight
//! to its address. The first is refused by the `Host` check (the routes answer only to IP
//! addresses, `localhost` and the [`AllowedHosts`] names: for the daemon, the host name of
//! `--http-listen` and `--http-allowed-hosts`); the second cannot read the answers (no CORS
//! grant) and is refused outright when the browser says where it comes from. Scrapers and probes
//! send neither `Origin` nor `Sec-Fetch-Site`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;

/// The host names the relay's routes answer to besides IP addresses and `localhost` (the
/// default: none).
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// The host of the listen address (when it is a name, e.g. `relay.internal:9464`) and the
    /// extra names (`host` or `host:port`), compared without case.
    pub fn new(listen: Option<&str>, extra: &[String]) -> Self {
        let names = listen
            .map(host_part)
            .into_iter()
            .chain(extra.iter().map(|h| host_part(h.trim())))
            .filter(|h| !h.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        Self { names }
    }

    /// Whether a `Host` header names these routes' server.
    pub fn allows(&self, host: &str) -> bool {
        let host = host_part(host).to_ascii_lowercase();
        host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" || self.names.contains(&host)
    }
}

/// The host of a `host[:port]` or `[v6]:port` authority.
pub(crate) fn host_part(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Whether a request comes from the console's own pages (or from no page at all). A browser's
/// top-level navigation (a link from another site to `/ui`) carries no `Origin` and is fine for
/// reading; anything that changes state must also not be marked cross-site by `Sec-Fetch-Site`.
pub(crate) fn same_origin(headers: &HeaderMap, changes_state: bool) -> Result<(), &'static str> {
    if changes_state && let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none")) {
            return Err("the request comes from another site (Sec-Fetch-Site)");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or("the request has an Origin but no Host")?;
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if origin_host != Some(host) {
            return Err("the request comes from another origin (Origin does not match Host)");
        }
    }
    Ok(())
}

/// The middleware: refuses requests to an unknown host name or from another site, on every
/// route.
pub(crate) async fn guard(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("(not text)"));
    if let Some(host) = host
        && !allowed.allows(host)
    {
        let shown: String = host.chars().take(100).collect();
        warn!(host = %shown, path = %request.uri().path(), "HTTP request refused: unknown Host (DNS rebinding?)");
        return refused(
            "this server answers only to its IP addresses, localhost and its allowed host names (the \
             daemon: the --http-listen host name and --http-allowed-hosts)\n",
        );
    }
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let Err(reason) = same_origin(headers, changes_state) {
        warn!(path = %request.uri().path(), reason, "HTTP request refused: cross-site");
        return refused("cross-site requests are refused\n");
    }
    next.run(request).await
}

fn refused(message: &'static str) -> Response {
    let mut response = (StatusCode::FORBIDDEN, message).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn only_known_hosts_are_answered() {
        let hosts = AllowedHosts::new(None, &[]);
        assert!(hosts.allows("127.0.0.1:9464"));
        assert!(hosts.allows("[::1]:9464"));
        assert!(hosts.allows("LOCALHOST:9464"));
        assert!(hosts.allows("10.1.2.3"));
        assert!(!hosts.allows("evil.example"));
        let hosts = AllowedHosts::new(Some("relay.internal:9464"), &["txoutbox.svc".into()]);
        assert!(hosts.allows("relay.internal:9464"));
        assert!(hosts.allows("TXOUTBOX.svc:9464"));
        assert!(!hosts.allows("evil.example:9464"));
    }

    /// Headers of a request, for tests.
    pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let local = [("host", "127.0.0.1:9464")];
        assert!(same_origin(&headers(&local), true).is_ok());
        let own = [("host", "127.0.0.1:9464"), ("origin", "http://127.0.0.1:9464")];
        assert!(same_origin(&headers(&own), true).is_ok());
        let other = [("host", "127.0.0.1:9464"), ("origin", "https://evil.example")];
        assert!(same_origin(&headers(&other), false).is_err());
        let navigated = [("host", "127.0.0.1:9464"), ("sec-fetch-site", "cross-site")];
        assert!(same_origin(&headers(&navigated), false).is_ok(), "a link to /ui");
        assert!(same_origin(&headers(&navigated), true).is_err());
    }
}
