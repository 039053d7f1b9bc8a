//! Where and how the NATS sink connects: servers, subject, credentials, TLS and limits.

use std::path::PathBuf;
use std::time::Duration;

use txoutbox_core::{Error, Result};

use crate::subject::SubjectTemplate;

/// How long a publish waits for JetStream's acknowledgement by default.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How many publishes may wait for their acknowledgement at once by default.
pub const DEFAULT_MAX_ACKS_IN_FLIGHT: usize = 16_384;

/// How the sink authenticates to the server. Secrets never appear in `Debug` output.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials (or credentials in the server URL).
    #[default]
    None,
    /// A token.
    Token(String),
    /// A user and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// An NKey seed (`SU...`).
    NKey(String),
    /// A credentials file (a user JWT and its NKey seed, as `nsc` writes them).
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::UserPassword { user, .. } => {
                write!(f, "UserPassword {{ user: {user:?}, password: <redacted> }}")
            }
            Self::NKey(_) => f.write_str("NKey(<redacted>)"),
            Self::CredentialsFile(path) => write!(f, "CredentialsFile({})", path.display()),
        }
    }
}

/// The NATS sink's settings.
///
/// ```
/// use txoutbox_nats::{NatsAuth, NatsConfig};
///
/// let config = NatsConfig::new("nats://127.0.0.1:4222")
///     .subject("outbox.{topic}")?
///     .auth(NatsAuth::Token("s3cret".into()));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), txoutbox_core::Error>(())
/// ```
#[derive(Clone)]
pub struct NatsConfig {
    pub(crate) servers: String,
    pub(crate) subject: SubjectTemplate,
    pub(crate) auth: NatsAuth,
    pub(crate) root_certificates: Option<PathBuf>,
    pub(crate) client_certificate: Option<(PathBuf, PathBuf)>,
    pub(crate) require_tls: bool,
    pub(crate) ack_timeout: Duration,
    pub(crate) max_acks_in_flight: usize,
    pub(crate) connection_name: String,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &self.servers_redacted())
            .field("subject", &self.subject.as_str())
            .field("auth", &self.auth)
            .field("root_certificates", &self.root_certificates)
            .field("client_certificate", &self.client_certificate)
            .field("require_tls", &self.require_tls)
            .field("ack_timeout", &self.ack_timeout)
            .field("max_acks_in_flight", &self.max_acks_in_flight)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

impl NatsConfig {
    /// Settings for the servers at `servers` (one URL, or several separated by commas, e.g.
    /// `nats://a:4222,nats://b:4222`), with the subject `{topic}`, no credentials, TLS when the
    /// server asks for it, a 10 s acknowledgement timeout and up to 16,384 acknowledgements
    /// pending.
    pub fn new(servers: impl Into<String>) -> Self {
        Self {
            servers: servers.into(),
            subject: SubjectTemplate::default(),
            auth: NatsAuth::None,
            root_certificates: None,
            client_certificate: None,
            require_tls: false,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            max_acks_in_flight: DEFAULT_MAX_ACKS_IN_FLIGHT,
            connection_name: "txoutbox-relay".to_owned(),
        }
    }

    /// The subject template (see [`SubjectTemplate`]).
    pub fn subject(mut self, template: &str) -> Result<Self> {
        self.subject = SubjectTemplate::new(template)?;
        Ok(self)
    }

    /// How the sink authenticates.
    #[must_use]
    pub fn auth(mut self, auth: NatsAuth) -> Self {
        self.auth = auth;
        self
    }

    /// A PEM file of the certificate authorities that sign the server's certificate.
    #[must_use]
    pub fn root_certificates(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_certificates = Some(path.into());
        self
    }

    /// A client certificate and its key (PEM files), for servers that verify clients.
    #[must_use]
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// Refuse to talk to a server without TLS.
    #[must_use]
    pub fn require_tls(mut self, required: bool) -> Self {
        self.require_tls = required;
        self
    }

    /// How long a publish waits for its acknowledgement before it counts as a transient failure
    /// (the relay sends it again; the stream's duplicate window drops the copy).
    #[must_use]
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// How many publishes may wait for their acknowledgement at once; the sink waits for room
    /// beyond that.
    #[must_use]
    pub fn max_acks_in_flight(mut self, n: usize) -> Self {
        self.max_acks_in_flight = n;
        self
    }

