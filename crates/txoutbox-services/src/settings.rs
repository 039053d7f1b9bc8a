//! Settings from the environment: folders, ports, heaps, timeouts and the services the
//! environment names (used as they are, never started or stopped).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::files::{mkdir, set_mode};

/// The Apache Kafka version whose jars the cache holds (`scripts/kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.1.1";

/// User, password and database of the test databases (also in their URLs).
pub const DB_USER: &str = "txoutbox";
/// See [`DB_USER`].
pub const DB_PASS: &str = "txoutbox";
/// See [`DB_USER`].
pub const DB_NAME: &str = "txoutbox";

/// Everything the environment decides, read once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The user's home folder (`HOME`, else from `/etc/passwd`).
    pub home: PathBuf,
    /// Data, logs, pids and the env file (`TXOUTBOX_SERVICES_DIR`).
    pub services_dir: PathBuf,
    /// The Kafka jar cache (`TXOUTBOX_KAFKA_HOME`); the jars are in its `lib`.
    pub kafka_home: PathBuf,
    /// The broker port of node 1 (`TXOUTBOX_KAFKA_PORT`).
    pub kafka_port: u16,
    /// The controller port of node 1 (`TXOUTBOX_KAFKA_CONTROLLER_PORT`).
    pub kafka_controller_port: u16,
    /// JVM heap options of node 1 (`TXOUTBOX_KAFKA_HEAP`).
    pub kafka_heap: Vec<String>,
    /// The first port of the 3-node cluster (`TXOUTBOX_KAFKA_CLUSTER_PORT`).
    pub kafka_cluster_port: u16,
    /// JVM heap options of each cluster node (`TXOUTBOX_KAFKA_CLUSTER_HEAP`).
    pub kafka_cluster_heap: Vec<String>,
    /// Our PostgreSQL's port (`TXOUTBOX_POSTGRES_PORT`).
    pub postgres_port: u16,
    /// Our MariaDB's port (`TXOUTBOX_MARIADB_PORT`).
    pub mariadb_port: u16,
    /// Our NATS server's port (`TXOUTBOX_NATS_PORT`).
    pub nats_port: u16,
    /// Our RabbitMQ node's AMQP port (`TXOUTBOX_RABBITMQ_PORT`; the next two are its Erlang
    /// distribution and port-mapper ports).
    pub rabbitmq_port: u16,
    /// Our Redis server's port (`TXOUTBOX_REDIS_PORT`).
    pub redis_port: u16,
    /// How long a service may take to become ready (`TXOUTBOX_SERVICES_TIMEOUT`, seconds).
    pub timeout: Duration,
    /// `TXOUTBOX_KAFKA_KEEP_DATA=1`: `up` keeps the broker's topics from its last run.
    pub keep_kafka_data: bool,
    /// `TXOUTBOX_KAFKA_BOOTSTRAP`, else `KAFKA_BOOTSTRAP`.
    pub env_kafka: Option<String>,
    /// `TXOUTBOX_POSTGRES_URL`, else `DATABASE_URL` when it is a `postgres://` URL.
    pub env_postgres: Option<String>,
    /// `TXOUTBOX_MYSQL_URL`.
    pub env_mysql: Option<String>,
    /// `TXOUTBOX_NATS_URL`.
    pub env_nats: Option<String>,
    /// `TXOUTBOX_RABBITMQ_URL`.
    pub env_rabbitmq: Option<String>,
    /// `TXOUTBOX_REDIS_URL`.
    pub env_redis: Option<String>,
    /// `TXOUTBOX_PG_BINDIR`: the PostgreSQL bin folder to use instead of searching.
    pub pg_bindir: Option<PathBuf>,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Self::from_vars(|name| std::env::var(name).ok(), &cwd)
    }

    /// Reads settings through `var` (a variable's value, `None` when unset); relative folders are
    /// taken from `cwd`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, cwd: &Path) -> Result<Self> {
        let set = |name: &str| var(name).filter(|v| !v.is_empty());
        let home = match set("HOME") {
            Some(home) => PathBuf::from(home),
            None => crate::process::passwd_home()
                .context("HOME is not set and /etc/passwd has no home folder for this user")?,
        };
        let folder = |name: &str, default: PathBuf| {
            let p = set(name).map_or(default, PathBuf::from);
            if p.is_absolute() { p } else { cwd.join(p) }
        };
        let port = |name: &str, default: u16| -> Result<u16> {
            match set(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u16>() {
                    Ok(p) if p > 0 => Ok(p),
                    _ => bail!("{name}={v} is not a TCP port (1 to 65535)"),
                },
            }
        };
        let words = |name: &str, default: &str| -> Vec<String> {
            set(name)
                .unwrap_or_else(|| default.to_owned())
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let timeout = match set("TXOUTBOX_SERVICES_TIMEOUT") {
            None => 120,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .with_context(|| format!("TXOUTBOX_SERVICES_TIMEOUT={v} is not a number of seconds"))?,
        };
        let cache = home.join(".cache/txoutbox");
        let kafka_cluster_port = port("TXOUTBOX_KAFKA_CLUSTER_PORT", 29092)?;
        if kafka_cluster_port > u16::MAX - 5 {
            bail!(
                "TXOUTBOX_KAFKA_CLUSTER_PORT={kafka_cluster_port} leaves no room for the cluster's six ports"
            );
        }
        let env_postgres = set("TXOUTBOX_POSTGRES_URL").or_else(|| {
            set("DATABASE_URL").filter(|v| v.starts_with("postgres://") || v.starts_with("postgresql://"))
        });
        Ok(Self {
            services_dir: folder("TXOUTBOX_SERVICES_DIR", cache.join("services")),
            kafka_home: folder(
                "TXOUTBOX_KAFKA_HOME",
                cache.join(format!("kafka-{KAFKA_VERSION}")),
            ),
            kafka_port: port("TXOUTBOX_KAFKA_PORT", 19092)?,
            kafka_controller_port: port("TXOUTBOX_KAFKA_CONTROLLER_PORT", 19093)?,
            kafka_heap: words("TXOUTBOX_KAFKA_HEAP", "-Xms512m -Xmx1g"),
            kafka_cluster_port,
            kafka_cluster_heap: words("TXOUTBOX_KAFKA_CLUSTER_HEAP", "-Xms128m -Xmx384m"),
            postgres_port: port("TXOUTBOX_POSTGRES_PORT", 55432)?,
            mariadb_port: port("TXOUTBOX_MARIADB_PORT", 33306)?,
            nats_port: port("TXOUTBOX_NATS_PORT", 14222)?,
            rabbitmq_port: port("TXOUTBOX_RABBITMQ_PORT", 35672)?,
            redis_port: port("TXOUTBOX_REDIS_PORT", 16379)?,
            timeout: Duration::from_secs(timeout),
            keep_kafka_data: set("TXOUTBOX_KAFKA_KEEP_DATA").as_deref() == Some("1"),
            env_kafka: set("TXOUTBOX_KAFKA_BOOTSTRAP").or_else(|| set("KAFKA_BOOTSTRAP")),
            env_postgres,
            env_mysql: set("TXOUTBOX_MYSQL_URL"),
            env_nats: set("TXOUTBOX_NATS_URL"),
            env_rabbitmq: set("TXOUTBOX_RABBITMQ_URL"),
            env_redis: set("TXOUTBOX_REDIS_URL"),
            pg_bindir: set("TXOUTBOX_PG_BINDIR").map(PathBuf::from),
            home,
        })
    }

    /// The folder of the Kafka jars.
    pub fn kafka_lib(&self) -> PathBuf {
        self.kafka_home.join("lib")
    }

    /// The env file `up` and `down` write.
    pub fn env_file(&self) -> PathBuf {
        self.services_dir.join("env")
    }

    /// The tools' cache, `~/.cache/txoutbox`.
    pub fn cache_dir(&self) -> PathBuf {
        self.home.join(".cache/txoutbox")
    }

    /// Data folder root of a database server that runs as OS user `user` (`postgres`, `mysql`):
    /// normally `<services dir>/<name>`, but that user must be able to reach it; when it cannot
    /// (e.g. `$HOME` is `/root`, mode 700) the data lives in `/var/tmp/txoutbox-<hash>/<name>` and
    /// `<services dir>/<name>` is a symlink to it. With `create`, makes the folder (owned by that
    /// user); else `None` when the service was never set up.
    pub fn db_root(&self, name: &str, user: &str, create: bool) -> Result<Option<PathBuf>> {
        use crate::process::{as_user, is_root, sha256_hex};
        let link = self.services_dir.join(name);
        let target = if link.is_symlink() {
            std::fs::read_link(&link).with_context(|| format!("read the link {}", link.display()))?
        } else if link.is_dir() {
            link.clone()
        } else if !create {
            return Ok(None);
        } else {
            mkdir(&self.services_dir)?;
            let reachable = !is_root()
                || as_user(user, "test")
                    .arg("-x")
                    .arg(&self.services_dir)
                    .status()
                    .is_ok_and(|s| s.success());
            if reachable {
                link.clone()
            } else {
                let hash = sha256_hex(self.services_dir.as_os_str().as_encoded_bytes())?;
                let base = PathBuf::from(format!("/var/tmp/txoutbox-{}", hash.get(..10).unwrap_or(&hash)));
                mkdir(&base)?;
                set_mode(&base, 0o755)?;
                let target = base.join(name);
                std::os::unix::fs::symlink(&target, &link)
                    .with_context(|| format!("link {} to {}", link.display(), target.display()))?;
                target
            }
        };
        if create && !target.is_dir() {
            mkdir(&target)?;
            if is_root() {
                crate::process::chown_to(&target, user)?;
            }
            set_mode(&target, 0o700)?;
        }
        Ok(Some(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_vars(|n| map.get(n).cloned(), Path::new("/work"))
    }

    #[test]
    fn defaults() {
        let s = settings(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(s.services_dir, PathBuf::from("/home/u/.cache/txoutbox/services"));
        assert_eq!(
            s.kafka_lib(),
            PathBuf::from("/home/u/.cache/txoutbox/kafka-4.1.1/lib")
        );
        assert_eq!(
            (s.kafka_port, s.kafka_controller_port, s.kafka_cluster_port),
            (19092, 19093, 29092)
        );
        assert_eq!(
            (s.postgres_port, s.mariadb_port, s.nats_port),
            (55432, 33306, 14222)
        );
        assert_eq!(s.kafka_heap, ["-Xms512m", "-Xmx1g"]);
        assert_eq!(s.timeout, Duration::from_secs(120));
        assert!(!s.keep_kafka_data && s.env_kafka.is_none() && s.env_postgres.is_none());
    }

    #[test]
    fn relative_folders_bad_ports_and_database_url() {
        let s = settings(&[
            ("HOME", "/h"),
            ("TXOUTBOX_SERVICES_DIR", "svc"),
            ("KAFKA_BOOTSTRAP", "k:9092"),
            ("DATABASE_URL", "postgresql://x@y/z"),
        ])
        .unwrap();
        assert_eq!(s.services_dir, PathBuf::from("/work/svc"));
        assert_eq!(s.env_kafka.as_deref(), Some("k:9092"));
        assert_eq!(s.env_postgres.as_deref(), Some("postgresql://x@y/z"));
        let s = settings(&[("HOME", "/h"), ("DATABASE_URL", "mysql://x@y/z")]).unwrap();
        assert!(s.env_postgres.is_none());
        let e = settings(&[("HOME", "/h"), ("TXOUTBOX_KAFKA_PORT", "x")]).unwrap_err();
        assert!(e.to_string().contains("TXOUTBOX_KAFKA_PORT=x"), "{e}");
    }
}
