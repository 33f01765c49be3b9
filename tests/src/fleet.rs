//! `forwarder serve` as the tests run it: a fleet file in a temp dir, the process with its
//! JSON log captured, signals, and a small HTTP client for the admin endpoint.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::client::forwarder_binary;
use crate::process::{LabChild, file_tail, signal};
use rustix::process::Signal;

/// A running `forwarder serve`.
#[derive(Debug)]
pub struct Fleet {
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    admin_port: Option<u16>,
    child: LabChild,
}

/// One `[[tunnel]]` of a test's fleet file.
#[derive(Clone, Debug)]
pub struct TunnelSpec {
    /// Its name.
    pub name: String,
    /// `[user@]host:port` of the bastion.
    pub bastion: String,
    /// Local port (on 127.0.0.1).
    pub local_port: u16,
    /// `host:port` the bastion connects to.
    pub remote: String,
    /// Extra lines (`probe = "postgres"`, `known_hosts = "..."`, ...).
    pub extra: Vec<String>,
}

impl TunnelSpec {
    /// A tunnel with no extra settings.
    pub fn new(name: &str, bastion: &str, local_port: u16, remote: &str) -> TunnelSpec {
        TunnelSpec {
            name: name.into(),
            bastion: bastion.into(),
            local_port,
            remote: remote.into(),
            extra: Vec::new(),
        }
    }

    /// Adds a line to the tunnel's table.
    pub fn with(mut self, line: &str) -> TunnelSpec {
        self.extra.push(line.into());
        self
    }