    /// The connection's name, shown by the server (`nats server report connections`).
    #[must_use]
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// The subject template.
    pub fn subject_template(&self) -> &SubjectTemplate {
        &self.subject
    }

    /// The server URLs with any user information in them (between `://` and the last `@`
    /// before the next URL) shown as `<redacted>`, for logs and status pages. A password may hold
    /// `,` or `@`: what lies between a scheme and its host is hidden whole.
    pub fn servers_redacted(&self) -> String {
        redact_userinfo(&self.servers)
    }

    /// Whether a server URL holds user information (better passed through [`NatsAuth`]: the
    /// client logs server addresses at debug level).
    pub fn urls_hold_credentials(&self) -> bool {
        redact_userinfo(&self.servers) != self.servers
    }

    /// Checks the settings before connecting.
    pub fn validate(&self) -> Result<()> {
        let servers = self.server_list();
        if servers.is_empty() {
            return Err(Error::Config(
                "no NATS server given (e.g. nats://127.0.0.1:4222)".into(),
            ));
        }
        for server in &servers {
            server.parse::<async_nats::ServerAddr>().map_err(|e| {
                Error::Config(format!(
                    "NATS server {:?} is no server address: {e}",
                    NatsConfig::new(*server).servers_redacted()
                ))
            })?;
        }
        if self.ack_timeout.is_zero() {
            return Err(Error::Config(
                "the NATS acknowledgement timeout must be above zero".into(),
            ));
        }
        if self.max_acks_in_flight == 0 || self.max_acks_in_flight > u32::MAX as usize {
            return Err(Error::Config(
                "the NATS acknowledgements in flight must be between 1 and 4294967295".into(),
            ));
        }
        Ok(())
    }

    /// The server URLs, trimmed, empty entries left out.
    pub(crate) fn server_list(&self) -> Vec<&str> {
        self.servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// `text` with what lies between each `://` and the last `@` before the next `://` replaced by
/// `<redacted>`; a `user@host` without a scheme is redacted up to its `@`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let (head, tail) = match rest.find("://") {
            Some(at) => rest.split_at(at + 3),
            None => ("", rest),
        };
        out.push_str(head);
        let end = tail.find("://").unwrap_or(tail.len());
        // The next URL's scheme starts after the last separator before its `://`.
        let this = match tail[..end].rfind(',') {
            Some(comma) if end < tail.len() => &tail[..comma + 1],
            _ => &tail[..end],
        };
        match this.rfind('@') {
            Some(at) => {
                out.push_str("<redacted>");
                out.push_str(&this[at..]);
            }
            None => out.push_str(this),
        }
        rest = &tail[this.len()..];
        if rest.is_empty() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_and_logs() {
        let config = NatsConfig::new("nats://u:pw@h:4222, tls://h2:4222").auth(NatsAuth::UserPassword {
            user: "relay".into(),
            password: "pw-secret".into(),
        });
        let shown = format!("{config:?}");
        assert!(!shown.contains("pw-secret"), "{shown}");
        assert_eq!(
            config.servers_redacted(),
            "nats://<redacted>@h:4222, tls://h2:4222"
        );
        assert!(config.urls_hold_credentials());
        let comma = NatsConfig::new("nats://u:pa,ss@h:1,nats://v:p@w@h2:2");
        assert_eq!(
            comma.servers_redacted(),
            "nats://<redacted>@h:1,nats://<redacted>@h2:2"
        );
        assert_eq!(NatsConfig::new("u:pw@h:1").servers_redacted(), "<redacted>@h:1");
        assert!(!NatsConfig::new("nats://h:1,nats://h2:2").urls_hold_credentials());
        assert_eq!(
            format!("{:?}", NatsAuth::Token("t0k".into())),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn validates() {
        assert!(NatsConfig::new("nats://127.0.0.1:4222").validate().is_ok());
        assert!(NatsConfig::new("127.0.0.1:4222,nats://b:1").validate().is_ok());
        assert!(NatsConfig::new(" , ").validate().is_err());
        assert!(
            NatsConfig::new("nats://h:4222")
                .ack_timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(
            NatsConfig::new("nats://h:4222")
                .max_acks_in_flight(0)
                .validate()
                .is_err()
        );
        assert!(NatsConfig::new("nats://h:4222").subject("x.{nope}").is_err());
    }
}
