//! Processes: OS users, pid files, detached starts, signals, waits, ports and logs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The effective uid of this process (from `/proc/self/status`).
pub fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    euid() == Some(0)
}

/// A line of `/etc/passwd`: name, uid, gid, home.
fn passwd_entry(matches: impl Fn(&str, u32) -> bool) -> Option<(String, u32, u32, PathBuf)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (name, uid, gid, home) = (f.first()?, f.get(2)?, f.get(3)?, f.get(5)?);
        let uid: u32 = uid.parse().ok()?;
        matches(name, uid).then(|| Some(((*name).to_owned(), uid, gid.parse().ok()?, PathBuf::from(home))))?
    })
}

/// uid and gid of an OS user.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    passwd_entry(|n, _| n == name).map(|(_, uid, gid, _)| (uid, gid))
}

/// Whether the OS user exists.
pub fn user_exists(name: &str) -> bool {
    user_ids(name).is_some()
}

/// The name of the user this process runs as (what `id -un` prints).
pub fn current_user() -> String {
    euid()
        .and_then(|uid| passwd_entry(|_, u| u == uid).map(|(name, ..)| name))
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".to_owned())
}

/// The home folder of the user this process runs as, from `/etc/passwd`.
pub fn passwd_home() -> Option<PathBuf> {
    let uid = euid()?;
    passwd_entry(|_, u| u == uid).map(|(.., home)| home)
}

/// Gives a file or folder to an OS user (and its group).
pub fn chown_to(path: &Path, user: &str) -> Result<()> {
    let (uid, gid) = user_ids(user).with_context(|| format!("there is no OS user {user}"))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {user} {}", path.display()))
}

/// A command that runs `program` as OS user `user` when we are root (with `runuser`), from `/`
/// so that it never trips over an unreadable working folder; stdin is /dev/null.
pub fn as_user(user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = if is_root() && user != "root" {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.current_dir("/").stdin(Stdio::null());
    command
}

/// The SHA-256 of `bytes` in hex (with `sha256sum`, which every system with coreutils has).
pub fn sha256_hex(bytes: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("run sha256sum (coreutils)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(bytes).context("write to sha256sum")?;
    }
    let out = child.wait_with_output().context("run sha256sum")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(hex) if out.status.success() && hex.len() == 64 => Ok(hex.to_owned()),
        _ => bail!("sha256sum failed ({})", out.status),
    }
}

/// The first line of a pid file, digits only (`None` when missing or empty).
pub fn read_pid(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let digits: String = text
        .lines()
        .next()?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether the process exists and is not a zombie (an orphaned daemon may wait unreaped).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name in parentheses, which may itself hold ") ".
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_some_and(|state| state != 'Z')
}

/// Whether one argument of process `pid`'s command line is `arg`.
pub fn has_arg(pid: u32, arg: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
}

/// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`, `QUIT`) with `kill`.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed (no such process, or not ours)");
    }
    Ok(())
}

/// Waits up to `timeout` until process `pid` is gone; true when it is.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Waits up to `timeout` for a child to exit; true when it did.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
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

/// Signals `pid` and waits up to `timeout` for it to go; then SIGKILL and 10 s more. `what` names
/// it in messages.
pub fn stop_pid(pid: u32, sig: &str, timeout: Duration, what: &str) -> Result<()> {
    let _ = signal(pid, sig);
    wait_or_kill(
        pid,
        timeout,
        &format!(
            "{what} (pid {pid}) still up {} s after SIG{sig}",
            timeout.as_secs()
        ),
    )
}

/// Waits up to `timeout` for `pid` to go; then says `late` and sends SIGKILL (10 s more).
pub fn wait_or_kill(pid: u32, timeout: Duration, late: &str) -> Result<()> {
    if !wait_gone(pid, timeout) {
        crate::say!("{late}; sending SIGKILL");
        let _ = signal(pid, "KILL");
        if !wait_gone(pid, Duration::from_secs(10)) {
            bail!("pid {pid} does not die ({late})");
        }
    }
    Ok(())
}

/// Whether `127.0.0.1:port` accepts a TCP connection right now.
pub fn port_accepts(port: u16) -> bool {
    ("127.0.0.1", port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(1000)).is_ok())
}

/// What listens on TCP `port` on any address (`ss` lines), empty when nothing; falls back to a
/// connection to 127.0.0.1 without `ss`.
pub fn port_listeners(port: u16) -> Option<String> {
    let filter = format!("sport = :{port}");
    match Command::new("ss")
        .args(["-Hltnp", &filter])
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).take(3).collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        }
        _ => port_accepts(port).then(String::new),
    }
}

