//! The fleet file: TOML read with serde, checked whole before anything runs.
//!
//! ```text
//!  tunnels.toml ──toml + serde (unknown keys refused, spans kept)──> Document
//!     Document ──[defaults] merged into each [[tunnel]]──> the tunnel as command-line arguments
//!        (-l user -p port -i key -o UserKnownHostsFile=… -o Key=Value … -L local:remote host)
//!     arguments ──cli::parse_args_with_env──> Options ──TunnelConfig::from_options──> TunnelConfig
//! ```
//!
//! Going through the command line's own parser means every `-o` setting means in the file what
//! it means on the command line, with the same checks and defaults, and a tunnel of the file is
//! the same thing as `forwarder -L`. Every error names the file, the line and the key.

use ssh_connection::ForwardListen;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::cli::{self, AddressFamily, BindTarget, Command, Environment, ForwardSpec};
use crate::config::TunnelConfig;
use crate::probe::ProbeKind;
use crate::remote::RemoteSpec;
use crate::supervisor::{HANDSHAKES_PER_BASTION, MAX_HANDSHAKES_PER_BASTION};
use crate::tunnel::{Destination, Target};

/// The admin endpoint's address when `[admin]` gives none.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often each tunnel's remote is probed when `probe_interval` is not given.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest fleet file read (a wrong path to something huge is an error, not a hang).
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// A file that cannot be used: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub file: String,
    /// 1-based line, when the error is about one place.
    pub line: Option<usize>,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for FileError {}

/// The `[admin]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the HTTP endpoint listens; `None` for no endpoint.
    pub listen: Option<std::net::SocketAddr>,
    /// How long open connections of a stopping tunnel may finish.
    pub drain_timeout: Duration,
    /// How often each tunnel's remote is probed.
    pub probe_interval: Duration,
    /// How many handshakes may run at once to one bastion (its first host).
    pub handshakes_per_bastion: usize,
    /// `[admin.bastion_handshakes]`: other limits for some bastions.
    pub bastion_handshakes: Vec<BastionLimit>,
}

impl AdminConfig {
    /// How many handshakes may run at once to the bastion at `host` and `port` (a session's
    /// first host): its entry in `[admin.bastion_handshakes]` (one that names the port
    /// before one that does not), else `handshakes_per_bastion`.
    pub fn handshakes_for(&self, host: &str, port: u16) -> usize {
        self.bastion_handshakes
            .iter()
            .filter(|b| b.covers(host, port))
            .max_by_key(|b| b.port.is_some())
            .map_or(self.handshakes_per_bastion, |b| b.limit)
    }
}

/// One entry of `[admin.bastion_handshakes]`: how many handshakes may run at once to a
/// bastion, on any port of its host unless the entry names one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BastionLimit {
    /// The entry's key, as written.
    pub key: String,
    /// Its host, in lower case and without brackets.
    pub host: String,
    /// Its port, if it names one.
    pub port: Option<u16>,
    /// The limit, 1 to [`MAX_HANDSHAKES_PER_BASTION`].
    pub limit: usize,
    /// 1-based line of the entry.
    pub line: usize,
}

impl BastionLimit {
    /// Whether the entry is for the bastion at `host` (as a session's spec holds it) and
    /// `port`.
    fn covers(&self, host: &str, port: u16) -> bool {
        bare_host(host) == self.host && self.port.is_none_or(|p| p == port)
    }
}

/// A host as [`BastionLimit::host`] holds it: lower case (names are not case-sensitive), an
/// IPv6 address without its brackets.
fn bare_host(host: &str) -> String {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_ascii_lowercase()
}

/// The host and port of a `[admin.bastion_handshakes]` key: `host`, `host:port`, an IPv6
/// address, or one in brackets with a port (`[2001:db8::1]:2222`). `None` if it is not one.
fn bastion_key(key: &str) -> Option<(String, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    let (host, port) = if let Some(rest) = key.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(port(after.strip_prefix(':')?)?)),
        }
    } else {
        match key.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(port(p)?)),
            // More than one colon: an IPv6 address without a port.
            _ => (key, None),
        }
    };
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%');
    (!host.is_empty() && host.chars().all(fine)).then(|| (bare_host(host), port))
}

/// One warning for each `[admin.bastion_handshakes]` entry that is no tunnel's first host:
/// it sets nothing (a misspelt name, or the bastion behind a jump host).
pub fn unused_bastion_limits(fleet: &FleetConfig) -> Vec<String> {
    fleet
        .admin
        .bastion_handshakes
        .iter()
        .filter(|b| {
            !fleet.tunnels.iter().any(|t| {
                let (host, port) = t.config.session.first_host();
                b.covers(host, port)
            })
        })
        .map(|b| {
            format!(
                "[admin.bastion_handshakes] {:?} (line {}) is the first host of no tunnel, so it \
                 sets nothing: a tunnel through jump hosts is paced by its outermost jump host",
                b.key, b.line
            )
        })
        .collect()
}

/// Which way a tunnel goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelKind {
    /// `kind = "local"` (the default): we listen on `local`, the bastion connects to `remote`
    /// (`-L`); also `kind = "socks"` (`-D`), whose remote is `Destination::Socks`: each
    /// connection names its own.
    Local,
    /// `kind = "remote"`: the bastion listens on `bastion_listen`, we connect to `target`
    /// (`-R`).
    Remote(RemoteSpec),
}

