//! The control socket's protocol (`ControlMaster`, `-O`), as OpenSSH's PROTOCOL.mux
//! describes it: sans-IO, so that the tokio side ([`crate::control`]) only moves bytes.
//!
//! ```text
//!  control client (ssh -O, forwarder -O)          master (forwarder -M -S path ...)
//!    ── hello, version 4 ──────────────────>    <── hello, version 4 (sent first)
//!    ── ALIVE_CHECK id ───────────────────>     ── ALIVE id pid
//!    ── TERMINATE id ─────────────────────>     ── OK id, then the tunnel stops as on SIGTERM
//!    ── STOP_LISTENING id ────────────────>     ── OK id, then the socket is removed
//!    ── OPEN_FWD / CLOSE_FWD id type
//!       listen port connect port ─────────>     ── OK id (or REMOTE_PORT id port, or
//!                                                  FAILURE id "..."), once done
//!    ── NEW_STDIO_FWD id host port, then
//!       two bytes carrying stdin and stdout ─>  ── SESSION_OPENED id once the channel is
//!                                                  open (or FAILURE id "..."); the master
//!                                                  closes the connection when it ends
//!    ── anything else (a session,
//!       proxy mode) ──────────────────────>     ── FAILURE id "..."
//! ```
//!
//! Each message is a `uint32` length, then its body: a `uint32` type, the request id (all
//! but hello), and the fields. A body longer than [`MAX_MESSAGE`] ends the connection, as
//! does one that does not parse or a request before the hello.

use std::fmt;

use ssh_transport::wire::{Reader, Writer as _};

use crate::cli::{ForwardSpec, Listen};
use crate::tunnel::{Destination, Target};

/// The protocol version both sides speak.
pub const VERSION: u32 = 4;

/// The longest message body accepted (OpenSSH's own bound for its control channels).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Message types (PROTOCOL.mux section 11).
pub mod kind {
    /// Either side's first message.
    pub const HELLO: u32 = 0x0000_0001;
    /// A passenger session (ssh's `-S path host command`).
    pub const NEW_SESSION: u32 = 0x1000_0002;
    /// `-O check`.
    pub const ALIVE_CHECK: u32 = 0x1000_0004;
    /// `-O exit`.
    pub const TERMINATE: u32 = 0x1000_0005;
    /// `-O forward`.
    pub const OPEN_FWD: u32 = 0x1000_0006;
    /// `-O cancel`.
    pub const CLOSE_FWD: u32 = 0x1000_0007;
    /// `-W` through the master.
    pub const NEW_STDIO_FWD: u32 = 0x1000_0008;
    /// `-O stop`.
    pub const STOP_LISTENING: u32 = 0x1000_0009;
    /// `-O proxy`.
    pub const PROXY: u32 = 0x1000_000f;
    /// Done.
    pub const OK: u32 = 0x8000_0001;
    /// Refused by policy.
    pub const PERMISSION_DENIED: u32 = 0x8000_0002;
    /// Could not be done.
    pub const FAILURE: u32 = 0x8000_0003;
    /// The answer to an alive check.
    pub const ALIVE: u32 = 0x8000_0005;
    /// A session (or `-W`) is open through the master.
    pub const SESSION_OPENED: u32 = 0x8000_0006;
    /// The port the server picked for a remote forward asked on port 0.
    pub const REMOTE_PORT: u32 = 0x8000_0007;
}

/// Forward types in `OPEN_FWD` and `CLOSE_FWD`.
pub mod forward_type {
    /// `-L`.
    pub const LOCAL: u32 = 1;
    /// `-R`.
    pub const REMOTE: u32 = 2;
    /// `-D`.
    pub const DYNAMIC: u32 = 3;
}

/// The port that says its address is a Unix socket's path (OpenSSH's `PORT_STREAMLOCAL`, -2).
pub const PORT_STREAMLOCAL: u32 = 0xffff_fffe;

/// Why a control connection ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxError {
    /// A length over [`MAX_MESSAGE`].
    TooLong(usize),
    /// A message that does not parse.
    Malformed(&'static str),
    /// A request before the hello, or a second hello.
    OutOfOrder(u32),
    /// The peer speaks another version.
    Version(u32),
    /// The master answered with something other than the reply asked for.
    Unexpected(u32),
}

