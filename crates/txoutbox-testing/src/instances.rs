//! Private service instances for the outage tests: a Kafka KRaft node and a PostgreSQL cluster
//! that a test may stop, kill and restart without disturbing the tests that share the services of
//! `scripts/services.sh`. The launcher of those services, `txoutbox-services`, does the work
//! both share: fetching the Kafka jars, writing `server.properties`, formatting a node's storage,
//! starting its JVM and seeing it serve, finding (or installing) PostgreSQL and running `initdb`
//! and `pg_ctl` as the right OS user.
//!
//! - [`KafkaNode`] runs Apache Kafka from the launcher's jar cache (`TXOUTBOX_KAFKA_HOME`, default
//!   `~/.cache/txoutbox/kafka-4.1.1`, fetched when missing), one combined broker+controller node
//!   on free loopback ports, with its data in a temporary folder.
//! - [`KafkaCluster`] runs three combined broker+controller nodes of the same KRaft cluster (a
//!   controller quorum of three, replication factor 3 and `min.insync.replicas=2` by default), each
//!   of which can be stopped, killed, paused and restarted on its own: a broker failover.
//! - [`PgCluster`] runs `initdb` and `pg_ctl` of the installed PostgreSQL (the highest version under
//!   `/usr/lib/postgresql/*/bin`, or `TXOUTBOX_PG_BINDIR`; installed when missing) on a free
//!   loopback port, with its data in a temporary folder. As root it runs as the OS user
//!   `postgres`, like the services' PostgreSQL.
//!
//! `TXOUTBOX_KEEP_INSTANCES=1` keeps their folders (logs, data) after the test, for a post-mortem.
//!
//! All are stopped hard and their folders deleted when dropped (also when a test panics).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use txoutbox_services::kafka::{self as launcher, Launched};
use txoutbox_services::kafka_config::{Defaults, KafkaConfig};
use txoutbox_services::postgres::{PgServer, os_user};
use txoutbox_services::process::{chown_to, log_tail, port_accepts, signal, wait_exit};
use txoutbox_services::{Settings, postgres};

/// How long a node or cluster may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// Two different free loopback ports (a broker's and its controller's).
fn two_ports() -> (u16, u16) {
    loop {
        let (b, c) = (free_port(), free_port());
        if b != c {
            return (b, c);
        }
    }
}

/// A fresh folder under the temporary directory.
fn temp_folder(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(crate::unique(prefix));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir
}