/// One `[[tunnel]]`, resolved.
#[derive(Clone, Debug)]
pub struct TunnelEntry {
    /// Its unique name.
    pub name: String,
    /// 1-based line of its `[[tunnel]]` header.
    pub line: usize,
    /// Which way it goes.
    pub kind: TunnelKind,
    /// The listen address as written (`127.0.0.1:15432`); for a remote tunnel, where the
    /// bastion listens (`bastion_listen`, as written).
    pub local: String,
    /// Where the bastion connects (a host and port, or a Unix socket's path there); for a
    /// remote tunnel, where we connect (`target`).
    pub remote: Destination,
    /// What answers there.
    pub probe: ProbeKind,
    /// MySQL probe credentials: the user and the file holding the password.
    pub probe_login: Option<(String, PathBuf)>,
    /// Whether it may share a session with equal tunnels.
    pub share_session: bool,
    /// The session and the forward, as the command line would resolve them.
    pub config: TunnelConfig,
    /// The arguments it was resolved from, without the `-L`: equal for tunnels whose sessions
    /// are the same thing (user, bastion, port, identities, known_hosts, every option).
    pub session_args: Vec<String>,
}

impl TunnelEntry {
    /// Whether `other` is the same tunnel with nothing changed (a reload leaves it running).
    pub fn same_as(&self, other: &TunnelEntry) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.local == other.local
            && self.remote == other.remote
            && self.probe == other.probe
            && self.probe_login == other.probe_login
            && self.share_session == other.share_session
            && self.session_args == other.session_args
    }
}

/// A whole fleet file, checked.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// `[admin]`.
    pub admin: AdminConfig,
    /// Every tunnel, in the file's order.
    pub tunnels: Vec<TunnelEntry>,
}

/// A path or a list of paths.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Paths {
    fn list(&self) -> Vec<String> {
        match self {
            Paths::One(p) => vec![p.clone()],
            Paths::Many(v) => v.clone(),
        }
    }
}

/// An `-o` value: TOML strings, integers and booleans all say what `-o Key=Value` would.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum OptionValue {
    Text(String),
    Integer(i64),
    Bool(bool),
}

impl OptionValue {
    fn text(&self) -> String {
        match self {
            OptionValue::Text(s) => s.clone(),
            OptionValue::Integer(i) => i.to_string(),
            OptionValue::Bool(true) => "yes".into(),
            OptionValue::Bool(false) => "no".into(),
        }
    }
}

/// A duration: OpenSSH's time format in a string (`"30s"`, `"1m30s"`) or seconds.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Time {
    Text(String),
    Seconds(u64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    admin: Option<Spanned<AdminDoc>>,
    defaults: Option<Spanned<Settings>>,
    #[serde(default)]
    tunnel: Vec<Spanned<TunnelDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminDoc {
    listen: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<Time>>,
    probe_interval: Option<Spanned<Time>>,
    handshakes_per_bastion: Option<Spanned<i64>>,
    bastion_handshakes: Option<BTreeMap<String, Spanned<i64>>>,
}

/// The keys `[defaults]` and `[[tunnel]]` share.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    bastion: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    identity_file: Option<Spanned<Paths>>,
    known_hosts: Option<Spanned<Paths>>,
    jump: Option<Spanned<Paths>>,
    probe: Option<Spanned<String>>,
    probe_user: Option<Spanned<String>>,
    probe_password_file: Option<Spanned<String>>,
    share_session: Option<bool>,
    options: Option<BTreeMap<String, Spanned<OptionValue>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelDoc {
    name: Spanned<String>,
    kind: Option<Spanned<String>>,
    local: Option<Spanned<String>>,
    remote: Option<Spanned<String>>,
    bastion_listen: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    // The keys of [`Settings`], written out: serde's `flatten` would lose the spans.
    bastion: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    identity_file: Option<Spanned<Paths>>,
    known_hosts: Option<Spanned<Paths>>,
    jump: Option<Spanned<Paths>>,
    probe: Option<Spanned<String>>,
    probe_user: Option<Spanned<String>>,
    probe_password_file: Option<Spanned<String>>,
    share_session: Option<bool>,
    options: Option<BTreeMap<String, Spanned<OptionValue>>>,
}

impl TunnelDoc {
    fn settings(&self) -> Settings {
        Settings {
            bastion: self.bastion.clone(),
            user: self.user.clone(),
            identity_file: self.identity_file.clone(),
            known_hosts: self.known_hosts.clone(),
            jump: self.jump.clone(),
            probe: self.probe.clone(),
            probe_user: self.probe_user.clone(),
            probe_password_file: self.probe_password_file.clone(),
            share_session: self.share_session,
            options: self.options.clone(),
        }
    }
}

/// Maps byte offsets to 1-based lines.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, offset: usize) -> usize {
        let end = offset.min(self.0.len());
        self.0
            .as_bytes()
            .get(..end)
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
            + 1
    }
}

/// Reads and checks the fleet file at `path`.
pub fn load(path: &Path, env: &Environment) -> Result<FleetConfig, FileError> {
    let bytes = read(path)?;
    from_bytes(path, &bytes, env)
}

/// The fleet file's bytes, at most [`MAX_FILE_SIZE`] of them (a blocking read).
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    crate::files::read_bounded(path, MAX_FILE_SIZE).map_err(|e| FileError {
        file: path.display().to_string(),
        line: None,
        message: format!("cannot read the file: {e}"),
    })
}

/// Checks the fleet file `path` whose content is `bytes` (as [`read`] returned them).
pub fn from_bytes(path: &Path, bytes: &[u8], env: &Environment) -> Result<FleetConfig, FileError> {
    let file = path.display().to_string();
    let text = std::str::from_utf8(bytes).map_err(|_| FileError {
        file: file.clone(),
        line: None,
        message: "not UTF-8 text".into(),
    })?;
    parse(&file, text, env, &|p| check_readable(p))
}

