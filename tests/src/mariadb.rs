//! A real MariaDB server on a loopback port, with real accounts (grant tables on), its error
//! log in the temp dir.
//!
//! The settings that decide what the server logs and counts are left at their defaults
//! (`log_warnings = 2`, `max_connect_errors = 100`, name resolution on), so a test sees what a
//! stock server would record. Only `performance_schema` is switched on, so that the host
//! cache (`performance_schema.host_cache`, where handshake errors are counted per client
//! address) can be read.

use std::fs::{self, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::net::{free_port, port_listening};
use crate::postgres::{LAB_OS_USER, ensure_lab_os_user, os_user_ids};
use crate::process::{LabChild, current_user, file_tail, is_root, require_program, run_bounded};

/// An account with a `mysql_native_password` password and no privileges: what a probe needs.
pub const PROBE_USER: &str = "probe";
/// Its password.
pub const PROBE_PASSWORD: &str = "lab-probe-password";

// --- end-to-end data (create_app_database, query_tcp) ---
/// The account the end-to-end tests and the demo query as (`create_app_database`).
pub const APP_USER: &str = "app";
/// Its password.
pub const APP_PASSWORD: &str = "lab-app-password";
/// The database it has every privilege on.
pub const APP_DB: &str = "appdb";
/// `appdb.customers`, the same rows as PostgreSQL's (`postgres::CUSTOMERS`).
pub const CUSTOMERS_QUERY: &str = "SELECT id, name FROM customers ORDER BY id";
/// How long one client run over TCP may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
// --- end of end-to-end data ---

const START_TIMEOUT: Duration = Duration::from_secs(60);
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: usize = 5;
/// Debian keeps mariadbd in /usr/sbin, off a normal user's PATH.
const SBIN: [&str; 2] = ["/usr/sbin", "/sbin"];
const INSTALL_HINT: &str = "install MariaDB (Debian: apt-get install -y mariadb-server mariadb-client; \
     scripts/test does this)";

/// A MariaDB server in a temp dir, listening on 127.0.0.1 only; stopped and removed on drop.
#[derive(Debug)]
pub struct Mariadb {
    // Declared first so the server is gone before the temp dir is removed.
    server: Option<LabChild>,
    dir: TempDir,
    /// The server's self-signed certificate, when it offers TLS (`start_with_ssl`).
    tls_cert: Option<PathBuf>,
    port: u16,
    data_dir: PathBuf,
    socket: PathBuf,
    log_path: PathBuf,
    /// The account `sql` uses over the Unix socket (unix_socket authentication): the OS user
    /// running the tests, which is `root` in CI.
    admin: String,
    run_as: Option<String>,
}

impl Mariadb {
    /// Initializes a data directory, starts the server, and creates [`PROBE_USER`].
    pub fn start() -> Mariadb {
        Mariadb::start_inner(false)
    }

    /// [`Mariadb::start`], the server offering TLS with a self-signed certificate (for
    /// `localhost` and 127.0.0.1: see [`Mariadb::tls_cert`]). Clients choose whether to use it.
    pub fn start_with_ssl() -> Mariadb {
        Mariadb::start_inner(true)
    }

    fn start_inner(tls: bool) -> Mariadb {
        let install_db = require_program("mariadb-install-db", &SBIN, INSTALL_HINT);
        let mariadbd = require_program("mariadbd", &SBIN, INSTALL_HINT);
        require_program("mariadb", &SBIN, INSTALL_HINT);
        // Run unprivileged, as PostgreSQL does; mariadbd switches to the user itself (--user).
        let run_as = is_root().then(|| {
            ensure_lab_os_user();
            LAB_OS_USER.to_owned()
        });

        let dir = tempfile::Builder::new()
            .prefix("lab-mariadb-")
            .tempdir()
            .expect("create a temp dir for MariaDB");
        let data_dir = dir.path().join("data");
        let socket = dir.path().join("mariadbd.sock");
        let log_path = dir.path().join("error.log");
        fs::write(&log_path, "").expect("create the MariaDB error log");
        if let Some(user) = &run_as {
            let (uid, gid) = os_user_ids(user);
            for path in [dir.path(), &log_path] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", path.display()));
            }
        }

        let mut install = Command::new(&install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data_dir.display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            // Its own temporary tables go in the lab's directory, not a /tmp that concurrent
            // installs share (CI saw one fail to remove its temporary table there).
            .arg(format!("--tmpdir={}", dir.path().display()))
            .current_dir(dir.path());
        match &run_as {
            Some(user) => install.arg(format!("--user={user}")),
            // The account `sql` uses: the tool would take it from $USER.
            None => install.arg(format!("--auth-root-socket-user={}", current_user())),
        };
        let out = run_bounded(&mut install, SETUP_TIMEOUT, "mariadb-install-db");
        if !out.status.success() {
            panic!(
                "mariadb-install-db failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let tls_cert = tls.then(|| make_tls_certificate(dir.path(), run_as.as_deref()));
        let mut db = Mariadb {
            server: None,
            dir,
            tls_cert,
            port: free_port(),
            data_dir,
            socket,
            log_path,
            admin: current_user().to_owned(),
            run_as,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            match db.launch(&mariadbd) {
                Ok(()) => break,
                Err(log) if attempt < PORT_ATTEMPTS && log.contains("Address already in use") => {
                    db.port = free_port();
                }
                Err(log) => {
                    panic!("MariaDB exited during startup; its error log ends with:\n{log}")
                }
            }
        }
        db.sql(&format!(
            "CREATE USER '{PROBE_USER}'@'%' IDENTIFIED BY '{PROBE_PASSWORD}'"
        ));
        db
    }

    /// Runs mariadbd in the foreground as our child, in the test's process group.
    fn launch(&mut self, mariadbd: &Path) -> Result<(), String> {
        let log_start = fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let out_path = self.dir.path().join("mariadbd.out");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .expect("open mariadbd's output file");
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir.display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--log-error={}", self.log_path.display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mariadbd.pid").display()
            ))
            .arg(format!("--tmpdir={}", self.dir.path().display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--performance-schema=ON",
                // Small and fast; nothing here affects what is logged.
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .stdout(out.try_clone().expect("clone a file handle"))
            .stderr(out);
        if let Some(user) = &self.run_as {
            cmd.arg(format!("--user={user}"));
        }
        if let Some(cert) = &self.tls_cert {
            cmd.arg(format!("--ssl-cert={}", cert.display()))
                .arg(format!(
                    "--ssl-key={}",
                    cert.with_extension("key").display()
                ));
        }
        let mut child = LabChild::spawn("mariadbd", &mut cmd);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log_since(log_start);
            if child.exited().is_some() {
                let output = file_tail(&out_path, 10);
                return Err(format!("{}\n{output}", crate::process::tail(&log, 30)));
            }
            if port_listening(self.port) && log.contains("ready for connections") {
                self.server = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                drop(child);
                panic!(
                    "MariaDB on 127.0.0.1:{} not ready within {START_TIMEOUT:?}; its error log ends with:\n{}",
                    self.port,
                    file_tail(&self.log_path, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = fs::File::open(&self.log_path) {
            let _ = file.seek(SeekFrom::Start(offset));
            let _ = file.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Runs SQL as the administrator over the Unix socket (`mariadb -N -B`) and returns its
    /// output without the trailing newline; a failing statement fails the test.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb failed on {sql:?}: {e}"))
    }

    /// [`Mariadb::sql`], returning the client's error text instead of failing the test.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let client = require_program("mariadb", &SBIN, INSTALL_HINT);
        let mut cmd = Command::new(client);
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args([
                "--protocol=socket",
                "-u",
                &self.admin,
                "-N",
                "-B",
                "-e",
                sql,
            ]);
        let out = run_bounded(&mut cmd, SETUP_TIMEOUT, "mariadb (over the Unix socket)");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Creates `user@'%'` with a `mysql_native_password` password and no privileges.
    pub fn create_user(&self, user: &str, password: &str) {
        self.sql(&format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"
        ));
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The self-signed certificate the server offers (PEM; subjectAltName `localhost` and
    /// 127.0.0.1), when started with [`Mariadb::start_with_ssl`]: a client's CA file.
    pub fn tls_cert(&self) -> Option<&Path> {
        self.tls_cert.as_deref()
    }

    /// Creates [`APP_DB`] with the table `customers(id, name)` holding the rows of
    /// `postgres::CUSTOMERS`, and [`APP_USER`] with every privilege on that database.
    pub fn create_app_database(&self) {
        let rows = crate::postgres::CUSTOMERS
            .iter()
            .map(|(id, name)| format!("({id}, '{name}')"))
            .collect::<Vec<_>>()
            .join(", ");
        self.sql(&format!(
            "CREATE DATABASE {APP_DB}; \
             CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'; \
             GRANT ALL PRIVILEGES ON {APP_DB}.* TO '{APP_USER}'@'%'; \
             CREATE TABLE {APP_DB}.customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL); \
             INSERT INTO {APP_DB}.customers VALUES {rows}"
        ));
    }

    /// The server's process id, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(LabChild::pid)
    }

    /// The temp dir holding the data directory, socket and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The error log file (`log_error`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The error log so far.
    pub fn log(&self) -> String {
        self.log_since(0)
    }

    /// Makes the server stop, and its temp dir go, when this process exits, however it exits
    /// (normal end, panic, or a kill). For a server kept in a `static` for the tests of one
    /// binary: statics are never dropped.
    pub fn stop_at_process_exit(&self) {
        let Some(pid) = self.server_pid() else {
            return;
        };
        run_at_process_exit(&format!(
            "kill -TERM {pid}; i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done; \
             kill -KILL {pid} 2>/dev/null; rm -rf '{}'",
            self.dir.path().display()
        ));
    }

    /// Stops the server: SIGTERM (a clean shutdown), then SIGKILL if it lingers.
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        // Must not panic: this runs from Drop, possibly while a failed test unwinds.
        server.terminate();
        if server.wait_timeout(STOP_TIMEOUT).is_none() {
            eprintln!("lab: MariaDB did not stop on SIGTERM; killing it");
            server.kill();
        }
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the shell `script` once this process has exited, however it exits: a watcher `sh`
/// blocks reading a pipe whose only writer is this process, and the kernel closes that end
/// when the process ends, even on SIGKILL. For servers kept in statics (never dropped), so
/// that they do not outlive the test binary. The watcher's output goes nowhere, so it does not
/// hold the test's output open.
pub fn run_at_process_exit(script: &str) {
    static WATCHERS: Mutex<Vec<(Child, ChildStdin)>> = Mutex::new(Vec::new());
    let mut child = Command::new("sh")
        .args(["-c", &format!("read _ignored; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a watcher sh");
    let stdin = child.stdin.take().expect("the watcher's stdin");
    WATCHERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push((child, stdin));
}

// --- end-to-end helpers (query_tcp, the TLS certificate) ---

/// The rows of [`CUSTOMERS_QUERY`] as `mariadb -N -B` prints them (tab-separated).
pub fn expected_customers() -> String {
    crate::postgres::CUSTOMERS
        .iter()
        .map(|(id, name)| format!("{id}\t{name}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `mariadb` client over TCP to 127.0.0.1:`port` as [`APP_USER`] on [`APP_DB`], batch mode
/// without column names (`-N -B`), no option files read; add `-e SQL` or other flags.
pub fn client_command(port: u16) -> Command {
    let client = require_program("mariadb", &SBIN, INSTALL_HINT);
    let mut cmd = Command::new(client);
    cmd.arg("--no-defaults")
        .args(["--protocol=tcp", "-h", "127.0.0.1", "-P", &port.to_string()])
        .args(["-u", APP_USER, &format!("-p{APP_PASSWORD}"), "-N", "-B"])
        .arg("--connect-timeout=10")
        .arg(APP_DB);
    cmd
}

/// Runs `sql` with [`client_command`] plus `extra` flags (`--ssl`, `--skip-ssl`, ...) and
/// returns the output without its trailing newline, or the client's error text.
pub fn try_query_tcp(port: u16, extra: &[&str], sql: &str) -> Result<String, String> {
    let mut cmd = client_command(port);
    cmd.args(extra).args(["-e", sql]);
    let out = run_bounded(&mut cmd, QUERY_TIMEOUT, "mariadb (over TCP)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// [`try_query_tcp`], failing the test with the client's error.
pub fn query_tcp(port: u16, extra: &[&str], sql: &str) -> String {
    try_query_tcp(port, extra, sql)
        .unwrap_or_else(|e| panic!("mariadb on 127.0.0.1:{port} failed on {sql:?}: {e}"))
}

/// A self-signed certificate `server.pem` and its key `server.key` in `dir`, for `localhost`
/// and 127.0.0.1, readable by the server's user. Returns the certificate's path.
fn make_tls_certificate(dir: &Path, run_as: Option<&str>) -> PathBuf {
    let (crt, key) = (dir.join("server.pem"), dir.join("server.key"));
    crate::tls::self_signed(
        &crt,
        &key,
        run_as,
        "openssl req (a certificate for MariaDB)",
    );
    crt
}
// --- end of end-to-end helpers ---
