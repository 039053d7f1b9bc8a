//! PostgreSQL over TLS with `sslmode=verify-full`: a private server that only takes TLS with a
//! password, certificates made by the test. The daemon (and the library's pool) connect with the
//! right settings and deliver every row; an untrusted CA, a wrong password and a plain-TCP URL each
//! fail with a message that names the cause; no password appears in any output: logs, errors,
//! `--help`, `/metrics`, `/status`, `/health`.

mod support;

use std::process::Command;
use std::time::Duration;

use sqlx::PgPool;
use support::{Daemon, ok};
use txoutbox_testing::eventually;
use txoutbox_testing::instances::PgCluster;
use txoutbox_testing::kafka::{count, new_topic, read_all, verdict};

const PASSWORD: &str = "pg-Tls-s3cret-7731";
const WRONG_PASSWORD: &str = "not-the-pg-pass-5519";
const TABLE: &str = "public.outbox_messages";

/// `txoutbox <args>` with the database URL in the environment, as a deployment would pass it.
fn txoutbox(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(support::binary())
        .args(args)
        .env("TXOUTBOX_DATABASE_URL", url)
        .env("TXOUTBOX_TABLE", TABLE)
        .env("TXOUTBOX_KAFKA_BOOTSTRAP", txoutbox_testing::kafka::bootstrap())
        .env_remove("TXOUTBOX_CONFIG")
        .output()
        .expect("run txoutbox")
}

fn text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
}

fn assert_no_password(case: &str, text: &str) {
    for password in [PASSWORD, WRONG_PASSWORD] {
        assert!(!text.contains(password), "{case}: a password is shown:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_over_verify_full_tls_delivers_and_each_wrong_setting_names_its_cause() {
    let (_server, tls) = PgCluster::start_tls(PASSWORD).await;
    let url = tls.url(PASSWORD, &tls.ca);

    // Each wrong setting: a non-zero exit, the cause named, the URL shown without its password.
    let cases = [
        (
            "untrusted CA",
            tls.url(PASSWORD, &tls.untrusted_ca),
            "certificate verify failed",
        ),
        (
            "wrong password",
            tls.url(WRONG_PASSWORD, &tls.ca),
            "password authentication failed",
        ),
        ("no TLS", tls.plain_url(PASSWORD), "no encryption"),
    ];
    for (case, bad_url, cause) in &cases {
        let output = txoutbox(bad_url, &["migrate"]);
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(1), "{case}: {shown}");
        assert!(
            shown.contains(cause) && shown.contains("postgres://postgres:***@127.0.0.1"),
            "{case}: the error does not name the cause ({cause}):\n{shown}"
        );
        assert_no_password(case, &shown);
        eprintln!("{case}: {}", shown.trim());
    }

    // The right settings: migrate, rows written over a TLS pool, the daemon relays them all.
    let migrated = txoutbox(&url, &["migrate"]);
    assert_no_password("migrate", &text(&migrated));
    ok(&migrated);
    let pool = PgPool::connect(&url)
        .await
        .expect("the library connects with verify-full");
    let topic = new_topic("pg-tls", 3).await;
    let n = 300;
    let mut tx = pool.begin().await.unwrap();
    for i in 0..n {
        let key = format!("key-{}", i % 10);
        sqlx::query(
            "INSERT INTO public.outbox_messages (topic, key, payload) \
             VALUES ($1, convert_to($2, 'UTF8'), convert_to($3, 'UTF8'))",
        )
        .bind(&topic)
        .bind(&key)
        .bind(format!("{key}:{}", i / 10))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let daemon = Daemon::start_on(&url, TABLE, &[]).await;
    let topics = [topic.clone()];
    let delivered = eventually(Duration::from_secs(60), || async { count(&topics).await == n }).await;
    assert!(delivered, "the rows did not reach Kafka: {}", daemon.logs());
    let v = verdict(&read_all(&topics).await, |r| {
        let (key, seq) = r.payload_str().split_once(':').unwrap();
        (key.to_owned(), seq.parse().unwrap())
    });
    assert_eq!(
        (v.distinct as i64, v.duplicates, v.order_violations),
        (n, 0, 0),
        "{v:?}"
    );
    let status = txoutbox(&url, &["status", "--json", "--relay-url", "127.0.0.1:1"]);
    let status: serde_json::Value = serde_json::from_str(&ok(&status)).unwrap();
    assert_eq!(
        (status["pending"].as_i64(), status["dead"].as_i64()),
        (Some(0), Some(0)),
        "{status}"
    );

    // No password in what the daemon serves or logs, nor in `--help` with the URL in the environment.
    for path in ["/metrics", "/status", "/health"] {
        let (_, body) = daemon.get(path).await.expect("the daemon answers");
        assert_no_password(path, &body);
    }
    let logs = daemon.stop();
    assert!(!logs.is_empty());
    assert_no_password("daemon log", &logs);
    for args in [&["--help"][..], &["relay", "--help"], &["status", "--help"]] {
        let help = txoutbox(&url, args);
        assert_eq!(help.status.code(), Some(0));
        assert_no_password("--help", &text(&help));
    }
}