impl fmt::Display for MuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(n) => write!(f, "a control message of {n} bytes (at most {MAX_MESSAGE})"),
            Self::Malformed(what) => write!(f, "a malformed control message: {what}"),
            Self::OutOfOrder(t) => write!(f, "control message 0x{t:08x} out of order"),
            Self::Version(v) => write!(
                f,
                "the other side speaks control protocol version {v}, not {VERSION}"
            ),
            Self::Unexpected(t) => write!(f, "an unexpected control reply 0x{t:08x}"),
        }
    }
}

impl std::error::Error for MuxError {}

/// Splits a byte stream into message bodies, holding at most one message's worth.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole body, if one has arrived. An over-long length is an error at once,
    /// before its bytes are waited for.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, MuxError> {
        let Some(len) = self.buf.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
            return Ok(None);
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_MESSAGE {
            return Err(MuxError::TooLong(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }

    /// Takes `n` bytes that are not a message (those carrying descriptors after a `-W`
    /// request); false, taking none, until that many have arrived.
    pub fn skip(&mut self, n: usize) -> bool {
        if self.buf.len() < n {
            return false;
        }
        self.buf.drain(..n);
        true
    }

    /// Bytes held that are not yet a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Appends `body` to `out` with its length in front.
fn frame(out: &mut Vec<u8>, body: &[u8]) {
    out.put_string(body);
}

/// The hello either side sends first.
pub fn hello(out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(8);
    body.put_u32(kind::HELLO);
    body.put_u32(VERSION);
    frame(out, &body);
}

/// Reads a hello body: the version must be ours; extensions (name, value pairs) are skipped.
fn read_hello(r: &mut Reader<'_>) -> Result<(), MuxError> {
    let version = r
        .u32()
        .map_err(|_| MuxError::Malformed("hello without a version"))?;
    if version != VERSION {
        return Err(MuxError::Version(version));
    }
    while !r.is_empty() {
        r.string()
            .and_then(|_| r.string())
            .map_err(|_| MuxError::Malformed("a hello extension cut short"))?;
    }
    Ok(())
}

/// Which way a forward asked on the control socket goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardWay {
    /// `-L` or `-D`: we listen (a `-D`'s destination is [`Destination::Socks`]).
    Local,
    /// `-R`: the server listens, we connect.
    Remote,
}

/// A forward to add (`-O forward`) or cancel (`-O cancel`), as the command line has it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ForwardRequest {
    /// Which way.
    pub way: ForwardWay,
    /// Where it listens and where it goes.
    pub spec: ForwardSpec,
}

