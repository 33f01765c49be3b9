//! SSH clients under test: our `forwarder` and OpenSSH's `ssh`, started with the same
//! `-N -L` command line against a lab [`Sshd`].

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::keys::UserKey;
use crate::net::{free_port, is_socket, port_listening_by};
use crate::process::{self, LabChild, file_tail, find_program};
use crate::sshd::Sshd;

/// How long a client may take from start to listening on all its forwards.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which client program to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// This project's `forwarder` binary.
    Forwarder,
    /// OpenSSH's `ssh`, the reference.
    OpenSsh,
}

impl ClientKind {
    /// Parses `forwarder` or `openssh` (also `ssh`).
    pub fn parse(name: &str) -> Option<ClientKind> {
        match name {
            "forwarder" => Some(ClientKind::Forwarder),
            "openssh" | "ssh" => Some(ClientKind::OpenSsh),
            _ => None,
        }
    }

    /// `forwarder` or `openssh`.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Forwarder => "forwarder",
            ClientKind::OpenSsh => "openssh",
        }
    }

    /// The program to run: see [`forwarder_binary`] and [`openssh_binary`].
    pub fn program(self) -> PathBuf {
        match self {
            ClientKind::Forwarder => forwarder_binary(),
            ClientKind::OpenSsh => openssh_binary(),
        }
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The environment variable cargo and nextest set, when they run this package's integration
/// tests, to the `lab-forwarder` bin: forwarder's own `main.rs` built as part of this package
/// (see `Cargo.toml`), so it is always built and never stale when the tests run.
pub const FORWARDER_UNDER_TEST_ENV: &str = "CARGO_BIN_EXE_lab-forwarder";

/// The `forwarder` binary: `$FORWARDER_BIN` if set; else, in this package's integration tests,
/// the `lab-forwarder` bin cargo built for them ([`FORWARDER_UNDER_TEST_ENV`]); else the
/// `forwarder` cargo built into the same target directory as the running program
/// (`target/<profile>/forwarder`; test binaries live one level down in `deps/`).
pub fn forwarder_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FORWARDER_BIN") {
        return PathBuf::from(path);
    }
    if let Some(path) = std::env::var_os(FORWARDER_UNDER_TEST_ENV) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the running program's path");
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join("forwarder");
        if candidate.is_file() {
            return candidate;
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    panic!(
        "no forwarder binary next to {}; build it (`cargo build -p forwarder`, add --release \
         for release runs) or set FORWARDER_BIN",
        exe.display()
    )
}

/// OpenSSH's `ssh`: `$OPENSSH_BIN` if set, else `ssh` on PATH.
pub fn openssh_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OPENSSH_BIN") {
        return PathBuf::from(path);
    }
    find_program("ssh", &[]).unwrap_or_else(|| {
        panic!(
            "`ssh` not found on PATH; install the OpenSSH client (apt-get install openssh-client; \
             scripts/test does this)"
        )
    })
}

/// What the forwarder logs at `-v` when a key exchange is complete; the line carries
/// `guess=` (see [`kex_guesses`]).
pub const KEX_COMPLETE: &str = "key exchange complete";

/// The `guess=` field of each "key exchange complete" line of a forwarder's `-v` log, in
/// order: `None` (no guess sent), `Some(true)` (the server took it), `Some(false)` (it
/// skipped it), or `(none)` for a line without the field.
pub fn kex_guesses(log: &str) -> Vec<String> {
    kex_complete_field(log, "guess=")
}

/// The `prepared=` field of each "key exchange complete" line of a `-v` log: whether the
/// exchange ran on a first message made ahead of time, or `(none)`.
pub fn kex_prepared(log: &str) -> Vec<String> {
    kex_complete_field(log, "prepared=")
}

fn kex_complete_field(log: &str, field: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(KEX_COMPLETE))
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(field))
                .unwrap_or("(none)")
                .to_owned()
        })
        .collect()
}

/// One `-L` forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Port on 127.0.0.1 the client listens on.
    pub local_port: u16,
    /// Host the server connects to.
    pub host: String,
    /// Port the server connects to.
    pub port: u16,
}

impl Forward {
    /// `127.0.0.1:local:host:port`. The explicit bind address keeps the listener on IPv4
    /// loopback only, so a busy `[::1]` port cannot interfere.
    pub fn spec(&self) -> String {
        format!("127.0.0.1:{}:{}:{}", self.local_port, self.host, self.port)
    }
}

