//! Tools some tests need: the Toxiproxy server (built with `go install`) and headless Chromium
//! with chromedriver (Debian packages).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::files::{mkdir, write};
use crate::lock::Lock;
use crate::process::{is_executable, run_logged, since, which};
use crate::{Settings, say};

/// The Toxiproxy version `go install` builds.
pub const TOXIPROXY_VERSION: &str = "v2.12.0";

/// The Toxiproxy server binary in `~/.cache/txoutbox/toxiproxy/bin`, built from its Go module on
/// first use (~1 min; needs Go 1.22+).
pub fn toxiproxy(settings: &Settings) -> Result<PathBuf> {
    let dir = settings.cache_dir().join("toxiproxy");
    let server = dir.join("bin/server");
    let built = || {
        is_executable(&server)
            && std::fs::read_to_string(dir.join("version")).is_ok_and(|v| v.trim() == TOXIPROXY_VERSION)
    };
    if built() {
        return Ok(server);
    }
    let go = which("go")
        .or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|p| is_executable(p)))
        .context("toxiproxy: needs Go (1.22 or later) to build it; none found")?;
    mkdir(&dir)?;
    let _lock =
        Lock::acquire(&dir.join(".lock"), "another invocation building Toxiproxy").context("toxiproxy")?;
    if !built() {
        let t0 = Instant::now();
        say!("toxiproxy: building {TOXIPROXY_VERSION} with go install (first run, ~1 min)…");
        let mut install = Command::new(go);
        install.env("GOBIN", dir.join("bin")).arg("install").arg(format!(
            "github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}"
        ));
        run_logged(&mut install, &dir.join("build.log"), "toxiproxy: go install")?;
        write(&dir.join("version"), format!("{TOXIPROXY_VERSION}\n"))?;
        say!("toxiproxy: built in {} s", since(t0));
    }
    Ok(server)
}

/// chromedriver's path, installing Debian's `chromium` and `chromium-driver` when either is
/// missing (for the web console's browser tests).
pub fn chromedriver(settings: &Settings) -> Result<PathBuf> {
    if let (Some(_), Some(driver)) = (which("chromium"), which("chromedriver")) {
        return Ok(driver);
    }
    crate::packages::apt_install(settings, &["chromium", "chromium-driver"]).context("chromium")?;
    match (which("chromium"), which("chromedriver")) {
        (Some(_), Some(driver)) => Ok(driver),
        _ => bail!(
            "chromium: installed chromium and chromium-driver but found no chromium or chromedriver on PATH"
        ),
    }
}