/// The launcher's settings (the environment of `scripts/services.sh`).
fn settings() -> Settings {
    Settings::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Sends `sig` (e.g. `TERM`, `KILL`, `STOP`, `CONT`) to a process, ignoring a process gone.
fn send(pid: u32, sig: &str) {
    let _ = signal(pid, sig);
}

/// Runs a blocking closure on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

// ---------------------------------------------------------------------------------------------
// Kafka
// ---------------------------------------------------------------------------------------------

/// The folder holding the Kafka jars (`TXOUTBOX_KAFKA_HOME`/lib, default
/// `~/.cache/txoutbox/kafka-4.1.1/lib`), fetched by the launcher when missing.
pub fn kafka_lib() -> PathBuf {
    launcher::jars(&settings()).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Writes a node's files into `dir` and formats its storage as part of cluster `cluster_id`
/// (with `extra` arguments, e.g. SCRAM users).
fn write_and_format(lib: &Path, dir: &Path, config: &KafkaConfig, cluster_id: &str, extra: &[String]) {
    launcher::write_node_files(dir, config).unwrap_or_else(|e| panic!("{e:#}"));
    launcher::format(lib, dir, cluster_id, config.standalone(), extra).unwrap_or_else(|e| panic!("{e:#}"));
}

/// A fresh Kafka cluster id.
fn cluster_id() -> String {
    launcher::random_cluster_id().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Starts a node's JVM (a child of ours, killed when its owner is dropped); does not wait.
fn launch(lib: &Path, dir: &Path, heap: &[&str], jvm: &[&str]) -> Launched {
    let heap: Vec<String> = heap.iter().map(|h| (*h).to_owned()).collect();
    launcher::launch(lib, dir, &heap, jvm, None).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Whether a launched node serves (panics with its log when it exited).
fn started(launched: &mut Launched, dir: &Path, broker_port: u16, name: &str) -> bool {
    launcher::check_start(launched, dir, broker_port, name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Panics when one of `ports` was taken while a node was down.
fn ports_free(ports: &[u16], name: &str) {
    for port in ports {
        assert!(
            !port_accepts(*port),
            "port {port} was taken by another process while {name} was down"
        );
    }
}

/// A private single-node Apache Kafka (KRaft, broker and controller in one JVM) on free loopback
/// ports. Stopping and starting it keeps its data folder, so topics and records survive.
#[derive(Debug)]
pub struct KafkaNode {
    dir: PathBuf,
    lib: PathBuf,
    broker_port: u16,
    controller_port: u16,
    jvm: Option<Launched>,
}

impl KafkaNode {
    /// Formats a data folder and starts the node; returns once it serves.
    pub async fn start() -> Self {
        blocking(|| Self::start_blocking(None, None)).await
    }

    /// A node with Apache Kafka's own settings: the `config/server.properties` that Kafka 4.1's
    /// distribution ships for a combined broker and controller, with only the ports and the
    /// data folder changed. So topic auto-creation is on (`auto.create.topics.enable` defaults
    /// to `true`), new topics get one partition and the broker's default retention and size
    /// limits: what a user who follows Kafka's quickstart runs.
    pub async fn start_stock() -> Self {
        blocking(|| {
            let dir = temp_folder("txoutbox-kafka-stock");
            let (broker_port, controller_port) = two_ports();
            let mut config = KafkaConfig::new(1, broker_port, controller_port, dir.join("data"));
            config.defaults = Defaults::Stock;
            Self::format_and_launch(dir, &config, &[])
        })
        .await
    }

    /// A node with a second, secured client listener: SASL_SSL with SCRAM-SHA-512 (the `users`,
    /// `(name, password)`, created when the storage is formatted), TLS from a certificate for
    /// `IP:127.0.0.1` signed by a throw-away CA made with `openssl`, and ACLs enforced
    /// (`StandardAuthorizer`; `super_users` and the internal PLAINTEXT listener may do
    /// everything, other users nothing). [`bootstrap`](Self::bootstrap) stays the PLAINTEXT
    /// listener (for the test's own admin client and consumer).
    pub async fn start_sasl_ssl(users: &[(&str, &str)], super_users: &[&str]) -> (Self, SaslSsl) {
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect();
        let supers: Vec<String> = super_users.iter().map(|u| (*u).to_owned()).collect();
        blocking(move || {
            let mut secure = None;
            let node = Self::start_blocking(None, Some((&users, &supers, &mut secure)));
            (node, secure.expect("the secured listener"))
        })
        .await
    }

    /// Like [`start`](Self::start), but the broker advertises `127.0.0.1:<advertised>` (a proxy
    /// in front of it, started by the caller) instead of its own port, so clients that bootstrap
    /// through the proxy keep going through it. The node itself is ready without the proxy.
    pub async fn start_advertising(advertised: u16) -> Self {
        blocking(move || Self::start_blocking(Some(advertised), None)).await
    }

    /// The port the broker listens on (behind a proxy: the proxy's upstream).
    pub fn broker_port(&self) -> u16 {
        self.broker_port
    }

    #[allow(clippy::type_complexity)] // reason: private; the secured listener's inputs and output
    fn start_blocking(
        advertised: Option<u16>,
        sasl: Option<(&[(String, String)], &[String], &mut Option<SaslSsl>)>,
    ) -> Self {
        let dir = temp_folder("txoutbox-kafka");
        let (broker_port, controller_port) = two_ports();
        let mut config = KafkaConfig::new(1, broker_port, controller_port, dir.join("data"))
            .set("offsets.topic.num.partitions", 3);
        config.advertised_port = advertised;
        let mut scram = Vec::new();
        if let Some((users, supers, out)) = sasl {
            let port = loop {
                let p = free_port();
                if p != broker_port && p != controller_port {
                    break p;
                }
            };
            let tls = make_certificates(&dir);
            config.sasl_ssl = Some(txoutbox_services::kafka_config::SaslSsl {
                port,
                keystore: tls.keystore,
                super_users: supers.to_vec(),
            });
            for (user, password) in users {
                scram.push("--add-scram".to_owned());
                scram.push(format!("SCRAM-SHA-512=[name={user},password={password}]"));
            }
            *out = Some(SaslSsl {
                bootstrap: format!("127.0.0.1:{port}"),
                ca: tls.ca,
                untrusted_ca: tls.untrusted_ca,
            });
        }
        Self::format_and_launch(dir, &config, &scram)
    }

    /// Writes the node's files into `dir`, formats its storage (with `extra` arguments, e.g.
    /// SCRAM users) and starts it.
    fn format_and_launch(dir: PathBuf, config: &KafkaConfig, extra: &[String]) -> Self {
        let lib = kafka_lib();
        write_and_format(&lib, &dir, config, &cluster_id(), extra);
        let mut node = Self {
            dir,
            lib,
            broker_port: config.broker_port,
            controller_port: config.controller_port,
            jvm: None,
        };
        node.launch_and_wait();
        node
    }

    fn launch_and_wait(&mut self) {
        assert!(self.jvm.is_none(), "the Kafka node is running already");
        ports_free(&[self.broker_port, self.controller_port], "the Kafka node");
        let mut jvm = launch(&self.lib, &self.dir, &["-Xms256m", "-Xmx768m"], &[]);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !started(&mut jvm, &self.dir, self.broker_port, "the private node") {
            assert!(
                Instant::now() < deadline,
                "the Kafka node did not start within {READY_TIMEOUT:?}:\n{}",
                log_tail(&self.log_path(), 60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.jvm = Some(jvm);
    }

    /// `127.0.0.1:<broker port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.broker_port)
    }

    /// The JVM's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.jvm.as_ref().map(|j| j.child.id())
    }

    /// Whether the node's process runs.
    pub fn is_running(&self) -> bool {
        self.jvm.is_some()
    }

    /// Stops the node with SIGTERM (a controlled shutdown) and waits until it is gone.
    pub async fn stop(&mut self) {
        stop_jvm(self.jvm.take(), "TERM").await;
    }

    /// Kills the node with SIGKILL and waits until it is gone.
    pub async fn kill(&mut self) {
        stop_jvm(self.jvm.take(), "KILL").await;
    }

    /// Freezes the node (SIGSTOP): its connections stay open, nothing answers.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            send(pid, "STOP");
        }
    }

    /// Lets a frozen node go on (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            send(pid, "CONT");
        }
    }

    /// Starts the stopped node again on the same data folder and ports; returns once it serves.
    pub async fn restart(&mut self) {
        let mut me = std::mem::replace(
            self,
            Self {
                dir: PathBuf::new(),
                lib: PathBuf::new(),
                broker_port: 0,
                controller_port: 0,
                jvm: None,
            },
        );
        me = blocking(move || {
            me.launch_and_wait();
            me
        })
        .await;
        *self = me;
    }

    /// The node's log (stdout and stderr of every start).
    pub fn log_path(&self) -> PathBuf {
        launcher::log_path(&self.dir)
    }
}

/// Signals a node's JVM and waits until it is gone (SIGKILL after 60 s).
async fn stop_jvm(jvm: Option<Launched>, sig: &'static str) {
    let Some(Launched { mut child, .. }) = jvm else {
        return;
    };
    blocking(move || {
        send(child.id(), sig);
        if !wait_exit(&mut child, Duration::from_secs(60)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    })
    .await;
}

/// Kills a node's JVM at once (when its owner is dropped).
fn kill_now(jvm: Option<Launched>) {
    if let Some(Launched { mut child, .. }) = jvm {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The secured listener of a [`KafkaNode::start_sasl_ssl`] node.
#[derive(Debug, Clone)]
pub struct SaslSsl {
    /// `127.0.0.1:<SASL_SSL port>`.
    pub bootstrap: String,
    /// The CA that signed the broker's certificate (PEM), for `ssl.ca.location`.
    pub ca: PathBuf,
    /// Another CA, which did not sign it: a client trusting only this one must refuse the broker.
    pub untrusted_ca: PathBuf,
}

struct Certificates {
    ca: PathBuf,
    untrusted_ca: PathBuf,
    /// The server's certificate (PEM) and its unencrypted key (PEM).
    server_certificate: PathBuf,
    server_key: PathBuf,
    /// The broker's unencrypted PKCS#8 key followed by its certificate.
    keystore: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throw-away CA, a server certificate for `IP:127.0.0.1` and `localhost` signed by it, and a
/// second CA.
fn make_certificates(dir: &Path) -> Certificates {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    for ca in ["ca", "untrusted-ca"] {
        openssl(
            &tls,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=txoutbox test {ca}"),
            ],
        );
    }
    openssl(
        &tls,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(tls.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(
        &tls,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    openssl(
        &tls,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "server.key",
            "-out",
            "server.pk8",
        ],
    );
    let keystore = format!(
        "{}{}",
        std::fs::read_to_string(tls.join("server.pk8")).unwrap(),
        std::fs::read_to_string(tls.join("server.pem")).unwrap()
    );
    std::fs::write(tls.join("keystore.pem"), keystore).unwrap();
    Certificates {
        ca: tls.join("ca.pem"),
        untrusted_ca: tls.join("untrusted-ca.pem"),
        server_certificate: tls.join("server.pem"),
        server_key: tls.join("server.key"),
        keystore: tls.join("keystore.pem"),
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        kill_now(self.jvm.take());
        if !self.dir.as_os_str().is_empty() && std::env::var_os("TXOUTBOX_KEEP_INSTANCES").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka: a 3-node cluster
// ---------------------------------------------------------------------------------------------

/// The JVM heap of each cluster node: three JVMs share the 2-core test machine.
const CLUSTER_NODE_HEAP: &[&str] = &["-Xms128m", "-Xmx384m"];

/// One node of a [`KafkaCluster`].
#[derive(Debug)]
struct ClusterNode {
    id: i32,
    dir: PathBuf,
    broker_port: u16,
    controller_port: u16,
    jvm: Option<Launched>,
}

impl ClusterNode {
    /// Starts the JVM; does not wait.
    fn launch(&mut self, lib: &Path) {
        assert!(self.jvm.is_none(), "kafka-{} is running already", self.id);
        ports_free(
            &[self.broker_port, self.controller_port],
            &format!("kafka-{}", self.id),
        );
        self.jvm = Some(launch(
            lib,
            &self.dir,
            CLUSTER_NODE_HEAP,
            &["-XX:TieredStopAtLevel=1"],
        ));
    }

    /// Whether this start is ready (panics when the process died).
    fn ready(&mut self) -> bool {
        let name = format!("kafka-{}", self.id);
        let jvm = self.jvm.as_mut().expect("a launched node");
        started(jvm, &self.dir, self.broker_port, &name)
    }
}

/// Waits until every node in `nodes` that runs is ready.
fn wait_ready(nodes: &mut [&mut ClusterNode]) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut all = true;
        for node in nodes.iter_mut() {
            all &= node.ready();
        }
        if all {
            return;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("kafka-{}:\n{}", n.id, log_tail(&launcher::log_path(&n.dir), 30)))
                .collect();
            panic!(
                "the Kafka cluster did not start within {READY_TIMEOUT:?}:\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private 3-node Apache Kafka cluster (KRaft; each node is a broker and one of three
/// controller voters) on free loopback ports, with replication factor 3 and
/// `min.insync.replicas=2` as the defaults for new topics and the internal ones. Each node can be
/// stopped (SIGTERM), killed (SIGKILL), paused (SIGSTOP) and restarted on its own data folder.
///
/// Nodes are numbered 1 to 3, as their `node.id` (which is also what partition metadata names as
/// the leader).
#[derive(Debug)]
pub struct KafkaCluster {
    dir: PathBuf,
    lib: PathBuf,
    nodes: Vec<ClusterNode>,
}

impl KafkaCluster {
    /// Formats three data folders with one cluster id and starts the nodes; returns once every
    /// node serves.
    pub async fn start() -> Self {
        blocking(Self::start_blocking).await
    }

    fn start_blocking() -> Self {
        let lib = kafka_lib();
        let dir = temp_folder("txoutbox-kafka-cluster");
        let mut ports = std::collections::HashSet::new();
        while ports.len() < 6 {
            ports.insert(free_port());
        }
        let ports: Vec<u16> = ports.into_iter().collect();
        let voters = KafkaConfig::voters_of((0..3).map(|i| (i as u32 + 1, ports[2 * i + 1])));
        let cluster_id = cluster_id();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let (id, broker_port, controller_port) = (i as u32 + 1, ports[2 * i], ports[2 * i + 1]);
            let node_dir = dir.join(format!("kafka-{id}"));
            let mut config = KafkaConfig::new(id, broker_port, controller_port, node_dir.join("data"))
                .set("unclean.leader.election.enable", false)
                .set("offsets.topic.num.partitions", 3)
                .set("num.network.threads", 2)
                .set("num.io.threads", 2)
                .set("background.threads", 2);
            config.voters = Some(voters.clone());
            config.defaults = Defaults::Test {
                partitions: 6,
                replicas: 3,
            };
            write_and_format(&lib, &node_dir, &config, &cluster_id, &[]);
            nodes.push(ClusterNode {
                id: id as i32,
                dir: node_dir,
                broker_port,
                controller_port,
                jvm: None,
            });
        }
        let mut cluster = Self { dir, lib, nodes };
        for node in &mut cluster.nodes {
            node.launch(&cluster.lib);
        }
        wait_ready(&mut cluster.nodes.iter_mut().collect::<Vec<_>>());
        cluster
    }

    /// The node ids: 1, 2, 3.
    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn node(&mut self, id: i32) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no Kafka node {id} in the cluster (1 to 3)"))
    }

    /// Every broker, `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.broker_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The brokers of the nodes other than `id` (for a client that must not need that node).
    pub fn bootstrap_without(&self, id: i32) -> String {
        self.nodes
            .iter()
            .filter(|n| n.id != id)
            .map(|n| format!("127.0.0.1:{}", n.broker_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The JVM's process id of node `id`, while it runs.
    pub fn pid(&self, id: i32) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| n.jvm.as_ref().map(|j| j.child.id()))
    }

    /// Whether node `id` runs.
    pub fn is_running(&self, id: i32) -> bool {
        self.pid(id).is_some()
    }

    /// Stops node `id` with SIGTERM (a controlled shutdown: its leaderships move first) and waits
    /// until it is gone.
    pub async fn stop(&mut self, id: i32) {
        stop_jvm(self.node(id).jvm.take(), "TERM").await;
    }

    /// Kills node `id` with SIGKILL (no controlled shutdown) and waits until it is gone.
    pub async fn kill(&mut self, id: i32) {
        stop_jvm(self.node(id).jvm.take(), "KILL").await;
    }

    /// Freezes node `id` (SIGSTOP): its connections stay open, nothing answers.
    pub fn pause(&self, id: i32) {
        if let Some(pid) = self.pid(id) {
            send(pid, "STOP");
        }
    }

    /// Lets a frozen node go on (SIGCONT).
    pub fn resume(&self, id: i32) {
        if let Some(pid) = self.pid(id) {
            send(pid, "CONT");
        }
    }

    /// Starts the stopped node `id` again on its data folder and ports; returns once it serves.
    pub async fn restart(&mut self, id: i32) {
        let mut me = std::mem::replace(
            self,
            Self {
                dir: PathBuf::new(),
                lib: PathBuf::new(),
                nodes: Vec::new(),
            },
        );
        me = blocking(move || {
            let lib = me.lib.clone();
            let node = me.node(id);
            node.launch(&lib);
            wait_ready(&mut [node]);
            me
        })
        .await;
        *self = me;
    }

    /// Node `id`'s log (stdout and stderr of every start).
    pub fn log_path(&self, id: i32) -> PathBuf {
        launcher::log_path(&self.dir.join(format!("kafka-{id}")))
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            kill_now(node.jvm.take());
        }
        if !self.dir.as_os_str().is_empty() && std::env::var_os("TXOUTBOX_KEEP_INSTANCES").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Creates a topic with `partitions` partitions, replication factor `replicas` and the given topic
/// configs on the brokers at `bootstrap`; returns its (fresh) name.
pub async fn new_replicated_topic(
    bootstrap: &str,
    prefix: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) -> String {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let name = crate::unique(prefix).replace('_', "-");
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topic = configs.iter().fold(
        NewTopic::new(&name, partitions, TopicReplication::Fixed(replicas)),
        |t, (k, v)| t.set(k, v),
    );
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topic");
    for r in results {
        r.unwrap_or_else(|(topic, e)| panic!("cannot create topic {topic}: {e}"));
    }
    name
}

/// Each partition of `topic` with its leader's node id and its in-sync replicas, from the
/// brokers' metadata (`-1` when the partition has no leader).
pub async fn partition_leaders(bootstrap: &str, topic: &str) -> Vec<(i32, i32, Vec<i32>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("metadata client");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(30))
            .expect("topic metadata");
        metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| (p.id(), p.leader(), p.isr().to_vec()))
            .collect()
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// The bin folder of the installed PostgreSQL: `TXOUTBOX_PG_BINDIR`, else the highest version
/// under `/usr/lib/postgresql/*/bin` with `initdb` and `pg_ctl`, else the folder of `initdb` on the
/// `PATH`; the launcher installs PostgreSQL first when there is none.
pub fn pg_bindir() -> PathBuf {
    postgres::bindir(&settings()).unwrap_or_else(|e| panic!("{e:#}"))
}

/// How `pg_ctl` stops the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgStopMode {
    /// `-m fast`: roll back open transactions, disconnect clients, checkpoint.
    Fast,
    /// `-m immediate`: abort every process at once; the next start recovers from the WAL.
    Immediate,
}

impl PgStopMode {
    fn arg(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        }
    }
}

/// A private PostgreSQL cluster (its own `initdb`, data folder and loopback port), superuser
/// `postgres` with trust authentication on 127.0.0.1. As root it runs as the OS user `postgres`.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    server: PgServer,
    port: u16,
}

impl PgCluster {
    /// Runs `initdb` and starts the server; returns once it accepts connections.
    pub async fn start() -> Self {
        blocking(|| Self::start_blocking(None, &[])).await
    }

    /// Like [`start`](Self::start), with extra `postgresql.conf` settings, e.g.
    /// `&[("wal_level", "logical"), ("max_slot_wal_keep_size", "64MB")]` for WAL mode. Values
    /// are written quoted (`name = 'value'`).
    pub async fn start_with(settings: &[(&str, &str)]) -> Self {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        blocking(move || Self::start_blocking(None, &settings)).await
    }

    /// Like [`start`](Self::start), but clients must come over TLS and give a password: the server
    /// has a certificate for `127.0.0.1` and `localhost` signed by a throw-away CA, `pg_hba.conf`
    /// takes `hostssl` connections with SCRAM-SHA-256 for user `postgres` with `password` and
    /// rejects plain TCP.
    pub async fn start_tls(password: &str) -> (Self, PgTls) {
        let password = password.to_owned();
        blocking(move || {
            let cluster = Self::start_blocking(Some(&password), &[]);
            let tls = PgTls {
                port: cluster.port,
                ca: cluster.dir.join("tls/ca.pem"),
                untrusted_ca: cluster.dir.join("tls/untrusted-ca.pem"),
            };
            (cluster, tls)
        })
        .await
    }

    fn start_blocking(tls_password: Option<&str>, settings: &[(String, String)]) -> Self {
        let dir = temp_folder("txoutbox-pg");
        let server = PgServer {
            bin: pg_bindir(),
            data: dir.join("data"),
            user: os_user(),
        };
        let user = server.user.clone();
        let chown = |path: &Path| {
            if txoutbox_services::process::is_root() {
                chown_to(path, &user).unwrap_or_else(|e| panic!("{e:#}"));
            }
        };
        chown(&dir);
        let cluster = Self {
            dir,
            server,
            port: free_port(),
        };
        let pwfile = cluster.dir.join("pwfile");
        let mut initdb = vec![
            "-U".to_owned(),
            "postgres".to_owned(),
            "--auth=trust".to_owned(),
            "--no-sync".to_owned(),
        ];
        if let Some(password) = tls_password {
            std::fs::write(&pwfile, format!("{password}\n")).expect("write the password file");
            initdb.push(format!("--pwfile={}", pwfile.display()));
        }
        let log = cluster.dir.join("initdb.log");
        cluster
            .server
            .initdb(&initdb, &log)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let _ = std::fs::remove_file(&pwfile);
        let mut conf = format!(
            "\n# txoutbox-testing: a private cluster\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             max_connections = 100\n\
             shared_buffers = 64MB\n\
             log_min_messages = warning\n",
            cluster.port,
            cluster.dir.display()
        );
        for (name, value) in settings {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        if tls_password.is_some() {
            let certificates = make_certificates(&cluster.dir);
            chown(&certificates.server_key);
            std::fs::set_permissions(
                &certificates.server_key,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("chmod the server key");
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\npassword_encryption = 'scram-sha-256'\n",
                certificates.server_certificate.display(),
                certificates.server_key.display()
            ));
            std::fs::write(
                cluster.server.data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("write pg_hba.conf");
        }
        let conf_path = cluster.server.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
        cluster.pg_ctl_start();
        cluster
    }

    fn pg_ctl_start(&self) {
        ports_free(&[self.port], "the cluster");
        let log = self.log_path();
        self.server
            .start(&log, READY_TIMEOUT, &self.dir.join("pg_ctl.log"))
            .and_then(|()| {
                self.server
                    .wait_port(self.port, Instant::now() + READY_TIMEOUT, &log)
            })
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    fn pg_ctl_stop(&self, mode: PgStopMode) {
        self.server
            .stop(mode.arg(), Duration::from_secs(120), &self.dir.join("pg_ctl.log"))
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of another database of this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (`pg_ctl stop -m <mode>`) and waits until it is down.
    pub async fn stop(&self, mode: PgStopMode) {
        let me = self.clone_handle();
        blocking(move || me.pg_ctl_stop(mode)).await;
    }

    /// Starts the stopped server on the same data folder; returns once it accepts connections.
    pub async fn start_again(&self) {
        let me = self.clone_handle();
        blocking(move || me.pg_ctl_start()).await;
    }

    /// A handle for blocking calls on another thread; never dropped as the owner (no cleanup).
    fn clone_handle(&self) -> PgHandle {
        PgHandle(Self {
            dir: self.dir.clone(),
            server: self.server.clone(),
            port: self.port,
        })
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
}

/// The TLS side of a [`PgCluster::start_tls`] cluster.
#[derive(Debug, Clone)]
pub struct PgTls {
    port: u16,
    /// The CA that signed the server's certificate (PEM), for `sslrootcert`.
    pub ca: PathBuf,
    /// Another CA, which did not sign it: a client trusting only this one must refuse the server.
    pub untrusted_ca: PathBuf,
}

impl PgTls {
    /// `postgres://postgres:<password>@127.0.0.1:<port>/postgres?sslmode=verify-full&sslrootcert=<ca>`.
    pub fn url(&self, password: &str, ca: &Path) -> String {
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
            self.port,
            ca.display()
        )
    }

    /// The URL without TLS (`sslmode=disable`), which the server must refuse.
    pub fn plain_url(&self, password: &str) -> String {
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

/// A copy of a cluster's coordinates that does not stop or delete it when dropped.
struct PgHandle(PgCluster);

impl std::ops::Deref for PgHandle {
    type Target = PgCluster;
    fn deref(&self) -> &PgCluster {
        &self.0
    }
}

impl Drop for PgHandle {
    fn drop(&mut self) {
        // Leave the cluster alone: only its owner cleans up.
        self.0.dir = PathBuf::new();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if self.server.data.join("postmaster.pid").exists() {
            let _ = self
                .server
                .stop("immediate", Duration::from_secs(60), &self.dir.join("pg_ctl.log"));
        }
        if std::env::var_os("TXOUTBOX_KEEP_INSTANCES").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