/// Whether a key or password file can be opened for reading.
fn check_readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses and checks a fleet file's text; `file` names it in errors; `readable` says whether
/// a key file can be read (the fuzz target passes one that always says yes).
pub fn parse(
    file: &str,
    text: &str,
    env: &Environment,
    readable: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<FleetConfig, FileError> {
    let lines = Lines(text);
    let err = |offset: Option<usize>, message: String| FileError {
        file: file.to_owned(),
        line: offset.map(|o| lines.of(o)),
        message,
    };
    let doc: Document = toml::from_str(text).map_err(|e| {
        err(
            e.span().map(|s| s.start),
            e.message().trim_end().replace('\n', "; "),
        )
    })?;

    let admin = match &doc.admin {
        None => AdminConfig {
            listen: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            handshakes_per_bastion: HANDSHAKES_PER_BASTION,
            bastion_handshakes: Vec::new(),
        },
        Some(a) => {
            let at = a.span().start;
            let a = a.get_ref();
            let listen = match &a.listen {
                None => None,
                Some(l) => Some(l.get_ref().parse().map_err(|_| {
                    err(
                        Some(l.span().start),
                        format!(
                            "admin: key `listen`: {:?} is not an address and port \
                             (for example \"127.0.0.1:9180\")",
                            l.get_ref()
                        ),
                    )
                })?),
            };
            let time = |t: &Option<Spanned<Time>>, key: &str, default: Duration| match t {
                None => Ok(default),
                Some(t) => duration(t.get_ref()).ok_or_else(|| {
                    err(
                        Some(t.span().start),
                        format!(
                            "admin: key `{key}`: expected a time such as \"30s\", \"2m\" or a \
                             number of seconds, above zero"
                        ),
                    )
                }),
            };
            let _ = at;
            let limit = |n: &Spanned<i64>, key: &str| {
                usize::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| (1..=MAX_HANDSHAKES_PER_BASTION).contains(n))
                    .ok_or_else(|| {
                        err(
                            Some(n.span().start),
                            format!(
                                "admin: key `{key}`: expected a number from 1 to \
                                 {MAX_HANDSHAKES_PER_BASTION}, got {}",
                                n.get_ref()
                            ),
                        )
                    })
            };
            let handshakes_per_bastion = match &a.handshakes_per_bastion {
                None => HANDSHAKES_PER_BASTION,
                Some(n) => limit(n, "handshakes_per_bastion")?,
            };
            let mut bastion_handshakes: Vec<BastionLimit> = Vec::new();
            for (key, n) in a.bastion_handshakes.iter().flatten() {
                let at = n.span().start;
                let Some((host, port)) = bastion_key(key) else {
                    return Err(err(
                        Some(at),
                        format!(
                            "admin: key `bastion_handshakes`: {key:?} is not a bastion's host \
                             or host:port (for example \"bastion.example.com\" or \
                             \"10.0.0.5:2222\")"
                        ),
                    ));
                };
                let entry = BastionLimit {
                    limit: limit(n, &format!("bastion_handshakes.{key:?}"))?,
                    key: key.clone(),
                    host,
                    port,
                    line: lines.of(at),
                };
                if let Some(same) = bastion_handshakes
                    .iter()
                    .find(|b| (&b.host, b.port) == (&entry.host, entry.port))
                {
                    return Err(err(
                        Some(at),
                        format!(
                            "admin: key `bastion_handshakes`: {key:?} names the same bastion \
                             as {:?} on line {}",
                            same.key, same.line
                        ),
                    ));
                }
                bastion_handshakes.push(entry);
            }
            AdminConfig {
                listen,
                drain_timeout: time(&a.drain_timeout, "drain_timeout", DEFAULT_DRAIN_TIMEOUT)?,
                probe_interval: time(&a.probe_interval, "probe_interval", DEFAULT_PROBE_INTERVAL)?,
                handshakes_per_bastion,
                bastion_handshakes,
            }
        }
    };

    let defaults = doc
        .defaults
        .as_ref()
        .map(|d| d.get_ref().clone())
        .unwrap_or_default();
    let mut tunnels: Vec<TunnelEntry> = Vec::new();
    for t in &doc.tunnel {
        let start = t.span().start;
        let t = t.get_ref();
        let entry = resolve(t, &defaults, env, readable).map_err(|(offset, message)| {
            err(
                Some(offset.unwrap_or(start)),
                format!("tunnel {:?}: {message}", t.name.get_ref()),
            )
        })?;
        if let Some(first) = tunnels.iter().find(|o| o.name == entry.name) {
            return Err(err(
                Some(t.name.span().start),
                format!(
                    "tunnel {:?}: key `name`: the name is already used by the tunnel on line {}",
                    entry.name, first.line
                ),
            ));
        }
        if let Some((first, clash)) = tunnels
            .iter()
            .find_map(|o| clash(o, &entry).map(|c| (o, c)))
        {
            let (key, at) = match &entry.kind {
                TunnelKind::Local => ("local", &t.local),
                TunnelKind::Remote(_) => ("bastion_listen", &t.bastion_listen),
            };
            return Err(err(
                at.as_ref().map(|l| l.span().start),
                format!(
                    "tunnel {:?}: key `{key}`: {}",
                    entry.name,
                    clash.describe(first, &entry)
                ),
            ));
        }
        if let (TunnelKind::Local, Some(admin_listen)) = (&entry.kind, admin.listen)
            && let Some(port) = local_port(&entry)
            && port != 0
            && port == admin_listen.port()
            && Takes::of_local(&entry).overlaps(&Takes::of_ip(admin_listen.ip()))
        {
            return Err(err(
                t.local.as_ref().map(|l| l.span().start),
                format!(
                    "tunnel {:?}: key `local`: {} overlaps {admin_listen}, the admin \
                     endpoint's address ([admin] listen): both cannot listen on port {port}",
                    entry.name, entry.local
                ),
            ));
        }
        let mut entry = entry;
        entry.line = lines.of(start);
        tunnels.push(entry);
    }
    Ok(FleetConfig { admin, tunnels })
}