impl ForwardRequest {
    /// The command-line flag: `-L`, `-D` or `-R`.
    pub fn flag(&self) -> &'static str {
        match (self.way, &self.spec.to) {
            (ForwardWay::Local, Destination::Socks) => "-D",
            (ForwardWay::Local, _) => "-L",
            (ForwardWay::Remote, _) => "-R",
        }
    }

    /// Its fields after the request id, as ssh sends them: the type, the listening address
    /// (empty for the default, `*` for all, or a socket's path) and port
    /// ([`PORT_STREAMLOCAL`] for a path), then the same for where it goes (empty and 0 for a
    /// `-D`).
    fn encode(&self, out: &mut Vec<u8>) {
        let ftype = match (self.way, &self.spec.to) {
            (ForwardWay::Local, Destination::Socks) => forward_type::DYNAMIC,
            (ForwardWay::Local, _) => forward_type::LOCAL,
            (ForwardWay::Remote, _) => forward_type::REMOTE,
        };
        out.put_u32(ftype);
        match &self.spec.listen {
            Listen::Port { bind_address, port } => {
                out.put_str(bind_address.as_deref().unwrap_or(""));
                out.put_u32(u32::from(*port));
            }
            Listen::Path(path) => {
                out.put_string(path.as_os_str().as_encoded_bytes());
                out.put_u32(PORT_STREAMLOCAL);
            }
        }
        put_destination(&self.spec.to, out);
    }

    /// Reads the fields [`Self::encode`] writes. A port that is neither 0-65535 nor
    /// [`PORT_STREAMLOCAL`] is malformed (the connection ends, as ssh ends it); a request
    /// that parses but cannot be a forward is `Ok(Err(reason))`, refused with that reason.
    fn decode(r: &mut Reader<'_>) -> Result<Result<Self, &'static str>, MuxError> {
        let malformed = |_| MuxError::Malformed("a forward cut short");
        let ftype = r.u32().map_err(malformed)?;
        let listen = r.string().map_err(malformed)?;
        let lport = r.u32().map_err(malformed)?;
        let connect = r.string().map_err(malformed)?;
        let cport = r.u32().map_err(malformed)?;
        let port = |p: u32| -> Result<Option<u16>, MuxError> {
            if p == PORT_STREAMLOCAL {
                Ok(None)
            } else {
                u16::try_from(p)
                    .map(Some)
                    .map_err(|_| MuxError::Malformed("a forward's port out of range"))
            }
        };
        let (lport, cport) = (port(lport)?, port(cport)?);
        const INVALID: &str = "Invalid forwarding request";
        let text = |b: &[u8]| wire_text(b).map(str::to_owned).ok_or(INVALID);
        let inner = || -> Result<Self, &'static str> {
            let way = match ftype {
                forward_type::LOCAL | forward_type::DYNAMIC => ForwardWay::Local,
                forward_type::REMOTE => ForwardWay::Remote,
                _ => return Err(INVALID),
            };
            let listen_text = text(listen)?;
            let listen = match lport {
                None if listen_text.is_empty() => return Err(INVALID),
                None => Listen::Path(listen_text.into()),
                Some(port) => Listen::Port {
                    bind_address: (!listen_text.is_empty()).then_some(listen_text),
                    port,
                },
            };
            let connect_text = text(connect)?;
            let to = match (ftype, cport) {
                (forward_type::DYNAMIC, _) => Destination::Socks,
                (_, None) if !connect_text.is_empty() => Destination::Unix(connect_text),
                (_, Some(port)) if port != 0 && !connect_text.is_empty() => {
                    Destination::Tcp(Target {
                        host: connect_text,
                        port,
                    })
                }
                _ => return Err(INVALID),
            };
            Ok(Self {
                way,
                spec: ForwardSpec { listen, to },
            })
        };
        Ok(inner())
    }
}

impl fmt::Display for ForwardRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.flag(), self.spec)
    }
}

/// What the master does after a request, besides the reply it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing more.
    None,
    /// Stop the tunnel, as SIGTERM does (`-O exit`).
    Terminate,
    /// Remove the control socket and accept no more control connections (`-O stop`).
    StopListening,
    /// Add (`open`) or cancel a forward, then answer request `id` with [`forward_reply`]:
    /// no reply was written yet, and the next request waits for this one.
    Forward {
        /// The request's id.
        id: u32,
        /// Add it (`-O forward`), or cancel it (`-O cancel`).
        open: bool,
        /// The forward.
        request: ForwardRequest,
    },
    /// `-W` through the master: the client's standard input and output follow the request
    /// (one byte each, carrying the descriptor: [`STDIO_FDS`]), whether or not it can be
    /// done; open a channel to `target` and answer `id` with [`stdio_reply`] (or refuse it
    /// with the reason). No reply was written yet. Once open, the connection carries
    /// nothing else, and the master closes it when the forwarding ends.
    StdioForward {
        /// The request's id.
        id: u32,
        /// Where to, or why that cannot be a destination.
        target: Result<Destination, &'static str>,
    },
}

/// How many descriptors (each carried by one byte) follow a `NEW_STDIO_FWD` request.
pub const STDIO_FDS: usize = 2;

/// A host or path from a request: UTF-8 without NUL, else none.
fn wire_text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok().filter(|t| !t.contains('\0'))
}

