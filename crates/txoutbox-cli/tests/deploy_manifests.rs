//! The deployment files agree with the daemon (`deploy/Dockerfile`, `deploy/compose.yaml`,
//! `deploy/kubernetes/*.yaml`; no container engine runs them here): their probe paths are routes
//! the daemon answers, their ports its listen port, every `TXOUTBOX_*` variable they set is one it
//! reads (from its `--help`, the `_FILE` forms and the Kafka property prefix of its sources), the
//! Deployment runs two replicas in exclusive coordination, the Secret holds exactly the keys the
//! Deployment uses, every `…_FILE` names a mounted secret, and the compose writer sets only the
//! columns the table contract leaves to writers. The last test starts the Deployment's init
//! container and both replicas with the Deployment's own environment against PostgreSQL.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use txoutbox_testing::eventually;
use txoutbox_testing::postgres::TestSchema;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The YAML documents of a file, as JSON values.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    yaml_serde::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// Every document of deploy/kubernetes/*.yaml.
fn kubernetes() -> Vec<Value> {
    let dir = workspace().join("deploy/kubernetes");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("list deploy/kubernetes")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    paths.iter().flat_map(|path| yaml_documents(path)).collect()
}

/// The one Kubernetes object of this kind.
fn object(documents: &[Value], kind: &str) -> Value {
    let found: Vec<&Value> = documents.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "deploy/kubernetes should hold one {kind}, not {}",
        found.len()
    );
    found[0].clone()
}

fn compose() -> Value {
    let mut documents = yaml_documents(&workspace().join("deploy/compose.yaml"));
    assert_eq!(documents.len(), 1, "deploy/compose.yaml is one document");
    documents.remove(0)
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, found {value}"))
}

/// The Dockerfile's instructions of its last (runtime) stage: (instruction, argument).
fn runtime_stage() -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut line = String::new();
    for raw in read("deploy/Dockerfile").lines() {
        if raw.trim_start().starts_with('#') {
            continue;
        }
        match raw.trim_end().strip_suffix('\\') {
            Some(part) => line.push_str(part),
            None => {
                line.push_str(raw);
                if !line.trim().is_empty() {
                    joined.push(std::mem::take(&mut line));
                }
                line.clear();
            }
        }
    }
    let last_from = joined
        .iter()
        .rposition(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .expect("the Dockerfile has a FROM");
    joined[last_from + 1..]
        .iter()
        .filter_map(|l| {
            let (instruction, argument) = l.trim().split_once(char::is_whitespace)?;
            Some((instruction.to_ascii_uppercase(), argument.trim().to_owned()))
        })
        .collect()
}

fn instruction(stage: &[(String, String)], name: &str) -> String {
    stage
        .iter()
        .find(|(i, _)| i == name)
        .map(|(_, a)| a.clone())
        .unwrap_or_else(|| panic!("the runtime stage has no {name}"))
}

/// The image's environment (`ENV KEY=VALUE` lines of the runtime stage).
fn image_env() -> BTreeMap<String, String> {
    runtime_stage()
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, a)| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("ENV KEY=VALUE");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// An exec-form array (`["txoutbox", "probe", "/live"]`).
fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("`{text}` is not an exec-form array: {e}"))
}

/// A constant's string value in the daemon's sources: `NAME: &str = "value"`.
fn source_constant(file: &str, name: &str) -> String {
    let source = read(&format!("crates/txoutbox-cli/src/{file}"));
    let start = format!("{name}: &str = \"");
    let at = source
        .find(&start)
        .unwrap_or_else(|| panic!("{file} defines no {name}"))
        + start.len();
    source[at..]
        .split('"')
        .next()
        .expect("a closing quote")
        .to_owned()
}

/// The variables the daemon reads with `value_or_file("…")` (a `…_FILE` form besides).
fn file_variables() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![workspace().join("crates/txoutbox-cli/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list sources") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).expect("read source");
                for part in source.split("value_or_file(\"").skip(1) {
                    found.insert(part.split('"').next().expect("a closing quote").to_owned());
                }
            }
        }
    }
    assert!(found.contains("TXOUTBOX_DATABASE_URL"), "found {found:?}");
    found
}

