//! The services' Kafka: node 1 (`kafka`) and the 3-node cluster (`kafka-cluster`, nodes 11, 12
//! and 13), each in `<services dir>/kafka-<id>` with its pid file, `ports` and log, detached so
//! that they outlive the command that started them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::files::write;
use crate::kafka::{self, log_path};
use crate::kafka_config::{Defaults, KafkaConfig};
use crate::process::{
    has_arg, log_tail, pid_alive, port_accepts, read_pid, refuse_taken_port, since, stop_pid,
};
use crate::{Settings, say};

/// A node: its id, broker port and controller port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// `node.id`: 1, or 11, 12, 13 in the cluster.
    pub id: u32,
    /// The broker port on 127.0.0.1.
    pub broker_port: u16,
    /// The controller port on 127.0.0.1.
    pub controller_port: u16,
}

/// The single node of `kafka`.
pub fn single(settings: &Settings) -> Node {
    Node {
        id: 1,
        broker_port: settings.kafka_port,
        controller_port: settings.kafka_controller_port,
    }
}

/// The nodes of `kafka-cluster`: 11, 12, 13 on consecutive ports from the first cluster port.
pub fn cluster(settings: &Settings) -> Vec<Node> {
    (0..3u16)
        .map(|i| Node {
            id: 11 + u32::from(i),
            broker_port: settings.kafka_cluster_port + 2 * i,
            controller_port: settings.kafka_cluster_port + 2 * i + 1,
        })
        .collect()
}

/// Whether `id` is one of the cluster's nodes.
pub fn is_cluster_node(id: u32) -> bool {
    (11..=13).contains(&id)
}

/// Node `id`, or what the nodes are.
pub fn node(settings: &Settings, id: u32) -> Result<Node> {
    let all: Vec<Node> = std::iter::once(single(settings))
        .chain(cluster(settings))
        .collect();
    match all.iter().find(|n| n.id == id) {
        Some(n) => Ok(*n),
        None => {
            let ids: Vec<String> = all.iter().map(|n| n.id.to_string()).collect();
            bail!("kafka: no node {id} (nodes: {})", ids.join(" "))
        }
    }
}

/// Node `id`'s folder.
pub fn node_dir(settings: &Settings, id: u32) -> PathBuf {
    settings.services_dir.join(format!("kafka-{id}"))
}

/// The pid of our running node `id`.
pub fn pid(settings: &Settings, id: u32) -> Option<u32> {
    let dir = node_dir(settings, id);
    let pid = read_pid(&dir.join("pid"))?;
    (pid_alive(pid) && has_arg(pid, &kafka::node_dir_arg(&dir))).then_some(pid)
}