/// Fails when something that is not ours listens on `port`, naming `var` to choose another.
pub fn refuse_taken_port(service: &str, port: u16, var: &str) -> Result<()> {
    if let Some(who) = port_listeners(port) {
        let who = if who.is_empty() {
            String::new()
        } else {
            format!("\n{who}")
        };
        bail!(
            "{service}: port {port} is already in use by a process that is not ours; stop it or choose another port with {var}=...{who}"
        );
    }
    Ok(())
}

/// A file's size (0 when missing).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Whether the file holds `needle` after byte `offset`.
pub fn file_contains_since(path: &Path, offset: u64, needle: &str) -> bool {
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return false;
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).contains(needle)
}

/// The last `lines` lines of a log, framed, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let last = all.get(all.len().saturating_sub(lines)..).unwrap_or_default();
            format!(
                "---- last {lines} lines of {} ----\n{}\n---- end of {} ----",
                path.display(),
                last.join("\n"),
                path.display()
            )
        }
        Err(_) => format!("(no log at {})", path.display()),
    }
}

/// Opens a log for appending (created when missing).
pub fn append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

/// Points a command's stdin at /dev/null and its stdout and stderr at `file` (the log `path`).
fn into_log<'c>(command: &'c mut Command, file: File, path: &Path) -> Result<&'c mut Command> {
    let copy = file
        .try_clone()
        .with_context(|| format!("open {}", path.display()))?;
    Ok(command.stdin(Stdio::null()).stdout(copy).stderr(file))
}

/// Runs a command to its end with stdin from /dev/null and stdout and stderr into `log` (which
/// it truncates); on failure the error holds the log's tail.
pub fn run_logged(command: &mut Command, log: &Path, what: &str) -> Result<()> {
    let file = File::create(log).with_context(|| format!("create {}", log.display()))?;
    let status = into_log(command, file, log)?
        .status()
        .with_context(|| format!("{what}: cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!(
            "{what} failed ({status}; log: {})\n{}",
            log.display(),
            log_tail(log, 30)
        );
    }
    Ok(())
}

/// Starts `name`'s program in working folder `cwd` with stdin /dev/null, its stdout and stderr
/// appended to `log` after a banner line; returns it with the log's length before its first line.
///
/// With `pid_file`, a daemon in a session of its own (`setsid`, util-linux), so that it outlives
/// us and our terminal; `setsid` execs the program in place (a child of ours never leads a
/// process group), so the child's pid is the daemon's, and goes to `pid_file`. Without, a plain
/// child of ours. A dropped child is neither killed nor waited for.
pub fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    cwd: &Path,
    log: &Path,
    pid_file: Option<&Path>,
) -> Result<(Child, u64)> {
    let mut out = append(log)?;
    let banner = format!(
        "\n===== txoutbox-services: starting {name} at {} =====\n",
        now_iso()
    );
    out.write_all(banner.as_bytes())
        .with_context(|| format!("write {}", log.display()))?;
    let offset = file_len(log);
    let mut command = match pid_file {
        Some(pid_file) => {
            let _ = std::fs::remove_file(pid_file);
            let mut c = Command::new("setsid");
            c.arg(program);
            c
        }
        None => Command::new(program),
    };
    command.args(args).current_dir(cwd);
    let child = into_log(&mut command, out, log)?.spawn().with_context(|| {
        format!(
            "start {} ({})",
            program.display(),
            if pid_file.is_some() {
                "with setsid of util-linux"
            } else {
                "a child"
            }
        )
    })?;
    if let Some(pid_file) = pid_file {
        crate::files::write(pid_file, format!("{}\n", child.id()))?;
    }
    Ok((child, offset))
}

/// The program's full path: as given when it holds a `/`, else the first match on `PATH`, else
/// in `/usr/sbin` or `/sbin` (where Debian puts daemons).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// Whether `path` is an executable file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Seconds since `t0`, one decimal (for progress lines).
pub fn since(t0: Instant) -> String {
    format!("{:.1}", t0.elapsed().as_secs_f64())
}

/// The time of day in UTC, `YYYY-MM-DDTHH:MM:SS+00:00` (for log banners).
pub fn now_iso() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days.cast_signed() + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_and_liveness() {
        let dir = std::env::temp_dir().join(format!("txoutbox-services-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pid");
        std::fs::write(&f, "12a3\nx").unwrap();
        assert_eq!(read_pid(&f), Some(123));
        std::fs::write(&f, "").unwrap();
        assert_eq!(read_pid(&f), None);
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates() {
        let now = now_iso();
        assert_eq!(now.len(), 25, "{now}");
        assert!(now.starts_with("20"), "{now}");
    }
}