/// What the daemon reads from the environment.
struct DaemonVariables {
    /// Named in some command's `--help`.
    named: BTreeSet<String>,
    /// Those that may also come from a file (`<name>_FILE`).
    from_files: BTreeSet<String>,
    /// `TXOUTBOX_KAFKA_PROPERTY_`: a librdkafka property per variable.
    kafka_property_prefix: String,
}

impl DaemonVariables {
    fn new() -> Self {
        Self {
            named: support::help::variables(),
            from_files: file_variables(),
            kafka_property_prefix: source_constant("environment.rs", "KAFKA_PROPERTY_PREFIX"),
        }
    }

    /// Whether the daemon reads `name`.
    fn reads(&self, name: &str) -> bool {
        if let Some(property) = name.strip_prefix(&self.kafka_property_prefix) {
            let property = property.strip_suffix("_FILE").unwrap_or(property);
            return !property.is_empty();
        }
        self.named.contains(name)
            || name
                .strip_suffix("_FILE")
                .is_some_and(|base| self.from_files.contains(base))
    }
}

/// The containers and init containers of a pod template.
fn containers(deployment: &Value) -> Vec<Value> {
    let spec = &deployment["spec"]["template"]["spec"];
    let mut all: Vec<Value> = spec["initContainers"].as_array().cloned().unwrap_or_default();
    all.extend(
        spec["containers"]
            .as_array()
            .cloned()
            .expect("the Deployment has containers"),
    );
    all
}

fn relay_container(deployment: &Value) -> Value {
    let found: Vec<Value> = containers(deployment)
        .into_iter()
        .filter(|c| c["args"] == serde_json::json!(["relay"]))
        .collect();
    assert_eq!(found.len(), 1, "one container runs `relay`");
    found[0].clone()
}

/// A container's plain `value:` variables.
fn container_values(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|var| Some((text(&var["name"]).to_owned(), var["value"].as_str()?.to_owned())))
        .collect()
}