/// The broker and controller ports the node's data was formatted for.
fn formatted_ports(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("ports"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The broker port node `id` was set up with.
fn broker_port_of(settings: &Settings, id: u32) -> Option<u16> {
    formatted_ports(&node_dir(settings, id))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A node that was started and that [`wait`] waits for.
#[derive(Debug)]
pub struct Pending {
    node: Node,
    t0: Instant,
    /// `None`: a node that ran already (not ours to reap).
    launched: Option<kafka::Launched>,
}

/// Phase 1 of `up`: starts the nodes that do not run (fetching the jars first). A set that `up`
/// starts begins on empty data (years of test topics would make every start slower), unless one
/// of its nodes still runs (a cluster node rejoins its peers with its data) or
/// `TXOUTBOX_KAFKA_KEEP_DATA=1`.
pub fn launch(settings: &Settings, nodes: &[Node]) -> Result<Vec<Pending>> {
    let fresh = !settings.keep_kafka_data && nodes.iter().all(|n| pid(settings, n.id).is_none());
    let mut pending = Vec::new();
    for node in nodes {
        if let Some(pid) = pid(settings, node.id) {
            let port = broker_port_of(settings, node.id).unwrap_or(node.broker_port);
            if port_accepts(port) {
                say!(
                    "kafka: kafka-{} already running on 127.0.0.1:{port} (pid {pid})",
                    node.id
                );
                continue;
            }
            say!(
                "kafka: kafka-{} running (pid {pid}) but not serving yet; waiting",
                node.id
            );
            pending.push(Pending {
                node: *node,
                t0: Instant::now(),
                launched: None,
            });
        } else {
            pending.push(launch_node(settings, *node, fresh)?);
        }
    }
    Ok(pending)
}

/// Writes node's config, formats its data when needed (always when `fresh`) and starts it;
/// does not wait.
pub fn launch_node(settings: &Settings, node: Node, fresh: bool) -> Result<Pending> {
    let lib = kafka::jars(settings)?;
    let t0 = Instant::now();
    let (port_var, controller_var) = if is_cluster_node(node.id) {
        ("TXOUTBOX_KAFKA_CLUSTER_PORT", "TXOUTBOX_KAFKA_CLUSTER_PORT")
    } else {
        ("TXOUTBOX_KAFKA_PORT", "TXOUTBOX_KAFKA_CONTROLLER_PORT")
    };
    refuse_taken_port("kafka", node.broker_port, port_var)?;
    refuse_taken_port("kafka", node.controller_port, controller_var)?;
    let dir = node_dir(settings, node.id);
    let mut config = KafkaConfig::new(node.id, node.broker_port, node.controller_port, dir.join("data"));
    if is_cluster_node(node.id) {
        config.voters = Some(KafkaConfig::voters_of(
            cluster(settings).iter().map(|n| (n.id, n.controller_port)),
        ));
        config.defaults = Defaults::Test {
            partitions: 3,
            replicas: 3,
        };
    }
    kafka::write_node_files(&dir, &config)?;
    format_node(settings, &lib, &dir, &config, fresh)?;
    let heap = if is_cluster_node(node.id) {
        &settings.kafka_cluster_heap
    } else {
        &settings.kafka_heap
    };
    let launched = kafka::launch(&lib, &dir, heap, &[], Some(&dir.join("pid")))?;
    say!(
        "kafka: starting kafka-{} on 127.0.0.1:{} (controller {})…",
        node.id,
        node.broker_port,
        node.controller_port
    );
    Ok(Pending {
        node,
        t0,
        launched: Some(launched),
    })
}

/// Formats the node's data unless it already is (a formatted folder keeps topics and offsets);
/// `fresh` deletes its topics and formats it anew. The cluster's nodes share one cluster id.
fn format_node(settings: &Settings, lib: &Path, dir: &Path, config: &KafkaConfig, fresh: bool) -> Result<()> {
    let ports = format!("{} {}", config.broker_port, config.controller_port);
    if !fresh && dir.join("data/meta.properties").is_file() {
        match formatted_ports(dir) {
            Some(was) if was != ports => bail!(
                "kafka: kafka-{}'s data was formatted for ports '{was}' (broker controller), not '{ports}'; use those ports or `scripts/services.sh reset kafka`",
                config.node_id
            ),
            _ => return Ok(()),
        }
    }
    let t0 = Instant::now();
    let id_file = if config.standalone() {
        dir.join("cluster.id")
    } else {
        settings.services_dir.join("kafka-cluster.id")
    };
    let cluster_id = match std::fs::read_to_string(&id_file).map(|s| s.trim().to_owned()) {
        Ok(id) if !id.is_empty() => id,
        _ => {
            let id = kafka::random_cluster_id()?;
            write(&id_file, &id)?;
            id
        }
    };
    let _ = std::fs::remove_dir_all(dir.join("data"));
    // The log of the node's earlier life goes with its data (one generation kept).
    let log = log_path(dir);
    if log.is_file() {
        let _ = std::fs::rename(&log, dir.join("node.log.1"));
    }
    kafka::format(lib, dir, &cluster_id, config.standalone(), &[])?;
    write(&dir.join("ports"), format!("{ports}\n"))?;
    say!(
        "kafka: formatted kafka-{} (cluster {cluster_id}) in {} s",
        config.node_id,
        since(t0)
    );
    Ok(())
}

/// Phase 2: waits until every started node logged that it serves and its port accepts.
pub fn wait(settings: &Settings, pending: Vec<Pending>) -> Result<()> {
    for mut p in pending {
        let dir = node_dir(settings, p.node.id);
        let log = log_path(&dir);
        let id = p.node.id;
        loop {
            let pid = read_pid(&dir.join("pid"));
            let serving = match p.launched.as_mut() {
                Some(launched) => {
                    kafka::check_start(launched, &dir, p.node.broker_port, &format!("kafka-{id}"))?
                }
                None => {
                    if let Some(pid) = pid.filter(|pid| !pid_alive(*pid)) {
                        bail!(
                            "kafka: kafka-{id} (pid {pid}) exited while starting; log: {}\n{}",
                            log.display(),
                            log_tail(&log, 60)
                        );
                    }
                    kafka::serving(&dir, 0, p.node.broker_port)
                }
            };
            if pid.is_some() && serving {
                say!(
                    "kafka: ready on 127.0.0.1:{} in {} s (pid {}, log {})",
                    p.node.broker_port,
                    since(p.t0),
                    pid.unwrap_or(0),
                    log.display()
                );
                break;
            }
            if p.t0.elapsed() > settings.timeout {
                bail!(
                    "kafka: kafka-{id} not ready after {} s (pid {}); log: {}\n{}",
                    settings.timeout.as_secs(),
                    pid.map_or("?".to_owned(), |p| p.to_string()),
                    log.display(),
                    log_tail(&log, 60)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Stops node `id` with `sig` (`TERM`: a controlled shutdown, waited for; `KILL`).
pub fn stop_node(settings: &Settings, id: u32, sig: &str) -> Result<()> {
    let Some(pid) = pid(settings, id) else {
        say!("kafka: kafka-{id} is not running");
        return Ok(());
    };
    let t0 = Instant::now();
    stop_pid(pid, sig, Duration::from_secs(60), &format!("kafka: kafka-{id}"))?;
    let _ = std::fs::remove_file(node_dir(settings, id).join("pid"));
    say!("kafka: kafka-{id} stopped with SIG{sig} in {} s", since(t0));
    Ok(())
}

/// Stops the cluster's nodes together: one by one, the last could not finish its controlled
/// shutdown (no controller quorum left) and would wait for the SIGKILL.
pub fn cluster_down(settings: &Settings) -> Result<()> {
    let t0 = Instant::now();
    let running: Vec<(u32, u32)> = cluster(settings)
        .iter()
        .filter_map(|n| pid(settings, n.id).map(|p| (n.id, p)))
        .collect();
    if running.is_empty() {
        say!("kafka: the cluster is not running");
        return Ok(());
    }
    for (_, pid) in &running {
        let _ = crate::process::signal(*pid, "TERM");
    }
    for (id, pid) in running {
        let late = format!("kafka: kafka-{id} (pid {pid}) still up 30 s after SIGTERM");
        crate::process::wait_or_kill(pid, Duration::from_secs(30), &late)?;
        let _ = std::fs::remove_file(node_dir(settings, id).join("pid"));
    }
    say!("kafka: cluster stopped in {} s", since(t0));
    Ok(())
}

/// Our broker's bootstrap address while node 1 runs.
pub fn local_bootstrap(settings: &Settings) -> Option<String> {
    pid(settings, 1)?;
    Some(format!(
        "127.0.0.1:{}",
        broker_port_of(settings, 1).unwrap_or(settings.kafka_port)
    ))
}

/// The cluster's brokers while at least one of its nodes runs.
pub fn cluster_bootstrap(settings: &Settings) -> Option<String> {
    let nodes = cluster(settings);
    nodes.iter().any(|n| pid(settings, n.id).is_some()).then(|| {
        nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.broker_port))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// One status line per node.
pub fn status(settings: &Settings, nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| {
            let dir = node_dir(settings, n.id);
            if let Some(pid) = pid(settings, n.id) {
                let port = broker_port_of(settings, n.id).unwrap_or(n.broker_port);
                format!(
                    "kafka-{}    running   127.0.0.1:{port}  pid {pid}  {}",
                    n.id,
                    dir.display()
                )
            } else if dir.join("data/meta.properties").is_file() {
                format!("kafka-{}    stopped   (data kept in {})", n.id, dir.display())
            } else {
                format!("kafka-{}    stopped", n.id)
            }
        })
        .collect()
}

/// Deletes the nodes' folders (and the cluster's id when `nodes` are the cluster's).
pub fn delete_data(settings: &Settings, nodes: &[Node]) {
    for n in nodes {
        let _ = std::fs::remove_dir_all(node_dir(settings, n.id));
    }
    if nodes.iter().any(|n| is_cluster_node(n.id)) {
        let _ = std::fs::remove_file(settings.services_dir.join("kafka-cluster.id"));
    }
}
