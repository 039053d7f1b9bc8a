//! Apache Kafka, shared by the services and the tests' private nodes: the jars (from Maven
//! Central, into a cache), a node's files, formatting its storage, its JVM command and when it is
//! ready.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::files::{mkdir, write};
use crate::kafka_config::KafkaConfig;
use crate::lock::Lock;
use crate::process::{file_contains_since, log_tail, port_accepts, run_logged, since, spawn, which};
use crate::settings::KAFKA_VERSION;
use crate::{Settings, say};

/// The list of jars that run a broker (not a build: `mvn copy-dependencies` reads it).
const POM: &str = include_str!("../../../scripts/kafka/pom.xml");

/// The brokers' logging configuration (one log file per node, quiet libraries).
const LOG4J2: &str = include_str!("../../../scripts/kafka/log4j2.xml");

/// The line a node logs once it serves.
const STARTED: &str = "Kafka Server started";

/// Installs Java and Maven with apt when missing.
pub fn ensure_java(settings: &Settings) -> Result<()> {
    let mut missing = Vec::new();
    if which("java").is_none() {
        missing.push("openjdk-17-jre-headless");
    }
    if which("mvn").is_none() {
        missing.push("maven");
    }
    if missing.is_empty() {
        return Ok(());
    }
    crate::packages::apt_install(settings, &missing).context("kafka: needs Java 17+ and Maven")
}

/// The folder of the broker's jars, copied from Maven Central once (with Java and Maven installed
/// first when missing); its `.complete` marker holds the pom's hash, so a changed pom fetches
/// anew. Serialized on the cache's own lock (several services folders may share it).
pub fn jars(settings: &Settings) -> Result<PathBuf> {
    let lib = settings.kafka_lib();
    let stamp = crate::process::sha256_hex(POM.as_bytes())?;
    let stamp = stamp.get(..16).unwrap_or(&stamp).to_owned();
    let complete =
        |lib: &Path| std::fs::read_to_string(lib.join(".complete")).is_ok_and(|s| s.trim() == stamp);
    if complete(&lib) {
        return Ok(lib);
    }
    ensure_java(settings)?;
    let home = &settings.kafka_home;
    mkdir(home)?;
    let _lock =
        Lock::acquire(&home.join(".lock"), "another invocation fetching the Kafka jars").context("kafka")?;
    if complete(&lib) {
        return Ok(lib);
    }
    say!("kafka: fetching jars (first run, ~35 s)…");
    let t0 = Instant::now();
    let tmp = home.join("lib.partial");
    let log = home.join("mvn.log");
    let pom = home.join("pom.xml");
    write(&pom, POM)?;
    let _ = std::fs::remove_dir_all(&tmp);
    mkdir(&tmp)?;
    run_logged(
        Command::new("mvn")
            .args(["-B", "-q", "-f"])
            .arg(&pom)
            .arg("org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies")
            .arg("-DincludeScope=runtime")
            .arg(format!("-DoutputDirectory={}", tmp.display())),
        &log,
        "kafka: fetching the jars with Maven",
    )?;
    let names: Vec<String> = std::fs::read_dir(&tmp)
        .with_context(|| format!("read {}", tmp.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let broker = format!("kafka_2.13-{KAFKA_VERSION}.jar");
    if !names.contains(&broker) || !names.iter().any(|n| n.starts_with("log4j-slf4j-impl-")) {
        bail!(
            "kafka: Maven ran but {} lacks {broker} or log4j-slf4j-impl (log: {})",
            tmp.display(),
            log.display()
        );
    }
    write(&tmp.join(".complete"), format!("{stamp}\n"))?;
    let _ = std::fs::remove_dir_all(&lib);
    std::fs::rename(&tmp, &lib).with_context(|| format!("move {} to {}", tmp.display(), lib.display()))?;
    let count = names.iter().filter(|n| n.ends_with(".jar")).count();
    say!(
        "kafka: fetched {count} jars in {} s into {}",
        since(t0),
        lib.display()
    );
    Ok(lib)
}

/// A random Kafka cluster id: 16 random bytes in URL-safe base64 without padding (22
/// characters), not starting with `-`.
pub fn random_cluster_id() -> Result<String> {
    loop {
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("read /dev/urandom")?;
        let id = base64_url(&bytes);
        if !id.starts_with('-') {
            return Ok(id);
        }
    }
}

/// URL-safe base64 without padding.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (mut bits, mut n, mut out) = (0u32, 0, String::new());
    let mut push = |v: u32| {
        out.push(char::from(
            ALPHABET.get((v & 63) as usize).copied().unwrap_or(b'A'),
        ))
    };
    for &b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            push(bits >> n);
        }
    }
    if n > 0 {
        push(bits << (6 - n));
    }
    out
}

