//! A real OpenSSH `sshd` on a loopback port, configured from scratch in a temp dir.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::keys::{KeyFormat, KeyKind, UserKey, fingerprint_of, generate_key_file};
use crate::net::{self, free_port};
use crate::process::{
    LabChild, children_of, current_user, file_tail, is_root, kill_tree, wait_until,
};

/// How long sshd may take to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a start is retried when another process took the chosen port first.
const PORT_ATTEMPTS: usize = 5;

/// Where Debian and source installs put sshd; it must be run by absolute path because it
/// re-executes itself for every connection.
const SSHD_LOCATIONS: [&str; 2] = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"];

/// The absolute path of the sshd binary.
pub fn sshd_binary() -> PathBuf {
    SSHD_LOCATIONS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| crate::process::find_program("sshd", &[]))
        .unwrap_or_else(|| {
            panic!(
                "sshd not found in {SSHD_LOCATIONS:?} or on PATH; install it with \
                 `apt-get update && apt-get install -y openssh-server` (scripts/test does this)"
            )
        })
}

/// The host part of a known_hosts line: `host` for port 22, `[host]:port` otherwise.
pub fn known_hosts_host(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// A known_hosts line for `public_line` (`keytype base64 [comment]`; the comment is dropped).
pub fn known_hosts_line(host: &str, port: u16, public_line: &str) -> String {
    let mut fields = public_line.split_whitespace();
    let key_type = fields.next().unwrap_or("");
    let blob = fields.next().unwrap_or("");
    format!("{} {key_type} {blob}", known_hosts_host(host, port))
}

/// One of sshd's host keys.
#[derive(Clone, Debug)]
pub struct HostKey {
    kind: KeyKind,
    private_key: PathBuf,
    public_line: String,
    fingerprint: String,
}

impl HostKey {
    /// The key's algorithm and size.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key type name (`ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, ...).
    pub fn key_type(&self) -> &str {
        self.public_line.split_whitespace().next().unwrap_or("")
    }

    /// The base64 public key blob.
    pub fn base64(&self) -> &str {
        self.public_line.split_whitespace().nth(1).unwrap_or("")
    }

    /// `keytype base64`, without a comment.
    pub fn public_line(&self) -> &str {
        &self.public_line
    }

    /// `SHA256:...`, as `ssh-keygen -l` and `ssh -v` print it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The private key file sshd reads.
    pub fn private_key_path(&self) -> &Path {
        &self.private_key
    }

    /// `[host]:port keytype base64` (plain `host` for port 22).
    pub fn known_hosts_line(&self, host: &str, port: u16) -> String {
        known_hosts_line(host, port, &self.public_line)
    }
}

/// Configures an [`Sshd`]. Start from [`Sshd::builder`].
#[derive(Clone, Debug)]
pub struct SshdBuilder {
    host_keys: Vec<KeyKind>,
    authorized_keys: Vec<String>,
    extra: Vec<String>,
    port: Option<u16>,
}

impl SshdBuilder {
    /// Which host keys to generate and list as `HostKey` lines, in that order (default:
    /// [`KeyKind::DEFAULT_HOST_KEYS`]).
    pub fn host_keys(mut self, kinds: &[KeyKind]) -> Self {
        self.host_keys = kinds.to_vec();
        self
    }

    /// Authorizes a user key.
    pub fn authorize(self, key: &UserKey) -> Self {
        self.authorized_key_line(key.public_key_line())
    }

    /// Adds a raw `authorized_keys` line, which may carry options such as
    /// `permitopen="127.0.0.1:5432" ssh-ed25519 AAAA...`.
    pub fn authorized_key_line(mut self, line: impl Into<String>) -> Self {
        self.authorized_keys.push(line.into());
        self
    }

    /// Adds an `sshd_config` line (`RekeyLimit 1M`, `ClientAliveInterval 1`,
    /// `PermitOpen 127.0.0.1:5432`, `AllowTcpForwarding no`, `Ciphers ...`, `LogLevel DEBUG3`).
    ///
    /// sshd keeps the first value it reads for a keyword, so these lines go before the lab's
    /// defaults and override them. A `Match` line and everything added after it go at the
    /// end of the file, where sshd requires `Match` blocks to be.
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Generates the keys and config, starts sshd and waits until it answers with its
    /// version banner.
    pub fn start(self) -> Sshd {
        Sshd::start_from(self)
    }
}

/// A running `sshd -D -e` on 127.0.0.1, killed (with its session processes) on drop.
///
/// The login user is whoever runs the tests. As root, sshd runs privileged with
/// `PermitRootLogin prohibit-password`; as another user it runs unprivileged and only lets
/// that user in.
#[derive(Debug)]
pub struct Sshd {
    // Declared first so it is dropped (killed) before the temp dir is removed.
    process: Option<LabChild>,
    dir: TempDir,
    binary: PathBuf,
    port: u16,
    user: String,
    host_keys: Vec<HostKey>,
    config_path: PathBuf,
    log_path: PathBuf,
    authorized_keys_path: PathBuf,
    known_hosts_path: PathBuf,
    config_head: Vec<String>,
    config_tail: Vec<String>,
}

impl Sshd {
    /// A builder with the default host keys, no authorized keys and no extra config.
    pub fn builder() -> SshdBuilder {
        SshdBuilder {
            host_keys: KeyKind::DEFAULT_HOST_KEYS.to_vec(),
            authorized_keys: Vec::new(),
            extra: Vec::new(),
            port: None,
        }
    }

    /// sshd with the default host keys that lets `key` in.
    pub fn start(key: &UserKey) -> Sshd {
        Sshd::builder().authorize(key).start()
    }

    fn start_from(builder: SshdBuilder) -> Sshd {
        let binary = sshd_binary();
        let user = current_user().to_owned();
        if is_root() {
            prepare_root_login(&user);
        }
        let dir = tempfile::Builder::new()
            .prefix("lab-sshd-")
            .tempdir()
            .expect("create a temp dir for sshd");
        let host_keys = builder
            .host_keys
            .iter()
            .map(|&kind| generate_host_key(dir.path(), kind))
            .collect();
        let authorized_keys_path = dir.path().join("authorized_keys");
        let mut authorized = builder.authorized_keys.join("\n");
        authorized.push('\n');
        fs::write(&authorized_keys_path, authorized).expect("write authorized_keys");

        let split = builder
            .extra
            .iter()
            .position(|l| l.trim_start().to_ascii_lowercase().starts_with("match "))
            .unwrap_or(builder.extra.len());
        let (head, tail) = builder.extra.split_at(split);
        let mut sshd = Sshd {
            process: None,
            config_path: dir.path().join("sshd_config"),
            log_path: dir.path().join("sshd.log"),
            known_hosts_path: dir.path().join("known_hosts"),
            authorized_keys_path,
            dir,
            binary,
            port: builder.port.unwrap_or_else(free_port),
            user,
            host_keys,
            config_head: head.to_vec(),
            config_tail: tail.to_vec(),
        };
        let fixed_port = builder.port.is_some();
        for attempt in 1..=PORT_ATTEMPTS {
            match sshd.launch() {
                Ok(()) => return sshd,
                Err(log) if !fixed_port && attempt < PORT_ATTEMPTS && port_taken(&log) => {
                    sshd.port = free_port();
                }
                Err(log) => panic!(
                    "sshd exited during startup (config {}); its log ends with:\n{log}",
                    sshd.config_path.display()
                ),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// Writes the config and known_hosts for the current port, starts sshd and waits until it
    /// greets. `Err` carries the log tail when sshd exited before it was ready.
    fn launch(&mut self) -> Result<(), String> {
        fs::write(&self.config_path, self.render_config()).expect("write sshd_config");
        fs::write(&self.known_hosts_path, self.known_hosts()).expect("write known_hosts");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the sshd log");
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-D", "-e", "-f"])
            .arg(&self.config_path)
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = LabChild::spawn("sshd", &mut cmd);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if child.exited().is_some() {
                return Err(file_tail(&self.log_path, 30));
            }
            if greets(self.port) {
                self.process = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                drop(child);
                panic!(
                    "sshd on 127.0.0.1:{} did not greet within {START_TIMEOUT:?}; its log ends with:\n{}",
                    self.port,
                    file_tail(&self.log_path, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn render_config(&self) -> String {
        let dir = self.dir.path();
        let mut c = String::from("# Written by the test lab: a throwaway sshd on loopback.\n");
        for line in &self.config_head {
            let _ = writeln!(c, "{line}");
        }
        let _ = writeln!(c, "Port {}", self.port);
        let _ = writeln!(c, "ListenAddress 127.0.0.1");
        for key in &self.host_keys {
            let _ = writeln!(c, "HostKey {}", key.private_key.display());
        }
        let _ = writeln!(c, "PidFile {}", dir.join("sshd.pid").display());
        let _ = writeln!(
            c,
            "AuthorizedKeysFile {}",
            self.authorized_keys_path.display()
        );
        // The temp dir and key files are not laid out the way StrictModes demands.
        c.push_str(
            "StrictModes no\n\
             UsePAM no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             HostbasedAuthentication no\n\
             X11Forwarding no\n\
             PrintMotd no\n\
             LogLevel DEBUG1\n\
             MaxStartups 100:30:200\n",
        );
        if self.user == "root" {
            c.push_str("PermitRootLogin prohibit-password\n");
        }
        for line in &self.config_tail {
            let _ = writeln!(c, "{line}");
        }
        c
    }

    /// The port sshd listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to connect to.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The user sshd lets in (the user running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// `user@127.0.0.1`, the destination argument for an ssh client.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host())
    }

    /// The host keys, in `HostKey` line order.
    pub fn host_keys(&self) -> &[HostKey] {
        &self.host_keys
    }

    /// The host key of the given kind, if sshd has one.
    pub fn host_key(&self, kind: KeyKind) -> Option<&HostKey> {
        self.host_keys.iter().find(|k| k.kind == kind)
    }

    /// known_hosts lines (`[127.0.0.1]:PORT keytype base64`) for all host keys.
    pub fn known_hosts(&self) -> String {
        self.host_keys
            .iter()
            .map(|k| k.known_hosts_line(self.host(), self.port) + "\n")
            .collect()
    }

    /// A known_hosts file holding [`Sshd::known_hosts`].
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts_path
    }

    /// The generated `sshd_config`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The file sshd's stderr (its log, `-e`) goes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log so far.
    pub fn log(&self) -> String {
        crate::process::read_log(&self.log_path)
    }

    /// The `authorized_keys` file (tests may rewrite it; sshd rereads it per login).
    pub fn authorized_keys_path(&self) -> &Path {
        &self.authorized_keys_path
    }

    /// The temp dir holding config, keys and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The listener's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(LabChild::pid)
    }

    /// Waits until the log contains `needle` and returns the whole log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        crate::process::wait_for_log_text(&self.log_path, "sshd", needle, timeout, 30)
    }

    /// Waits until the part of the log after byte `offset` (a length of [`Sshd::log`] taken
    /// earlier, say before a client started) contains `needle`, and returns that part: the
    /// lines about the connections since then only.
    pub fn wait_for_log_after(&self, offset: usize, needle: &str, timeout: Duration) -> String {
        wait_until(
            timeout,
            &format!("sshd log line containing {needle:?} after byte {offset}"),
            || {
                let log = self.log();
                let since = log.get(offset..).unwrap_or_default();
                since.contains(needle).then(|| since.to_owned())
            },
            || format!("sshd log ends with:\n{}", file_tail(&self.log_path, 30)),
        )
    }

    /// The per-connection sshd processes (one per client session).
    pub fn session_pids(&self) -> Vec<u32> {
        self.pid().map(children_of).unwrap_or_default()
    }

    /// Kills every client session's sshd process, keeping the listener: the clients see
    /// their connection drop as if the network failed. Returns how many were killed.
    pub fn kill_sessions(&self) -> usize {
        let sessions = self.session_pids();
        for &pid in &sessions {
            kill_tree(pid);
        }
        sessions.len()
    }

    /// Kills sshd and all its sessions.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Whether the listener is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// Stops sshd if it runs and starts it again on the same port with the same host keys.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!(
                "sshd did not restart on 127.0.0.1:{}; its log ends with:\n{log}",
                self.port
            );
        }
    }

    /// Stops sshd (and its sessions), adds `line` to its configuration (before any `Match`
    /// block) and starts it again on the same port: a bastion whose administrator changed a
    /// setting.
    pub fn restart_with_config_line(&mut self, line: &str) {
        self.config_head.push(line.to_owned());
        self.restart();
    }

    /// Stops sshd (the listener and every session: the clients see their connections
    /// drop) if it runs, generates new host keys of the same kinds, and starts it again on
    /// the same port with them, as a reinstalled or impersonated server would be. Returns
    /// the new keys. [`Sshd::known_hosts_path`] is rewritten to list the new keys, so a
    /// client that should still know the old ones needs its own copy, taken before.
    pub fn restart_with_new_host_keys(&mut self) -> Vec<HostKey> {
        self.stop();
        let dir = self.dir.path().to_path_buf();
        self.host_keys = self
            .host_keys
            .iter()
            .map(|old| {
                let mut generation = 2;
                let path = loop {
                    let candidate =
                        dir.join(format!("ssh_host_{}_key_{generation}", old.kind.label()));
                    if !candidate.exists() {
                        break candidate;
                    }
                    generation += 1;
                };
                generate_host_key_at(old.kind, path)
            })
            .collect();
        if let Err(log) = self.launch() {
            panic!(
                "sshd did not restart with new host keys on 127.0.0.1:{}; its log ends with:\n{log}",
                self.port
            );
        }
        self.host_keys.clone()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn generate_host_key(dir: &Path, kind: KeyKind) -> HostKey {
    generate_host_key_at(kind, dir.join(format!("ssh_host_{}_key", kind.label())))
}

fn generate_host_key_at(kind: KeyKind, private_key: PathBuf) -> HostKey {
    generate_key_file(kind, KeyFormat::OpenSsh, None, "lab-host-key", &private_key);
    let public_path = private_key.with_extension("pub");
    let public = fs::read_to_string(&public_path).expect("read a host public key");
    let public_line = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    HostKey {
        kind,
        fingerprint: fingerprint_of(&public_path),
        private_key,
        public_line,
    }
}

/// As root, sshd needs its privilege separation directory, and (without PAM) refuses users
/// whose password field is locked with `!`.
fn prepare_root_login(user: &str) {
    let privsep = Path::new("/run/sshd");
    if !privsep.is_dir() {
        fs::create_dir_all(privsep).expect("create /run/sshd");
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(privsep, fs::Permissions::from_mode(0o755));
    }
    if let Ok(shadow) = fs::read_to_string("/etc/shadow") {
        let field = shadow
            .lines()
            .find_map(|l| l.strip_prefix(user)?.strip_prefix(':'))
            .and_then(|rest| rest.split(':').next());
        if field.is_some_and(|f| f.starts_with('!')) {
            panic!(
                "sshd (UsePAM no) refuses logins to {user} because its password is locked \
                 ('!' in /etc/shadow); allow key logins with `usermod -p '*' {user}`"
            );
        }
    }
}

fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
}

/// Whether 127.0.0.1:`port` answers with an SSH version line.
fn greets(port: u16) -> bool {
    let Ok(mut stream) = net::connect(port) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut banner = [0u8; 8];
    stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_lines_bracket_non_default_ports() {
        let line = "ssh-ed25519 AAAAC3Nza comment here";
        assert_eq!(
            known_hosts_line("127.0.0.1", 2222, line),
            "[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nza"
        );
        assert_eq!(
            known_hosts_line("bastion", 22, line),
            "bastion ssh-ed25519 AAAAC3Nza"
        );
    }
}