/// The master's answer to a `-W` request: `Ok(session)` open, `Err(reason)` not.
pub fn stdio_reply(id: u32, outcome: Result<u32, &str>, out: &mut Vec<u8>) {
    let mut reply = Vec::with_capacity(16);
    match outcome {
        Ok(session) => {
            reply.put_u32(kind::SESSION_OPENED);
            reply.put_u32(id);
            reply.put_u32(session);
        }
        Err(reason) => {
            reply.put_u32(kind::FAILURE);
            reply.put_u32(id);
            reply.put_str(reason);
        }
    }
    frame(out, &reply);
}

/// The fields of a `NEW_STDIO_FWD` after its id, as ssh's `mux_client_request_stdio_fwd`
/// writes them: a reserved string, then the host (or a socket's path) and the port
/// ([`PORT_STREAMLOCAL`] for a path).
fn encode_stdio(target: &Destination, out: &mut Vec<u8>) {
    out.put_str("");
    put_destination(target, out);
}

/// Where a forward goes, as ssh writes it: the host and port, a socket's path and
/// [`PORT_STREAMLOCAL`], or (a `-D`) nothing and 0.
fn put_destination(target: &Destination, out: &mut Vec<u8>) {
    match target {
        Destination::Tcp(t) => {
            out.put_str(&t.host);
            out.put_u32(u32::from(t.port));
        }
        Destination::Unix(path) => {
            out.put_str(path);
            out.put_u32(PORT_STREAMLOCAL);
        }
        Destination::Socks => {
            out.put_str("");
            out.put_u32(0);
        }
    }
}

/// Reads [`encode_stdio`]'s fields: a message cut short is malformed; a destination that
/// cannot be one is `Ok(Err(reason))`.
fn decode_stdio(r: &mut Reader<'_>) -> Result<Result<Destination, &'static str>, MuxError> {
    let malformed = |_| MuxError::Malformed("a stdio forward cut short");
    r.string().map_err(malformed)?;
    let host = r.string().map_err(malformed)?;
    let port = r.u32().map_err(malformed)?;
    const INVALID: &str = "Invalid stdio forwarding request";
    let Some(host) = wire_text(host).filter(|h| !h.is_empty()) else {
        return Ok(Err(INVALID));
    };
    Ok(match port {
        PORT_STREAMLOCAL => Ok(Destination::Unix(host.to_owned())),
        1..=65535 => Ok(Destination::Tcp(Target {
            host: host.to_owned(),
            port: u16::try_from(port).unwrap_or_default(),
        })),
        _ => Err(INVALID),
    })
}

/// The master's answer to a forward request: `Ok(None)` done, `Ok(Some(port))` a remote
/// forward listening on the port the server picked, `Err(reason)` not done.
pub fn forward_reply(id: u32, outcome: Result<Option<u16>, &str>, out: &mut Vec<u8>) {
    let mut reply = Vec::with_capacity(16);
    match outcome {
        Ok(None) => {
            reply.put_u32(kind::OK);
            reply.put_u32(id);
        }
        Ok(Some(port)) => {
            reply.put_u32(kind::REMOTE_PORT);
            reply.put_u32(id);
            reply.put_u32(u32::from(port));
        }
        Err(reason) => {
            reply.put_u32(kind::FAILURE);
            reply.put_u32(id);
            reply.put_str(reason);
        }
    }
    frame(out, &reply);
}

/// One control connection, on the master's side.
#[derive(Debug)]
pub struct Master {
    pid: u32,
    hello: bool,
}

impl Master {
    /// A connection to the master of process `pid`; the master sends [`hello`] first.
    pub fn new(pid: u32) -> Self {
        Self { pid, hello: false }
    }

    /// Handles one message body, appending the reply (framed) to `out`.
    pub fn handle(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<Effect, MuxError> {
        let mut r = Reader::new(body);
        let t = r
            .u32()
            .map_err(|_| MuxError::Malformed("no message type"))?;
        if t == kind::HELLO {
            if self.hello {
                return Err(MuxError::OutOfOrder(t));
            }
            read_hello(&mut r)?;
            self.hello = true;
            return Ok(Effect::None);
        }
        if !self.hello {
            return Err(MuxError::OutOfOrder(t));
        }
        let id = r.u32().map_err(|_| MuxError::Malformed("no request id"))?;
        let mut reply = Vec::with_capacity(16);
        let effect = match t {
            kind::ALIVE_CHECK => {
                reply.put_u32(kind::ALIVE);
                reply.put_u32(id);
                reply.put_u32(self.pid);
                Effect::None
            }
            kind::TERMINATE => {
                reply.put_u32(kind::OK);
                reply.put_u32(id);
                Effect::Terminate
            }
            kind::STOP_LISTENING => {
                reply.put_u32(kind::OK);
                reply.put_u32(id);
                Effect::StopListening
            }
            kind::NEW_STDIO_FWD => {
                let target = decode_stdio(&mut r)?;
                return Ok(Effect::StdioForward { id, target });
            }
            kind::OPEN_FWD | kind::CLOSE_FWD => match ForwardRequest::decode(&mut r)? {
                Ok(request) => {
                    return Ok(Effect::Forward {
                        id,
                        open: t == kind::OPEN_FWD,
                        request,
                    });
                }
                Err(reason) => {
                    forward_reply(id, Err(reason), out);
                    return Ok(Effect::None);
                }
            },
            other => {
                reply.put_u32(kind::FAILURE);
                reply.put_u32(id);
                reply.put_str(refusal(other));
                Effect::None
            }
        };
        frame(out, &reply);
        Ok(effect)
    }
}

/// Why the master does not do request `t`.
fn refusal(t: u32) -> &'static str {
    match t {
        kind::NEW_SESSION => {
            "forwarder's control socket opens no sessions (it only forwards); connect without -S"
        }
        kind::PROXY => "forwarder's control socket has no proxy mode",
        _ => "unsupported request",
    }
}

/// A request a control client makes (`-O`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlCommand {
    /// `-O check`: is a master running, and its pid.
    Check,
    /// `-O exit`: stop the master.
    Exit,
    /// `-O stop`: the master stops taking control connections.
    Stop,
    /// `-O forward`: the master adds the command line's `-L`, `-R` and `-D` forwards.
    Forward,
    /// `-O cancel`: the master cancels them.
    Cancel,
}