/// Why two tunnels of one file cannot both run: they listen on one address and port, here or
/// on one bastion.
#[derive(Debug)]
enum Clash {
    /// Local tunnels on the same address and port.
    SameLocal,
    /// Local tunnels whose addresses overlap on one port (`0.0.0.0` and `127.0.0.1`,
    /// `localhost` and `[::1]`): the second bind would fail.
    OverlappingLocal,
    /// Remote tunnels through the same bastion login (`user@host:port`, the same jump hosts)
    /// whose `bastion_listen` addresses are the same or overlap on one port: the bastion
    /// refuses the second forward and, on a shared session, the first one's connections
    /// would be handed to the refused one.
    BastionListen { first: String, bastion: String },
}

impl Clash {
    /// The message about `second`, after "key `...`: ".
    fn describe(&self, first: &TunnelEntry, second: &TunnelEntry) -> String {
        let owner = format!("tunnel {:?} (line {})", first.name, first.line);
        match self {
            Clash::SameLocal if first.local == second.local => {
                format!("{} is already the local address of {owner}", second.local)
            }
            Clash::SameLocal => format!(
                "{} is the same address as {}, which is already the local address of {owner}",
                second.local, first.local
            ),
            Clash::OverlappingLocal => format!(
                "{} overlaps {}, which is already the local address of {owner}: both cannot \
                 listen on the same port",
                second.local, first.local
            ),
            Clash::BastionListen {
                first: other,
                bastion,
            } => format!(
                "{} on the bastion {bastion}, which already listens on {other} for {owner}: it \
                 would refuse the second forward on that port (remote tunnels through one \
                 bastion need different ports)",
                second.local
            ),
        }
    }
}

/// MySQL's and MariaDB's port.
const MYSQL_PORT: u16 = 3306;

/// A warning for a tunnel whose probe would, in time, get the bastion's address blocked by
/// MySQL or MariaDB: a probe that leaves without logging in (`tcp`, the default; `postgres`;
/// `mysql` without `probe_user`) counts, from any host but loopback, against the server's
/// `max_connect_errors` (100 by default), and past it the server refuses every client from
/// that address (see [`crate::probe`]). Aimed at port 3306, or a `mysql` probe without a
/// login. `None` when the probe is harmless.
pub fn probe_hazard(t: &TunnelEntry) -> Option<String> {
    let kind = match t.probe {
        ProbeKind::None => return None,
        ProbeKind::Mysql if t.probe_login.is_some() => return None,
        ProbeKind::Mysql => "\"mysql\" without probe_user",
        ProbeKind::Tcp if t.remote.port() == Some(MYSQL_PORT) => "\"tcp\" (the default)",
        ProbeKind::Postgres if t.remote.port() == Some(MYSQL_PORT) => "\"postgres\"",
        ProbeKind::Tcp | ProbeKind::Postgres => return None,
    };
    Some(format!(
        "tunnel {:?}: probe {kind} on {} leaves MySQL/MariaDB without logging in: every probe \
         counts against the server's max_connect_errors (100 by default) for the bastion's \
         address, and once that is reached the server blocks the bastion for every client. \
         Give it a login (probe = \"mysql\" with probe_user and probe_password_file; a user \
         with no privileges is enough) or turn it off (probe = \"none\")",
        t.name, t.remote
    ))
}

/// Whether `b` cannot run next to `a` (port 0 picks a new port each time, so it never
/// collides).
fn clash(a: &TunnelEntry, b: &TunnelEntry) -> Option<Clash> {
    match (&a.kind, &b.kind) {
        (TunnelKind::Local, TunnelKind::Local) => {
            if let (Some(pa), Some(pb)) = (local_path(a), local_path(b)) {
                // Compared as paths: `/run//a.sock` is `/run/a.sock`.
                return (pa == pb).then_some(Clash::SameLocal);
            }
            let port = local_port(a)?;
            if port == 0 || local_port(b)? != port {
                return None;
            }
            let (ta, tb) = (Takes::of_local(a), Takes::of_local(b));
            if ta == tb {
                Some(Clash::SameLocal)
            } else if ta.overlaps(&tb) {
                Some(Clash::OverlappingLocal)
            } else {
                None
            }
        }
        (TunnelKind::Remote(ra), TunnelKind::Remote(rb)) => {
            let same_place = match (&ra.listen, &rb.listen) {
                (
                    ForwardListen::Tcp { address, port },
                    ForwardListen::Tcp {
                        address: other,
                        port: other_port,
                    },
                ) => {
                    *port != 0
                        && port == other_port
                        && Takes::of_bastion_listen(address)
                            .overlaps(&Takes::of_bastion_listen(other))
                }
                // Compared as paths: `/run//a.sock` is `/run/a.sock`.
                (ForwardListen::Unix { path }, ForwardListen::Unix { path: other }) => {
                    Path::new(path) == Path::new(other)
                }
                _ => false,
            };
            let same =
                same_place && bastion_login(&a.config.session) == bastion_login(&b.config.session);
            same.then(|| Clash::BastionListen {
                first: ra.label(),
                bastion: a.config.session.label(),
            })
        }
        _ => None,
    }
}

/// The port a local tunnel listens on.
fn local_port(t: &TunnelEntry) -> Option<u16> {
    t.config.forwards.first().and_then(ForwardSpec::port)
}

