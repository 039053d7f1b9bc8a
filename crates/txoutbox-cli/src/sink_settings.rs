//! Where the daemon publishes (`--sink`), and the NATS sink's settings from flags and the
//! environment (secrets from variables or mounted files, never from flags).

use txoutbox_nats::{NatsAuth, NatsConfig};
use txoutbox_rabbitmq::RabbitMqConfig;
use txoutbox_redis::RedisConfig;

use crate::cli::RelayArgs;
use crate::environment::value_or_file;
use crate::error::CliError;

/// The sink the daemon publishes through.
#[derive(Debug, Clone)]
pub(crate) enum SinkSettings {
    /// Kafka, with `RelaySettings::kafka`.
    Kafka,
    /// NATS JetStream (boxed: a config is large beside the empty Kafka variant).
    Nats(Box<NatsConfig>),
    /// RabbitMQ.
    Rabbitmq(Box<RabbitMqConfig>),
    /// Redis Streams.
    Redis(Box<RedisConfig>),
}

impl SinkSettings {
    /// The sink's name, as `/status` shows it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::Nats(_) => "nats",
            Self::Rabbitmq(_) => "rabbitmq",
            Self::Redis(_) => "redis",
        }
    }

    /// Where the sink publishes, without credentials (for logs and errors).
    pub(crate) fn destination(&self) -> Option<String> {
        match self {
            Self::Kafka => None,
            Self::Nats(config) => Some(config.servers_redacted()),
            Self::Rabbitmq(config) => Some(config.uri_redacted()),
            Self::Redis(config) => Some(config.url_redacted()),
        }
    }
}

/// A URL given by its flag or variable (clap), else by the variable's `_FILE` form; empty counts
/// as unset.
fn url(flag: &Option<String>, var: &str) -> Result<Option<String>, CliError> {
    let url = match flag {
        Some(url) => Some(url.clone()),
        None => value_or_file(var)?,
    };
    Ok(url.filter(|url| !url.trim().is_empty()))
}

