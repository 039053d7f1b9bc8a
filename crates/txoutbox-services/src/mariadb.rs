//! MariaDB: the services' own `mariadbd` (`mariadb-install-db` into `<services dir>/mariadb`),
//! not the package's service; as root it runs as OS user `mysql`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::files::write;
use crate::process::{
    as_user, has_arg, is_root, log_tail, pid_alive, port_accepts, read_pid, refuse_taken_port, run_logged,
    since, spawn, stop_pid, user_exists, which,
};
use crate::settings::{DB_NAME, DB_PASS, DB_USER};
use crate::{Settings, say};

/// Our database's URL on `port`.
pub fn url(port: u16) -> String {
    format!("mysql://{DB_USER}:{DB_PASS}@127.0.0.1:{port}/{DB_NAME}")
}

/// The OS user our server runs as: `mysql` when we are root, else ourselves.
fn os_user() -> String {
    if is_root() {
        "mysql".to_owned()
    } else {
        crate::process::current_user()
    }
}

/// Our data root, `None` when never set up (or, as root, before the `mysql` user exists).
fn root(settings: &Settings) -> Option<PathBuf> {
    if is_root() && !user_exists("mysql") {
        return None;
    }
    settings.db_root("mariadb", &os_user(), false).ok().flatten()
}

/// A MariaDB program's path.
fn program(name: &str) -> Result<PathBuf> {
    which(name)
        .with_context(|| format!("mariadb: {name} not found (package mariadb-server or mariadb-client)"))
}

/// The pid of our running `mariadbd`.
pub fn pid(settings: &Settings) -> Option<u32> {
    let root = root(settings)?;
    let pid = read_pid(&root.join("pid"))?;
    (pid_alive(pid) && has_arg(pid, &format!("--datadir={}", root.join("data").display()))).then_some(pid)
}

fn running_port(settings: &Settings) -> u16 {
    root(settings)
        .and_then(|r| std::fs::read_to_string(r.join("port")).ok())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(settings.mariadb_port)
}

/// Our database's URL while our server runs.
pub fn local_url(settings: &Settings) -> Option<String> {
    pid(settings)?;
    Some(url(running_port(settings)))
}

/// Client options to reach our server as its administrator (root over the unix socket).
fn admin(root: &Path, program_name: &str) -> Result<Command> {
    let mut command = Command::new(program(program_name)?);
    command
        .args(["--no-defaults", "--protocol=socket"])
        .arg(format!("--socket={}", root.join("run/mysqld.sock").display()))
        .arg(format!("--user={}", crate::process::current_user()));
    Ok(command)
}

fn ensure_installed(settings: &Settings) -> Result<()> {
    if ["mariadbd", "mariadb-install-db", "mariadb"]
        .iter()
        .all(|p| which(p).is_some())
    {
        return Ok(());
    }
    crate::packages::apt_install(settings, &["mariadb-server", "mariadb-client"]).context("mariadb")?;
    // Should the package's own server have started (on 3306), stop it: we run our own.
    if let Some(pid) = read_pid(Path::new("/run/mysqld/mysqld.pid")).filter(|p| pid_alive(*p)) {
        say!("mariadb: stopping the package's own server (pid {pid})");
        let _ = stop_pid(pid, "TERM", Duration::from_secs(60), "mariadb");
    }
    program("mariadbd").map(|_| ())
}

/// A server that was started and that [`wait`] waits for.
#[derive(Debug)]
pub struct Pending {
    t0: Instant,
    child: Child,
}

/// Phase 1 of `up`: starts our server (`mariadb-install-db` on first use); does not wait.
pub fn launch(settings: &Settings) -> Result<Option<Pending>> {
    if let Some(pid) = pid(settings) {
        say!(
            "mariadb: already running on 127.0.0.1:{} (pid {pid})",
            running_port(settings)
        );
        return Ok(None);
    }
    let t0 = Instant::now();
    let port = settings.mariadb_port;
    refuse_taken_port("mariadb", port, "TXOUTBOX_MARIADB_PORT")?;
    ensure_installed(settings)?;
    let user = os_user();
    let root = settings
        .db_root("mariadb", &user, true)?
        .context("mariadb: no data folder")?;
    let data = root.join("data");
    let user_opt: Vec<String> = if is_root() {
        vec![format!("--user={user}")]
    } else {
        Vec::new()
    };
    if !data.join("mysql").is_dir() {
        say!("mariadb: mariadb-install-db into {}…", data.display());
        let _ = std::fs::remove_dir_all(&data);
        let mut install = Command::new(program("mariadb-install-db")?);
        install
            .current_dir("/")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(&user_opt)
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"]);
        run_logged(
            &mut install,
            &root.join("install-db.log"),
            "mariadb: mariadb-install-db",
        )?;
    }
    let mut mkdir = as_user(&user, "mkdir");
    mkdir.arg("-p").arg(root.join("run"));
    run_logged(&mut mkdir, &root.join("mkdir.log"), "mariadb: mkdir")?;
    write(&root.join("port"), format!("{port}\n"))?;
    let out = root.join("mariadbd.out");
    let mut args = vec![
        "--no-defaults".to_owned(),
        format!("--datadir={}", data.display()),
    ];
    args.extend(user_opt);
    args.extend([
        "--bind-address=127.0.0.1".to_owned(),
        format!("--port={port}"),
        format!("--socket={}", root.join("run/mysqld.sock").display()),
        format!("--pid-file={}", root.join("run/mysqld.pid").display()),
        format!("--log-error={}", root.join("mariadb.log").display()),
        "--max-connections=300".to_owned(),
        "--max-allowed-packet=64M".to_owned(),
        "--innodb-flush-log-at-trx-commit=1".to_owned(),
        "--character-set-server=utf8mb4".to_owned(),
        "--collation-server=utf8mb4_unicode_ci".to_owned(),
        "--skip-name-resolve".to_owned(),
    ]);
    let (child, _) = spawn(
        "mariadbd",
        &program("mariadbd")?,
        &args,
        Path::new("/"),
        &out,
        Some(&root.join("pid")),
    )?;
    say!("mariadb: starting on 127.0.0.1:{port}…");
    Ok(Some(Pending { t0, child }))
}