/// The Unix socket a local tunnel listens on, if it listens on one.
fn local_path(t: &TunnelEntry) -> Option<&std::path::Path> {
    match &t.config.forwards.first()?.listen {
        cli::Listen::Path(p) => Some(p),
        cli::Listen::Port { .. } => None,
    }
}

/// Who logs in where, through which jump hosts: remote tunnels with the same one ask the same
/// server to listen. (Other users on the same host:port may be other machines behind a
/// gateway that routes by user name; a clash between them is the server's to refuse, on
/// sessions of their own, so no connection goes astray.)
fn bastion_login(
    s: &crate::config::SessionSpec,
) -> (String, String, u16, Vec<(String, String, u16)>) {
    (
        s.user.clone(),
        s.host.to_ascii_lowercase(),
        s.port,
        s.jump
            .iter()
            .map(|j| (j.user.clone(), j.host.to_ascii_lowercase(), j.port))
            .collect(),
    )
}

/// The addresses a listener takes, as far as the file tells: IP literals (the wildcards
/// among them), and names, which are not looked up (two names clash when they are the same
/// name). IPv6 listeners are IPv6-only ([`crate::connect::listen`]; sshd does the same), so
/// `[::]` and `0.0.0.0` do not clash.
#[derive(Debug, PartialEq, Eq)]
struct Takes {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    names: Vec<String>,
    /// The families a name may resolve to.
    family: AddressFamily,
}

impl Takes {
    /// A local tunnel's listeners, as [`crate::connect::bind_forwards`] binds them.
    fn of_local(t: &TunnelEntry) -> Self {
        let family = t.config.session.address_family;
        let bind = t
            .config
            .forwards
            .first()
            .and_then(|f| f.listen.bind_target(t.config.gateway_ports));
        let mut takes = match bind {
            // No forward, or a Unix socket: no address.
            None => Self::none(family),
            Some(bind) => match bind {
                BindTarget::Loopback => Self::ips(
                    &[Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
                    family,
                ),
                BindTarget::AllInterfaces => Self::ips(
                    &[Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()],
                    family,
                ),
                BindTarget::Address(a) => Self::address(&a, family),
            },
        };
        if family == AddressFamily::Inet {
            takes.v6.clear();
        }
        if family == AddressFamily::Inet6 {
            takes.v4.clear();
        }
        takes
    }

    /// Where a bastion listens for `listen_address` of a `tcpip-forward` (a
    /// [`RemoteSpec`]'s: empty for every address), when it listens where it is asked
    /// (sshd's `GatewayPorts clientspecified`; with `no` or `yes` every request of a port
    /// clashes).
    fn of_bastion_listen(listen_address: &str) -> Self {
        match listen_address {
            "" | "*" => Self::ips(
                &[Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()],
                AddressFamily::Any,
            ),
            a if a.eq_ignore_ascii_case("localhost") => Self::ips(
                &[Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
                AddressFamily::Any,
            ),
            a => Self::address(a, AddressFamily::Any),
        }
    }

    /// One IP address.
    fn of_ip(ip: IpAddr) -> Self {
        Self::ips(&[ip], AddressFamily::Any)
    }

    fn none(family: AddressFamily) -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
            names: Vec::new(),
            family,
        }
    }

    fn ips(ips: &[IpAddr], family: AddressFamily) -> Self {
        let mut t = Self::none(family);
        for ip in ips {
            match ip {
                IpAddr::V4(a) => t.v4.push(*a),
                IpAddr::V6(a) => t.v6.push(*a),
            }
        }
        t
    }

    /// An address as written: an IP literal (brackets allowed) or a name.
    fn address(a: &str, family: AddressFamily) -> Self {
        let bare = a
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(a);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Self::ips(&[ip], family),
            Err(_) if bare.eq_ignore_ascii_case("localhost") => Self::ips(
                &[Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
                family,
            ),
            Err(_) => {
                let mut t = Self::none(family);
                t.names.push(bare.to_ascii_lowercase());
                t
            }
        }
    }

    /// Whether the two cannot listen on one port at once: the same address, or a wildcard
    /// and any address of its family, or a name and wildcards of every family it may
    /// resolve to.
    fn overlaps(&self, other: &Self) -> bool {
        fn clash<T: PartialEq>(a: &[T], b: &[T], wildcard: &T) -> bool {
            a.iter()
                .any(|x| b.iter().any(|y| x == y || x == wildcard || y == wildcard))
        }
        // Every address a name of `named` may resolve to is taken by `all`'s wildcards.
        fn covered(named: &Takes, all: &Takes) -> bool {
            let v4 =
                named.family == AddressFamily::Inet6 || all.v4.contains(&Ipv4Addr::UNSPECIFIED);
            let v6 = named.family == AddressFamily::Inet || all.v6.contains(&Ipv6Addr::UNSPECIFIED);
            !named.names.is_empty() && v4 && v6
        }
        clash(&self.v4, &other.v4, &Ipv4Addr::UNSPECIFIED)
            || clash(&self.v6, &other.v6, &Ipv6Addr::UNSPECIFIED)
            || self.names.iter().any(|n| other.names.contains(n))
            || covered(self, other)
            || covered(other, self)
    }
}

/// The socket path of `key` (`local` or `remote` of a local tunnel): absolute, as a daemon's
/// working directory says nothing, and without `]`, which would end its field in the `-L`
/// form.
fn socket_path(value: &Spanned<String>, key: &str) -> Result<String, (Option<usize>, String)> {
    let path = value.get_ref();
    if !path.starts_with('/') || path.contains(']') {
        return Err((
            Some(value.span().start),
            format!(
                "key `{key}`: {path:?} is not an absolute Unix socket path (one starting with \
                 '/', without ']')"
            ),
        ));
    }
    Ok(path.clone())
}

