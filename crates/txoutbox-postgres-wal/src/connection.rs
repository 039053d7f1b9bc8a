//! The replication connection's settings: from the database URL (host, user, password, TLS
//! mode and files) to `pgwire-replication`'s configuration.

use pgwire_replication::{ReplicationConfig, SslMode, TlsConfig};
use txoutbox_core::{Error, Result};

use crate::config::WalConfig;

pub(crate) fn replication_config(url: &str, config: &WalConfig) -> Result<ReplicationConfig> {
    let bad = |why: &str| {
        Error::Config(format!(
            "invalid database URL for the replication connection ({why}): use postgres://user:password@host:port/database"
        ))
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(bad("the scheme is not postgres://"));
    }
    let decode = percent_decode;
    let host = match parsed.host().ok_or_else(|| bad("no host"))? {
        url::Host::Domain(name) => decode(name),
        url::Host::Ipv4(ip) => ip.to_string(),
        // Without the brackets of the URL form.
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    let user = decode(parsed.username());
    let password = parsed.password().map(decode).unwrap_or_default();
    let database = decode(parsed.path().trim_start_matches('/'));
    let database = if database.is_empty() {
        user.clone()
    } else {
        database
    };
    let tls = tls_config(&parsed, &host)?;
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        config.slot.clone(),
        config.publication.clone(),
    )
    .with_port(parsed.port().unwrap_or(5432))
    .with_tls(tls)
    .with_status_interval(config.status_interval)
    .with_wakeup_interval(config.status_interval)
    .with_application_name(format!("txoutbox-wal-{}", config.slot)))
}

/// The URL's libpq TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) as the
/// replication client's TLS settings, meaning what they mean to libpq (and to the sqlx pool that
/// shares the URL):
///
/// - no `sslmode`: `prefer` (libpq's default), or `verify-full` with `sslrootcert=system`;
/// - `disable`: plain text; `allow` and `prefer`: TLS when the server offers it, without
///   verification, plain text otherwise (`allow` tries TLS first, where libpq tries plain text
///   first: either way either is accepted);
/// - `require`: TLS without verification, but with `sslrootcert` given it verifies the chain, as
///   libpq does (`verify-ca`);
/// - `verify-ca`: the chain is verified against `sslrootcert`; `verify-full` also checks the
///   host name (or IP address) of the URL against the certificate. Without `sslrootcert` both
///   trust the Mozilla roots bundled with the client (webpki-roots; libpq reads
///   `~/.postgresql/root.crt` instead); `sslrootcert=system` also means those roots and requires
///   `verify-full`, as in libpq;
/// - `sslcert` + `sslkey`: a client certificate (both or neither).
pub(crate) fn tls_config(url: &url::Url, host: &str) -> Result<TlsConfig> {
    let param = |name: &str| {
        url.query_pairs()
            .filter(|(k, _)| k == name)
            .last()
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    };
    let root = param("sslrootcert");
    let system = root.as_deref() == Some("system");
    let mode = match param("sslmode").as_deref() {
        None if system => SslMode::VerifyFull,
        None | Some("allow" | "prefer") => SslMode::Prefer,
        Some("disable") => return Ok(TlsConfig::disabled()),
        Some("require") if root.is_some() => SslMode::VerifyCa,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(other) => {
            return Err(Error::Config(format!(
                "invalid sslmode {other:?} in the database URL: use disable, allow, prefer, require, \
                 verify-ca or verify-full"
            )));
        }
    };
    if system && mode != SslMode::VerifyFull {
        return Err(Error::Config(
            "sslrootcert=system needs sslmode=verify-full (as in libpq): a weaker sslmode would trust \
             any server certificate signed by a public CA for any host"
                .into(),
        ));
    }
    let (cert, key) = (param("sslcert"), param("sslkey"));
    if cert.is_some() != key.is_some() {
        return Err(Error::Config(
            "the database URL gives only one of sslcert and sslkey: a client certificate needs both \
             (PEM files; the key unencrypted)"
                .into(),
        ));
    }
    let mut tls = TlsConfig {
        mode,
        ca_pem_path: root.filter(|_| !system).map(Into::into),
        sni_hostname: None,
        client_cert_pem_path: cert.map(Into::into),
        client_key_pem_path: key.map(Into::into),
    };
    if mode == SslMode::VerifyFull && host.parse::<std::net::IpAddr>().is_ok() {
        // An IP address in the URL: verified against the certificate's IP addresses (as libpq
        // 14+ does); the client refuses an IP host for verify-full unless named explicitly.
        tls.sni_hostname = Some(host.to_owned());
    }
    Ok(tls)
}

/// Decodes `%XX` escapes of a URL part.
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// libpq's name of the mode the client uses (`allow` shows as `prefer`).
pub(crate) fn ssl_mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}
