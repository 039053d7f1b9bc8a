//! Headless Chromium driven over the W3C WebDriver protocol (Debian's `chromium` and
//! `chromium-driver`), for the web console's tests and its page-load benchmark. Each session
//! starts its own chromedriver on a free port with a fresh profile, and stops both when dropped.
//!
//! Chromium is installed (by the services' launcher, as `scripts/services.sh browser` does) when
//! missing. Where it cannot be
//! installed, a browser test is skipped with a notice, unless `TXOUTBOX_REQUIRE_BROWSER` is set
//! (CI sets it), which turns that into a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;
use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    url: String,
    session: String,
    client: reqwest::Client,
    profile: PathBuf,
}

/// Where chromedriver is, installing Chromium (Debian's `chromium` and `chromium-driver`) with
/// the services' launcher when missing; the reason when it cannot be had.
fn chromedriver() -> Result<String, String> {
    txoutbox_services::Settings::from_env()
        .and_then(|settings| txoutbox_services::tools::chromedriver(&settings))
        .map(|path| path.display().to_string())
        .map_err(|e| format!("{e:#}"))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. `None`, with a message saying why
    /// on stderr, only when Chromium is not installed and cannot be installed here (a panic
    /// instead when `TXOUTBOX_REQUIRE_BROWSER` is set).
    pub async fn start() -> Option<Self> {
        let driver_path = match chromedriver() {
            Ok(path) => path,
            Err(why) if std::env::var_os("TXOUTBOX_REQUIRE_BROWSER").is_some() => {
                panic!("TXOUTBOX_REQUIRE_BROWSER is set, but headless Chromium cannot be had: {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED: the web console's browser test needs headless Chromium: {why}");
                return None;
            }
        };
        let port = crate::instances::free_port();
        let log = std::env::temp_dir().join(format!("{}.log", crate::unique("chromedriver")));
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_path}: {e}"));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        let url = format!("http://127.0.0.1:{port}");
        let ready = eventually(Duration::from_secs(30), || async {
            let status = client.get(format!("{url}/status")).send().await;
            match status {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            }
        })
        .await;
        assert!(ready, "chromedriver did not become ready; see {}", log.display());
        let profile = std::env::temp_dir().join(crate::unique("chromium-profile"));
        let created: Value = client
            .post(format!("{url}/session"))
            .json(&json!({
                "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": [
                            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", "--window-size=1280,900",
                            format!("--user-data-dir={}", profile.display()),
                        ],
                    },
                }},
            }))
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .expect("WebDriver answers JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Some(Self {
            driver,
            url,
            session,
            client,
            profile,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.url, self.session);
        let mut request = self.client.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        if response["value"]["error"].is_string() {
            panic!("WebDriver {path} failed: {}", response["value"]);
        }
        response["value"].clone()
    }

    /// Opens a URL and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its return value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Waits until the JavaScript expression `condition` is true in the page.
    pub async fn wait_until(&self, condition: &str, timeout: Duration) -> bool {
        let script = format!("try {{ return Boolean({condition}); }} catch (e) {{ return false; }}");
        eventually(timeout, || async { self.eval(&script, json!([])).await == true }).await
    }

    /// The text of the first element matching a CSS selector (`None` when there is none).
    pub async fn text(&self, css: &str) -> Option<String> {
        self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Clicks the first element matching a CSS selector, as a user would.
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types into the first element matching a CSS selector.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Saves a PNG screenshot of the window.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(encoded.as_str().expect("a base64 screenshot"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (Chromium exits), then the driver. A plain blocking HTTP request: drop
        // cannot await.
        let address = self.url.trim_start_matches("http://").to_owned();
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Decodes standard base64 (as WebDriver sends screenshots).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | u32::from(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}