/// Writes a node's `server.properties` and `log4j2.xml` into `dir` (created when missing).
pub fn write_node_files(dir: &Path, config: &KafkaConfig) -> Result<()> {
    mkdir(dir)?;
    write(&dir.join("server.properties"), config.render())?;
    write(&dir.join("log4j2.xml"), LOG4J2)
}

/// Formats a node's storage (`kafka-storage format`) with its `server.properties` in `dir`:
/// `--standalone` for a single node, `extra` arguments (e.g. `--add-scram …`) added; the output
/// goes to `dir/format.log`.
pub fn format(lib: &Path, dir: &Path, cluster_id: &str, standalone: bool, extra: &[String]) -> Result<()> {
    let mut command = Command::new("java");
    command
        .arg("-cp")
        .arg(classpath(lib))
        .args([
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
        ])
        .arg(dir.join("server.properties"));
    if standalone {
        command.arg("--standalone");
    }
    command.args(extra);
    run_logged(
        &mut command,
        &dir.join("format.log"),
        &format!("kafka: formatting {}", dir.join("data").display()),
    )
}

/// The JVM's arguments that run the node whose files are in `dir` (`java` is the program), with
/// heap options `heap` (e.g. `-Xms512m -Xmx1g`) and `jvm` options after them. The
/// `-Dtxoutbox.node.dir=<dir>` argument tells our nodes apart from any other JVM.
pub fn java_args(lib: &Path, dir: &Path, heap: &[String], jvm: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = heap.to_vec();
    args.extend(
        [
            "-server",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
        ]
        .iter()
        .chain(jvm)
        .map(|s| (*s).to_owned()),
    );
    args.push(node_dir_arg(dir));
    args.push(format!(
        "-Dlog4j2.configurationFile={}",
        dir.join("log4j2.xml").display()
    ));
    args.push("-cp".to_owned());
    args.push(classpath(lib));
    args.push("kafka.Kafka".to_owned());
    args.push(dir.join("server.properties").display().to_string());
    args
}

/// The JVM argument that marks the node of folder `dir`.
pub fn node_dir_arg(dir: &Path) -> String {
    format!("-Dtxoutbox.node.dir={}", dir.display())
}

fn classpath(lib: &Path) -> String {
    format!("{}/*", lib.display())
}

/// A node's log: stdout and stderr of every start.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("node.log")
}

/// Whether the start whose log began at byte `offset` logged that it serves, and its broker port
/// accepts connections.
pub fn serving(dir: &Path, offset: u64, broker_port: u16) -> bool {
    file_contains_since(&log_path(dir), offset, STARTED) && port_accepts(broker_port)
}

/// A node's JVM that was just started.
#[derive(Debug)]
pub struct Launched {
    /// The JVM (dropping it neither kills nor waits for it).
    pub child: Child,
    /// Where this start's lines begin in the node's log.
    pub log_offset: u64,
}

/// Starts the node whose files are in `dir` ([`java_args`]); its stdout and stderr are appended
/// to its log after a banner. With `pid_file`, detached in a session of its own (a service that
/// outlives us; the pid goes to that file), else a plain child of ours (a test's node).
pub fn launch(
    lib: &Path,
    dir: &Path,
    heap: &[String],
    jvm: &[&str],
    pid_file: Option<&Path>,
) -> Result<Launched> {
    let name = dir
        .file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let args = java_args(lib, dir, heap, jvm);
    let (child, log_offset) = spawn(&name, Path::new("java"), &args, dir, &log_path(dir), pid_file)?;
    Ok(Launched { child, log_offset })
}

/// Whether a launched node serves yet; an error with its log's tail when it exited. `name`
/// names it in the error.
pub fn check_start(launched: &mut Launched, dir: &Path, broker_port: u16, name: &str) -> Result<bool> {
    if let Ok(Some(status)) = launched.child.try_wait() {
        let log = log_path(dir);
        bail!(
            "kafka: {name} (pid {}) exited while starting ({status}); log: {}\n{}",
            launched.child.id(),
            log.display(),
            log_tail(&log, 60)
        );
    }
    Ok(serving(dir, launched.log_offset, broker_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_16_bytes_is_22_url_safe_characters() {
        assert_eq!(base64_url(&[0xff; 16]), "_____________________w");
        assert_eq!(base64_url(b"\x00\x10\x83"), "ABCD");
        let id = random_cluster_id().unwrap();
        assert_eq!(id.len(), 22);
        assert!(!id.starts_with('-'));
    }

    #[test]
    fn jvm_arguments_name_the_node() {
        let args = java_args(
            Path::new("/lib"),
            Path::new("/n"),
            &["-Xmx1g".into()],
            &["-XX:TieredStopAtLevel=1"],
        );
        assert_eq!(args.first().map(String::as_str), Some("-Xmx1g"));
        assert!(args.contains(&"-Dtxoutbox.node.dir=/n".to_owned()));
        assert!(args.contains(&"-XX:TieredStopAtLevel=1".to_owned()));
        assert_eq!(args.last().map(String::as_str), Some("/n/server.properties"));
    }
}