/// Builds the command line of a client and starts it as a [`Tunnel`].
///
/// Both clients get the same arguments: `-N -F none -p PORT -i KEY [-o extra..]
/// -o UserKnownHostsFile=FILE -o GlobalKnownHostsFile=/dev/null
/// -o StrictHostKeyChecking=yes -o BatchMode=yes -o ExitOnForwardFailure=yes
/// [-o Ciphers=..] [-v..] -L 127.0.0.1:LPORT:HOST:HPORT.. user@127.0.0.1`. `-F none` keeps
/// the ssh config of whoever runs the lab (`~/.ssh/config`, which both clients read
/// otherwise) out of every run, and `GlobalKnownHostsFile=/dev/null` this machine's
/// `/etc/ssh/ssh_known_hosts` (which both read otherwise). Both clients keep the first value
/// given for a setting, so the extra options, which come first, override the lab's defaults
/// after them (a test may name a global known_hosts file of its own). OpenSSH also gets
/// `-o IdentitiesOnly=yes -o IdentityAgent=none`, which keep this machine's agent out of the
/// comparison (the forwarder runs without `SSH_AUTH_SOCK` unless a test sets it); they
/// change nothing on the wire.
#[derive(Clone, Debug)]
pub struct TunnelBuilder {
    kind: ClientKind,
    program: Option<PathBuf>,
    port: u16,
    user: String,
    identity: Option<PathBuf>,
    known_hosts: PathBuf,
    forwards: Vec<Forward>,
    /// Ports the client listens on besides its `-L` forwards' (a `-D`'s).
    other_ports: Vec<u16>,
    cipher: Option<String>,
    verbosity: u8,
    options: Vec<String>,
    env: Vec<(String, String)>,
    max_open_files: Option<u64>,
    /// Arguments of the caller's own, before the destination.
    extra_args: Vec<String>,
    /// The key's files, kept on disk for the client's life.
    key_files: Arc<TempDir>,
    /// Runs `forwarder serve` with a fleet file of the forwards ([`TunnelBuilder::as_fleet`]).
    fleet: bool,
}

/// The fleet file of a client run as `forwarder serve`, in its temp dir (the working
/// directory it runs in).
pub const FLEET_FILE: &str = "tunnels.toml";

impl TunnelBuilder {
    /// A client of `kind` for `sshd`, logging in with `key` and trusting sshd's host keys.
    pub fn new(kind: ClientKind, sshd: &Sshd, key: &UserKey) -> TunnelBuilder {
        TunnelBuilder::to_port(kind, sshd.port(), sshd.user(), key, sshd.known_hosts_path())
    }

    /// A client of `kind` for whatever listens on 127.0.0.1:`port` (a scripted or hostile
    /// server rather than a lab [`Sshd`]), as `user` with `key`, trusting `known_hosts`.
    pub fn to_port(
        kind: ClientKind,
        port: u16,
        user: &str,
        key: &UserKey,
        known_hosts: &Path,
    ) -> TunnelBuilder {
        TunnelBuilder {
            kind,
            program: None,
            port,
            user: user.to_owned(),
            identity: Some(key.private_key_path().to_path_buf()),
            known_hosts: known_hosts.to_path_buf(),
            forwards: Vec::new(),
            other_ports: Vec::new(),
            cipher: None,
            verbosity: 0,
            options: Vec::new(),
            env: Vec::new(),
            max_open_files: None,
            extra_args: Vec::new(),
            key_files: key.files(),
            fleet: false,
        }
    }

    /// Adds `-L 127.0.0.1:local_port:host:port`.
    pub fn forward(mut self, local_port: u16, host: &str, port: u16) -> Self {
        self.forwards.push(Forward {
            local_port,
            host: host.to_owned(),
            port,
        });
        self
    }

    /// Adds a forward from a free local port to 127.0.0.1:`port` on the server side.
    pub fn forward_to(self, port: u16) -> Self {
        self.forward(free_port(), "127.0.0.1", port)
    }

    /// Adds `-D 127.0.0.1:port`, a SOCKS proxy that [`TunnelBuilder::start`] waits for.
    pub fn dynamic(self, port: u16) -> Self {
        self.arg("-D")
            .arg(&format!("127.0.0.1:{port}"))
            .listens_on(port)
    }

