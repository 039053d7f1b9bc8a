//! Web console page load with a large backlog: the `txoutbox relay --ui` daemon (the release
//! binary beside this one) over a PostgreSQL table holding a million pending rows and some dead
//! ones, its Kafka brokers unreachable (how a backlog grows at 3 a.m.: the rows stay pending, the
//! health check fails); headless Chromium loads the overview and the dead-letter page, and the
//! page itself marks when its first figures are shown.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use txoutbox::postgres::PgOutbox;
use txoutbox::{Statistics, Topics};
use txoutbox_testing::browser::Browser;
use txoutbox_testing::postgres::TestSchema;

use crate::common::{Percentiles, percentiles};

/// Topics the pending rows are spread over.
const TOPICS: u64 = 20;

/// The scenario's result.
#[derive(Debug, Serialize)]
pub(crate) struct ConsoleResult {
    /// Pending rows in the table.
    pub pending: u64,
    /// Dead rows beside them.
    pub dead: u64,
    /// Topics of the pending rows.
    pub topics: u64,
    /// Seconds to write the rows (server-side `generate_series`).
    pub fill_seconds: f64,
    /// Overview, first visit (empty cache; the browser has shown another page of the daemon):
    /// navigation start → first figures shown.
    pub overview_cold_ms: f64,
    /// Overview, later loads (assets possibly cached): navigation start → first figures shown.
    pub overview: Percentiles,
    /// Dead-letter page, first load: navigation start → the list shown.
    pub dead_letters_cold_ms: f64,
    /// Dead-letter page, later loads.
    pub dead_letters: Percentiles,
    /// `GET /ui/api/overview` alone, over HTTP without a browser.
    pub api_overview: Percentiles,
    /// `GET /ui/api/dead-letters?limit=100` alone.
    pub api_dead_letters: Percentiles,
    /// The per-topic statistics query the console runs in the background (at most every 30 s
    /// while someone looks), timed through the store.
    pub topic_stats: Percentiles,
}

async fn fill(db: &TestSchema, pending: u64, dead: u64) {
    let table = db.qualify("outbox_messages");
    let mut done = 0;
    while done < pending {
        let n = (pending - done).min(1_000_000);
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (topic, key, payload) \
             SELECT 'console-bench-' || (g % {TOPICS}), convert_to('key-' || (g % 1000), 'UTF8'), \
                    convert_to(repeat('x', 100), 'UTF8') \
             FROM generate_series(1, $1) AS g"
        )))
        .bind(n as i64)
        .execute(&db.pool)
        .await
        .expect("fill pending rows");
        done += n;
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (topic, key, payload, headers, status, attempts, last_error) \
         SELECT 'console-bench-dead', convert_to('key-' || g, 'UTF8'), convert_to('{{}}', 'UTF8'), \
                '{{\"source\": \"bench\"}}', 'dead', 5, 'Broker: Message size too large' \
         FROM generate_series(1, $1) AS g"
    )))
    .bind(dead as i64)
    .execute(&db.pool)
    .await
    .expect("fill dead rows");
    sqlx::raw_sql(AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
        .execute(&db.pool)
        .await
        .expect("vacuum");
}

/// The daemon, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Loads `url` in the browser and returns the page's own mark `mark` (ms after navigation start).
/// With `TXOUTBOX_BENCH_DEBUG` set, prints the navigation and resource timings of the load.
async fn load(browser: &Browser, url: &str, mark: &str) -> anyhow::Result<f64> {
    browser.goto(url).await;
    let script = format!("performance.getEntriesByName('{mark}').length > 0");
    if !browser.wait_until(&script, Duration::from_secs(30)).await {
        bail!("{url} never showed its figures (no `{mark}` mark)");
    }
    let at = browser
        .eval(
            "return performance.getEntriesByName(arguments[0])[0].startTime;",
            json!([mark]),
        )
        .await;
    if std::env::var_os("TXOUTBOX_BENCH_DEBUG").is_some() {
        let timing = browser
            .eval(
                "const n = performance.getEntriesByType('navigation')[0]; \
                 return JSON.stringify({nav: [n.requestStart, n.responseStart, n.responseEnd, n.domInteractive, n.domContentLoadedEventEnd, n.loadEventEnd].map(Math.round), \
                 res: performance.getEntriesByType('resource').map(r => [r.name.split('/').pop(), Math.round(r.startTime), Math.round(r.responseEnd)])});",
                json!([]),
            )
            .await;
        eprintln!("{url}: {timing}");
    }
    at.as_f64().context("the mark's startTime")
}

