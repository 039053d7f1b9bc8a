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
    go_install(
        settings,
        "toxiproxy",
        "server",
        &format!("github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}"),
        TOXIPROXY_VERSION,
        "1.22",
    )
}

/// Binary `binary` of the Go package `package` (`module/path@version`) in
/// `~/.cache/txoutbox/<folder>/bin`, built with `go install` unless that `version` is there (one
/// invocation builds at a time; `go_version` is the oldest Go that builds it, for the error).
pub fn go_install(
    settings: &Settings,
    folder: &str,
    binary: &str,
    package: &str,
    version: &str,
    go_version: &str,
) -> Result<PathBuf> {
    let dir = settings.cache_dir().join(folder);
    let program = dir.join("bin").join(binary);
    let built = || {
        is_executable(&program)
            && std::fs::read_to_string(dir.join("version")).is_ok_and(|v| v.trim() == version)
    };
    if built() {
        return Ok(program);
    }
    let go = which("go")
        .or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|p| is_executable(p)))
        .with_context(|| {
            format!("{folder}: needs Go ({go_version} or later) to build {binary}; none found")
        })?;
    mkdir(&dir)?;
    let _lock = Lock::acquire(
        &dir.join(".lock"),
        &format!("another invocation building {folder}"),
    )
    .with_context(|| folder.to_owned())?;
    if !built() {
        let t0 = Instant::now();
        say!("{folder}: building {version} with go install (first run, ~1 min)…");
        let mut install = Command::new(go);
        install.env("GOBIN", dir.join("bin")).arg("install").arg(package);
        run_logged(
            &mut install,
            &dir.join("build.log"),
            &format!("{folder}: go install"),
        )?;
        write(&dir.join("version"), format!("{version}\n"))?;
        say!("{folder}: built in {} s", since(t0));
    }
    Ok(program)
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
