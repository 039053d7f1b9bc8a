//! Debian packages: `apt-get install` of what a service needs, when we are root.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::process::{is_root, log_tail, since, which};
use crate::{Settings, say};

/// Whether this process already ran `apt-get update`.
static UPDATED: AtomicBool = AtomicBool::new(false);

/// The policy that keeps the packages' own services from starting while they install.
const POLICY: &str = "/usr/sbin/policy-rc.d";

/// Installs Debian packages with `apt-get` (after one `apt-get update`), keeping their own
/// services from starting; the log is `<services dir>/apt.log`. Fails with what to do when we are
/// not root or there is no `apt-get`.
pub fn apt_install(settings: &Settings, packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    if !is_root() {
        bail!("needs these Debian packages: {list}; install them (as root) and run again");
    }
    if which("apt-get").is_none() {
        bail!("needs {list} but there is no apt-get here; install them and run again");
    }
    crate::files::mkdir(&settings.services_dir)?;
    let log = settings.services_dir.join("apt.log");
    let t0 = Instant::now();
    let policy = Path::new(POLICY);
    let added = !policy.exists();
    if added {
        crate::files::write(
            policy,
            "#!/bin/sh\n# added by txoutbox-services during apt-get install\nexit 101\n",
        )?;
        crate::files::set_mode(policy, 0o755)?;
    }
    let result = install(&log, packages);
    if added {
        let _ = std::fs::remove_file(policy);
    }
    result.with_context(|| format!("apt-get install {list} failed\n{}", log_tail(&log, 30)))?;
    say!("apt: installed {list} in {} s", since(t0));
    Ok(())
}

fn install(log: &Path, packages: &[&str]) -> Result<()> {
    let apt = |args: &[&str]| -> Result<()> {
        let out = crate::process::append(log)?;
        let status = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .context("run apt-get")?;
        if !status.success() {
            bail!("apt-get {} exited with {status}", args.first().unwrap_or(&""));
        }
        Ok(())
    };
    if !UPDATED.swap(true, Ordering::SeqCst) {
        say!("apt: apt-get update…");
        apt(&["update"])?;
    }
    say!("apt: installing {}…", packages.join(" "));
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt(&args)
}