    /// Makes [`TunnelBuilder::start`] wait for `port` too: a port the client listens on
    /// that no `-L` of the builder names (one given with [`TunnelBuilder::arg`] or
    /// [`TunnelBuilder::option`]).
    pub fn listens_on(mut self, port: u16) -> Self {
        self.other_ports.push(port);
        self
    }

    /// Uses another known_hosts file.
    pub fn known_hosts(mut self, path: &Path) -> Self {
        self.known_hosts = path.to_path_buf();
        self
    }

    /// Uses another identity file.
    pub fn identity(mut self, path: &Path) -> Self {
        self.identity = Some(path.to_path_buf());
        self
    }

    /// Gives no `-i` at all (the client falls back to its defaults under `$HOME/.ssh` and
    /// to the agent).
    pub fn without_identity(mut self) -> Self {
        self.identity = None;
        self
    }

    /// Sets an environment variable for the client (`SSH_AUTH_SOCK`, `HOME`, a password
    /// variable). Without one, the forwarder runs with `SSH_AUTH_SOCK` removed, so that the
    /// agent of whoever runs the tests stays out of them.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env.push((
            key.to_owned(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    /// Logs in as another user.
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }

    /// Offers only this cipher (`-o Ciphers=...`).
    pub fn cipher(mut self, cipher: &str) -> Self {
        self.cipher = Some(cipher.to_owned());
        self
    }

    /// Adds `-v` (repeatable).
    pub fn verbose(mut self) -> Self {
        self.verbosity = self.verbosity.saturating_add(1);
        self
    }

    /// Adds `-o KEY=VALUE` for either client. It goes before the lab's default options, so
    /// it may override them (`StrictHostKeyChecking=accept-new`, `ExitOnForwardFailure=no`).
    pub fn option(mut self, key_value: &str) -> Self {
        self.options.push(key_value.to_owned());
        self
    }

    /// Runs this program instead of the kind's default.
    pub fn program(mut self, path: &Path) -> Self {
        self.program = Some(path.to_path_buf());
        self
    }

    /// Runs the client with at most `n` open file descriptors (soft and hard
    /// `RLIMIT_NOFILE`, as `ulimit -n` sets), through `prlimit --nofile=n:n -- program`.
    /// prlimit execs the client, so [`Tunnel::pid`] is still the client's.
    pub fn max_open_files(mut self, n: u64) -> Self {
        self.max_open_files = Some(n);
        self
    }

    /// The forwards, in `-L` order.
    pub fn forwards(&self) -> &[Forward] {
        &self.forwards
    }

    /// The client's kind.
    pub fn kind(&self) -> ClientKind {
        self.kind
    }

    /// A command-line argument of its own, given just before the destination (`-D`, `1080`).
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Runs the forwarder as `forwarder serve`, the fleet daemon a platform runs, with a fleet
    /// file ([`TunnelBuilder::fleet_file`]) instead of `-L` arguments: one tunnel per forward,
    /// all on one shared session, as one `forwarder -L` with several forwards. `-v` becomes
    /// the daemon's `-v`, with text logs; [`TunnelBuilder::arg`] has no place in the file
    /// and panics the client's start.
    pub fn as_fleet(mut self) -> Self {
        assert_eq!(
            self.kind,
            ClientKind::Forwarder,
            "only forwarder runs a fleet"
        );
        self.fleet = true;
        self
    }

    /// The fleet file [`TunnelBuilder::as_fleet`] runs: `[defaults]` with the user, key,
    /// known_hosts file and the `-o` options the command line would have (the first value
    /// of a key wins, as on the command line; `UserKnownHostsFile`, `BatchMode` and
    /// `ExitOnForwardFailure` are the daemon's own business), then one `[[tunnel]]` per
    /// forward, not probed.
    pub fn fleet_file(&self) -> String {
        let mut s = format!("[defaults]\nuser = {:?}\n", self.user);
        if let Some(identity) = &self.identity {
            s.push_str(&format!(
                "identity_file = {:?}\n",
                identity.display().to_string()
            ));
        }
        s.push_str(&format!(
            "known_hosts = {:?}\n",
            self.known_hosts.display().to_string()
        ));
        let mut seen = Vec::new();
        let mut options = Vec::new();
        let cipher = self.cipher.as_ref().map(|c| format!("Ciphers={c}"));
        let defaults = [
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
        ];
        for kv in self
            .options
            .iter()
            .map(String::as_str)
            .chain(defaults)
            .chain(cipher.as_deref())
        {
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            let owned = ["UserKnownHostsFile", "BatchMode", "ExitOnForwardFailure"];
            let lower = key.to_ascii_lowercase();
            if owned.iter().any(|o| o.eq_ignore_ascii_case(key)) || seen.contains(&lower) {
                continue;
            }
            seen.push(lower);
            options.push(format!("{key} = {value:?}"));
        }
        s.push_str(&format!("options = {{ {} }}\n", options.join(", ")));
        let bastion = format!("127.0.0.1:{}", self.port);
        for (i, f) in self.forwards.iter().enumerate() {
            let remote = format!("{}:{}", f.host, f.port);
            let tunnel = crate::fleet::TunnelSpec::new(
                &format!("forward-{i}"),
                &bastion,
                f.local_port,
                &remote,
            )
            .with("probe = \"none\"");
            s.push('\n');
            s.push_str(&tunnel.toml());
        }
        s
    }

