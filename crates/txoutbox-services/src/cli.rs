//! The commands of `txoutbox-services` (what `scripts/services.sh` runs): progress on stderr,
//! results on stdout.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::env_file::{
    external_kafka, external_mysql, external_nats, external_postgres, external_rabbitmq, external_redis,
    render, variables, write_env_file,
};
use crate::kafka_service::{self, Node};
use crate::lock::Lock;
use crate::{Settings, kafka, mariadb, nats, postgres, process, rabbitmq, redis, say, tools};

/// The help text (`help`).
pub const USAGE: &str = "\
Local services for txoutbox's demo, tests and CI, all on loopback (127.0.0.1):
  Apache Kafka 4.1.1 (KRaft, one combined broker+controller node, jars from Maven Central),
  PostgreSQL (our own cluster, not Debian's system one), MariaDB (our own instance), NATS 2.15.3
  with JetStream (nats-server built with `go install` on first use), RabbitMQ and Redis (our own
  instances of Debian's packages).

Usage:
  scripts/services.sh up [kafka] [postgres] [mariadb] [nats] [rabbitmq] [redis]
                                                          start (default: kafka postgres), wait until
                                                          ready, write the env file, print its path (a
                                                          broker it starts begins with no topics)
  scripts/services.sh up kafka-cluster                    a 3-node KRaft cluster besides (nodes 11, 12, 13:
                                                          replication factor 3, min.insync.replicas=2); its
                                                          brokers go to TXOUTBOX_KAFKA_CLUSTER_BOOTSTRAP
  scripts/services.sh env                                 `export TXOUTBOX_...=...` lines for what is up
                                                          (eval \"$(scripts/services.sh env)\")
  scripts/services.sh status                              one line per service
  scripts/services.sh down [service...]                   stop what we started (default: all)
  scripts/services.sh reset [service...]                  down, then delete its data (default: all)
  scripts/services.sh kafka-kill [node]                   SIGKILL the Kafka node (default node 1)
  scripts/services.sh kafka-stop [node]                   SIGTERM it and wait (controlled shutdown)
  scripts/services.sh kafka-start [node]                  start it again on the same data folder
                                                          (node 11, 12 or 13: one node of the cluster)
  scripts/services.sh kafka-lib                           fetch the Kafka jars if needed; print their folder
  scripts/services.sh toxiproxy                           build Toxiproxy 2.12.0 with `go install` if needed;
                                                          print its server binary (network-fault tests)
  scripts/services.sh pg-bindir                           install PostgreSQL if needed; print its bin folder
                                                          (both for tests that run private instances)
  scripts/services.sh browser                             install Chromium and chromedriver if needed (Debian's
                                                          chromium, chromium-driver; `up` does it too); print
                                                          chromedriver's path (for the web console's browser tests)

Service names: kafka; kafka-cluster; postgres (pg, postgresql); mariadb (mysql); nats; rabbitmq; redis.

A service that the environment already names is used as is and never started or stopped here:
  TXOUTBOX_KAFKA_BOOTSTRAP (or KAFKA_BOOTSTRAP), TXOUTBOX_POSTGRES_URL (or DATABASE_URL when it is
  a postgres:// URL), TXOUTBOX_MYSQL_URL, TXOUTBOX_NATS_URL, TXOUTBOX_RABBITMQ_URL, TXOUTBOX_REDIS_URL. A value equal to our own local address counts as ours, so
  a shell that did `eval \"$(scripts/services.sh env)\"` can still run `up`/`down` again.

Settings (environment):
  TXOUTBOX_SERVICES_DIR            data, logs, pids, env file   ($HOME/.cache/txoutbox/services)
  TXOUTBOX_KAFKA_HOME              Kafka jar cache              ($HOME/.cache/txoutbox/kafka-4.1.1)
  TXOUTBOX_KAFKA_PORT              broker port                  (19092)
  TXOUTBOX_KAFKA_CONTROLLER_PORT   KRaft controller port        (19093)
  TXOUTBOX_KAFKA_HEAP              JVM heap options             (-Xms512m -Xmx1g)
  TXOUTBOX_KAFKA_CLUSTER_PORT      first cluster port           (29092: brokers 29092/94/96,
                                                                 controllers 29093/95/97)
  TXOUTBOX_KAFKA_CLUSTER_HEAP      heap of each cluster node    (-Xms128m -Xmx384m)
  TXOUTBOX_POSTGRES_PORT           PostgreSQL port              (55432)
  TXOUTBOX_MARIADB_PORT            MariaDB port                 (33306)
  TXOUTBOX_NATS_PORT               NATS port                    (14222)
  TXOUTBOX_RABBITMQ_PORT           RabbitMQ AMQP port           (35672; +1, +2: its Erlang ports)
  TXOUTBOX_REDIS_PORT              Redis port                   (16379)
  TXOUTBOX_PG_BINDIR               PostgreSQL bin folder        (the highest /usr/lib/postgresql/*/bin)
  TXOUTBOX_SERVICES_TIMEOUT        seconds to wait for a service to become ready (120)
  TXOUTBOX_KAFKA_KEEP_DATA         1: `up` keeps the broker's topics from its last run (default:
                                   a broker that `up` starts begins empty; kafka-start keeps them)

Progress goes to stderr; `up` prints only the env file's path on stdout.
";

/// A service name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Node 1: `kafka`.
    Kafka,
    /// Nodes 11, 12, 13: `kafka-cluster`.
    KafkaCluster,
    /// `postgres`, `postgresql`, `pg`.
    Postgres,
    /// `mariadb`, `mysql`.
    Mariadb,
    /// `nats`.
    Nats,
    /// `rabbitmq`.
    Rabbitmq,
    /// `redis`.
    Redis,
}

impl Service {
    /// Its canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::KafkaCluster => "kafka-cluster",
            Self::Postgres => "postgres",
            Self::Mariadb => "mariadb",
            Self::Nats => "nats",
            Self::Rabbitmq => "rabbitmq",
            Self::Redis => "redis",
        }
    }
}

/// Service names, deduplicated in the given order; `default` when none are given.
pub fn parse_services(args: &[String], default: &[Service]) -> Result<Vec<Service>> {
    let mut out = Vec::new();
    for a in args {
        let s = match a.as_str() {
            "kafka" => Service::Kafka,
            "kafka-cluster" => Service::KafkaCluster,
            "postgres" | "postgresql" | "pg" => Service::Postgres,
            "mariadb" | "mysql" => Service::Mariadb,
            "nats" => Service::Nats,
            "rabbitmq" => Service::Rabbitmq,
            "redis" => Service::Redis,
            _ => bail!(
                "unknown service '{a}' (known: kafka, kafka-cluster, postgres, mariadb, nats, rabbitmq, redis)"
            ),
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        out.extend_from_slice(default);
    }
    Ok(out)
}

/// `[node]`: a node id (default 1).
pub fn parse_node(args: &[String]) -> Result<u32> {
    match args {
        [] => Ok(1),
        [id] => id
            .parse()
            .with_context(|| format!("kafka: no node {id} (nodes: 1 11 12 13)")),
        _ => bail!("kafka: one node at most (got {})", args.join(" ")),
    }
}

const ALL: &[Service] = &[
    Service::Kafka,
    Service::KafkaCluster,
    Service::Mariadb,
    Service::Nats,
    Service::Rabbitmq,
    Service::Redis,
    Service::Postgres,
];

/// Runs a command line (without the program name).
pub fn run(args: &[String]) -> Result<ExitCode> {
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("", args),
    };
    if matches!(command, "-h" | "--help" | "help") {
        eprint!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let settings = Settings::from_env()?;
    let s = &settings;
    match command {
        "up" => up(s, &parse_services(rest, &[Service::Kafka, Service::Postgres])?)?,
        "down" => {
            let services = parse_services(rest, ALL)?;
            let _lock = lock(s)?;
            down(s, &services)?;
        }
        "reset" => reset(s, &parse_services(rest, ALL)?)?,
        "env" => out(&render(&variables(s))),
        "status" => status(s),
        "kafka-kill" => kafka_signal(s, "KILL", parse_node(rest)?)?,
        "kafka-stop" => kafka_signal(s, "TERM", parse_node(rest)?)?,
        "kafka-start" => kafka_start(s, parse_node(rest)?)?,
        "kafka-lib" => line(kafka::jars(s)?.display()),
        "pg-bindir" => line(postgres::bindir(s)?.display()),
        "toxiproxy" => line(tools::toxiproxy(s)?.display()),
        "browser" => line(tools::chromedriver(s)?.display()),
        _ => {
            eprint!("{USAGE}");
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a command's result on stdout; a reader gone (`| head -1`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// [`out`] of a line.
fn line(text: impl std::fmt::Display) {
    out(&format!("{text}\n"));
}

/// The services folder's lock: one invocation at a time starts or stops services.
fn lock(s: &Settings) -> Result<Lock> {
    Lock::acquire(
        &s.services_dir.join(".lock"),
        "another scripts/services.sh running?",
    )
}

fn up(s: &Settings, services: &[Service]) -> Result<()> {
    let t0 = Instant::now();
    let _lock = lock(s)?;
    // Launch the slow starters first (Kafka's JVMs, mariadbd), do PostgreSQL meanwhile, then wait.
    let mut kafka_pending = Vec::new();
    if services.contains(&Service::Kafka) {
        match external_kafka(s) {
            Some(ext) => say!("kafka: using {ext} from the environment (nothing started)"),
            None => kafka_pending.extend(kafka_service::launch(s, &[kafka_service::single(s)])?),
        }
    }
    if services.contains(&Service::KafkaCluster) {
        kafka_pending.extend(kafka_service::launch(s, &kafka_service::cluster(s))?);
    }
    let mut mariadb_pending = None;
    if services.contains(&Service::Mariadb) {
        match external_mysql(s) {
            Some(ext) => say!("mariadb: using {ext} from the environment (nothing started)"),
            None => mariadb_pending = mariadb::launch(s)?,
        }
    }
    let mut nats_pending = None;
    if services.contains(&Service::Nats) {
        match external_nats(s) {
            Some(ext) => say!("nats: using {ext} from the environment (nothing started)"),
            None => nats_pending = nats::launch(s)?,
        }
    }
    let mut rabbitmq_pending = None;
    if services.contains(&Service::Rabbitmq) {
        match external_rabbitmq(s) {
            Some(ext) => say!("rabbitmq: using {ext} from the environment (nothing started)"),
            None => rabbitmq_pending = rabbitmq::launch(s)?,
        }
    }
    let mut redis_pending = None;
    if services.contains(&Service::Redis) {
        match external_redis(s) {
            Some(ext) => say!("redis: using {ext} from the environment (nothing started)"),
            None => redis_pending = redis::launch(s)?,
        }
    }
    if services.contains(&Service::Postgres) {
        match external_postgres(s) {
            Some(ext) => say!("postgres: using {ext} from the environment (nothing started)"),
            None => postgres::up(s)?,
        }
    }
    kafka_service::wait(s, kafka_pending)?;
    mariadb::wait(s, mariadb_pending)?;
    nats::wait(s, nats_pending)?;
    rabbitmq::wait(s, rabbitmq_pending)?;
    redis::wait(s, redis_pending)?;
    write_env_file(s)?;
    if let Err(e) = tools::chromedriver(s) {
        say!("chromium: not installed ({e:#}); the web console's browser tests will be skipped");
    }
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    say!(
        "services: up ({}) in {} s; env: {}",
        names.join(" "),
        process::since(t0),
        s.env_file().display()
    );
    line(s.env_file().display());
    Ok(())
}

fn down(s: &Settings, services: &[Service]) -> Result<()> {
    for service in services {
        match service {
            Service::Kafka => kafka_service::stop_node(s, 1, "TERM")?,
            Service::KafkaCluster => kafka_service::cluster_down(s)?,
            Service::Postgres => postgres::down(s)?,
            Service::Mariadb => mariadb::down(s)?,
            Service::Nats => nats::down(s)?,
            Service::Rabbitmq => rabbitmq::down(s)?,
            Service::Redis => redis::down(s)?,
        }
    }
    write_env_file(s)
}

fn reset(s: &Settings, services: &[Service]) -> Result<()> {
    let _lock = lock(s)?;
    down(s, services)?;
    for service in services {
        match service {
            Service::Kafka => kafka_service::delete_data(s, &[kafka_service::single(s)]),
            Service::KafkaCluster => kafka_service::delete_data(s, &kafka_service::cluster(s)),
            Service::Postgres => postgres::delete_data(s)?,
            Service::Mariadb => mariadb::delete_data(s),
            Service::Nats => nats::daemon(s).delete_data(),
            Service::Rabbitmq => rabbitmq::daemon(s).delete_data(),
            Service::Redis => redis::daemon(s).delete_data(),
        }
        say!("{}: data deleted", service.name());
    }
    Ok(())
}

fn status(s: &Settings) {
    match external_kafka(s) {
        Some(ext) => line(format!("kafka      external  {ext}")),
        None => kafka_service::status(s, &[kafka_service::single(s)])
            .iter()
            .for_each(line),
    }
    // The cluster only once it was set up (`up kafka-cluster`).
    if kafka_service::node_dir(s, 11).is_dir() {
        kafka_service::status(s, &kafka_service::cluster(s))
            .iter()
            .for_each(line);
    }
    match external_postgres(s) {
        Some(ext) => line(format!("postgres   external  {ext}")),
        None => line(postgres::status(s)),
    }
    match external_mysql(s) {
        Some(ext) => line(format!("mariadb    external  {ext}")),
        None => line(mariadb::status(s)),
    }
    match external_nats(s) {
        Some(ext) => line(format!("nats       external  {}", redact_url(&ext))),
        None => line(nats::daemon(s).status()),
    }
    match external_rabbitmq(s) {
        Some(ext) => line(format!("rabbitmq   external  {}", redact_url(&ext))),
        None => line(rabbitmq::daemon(s).status()),
    }
    match external_redis(s) {
        Some(ext) => line(format!("redis      external  {}", redact_url(&ext))),
        None => line(redis::daemon(s).status()),
    }
}

/// A URL with any password in it shown as `***`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// Node `id`, when the command may act on it: the cluster's always, node 1 only when the
/// environment names no external broker.
fn own_node(s: &Settings, command: &str, id: u32) -> Result<Node> {
    if !kafka_service::is_cluster_node(id)
        && let Some(ext) = external_kafka(s)
    {
        bail!("kafka: the environment names an external broker ({ext}); {command} acts only on ours");
    }
    kafka_service::node(s, id)
}

fn kafka_signal(s: &Settings, sig: &str, id: u32) -> Result<()> {
    own_node(s, &format!("kafka-{}", sig.to_lowercase()), id)?;
    let _lock = lock(s)?;
    if kafka_service::pid(s, id).is_none() {
        bail!("kafka: kafka-{id} is not running");
    }
    kafka_service::stop_node(s, id, sig)?;
    write_env_file(s)
}

fn kafka_start(s: &Settings, id: u32) -> Result<()> {
    let node = own_node(s, "kafka-start", id)?;
    let _lock = lock(s)?;
    let pending = match kafka_service::pid(s, id) {
        Some(pid) => {
            say!("kafka: kafka-{id} already running (pid {pid})");
            kafka_service::launch(s, &[node])?
        }
        None => vec![kafka_service::launch_node(s, node, false)?],
    };
    kafka_service::wait(s, pending)?;
    write_env_file(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn service_names() {
        use Service::*;
        assert_eq!(
            parse_services(&words("pg mysql postgresql kafka"), &[]).unwrap(),
            [Postgres, Mariadb, Kafka]
        );
        assert_eq!(
            parse_services(&[], &[Kafka, Postgres]).unwrap(),
            [Kafka, Postgres]
        );
        assert_eq!(
            parse_services(&words("kafka-cluster"), &[Kafka]).unwrap(),
            [KafkaCluster]
        );
        assert_eq!(
            parse_services(&words("nats rabbitmq redis"), &[]).unwrap(),
            [Nats, Rabbitmq, Redis]
        );
        let e = parse_services(&words("kafka9"), &[]).unwrap_err().to_string();
        assert!(e.contains("unknown service 'kafka9'"), "{e}");
        assert_eq!(redact_url("amqp://u:pw@h:1/v"), "amqp://u:***@h:1/v");
        assert_eq!(redact_url("redis://h:1/"), "redis://h:1/");
    }

    #[test]
    fn nodes() {
        assert_eq!(parse_node(&[]).unwrap(), 1);
        assert_eq!(parse_node(&words("12")).unwrap(), 12);
        assert!(parse_node(&words("x")).is_err());
        assert!(parse_node(&words("1 2")).is_err());
    }
}