    /// The TOML table.
    pub fn toml(&self) -> String {
        let mut s = format!(
            "[[tunnel]]\nname = {:?}\nbastion = {:?}\nlocal = \"127.0.0.1:{}\"\nremote = {:?}\n",
            self.name, self.bastion, self.local_port, self.remote
        );
        for l in &self.extra {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

/// A fleet file: `head` (the `[admin]` and `[defaults]` tables) and the tunnels. The
/// defaults' options get `GlobalKnownHostsFile = "/dev/null"` ([`without_global_known_hosts`]).
pub fn fleet_file(head: &str, tunnels: &[TunnelSpec]) -> String {
    let mut s = without_global_known_hosts(head);
    s.push('\n');
    for t in tunnels {
        s.push('\n');
        s.push_str(&t.toml());
    }
    s
}

/// `head` with `GlobalKnownHostsFile = "/dev/null"` among its `[defaults]` options (a table
/// added when there is none, an `options` line added when the table has none), so that what
/// this machine's `/etc/ssh/ssh_known_hosts` says about 127.0.0.1 cannot change a test's
/// outcome. A head that names GlobalKnownHostsFile itself is kept as it is.
pub fn without_global_known_hosts(head: &str) -> String {
    const SETTING: &str = "GlobalKnownHostsFile = \"/dev/null\"";
    if head.contains("GlobalKnownHostsFile") {
        return head.to_owned();
    }
    let Some(start) = head.find("[defaults]\n") else {
        return format!("{head}\n[defaults]\noptions = {{ {SETTING} }}\n");
    };
    let body = start + "[defaults]\n".len();
    let end = head[body..]
        .find("\n[")
        .map_or(head.len(), |i| body + i + 1);
    let mut out = head.to_owned();
    match head[body..end].find("options = {") {
        Some(i) => {
            let at = body + i + "options = {".len();
            let empty = head[at..].trim_start().starts_with('}');
            let sep = if empty { " " } else { "," };
            out.insert_str(at, &format!(" {SETTING}{sep}"));
        }
        None => out.insert_str(body, &format!("options = {{ {SETTING} }}\n")),
    }
    out
}

impl Fleet {
    /// Writes `text` as the fleet file and starts `forwarder serve` on it, with `args`
    /// after the file (`--shard`, `-v`); `admin_port` is where the file puts the endpoint.
    pub fn start(text: &str, admin_port: Option<u16>, args: &[&str]) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("fleet-")
            .tempdir()
            .expect("temp dir for the fleet");
        let config = dir.path().join("tunnels.toml");
        fs::write(&config, text).expect("write the fleet file");
        let log = dir.path().join("serve.log");
        let out = fs::File::create(&log).expect("fleet log file");
        let err = out.try_clone().expect("fleet log file");
        let mut cmd = Command::new(forwarder_binary());
        // Its own cache directory (the KexGuessFile), never the user's.
        cmd.env("XDG_CACHE_HOME", dir.path())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = LabChild::spawn("forwarder serve", &mut cmd);
        Fleet {
            dir,
            config,
            log,
            admin_port,
            child,
        }
    }

    /// The fleet file's path.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Its temp dir (for key and known_hosts files of a test).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until the log has at least `n` lines containing `needle`; panics with the log's
    /// tail after `timeout`.
    pub fn wait_for_log_count(&mut self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log_count(needle) < n {
            if let Some(status) = self.child.exited() {
                panic!(
                    "forwarder serve exited ({status}) while waiting for {needle:?}:\n{}",
                    file_tail(&self.log, 60)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no {n}x {needle:?} in the fleet's log within {timeout:?}:\n{}",
                    file_tail(&self.log, 60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces the file's content (written to a new file and renamed over it, as a
    /// ConfigMap update swaps files).
    pub fn rewrite(&self, text: &str) {
        let tmp = self.dir.path().join("tunnels.toml.new");
        fs::write(&tmp, text).expect("write the new fleet file");
        fs::rename(&tmp, &self.config).expect("rename the new fleet file into place");
    }

    /// Writes `text` over the file in place (truncated, then written), in `pieces` parts
    /// `pause` apart: a slow writer, whose file a reader finds half-written.
    pub fn write_in_place_slowly(&self, text: &str, pieces: usize, pause: Duration) {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.config)
            .expect("open the fleet file to write it in place");
        let bytes = text.as_bytes();
        let size = bytes.len().div_ceil(pieces.max(1)).max(1);
        for chunk in bytes.chunks(size) {
            std::thread::sleep(pause);
            f.write_all(chunk).expect("write a piece of the fleet file");
        }
    }

    /// Sends SIGHUP.
    pub fn reload(&self) {
        signal(self.child.pid(), Signal::HUP);
    }

    /// Sends SIGINT.
    pub fn interrupt(&self) {
        signal(self.child.pid(), Signal::INT);
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.child.terminate();
    }

    /// The exit status once it exited, waiting up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }

    /// Whether it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.exited()
    }

    /// `GET path` on the admin endpoint: status code and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.admin_port?, path)
    }

    /// Polls `GET path` until `check` accepts the answer; panics with the last answer and
    /// the log's tail after `timeout`.
    pub fn wait_for_admin(
        &mut self,
        path: &str,
        timeout: Duration,
        mut check: impl FnMut(u16, &str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some((code, body)) = self.get(path) {
                if check(code, &body) {
                    return body;
                }
                last = Some((code, body));
            }
            if let Some(status) = self.child.exited() {
                panic!(
                    "forwarder serve exited ({status}); last {path}: {last:?}\n{}",
                    file_tail(&self.log, 60)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{path} did not reach the expected answer within {timeout:?}; last: {last:?}\n{}",
                    file_tail(&self.log, 60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A bounded `GET` over HTTP/1.1 with `Connection: close`: status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.take(64 << 20).read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_global_known_hosts as hermetic;

    #[test]
    fn the_defaults_options_get_the_global_known_hosts_file_and_stay_toml() {
        let cases = [
            (
                "[defaults]\nknown_hosts = \"/k\"\noptions = { Compression = \"yes\" }\n",
                "[defaults]\nknown_hosts = \"/k\"\noptions = { GlobalKnownHostsFile = \"/dev/null\", Compression = \"yes\" }\n",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:1\"\n\n[defaults]\nknown_hosts = \"/k\"\n",
                "[admin]\nlisten = \"127.0.0.1:1\"\n\n[defaults]\noptions = { GlobalKnownHostsFile = \"/dev/null\" }\nknown_hosts = \"/k\"\n",
            ),
            (
                "[defaults]\noptions = {}\n",
                "[defaults]\noptions = { GlobalKnownHostsFile = \"/dev/null\" }\n",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:1\"\n",
                "[admin]\nlisten = \"127.0.0.1:1\"\n\n[defaults]\noptions = { GlobalKnownHostsFile = \"/dev/null\" }\n",
            ),
            (
                "[defaults]\noptions = { GlobalKnownHostsFile = \"/g\" }\n",
                "[defaults]\noptions = { GlobalKnownHostsFile = \"/g\" }\n",
            ),
        ];
        for (head, want) in cases {
            let got = hermetic(head);
            assert_eq!(got, want);
            let table: toml::Table = got.parse().expect("still TOML");
            assert!(table.contains_key("defaults"), "{got}");
        }
        // An options line of a later table is not the defaults'.
        let got = hermetic("[defaults]\nknown_hosts = \"/k\"\n[other]\noptions = { A = 1 }\n");
        assert!(
            got.starts_with("[defaults]\noptions = { GlobalKnownHostsFile"),
            "{got}"
        );
        assert!(got.ends_with("[other]\noptions = { A = 1 }\n"), "{got}");
    }
}