/// A compose service's environment (map or list form).
fn service_env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect(),
        Value::Array(list) => list
            .iter()
            .map(|item| {
                let (k, v) = text(item).split_once('=').unwrap_or((text(item), ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The compose service built from deploy/Dockerfile.
fn compose_daemon(compose: &Value) -> (String, Value) {
    let found: Vec<(String, Value)> = compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(_, s)| s["build"]["dockerfile"] == "deploy/Dockerfile")
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one compose service is built from deploy/Dockerfile"
    );
    found[0].clone()
}

/// The port of a listen address (`0.0.0.0:9464`).
fn port_of(listen: &str) -> u16 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in `{listen}`"))
}

#[test]
fn every_variable_the_files_set_is_one_the_daemon_reads() {
    let daemon = DaemonVariables::new();
    let mut set: Vec<(String, String)> = Vec::new();
    for container in containers(&object(&kubernetes(), "Deployment")) {
        for var in container["env"].as_array().into_iter().flatten() {
            set.push((
                format!("deployment container {}", container["name"]),
                text(&var["name"]).to_owned(),
            ));
        }
    }
    let (name, service) = compose_daemon(&compose());
    for var in service_env(&service).keys() {
        set.push((format!("compose service {name}"), var.clone()));
    }
    for var in image_env().keys() {
        set.push(("the Dockerfile".to_owned(), var.clone()));
    }
    let unknown: Vec<String> = set
        .iter()
        .filter(|(_, var)| var.starts_with("TXOUTBOX_") && !daemon.reads(var))
        .map(|(place, var)| format!("{place} sets {var}, which txoutbox does not read"))
        .collect();
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
    // The checks above are not vacuous: they saw the variables this file is about.
    for expected in [
        "TXOUTBOX_DATABASE_URL_FILE",
        "TXOUTBOX_COORDINATION",
        "TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD_FILE",
    ] {
        assert!(set.iter().any(|(_, v)| v == expected), "no file sets {expected}");
    }
    assert!(!daemon.reads("TXOUTBOX_DATABASE_URL_FLIE") && !daemon.reads("TXOUTBOX_COORDINATON"));
}

#[test]
fn probes_and_ports_are_the_daemons() {
    let default_port = port_of(&source_constant("settings.rs", "DEFAULT_HTTP_LISTEN"));
    let listen = image_env()
        .remove("TXOUTBOX_HTTP_LISTEN")
        .expect("the image sets TXOUTBOX_HTTP_LISTEN");
    let port = port_of(&listen);
    assert_eq!(
        port, default_port,
        "the image listens on the daemon's default port"
    );

    // The Dockerfile.
    let stage = runtime_stage();
    assert_eq!(instruction(&stage, "EXPOSE"), port.to_string(), "EXPOSE");
    let healthcheck = instruction(&stage, "HEALTHCHECK");
    let command = healthcheck.split_once("CMD ").expect("HEALTHCHECK … CMD").1;
    assert_eq!(
        exec_form(command),
        ["txoutbox", "probe", "/live"],
        "the image's health check"
    );
    assert_eq!(exec_form(&instruction(&stage, "ENTRYPOINT")), ["txoutbox"]);
    assert_eq!(exec_form(&instruction(&stage, "CMD")), ["relay"]);

    // Kubernetes: probes on the container's named port, which is the listen port.
    let documents = kubernetes();
    let deployment = object(&documents, "Deployment");
    let container = relay_container(&deployment);
    let values = container_values(&container);
    let container_listen = values
        .get("TXOUTBOX_HTTP_LISTEN")
        .cloned()
        .unwrap_or(listen.clone());
    assert!(
        container_listen.starts_with("0.0.0.0:"),
        "the kubelet probes the pod's IP: listen on it"
    );
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .map(|p| {
            (
                text(&p["name"]).to_owned(),
                p["containerPort"].as_u64().expect("containerPort"),
            )
        })
        .collect();
    assert_eq!(
        ports.get("http"),
        Some(&u64::from(port_of(&container_listen))),
        "containerPort http"
    );
    for (probe, path) in [
        ("startupProbe", "/live"),
        ("livenessProbe", "/live"),
        ("readinessProbe", "/health"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe} asks the http port");
    }
    let service = object(&documents, "Service");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"].as_u64(), Some(u64::from(port)));
    assert_eq!(service_port["targetPort"], "http");

    // Compose: the health check and the published port.
    let (_, daemon) = compose_daemon(&compose());
    assert_eq!(
        daemon["healthcheck"]["test"],
        serde_json::json!(["CMD", "txoutbox", "probe", "/live"])
    );
    let published = text(&daemon["ports"][0]);
    assert_eq!(
        port_of(published),
        port,
        "compose publishes the listen port ({published})"
    );
}

#[test]
fn the_deployment_runs_two_exclusive_replicas_as_the_images_user() {
    let deployment = object(&kubernetes(), "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = relay_container(&deployment);
    let values = container_values(&container);
    assert_eq!(
        values.get("TXOUTBOX_COORDINATION").map(String::as_str),
        Some("exclusive")
    );
    let relay_help = support::help::help(&["relay"]);
    assert!(
        relay_help.contains("- exclusive:"),
        "`exclusive` is no longer a value of --coordination:\n{relay_help}"
    );
    // Each replica names itself: its pod.
    let node_id = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|v| v["name"] == "TXOUTBOX_NODE_ID")
        .expect("TXOUTBOX_NODE_ID");
    assert_eq!(node_id["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");

    let user = instruction(&runtime_stage(), "USER");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    let pod = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true);
    assert_eq!(pod["runAsUser"].to_string(), uid);
    assert_eq!(pod["runAsGroup"].to_string(), gid);
    for container in containers(&deployment) {
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{}", container["name"]);
        assert_eq!(
            security["allowPrivilegeEscalation"], false,
            "{}",
            container["name"]
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{}",
            container["name"]
        );
    }
}

/// The files each `…_FILE` variable of a container names: (variable, Secret key).
fn secret_files(deployment: &Value, container: &Value, secret: &str) -> Vec<(String, String)> {
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Mounted path → the Secret key it holds.
    let mut mounted = BTreeMap::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
        if volume["secret"]["secretName"] != secret {
            continue;
        }
        let items = volume["secret"]["items"]
            .as_array()
            .expect("the secret volume lists its items");
        for item in items {
            let path = format!("{}/{}", text(&mount["mountPath"]), text(&item["path"]));
            mounted.insert(path, text(&item["key"]).to_owned());
        }
    }
    container_values(container)
        .into_iter()
        .filter(|(name, _)| name.ends_with("_FILE"))
        .map(|(name, path)| {
            let key = mounted.get(&path).unwrap_or_else(|| {
                panic!(
                    "{name}={path} is no file of the Secret {secret} mounted in {}",
                    container["name"]
                )
            });
            (name, key.clone())
        })
        .collect()
}

