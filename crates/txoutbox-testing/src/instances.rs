//! Private service instances for the outage tests: a Kafka KRaft node and a PostgreSQL cluster
//! that a test may stop, kill and restart without disturbing the tests that share the services of
//! `scripts/services.sh`.
//!
//! - [`KafkaNode`] runs Apache Kafka from the jars `scripts/services.sh` fetched
//!   (`TXOUTBOX_KAFKA_HOME`, default `~/.cache/txoutbox/kafka-4.1.1`; `scripts/services.sh
//!   kafka-lib` fetches them when they are missing), one combined broker+controller node on free
//!   loopback ports, with its data in a temporary folder.
//! - [`PgCluster`] runs `initdb` and `pg_ctl` of the installed PostgreSQL (the highest version under
//!   `/usr/lib/postgresql/*/bin`, or `TXOUTBOX_PG_BINDIR`; `scripts/services.sh pg-bindir` installs
//!   it when missing) on a free loopback port, with its data in a temporary folder. As root it runs
//!   as the OS user `postgres`, like `scripts/services.sh`.
//!
//! - [`KafkaCluster`] runs three combined broker+controller nodes of the same KRaft cluster (a
//!   controller quorum of three, replication factor 3 and `min.insync.replicas=2` by default), each
//!   of which can be stopped, killed, paused and restarted on its own: a broker failover.
//!
//! `TXOUTBOX_KEEP_INSTANCES=1` keeps their folders (logs, data) after the test, for a post-mortem.
//!
//! Both are stopped hard and their folders deleted when dropped (also when a test panics).

use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node or cluster may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
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

/// The last `lines` lines of a file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether this process runs as root (uid 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// uid and gid of an OS user, from `/etc/passwd`.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Sends `signal` (e.g. `TERM`, `KILL`, `STOP`, `CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `timeout` for a child to exit; true when it did.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a blocking closure on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

// ---------------------------------------------------------------------------------------------
// Kafka
// ---------------------------------------------------------------------------------------------

/// The folder holding the Kafka jars: `TXOUTBOX_KAFKA_HOME`/lib (default
/// `~/.cache/txoutbox/kafka-4.1.1/lib`) when `scripts/services.sh` fetched them there, else what
/// `scripts/services.sh kafka-lib` prints (it fetches them first).
pub fn kafka_lib() -> PathBuf {
    let home = std::env::var_os("TXOUTBOX_KAFKA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/txoutbox/kafka-4.1.1")
        });
    let lib = home.join("lib");
    if lib.join(".complete").exists() {
        return lib;
    }
    PathBuf::from(services_sh("kafka-lib"))
}

/// Runs `scripts/services.sh <command>` and returns its stdout's last line.
pub(crate) fn services_sh(command: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let out = Command::new(&script)
        .arg(command)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {} {command}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").trim().to_owned();
    assert!(
        out.status.success() && !last.is_empty(),
        "{} {command} failed ({})",
        script.display(),
        out.status
    );
    last
}

/// A Kafka cluster id: 16 random bytes in URL-safe base64 without padding (22 characters).
fn kafka_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    loop {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = String::new();
        for b in bytes {
            bits = (bits << 8) | u32::from(b);
            n += 8;
            while n >= 6 {
                n -= 6;
                out.push(ALPHABET[((bits >> n) & 63) as usize] as char);
            }
        }
        if n > 0 {
            out.push(ALPHABET[((bits << (6 - n)) & 63) as usize] as char);
        }
        if !out.starts_with('-') {
            return out;
        }
    }
}

