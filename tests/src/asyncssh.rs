//! An AsyncSSH server (Python, from PyPI) on a loopback port: the lab's third SSH server
//! implementation, next to OpenSSH's [`Sshd`](crate::sshd::Sshd) and
//! [`Dropbear`](crate::dropbear::Dropbear).
//!
//! The server is the small script `tests/lab/asyncssh_server.py`, built into this crate and
//! written to the server's temp dir. It listens on 127.0.0.1 on a port the kernel picks (so no
//! port can be taken from under it) and prints that port once it accepts connections. It logs
//! in one user, [`LAB_USER`], by public key only (AsyncSSH's users are its own, not the
//! system's), and opens `direct-tcpip` channels to wherever the client asks; nothing else.
//! It logs at AsyncSSH's full debug level, so its log shows each service and authentication
//! request it took.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::keys::{KeyFormat, KeyKind, UserKey, fingerprint_of, generate_key_file};
use crate::process::{LabChild, file_tail, require_program, run_ok, wait_until};
use crate::sshd::known_hosts_line;

/// The only user the server lets in.
pub const LAB_USER: &str = "lab";

/// How long the interpreter may take to import AsyncSSH and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the script prints once it listens, followed by the port.
const LISTENING: &str = "listening on 127.0.0.1:";

const SCRIPT: &str = include_str!("../lab/asyncssh_server.py");

const HOW_TO_INSTALL: &str =
    "install it with `python3 -m pip install asyncssh` (scripts/test does this)";

/// The `python3` that runs the server.
pub fn python3_binary() -> PathBuf {
    require_program("python3", &["/usr/bin"], HOW_TO_INSTALL)
}

/// AsyncSSH's version (`2.24.1`), for test reports; fails the test if it is not installed.
pub fn asyncssh_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut cmd = Command::new(python3_binary());
        cmd.args(["-c", "import asyncssh; print(asyncssh.__version__)"]);
        let out = run_ok(&mut cmd, Duration::from_secs(30), HOW_TO_INSTALL);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// A running AsyncSSH server on 127.0.0.1 with a fresh Ed25519 host key, killed on drop.
#[derive(Debug)]
pub struct AsyncSsh {
    // Declared first so it is dropped (killed) before the temp dir is removed.
    _process: LabChild,
    dir: TempDir,
    port: u16,
    host_key_line: String,
    host_key_fingerprint: String,
    log_path: PathBuf,
    known_hosts_path: PathBuf,
}

impl AsyncSsh {
    /// A server that lets [`LAB_USER`] in with `key`.
    pub fn start(key: &UserKey) -> AsyncSsh {
        let python = python3_binary();
        // Fails with the install hint rather than with a traceback in the server log.
        asyncssh_version();
        let dir = tempfile::Builder::new()
            .prefix("lab-asyncssh-")
            .tempdir()
            .expect("create a temp dir for asyncssh");
        let host_key = dir.path().join("ssh_host_ed25519_key");
        generate_key_file(
            KeyKind::Ed25519,
            KeyFormat::OpenSsh,
            None,
            "lab-host-key",
            &host_key,
        );
        let host_pub = host_key.with_extension("pub");
        let host_key_line = fs::read_to_string(&host_pub)
            .expect("read the host public key")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let authorized_keys = dir.path().join("authorized_keys");
        fs::write(&authorized_keys, format!("{}\n", key.public_key_line()))
            .expect("write authorized_keys");
        let script = dir.path().join("asyncssh_server.py");
        fs::write(&script, SCRIPT).expect("write the server script");
        let log_path = dir.path().join("asyncssh.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the asyncssh log");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg(&host_key)
            .arg(&authorized_keys)
            .arg(LAB_USER)
            .stdout(Stdio::null())
            .stderr(log);
        let mut process = LabChild::spawn("asyncssh", &mut cmd);
        // On timeout the panic drops (kills) the child.
        let port = wait_until(
            START_TIMEOUT,
            "the asyncssh server listens",
            || {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                if let Some(port) = log
                    .lines()
                    .find_map(|l| l.strip_prefix(LISTENING)?.trim().parse::<u16>().ok())
                {
                    return Some(Ok(port));
                }
                process.exited().map(Err)
            },
            || format!("asyncssh log ends with:\n{}", file_tail(&log_path, 30)),
        )
        .unwrap_or_else(|status| {
            panic!(
                "the asyncssh server exited during startup ({status}); its log ends with:\n{}",
                file_tail(&log_path, 30)
            )
        });
        let known_hosts_path = dir.path().join("known_hosts");
        fs::write(
            &known_hosts_path,
            known_hosts_line("127.0.0.1", port, &host_key_line) + "\n",
        )
        .expect("write known_hosts");
        AsyncSsh {
            _process: process,
            host_key_fingerprint: fingerprint_of(&host_pub),
            dir,
            port,
            host_key_line,
            log_path,
            known_hosts_path,
        }
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user the server lets in: [`LAB_USER`].
    pub fn user(&self) -> &'static str {
        LAB_USER
    }

    /// The host key's `keytype base64`.
    pub fn host_key_line(&self) -> &str {
        &self.host_key_line
    }

    /// The host key's `SHA256:...` fingerprint.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    /// A known_hosts file listing the host key for `[127.0.0.1]:PORT`.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts_path
    }

    /// The log so far (AsyncSSH's debug log; the script's own lines among it).
    pub fn log(&self) -> String {
        crate::process::read_log(&self.log_path)
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_path, lines)
    }

    /// Waits until the log contains `needle` and returns the whole log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        crate::process::wait_for_log_text(&self.log_path, "asyncssh", needle, timeout, 30)
    }

    /// The temp dir holding the script, keys, known_hosts and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