/// `host:port` or `[v6]:port`, brackets removed.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        if h.contains(':') {
            return None;
        }
        (h, p)
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// A `[user@]host[:port]` bastion.
fn split_bastion(s: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_owned()), r),
        Some(_) => return None,
        None => (None, s),
    };
    if rest.is_empty() {
        return None;
    }
    if rest.starts_with('[') || rest.matches(':').count() == 1 {
        let (h, p) = split_host_port(rest)?;
        return Some((user, h, Some(p)));
    }
    if rest.contains(char::is_whitespace) || rest.starts_with('-') {
        return None;
    }
    Some((user, rest.to_owned(), None))
}

fn duration(t: &Time) -> Option<Duration> {
    let secs = match t {
        Time::Seconds(s) => *s,
        Time::Text(s) => cli::parse_time(s)?,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Brackets for an IPv6 literal in `-L`.
fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

type Failure = (Option<usize>, String);

/// A tunnel's direction and the keys that say where it goes.
enum Way<'a> {
    Local {
        local: &'a Spanned<String>,
        remote: &'a Spanned<String>,
    },
    Remote {
        listen: &'a Spanned<String>,
        target: &'a Spanned<String>,
    },
    /// `kind = "socks"`: `-D local`, each connection naming its own target.
    Socks { local: &'a Spanned<String> },
}

impl<'a> Way<'a> {
    /// `kind`, and the keys it needs; a key of the other kind is an error.
    fn of(t: &'a TunnelDoc) -> Result<Self, Failure> {
        let kind = match &t.kind {
            None => "local",
            Some(k) => match k.get_ref().as_str() {
                kind @ ("local" | "remote" | "socks") => kind,
                other => {
                    return Err((
                        Some(k.span().start),
                        format!("key `kind`: {other:?} is not \"local\", \"remote\" or \"socks\""),
                    ));
                }
            },
        };
        let all = [
            ("local", &t.local),
            ("remote", &t.remote),
            ("bastion_listen", &t.bastion_listen),
            ("target", &t.target),
        ];
        let (needed, has): (&[&str], &str) = match kind {
            "remote" => (
                &["bastion_listen", "target"],
                "`bastion_listen` and `target`",
            ),
            "socks" => (&["local"], "only `local`"),
            _ => (&["local", "remote"], "`local` and `remote`"),
        };
        if let Some((key, Some(v))) = all
            .iter()
            .find(|(key, v)| v.is_some() && !needed.contains(key))
        {
            return Err((
                Some(v.span().start),
                format!("key `{key}` is not for a {kind} tunnel (a {kind} tunnel has {has})"),
            ));
        }
        let missing = |key: &str| (None, format!("key `{key}` is missing"));
        Ok(if kind == "socks" {
            Way::Socks {
                local: t.local.as_ref().ok_or_else(|| missing("local"))?,
            }
        } else if kind == "remote" {
            Way::Remote {
                listen: t
                    .bastion_listen
                    .as_ref()
                    .ok_or_else(|| missing("bastion_listen"))?,
                target: t.target.as_ref().ok_or_else(|| missing("target"))?,
            }
        } else {
            Way::Local {
                local: t.local.as_ref().ok_or_else(|| missing("local"))?,
                remote: t.remote.as_ref().ok_or_else(|| missing("remote"))?,
            }
        })
    }
}

/// One tunnel: the defaults under it, turned into the command line that means the same.
fn resolve(
    t: &TunnelDoc,
    defaults: &Settings,
    env: &Environment,
    readable: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<TunnelEntry, Failure> {
    let s = &t.settings();
    let name = t.name.get_ref().clone();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err((
            Some(t.name.span().start),
            "key `name`: must be 1 to 200 printable characters".into(),
        ));
    }
    let pick =
        |a: &Option<Spanned<String>>, b: &Option<Spanned<String>>| a.clone().or_else(|| b.clone());
    let way = Way::of(t)?;
    let bastion = pick(&s.bastion, &defaults.bastion).ok_or((
        None,
        "key `bastion` is missing (here or in [defaults])".to_owned(),
    ))?;
    let (bastion_user, host, port) = split_bastion(bastion.get_ref()).ok_or_else(|| {
        (
            Some(bastion.span().start),
            format!(
                "key `bastion`: {:?} is not [user@]host[:port]",
                bastion.get_ref()
            ),
        )
    })?;
    let user = bastion_user.or_else(|| pick(&s.user, &defaults.user).map(|u| u.into_inner()));
    let (listen, target) = match &way {
        Way::Local { local, remote } => (*local, Some(*remote)),
        Way::Remote { listen, target } => (*listen, Some(*target)),
        Way::Socks { local } => (*local, None),
    };
    let remote = match target {
        None => Destination::Socks,
        Some(target) => tunnel_target(&way, target)?,
    };
    let forward = forward_listen(&way)?;
    match (&way, &s.probe) {
        (Way::Remote { .. }, Some(p)) => {
            return Err((
                Some(p.span().start),
                "key `probe`: a remote tunnel is not probed (the bastion connects to us)".into(),
            ));
        }
        (Way::Socks { .. }, Some(p)) => {
            return Err((
                Some(p.span().start),
                "key `probe`: a socks tunnel is not probed (each connection names its own \
                 target)"
                    .into(),
            ));
        }
        _ => {}
    }
    let probe_text = match way {
        Way::Local { .. } => pick(&s.probe, &defaults.probe),
        Way::Remote { .. } | Way::Socks { .. } => None,
    };
    let probe = match &probe_text {
        None if !matches!(way, Way::Local { .. }) => ProbeKind::None,
        None => ProbeKind::Tcp,
        Some(p) => p
            .get_ref()
            .parse::<ProbeKind>()
            .map_err(|e| (Some(p.span().start), format!("key `probe`: {e}")))?,
    };
    let probe_user = pick(&s.probe_user, &defaults.probe_user);
    let probe_password = pick(&s.probe_password_file, &defaults.probe_password_file);
    let probe_login = match (probe_user, probe_password) {
        (None, None) => None,
        (Some(u), Some(p)) => {
            let path = PathBuf::from(p.get_ref());
            readable(&path).map_err(|e| {
                (
                    Some(p.span().start),
                    format!("key `probe_password_file`: cannot read it: {e}"),
                )
            })?;
            Some((u.into_inner(), path))
        }
        (Some(u), None) => {
            return Err((
                Some(u.span().start),
                "key `probe_user` needs `probe_password_file` too".into(),
            ));
        }
        (None, Some(p)) => {
            return Err((
                Some(p.span().start),
                "key `probe_password_file` needs `probe_user` too".into(),
            ));
        }
    };

    // The session's arguments: BatchMode, since a daemon has no terminal to ask on; no
    // ssh_config file, since the fleet file says everything about a tunnel.
    let mut args: Vec<String> = vec![
        "-F".into(),
        "none".into(),
        "-o".into(),
        "BatchMode=yes".into(),
    ];
    if let Some(u) = &user {
        args.push("-l".into());
        args.push(u.clone());
    }
    if let Some(p) = port {
        args.push("-p".into());
        args.push(p.to_string());
    }
    if let Some(ids) = s.identity_file.as_ref().or(defaults.identity_file.as_ref()) {
        for id in ids.get_ref().list() {
            let expanded = expand_home(&id, env);
            readable(&expanded).map_err(|e| {
                (
                    Some(ids.span().start),
                    format!("key `identity_file`: cannot read the key file {e}"),
                )
            })?;
            args.push("-i".into());
            args.push(id);
        }
    }
    if let Some(kh) = s.known_hosts.as_ref().or(defaults.known_hosts.as_ref()) {
        let list = kh.get_ref().list();
        if list
            .iter()
            .any(|p| p.contains(char::is_whitespace) || p.is_empty())
        {
            return Err((
                Some(kh.span().start),
                "key `known_hosts`: expected one or more paths, without spaces".into(),
            ));
        }
        args.push("-o".into());
        args.push(format!("UserKnownHostsFile={}", list.join(" ")));
    }
    // Jump hosts, outermost first: part of the session's arguments, so only tunnels through
    // the same chain share a session.
    if let Some(jump) = s.jump.as_ref().or(defaults.jump.as_ref()) {
        let list = jump.get_ref().list();
        // `jump = []` (or "none") in a tunnel turns off the jump hosts of [defaults].
        if list
            .iter()
            .any(|h| h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == ','))
        {
            return Err((
                Some(jump.span().start),
                "key `jump`: expected [user@]host[:port] jump hosts, outermost first \
                 (for example [\"user@jump1:2222\", \"jump2\"])"
                    .into(),
            ));
        }
        args.push("-J".into());
        args.push(if list.is_empty() {
            "none".into()
        } else {
            list.join(",")
        });
    }
    let mut options: BTreeMap<String, Spanned<OptionValue>> = BTreeMap::new();
    for (k, v) in defaults.options.iter().flatten() {
        options.insert(k.clone(), v.clone());
    }
    for (k, v) in s.options.iter().flatten() {
        options.insert(k.clone(), v.clone());
    }
    for (k, v) in &options {
        let key = k.to_ascii_lowercase();
        if matches!(
            key.as_str(),
            "localforward" | "hostname" | "user" | "port" | "identityfile" | "userknownhostsfile"
        ) {
            return Err((
                Some(v.span().start),
                format!(
                    "options: `{k}` is set by the tunnel's own keys (bastion, user, local, \
                     remote, identity_file, known_hosts); use those"
                ),
            ));
        }
        if matches!(key.as_str(), "remoteforward" | "dynamicforward") {
            return Err((
                Some(v.span().start),
                format!(
                    "options: `{k}`: a tunnel is one forward, set by its own keys (local and \
                     remote, bastion_listen and target, or socks); add a [[tunnel]] for another"
                ),
            ));
        }
        let value = v.get_ref().text();
        if k.is_empty() || k.contains(['=', ' ']) || value.contains('\n') {
            return Err((Some(v.span().start), format!("options: bad setting `{k}`")));
        }
        args.push("-o".into());
        args.push(format!("{k}={value}"));
    }
    let session_args = args.clone();
    args.push(
        match way {
            Way::Local { .. } => "-L",
            Way::Remote { .. } => "-R",
            Way::Socks { .. } => "-D",
        }
        .into(),
    );
    args.push(match &remote {
        Destination::Tcp(t) => format!("{forward}{}:{}", bracket(&t.host), t.port),
        Destination::Unix(path) => format!("{forward}[{path}]"),
        Destination::Socks => forward,
    });
    args.push("--".into());
    args.push(host.clone());

    let opts = match cli::parse_args_with_env(args, env) {
        Ok(Command::Run(o)) => o,
        Ok(_) => return Err((None, "not a tunnel".into())),
        Err(e) => return Err((option_offset(&e.to_string(), &options), e.to_string())),
    };
    // What belongs to one command, not to a daemon: the fleet has its admin endpoint.
    for (set, key) in [
        (
            opts.control_master != cli::ControlMaster::No,
            "ControlMaster",
        ),
        (opts.control_path.is_some(), "ControlPath"),
        (
            opts.control_persist != cli::ControlPersist::No,
            "ControlPersist",
        ),
        (opts.fork_after_authentication, "ForkAfterAuthentication"),
    ] {
        if set {
            return Err((
                option_offset(key, &options),
                format!(
                    "{key} is for a single forwarder command; `forwarder serve` runs in the \
                     foreground under its service manager and is asked through its admin \
                     endpoint"
                ),
            ));
        }
    }
    let mut config =
        TunnelConfig::from_options(&opts).map_err(|e| (option_offset(&e.0, &options), e.0))?;
    // Many sessions share each thread of the fleet.
    config.session.handshake_off_thread = true;
    let kind = match (&way, opts.remote_forwards.first()) {
        (Way::Local { .. } | Way::Socks { .. }, _) => TunnelKind::Local,
        (Way::Remote { .. }, Some(f)) => TunnelKind::Remote(RemoteSpec::from_forward(f)),
        (Way::Remote { .. }, None) => return Err((None, "not a remote forward".into())),
    };
    // Socket paths are expanded as `-L` and `-R` expand them (`~`, `%` tokens, `${VAR}`): the
    // tunnel's own record of them is the expanded one, so that its probe, its status and the
    // checks between tunnels see the paths it forwards to and listens on.
    let parsed = opts.local_forwards.first().or(opts.remote_forwards.first());
    let local = match parsed.map(|f| &f.listen) {
        Some(cli::Listen::Path(path)) => path.to_string_lossy().into_owned(),
        _ => listen.get_ref().clone(),
    };
    let remote = match (&kind, parsed) {
        (TunnelKind::Remote(spec), _) => spec.target.clone(),
        (TunnelKind::Local, Some(f)) if matches!(remote, Destination::Unix(_)) => f.to.clone(),
        _ => remote,
    };
    Ok(TunnelEntry {
        name,
        line: 0,
        kind,
        local,
        remote,
        probe,
        probe_login,
        share_session: s.share_session.or(defaults.share_session).unwrap_or(true),
        config,
        session_args,
    })
}

/// Where a local tunnel's bastion connects (`remote`), or a remote tunnel's connections go
/// (`target`).
fn tunnel_target(way: &Way<'_>, target: &Spanned<String>) -> Result<Destination, Failure> {
    Ok(match way {
        Way::Local { .. } if target.get_ref().contains('/') => {
            Destination::Unix(socket_path(target, "remote")?)
        }
        Way::Remote { .. } if target.get_ref().contains('/') => {
            Destination::Unix(socket_path(target, "target")?)
        }
        _ => {
            let (host, port) = split_host_port(target.get_ref())
                .filter(|(_, p)| *p != 0)
                .ok_or_else(|| {
                    let key = if matches!(way, Way::Local { .. }) {
                        "remote"
                    } else {
                        "target"
                    };
                    (
                        Some(target.span().start),
                        format!(
                            "key `{key}`: {:?} is not a host and port (for example \
                             \"db.internal:5432\"), or the absolute path of a Unix socket{}",
                            target.get_ref(),
                            if key == "remote" {
                                " on the bastion"
                            } else {
                                ""
                            }
                        ),
                    )
                })?;
            Destination::Tcp(Target { host, port })
        }
    })
}

/// `local` as an address and port for the command line; `example` shows one in the error.
fn local_address(local: &Spanned<String>, example: &str) -> Result<String, Failure> {
    let (host, port) = split_host_port(local.get_ref()).ok_or_else(|| {
        (
            Some(local.span().start),
            format!(
                "key `local`: {:?} is not an address and port (for example \"{example}\"), or \
                 the absolute path of a Unix socket",
                local.get_ref()
            ),
        )
    })?;
    Ok(format!("{}:{port}", bracket(&host)))
}

/// The listening part of a `-L`, `-R` or `-D` argument: all of a `-D`'s, a `-L`'s or an
/// `-R`'s up to and with its last colon.
fn forward_listen(way: &Way<'_>) -> Result<String, Failure> {
    Ok(match way {
        Way::Socks { local } if local.get_ref().contains('/') => socket_path(local, "local")?,
        Way::Socks { local } => local_address(local, "127.0.0.1:1080")?,
        Way::Local { local, .. } if local.get_ref().contains('/') => {
            format!("[{}]:", socket_path(local, "local")?)
        }
        Way::Local { local, .. } => format!("{}:", local_address(local, "127.0.0.1:15432")?),
        Way::Remote { listen, .. } if listen.get_ref().contains('/') => {
            format!("[{}]:", socket_path(listen, "bastion_listen")?)
        }
        Way::Remote { listen, .. } => {
            let text = listen.get_ref();
            let parsed = match text.parse::<u16>() {
                Ok(port) => Some((None, port)),
                Err(_) => split_host_port(text).map(|(h, p)| (Some(h), p)),
            };
            let (host, port) = parsed.ok_or_else(|| {
                (
                    Some(listen.span().start),
                    format!(
                        "key `bastion_listen`: {text:?} is not [address:]port (for example \
                         \"8022\", \"0\" or \"127.0.0.1:8022\"), or the absolute path of a \
                         Unix socket on the bastion"
                    ),
                )
            })?;
            match host {
                Some(h) => format!("{}:{port}:", bracket(&h)),
                None => format!("{port}:"),
            }
        }
    })
}

/// The place of the option an error message names, if it names one.
fn option_offset(message: &str, options: &BTreeMap<String, Spanned<OptionValue>>) -> Option<usize> {
    let lower = message.to_ascii_lowercase();
    options
        .iter()
        .find(|(k, _)| lower.contains(&k.to_ascii_lowercase()))
        .map(|(_, v)| v.span().start)
}

/// `~/` at the start of a path, as the command line expands it.
fn expand_home(path: &str, env: &Environment) -> PathBuf {
    match (path.strip_prefix("~/"), &env.home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests;