/// A private single-node Apache Kafka (KRaft, broker and controller in one JVM) on free loopback
/// ports. Stopping and starting it keeps its data folder, so topics and records survive.
#[derive(Debug)]
pub struct KafkaNode {
    dir: PathBuf,
    broker_port: u16,
    controller_port: u16,
    child: Option<Child>,
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
            let properties = format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}\n\
                 listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL\n\
                 num.network.threads=3\n\
                 num.io.threads=8\n\
                 socket.send.buffer.bytes=102400\n\
                 socket.receive.buffer.bytes=102400\n\
                 socket.request.max.bytes=104857600\n\
                 log.dirs={data}\n\
                 num.partitions=1\n\
                 num.recovery.threads.per.data.dir=1\n\
                 offsets.topic.replication.factor=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 log.retention.hours=168\n\
                 log.segment.bytes=1073741824\n\
                 log.retention.check.interval.ms=300000\n",
                data = dir.join("data").display(),
            );
            Self::format_and_launch(dir, broker_port, controller_port, &properties, &[])
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
        let mut secured = String::new();
        let mut scram = Vec::new();
        let (mut listeners, mut map) = (String::new(), String::new());
        if let Some((users, supers, out)) = sasl {
            let port = loop {
                let p = free_port();
                if p != broker_port && p != controller_port {
                    break p;
                }
            };
            let tls = make_certificates(&dir);
            listeners = format!(",SASL_SSL://127.0.0.1:{port}");
            map = ",SASL_SSL:SASL_SSL".to_owned();
            let supers: Vec<String> = std::iter::once("User:ANONYMOUS".to_owned())
                .chain(supers.iter().map(|u| format!("User:{u}")))
                .collect();
            secured = format!(
                "sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                 listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 ssl.keystore.type=PEM\n\
                 ssl.keystore.location={keystore}\n\
                 authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
                 super.users={supers}\n",
                keystore = tls.keystore.display(),
                supers = supers.join(";"),
            );
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
        let properties = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}\n\
             listeners=PLAINTEXT://127.0.0.1:{broker_port}{listeners},CONTROLLER://127.0.0.1:{controller_port}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{advertised}{listeners},CONTROLLER://127.0.0.1:{controller_port}\n\
             inter.broker.listener.name=PLAINTEXT\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{map}\n\
             {secured}\
             log.dirs={data}\n\
             auto.create.topics.enable=false\n\
             num.partitions=3\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n",
            data = dir.join("data").display(),
            advertised = advertised.unwrap_or(broker_port),
        );
        Self::format_and_launch(dir, broker_port, controller_port, &properties, &scram)
    }

    /// Writes `properties` into `dir`, formats the node's storage (with `extra` arguments, e.g.
    /// SCRAM users) and starts it.
    fn format_and_launch(
        dir: PathBuf,
        broker_port: u16,
        controller_port: u16,
        properties: &str,
        extra: &[String],
    ) -> Self {
        let lib = kafka_lib();
        std::fs::write(dir.join("server.properties"), properties).unwrap();
        let log4j = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka/log4j2.xml");
        std::fs::copy(&log4j, dir.join("log4j2.xml"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", log4j.display()));
        let format = Command::new("java")
            .arg("-cp")
            .arg(format!("{}/*", lib.display()))
            .args(["kafka.tools.StorageTool", "format", "--cluster-id"])
            .arg(kafka_cluster_id())
            .arg("--config")
            .arg(dir.join("server.properties"))
            .arg("--standalone")
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run java (Kafka's StorageTool)");
        assert!(
            format.status.success(),
            "formatting {} failed: {}{}",
            dir.display(),
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        );
        let mut node = Self {
            dir,
            broker_port,
            controller_port,
            child: None,
        };
        node.launch_and_wait();
        node
    }

    fn launch_and_wait(&mut self) {
        assert!(self.child.is_none(), "the Kafka node is running already");
        for port in [self.broker_port, self.controller_port] {
            assert!(
                !port_accepts(port),
                "port {port} was taken by another process while the node was down"
            );
        }
        let log_path = self.dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let offset = log.metadata().unwrap().len();
        let child = Command::new("java")
            .args([
                "-Xms256m",
                "-Xmx768m",
                "-server",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
            ])
            .arg(format!("-Dtxoutbox.node.dir={}", self.dir.display()))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.xml").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", kafka_lib().display()))
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start java (Kafka)");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "the Kafka node exited while starting ({status}):\n{}",
                    tail(&log_path, 60)
                );
            }
            if log_contains_since(&log_path, offset, "Kafka Server started") && port_accepts(self.broker_port)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Kafka node did not start within {READY_TIMEOUT:?}:\n{}",
                tail(&log_path, 60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:<broker port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.broker_port)
    }

    /// The JVM's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the node's process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the node with SIGTERM (a controlled shutdown) and waits until it is gone.
    pub async fn stop(&mut self) {
        self.signal_and_wait("TERM").await;
    }

    /// Kills the node with SIGKILL and waits until it is gone.
    pub async fn kill(&mut self) {
        self.signal_and_wait("KILL").await;
    }

    async fn signal_and_wait(&mut self, sig: &'static str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let child = blocking(move || {
            signal(child.id(), sig);
            if !wait_exit(&mut child, Duration::from_secs(60)) {
                let _ = child.kill();
                let _ = child.wait();
            }
            child
        })
        .await;
        drop(child);
    }

    /// Freezes the node (SIGSTOP): its connections stay open, nothing answers.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
        }
    }

    /// Lets a frozen node go on (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
    }

    /// Starts the stopped node again on the same data folder and ports; returns once it serves.
    pub async fn restart(&mut self) {
        let mut me = std::mem::replace(
            self,
            Self {
                dir: PathBuf::new(),
                broker_port: 0,
                controller_port: 0,
                child: None,
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
        self.dir.join("node.log")
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

fn log_contains_since(path: &Path, offset: u64, needle: &str) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    text.contains(needle)
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.dir.as_os_str().is_empty() && std::env::var_os("TXOUTBOX_KEEP_INSTANCES").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka: a 3-node cluster
// ---------------------------------------------------------------------------------------------

/// The JVM heap of each cluster node: three JVMs share the 2-core test machine.
const CLUSTER_NODE_HEAP: &str = "-Xmx384m";

/// One node of a [`KafkaCluster`].
#[derive(Debug)]
struct ClusterNode {
    id: i32,
    dir: PathBuf,
    broker_port: u16,
    controller_port: u16,
    child: Option<Child>,
    /// Where this start's log begins (to find its "started" line).
    log_offset: u64,
}

impl ClusterNode {
    fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// Starts the JVM; does not wait.
    fn launch(&mut self, lib: &Path) {
        assert!(self.child.is_none(), "kafka-{} is running already", self.id);
        for port in [self.broker_port, self.controller_port] {
            assert!(
                !port_accepts(port),
                "port {port} was taken by another process while kafka-{} was down",
                self.id
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.log_offset = log.metadata().unwrap().len();
        let child = Command::new("java")
            .args([
                "-Xms128m",
                CLUSTER_NODE_HEAP,
                "-server",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
            ])
            .arg(format!("-Dtxoutbox.node.dir={}", self.dir.display()))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.xml").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", lib.display()))
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start java (Kafka)");
        self.child = Some(child);
    }

    /// Whether this start is ready (panics when the process died).
    fn ready(&mut self) -> bool {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            self.child = None;
            panic!(
                "kafka-{} exited while starting ({status}):\n{}",
                self.id,
                tail(&self.log_path(), 60)
            );
        }
        log_contains_since(&self.log_path(), self.log_offset, "Kafka Server started")
            && port_accepts(self.broker_port)
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
                .map(|n| format!("kafka-{}:\n{}", n.id, tail(&n.log_path(), 30)))
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
        let voters = (0..3)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[2 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = kafka_cluster_id();
        let log4j = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka/log4j2.xml");
        let mut nodes = Vec::new();
        for i in 0..3 {
            let (id, broker_port, controller_port) = (i as i32 + 1, ports[2 * i], ports[2 * i + 1]);
            let node_dir = dir.join(format!("kafka-{id}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let properties = format!(
                "process.roles=broker,controller\n\
                 node.id={id}\n\
                 controller.quorum.voters={voters}\n\
                 listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 log.dirs={data}\n\
                 auto.create.topics.enable=false\n\
                 num.partitions=6\n\
                 default.replication.factor=3\n\
                 min.insync.replicas=2\n\
                 unclean.leader.election.enable=false\n\
                 offsets.topic.replication.factor=3\n\
                 offsets.topic.num.partitions=3\n\
                 transaction.state.log.replication.factor=3\n\
                 transaction.state.log.min.isr=2\n\
                 share.coordinator.state.topic.replication.factor=3\n\
                 share.coordinator.state.topic.min.isr=2\n\
                 group.initial.rebalance.delay.ms=0\n\
                 num.network.threads=2\n\
                 num.io.threads=2\n\
                 background.threads=2\n",
                data = node_dir.join("data").display()
            );
            std::fs::write(node_dir.join("server.properties"), properties).unwrap();
            std::fs::copy(&log4j, node_dir.join("log4j2.xml"))
                .unwrap_or_else(|e| panic!("copy {}: {e}", log4j.display()));
            let format = Command::new("java")
                .arg("-cp")
                .arg(format!("{}/*", lib.display()))
                .args(["kafka.tools.StorageTool", "format", "--cluster-id", &cluster_id])
                .arg("--config")
                .arg(node_dir.join("server.properties"))
                .stdin(Stdio::null())
                .output()
                .expect("run java (Kafka's StorageTool)");
            assert!(
                format.status.success(),
                "formatting {} failed: {}{}",
                node_dir.display(),
                String::from_utf8_lossy(&format.stdout),
                String::from_utf8_lossy(&format.stderr)
            );
            nodes.push(ClusterNode {
                id,
                dir: node_dir,
                broker_port,
                controller_port,
                child: None,
                log_offset: 0,
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
            .and_then(|n| n.child.as_ref().map(Child::id))
    }

    /// Whether node `id` runs.
    pub fn is_running(&self, id: i32) -> bool {
        self.pid(id).is_some()
    }

    /// Stops node `id` with SIGTERM (a controlled shutdown: its leaderships move first) and waits
    /// until it is gone.
    pub async fn stop(&mut self, id: i32) {
        self.signal_and_wait(id, "TERM").await;
    }

    /// Kills node `id` with SIGKILL (no controlled shutdown) and waits until it is gone.
    pub async fn kill(&mut self, id: i32) {
        self.signal_and_wait(id, "KILL").await;
    }

    async fn signal_and_wait(&mut self, id: i32, sig: &'static str) {
        let Some(mut child) = self.node(id).child.take() else {
            return;
        };
        let child = blocking(move || {
            signal(child.id(), sig);
            if !wait_exit(&mut child, Duration::from_secs(60)) {
                let _ = child.kill();
                let _ = child.wait();
            }
            child
        })
        .await;
        drop(child);
    }

    /// Freezes node `id` (SIGSTOP): its connections stay open, nothing answers.
    pub fn pause(&self, id: i32) {
        if let Some(pid) = self.pid(id) {
            signal(pid, "STOP");
        }
    }

    /// Lets a frozen node go on (SIGCONT).
    pub fn resume(&self, id: i32) {
        if let Some(pid) = self.pid(id) {
            signal(pid, "CONT");
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
        self.dir.join(format!("kafka-{id}/node.log"))
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
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
/// under `/usr/lib/postgresql/*/bin` with `initdb` and `pg_ctl` (as `scripts/services.sh` picks
/// it), else the folder of `initdb` on the `PATH`, else what `scripts/services.sh pg-bindir`
/// prints (it installs PostgreSQL first).
pub fn pg_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TXOUTBOX_PG_BINDIR") {
        return dir.into();
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let bin = entry.path().join("bin");
            let version = entry
                .file_name()
                .to_string_lossy()
                .split('.')
                .next()
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(v) = version
                && bin.join("initdb").exists()
                && bin.join("pg_ctl").exists()
                && best.as_ref().is_none_or(|(b, _)| v > *b)
            {
                best = Some((v, bin));
            }
        }
    }
    if let Some((_, bin)) = best {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        })
        .unwrap_or_else(|| PathBuf::from(services_sh("pg-bindir")))
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
/// `postgres` with trust authentication on 127.0.0.1.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The OS user the server runs as when we are root.
    run_as: Option<String>,
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
        let bin = pg_bindir();
        let run_as = is_root().then(|| "postgres".to_owned());
        let dir = temp_folder("txoutbox-pg");
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user).unwrap_or_else(|| {
                panic!("running as root, but there is no OS user {user} to run PostgreSQL as")
            });
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster folder");
        }
        let cluster = Self {
            dir,
            bin,
            port: free_port(),
            run_as,
        };
        let data = cluster.data();
        let pwfile = cluster.dir.join("pwfile");
        let mut initdb = vec![
            "-D".to_owned(),
            data.to_str().unwrap().to_owned(),
            "-U".to_owned(),
            "postgres".to_owned(),
            "--auth=trust".to_owned(),
            "--no-locale".to_owned(),
            "--encoding=UTF8".to_owned(),
            "--no-sync".to_owned(),
        ];
        if let Some(password) = tls_password {
            std::fs::write(&pwfile, format!("{password}\n")).expect("write the password file");
            initdb.push(format!("--pwfile={}", pwfile.display()));
        }
        cluster.run_checked("initdb", &initdb.iter().map(String::as_str).collect::<Vec<_>>());
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
            if let Some(user) = &cluster.run_as {
                let (uid, gid) = user_ids(user).expect("the server's OS user");
                std::os::unix::fs::chown(&certificates.server_key, Some(uid), Some(gid))
                    .expect("chown the server key");
            }
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
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("write pg_hba.conf");
        }
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        command.current_dir("/").stdin(Stdio::null());
        command
    }

    fn run_checked(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed ({}): {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.dir.join("postgres.log"), 30)
        );
    }

    fn pg_ctl_start(&self) {
        assert!(
            !port_accepts(self.port),
            "port {} was taken by another process while the cluster was down",
            self.port
        );
        let data = self.data();
        let log = self.dir.join("postgres.log");
        self.run_checked(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "180",
                "start",
            ],
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        while !port_accepts(self.port) {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL started but does not accept connections:\n{}",
                tail(&log, 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pg_ctl_stop(&self, mode: PgStopMode) {
        let data = self.data();
        self.run_checked(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                mode.arg(),
                "-w",
                "-t",
                "120",
                "stop",
            ],
        );
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
            bin: self.bin.clone(),
            port: self.port,
            run_as: self.run_as.clone(),
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
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .args([
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if std::env::var_os("TXOUTBOX_KEEP_INSTANCES").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