impl ControlCommand {
    /// The `-O` word for a command forwarder sends; why not for one it does not.
    pub fn parse(word: &str) -> Result<Self, &'static str> {
        match word {
            "check" => Ok(Self::Check),
            "exit" => Ok(Self::Exit),
            "stop" => Ok(Self::Stop),
            "forward" => Ok(Self::Forward),
            "cancel" => Ok(Self::Cancel),
            "proxy" => Err("check, exit, stop, forward or cancel (forwarder has no proxy mode)"),
            _ => Err("check, exit, stop, forward or cancel"),
        }
    }

    /// Its `-O` word.
    pub fn word(self) -> &'static str {
        match self {
            Self::Check => "check",
            Self::Exit => "exit",
            Self::Stop => "stop",
            Self::Forward => "forward",
            Self::Cancel => "cancel",
        }
    }
}

/// A body from the master, on a client's side: `None` for its hello (which must come first,
/// and once), else the reply's type, its request id, and the rest.
fn from_master<'a>(
    body: &'a [u8],
    hello: &mut bool,
) -> Result<Option<(u32, u32, Reader<'a>)>, MuxError> {
    let mut r = Reader::new(body);
    let t = r
        .u32()
        .map_err(|_| MuxError::Malformed("no message type"))?;
    if !*hello {
        if t != kind::HELLO {
            return Err(MuxError::OutOfOrder(t));
        }
        read_hello(&mut r)?;
        *hello = true;
        return Ok(None);
    }
    let id = r.u32().map_err(|_| MuxError::Malformed("no request id"))?;
    Ok(Some((t, id, r)))
}

/// One control connection, on the client's side: the hello, then one request.
#[derive(Debug)]
pub struct Client {
    command: ControlCommand,
    hello: bool,
}

/// Request ids start here; one request is made per connection.
const REQUEST_ID: u32 = 1;

impl Client {
    /// A client that will send `command`. Its first bytes are [`Client::start`]'s.
    pub fn new(command: ControlCommand) -> Self {
        Self {
            command,
            hello: false,
        }
    }

