//! A real OpenSSH `sshd` on a loopback port, configured from scratch in a temp dir.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::keys::{KeyKind, UserKey};
use crate::lab_server::{LabServer, Listener, listener_methods, log_methods};
use crate::process::{current_user, is_root};

pub use crate::lab_server::{HostKey, known_hosts_host, known_hosts_line};

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
    lab: LabServer,
    binary: PathBuf,
    user: String,
    config_path: PathBuf,
    authorized_keys_path: PathBuf,
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
        let mut lab = LabServer::new("sshd", b"SSH-2.0-");
        let dir = lab.dir().to_path_buf();
        lab.set_host_keys(
            builder
                .host_keys
                .iter()
                .map(|&kind| {
                    HostKey::generate_openssh(
                        kind,
                        dir.join(format!("ssh_host_{}_key", kind.label())),
                    )
                })
                .collect(),
        );
        let authorized_keys_path = dir.join("authorized_keys");
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
            lab,
            binary,
            user,
            config_path: dir.join("sshd_config"),
            authorized_keys_path,
            config_head: head.to_vec(),
            config_tail: tail.to_vec(),
        };
        sshd.start_on(builder.port);
        sshd
    }

    fn render_config(&self) -> String {
        let dir = self.lab.dir();
        let mut c = String::from("# Written by the test lab: a throwaway sshd on loopback.\n");
        for line in &self.config_head {
            let _ = writeln!(c, "{line}");
        }
        let _ = writeln!(c, "Port {}", self.lab.port());
        let _ = writeln!(c, "ListenAddress 127.0.0.1");
        for key in self.lab.host_keys() {
            let _ = writeln!(c, "HostKey {}", key.private_key_path().display());
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

    log_methods!();
    listener_methods!();

    /// The user sshd lets in (the user running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The generated `sshd_config`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The `authorized_keys` file (tests may rewrite it; sshd rereads it per login).
    pub fn authorized_keys_path(&self) -> &Path {
        &self.authorized_keys_path
    }

    /// Stops sshd (and its sessions), adds `line` to its configuration (before any `Match`
    /// block) and starts it again on the same port: a bastion whose administrator changed a
    /// setting.
    pub fn restart_with_config_line(&mut self, line: &str) {
        self.config_head.push(line.to_owned());
        self.restart();
    }

    /// Stops sshd (and its sessions) and starts it again on the same port with only its host
    /// keys of `kinds`: a bastion whose administrator retired the others (a key rotation's
    /// last step). [`Sshd::known_hosts_path`] lists the keys kept.
    pub fn restart_keeping_host_keys(&mut self, kinds: &[KeyKind]) {
        self.stop();
        let kept: Vec<HostKey> = self
            .lab
            .host_keys()
            .iter()
            .filter(|k| kinds.contains(&k.kind()))
            .cloned()
            .collect();
        assert!(!kept.is_empty(), "sshd needs a host key");
        self.lab.set_host_keys(kept);
        self.relaunch("restart with fewer host keys");
    }

    /// Stops sshd (the listener and every session: the clients see their connections
    /// drop) if it runs, generates new host keys of the same kinds, and starts it again on
    /// the same port with them, as a reinstalled or impersonated server would be. Returns
    /// the new keys. [`Sshd::known_hosts_path`] is rewritten to list the new keys, so a
    /// client that should still know the old ones needs its own copy, taken before.
    pub fn restart_with_new_host_keys(&mut self) -> Vec<HostKey> {
        self.stop();
        let dir = self.lab.dir().to_path_buf();
        let keys: Vec<HostKey> = self
            .lab
            .host_keys()
            .iter()
            .map(|old| {
                let mut generation = 2;
                let path = loop {
                    let candidate =
                        dir.join(format!("ssh_host_{}_key_{generation}", old.kind().label()));
                    if !candidate.exists() {
                        break candidate;
                    }
                    generation += 1;
                };
                HostKey::generate_openssh(old.kind(), path)
            })
            .collect();
        self.lab.set_host_keys(keys.clone());
        self.relaunch("restart with new host keys");
        keys
    }
}

impl Listener for Sshd {
    fn lab(&self) -> &LabServer {
        &self.lab
    }

    fn lab_mut(&mut self) -> &mut LabServer {
        &mut self.lab
    }

    /// Writes `sshd_config` for the current port; `sshd -D -e -f CONFIG`.
    fn prepare(&self) -> Command {
        fs::write(&self.config_path, self.render_config()).expect("write sshd_config");
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-D", "-e", "-f"]).arg(&self.config_path);
        cmd
    }

    fn describe(&self) -> String {
        format!("config {}", self.config_path.display())
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
