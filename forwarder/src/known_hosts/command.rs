//! `KnownHostsCommand`: a program that prints known_hosts lines for the host being connected
//! to, read after the files, as OpenSSH 8.5 and later do. A platform that keeps its customers'
//! bastion keys in a database or a secret store gives them this way, without a file per host.
//!
//! ```text
//!  ssh_config value ──> words (quotes group) ──> program (an absolute path) + arguments
//!      arguments: the connection's % tokens and ${VAR} replaced when options are resolved
//!                 (cli::env); %H %I %t %f %K kept as pieces, filled in at each run
//!  before the key exchange: run with %I = ORDER, no key ──> which key types to ask for
//!  once the server's key is proven: run with %I = HOSTNAME and the key ──> checked with the files
//!  each run: stdin empty, stdout read up to MAX_OUTPUT, stderr kept for the error, within the
//!  handshake's limit; a nonzero exit, a signal, a timeout or too much output fails the attempt
//! ```
//!
//! Unlike ssh, which ends at once when the command fails, a tunnel tries again later: the
//! store the command asks may be down for a moment. A key the command does not list is
//! unknown, and a key other than the one it lists is refused as changed, as from a file.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ssh_transport::hostkey::PublicKey;
use tokio::io::AsyncReadExt as _;

/// The most a run may print: far more than a host's lines; more is an error, not a truncation.
pub const MAX_OUTPUT: usize = 1 << 20;
/// How much of what the command writes to stderr is kept for the error message.
const MAX_STDERR: usize = 4096;

/// One argument's pieces: text, or a token only known when the command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Literal text (the connection's tokens already replaced).
    Text(String),
    /// `%H`: the name looked up in known_hosts, `host` or `[host]:port`.
    LookupName,
    /// `%I`: why it runs, `ORDER` or `HOSTNAME`.
    Invocation,
    /// `%t`: the server's host key type (`NONE` before the key is known).
    KeyType,
    /// `%f`: its SHA256 fingerprint.
    Fingerprint,
    /// `%K`: its base64 blob.
    Key,
}

impl Piece {
    /// The token for a letter that is only known at run time.
    pub fn runtime_token(c: char) -> Option<Piece> {
        match c {
            'H' => Some(Piece::LookupName),
            'I' => Some(Piece::Invocation),
            't' => Some(Piece::KeyType),
            'f' => Some(Piece::Fingerprint),
            'K' => Some(Piece::Key),
            _ => None,
        }
    }
}

/// Why the command runs, passed as `%I` (ssh's names; ssh's third, ADDRESS, is for
/// CheckHostIP, which forwarder does not do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Before the key exchange, to choose which host key types to ask the server for.
    Order,
    /// To check the key the server presented.
    Hostname,
}

impl Invocation {
    /// The word `%I` stands for.
    pub fn name(self) -> &'static str {
        match self {
            Invocation::Order => "ORDER",
            Invocation::Hostname => "HOSTNAME",
        }
    }
}

/// A resolved `KnownHostsCommand`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHostsCommand {
    /// The program, an absolute path (as ssh requires; it is not searched for in `$PATH`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<Vec<Piece>>,
}

/// The server's host key as the command is told of it: the certificate when one was
/// presented, as ssh passes it.
#[derive(Clone, Copy, Debug)]
pub struct PresentedKey<'a> {
    /// The key (the certified key under a certificate).
    pub key: &'a PublicKey,
    /// The certificate, when the server presented one.
    pub certificate: Option<&'a ssh_transport::cert::Certificate>,
}

