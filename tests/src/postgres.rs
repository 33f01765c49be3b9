//! A real PostgreSQL cluster on a loopback port, with a known role, database and table.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::net::{free_port, port_listening};
use crate::process::{
    LabChild, file_tail, find_program, is_root, require_program, run_bounded, run_ok, run_quietly,
};

/// The login role tests connect as.
pub const APP_USER: &str = "app";
/// Its password (scram-sha-256 over TCP).
pub const APP_PASSWORD: &str = "lab-app-password";
/// The database it owns.
pub const APP_DB: &str = "appdb";
/// The rows of `appdb.public.customers(id, name)`.
pub const CUSTOMERS: [(i32, &str); 3] =
    [(1, "Ada Lovelace"), (2, "Grace Hopper"), (3, "Alan Turing")];
/// The query whose answer [`expected_customers`] gives.
pub const CUSTOMERS_QUERY: &str = "SELECT id, name FROM customers ORDER BY id";

/// The system user PostgreSQL runs as when the tests run as root (the server refuses root).
pub const LAB_OS_USER: &str = "forwarder-lab";

/// The bootstrap superuser, reachable only over the Unix socket in the temp dir.
const ADMIN: &str = "labadmin";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 5;
/// Debian keeps the server binaries off PATH in a versioned directory.
const PG_DIRS: [&str; 1] = ["/usr/lib/postgresql/15/bin"];
const INSTALL_HINT: &str = "install PostgreSQL 15 (Debian: apt-get install -y postgresql-15 postgresql-client-15; \
     scripts/test does this)";

