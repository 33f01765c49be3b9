//! What the lab's SSH servers ([`Sshd`](crate::sshd::Sshd),
//! [`Dropbear`](crate::dropbear::Dropbear), [`AsyncSsh`](crate::asyncssh::AsyncSsh)) share:
//! a temp dir, host keys, a known_hosts file for them, a log file the server's stderr goes to,
//! and the server process, killed (with everything it forked) on drop.
//!
//! [`LabServer`] holds those; a server that picks its own port ([`Listener`]) also gets the
//! start on a free port, retried when another process took the port first, and the bounded
//! wait for the version banner. The public accessors each server offers are written once, in
//! [`log_methods!`] (every server) and [`listener_methods!`] (the [`Listener`]s).

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::keys::{KeyFormat, KeyKind, fingerprint_of, generate_key_file};
use crate::net::{self, free_port};
use crate::process::{LabChild, children_of, file_tail, kill_tree, wait_until};

/// How long a server may take to accept connections after it is started.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a start is retried when another process took the chosen port first.
const PORT_ATTEMPTS: usize = 5;
/// How many log lines failure messages quote.
const TAIL_LINES: usize = 30;

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

/// One of a lab server's host keys.
#[derive(Clone, Debug)]
pub struct HostKey {
    kind: KeyKind,
    private_key: PathBuf,
    public_line: String,
    fingerprint: String,
}

impl HostKey {
    /// Generates an OpenSSH-format host key at `private_key` (with `ssh-keygen`).
    pub(crate) fn generate_openssh(kind: KeyKind, private_key: PathBuf) -> HostKey {
        generate_key_file(kind, KeyFormat::OpenSsh, None, "lab-host-key", &private_key);
        HostKey::read(kind, private_key)
    }

