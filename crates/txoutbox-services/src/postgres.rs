//! PostgreSQL: the installed server's bin folder (installed with apt when missing), `initdb` and
//! `pg_ctl` as the right OS user (`postgres` when we are root), and the services' own cluster in
//! `<services dir>/postgres` (not Debian's system cluster).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::files::write;
use crate::process::{
    as_user, chown_to, is_executable, is_root, log_tail, pid_alive, port_accepts, read_pid,
    refuse_taken_port, run_logged, since, stop_pid,
};
use crate::settings::{DB_NAME, DB_PASS, DB_USER};
use crate::{Settings, say};

/// The bin folder of the installed PostgreSQL: `TXOUTBOX_PG_BINDIR`, else the highest version
/// under `/usr/lib/postgresql/*/bin` with `initdb` and `pg_ctl`, else the folder of `initdb` on
/// the `PATH`.
pub fn find_bindir(settings: &Settings) -> Option<PathBuf> {
    if let Some(dir) = &settings.pg_bindir {
        return Some(dir.clone());
    }
    let usable = |bin: &Path| is_executable(&bin.join("initdb")) && is_executable(&bin.join("pg_ctl"));
    let version = |name: &str| -> Vec<u32> { name.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let best = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (version(&e.file_name().to_string_lossy()), e.path().join("bin")))
        .filter(|(_, bin)| usable(bin))
        .max_by(|a, b| a.0.cmp(&b.0));
    if let Some((_, bin)) = best {
        return Some(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|dir| usable(dir))
}

/// [`find_bindir`], installing the `postgresql` package first when there is none (and stopping
/// the cluster Debian may start with it: we run our own).
pub fn bindir(settings: &Settings) -> Result<PathBuf> {
    if let Some(bin) = find_bindir(settings) {
        return Ok(bin);
    }
    crate::packages::apt_install(settings, &["postgresql"]).context("postgres")?;
    if let Ok(out) = Command::new("pg_lsclusters")
        .arg("-h")
        .stderr(Stdio::null())
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(version), Some(name), Some(status)) = (f.first(), f.get(1), f.get(3))
                && status.starts_with("online")
            {
                let _ = Command::new("pg_ctlcluster")
                    .args([version, name, "stop"])
                    .status();
            }
        }
    }
    find_bindir(settings).context(
        "postgres: installed the postgresql package but found no initdb under /usr/lib/postgresql/*/bin",
    )
}

/// The OS user a server of ours runs as: `postgres` when we are root (PostgreSQL refuses root),
/// else ourselves.
pub fn os_user() -> String {
    if is_root() {
        "postgres".to_owned()
    } else {
        crate::process::current_user()
    }
}

/// A server's programs and data folder, run as its OS user.
#[derive(Debug, Clone)]
pub struct PgServer {
    /// The bin folder ([`bindir`]).
    pub bin: PathBuf,
    /// The data folder.
    pub data: PathBuf,
    /// The OS user the server runs as ([`os_user`]).
    pub user: String,
}

impl PgServer {
    /// A command running one of the server's programs as its OS user, from `/`.
    pub fn command(&self, program: &str) -> Command {
        as_user(&self.user, self.bin.join(program))
    }

    /// `initdb -D <data> --no-locale --encoding=UTF8 <extra>`; its output goes to `log`.
    pub fn initdb(&self, extra: &[String], log: &Path) -> Result<()> {
        let mut command = self.command("initdb");
        command
            .arg("-D")
            .arg(&self.data)
            .args(["--no-locale", "--encoding=UTF8"])
            .args(extra);
        run_logged(&mut command, log, "postgres: initdb")
    }

    /// `pg_ctl start`, waiting up to `timeout` (the server's log is `server_log`, pg_ctl's own
    /// output goes to `log`).
    pub fn start(&self, server_log: &Path, timeout: Duration, log: &Path) -> Result<()> {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(&self.data).arg("-l").arg(server_log).args([
            "-w",
            "-t",
            &timeout.as_secs().to_string(),
            "start",
        ]);
        run_logged(&mut command, log, "postgres: pg_ctl start").with_context(|| {
            format!(
                "the server did not start (log: {})\n{}",
                server_log.display(),
                log_tail(server_log, 40)
            )
        })
    }