/// What `psql -At` prints for [`CUSTOMERS_QUERY`]: `id|name` lines.
pub fn expected_customers() -> String {
    CUSTOMERS
        .iter()
        .map(|(id, name)| format!("{id}|{name}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A PostgreSQL 15 cluster in a temp dir, listening on 127.0.0.1 only; stopped and removed on
/// drop.
#[derive(Debug)]
pub struct Postgres {
    // Declared first so the server is gone before the temp dir is removed.
    server: Option<LabChild>,
    dir: TempDir,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    run_as: Option<String>,
    pg_ctl: PathBuf,
}

impl Postgres {
    /// Creates the cluster, starts it, and sets up the `app` role, `appdb` and `customers`.
    pub fn start() -> Postgres {
        Postgres::start_inner(false)
    }

    /// [`Postgres::start`] with `ssl = on` and a self-signed certificate made with `openssl`
    /// (clients may then ask for TLS; `pg_hba.conf` still accepts plain connections).
    pub fn start_with_ssl() -> Postgres {
        Postgres::start_inner(true)
    }

    /// [`Postgres::start_with_ssl`] with the certificate's key on `curve` (an OpenSSL curve
    /// name: `secp521r1` for P-521).
    pub fn start_with_ssl_on_curve(curve: &str) -> Postgres {
        Postgres::start_inner_with(Some(Tls::SelfSignedOn(curve.to_owned())))
    }

    /// [`Postgres::start`] with `ssl = on` and a certificate for `name` (its subjectAltName)
    /// signed by a test CA made for this cluster, whose certificate is at
    /// [`Postgres::ca_cert_path`]: what a client checking `verify-full` for `name` accepts.
    pub fn start_with_ca_signed_certificate(name: &str) -> Postgres {
        Postgres::start_inner_with(Some(Tls::CaSigned(name.to_owned())))
    }

    /// The test CA's certificate (PEM) of [`Postgres::start_with_ca_signed_certificate`].
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_inner(ssl: bool) -> Postgres {
        Postgres::start_inner_with(ssl.then_some(Tls::SelfSigned))
    }

    fn start_inner_with(tls: Option<Tls>) -> Postgres {
        let initdb = require_program("initdb", &PG_DIRS, INSTALL_HINT);
        let postgres = require_program("postgres", &PG_DIRS, INSTALL_HINT);
        let pg_ctl = require_program("pg_ctl", &PG_DIRS, INSTALL_HINT);
        let run_as = is_root().then(|| {
            ensure_lab_os_user();
            LAB_OS_USER.to_owned()
        });

        let dir = tempfile::Builder::new()
            .prefix("lab-pg-")
            .tempdir()
            .expect("create a temp dir for PostgreSQL");
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        let log_path = dir.path().join("postgres.log");
        let pwfile = dir.path().join("admin-password");
        fs::create_dir(&socket_dir).expect("create the socket dir");
        fs::write(&pwfile, "lab-admin-password\n").expect("write the admin password file");
        fs::write(&log_path, "").expect("create the PostgreSQL log");
        if let Some(user) = &run_as {
            let (uid, gid) = os_user_ids(user);
            for path in [dir.path(), &socket_dir, &pwfile, &log_path] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", path.display()));
            }
        }

        let mut init = as_user(run_as.as_deref(), &initdb);
        init.arg("-D")
            .arg(&data_dir)
            .args(["--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"])
            .args([
                "-U",
                ADMIN,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run_ok(&mut init, SETUP_TIMEOUT, "initdb");

        let settings = format!(
            "\n# Test lab: loopback only, fast and unsafe.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 200\n\
             shared_buffers = '64MB'\n",
            socket_dir.display()
        );
        let mut conf = OpenOptions::new()
            .append(true)
            .open(data_dir.join("postgresql.conf"))
            .expect("open postgresql.conf");
        std::io::Write::write_all(&mut conf, settings.as_bytes()).expect("append postgresql.conf");
        if let Some(tls) = &tls {
            match tls {
                Tls::SelfSigned => make_server_certificate(&data_dir, run_as.as_deref()),
                Tls::SelfSignedOn(curve) => crate::tls::self_signed_on(
                    &data_dir.join("server.crt"),
                    &data_dir.join("server.key"),
                    curve,
                    run_as.as_deref(),
                    "openssl req (a certificate for PostgreSQL)",
                ),
                Tls::CaSigned(name) => {
                    make_ca_signed_certificate(dir.path(), &data_dir, name, run_as.as_deref());
                }
            }
            // server.crt and server.key in the data directory are the defaults.
            std::io::Write::write_all(&mut conf, b"ssl = on\n").expect("append postgresql.conf");
        }

        let mut pg = Postgres {
            server: None,
            dir,
            port: free_port(),
            data_dir,
            socket_dir,
            log_path,
            run_as,
            pg_ctl,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            match pg.launch(&postgres) {
                Ok(()) => break,
                Err(log) if attempt < PORT_ATTEMPTS && log.contains("Address already in use") => {
                    pg.port = free_port();
                }
                Err(log) => panic!("PostgreSQL exited during startup; its log ends with:\n{log}"),
            }
        }
        pg.create_app_database();
        pg
    }

    /// Runs the server in the foreground as our child (not daemonized by `pg_ctl start`), so
    /// that it stays in the test's process group and dies with it even if the test process is
    /// killed before any destructor runs.
    fn launch(&mut self, postgres: &Path) -> Result<(), String> {
        let log = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("open the PostgreSQL log");
        let mut cmd = as_user(self.run_as.as_deref(), postgres);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .stdout(log.try_clone().expect("clone a file handle"))
            .stderr(log);
        let mut child = LabChild::spawn("postgres", &mut cmd);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if child.exited().is_some() {
                return Err(file_tail(&self.log_path, 30));
            }
            let log = fs::read_to_string(&self.log_path).unwrap_or_default();
            if port_listening(self.port) && log.contains("ready to accept connections") {
                self.server = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                drop(child);
                panic!(
                    "PostgreSQL on 127.0.0.1:{} not ready within {START_TIMEOUT:?}; its log ends with:\n{}",
                    self.port,
                    file_tail(&self.log_path, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn create_app_database(&self) {
        self.admin_sql(
            "postgres",
            ADMIN,
            &[
                &format!("CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'"),
                &format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"),
            ],
        );
        // Created by the app role itself so it owns the table.
        let rows = CUSTOMERS
            .iter()
            .map(|(id, name)| format!("({id}, '{name}')"))
            .collect::<Vec<_>>()
            .join(", ");
        self.admin_sql(
            APP_DB,
            APP_USER,
            &[
                "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL)",
                &format!("INSERT INTO customers (id, name) VALUES {rows}"),
            ],
        );
    }

    /// Runs statements over the Unix socket (trust auth), each in its own transaction.
    fn admin_sql(&self, db: &str, role: &str, statements: &[&str]) -> String {
        let mut cmd = Command::new(psql_binary());
        cmd.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", role, "-d", db]);
        for statement in statements {
            cmd.args(["-c", statement]);
        }
        let out = run_ok(&mut cmd, SETUP_TIMEOUT, "psql (setup over the Unix socket)");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// Runs SQL as the bootstrap superuser over the Unix socket and returns `psql -At` output.
    pub fn superuser_sql(&self, sql: &str) -> String {
        self.admin_sql(APP_DB, ADMIN, &[sql])
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's Unix socket (`.s.PGSQL.PORT` in its socket directory), where local
    /// connections are trusted without a password.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(format!(".s.PGSQL.{}", self.port))
    }

    /// The process the lab started while the server runs: the postmaster, or `runuser` when
    /// the tests run as root (the postmaster is then its child).
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(LabChild::pid)
    }

    /// Makes the server stop (immediate shutdown, which also frees its shared memory), and its
    /// temp dir go, when this process exits, however it exits. For a cluster kept in a
    /// `static` for the tests of one binary: statics are never dropped.
    pub fn stop_at_process_exit(&self) {
        let Some(pid) = self.server_pid() else {
            return;
        };
        // As root the lab's child is runuser; the postmaster is the one to signal.
        let postmaster = match self.run_as {
            Some(_) => crate::process::children_of(pid),
            None => vec![pid],
        };
        let list = |pids: &[u32]| {
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut all = postmaster.clone();
        all.push(pid);
        let (postmaster, all) = (list(&postmaster), list(&all));
        crate::mariadb::run_at_process_exit(&format!(
            "kill -QUIT {postmaster} 2>/dev/null; i=0; \
             while kill -0 {all} 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done; \
             kill -KILL {all} 2>/dev/null; rm -rf '{}'",
            self.dir.path().display()
        ));
    }

    /// The temp dir holding the data directory, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `psql` as `app` over TCP, straight to the server.
    pub fn psql(&self, sql: &str) -> String {
        psql(self.port, sql)
    }

    /// Creates the pgbench tables in `appdb` (`pgbench -i -s scale`), straight to the server.
    pub fn pgbench_init(&self, scale: u32) {
        let mut cmd = pgbench_command(self.port);
        cmd.args(["-i", "-q", "-s", &scale.to_string()]).arg(APP_DB);
        run_ok(&mut cmd, SETUP_TIMEOUT, "pgbench -i");
    }

    /// Lets TCP connections from 127.0.0.1 in without a password (a `trust` line ahead of
    /// the scram-sha-256 ones), for benchmarks where SCRAM's deliberately slow key derivation
    /// would dominate the cost of a connection. Returns once the server applies it.
    pub fn trust_host_connections(&self) {
        let hba = self.data_dir.join("pg_hba.conf");
        let old = fs::read_to_string(&hba).expect("read pg_hba.conf");
        fs::write(&hba, format!("host all all 127.0.0.1/32 trust\n{old}"))
            .expect("write pg_hba.conf");
        self.superuser_sql("SELECT pg_reload_conf()");
        crate::process::wait_until(
            Duration::from_secs(30),
            "PostgreSQL accepting password-less TCP logins after reload",
            || {
                let mut cmd = Command::new(psql_binary());
                cmd.args([
                    "-X",
                    "-w",
                    "-At",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                ])
                .args(["-U", APP_USER, "-d", APP_DB, "-c", "SELECT 1"])
                .env_remove("PGPASSWORD")
                .env("PGPASSFILE", "/dev/null");
                run_bounded(&mut cmd, QUERY_TIMEOUT, "psql")
                    .status
                    .success()
                    .then_some(())
            },
            || format!("log ends with:\n{}", file_tail(&self.log_path, 20)),
        );
    }

    /// Stops the server (`pg_ctl stop -m immediate`, then SIGKILL if it lingers).
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let mut cmd = as_user(self.run_as.as_deref(), &self.pg_ctl);
        cmd.args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
            .arg(&self.data_dir);
        // Must not panic: this runs from Drop, possibly while a failed test unwinds.
        let stopped = run_quietly(&mut cmd, Duration::from_secs(20)).is_some_and(|s| s.success());
        if !stopped {
            eprintln!("lab: pg_ctl stop failed; killing PostgreSQL");
        }
        if server.wait_timeout(Duration::from_secs(10)).is_none() {
            server.kill();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The files belong to the lab user; root may still remove them when the TempDir drops.
        self.stop();
    }
}

/// `psql -h 127.0.0.1 -p PORT -U app -d appdb -At -c SQL` with the app password; returns the
/// output without its trailing newline. Point it at a tunnel's local port to query through
/// the tunnel. Fails the test with psql's error if the query fails.
pub fn psql(port: u16, sql: &str) -> String {
    try_psql(port, sql).unwrap_or_else(|e| panic!("psql on 127.0.0.1:{port} failed: {e}"))
}

/// [`psql`], returning psql's error text instead of failing the test.
pub fn try_psql(port: u16, sql: &str) -> Result<String, String> {
    let mut cmd = psql_command(port);
    cmd.args(["-c", sql]);
    run_psql(&mut cmd)
}

/// psql with the lab's settings (no psqlrc, no password prompt, unaligned tuples only, stop
/// at the first error, the app password), before any connection argument or command.
fn psql_base() -> Command {
    let mut cmd = Command::new(psql_binary());
    cmd.args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1"])
        .envs(client_env());
    cmd
}

/// Runs a psql command to its end (bounded): its output without the trailing newline, or its
/// error text.
fn run_psql(cmd: &mut Command) -> Result<String, String> {
    let out: Output = run_bounded(cmd, QUERY_TIMEOUT, "psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `psql -At -c SQL` with a libpq connection string (`"host=db.internal hostaddr=127.0.0.1
/// port=… sslmode=verify-full sslrootcert=…"`), the app password in the environment;
/// returns psql's output, or its error text.
pub fn try_psql_conninfo(conninfo: &str, sql: &str) -> Result<String, String> {
    let mut cmd = psql_base();
    cmd.args(["-c", sql, "-d", conninfo]);
    run_psql(&mut cmd)
}

/// psql through a Unix socket: `host` is the socket's directory, `port` the number in its
/// `.s.PGSQL.PORT` name. Panics with psql's error.
pub fn psql_socket(dir: &Path, port: u16, sql: &str) -> String {
    let conninfo = format!("host={} port={port} user=app dbname=appdb", dir.display());
    try_psql_conninfo(&conninfo, sql)
        .unwrap_or_else(|e| panic!("psql on {}/.s.PGSQL.{port}: {e}", dir.display()))
}

/// `psql -X -w -At -v ON_ERROR_STOP=1` aimed at 127.0.0.1:`port` as `app` on `appdb`, with
/// the app password, without a command: add `-c SQL` (or several).
pub fn psql_command(port: u16) -> Command {
    let mut cmd = psql_base();
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", APP_USER, "-d", APP_DB]);
    cmd
}

/// A `pgbench` command aimed at 127.0.0.1:`port` as `app`, without the database argument.
pub fn pgbench_command(port: u16) -> Command {
    let bin = require_program("pgbench", &PG_DIRS, INSTALL_HINT);
    let mut cmd = Command::new(bin);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", APP_USER])
        .envs(client_env())
        .stdin(Stdio::null());
    cmd
}

fn client_env() -> [(&'static str, &'static str); 3] {
    [
        ("PGPASSWORD", APP_PASSWORD),
        ("PGCONNECT_TIMEOUT", "10"),
        // No ~/.pgpass or service file from the machine may change who we log in as.
        ("PGPASSFILE", "/dev/null"),
    ]
}

fn psql_binary() -> PathBuf {
    require_program("psql", &PG_DIRS, INSTALL_HINT)
}

/// A command for `program`, run as `user` through `runuser` when given.
fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let runuser = find_program("runuser", &["/usr/sbin", "/sbin"])
                .unwrap_or_else(|| PathBuf::from("runuser"));
            let mut cmd = Command::new(runuser);
            cmd.args(["-u", user, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Creates [`LAB_OS_USER`] as a system user if it does not exist. Parallel tests may race to
/// create it, so a failed `useradd` is fine as long as the user exists afterwards.
pub(crate) fn ensure_lab_os_user() {
    for attempt in 0..10 {
        if user_exists(LAB_OS_USER) {
            return;
        }
        let useradd = find_program("useradd", &["/usr/sbin", "/sbin"])
            .unwrap_or_else(|| PathBuf::from("useradd"));
        let mut cmd = Command::new(useradd);
        cmd.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(LAB_OS_USER);
        let out = run_bounded(&mut cmd, Duration::from_secs(30), "useradd");
        if out.status.success() || user_exists(LAB_OS_USER) {
            return;
        }
        if attempt == 9 {
            panic!(
                "could not create the system user {LAB_OS_USER} for PostgreSQL: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // useradd fails while another process holds the passwd lock.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn user_exists(user: &str) -> bool {
    let mut cmd = Command::new("id");
    cmd.arg("-u").arg(user);
    run_bounded(&mut cmd, Duration::from_secs(10), "id")
        .status
        .success()
}

pub(crate) fn os_user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let mut cmd = Command::new("id");
        cmd.arg(flag).arg(user);
        let out = run_ok(&mut cmd, Duration::from_secs(10), "id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("id {flag} {user} printed no number: {e}"))
    };
    (id("-u"), id("-g"))
}

/// The server certificate a cluster starts with.
enum Tls {
    /// Self-signed, for `localhost`.
    SelfSigned,
    /// Self-signed, for `localhost`, with a key on this curve (an OpenSSL name).
    SelfSignedOn(String),
    /// For this name, signed by a test CA.
    CaSigned(String),
}

/// A test CA in `dir` (`ca.pem`, `ca.key`) and, in the data directory, `server.crt` for
/// `name` (subjectAltName DNS) signed by it, with its `server.key`.
fn make_ca_signed_certificate(dir: &Path, data_dir: &Path, name: &str, run_as: Option<&str>) {
    let (crt, key) = (data_dir.join("server.crt"), data_dir.join("server.key"));
    crate::tls::ca_signed(dir, &crt, &key, name, run_as);
}

/// A self-signed certificate for `localhost` and its key as `server.crt` and `server.key` in
/// the data directory, owned by the server's user.
fn make_server_certificate(data_dir: &Path, run_as: Option<&str>) {
    let (crt, key) = (data_dir.join("server.crt"), data_dir.join("server.key"));
    crate::tls::self_signed(
        &crt,
        &key,
        run_as,
        "openssl req (a certificate for PostgreSQL)",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_customers_matches_psql_unaligned_output() {
        assert_eq!(
            expected_customers(),
            "1|Ada Lovelace\n2|Grace Hopper\n3|Alan Turing"
        );
    }
}
