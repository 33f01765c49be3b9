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

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::keys::{CertAuthority, KeyKind, UserKey};
use crate::lab_server::{HostKey, LabServer, START_TIMEOUT, log_methods};
use crate::process::{require_program, run_ok, wait_until};

/// The only user the server lets in.
pub const LAB_USER: &str = "lab";

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
    lab: LabServer,
}

impl AsyncSsh {
    /// A server that lets [`LAB_USER`] in with `key`.
    pub fn start(key: &UserKey) -> AsyncSsh {
        Self::start_with(key, None)
    }

    /// A server that lets [`LAB_USER`] in with `key` and presents, besides its host key, a
    /// host certificate of it signed by `ca` for `principals` (AsyncSSH loads the
    /// `-cert.pub` beside a host key file, and offers the certificate algorithm first).
    pub fn start_certified(key: &UserKey, ca: &CertAuthority, principals: &str) -> AsyncSsh {
        Self::start_with(key, Some((ca, principals)))
    }

    fn start_with(key: &UserKey, certified_by: Option<(&CertAuthority, &str)>) -> AsyncSsh {
        let python = python3_binary();
        // Fails with the install hint rather than with a traceback in the server log.
        asyncssh_version();
        let mut lab = LabServer::new("asyncssh", b"SSH-2.0-");
        let dir = lab.dir().to_path_buf();
        let host_key =
            HostKey::generate_openssh(KeyKind::Ed25519, dir.join("ssh_host_ed25519_key"));
        if let Some((ca, principals)) = certified_by {
            let public = host_key.private_key_path().with_extension("pub");
            ca.certify(&public, "lab-asyncssh", principals, &["-h"]);
        }
        let authorized_keys = dir.join("authorized_keys");
        fs::write(&authorized_keys, format!("{}\n", key.public_key_line()))
            .expect("write authorized_keys");
        let script = dir.join("asyncssh_server.py");
        fs::write(&script, SCRIPT).expect("write the server script");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg(host_key.private_key_path())
            .arg(&authorized_keys)
            .arg(LAB_USER);
        let mut process = lab.spawn(&mut cmd);
        // The script binds port 0 and prints the port the kernel chose, so no other process
        // can take it first. On timeout the panic drops (kills) the child.
        let port = wait_until(
            START_TIMEOUT,
            "the asyncssh server listens",
            || {
                if let Some(port) = lab
                    .log()
                    .lines()
                    .find_map(|l| l.strip_prefix(LISTENING)?.trim().parse::<u16>().ok())
                {
                    return Some(Ok(port));
                }
                process.exited().map(Err)
            },
            || format!("asyncssh log ends with:\n{}", lab.log_tail(30)),
        )
        .unwrap_or_else(|status| {
            panic!(
                "the asyncssh server exited during startup ({status}); its log ends with:\n{}",
                lab.log_tail(30)
            )
        });
        lab.adopt(process);
        lab.set_port(port);
        lab.set_host_keys(vec![host_key]);
        lab.write_known_hosts();
        AsyncSsh { lab }
    }

    log_methods!();

    /// The user the server lets in: [`LAB_USER`].
    pub fn user(&self) -> &'static str {
        LAB_USER
    }

    /// The host key's `keytype base64`.
    pub fn host_key_line(&self) -> &str {
        self.host_key().public_line()
    }

    /// The host key's `SHA256:...` fingerprint.
    pub fn host_key_fingerprint(&self) -> &str {
        self.host_key().fingerprint()
    }

    fn host_key(&self) -> &HostKey {
        &self.lab.host_keys()[0]
    }
}