    /// The hello and the request, framed.
    pub fn start(&self, out: &mut Vec<u8>) {
        hello(out);
        let mut body = Vec::with_capacity(8);
        body.put_u32(match self.command {
            ControlCommand::Check => kind::ALIVE_CHECK,
            ControlCommand::Exit => kind::TERMINATE,
            ControlCommand::Stop => kind::STOP_LISTENING,
            // Sent by a [`ForwardClient`]; asked of this one, the master says it is alive.
            ControlCommand::Forward | ControlCommand::Cancel => kind::ALIVE_CHECK,
        });
        body.put_u32(REQUEST_ID);
        frame(out, &body);
    }

    /// Whether the master's hello has come.
    pub fn greeted(&self) -> bool {
        self.hello
    }

    /// What the request came to when the master closed the connection before answering:
    /// for `-O exit`, done (a master may end before its answer leaves, as ssh's does; ssh
    /// counts that as done too).
    pub fn outcome_at_close(&self) -> Option<String> {
        (self.hello && self.command == ControlCommand::Exit)
            .then(|| "Exit request sent.".to_owned())
    }

    /// Handles one body from the master: `None` after its hello, then the outcome: what to
    /// print (`Ok`) or the master's refusal (`Err` of the reason), as ssh words them.
    pub fn handle(&mut self, body: &[u8]) -> Result<Option<Result<String, String>>, MuxError> {
        let Some((t, id, mut r)) = from_master(body, &mut self.hello)? else {
            return Ok(None);
        };
        if id != REQUEST_ID {
            return Err(MuxError::Malformed("a reply to another request"));
        }
        let outcome = match (self.command, t) {
            (ControlCommand::Check, kind::ALIVE) => {
                let pid = r.u32().map_err(|_| MuxError::Malformed("no pid"))?;
                Ok(format!("Master running (pid={pid})"))
            }
            (ControlCommand::Exit, kind::OK) => Ok("Exit request sent.".to_owned()),
            (ControlCommand::Stop, kind::OK) => Ok("Stop listening request sent.".to_owned()),
            (_, kind::PERMISSION_DENIED | kind::FAILURE) => {
                let reason = r.string().map_err(|_| MuxError::Malformed("no reason"))?;
                let how = if t == kind::FAILURE {
                    "failed"
                } else {
                    "was refused"
                };
                Err(format!(
                    "the master's answer to -O {}: the request {how}: {}",
                    self.command.word(),
                    ssh_transport::text::sanitize(reason, false, 512)
                ))
            }
            (_, other) => return Err(MuxError::Unexpected(other)),
        };
        Ok(Some(outcome))
    }
}

/// What `-O forward` or `-O cancel` came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardOutcome {
    /// For standard output: the port the server picked for each `-R` asked on port 0 (as ssh
    /// prints it for `-O forward`).
    pub ports: Vec<u16>,
    /// The forwards the master did not add or cancel, with its reason.
    pub refused: Vec<String>,
}

/// One control connection for `-O forward` or `-O cancel`, on the client's side: the hello,
/// then one request per forward, each sent once the one before is answered (as ssh sends
/// them), ids from 1.
#[derive(Debug)]
pub struct ForwardClient {
    open: bool,
    requests: Vec<ForwardRequest>,
    /// How many have been answered.
    answered: usize,
    hello: bool,
    outcome: ForwardOutcome,
}

impl ForwardClient {
    /// A client that asks the master to add (`open`) or cancel each of `requests`.
    pub fn new(open: bool, requests: Vec<ForwardRequest>) -> Self {
        Self {
            open,
            requests,
            answered: 0,
            hello: false,
            outcome: ForwardOutcome::default(),
        }
    }

    /// The hello and the first request, framed.
    pub fn start(&self, out: &mut Vec<u8>) {
        hello(out);
        self.request(0, out);
    }

    fn request(&self, i: usize, out: &mut Vec<u8>) {
        let Some(request) = self.requests.get(i) else {
            return;
        };
        let mut body = Vec::with_capacity(64);
        body.put_u32(if self.open {
            kind::OPEN_FWD
        } else {
            kind::CLOSE_FWD
        });
        body.put_u32(Self::id(i));
        request.encode(&mut body);
        frame(out, &body);
    }

