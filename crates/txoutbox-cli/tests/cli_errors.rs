//! Bad input gets a clear message and a non-zero exit code, and never shows a secret.

mod support;

use std::process::Command;

fn run(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(support::binary());
    command
        .args(args)
        .env_remove("TXOUTBOX_DATABASE_URL")
        .env_remove("TXOUTBOX_KAFKA_BOOTSTRAP")
        .env_remove("TXOUTBOX_CONFIG");
    for (k, v) in envs {
        command.env(k, v);
    }
    let output = command.output().expect("run txoutbox");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout),
    )
}

#[test]
fn a_missing_database_says_how_to_give_one() {
    let (code, text) = run(&["status"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        text.contains("--database-url") && text.contains("TXOUTBOX_DATABASE_URL"),
        "{text}"
    );
}

#[test]
fn an_unknown_config_key_is_named() {
    let dir = std::env::temp_dir().join(txoutbox_testing::unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("txoutbox.toml");
    std::fs::write(
        &file,
        "database_url = \"sqlite:///nowhere.db\"\n[relay]\nbatch_sise = 10\n",
    )
    .unwrap();
    let (code, text) = run(&["--config", file.to_str().unwrap(), "relay"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        text.contains("batch_sise") && text.contains(file.to_str().unwrap()),
        "{text}"
    );
}

#[test]
fn an_unreachable_database_is_reported_without_its_password() {
    let (code, text) = run(
        &[
            "status",
            "--database-url",
            "postgres://app:hunter2@127.0.0.1:1/shop",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        text.contains("cannot connect to the outbox database at postgres://app:***@127.0.0.1:1/shop"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_missing_sqlite_file_says_to_migrate_first() {
    let path = std::env::temp_dir().join(format!("{}.db", txoutbox_testing::unique("missing")));
    let (code, text) = run(
        &[
            "status",
            "--database-url",
            &format!("sqlite://{}", path.display()),
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(text.contains("txoutbox migrate"), "{text}");
}

#[test]
fn an_unreachable_broker_stops_the_relay_after_the_broker_wait() {
    let path = std::env::temp_dir().join(format!("{}.db", txoutbox_testing::unique("nobroker")));
    let started = std::time::Instant::now();
    let (code, text) = run(
        &[
            "relay",
            "--migrate",
            "--database-url",
            &format!("sqlite://{}", path.display()),
            "--kafka-bootstrap",
            "127.0.0.1:1",
            "--broker-wait",
            "3s",
            "--http-listen",
            "off",
        ],
        &[],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("cannot reach the Kafka brokers at 127.0.0.1:1 within 3 s")
            && text.contains("--kafka-bootstrap")
            && text.contains("--broker-wait 0s"),
        "{text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "gave up after {:?}",
        started.elapsed()
    );
}

#[test]
fn settings_that_break_the_guarantees_are_refused() {
    let (code, text) = run(
        &[
            "relay",
            "--database-url",
            "sqlite:///x.db",
            "--kafka-bootstrap",
            "b:1",
            "-X",
            "acks=1",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(text.contains("acks"), "{text}");
    let (code, text) = run(&["relay", "--database-url", "sqlite:///x.db"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        text.contains("bootstrap.servers") && text.contains("--kafka-bootstrap"),
        "{text}"
    );
    let (code, text) = run(&["relay", "--poll-interval", "soon"], &[]);
    assert_eq!(code, Some(2));
    assert!(text.contains("500ms"), "{text}");
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    let (code, text) = run(
        &["relay", "--help"],
        &[("TXOUTBOX_DATABASE_URL", "postgres://app:hunter2@db/shop")],
    );
    assert_eq!(code, Some(0));
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn secrets_come_from_files_and_an_unreadable_one_is_named_without_its_value() {
    let dir = std::env::temp_dir().join(txoutbox_testing::unique("secrets"));
    std::fs::create_dir_all(&dir).unwrap();
    // The database URL from a mounted file: `status` then reaches for that (unreachable) database,
    // naming it without the password.
    let url_file = dir.join("database-url");
    std::fs::write(&url_file, "postgres://app:hunter2@127.0.0.1:1/shop\n").unwrap();
    let (code, text) = run(
        &["status"],
        &[("TXOUTBOX_DATABASE_URL_FILE", url_file.to_str().unwrap())],
    );
    assert_ne!(code, Some(0));
    assert!(
        text.contains("127.0.0.1:1"),
        "the URL from the file is used: {text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    // A Kafka property from a file that cannot be read: refused at start, naming the variable and
    // the path.
    let (code, text) = run(
        &["relay", "--kafka-bootstrap", "127.0.0.1:1", "--broker-wait", "0s"],
        &[
            ("TXOUTBOX_DATABASE_URL", "sqlite:///nowhere.db"),
            (
                "TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD_FILE",
                "/nonexistent/kafka-password",
            ),
        ],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD_FILE")
            && text.contains("/nonexistent/kafka-password"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