impl KnownHostsCommand {
    /// The arguments for one run.
    pub fn argv(
        &self,
        lookup_name: &str,
        invocation: Invocation,
        key: Option<PresentedKey<'_>>,
    ) -> Vec<String> {
        let (key_type, blob) = match key {
            Some(PresentedKey {
                certificate: Some(c),
                ..
            }) => (c.type_name(), c.blob()),
            Some(PresentedKey { key, .. }) => (key.key_type().name(), key.blob()),
            None => ("NONE", &[][..]),
        };
        let fingerprint = key.map(|_| ssh_transport::hostkey::fingerprint_sha256(blob));
        let base64 = key.map(|_| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(blob)
        });
        self.args
            .iter()
            .map(|pieces| {
                let mut arg = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => arg.push_str(t),
                        Piece::LookupName => arg.push_str(lookup_name),
                        Piece::Invocation => arg.push_str(invocation.name()),
                        Piece::KeyType => arg.push_str(key_type),
                        Piece::Fingerprint => {
                            arg.push_str(fingerprint.as_deref().unwrap_or("NONE"))
                        }
                        Piece::Key => arg.push_str(base64.as_deref().unwrap_or("NONE")),
                    }
                }
                arg
            })
            .collect()
    }

    /// The command as a line for messages: the program and the arguments of this run.
    fn shown(&self, argv: &[String]) -> String {
        let mut line = self.program.display().to_string();
        for a in argv {
            line.push(' ');
            // A base64 key is long and tells a reader nothing.
            if a.len() > 80 {
                line.push_str(&a[..a.floor_char_boundary(60)]);
                line.push_str("...");
            } else {
                line.push_str(a);
            }
        }
        ssh_transport::text::sanitize(line.as_bytes(), false, 300)
    }

    /// Runs the command for `lookup_name` and returns what it printed, within `limit`. Its
    /// failure (it cannot start, exits nonzero or by a signal, takes longer than `limit`,
    /// prints more than [`MAX_OUTPUT`] or text that is not UTF-8) is an error that names the
    /// command and quotes the end of its stderr.
    pub async fn run(
        &self,
        lookup_name: &str,
        invocation: Invocation,
        key: Option<PresentedKey<'_>>,
        limit: Duration,
    ) -> Result<String, String> {
        let argv = self.argv(lookup_name, invocation, key);
        let shown = self.shown(&argv);
        let fail = |why: String| format!("KnownHostsCommand {shown} failed: {why}");
        let mut child = tokio::process::Command::new(&self.program)
            .args(&argv)
            // Not the background half of a `-f` of its own.
            .env_remove(crate::background::READY_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // A group of its own, so that what it starts goes with it when it fails.
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("cannot run it: {e}")))?;
        let mut group = KillGroup(child.id());
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(fail("no pipe to read it from".into()));
        };
        let work = async {
            // One byte over the bound tells too much from just enough.
            let read_out = async {
                let mut out = Vec::new();
                let mut limited = stdout.take(MAX_OUTPUT as u64 + 1);
                limited
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| format!("reading its output: {e}"))?;
                // Said at once: the command may be blocked writing the rest.
                if out.len() > MAX_OUTPUT {
                    return Err(format!("it printed more than {} KiB", MAX_OUTPUT / 1024));
                }
                Ok(out)
            };
            let read_err = async { Ok(tail(stderr).await) };
            let (out, err) = tokio::try_join!(read_out, read_err)?;
            let status = child
                .wait()
                .await
                .map_err(|e| format!("waiting for it: {e}"))?;
            Ok((status, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(limit, work).await {
            Ok(Ok(done)) => done,
            Ok(Err(why)) => return Err(fail(why)),
            Err(_) => {
                return Err(fail(format!(
                    "it did not finish within {} s",
                    limit.as_secs_f64()
                )));
            }
        };
        if status.success() {
            // As ssh, what a command that succeeded left running is its own business.
            group.0 = None;
        } else {
            let said = last_line(&err);
            let how = match status.code() {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_owned(),
            };
            return Err(fail(if said.is_empty() {
                how
            } else {
                format!("{how}: {said}")
            }));
        }
        String::from_utf8(out).map_err(|_| fail("its output is not UTF-8 text".into()))
    }
}

/// Kills a command's process group when dropped, unless disarmed (`None`): a command that
/// timed out, printed too much or failed takes what it started with it.
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self
            .0
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The last [`MAX_STDERR`] bytes of what the command writes to stderr, all of which is read so
/// that a talkative command is never stopped by a full pipe. A read error ends it: stderr
/// only explains a failure.
async fn tail(mut stderr: tokio::process::ChildStderr) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut chunk).await {
        let Some(read) = chunk.get(..n).filter(|r| !r.is_empty()) else {
            break;
        };
        kept.extend_from_slice(read);
        if kept.len() > MAX_STDERR {
            kept.drain(..kept.len() - MAX_STDERR);
        }
    }
    kept
}

/// The last line of a command's stderr that says something, made safe to print.
fn last_line(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    ssh_transport::text::sanitize(line.trim().as_bytes(), false, 200)
}

/// The name the command's lines are filed under in messages (ssh's tag): a `Known` key from
/// it names this instead of a file.
pub fn origin(invocation: Invocation) -> PathBuf {
    PathBuf::from(format!("KnownHostsCommand-{}", invocation.name()))
}

#[cfg(test)]
mod tests;
