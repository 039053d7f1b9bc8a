//! `server.properties` of a combined broker+controller KRaft node: one writer for the services'
//! broker and cluster and for the tests' private nodes (free ports, SASL_SSL, stock defaults).

use std::fmt::Write as _;
use std::path::PathBuf;

/// Which defaults the node gets besides its listeners and data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defaults {
    /// For tests: no topic auto-creation (tests create their topics), `partitions` per new topic,
    /// replication factor `replicas` for new and internal topics, `min.insync.replicas` 2 when
    /// replicated (else 1), no initial rebalance delay.
    Test {
        /// `num.partitions`.
        partitions: u32,
        /// Replication factor of new and internal topics.
        replicas: u32,
    },
    /// Apache Kafka's own `config/server.properties` of its 4.1 distribution (auto-creation on,
    /// one partition, the broker's retention): what a user who follows Kafka's quickstart runs.
    Stock,
}

/// A second client listener, `SASL_SSL` with SCRAM-SHA-512, TLS from a PEM keystore and ACLs
/// enforced (`StandardAuthorizer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslSsl {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The broker's unencrypted PKCS#8 key followed by its certificate (PEM).
    pub keystore: PathBuf,
    /// Users who may do everything (besides `ANONYMOUS`, the internal PLAINTEXT listener).
    pub super_users: Vec<String>,
}