    /// The host key whose public half is in the `.pub` file next to `private_key`.
    pub(crate) fn read(kind: KeyKind, private_key: PathBuf) -> HostKey {
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

    /// The private key file the server reads (OpenSSH's format for sshd and AsyncSSH,
    /// Dropbear's own for Dropbear's `-r`).
    pub fn private_key_path(&self) -> &Path {
        &self.private_key
    }

    /// `[host]:port keytype base64` (plain `host` for port 22).
    pub fn known_hosts_line(&self, host: &str, port: u16) -> String {
        known_hosts_line(host, port, &self.public_line)
    }
}

/// The parts every lab SSH server has. Dropping it kills the server before the temp dir goes.
#[derive(Debug)]
pub(crate) struct LabServer {
    // Declared first so it is dropped (killed) before the temp dir is removed.
    process: Option<LabChild>,
    dir: TempDir,
    /// The server's name in messages: `sshd`, `dropbear`, `asyncssh`.
    name: &'static str,
    /// What the server's version line starts with, once it accepts connections.
    banner: &'static [u8],
    port: u16,
    host_keys: Vec<HostKey>,
    log_path: PathBuf,
    known_hosts_path: PathBuf,
}

impl LabServer {
    /// A fresh temp dir `lab-NAME-*` for a server that logs to `NAME.log` in it. No host keys,
    /// no port and no process yet.
    pub(crate) fn new(name: &'static str, banner: &'static [u8]) -> LabServer {
        let dir = tempfile::Builder::new()
            .prefix(&format!("lab-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temp dir for {name}: {e}"));
        LabServer {
            process: None,
            log_path: dir.path().join(format!("{name}.log")),
            known_hosts_path: dir.path().join("known_hosts"),
            dir,
            name,
            banner,
            port: 0,
            host_keys: Vec::new(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    pub(crate) fn host_keys(&self) -> &[HostKey] {
        &self.host_keys
    }

    pub(crate) fn set_host_keys(&mut self, keys: Vec<HostKey>) {
        self.host_keys = keys;
    }

    pub(crate) fn host_key(&self, kind: KeyKind) -> Option<&HostKey> {
        self.host_keys.iter().find(|k| k.kind == kind)
    }

    /// known_hosts lines (`[127.0.0.1]:PORT keytype base64`) for all host keys.
    pub(crate) fn known_hosts(&self) -> String {
        self.host_keys
            .iter()
            .map(|k| k.known_hosts_line(self.host(), self.port) + "\n")
            .collect()
    }

    pub(crate) fn known_hosts_path(&self) -> &Path {
        &self.known_hosts_path
    }

    /// Writes [`LabServer::known_hosts`] (for the current port) to its file.
    pub(crate) fn write_known_hosts(&self) {
        fs::write(&self.known_hosts_path, self.known_hosts()).expect("write known_hosts");
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn log(&self) -> String {
        crate::process::read_log(&self.log_path)
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_path, lines)
    }

    pub(crate) fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        crate::process::wait_for_log_text(&self.log_path, self.name, needle, timeout, TAIL_LINES)
    }

    pub(crate) fn wait_for_log_after(
        &self,
        offset: usize,
        needle: &str,
        timeout: Duration,
    ) -> String {
        wait_until(
            timeout,
            &format!(
                "{} log line containing {needle:?} after byte {offset}",
                self.name
            ),
            || {
                let log = self.log();
                let since = log.get(offset..).unwrap_or_default();
                since.contains(needle).then(|| since.to_owned())
            },
            || {
                format!(
                    "{} log ends with:\n{}",
                    self.name,
                    self.log_tail(TAIL_LINES)
                )
            },
        )
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(LabChild::pid)
    }

    pub(crate) fn session_pids(&self) -> Vec<u32> {
        self.pid().map(children_of).unwrap_or_default()
    }

    pub(crate) fn kill_sessions(&self) -> usize {
        let sessions = self.session_pids();
        for &pid in &sessions {
            kill_tree(pid);
        }
        sessions.len()
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// Starts `cmd` with stdout discarded and stderr appended to the log. The server is not
    /// this one's process until [`LabServer::adopt`]; until then dropping it kills it.
    pub(crate) fn spawn(&self, cmd: &mut Command) -> LabChild {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("open the {} log: {e}", self.name));
        cmd.stdout(Stdio::null()).stderr(log);
        LabChild::spawn(self.name, cmd)
    }

    /// Makes `child` the server process, killed by [`LabServer::stop`] and on drop.
    pub(crate) fn adopt(&mut self, child: LabChild) {
        self.process = Some(child);
    }

    /// Writes known_hosts for the current port, starts `cmd` and waits (at most
    /// [`START_TIMEOUT`], else the test fails) until 127.0.0.1:PORT answers with the banner.
    /// `Err` carries the log tail when the server exited before it was ready.
    fn launch(&mut self, mut cmd: Command) -> Result<(), String> {
        self.write_known_hosts();
        let mut child = self.spawn(&mut cmd);
        // On timeout the panic drops (kills) the child.
        let ready = wait_until(
            START_TIMEOUT,
            &format!("{} greets on 127.0.0.1:{}", self.name, self.port),
            || match child.exited() {
                Some(_) => Some(false),
                None => greets(self.port, self.banner).then_some(true),
            },
            || {
                format!(
                    "{} log ends with:\n{}",
                    self.name,
                    self.log_tail(TAIL_LINES)
                )
            },
        );
        if !ready {
            return Err(self.log_tail(TAIL_LINES));
        }
        self.adopt(child);
        Ok(())
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A lab server started from a command line on a port the lab chooses (sshd, Dropbear).
pub(crate) trait Listener {
    fn lab(&self) -> &LabServer;

    fn lab_mut(&mut self) -> &mut LabServer;

    /// The command that runs the server on the current port, after writing whatever config
    /// file it reads.
    fn prepare(&self) -> Command;

    /// What a failed start names besides the log: the config file or the command line.
    fn describe(&self) -> String;

    /// Writes the files, starts the server and waits until it greets.
    fn launch(&mut self) -> Result<(), String> {
        let cmd = self.prepare();
        self.lab_mut().launch(cmd)
    }

    /// Starts the server on `port`, or on a free port, chosen again (up to [`PORT_ATTEMPTS`]
    /// times) when another process took it first. Fails the test if the server exits.
    fn start_on(&mut self, port: Option<u16>) {
        self.lab_mut().set_port(port.unwrap_or_else(free_port));
        for attempt in 1..=PORT_ATTEMPTS {
            match self.launch() {
                Ok(()) => return,
                Err(log) if port.is_none() && attempt < PORT_ATTEMPTS && port_taken(&log) => {
                    self.lab_mut().set_port(free_port());
                }
                Err(log) => panic!(
                    "{} exited during startup ({}); its log ends with:\n{log}",
                    self.lab().name,
                    self.describe()
                ),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// Starts the stopped server again on the same port; `what` says how, for the failure
    /// message (`restart`, `restart with new host keys`).
    fn relaunch(&mut self, what: &str) {
        if let Err(log) = self.launch() {
            panic!(
                "{} did not {what} on 127.0.0.1:{}; its log ends with:\n{log}",
                self.lab().name,
                self.lab().port
            );
        }
    }
}

fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
}

/// Whether 127.0.0.1:`port` answers with a version line starting with `banner`.
fn greets(port: u16, banner: &[u8]) -> bool {
    let mut got = vec![0u8; banner.len()];
    net::connect(port)
        .and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.read_exact(&mut got)
        })
        .is_ok_and(|()| got == banner)
}

/// The public methods every lab SSH server has, for an `impl` block of a type whose `lab`
/// field is its [`LabServer`].
macro_rules! log_methods {
    () => {
        /// The port the server listens on (127.0.0.1).
        pub fn port(&self) -> u16 {
            self.lab.port()
        }

        /// A known_hosts file listing the host keys for `[127.0.0.1]:PORT`.
        pub fn known_hosts_path(&self) -> &std::path::Path {
            self.lab.known_hosts_path()
        }

        /// The log so far (the server's stderr).
        pub fn log(&self) -> String {
            self.lab.log()
        }

        /// The last `lines` lines of the log, for failure messages.
        pub fn log_tail(&self, lines: usize) -> String {
            self.lab.log_tail(lines)
        }

        /// Waits until the log contains `needle` and returns the whole log.
        pub fn wait_for_log(&self, needle: &str, timeout: std::time::Duration) -> String {
            self.lab.wait_for_log(needle, timeout)
        }

        /// The temp dir holding the server's keys, files and log.
        pub fn dir(&self) -> &std::path::Path {
            self.lab.dir()
        }
    };
}
pub(crate) use log_methods;

/// The public methods of a [`Listener`] (besides [`log_methods!`]), for an `impl` block of a
/// type whose `lab` field is its [`LabServer`] and that has a `user()`.
macro_rules! listener_methods {
    () => {
        /// The address to connect to.
        pub fn host(&self) -> &'static str {
            self.lab.host()
        }

        /// `user@127.0.0.1`, the destination argument for an ssh client.
        pub fn destination(&self) -> String {
            format!("{}@{}", self.user(), self.host())
        }

        /// The host keys, in the order the server is given them.
        pub fn host_keys(&self) -> &[$crate::lab_server::HostKey] {
            self.lab.host_keys()
        }

        /// The host key of the given kind, if the server has one.
        pub fn host_key(
            &self,
            kind: $crate::keys::KeyKind,
        ) -> Option<&$crate::lab_server::HostKey> {
            self.lab.host_key(kind)
        }

        /// known_hosts lines (`[127.0.0.1]:PORT keytype base64`) for all host keys.
        pub fn known_hosts(&self) -> String {
            self.lab.known_hosts()
        }

        /// The file the server's stderr (its log) goes to.
        pub fn log_path(&self) -> &std::path::Path {
            self.lab.log_path()
        }

        /// Waits until the part of the log after byte `offset` (a length of the log taken
        /// earlier, say before a client started) contains `needle`, and returns that part: the
        /// lines about the connections since then only.
        pub fn wait_for_log_after(
            &self,
            offset: usize,
            needle: &str,
            timeout: std::time::Duration,
        ) -> String {
            self.lab.wait_for_log_after(offset, needle, timeout)
        }

        /// The listener's process id, while it runs.
        pub fn pid(&self) -> Option<u32> {
            self.lab.pid()
        }

        /// The per-connection server processes (one per client connection).
        pub fn session_pids(&self) -> Vec<u32> {
            self.lab.session_pids()
        }

        /// Kills every client connection's server process, keeping the listener: the clients
        /// see their connection drop as if the network failed. Returns how many were killed.
        pub fn kill_sessions(&self) -> usize {
            self.lab.kill_sessions()
        }

        /// Kills the server and all its sessions.
        pub fn stop(&mut self) {
            self.lab.stop();
        }

        /// Whether the listener is running.
        pub fn is_running(&mut self) -> bool {
            self.lab.is_running()
        }

        /// Stops the server if it runs and starts it again on the same port with the same
        /// host keys.
        pub fn restart(&mut self) {
            self.lab.stop();
            $crate::lab_server::Listener::relaunch(self, "restart");
        }
    };
}
pub(crate) use listener_methods;

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