    /// `pg_ctl stop -m <mode>` (`fast`, `immediate`), waiting up to `timeout`.
    pub fn stop(&self, mode: &str, timeout: Duration, log: &Path) -> Result<()> {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(&self.data).args([
            "-m",
            mode,
            "-w",
            "-t",
            &timeout.as_secs().to_string(),
            "stop",
        ]);
        run_logged(&mut command, log, "postgres: pg_ctl stop")
    }

    /// Waits until `127.0.0.1:port` accepts connections.
    pub fn wait_port(&self, port: u16, deadline: Instant, server_log: &Path) -> Result<()> {
        while !port_accepts(port) {
            if Instant::now() > deadline {
                bail!(
                    "postgres: started but 127.0.0.1:{port} does not accept connections\n{}",
                    log_tail(server_log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The services' cluster
// ---------------------------------------------------------------------------------------------

/// Our database's URL on `port`.
pub fn url(port: u16) -> String {
    format!("postgres://{DB_USER}:{DB_PASS}@127.0.0.1:{port}/{DB_NAME}")
}

fn root(settings: &Settings) -> Result<Option<PathBuf>> {
    settings.db_root("postgres", &os_user(), false)
}

/// The pid of our running postmaster.
pub fn pid(settings: &Settings) -> Option<u32> {
    let root = root(settings).ok()??;
    let data = root.join("data");
    let pid = read_pid(&data.join("postmaster.pid"))?;
    // The postmaster's command line names its data folder (`-D <data>`).
    let named = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&data.display().to_string()));
    (pid_alive(pid) && named).then_some(pid)
}

/// The port of our running postmaster (line 4 of `postmaster.pid`).
fn running_port(settings: &Settings) -> Option<u16> {
    let root = root(settings).ok()??;
    let text = std::fs::read_to_string(root.join("data/postmaster.pid")).ok()?;
    text.lines().nth(3)?.trim().parse().ok()
}

/// Our database's URL while our server runs.
pub fn local_url(settings: &Settings) -> Option<String> {
    pid(settings)?;
    Some(url(running_port(settings).unwrap_or(settings.postgres_port)))
}

/// Starts our cluster (`initdb` on first use, settings rewritten on every start), waits until it
/// serves and creates the `txoutbox` role and database.
pub fn up(settings: &Settings) -> Result<()> {
    if let Some(pid) = pid(settings) {
        say!(
            "postgres: already running on 127.0.0.1:{} (pid {pid})",
            running_port(settings).unwrap_or(settings.postgres_port)
        );
        return Ok(());
    }
    let t0 = Instant::now();
    let port = settings.postgres_port;
    refuse_taken_port("postgres", port, "TXOUTBOX_POSTGRES_PORT")?;
    let bin = bindir(settings)?;
    let user = os_user();
    let root = settings
        .db_root("postgres", &user, true)?
        .context("postgres: no data folder")?;
    let server = PgServer {
        bin: bin.clone(),
        data: root.join("data"),
        user: user.clone(),
    };
    if !server.data.join("PG_VERSION").is_file() {
        say!(
            "postgres: initdb ({}) into {}…",
            bin.display(),
            server.data.display()
        );
        let _ = std::fs::remove_dir_all(&server.data);
        server.initdb(
            &[
                "--auth-local=peer".to_owned(),
                "--auth-host=scram-sha-256".to_owned(),
            ],
            &root.join("initdb.log"),
        )?;
        let conf = server.data.join("postgresql.conf");
        let mut file = crate::process::append(&conf)?;
        file.write_all(b"\n# txoutbox: settings of txoutbox-services (rewritten on every start)\ninclude_if_exists = 'txoutbox.conf'\n")
            .with_context(|| format!("write {}", conf.display()))?;
    }
    let run = root.join("run");
    let mut mkdir = as_user(&user, "mkdir");
    mkdir.arg("-p").arg(&run);
    run_logged(&mut mkdir, &root.join("mkdir.log"), "postgres: mkdir")?;
    let conf = server.data.join("txoutbox.conf");
    write(
        &conf,
        format!(
            "# Written by txoutbox-services on every start; edits are lost.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             wal_level = logical\n\
             max_replication_slots = 20\n\
             max_wal_senders = 20\n\
             # A replication slot left behind by a killed test holds WAL back forever; past this much the\n\
             # server invalidates it instead of filling the disk (running relays stay far below it).\n\
             max_slot_wal_keep_size = 8GB\n\
             shared_buffers = 256MB\n",
            run.display()
        ),
    )?;
    if is_root() {
        chown_to(&conf, &user)?;
    }
    let server_log = root.join("postgres.log");
    server.start(&server_log, settings.timeout, &root.join("pg_ctl.log"))?;
    server.wait_port(port, t0 + settings.timeout, &server_log)?;
    // Role and database: idempotent, re-applied on every start.
    let sql = format!(
        "DO $$\nBEGIN\n  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_USER}') THEN\n    \
         CREATE ROLE {DB_USER} LOGIN SUPERUSER REPLICATION PASSWORD '{DB_PASS}';\n  ELSE\n    \
         ALTER ROLE {DB_USER} LOGIN SUPERUSER REPLICATION PASSWORD '{DB_PASS}';\n  END IF;\nEND\n$$;\n\
         SELECT 'CREATE DATABASE {DB_NAME} OWNER {DB_USER}'\n\
         WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DB_NAME}')\\gexec\n"
    );
    let sql_file = run.join("bootstrap.sql");
    write(&sql_file, sql)?;
    if is_root() {
        chown_to(&sql_file, &user)?;
    }
    let mut psql = server.command("psql");
    psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(&run)
        .args(["-p", &port.to_string(), "-d", "postgres", "-f"])
        .arg(&sql_file);
    run_logged(
        &mut psql,
        &root.join("bootstrap.log"),
        &format!("postgres: creating role/database {DB_USER}/{DB_NAME}"),
    )?;
    let _ = std::fs::remove_file(&sql_file);
    say!(
        "postgres: ready on 127.0.0.1:{port} in {} s (pid {}, log {})",
        since(t0),
        pid(settings).map_or("?".to_owned(), |p| p.to_string()),
        server_log.display()
    );
    Ok(())
}

/// Stops our cluster (`pg_ctl stop -m fast`, else SIGQUIT).
pub fn down(settings: &Settings) -> Result<()> {
    let (Some(pid), Some(root)) = (pid(settings), root(settings)?) else {
        say!("postgres: not running");
        return Ok(());
    };
    let t0 = Instant::now();
    let server = PgServer {
        bin: bindir(settings)?,
        data: root.join("data"),
        user: os_user(),
    };
    if server
        .stop("fast", Duration::from_secs(60), &root.join("pg_ctl.log"))
        .is_err()
    {
        say!("postgres: pg_ctl stop failed; sending SIGQUIT to {pid}");
        stop_pid(pid, "QUIT", Duration::from_secs(20), "postgres")?;
    }
    say!("postgres: stopped in {} s", since(t0));
    Ok(())
}

/// Our cluster's status line (without the external case).
pub fn status(settings: &Settings) -> String {
    let root = root(settings).ok().flatten();
    match (pid(settings), &root) {
        (Some(pid), Some(root)) => format!(
            "postgres   running   127.0.0.1:{}  pid {pid}  {}",
            running_port(settings).unwrap_or(settings.postgres_port),
            root.display()
        ),
        (None, Some(root)) if root.join("data/PG_VERSION").is_file() => {
            format!("postgres   stopped   (data kept in {})", root.display())
        }
        _ => "postgres   stopped".to_owned(),
    }
}

/// Deletes our cluster's data (stopped first by the caller).
pub fn delete_data(settings: &Settings) -> Result<()> {
    if let Some(root) = root(settings)? {
        let _ = std::fs::remove_dir_all(&root);
    }
    let link = settings.services_dir.join("postgres");
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_dir_all(&link);
    Ok(())
}