#[test]
fn the_secret_holds_exactly_the_keys_the_deployment_uses() {
    let documents = kubernetes();
    let secret = object(&documents, "Secret");
    let name = text(&secret["metadata"]["name"]).to_owned();
    let mut keys = BTreeSet::new();
    for field in ["stringData", "data"] {
        if let Some(map) = secret[field].as_object() {
            keys.extend(map.keys().cloned());
        }
    }
    let deployment = object(&documents, "Deployment");
    let mut used = BTreeSet::new();
    for container in containers(&deployment) {
        for (_, key) in secret_files(&deployment, &container, &name) {
            used.insert(key);
        }
        for var in container["env"].as_array().into_iter().flatten() {
            let reference = &var["valueFrom"]["secretKeyRef"];
            if !reference.is_null() {
                assert_eq!(reference["name"], name.as_str(), "{}", var["name"]);
                used.insert(text(&reference["key"]).to_owned());
            }
        }
    }
    assert_eq!(keys, used, "the Secret's keys and the keys the Deployment reads");
    // The secrets travel as files or references, never as plain values.
    for container in containers(&deployment) {
        for (var, value) in container_values(&container) {
            for secret_name in [
                "TXOUTBOX_DATABASE_URL",
                "TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD",
                "TXOUTBOX_UI_TOKEN",
            ] {
                assert_ne!(
                    var, secret_name,
                    "{var} is set in plain text ({value}): use {var}_FILE"
                );
            }
        }
    }
    // Every resource is in the kustomization.
    let kustomization = object(&documents, "Kustomization");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(text)
        .collect();
    for entry in std::fs::read_dir(workspace().join("deploy/kubernetes")).expect("list") {
        let file = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("UTF-8 name");
        if file != "kustomization.yaml" {
            assert!(
                listed.contains(file.as_str()),
                "kustomization.yaml does not list {file}"
            );
        }
    }
}

/// The columns the table contract leaves to writers (docs/table-contract.md, PostgreSQL table:
/// rows whose last cell does not say "must omit" or "should omit").
fn writer_columns() -> BTreeSet<String> {
    let contract = read("docs/table-contract.md");
    let postgres = contract
        .split("## PostgreSQL")
        .nth(1)
        .expect("a PostgreSQL section");
    let section = postgres.split("\n## ").next().unwrap_or(postgres);
    let columns: BTreeSet<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter(|line| !line.contains("must omit") && !line.contains("should omit"))
        .filter_map(|line| line.split('`').next())
        .map(str::to_owned)
        .collect();
    assert!(
        columns.contains("topic") && !columns.contains("status"),
        "{columns:?}"
    );
    columns
}

/// The compose writer's INSERT: (table, columns, the statement with compose's `$$` unescaped).
fn compose_insert(compose: &Value) -> (String, Vec<String>, String) {
    let writer = &compose["services"]["writer"];
    let script = writer["command"][0]
        .as_str()
        .expect("the writer's script")
        .replace("$$", "$");
    let at = script.find("INSERT INTO ").expect("the writer inserts");
    let statement = script[at..].split('"').next().expect("the statement").to_owned();
    let rest = &statement["INSERT INTO ".len()..];
    let (table, rest) = rest.split_once(' ').expect("INSERT INTO table (");
    let columns = rest
        .trim_start()
        .strip_prefix('(')
        .and_then(|r| r.split_once(')'))
        .expect("a column list")
        .0
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    (table.to_owned(), columns, statement)
}