/// The RabbitMQ sink's settings from the `--rabbitmq-*` flags (or their variables).
pub(crate) fn rabbitmq_config(args: &RelayArgs) -> Result<RabbitMqConfig, CliError> {
    let uri = url(&args.rabbitmq_url, "TXOUTBOX_RABBITMQ_URL")?.ok_or_else(|| {
        CliError::usage(
            "--sink rabbitmq needs --rabbitmq-url (TXOUTBOX_RABBITMQ_URL or TXOUTBOX_RABBITMQ_URL_FILE), \
             e.g. amqp://relay:password@rabbit:5672/%2f",
        )
    })?;
    let mut config = RabbitMqConfig::new(uri);
    if let Some(exchange) = &args.rabbitmq_exchange {
        config = config.exchange(exchange.clone());
    }
    if let Some(template) = &args.rabbitmq_routing_key {
        config = config
            .routing_key(template)
            .map_err(|e| CliError::usage(format!("bad --rabbitmq-routing-key: {e}")))?;
    }
    if let Some(timeout) = args.rabbitmq_confirm_timeout {
        config = config.confirm_timeout(timeout);
    }
    if let Some(bytes) = args.rabbitmq_max_message_bytes {
        config = config.max_message_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    config.validate().map_err(|e| CliError::usage(e.to_string()))?;
    Ok(config)
}

/// The Redis Streams sink's settings from the `--redis-*` flags (or their variables).
pub(crate) fn redis_config(args: &RelayArgs) -> Result<RedisConfig, CliError> {
    let url = url(&args.redis_url, "TXOUTBOX_REDIS_URL")?.ok_or_else(|| {
        CliError::usage(
            "--sink redis needs --redis-url (TXOUTBOX_REDIS_URL or TXOUTBOX_REDIS_URL_FILE), e.g. \
             redis://:password@cache:6379/0",
        )
    })?;
    let mut config = RedisConfig::new(url);
    if let Some(template) = &args.redis_stream_key {
        config = config
            .stream_key(template)
            .map_err(|e| CliError::usage(format!("bad --redis-stream-key: {e}")))?;
    }
    if let Some(entries) = args.redis_max_len {
        config = config.max_len(entries);
    }
    if let Some(timeout) = args.redis_response_timeout {
        config = config.response_timeout(timeout);
    }
    config.validate().map_err(|e| CliError::usage(e.to_string()))?;
    Ok(config)
}

/// The NATS sink's settings: `--nats-*` flags (or their variables), and at most one of a
/// credentials file, a user and password, a token or an NKey seed.
pub(crate) fn nats_config(args: &RelayArgs) -> Result<NatsConfig, CliError> {
    let url = args
        .nats_url
        .clone()
        .filter(|url| !url.trim().is_empty())
        .ok_or_else(|| {
            CliError::usage("--sink nats needs --nats-url (TXOUTBOX_NATS_URL), e.g. nats://127.0.0.1:4222")
        })?;
    let mut config = NatsConfig::new(url);
    if let Some(template) = &args.nats_subject {
        config = config
            .subject(template)
            .map_err(|e| CliError::usage(format!("bad --nats-subject: {e}")))?;
    }
    // An empty variable counts as unset (a template that renders nothing, an empty secret).
    let secret = |var: &str| -> Result<Option<String>, CliError> {
        Ok(value_or_file(var)?.filter(|value| !value.trim().is_empty()))
    };
    let password = secret("TXOUTBOX_NATS_PASSWORD")?;
    let token = secret("TXOUTBOX_NATS_TOKEN")?;
    let nkey = secret("TXOUTBOX_NATS_NKEY")?;
    for (flag, path) in [
        ("--nats-creds-file", &args.nats_creds_file),
        ("--nats-tls-ca-file", &args.nats_tls_ca_file),
        ("--nats-tls-cert-file", &args.nats_tls_cert_file),
        ("--nats-tls-key-file", &args.nats_tls_key_file),
    ] {
        if let Some(path) = path
            && !path.is_file()
        {
            return Err(CliError::usage(format!(
                "{flag} {}: no such file (or not readable here)",
                path.display()
            )));
        }
    }
    let mut ways = Vec::new();
    if let Some(path) = &args.nats_creds_file {
        ways.push(NatsAuth::CredentialsFile(path.clone()));
    }
    match (&args.nats_user, password) {
        (Some(user), Some(password)) => ways.push(NatsAuth::UserPassword {
            user: user.clone(),
            password,
        }),
        (Some(_), None) => {
            return Err(CliError::usage(
                "--nats-user needs a password in TXOUTBOX_NATS_PASSWORD or TXOUTBOX_NATS_PASSWORD_FILE",
            ));
        }
        (None, Some(_)) => {
            return Err(CliError::usage(
                "TXOUTBOX_NATS_PASSWORD needs --nats-user (TXOUTBOX_NATS_USER)",
            ));
        }
        (None, None) => {}
    }
    if let Some(token) = token {
        ways.push(NatsAuth::Token(token.trim().to_owned()));
    }
    if let Some(seed) = nkey {
        ways.push(NatsAuth::NKey(seed.trim().to_owned()));
    }
    if ways.len() > 1 {
        return Err(CliError::usage(
            "give NATS one way to authenticate: a credentials file, a user and password, a token or an NKey seed",
        ));
    }
    if let Some(auth) = ways.pop() {
        config = config.auth(auth);
    }
    if let Some(path) = &args.nats_tls_ca_file {
        config = config.root_certificates(path.clone());
    }
    if let (Some(cert), Some(key)) = (&args.nats_tls_cert_file, &args.nats_tls_key_file) {
        config = config.client_certificate(cert.clone(), key.clone());
    }
    config = config.require_tls(args.nats_require_tls);
    if let Some(timeout) = args.nats_ack_timeout {
        config = config.ack_timeout(timeout);
    }
    config.validate().map_err(|e| CliError::usage(e.to_string()))?;
    Ok(config)
}