async fn time_get(client: &reqwest::Client, url: &str, reps: usize) -> anyhow::Result<Percentiles> {
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let response = client.get(url).send().await?.error_for_status()?;
        response.bytes().await?;
        samples.push(t.elapsed());
    }
    Ok(percentiles(&samples))
}

fn ms_percentiles(samples_ms: &[f64]) -> Percentiles {
    let samples: Vec<Duration> = samples_ms
        .iter()
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .collect();
    percentiles(&samples)
}

/// Runs the scenario: `pending` rows, `dead` dead letters, `reps` page loads of each page.
pub(crate) async fn run(pending: u64, dead: u64, reps: usize) -> anyhow::Result<ConsoleResult> {
    let binary = crate::common::daemon_binary("console")?;
    let db = TestSchema::with_pool_size(2).await;
    let outbox = PgOutbox::with_table(Topics::new(), db.table());
    outbox.migrate(&db.pool).await.context("migrate")?;
    eprintln!("[console] writing {pending} pending and {dead} dead rows ...");
    let started = Instant::now();
    fill(&db, pending, dead).await;
    let fill_seconds = started.elapsed().as_secs_f64();

    let port = txoutbox_testing::instances::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let daemon = Daemon(
        Command::new(&binary)
            .args(["relay", "--ui", "--http-listen", &format!("127.0.0.1:{port}")])
            .args(["--broker-wait", "0s"])
            .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
            .env("TXOUTBOX_TABLE", format!("{}.outbox_messages", db.schema))
            // Nothing listens there: the relay sends its first messages and waits for the brokers.
            .env("TXOUTBOX_KAFKA_BOOTSTRAP", "127.0.0.1:1")
            .env("RUST_LOG", "warn")
            // Its log is one warning after another about the brokers it cannot reach.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?,
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let overview_api = format!("{base}/ui/api/overview?minutes=5");
    // Ready once the health check has counted the backlog (every 5 s by default).
    let counted = txoutbox_testing::eventually(Duration::from_secs(60), || async {
        let Ok(response) = client.get(&overview_api).send().await else {
            return false;
        };
        let body: Value = response.json().await.unwrap_or_default();
        body.to_string().contains(&format!("\"pending\":{pending}"))
    })
    .await;
    if !counted {
        bail!("the console never showed {pending} pending rows");
    }

    let Some(browser) = Browser::start().await else {
        bail!("the console scenario needs headless Chromium (scripts/services.sh browser)");
    };
    let overview_url = format!("{base}/ui");
    let dead_url = format!("{base}/ui/dead-letters");
    // A page of the same origin that is not the console first: Chromium starts the site's
    // renderer, which a first visit in a running browser does not pay; the cache stays empty.
    browser.goto(&format!("{base}/live")).await;
    let overview_cold_ms = load(&browser, &overview_url, "txoutbox-overview-shown").await?;
    let dead_letters_cold_ms = load(&browser, &dead_url, "txoutbox-dead-letters-shown").await?;
    let (mut overview, mut dead_letters) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        overview.push(load(&browser, &overview_url, "txoutbox-overview-shown").await?);
        dead_letters.push(load(&browser, &dead_url, "txoutbox-dead-letters-shown").await?);
    }
    drop(browser);
    let api_overview = time_get(&client, &overview_api, reps.max(30)).await?;
    let api_dead_letters = time_get(
        &client,
        &format!("{base}/ui/api/dead-letters?limit=100"),
        reps.max(30),
    )
    .await?;

    let store = outbox.store(db.pool.clone());
    let mut topic_stats = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let rows = store.topic_stats().await.context("topic_stats")?;
        topic_stats.push(t.elapsed());
        assert!(
            rows.len() as u64 > TOPICS,
            "per-topic statistics: {} topics",
            rows.len()
        );
    }
    drop(daemon);
    db.drop_schema().await;
    Ok(ConsoleResult {
        pending,
        dead,
        topics: TOPICS,
        fill_seconds,
        overview_cold_ms,
        overview: ms_percentiles(&overview),
        dead_letters_cold_ms,
        dead_letters: ms_percentiles(&dead_letters),
        api_overview,
        api_dead_letters,
        topic_stats: percentiles(&topic_stats),
    })
}
