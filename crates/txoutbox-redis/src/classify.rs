//! Redis errors sorted into the relay's classes, at the boundary.

use redis::{ErrorKind, RedisError};
use txoutbox_core::{SinkError, SinkErrorKind};

/// Turns a failed `XADD` to `stream` (or a failed batch) into a classified [`SinkError`] whose
/// message says what to do.
///
/// - `WRONGTYPE` (the key holds something that is not a stream), `NOPERM` (the user may not
///   write the key), a refusal of the command itself (`ERR …`): permanent for the message.
/// - Any code not known here: transient (a proxy's or module's condition may pass).
/// - Out of memory (`OOM`, `maxmemory` reached), a replica or a loading server (`READONLY`,
///   `MASTERDOWN`, `LOADING`), a failed snapshot (`MISCONF`), a busy script (`BUSY`), a cluster
///   in motion (`TRYAGAIN`, `CLUSTERDOWN`, `MOVED`, `ASK`), a connection lost, a timeout:
///   transient (retried without counting an attempt).
pub(crate) fn classify(error: &RedisError, stream: &str) -> SinkError {
    let code = error.code().unwrap_or_default().to_owned();
    let (kind, hint) = match (error.kind(), code.as_str()) {
        (_, "WRONGTYPE") => (
            SinkErrorKind::Permanent,
            " (the key holds a value that is not a stream: use another stream key template, or \
             remove the key; then replay the message)",
        ),
        (_, "NOPERM") => (
            SinkErrorKind::Permanent,
            " (the relay's user may not run XADD on this key: grant it in the ACL, then replay)",
        ),
        (_, "OOM") => (
            SinkErrorKind::Transient,
            " (maxmemory reached and the policy evicts nothing: retried until there is room)",
        ),
        (_, "MOVED" | "ASK" | "CROSSSLOT") => (
            SinkErrorKind::Transient,
            " (a Redis Cluster node: the sink speaks to one server; point --redis-url at a \
             standalone server or primary)",
        ),
        (
            _,
            "READONLY" | "MASTERDOWN" | "LOADING" | "MISCONF" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN"
            | "NOREPLICAS" | "NOAUTH",
        ) => (SinkErrorKind::Transient, ""),
        (ErrorKind::AuthenticationFailed, _) => (
            SinkErrorKind::Transient,
            " (check the user and password: TXOUTBOX_REDIS_URL, or its _FILE form)",
        ),
        // The command itself refused (`ERR …`): it would be refused again.
        (ErrorKind::Server(redis::ServerErrorKind::ResponseError), _) => (SinkErrorKind::Permanent, ""),
        _ => (SinkErrorKind::Transient, ""),
    };
    SinkError::new(
        kind,
        (!code.is_empty()).then_some(code),
        format!("stream `{stream}`: {error}{hint}"),
    )
}

/// [`classify`] for a failure of a whole batch (the connection, its setup — a refused `SELECT`,
/// too many clients — or the pipeline): transient unless the server refused the command itself
/// for the key (`WRONGTYPE`, `NOPERM`).
pub(crate) fn classify_batch(error: &RedisError, stream: &str) -> SinkError {
    let classified = classify(error, stream);
    if classified.kind() == SinkErrorKind::Permanent && !matches!(error.code(), Some("WRONGTYPE" | "NOPERM"))
    {
        return SinkError::new(
            SinkErrorKind::Transient,
            classified.code().map(str::to_owned),
            classified.to_string(),
        );
    }
    classified
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_is_transient() {
        let io = RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert!(classify(&io, "s").is_transient());
    }
}
