//! Connection URLs without their secrets, for messages, logs and status pages.

/// `url` with its password (in the user information, or a `password` / `pass` query parameter)
/// replaced by `***`, for messages, logs and status pages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first `/` or `?` after its last `@`: a password may hold either.
    let host_start = rest.rfind('@').map_or(0, |at| at + 1);
    let authority_end = rest
        .get(host_start..)
        .and_then(|host| host.find(['/', '?']))
        .map_or(rest.len(), |end| host_start + end);
    let (authority, tail) = rest.split_at(authority_end);
    let tail = redact_query(tail);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => format!("{scheme}://{userinfo}@{host}{tail}"),
        },
        None => format!("{scheme}://{authority}{tail}"),
    }
}

/// Hides `password=` query parameters.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _))
                if key.to_ascii_lowercase().contains("password") || key.eq_ignore_ascii_case("pass") =>
            {
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/shop?sslmode=require"),
            "postgres://app:***@db:5432/shop?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/shop?password=s3cret"),
            "postgres://db/shop?password=***"
        );
        assert_eq!(redact_url("postgres://app@db/shop"), "postgres://app@db/shop");
        assert_eq!(
            redact_url("sqlite:///var/lib/shop.db"),
            "sqlite:///var/lib/shop.db"
        );
        assert_eq!(
            redact_url("amqp://relay:pw:x@h:5672/v"),
            "amqp://relay:***@h:5672/v"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=secret"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(
            redact_url("amqp://relay:p/w?x@h:5672/v"),
            "amqp://relay:***@h:5672/v"
        );
    }
}