/// Phase 2: waits until the server answers, then creates the `txoutbox` user and database.
pub fn wait(settings: &Settings, pending: Option<Pending>) -> Result<()> {
    let Some(mut p) = pending else { return Ok(()) };
    let root = root(settings).context("mariadb: no data folder")?;
    let log = root.join("mariadb.log");
    let pid = p.child.id();
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!(
                "mariadb: mariadbd (pid {pid}) exited while starting ({status}); log: {}\n{}",
                log.display(),
                log_tail(&log, 40)
            );
        }
        let pings = admin(&root, "mariadb-admin")?
            .args(["--connect-timeout=2", "ping"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if pings && port_accepts(settings.mariadb_port) {
            break;
        }
        if p.t0.elapsed() > settings.timeout {
            bail!(
                "mariadb: not ready after {} s; log: {}\n{}",
                settings.timeout.as_secs(),
                log.display(),
                log_tail(&log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // User and database: idempotent, re-applied on every start.
    let mut sql = format!(
        "CREATE DATABASE IF NOT EXISTS `{DB_NAME}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    );
    for host in ["127.0.0.1", "localhost", "%"] {
        sql.push_str(&format!(
            " CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{DB_PASS}';\
             ALTER USER '{DB_USER}'@'{host}' IDENTIFIED BY '{DB_PASS}';\
             GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'{host}' WITH GRANT OPTION;"
        ));
    }
    let mut client = admin(&root, "mariadb")?;
    client.arg("-e").arg(sql);
    run_logged(
        &mut client,
        &root.join("bootstrap.log"),
        &format!("mariadb: creating user/database {DB_USER}/{DB_NAME}"),
    )?;
    say!(
        "mariadb: ready on 127.0.0.1:{} in {} s (pid {pid}, log {})",
        settings.mariadb_port,
        since(p.t0),
        log.display()
    );
    Ok(())
}

/// Stops our server (`mariadb-admin shutdown`, else SIGTERM; SIGKILL after 60 s).
pub fn down(settings: &Settings) -> Result<()> {
    let (Some(pid), Some(root)) = (pid(settings), root(settings)) else {
        say!("mariadb: not running");
        return Ok(());
    };
    let t0 = Instant::now();
    let shutdown = admin(&root, "mariadb-admin").and_then(|mut c| {
        Ok(c.args(["--connect-timeout=5", "shutdown"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?
            .success())
    });
    if !matches!(shutdown, Ok(true)) {
        let _ = crate::process::signal(pid, "TERM");
    }
    crate::process::wait_or_kill(
        pid,
        Duration::from_secs(60),
        &format!("mariadb: pid {pid} still up after 60 s"),
    )?;
    let _ = std::fs::remove_file(root.join("pid"));
    say!("mariadb: stopped in {} s", since(t0));
    Ok(())
}

/// Our server's status line (without the external case).
pub fn status(settings: &Settings) -> String {
    let root = root(settings);
    match (pid(settings), &root) {
        (Some(pid), Some(root)) => format!(
            "mariadb    running   127.0.0.1:{}  pid {pid}  {}",
            running_port(settings),
            root.display()
        ),
        (None, Some(root)) if root.join("data/mysql").is_dir() => {
            format!("mariadb    stopped   (data kept in {})", root.display())
        }
        _ => "mariadb    stopped".to_owned(),
    }
}

/// Deletes our server's data (stopped first by the caller).
pub fn delete_data(settings: &Settings) {
    if let Some(root) = root(settings) {
        let _ = std::fs::remove_dir_all(root);
    }
    let link = settings.services_dir.join("mariadb");
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_dir_all(&link);
}
