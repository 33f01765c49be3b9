//! `-f` / `ForkAfterAuthentication`: go to the background once the tunnel is up, as `ssh -f -N
//! -L` does, so that a script can run `forwarder -f -N -L 15432:db:5432 bastion && psql -p
//! 15432 ...`.
//!
//! ```text
//!  forwarder -f ... (foreground)           forwarder ... (the same command line, background)
//!    Unix socket in a private directory ──> READY_ENV names it
//!    spawn, stdin /dev/null ──────────────> binds listeners, connects, logs in (prompts work:
//!                                           it still has the terminal), -R granted when
//!                                           ExitOnForwardFailure; then leaves the terminal's
//!                                           session (setsid) and says "ready" on the socket
//!    "ready": exit 0
//!    it exits first: exit with its status (its error is on the shared stderr)
//! ```
//!
//! The program is started again rather than forked: a process with tokio's threads must not
//! fork, and this crate has no unsafe code. Like ssh, which keeps its standard error after
//! `-f`, the background process goes on writing errors where the foreground one did.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The variable that tells a process it is the background half of `-f`, naming the socket
/// to say "ready" on.
pub const READY_ENV: &str = "FORWARDER_FORK_READY";

/// The variable that tells the background process it is a master started for `-W` with
/// `ControlPersist` (see [`run_master`]).
pub const MASTER_ENV: &str = "FORWARDER_PERSIST_MASTER";

/// What the background process says once it is up.
const READY: &[u8] = b"ready\n";

/// How often the foreground process looks for the word or the exit.
const POLL: Duration = Duration::from_millis(20);

/// Whether this process is the background half of `-f`.
pub fn is_background() -> bool {
    std::env::var_os(READY_ENV).is_some()
}

/// In the foreground: runs this program again with `args` and the environment, in the
/// background, and waits until it says it is up (0) or exits (its status; 255 for a signal).
/// Waits as long as the background process takes: it has its own limits (ConnectTimeout, a
/// prompt the user answers).
pub fn run(args: &[OsString]) -> i32 {
    match launch(args, false) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("forwarder: cannot go to the background (-f): {e}");
            crate::app::EXIT_FAILURE
        }
    }
}

/// For `-W` with `ControlPersist` and no master at the `ControlPath`: runs this program again
/// with `args`, in the background, as a master for this `-W` and later ones (it forwards
/// nothing of its own and serves the control socket), and waits until it is up, as [`run`]
/// does. Its standard output is not this one's (that carries the `-W` data, whose reader
/// must see it end when this process does), and it lets go of standard error once up.
pub fn run_master(args: &[OsString]) -> i32 {
    match launch(args, true) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("forwarder: cannot start a master in the background (ControlPersist): {e}");
            crate::app::EXIT_FAILURE
        }
    }
}

/// Whether this process is a master started by [`run_master`].
pub fn is_persist_master() -> bool {
    is_background() && std::env::var_os(MASTER_ENV).is_some()
}

/// In a master started by [`run_master`], once up: standard error goes to `/dev/null`, as
/// ssh's persisting master lets go of it, so that the program that ran the first `-W` (a
/// terminal, ssh's ProxyCommand) is not written to later. A log file (`-E`) stays.
pub fn let_go_of_stderr() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

fn launch(args: &[OsString], master: bool) -> std::io::Result<i32> {
    let dir = PrivateDir::new()?;
    let socket = dir.0.join("ready");
    let listener = std::os::unix::net::UnixListener::bind(&socket)?;
    listener.set_nonblocking(true)?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(args)
        .env(READY_ENV, &socket)
        .stdin(Stdio::null());
    if master {
        command.env(MASTER_ENV, "1").stdout(Stdio::null());
    }
    let mut child = command.spawn()?;
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut said = [0u8; READY.len()];
                if stream.read_exact(&mut said).is_ok() && said == READY {
                    return Ok(0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if let Some(status) = child.try_wait()? {
            return Ok(status.code().unwrap_or(crate::app::EXIT_FAILURE));
        }
        std::thread::sleep(POLL);
    }
}

/// A directory only this user can enter, removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let mut random = [0u8; 8];
        ssh_transport::random::SecureRandom::fill(
            &mut ssh_transport::random::OsRandom,
            &mut random,
        );
        let name = format!(
            "forwarder-fork-{}-{}",
            std::process::id(),
            u64::from_le_bytes(random)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// In the background process, once the tunnel is up: leaves the terminal's session, so that
/// closing the terminal does not end the tunnel, and then tells the foreground process, which
/// exits 0. In that order: when the foreground process leads the terminal's session (`exec`
/// from a login shell, `setsid -c`), its exit hangs up every process still in the session.
/// Does nothing in a process that is not the background half of `-f`.
pub fn ready() {
    let Some(socket) = std::env::var_os(READY_ENV) else {
        return;
    };
    #[cfg(unix)]
    if let Err(e) = rustix::process::setsid() {
        tracing::debug!(error = %e, "setsid failed; staying in the terminal's session");
    }
    if let Err(e) = tell(Path::new(&socket)) {
        tracing::warn!(error = %e, "could not tell the foreground process (-f) that the tunnel is up");
    }
}

fn tell(socket: &Path) -> std::io::Result<()> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(READY)
}