    /// Runs the client with `-f` and waits (30 s at most) for the foreground command to
    /// return: its exit status and what it wrote to stderr (a file in `dir`, since the
    /// background process keeps it).
    pub fn run_with_f(&self, dir: &Path) -> (Option<i32>, String) {
        const WAIT: Duration = Duration::from_secs(30);
        let client = self.clone().arg("-f");
        let log = dir.join(format!("{}.stderr", client.kind().name()));
        let mut child = Command::new(client.kind().program())
            .args(client.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log"))
            .spawn()
            .expect("start the client");
        let status = process::wait_bounded(&mut child, WAIT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "{} -f did not return within {WAIT:?}:\n{}",
                client.kind().name(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        (
            status.code(),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<String> {
        if self.fleet {
            let mut args = ["serve", "--log-format", "text", "--config", FLEET_FILE]
                .map(str::to_owned)
                .to_vec();
            args.extend((0..self.verbosity).map(|_| "-v".to_owned()));
            return args;
        }
        let mut args = ["-N", "-F", "none"].map(str::to_owned).to_vec();
        if self.kind == ClientKind::OpenSsh {
            for isolation in ["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"] {
                args.push(isolation.to_owned());
            }
        }
        args.extend(["-p".to_owned(), self.port.to_string()]);
        if let Some(identity) = &self.identity {
            args.extend(["-i".to_owned(), identity.display().to_string()]);
        }
        for option in &self.options {
            args.extend(["-o".to_owned(), option.clone()]);
        }
        for option in [
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            "BatchMode=yes".to_owned(),
            "ExitOnForwardFailure=yes".to_owned(),
        ] {
            args.extend(["-o".to_owned(), option]);
        }
        if let Some(cipher) = &self.cipher {
            args.extend(["-o".to_owned(), format!("Ciphers={cipher}")]);
        }
        if self.verbosity > 0 {
            args.push(format!("-{}", "v".repeat(usize::from(self.verbosity))));
        }
        for forward in &self.forwards {
            args.extend(["-L".to_owned(), forward.spec()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args.push(format!("{}@127.0.0.1", self.user));
        args
    }

    /// The whole command line, for printing.
    pub fn command_line(&self) -> String {
        let program = self.program.clone().unwrap_or_else(|| self.kind.program());
        self.wrapper()
            .into_iter()
            .chain(std::iter::once(program.display().to_string()))
            .chain(self.args())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts the client without waiting for it; its stderr goes to [`Tunnel::log`].
    pub fn spawn(&self) -> Tunnel {
        let dir = tempfile::Builder::new()
            .prefix("lab-client-")
            .tempdir()
            .expect("create a temp dir for a client");
        let log_path = dir.path().join(format!("{}.log", self.kind.name()));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("create the client log");
        let program = self.program.clone().unwrap_or_else(|| self.kind.program());
        let wrapper = self.wrapper();
        let mut cmd = match wrapper.split_first() {
            Some((wrapper_program, wrapper_args)) => {
                let mut cmd = Command::new(wrapper_program);
                cmd.args(wrapper_args).arg(&program);
                cmd
            }
            None => Command::new(&program),
        };
        cmd.args(self.args()).stdout(Stdio::null()).stderr(log);
        if self.fleet {
            assert!(
                self.extra_args.is_empty(),
                "a fleet file has no place for {:?}",
                self.extra_args
            );
            std::fs::write(dir.path().join(FLEET_FILE), self.fleet_file())
                .expect("write the fleet file");
            cmd.current_dir(dir.path());
        }
        cmd.env_remove("SSH_AUTH_SOCK");
        if self.kind == ClientKind::Forwarder {
            // Its own cache directory (the KexGuessFile), never the user's: a lab run starts
            // without remembered key exchange choices, as before any run.
            cmd.env("XDG_CACHE_HOME", dir.path());
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let started = Instant::now();
        let child = LabChild::spawn(self.kind.name(), &mut cmd);
        Tunnel {
            child,
            log_path,
            _dir: dir,
            _key_files: Arc::clone(&self.key_files),
            kind: self.kind,
            forwards: self.forwards.clone(),
            other_ports: self.other_ports.clone(),
            command_line: self.command_line(),
            started,
        }
    }

    /// The program and arguments the client runs under, if any (`prlimit` for
    /// [`TunnelBuilder::max_open_files`]).
    fn wrapper(&self) -> Vec<String> {
        match self.max_open_files {
            Some(n) => {
                let prlimit = process::require_program(
                    "prlimit",
                    &["/usr/bin", "/bin"],
                    "install util-linux (apt-get install util-linux)",
                );
                vec![
                    prlimit.display().to_string(),
                    format!("--nofile={n}:{n}"),
                    "--".to_owned(),
                ]
            }
            None => Vec::new(),
        }
    }

    /// Starts the client and waits until every forward (and every port of
    /// [`TunnelBuilder::listens_on`]) listens.
    pub fn start(&self) -> Tunnel {
        let mut tunnel = self.spawn();
        tunnel.wait_ready(READY_TIMEOUT);
        tunnel
    }
}

/// A client of `kind` with `-v`, the `extra` options and the forward `keyword listen target`
/// (`LocalForward` or `RemoteForward`, the words as ssh_config takes them), started without
/// waiting: socket listeners are not ports the builder can watch.
pub fn spawn_with_forward(
    kind: ClientKind,
    sshd: &Sshd,
    key: &UserKey,
    keyword: &str,
    listen: &str,
    target: &str,
    extra: &[&str],
) -> Tunnel {
    let mut b = TunnelBuilder::new(kind, sshd, key).verbose();
    for o in extra {
        b = b.option(o);
    }
    b.option(&format!("{keyword}={listen} {target}")).spawn()
}

/// Waits up to `timeout` until the socket at `path` takes connections, or (`listening`
/// false) refuses them; fails the test with `tunnel`'s log otherwise. A file appears at the
/// bind, before its mode is set and before it listens, so the file alone is not enough; the
/// probe connection is dropped at once.
pub fn wait_for_socket(path: &Path, listening: bool, timeout: Duration, tunnel: &Tunnel) {
    process::wait_until(
        timeout,
        &format!(
            "the socket {} {}",
            path.display(),
            if listening {
                "taking connections"
            } else {
                "refusing connections"
            }
        ),
        || {
            let takes = is_socket(path) && std::os::unix::net::UnixStream::connect(path).is_ok();
            (takes == listening).then_some(())
        },
        || tunnel.log(),
    );
}

/// A running client process; killed on drop.
#[derive(Debug)]
pub struct Tunnel {
    child: LabChild,
    log_path: PathBuf,
    _dir: TempDir,
    _key_files: Arc<TempDir>,
    kind: ClientKind,
    forwards: Vec<Forward>,
    other_ports: Vec<u16>,
    command_line: String,
    started: Instant,
}

impl Tunnel {
    /// Waits until every forward's local port (and every port of
    /// [`TunnelBuilder::listens_on`]) listens; returns the time since spawn. Fails
    /// the test with the client's log if it exits or the time runs out.
    pub fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.exited() {
                panic!(
                    "{} exited ({status}) before its forwards were listening\ncommand: {}\nits log ends with:\n{}",
                    self.kind,
                    self.command_line,
                    file_tail(&self.log_path, 40)
                );
            }
            // The client's own listeners (or its children's, under autossh): another
            // process listening on a port the client failed to bind does not make it ready.
            let pid = self.child.pid();
            let held_by = |pids: &[u32]| {
                self.forwards
                    .iter()
                    .map(|f| f.local_port)
                    .chain(self.other_ports.iter().copied())
                    .all(|port| port_listening_by(pids, port))
            };
            if held_by(&[pid]) || held_by(&crate::process::tree(pid)) {
                return self.started.elapsed();
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not listen on {:?} within {timeout:?}\ncommand: {}\nits log ends with:\n{}",
                    self.kind,
                    self.local_ports()
                        .into_iter()
                        .chain(self.other_ports.iter().copied())
                        .collect::<Vec<_>>(),
                    self.command_line,
                    file_tail(&self.log_path, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The local port of the first forward.
    pub fn local_port(&self) -> u16 {
        self.forwards
            .first()
            .map(|f| f.local_port)
            .expect("the tunnel has no -L forward")
    }

    /// The local ports, in `-L` order.
    pub fn local_ports(&self) -> Vec<u16> {
        self.forwards.iter().map(|f| f.local_port).collect()
    }

    /// Which client this is.
    pub fn kind(&self) -> ClientKind {
        self.kind
    }

    /// The command line it was started with.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// When it was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The client's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The client's stderr so far (its `-v` log and errors).
    pub fn log(&self) -> String {
        crate::process::read_log(&self.log_path)
    }

    /// Waits until the client's log contains `needle` and returns the whole log. Fails the
    /// test with the log's tail if it does not appear within `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        crate::process::wait_for_log_text(
            &self.log_path,
            &self.kind.to_string(),
            needle,
            timeout,
            40,
        )
    }

    /// How many lines of the client's log so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until at least `n` lines of the client's log contain `needle` and returns the
    /// whole log. Fails the test with the log's tail if they do not appear within `timeout`.
    pub fn wait_for_log_count(&self, needle: &str, n: usize, timeout: Duration) -> String {
        process::wait_until(
            timeout,
            &format!("{n} {} log lines containing {needle:?}", self.kind),
            || {
                let log = self.log();
                (log.lines().filter(|l| l.contains(needle)).count() >= n).then_some(log)
            },
            || format!("its log ends with:\n{}", file_tail(&self.log_path, 40)),
        )
    }

    /// The file its stderr goes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// CPU seconds the client process has used so far (user + system, all its threads;
    /// not sshd's, not its children's).
    pub fn cpu_seconds(&self) -> f64 {
        process::cpu_seconds(self.pid()).unwrap_or_else(|| {
            panic!(
                "{} is gone; its log ends with:\n{}",
                self.kind,
                file_tail(&self.log_path, 20)
            )
        })
    }

    /// User-mode CPU seconds alone, as [`Tunnel::cpu_seconds`] counts them.
    pub fn user_cpu_seconds(&self) -> f64 {
        process::ProcStat::read(self.pid()).map_or(0.0, |s| s.user_seconds())
    }

    /// Peak resident memory so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        process::peak_rss_kib(self.pid())
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.exited()
    }

    /// Waits up to `timeout` for the client to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }

    /// For a client that must give up: waits up to 30 s for it to exit with status 255 (a
    /// fatal error, for ssh as for forwarder), not by a panic, and returns its log; panics
    /// with the log otherwise.
    pub fn expect_failure(&mut self) -> String {
        let status = self
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the client still runs after 30 s:\n{}", self.log()));
        let log = self.log();
        assert_eq!(status.code(), Some(255), "{status}; log:\n{log}");
        assert!(!log.contains("panicked"), "{log}");
        log
    }

    /// Asks the client to stop (SIGTERM) and waits up to `timeout`; kills it if it does not.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.terminate();
        let status = self.child.wait_timeout(timeout);
        if status.is_none() {
            self.child.kill();
        }
        status
    }

    /// Kills the client.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_kinds_parse() {
        assert_eq!(ClientKind::parse("forwarder"), Some(ClientKind::Forwarder));
        assert_eq!(ClientKind::parse("openssh"), Some(ClientKind::OpenSsh));
        assert_eq!(ClientKind::parse("putty"), None);
    }

    fn builder(kind: ClientKind) -> TunnelBuilder {
        TunnelBuilder {
            kind,
            program: None,
            port: 2222,
            user: "lab".into(),
            identity: None,
            known_hosts: PathBuf::from("known_hosts"),
            forwards: Vec::new(),
            other_ports: Vec::new(),
            cipher: None,
            verbosity: 0,
            options: Vec::new(),
            env: Vec::new(),
            max_open_files: None,
            extra_args: Vec::new(),
            key_files: Arc::new(TempDir::new().expect("a temp dir")),
            fleet: false,
        }
    }

    /// The values of `-o KEY=...`, in order.
    fn option_values(args: &[String], key: &str) -> Vec<String> {
        let prefix = format!("{key}=");
        args.windows(2)
            .filter(|w| w[0] == "-o")
            .filter_map(|w| w[1].strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    #[test]
    fn both_clients_read_no_global_known_hosts_unless_a_test_names_a_file() {
        for kind in [ClientKind::Forwarder, ClientKind::OpenSsh] {
            let args = builder(kind).args();
            assert_eq!(
                option_values(&args, "GlobalKnownHostsFile"),
                ["/dev/null"],
                "{kind}: {args:?}"
            );
            // Both clients keep the first value: a test's own file comes before the lab's.
            let args = builder(kind)
                .option("GlobalKnownHostsFile=/lab/revoked")
                .args();
            assert_eq!(
                option_values(&args, "GlobalKnownHostsFile"),
                ["/lab/revoked", "/dev/null"],
                "{kind}: {args:?}"
            );
        }
    }

    #[test]
    fn both_clients_read_no_ssh_config() {
        for kind in [ClientKind::Forwarder, ClientKind::OpenSsh] {
            let args = builder(kind).args();
            assert_eq!(args[..3], ["-N", "-F", "none"], "{kind}: {args:?}");
            assert_eq!(args.last().map(String::as_str), Some("lab@127.0.0.1"));
        }
    }

    #[test]
    fn a_fleet_client_runs_serve_with_a_file_of_its_forwards_and_options() {
        let b = builder(ClientKind::Forwarder)
            .forward(15432, "db", 5432)
            .forward(15433, "127.0.0.1", 6543)
            .cipher("aes128-gcm@openssh.com")
            .option("GlobalKnownHostsFile=/lab/revoked")
            .option("UserKnownHostsFile=/elsewhere")
            .option("KexAlgorithms=curve25519-sha256")
            .verbose()
            .as_fleet();
        assert_eq!(
            b.args(),
            [
                "serve",
                "--log-format",
                "text",
                "--config",
                FLEET_FILE,
                "-v"
            ]
        );
        let file: toml::Table = b.fleet_file().parse().expect("the fleet file is TOML");
        let defaults = file["defaults"].as_table().expect("[defaults]");
        assert_eq!(defaults["user"].as_str(), Some("lab"));
        assert_eq!(defaults["known_hosts"].as_str(), Some("known_hosts"));
        assert!(!defaults.contains_key("identity_file"), "{defaults:?}");
        let options = defaults["options"].as_table().expect("options");
        let option = |k: &str| options.get(k).and_then(|v| v.as_str());
        // The first value wins, as on the command line; known_hosts is the file's own key.
        assert_eq!(option("GlobalKnownHostsFile"), Some("/lab/revoked"));
        assert_eq!(option("StrictHostKeyChecking"), Some("yes"));
        assert_eq!(option("Ciphers"), Some("aes128-gcm@openssh.com"));
        assert_eq!(option("KexAlgorithms"), Some("curve25519-sha256"));
        assert_eq!(option("UserKnownHostsFile"), None);
        let tunnels = file["tunnel"].as_array().expect("[[tunnel]]");
        let field = |i: usize, k: &str| tunnels[i][k].as_str().map(str::to_owned);
        assert_eq!(tunnels.len(), 2);
        assert_eq!(field(0, "bastion").as_deref(), Some("127.0.0.1:2222"));
        assert_eq!(field(0, "local").as_deref(), Some("127.0.0.1:15432"));
        assert_eq!(field(0, "remote").as_deref(), Some("db:5432"));
        assert_eq!(field(1, "local").as_deref(), Some("127.0.0.1:15433"));
        assert_eq!(field(1, "remote").as_deref(), Some("127.0.0.1:6543"));
        assert_eq!(field(1, "probe").as_deref(), Some("none"));
        assert_ne!(field(0, "name"), field(1, "name"));
    }

    #[test]
    #[should_panic(expected = "only forwarder runs a fleet")]
    fn only_forwarder_runs_a_fleet() {
        let _ = builder(ClientKind::OpenSsh).as_fleet();
    }

    #[test]
    fn forward_spec_binds_ipv4_loopback() {
        let f = Forward {
            local_port: 15432,
            host: "db".into(),
            port: 5432,
        };
        assert_eq!(f.spec(), "127.0.0.1:15432:db:5432");
    }
}