/// The settings of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `node.id`.
    pub node_id: u32,
    /// The PLAINTEXT listener's port on 127.0.0.1.
    pub broker_port: u16,
    /// The CONTROLLER listener's port on 127.0.0.1.
    pub controller_port: u16,
    /// The broker port the node advertises (a proxy in front of it), when not its own.
    pub advertised_port: Option<u16>,
    /// `controller.quorum.voters` of a multi-node cluster (`1@127.0.0.1:port,…`); `None`: a
    /// single node, its own quorum (`controller.quorum.bootstrap.servers`, formatted
    /// `--standalone`).
    pub voters: Option<String>,
    /// `log.dirs`.
    pub data_dir: PathBuf,
    /// The defaults.
    pub defaults: Defaults,
    /// A secured listener besides PLAINTEXT.
    pub sasl_ssl: Option<SaslSsl>,
    /// More `key=value` lines, written last (later lines win in Kafka's properties).
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A single node for tests (3 partitions per topic, replication factor 1).
    pub fn new(node_id: u32, broker_port: u16, controller_port: u16, data_dir: PathBuf) -> Self {
        Self {
            node_id,
            broker_port,
            controller_port,
            advertised_port: None,
            voters: None,
            data_dir,
            defaults: Defaults::Test {
                partitions: 3,
                replicas: 1,
            },
            sasl_ssl: None,
            extra: Vec::new(),
        }
    }

    /// The `controller.quorum.voters` value of nodes `(id, controller port)`.
    pub fn voters_of(nodes: impl IntoIterator<Item = (u32, u16)>) -> String {
        nodes
            .into_iter()
            .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the node is formatted `--standalone` (its own single-voter quorum).
    pub fn standalone(&self) -> bool {
        self.voters.is_none()
    }

    /// Adds a `key=value` line.
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.extra.push((key.to_owned(), value.to_string()));
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let (b, c) = (self.broker_port, self.controller_port);
        let mut out =
            String::from("# Written by txoutbox-services on every start of this node; edits are lost.\n");
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(out, "{k}={v}");
        };
        line("process.roles", &"broker,controller");
        line("node.id", &self.node_id);
        match &self.voters {
            Some(voters) => line("controller.quorum.voters", voters),
            None => line("controller.quorum.bootstrap.servers", &format!("127.0.0.1:{c}")),
        }
        let secured = self
            .sasl_ssl
            .as_ref()
            .map(|s| format!(",SASL_SSL://127.0.0.1:{}", s.port))
            .unwrap_or_default();
        let advertised = self.advertised_port.unwrap_or(b);
        line(
            "listeners",
            &format!("PLAINTEXT://127.0.0.1:{b}{secured},CONTROLLER://127.0.0.1:{c}"),
        );
        line(
            "advertised.listeners",
            &format!("PLAINTEXT://127.0.0.1:{advertised}{secured},CONTROLLER://127.0.0.1:{c}"),
        );
        line("inter.broker.listener.name", &"PLAINTEXT");
        line("controller.listener.names", &"CONTROLLER");
        let map = match (&self.defaults, &self.sasl_ssl) {
            (Defaults::Stock, _) => {
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
            }
            (_, Some(_)) => "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            (_, None) => "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        };
        line("listener.security.protocol.map", &map);
        if let Some(s) = &self.sasl_ssl {
            let supers: Vec<String> = std::iter::once("User:ANONYMOUS".to_owned())
                .chain(s.super_users.iter().map(|u| format!("User:{u}")))
                .collect();
            line("sasl.enabled.mechanisms", &"SCRAM-SHA-512");
            line(
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config",
                &"org.apache.kafka.common.security.scram.ScramLoginModule required;",
            );
            line("ssl.keystore.type", &"PEM");
            line("ssl.keystore.location", &s.keystore.display());
            line(
                "authorizer.class.name",
                &"org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            );
            line("super.users", &supers.join(";"));
        }
        line("log.dirs", &self.data_dir.display());
        match self.defaults {
            Defaults::Test { partitions, replicas } => {
                let min_isr = if replicas > 1 { 2 } else { 1 };
                // Unknown topics are errors: tests create their own topics with an admin client.
                line("auto.create.topics.enable", &false);
                line("num.partitions", &partitions);
                line("default.replication.factor", &replicas);
                line("min.insync.replicas", &min_isr);
                line("offsets.topic.replication.factor", &replicas);
                line("transaction.state.log.replication.factor", &replicas);
                line("transaction.state.log.min.isr", &min_isr);
                line("share.coordinator.state.topic.replication.factor", &replicas);
                line("share.coordinator.state.topic.min.isr", &min_isr);
                line("group.initial.rebalance.delay.ms", &0);
            }
            Defaults::Stock => {
                for (k, v) in [
                    ("num.network.threads", "3"),
                    ("num.io.threads", "8"),
                    ("socket.send.buffer.bytes", "102400"),
                    ("socket.receive.buffer.bytes", "102400"),
                    ("socket.request.max.bytes", "104857600"),
                    ("num.partitions", "1"),
                    ("num.recovery.threads.per.data.dir", "1"),
                    ("offsets.topic.replication.factor", "1"),
                    ("share.coordinator.state.topic.replication.factor", "1"),
                    ("share.coordinator.state.topic.min.isr", "1"),
                    ("transaction.state.log.replication.factor", "1"),
                    ("transaction.state.log.min.isr", "1"),
                    ("log.retention.hours", "168"),
                    ("log.segment.bytes", "1073741824"),
                    ("log.retention.check.interval.ms", "300000"),
                ] {
                    line(k, &v);
                }
            }
        }
        for (k, v) in &self.extra {
            line(k, v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(config: &KafkaConfig) -> Vec<String> {
        config.render().lines().map(str::to_owned).collect()
    }

    #[test]
    fn single_node() {
        let config = KafkaConfig::new(1, 19092, 19093, "/d/data".into());
        let text = lines(&config);
        assert!(config.standalone());
        for want in [
            "node.id=1",
            "controller.quorum.bootstrap.servers=127.0.0.1:19093",
            "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
            "advertised.listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs=/d/data",
            "auto.create.topics.enable=false",
            "num.partitions=3",
            "min.insync.replicas=1",
            "transaction.state.log.min.isr=1",
        ] {
            assert!(text.iter().any(|l| l == want), "{want} missing from {text:#?}");
        }
        assert!(!text.iter().any(|l| l.starts_with("sasl")));
    }

    #[test]
    fn cluster_node_with_extras() {
        let mut config = KafkaConfig::new(12, 29094, 29095, "/d".into());
        config.voters = Some(KafkaConfig::voters_of([(11, 29093), (12, 29095), (13, 29097)]));
        config.defaults = Defaults::Test {
            partitions: 6,
            replicas: 3,
        };
        let config = config.set("num.io.threads", 2);
        let text = lines(&config);
        assert!(!config.standalone());
        for want in [
            "controller.quorum.voters=11@127.0.0.1:29093,12@127.0.0.1:29095,13@127.0.0.1:29097",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "offsets.topic.replication.factor=3",
            "num.partitions=6",
        ] {
            assert!(text.iter().any(|l| l == want), "{want} missing from {text:#?}");
        }
        assert_eq!(text.last().map(String::as_str), Some("num.io.threads=2"));
        assert!(!text.iter().any(|l| l.starts_with("controller.quorum.bootstrap")));
    }

    #[test]
    fn sasl_ssl_advertised_and_stock() {
        let mut config = KafkaConfig::new(1, 1000, 1001, "/d".into());
        config.advertised_port = Some(2000);
        config.sasl_ssl = Some(SaslSsl {
            port: 1002,
            keystore: "/k.pem".into(),
            super_users: vec!["admin".into()],
        });
        let text = lines(&config);
        for want in [
            "listeners=PLAINTEXT://127.0.0.1:1000,SASL_SSL://127.0.0.1:1002,CONTROLLER://127.0.0.1:1001",
            "advertised.listeners=PLAINTEXT://127.0.0.1:2000,SASL_SSL://127.0.0.1:1002,CONTROLLER://127.0.0.1:1001",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            "ssl.keystore.location=/k.pem",
            "super.users=User:ANONYMOUS;User:admin",
        ] {
            assert!(text.iter().any(|l| l == want), "{want} missing from {text:#?}");
        }
        config.defaults = Defaults::Stock;
        config.sasl_ssl = None;
        let text = lines(&config);
        assert!(text.iter().any(|l| l == "num.partitions=1"));
        assert!(!text.iter().any(|l| l.starts_with("auto.create.topics.enable")));
    }
}
