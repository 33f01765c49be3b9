//! The control socket's protocol (`ControlMaster`, `-O`), as OpenSSH's PROTOCOL.mux
//! describes it: sans-IO, so that the tokio side ([`crate::control`]) only moves bytes.
//!
//! ```text
//!  control client (ssh -O, forwarder -O)          master (forwarder -M -S path ...)
//!    ── hello, version 4 ──────────────────>    <── hello, version 4 (sent first)
//!    ── ALIVE_CHECK id ───────────────────>     ── ALIVE id pid
//!    ── TERMINATE id ─────────────────────>     ── OK id, then the tunnel stops as on SIGTERM
//!    ── STOP_LISTENING id ────────────────>     ── OK id, then the socket is removed
//!    ── anything else (a session, -W, a
//!       forward, proxy mode) ─────────────>     ── FAILURE id "..."
//! ```
//!
//! Each message is a `uint32` length, then its body: a `uint32` type, the request id (all
//! but hello), and the fields. A body longer than [`MAX_MESSAGE`] ends the connection, as
//! does one that does not parse or a request before the hello.

use std::fmt;

use ssh_transport::wire::{Reader, Writer as _};

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
}

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

/// What the master does after a request, besides the reply it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing more.
    None,
    /// Stop the tunnel, as SIGTERM does (`-O exit`).
    Terminate,
    /// Remove the control socket and accept no more control connections (`-O stop`).
    StopListening,
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
        kind::NEW_STDIO_FWD => {
            "forwarder's control socket does not carry -W; run forwarder -W on its own"
        }
        kind::OPEN_FWD | kind::CLOSE_FWD => {
            "forwarder's control socket does not add or cancel forwards; give them when the \
             tunnel starts"
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
}

impl ControlCommand {
    /// The `-O` word for a command forwarder sends; why not for one it does not.
    pub fn parse(word: &str) -> Result<Self, &'static str> {
        match word {
            "check" => Ok(Self::Check),
            "exit" => Ok(Self::Exit),
            "stop" => Ok(Self::Stop),
            "forward" | "cancel" | "proxy" => {
                Err("forwarder sends check, exit and stop; forwards are given when a tunnel starts")
            }
            _ => Err("check, exit or stop"),
        }
    }

    /// Its `-O` word.
    pub fn word(self) -> &'static str {
        match self {
            Self::Check => "check",
            Self::Exit => "exit",
            Self::Stop => "stop",
        }
    }
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
        let mut r = Reader::new(body);
        let t = r
            .u32()
            .map_err(|_| MuxError::Malformed("no message type"))?;
        if !self.hello {
            if t != kind::HELLO {
                return Err(MuxError::OutOfOrder(t));
            }
            read_hello(&mut r)?;
            self.hello = true;
            return Ok(None);
        }
        let id = r.u32().map_err(|_| MuxError::Malformed("no request id"))?;
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

#[cfg(test)]
mod tests;