#[test]
fn the_compose_writer_follows_the_table_contract_and_the_services_wait_for_health() {
    let compose = compose();
    let (table, columns, _) = compose_insert(&compose);
    let (daemon_name, daemon) = compose_daemon(&compose);
    let daemon_table = service_env(&daemon)
        .get("TXOUTBOX_TABLE")
        .cloned()
        .unwrap_or_else(|| {
            let help = support::help::help(&[]);
            assert!(
                help.contains("Default: outbox_messages"),
                "the default table changed:\n{help}"
            );
            "outbox_messages".to_owned()
        });
    assert_eq!(table, daemon_table, "the writer inserts into the daemon's table");
    let allowed = writer_columns();
    for column in &columns {
        assert!(
            allowed.contains(column),
            "the writer sets {column}, which the table contract keeps from writers"
        );
    }

    // Every `condition: service_healthy` waits for a service that has a health check.
    let services = compose["services"].as_object().expect("services");
    for (name, service) in services {
        for (dependency, condition) in service["depends_on"].as_object().into_iter().flatten() {
            let wanted = text(&condition["condition"]);
            let target = &services[dependency];
            if wanted == "service_healthy" {
                assert!(
                    target["healthcheck"]["test"].is_array(),
                    "{name} waits for {dependency}, which has no health check"
                );
            }
        }
    }
    assert_eq!(
        services["writer"]["depends_on"][&daemon_name]["condition"],
        "service_healthy"
    );
    assert_eq!(daemon["depends_on"]["postgres"]["condition"], "service_healthy");

    // The daemon's database URL is in a secret file, and it is the database compose creates.
    let env = service_env(&daemon);
    let path = env
        .get("TXOUTBOX_DATABASE_URL_FILE")
        .expect("TXOUTBOX_DATABASE_URL_FILE");
    let secret = path.strip_prefix("/run/secrets/").expect("a compose secret");
    assert!(
        daemon["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .any(|s| s == secret)
    );
    let file = text(&compose["secrets"][secret]["file"]);
    let url = std::fs::read_to_string(workspace().join("deploy").join(file)).expect("the secret file");
    let postgres = &services["postgres"];
    let postgres_env = service_env(postgres);
    let password_file = postgres_env["POSTGRES_PASSWORD_FILE"]
        .strip_prefix("/run/secrets/")
        .expect("a secret");
    let password = std::fs::read_to_string(
        workspace()
            .join("deploy")
            .join(text(&compose["secrets"][password_file]["file"])),
    )
    .expect("the password file");
    let expected = format!(
        "postgres://{}:{}@postgres:5432/{}",
        postgres_env["POSTGRES_USER"],
        password.trim_end(),
        postgres_env["POSTGRES_DB"]
    );
    assert_eq!(
        url.trim_end(),
        expected,
        "the daemon's database URL and the database compose creates"
    );
}

/// A running daemon started by these tests, killed on drop.
struct Started {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Started {
    /// `txoutbox <args>` with exactly `env` (nothing of the test's own environment), its HTTP port
    /// on a free loopback port.
    fn spawn(args: &[&str], env: &BTreeMap<String, String>) -> Self {
        let port = support::free_port();
        let log = std::env::temp_dir().join(format!("{}.log", txoutbox_testing::unique("txoutbox-deploy")));
        let child = Command::new(support::binary())
            .args(args)
            .env_clear()
            .envs(env)
            .env("TXOUTBOX_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start txoutbox");
        Self {
            child,
            base: format!("127.0.0.1:{port}"),
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    async fn wait_live(&self) {
        let live = eventually(Duration::from_secs(30), || async {
            matches!(self.get("/live").await, Some((200, _)))
        })
        .await;
        assert!(live, "the daemon did not come up: {}", self.logs());
    }

    /// `txoutbox probe <target>` against this daemon, as the image's health check runs it.
    fn probe(&self, target: &str) -> i32 {
        Command::new(support::binary())
            .args(["probe", target])
            .env_clear()
            .env("TXOUTBOX_HTTP_LISTEN", &self.base)
            .output()
            .expect("run txoutbox probe")
            .status
            .code()
            .unwrap_or(-1)
    }

    /// SIGTERM, and the exit code.
    fn stop(mut self) -> (Option<i32>, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let code = self.child.wait().ok().and_then(|s| s.code());
        (code, self.logs())
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address where nothing listens: brokers that are absent.
fn absent_brokers() -> String {
    format!("127.0.0.1:{}", support::free_port())
}

/// The probe paths are routes of the daemon, and `txoutbox probe` tells them apart — with an SQLite
/// outbox and no brokers, so that it needs no service.
#[tokio::test]
async fn the_probe_paths_are_routes_of_the_daemon() {
    let dir = std::env::temp_dir().join(txoutbox_testing::unique("txoutbox-deploy"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let env = BTreeMap::from([
        (
            "TXOUTBOX_DATABASE_URL".to_owned(),
            format!("sqlite://{}/outbox.db", dir.display()),
        ),
        ("TXOUTBOX_MIGRATE".to_owned(), "true".to_owned()),
        ("TXOUTBOX_KAFKA_BOOTSTRAP".to_owned(), absent_brokers()),
        ("TXOUTBOX_BROKER_WAIT".to_owned(), "0s".to_owned()),
    ]);
    let daemon = Started::spawn(&["relay"], &env);
    daemon.wait_live().await;
    let deployment = object(&kubernetes(), "Deployment");
    let container = relay_container(&deployment);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = text(&container[probe]["httpGet"]["path"]);
        let (code, body) = daemon.get(path).await.expect("an answer");
        assert!(code == 200 || code == 503, "{probe} {path}: {code} {body}");
    }
    assert_eq!(daemon.get("/no-such-route").await.map(|(c, _)| c), Some(404));
    assert_eq!(
        daemon.probe("/live"),
        0,
        "the image's health check on a live daemon"
    );
    assert_eq!(daemon.probe("/no-such-route"), 1);
    let (code, logs) = daemon.stop();
    assert_eq!(code, Some(0), "{logs}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Deployment's environment, resolved as the kubelet would (a pod name, the Secret's values,
/// its files written under `files`), with the values only a cluster has replaced: the database,
/// the brokers (absent) and the table (the test's schema).
fn pod_env(
    deployment: &Value,
    container: &Value,
    secret: &BTreeMap<String, String>,
    pod: &str,
    files: &Path,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let secret_name = "txoutbox";
    let file_keys: BTreeMap<String, String> = secret_files(deployment, container, secret_name)
        .into_iter()
        .collect();
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = text(&var["name"]).to_owned();
        let value = if let Some(key) = file_keys.get(&name) {
            // A folder per pod, as each pod mounts its own: a process started earlier must never
            // read a file the next pod's set-up is rewriting (it read an empty URL once).
            let dir = files.join(pod);
            std::fs::create_dir_all(&dir).expect("a pod's secret folder");
            let path = dir.join(key);
            std::fs::write(&path, format!("{}\n", secret[key])).expect("write a secret file");
            path.display().to_string()
        } else if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod.to_owned()
        } else if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
            secret[key].clone()
        } else {
            panic!("{name}: a value this test cannot resolve: {var}");
        };
        env.insert(name, value);
    }
    for (name, value) in overrides {
        if env.contains_key(name) {
            env.insert(name.clone(), value.clone());
        }
    }
    env
}

/// The init container and both replicas, started with the Deployment's environment (secrets from
/// files and references), against PostgreSQL: the migration runs, the compose writer's statement
/// inserts into its table, both relays come up in exclusive coordination under their pod names,
/// one leads, and no secret reaches their logs.
#[tokio::test]
async fn the_deployment_starts_its_migration_and_two_relays() {
    let db = TestSchema::new().await;
    let documents = kubernetes();
    let deployment = object(&documents, "Deployment");
    let secret_object = object(&documents, "Secret");
    let sasl_password = txoutbox_testing::unique("sasl-secret");
    let mut secret: BTreeMap<String, String> = secret_object["stringData"]
        .as_object()
        .expect("stringData")
        .iter()
        .map(|(k, v)| (k.clone(), text(v).to_owned()))
        .collect();
    secret.insert("database-url".to_owned(), txoutbox_testing::postgres::url());
    secret.insert("kafka-sasl-password".to_owned(), sasl_password.clone());
    let overrides = BTreeMap::from([
        ("TXOUTBOX_KAFKA_BOOTSTRAP".to_owned(), absent_brokers()),
        ("TXOUTBOX_BROKER_WAIT".to_owned(), "0s".to_owned()),
    ]);
    let files = std::env::temp_dir().join(txoutbox_testing::unique("txoutbox-deploy-secrets"));
    std::fs::create_dir_all(&files).expect("temp dir");
    let table = format!("{}.outbox_messages", db.schema);
    let with_table = |mut env: BTreeMap<String, String>| {
        env.insert("TXOUTBOX_TABLE".to_owned(), table.clone());
        env.insert("TXOUTBOX_BROKER_WAIT".to_owned(), "0s".to_owned());
        env
    };

    let spec = &deployment["spec"]["template"]["spec"];
    for init in spec["initContainers"].as_array().into_iter().flatten() {
        let env = with_table(pod_env(
            &deployment,
            init,
            &secret,
            "txoutbox-a",
            &files,
            &overrides,
        ));
        let args: Vec<&str> = init["args"].as_array().expect("args").iter().map(text).collect();
        let output = Command::new(support::binary())
            .args(&args)
            .env_clear()
            .envs(&env)
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "init container {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let container = relay_container(&deployment);
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(text)
        .collect();
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    let mut relays = Vec::new();
    for n in 0..replicas {
        let pod = format!("txoutbox-{n}");
        let env = with_table(pod_env(
            &deployment,
            &container,
            &secret,
            &pod,
            &files,
            &overrides,
        ));
        relays.push((pod, Started::spawn(&args, &env)));
    }
    for (_, relay) in &relays {
        relay.wait_live().await;
        assert_eq!(relay.probe("/live"), 0);
    }
    // Exclusive: each relay is a node named after its pod; one holds the table, the others none.
    let led = eventually(Duration::from_secs(30), || async {
        let mut scopes = Vec::new();
        for (pod, relay) in &relays {
            let Some((200, body)) = relay.get("/status").await else {
                return false;
            };
            let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if status["coordination"]["node"] != pod.as_str() {
                return false;
            }
            scopes.push(status["coordination"]["scope"].clone());
        }
        scopes.iter().filter(|s| **s == "all").count() == 1
            && scopes.iter().filter(|s| **s == "nothing").count() == scopes.len() - 1
    })
    .await;
    assert!(
        led,
        "no single leader: {}",
        relays
            .iter()
            .map(|(_, r)| r.logs())
            .collect::<Vec<_>>()
            .join("\n")
    );

    for (pod, relay) in relays {
        let (code, logs) = relay.stop();
        assert_eq!(code, Some(0), "{pod}: {logs}");
        assert!(
            logs.contains("sasl.password"),
            "{pod} shows the producer's settings: {logs}"
        );
        assert!(
            !logs.contains(&sasl_password),
            "{pod} logged the SASL password: {logs}"
        );
    }
    // The compose writer's statement (its shell arithmetic done) inserts into the table the
    // migration made (once the relays are gone: they would wait for the absent brokers to take the
    // row before they stop).
    let (_, _, statement) = compose_insert(&compose());
    let statement = statement.replace("$((n % 10))", "1").replace("$n", "1");
    let mut connection = db.pool.acquire().await.expect("a connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path TO \"{}\"",
        db.schema
    )))
    .execute(&mut *connection)
    .await
    .expect("set search_path");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
        .execute(&mut *connection)
        .await
        .unwrap_or_else(|e| panic!("the compose writer's statement fails: {e}\n{statement}"));
    drop(connection);

    let pending: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".outbox_messages WHERE status = 'pending'",
        db.schema
    )))
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(pending, 1);
    let _ = std::fs::remove_dir_all(&files);
    db.drop_schema().await;
}