    fn id(i: usize) -> u32 {
        u32::try_from(i).map_or(u32::MAX, |i| i.saturating_add(REQUEST_ID))
    }

    /// Whether every request has been answered (at once when there are none).
    pub fn done(&self) -> bool {
        self.answered >= self.requests.len()
    }

    /// Handles one body from the master, appending the next request to `out`; the outcome
    /// once every request is answered.
    pub fn handle(
        &mut self,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<ForwardOutcome>, MuxError> {
        let Some((t, id, mut r)) = from_master(body, &mut self.hello)? else {
            return Ok(self.done().then(|| self.outcome.clone()));
        };
        let Some(request) = self.requests.get(self.answered) else {
            return Err(MuxError::Unexpected(t));
        };
        if id != Self::id(self.answered) {
            return Err(MuxError::Malformed("a reply to another request"));
        }
        match t {
            kind::OK => {}
            kind::REMOTE_PORT if self.open && request.way == ForwardWay::Remote => {
                let port = r.u32().map_err(|_| MuxError::Malformed("no port"))?;
                let port = u16::try_from(port)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(MuxError::Malformed("an allocated port out of range"))?;
                self.outcome.ports.push(port);
            }
            kind::PERMISSION_DENIED | kind::FAILURE => {
                let reason = r.string().map_err(|_| MuxError::Malformed("no reason"))?;
                self.outcome.refused.push(format!(
                    "the master's answer to -O {} {request}: the request {}: {}",
                    if self.open { "forward" } else { "cancel" },
                    if t == kind::FAILURE {
                        "failed"
                    } else {
                        "was refused"
                    },
                    ssh_transport::text::sanitize(reason, false, 512)
                ));
            }
            other => return Err(MuxError::Unexpected(other)),
        }
        self.answered += 1;
        self.request(self.answered, out);
        Ok(self.done().then(|| self.outcome.clone()))
    }
}

/// What `-W` through a master came to, on the client's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StdioOutcome {
    /// The channel is open: the master forwards standard input and output, and closes the
    /// connection when it is done.
    Opened,
    /// The master's refusal, as ssh words it.
    Refused(String),
}

/// One control connection for `-W` through a master, on the client's side, as ssh's client
/// holds it: the hello ([`hello`]) and the master's; then the request
/// ([`StdioClient::request`]), after which the caller sends standard input and output
/// ([`STDIO_FDS`] bytes, each carrying one); then the master's answer.
#[derive(Debug)]
pub struct StdioClient {
    target: Destination,
    hello: bool,
}

impl StdioClient {
    /// A client that asks for a forward to `target`.
    pub fn new(target: Destination) -> Self {
        Self {
            target,
            hello: false,
        }
    }

    /// Whether the master's hello has come: the request may go.
    pub fn greeted(&self) -> bool {
        self.hello
    }

    /// The request, framed.
    pub fn request(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(64);
        body.put_u32(kind::NEW_STDIO_FWD);
        body.put_u32(REQUEST_ID);
        encode_stdio(&self.target, &mut body);
        frame(out, &body);
    }

    /// Handles one body from the master: `None` after its hello, then the outcome.
    pub fn handle(&mut self, body: &[u8]) -> Result<Option<StdioOutcome>, MuxError> {
        let Some((t, id, mut r)) = from_master(body, &mut self.hello)? else {
            return Ok(None);
        };
        if id != REQUEST_ID {
            return Err(MuxError::Malformed("a reply to another request"));
        }
        match t {
            kind::SESSION_OPENED => {
                r.u32().map_err(|_| MuxError::Malformed("no session id"))?;
                Ok(Some(StdioOutcome::Opened))
            }
            kind::PERMISSION_DENIED | kind::FAILURE => {
                let reason = r.string().map_err(|_| MuxError::Malformed("no reason"))?;
                let reason = ssh_transport::text::sanitize(reason, false, 512);
                Ok(Some(StdioOutcome::Refused(if t == kind::FAILURE {
                    format!("Stdio forwarding request failed: {reason}")
                } else {
                    format!("Master refused stdio forwarding request: {reason}")
                })))
            }
            other => Err(MuxError::Unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests;
