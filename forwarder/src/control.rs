//! The control socket (`ControlMaster`, `ControlPath`; `-M`, `-S`, `-O`), so that a script
//! that started `forwarder -M -S ~/.ssh/cm-%C -f -N -L ...` can ask whether the tunnel runs
//! and stop it with `ssh -S ~/.ssh/cm-%C -O exit host` (or `forwarder -S ... -O exit host`),
//! as it would an ssh master. The protocol is [`crate::mux`]'s; this is its IO.
//!
//! ```text
//!  forwarder -M -S path ...: first session up ──> socket at path, mode 0600
//!      each connection from this user (or root): hello, then check / exit / stop /
//!      forward / cancel
//!      exit ──> the tunnel stops as on SIGTERM      stop ──> socket removed, no more
//!      forward -L / -D ──> bound and served          cancel ──> its listeners close
//!      forward -R ──> asked of the server, answered   cancel -R ──> the server told to stop
//!                     with its answer
//!      -W host:port + the client's stdin and stdout ──> a channel, answered once open; the
//!                     connection closed when the forwarding ends
//!  forwarder -S path -O check|exit|stop host ──> one request, the answer on stderr
//!  forwarder -S path -O forward|cancel -L ... host ──> one request per forward
//!  forwarder -S path -W host:port host ──> stdin and stdout passed to the master, which
//!                     forwards them; exits when it closes the connection (no master there:
//!                     connects on its own)
//! ```
//!
//! The socket is made as ssh makes it: bound under a random name beside the path, then
//! linked into place, so that a client never meets a socket that does not listen yet and a
//! socket already there is never replaced. It is removed when the tunnel ends.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::cli::{ControlMaster, ControlPersist};
use crate::forwards::Forwards;
use crate::mux::{self, ControlCommand, Effect, ForwardRequest, ForwardWay, Framer};

/// How long a control connection may stay silent before it is closed.
const IDLE: Duration = Duration::from_secs(60);
/// Control connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
/// How long `-O` waits for the master.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `-O forward` and `-O cancel` wait for each answer: a master may wait for its
/// server's answer to an `-R` (forwarder's, up to [`crate::forwards::REMOTE_ANSWER`]).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(45);

/// A control socket being served; removed (if it is still ours) when dropped.
#[derive(Debug)]
pub struct Control {
    path: PathBuf,
    /// The socket's device and inode, to tell it from one put there later.
    identity: (u64, u64),
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
        remove_if_ours(&self.path, self.identity);
    }
}

fn identity_of(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.dev(), m.ino()))
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn remove_if_ours(path: &Path, identity: (u64, u64)) {
    if identity_of(path) == Some(identity) {
        let _ = std::fs::remove_file(path);
    }
}

/// Serves a control socket at `path` as `master` says, once the first session is up.
/// `terminate` is notified on `-O exit`, and, with `persist` a time, once no control client
/// has been connected for that long; `-O forward` and `-O cancel` change `forwards`. `None` when there is none to serve: `no`, a socket
/// already at the path (a warning, as ssh gives, and the tunnel runs without), or with `auto`
/// a master that answers there.
pub async fn start(
    master: ControlMaster,
    path: Option<&Path>,
    terminate: Arc<Notify>,
    forwards: Arc<Forwards>,
    persist: ControlPersist,
) -> std::io::Result<Option<Control>> {
    let Some(path) = path else {
        if master != ControlMaster::No {
            debug!("ControlMaster without a ControlPath: no control socket");
        }
        return Ok(None);
    };
    match master {
        ControlMaster::No => return Ok(None),
        ControlMaster::Yes => {}
        ControlMaster::Auto => {
            // ssh would share a live master's connection; forwarder leaves it alone. A
            // socket nobody answers on is a stale one, and goes (ssh removes whatever refuses
            // the connection; a file that is not a socket stays here).
            match UnixStream::connect(path).await {
                Ok(_) => {
                    info!(
                        path = %path.display(),
                        "a master already answers at the ControlPath: this tunnel connects on \
                         its own and serves no control socket"
                    );
                    return Ok(None);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && is_socket(path) => {
                    debug!(path = %path.display(), "removing a stale control socket");
                    let _ = std::fs::remove_file(path);
                }
                Err(_) => {}
            }
        }
    }
    let listener = match bind_in_place(path)? {
        Some(l) => l,
        None => {
            crate::notice::warning(format!(
                "ControlSocket {} already exists, disabling multiplexing",
                path.display()
            ));
            return Ok(None);
        }
    };
    let identity = identity_of(path).unwrap_or_default();
    let task = tokio::spawn(serve(
        listener,
        path.to_path_buf(),
        identity,
        terminate,
        forwards,
        persist,
    ));
    debug!(path = %path.display(), "control socket listening");
    Ok(Some(Control {
        path: path.to_path_buf(),
        identity,
        task,
    }))
}

/// Binds a socket under a random name beside `path`, mode 0600, and links it into place.
/// `None` when something is already at `path`.
fn bind_in_place(path: &Path) -> std::io::Result<Option<UnixListener>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut random = [0u8; 8];
    ssh_transport::random::SecureRandom::fill(&mut ssh_transport::random::OsRandom, &mut random);
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{:016x}", u64::from_le_bytes(random)));
    let temp = PathBuf::from(temp);
    let context = |what: &str, e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("cannot {what} the control socket {}: {e}", path.display()),
        )
    };
    let listener =
        std::os::unix::net::UnixListener::bind(&temp).map_err(|e| context("create", e))?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match placed {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(context("place", e)),
    }
    listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(listener))
        .map(Some)
        .map_err(|e| context("serve", e))
}

async fn serve(
    listener: UnixListener,
    path: PathBuf,
    identity: (u64, u64),
    terminate: Arc<Notify>,
    forwards: Arc<Forwards>,
    persist: ControlPersist,
) {
    let stop = Arc::new(Notify::new());
    // ControlPersist: how long without a control client before the master stops.
    let idle_limit = match persist {
        ControlPersist::Idle(limit) => Some(limit),
        ControlPersist::No | ControlPersist::Forever => None,
    };
    let mut tick = tokio::time::interval(idle_limit.map_or(Duration::from_secs(1), |l| {
        (l / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }));
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut idle_since = tokio::time::Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let stdio_slots = Arc::new(tokio::sync::Semaphore::new(MAX_STDIO));
    let uid = rustix::process::getuid();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.notified() => {
                remove_if_ours(&path, identity);
                info!(path = %path.display(), "control socket removed (-O stop)");
                return;
            }
            _ = tick.tick(), if idle_limit.is_some() => {
                let now = tokio::time::Instant::now();
                if active.load(std::sync::atomic::Ordering::Acquire) > 0 {
                    idle_since = now;
                } else if let Some(limit) = idle_limit
                    && now.duration_since(idle_since) >= limit
                {
                    info!(
                        "stopping: no control client for {} s (ControlPersist)",
                        limit.as_secs()
                    );
                    remove_if_ours(&path, identity);
                    terminate.notify_one();
                    return;
                }
                continue;
            }
        };
        idle_since = tokio::time::Instant::now();
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: try again shortly.
                debug!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // As ssh: only this user, or root.
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == uid.as_raw() || cred.uid() == 0 => {}
            Ok(cred) => {
                warn!(
                    peer_uid = cred.uid(),
                    "control connection from another user refused"
                );
                continue;
            }
            Err(e) => {
                warn!(error = %e, "control connection refused: its user is unknown");
                continue;
            }
        }
        let (terminate, stop, forwards) = (terminate.clone(), stop.clone(), forwards.clone());
        let stdio_slots = stdio_slots.clone();
        let active = Active::enter(&active);
        tokio::spawn(async move {
            let _active = active;
            let served = Served {
                terminate: &terminate,
                stop: &stop,
                forwards: &forwards,
                stdio_slots,
            };
            if let Err(e) = connection(stream, slot, served).await {
                debug!(error = %e, "control connection ended");
            }
        });
    }
}

/// One control connection counted while it lasts, for `ControlPersist`.
struct Active(Arc<std::sync::atomic::AtomicUsize>);

impl Active {
    fn enter(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Descriptors a control connection may have sent and not yet used (a `-W` client sends
/// two); more end the connection.
const MAX_FDS: usize = 8;

/// `-W` forwards through the master at once (each holds its control connection open for
/// as long as it lasts; they do not count against [`MAX_CONNECTIONS`]).
const MAX_STDIO: usize = 256;

/// What a control connection acts on.
struct Served<'a> {
    terminate: &'a Notify,
    stop: &'a Notify,
    forwards: &'a Forwards,
    stdio_slots: Arc<tokio::sync::Semaphore>,
}

/// One control connection, holding `slot` of [`MAX_CONNECTIONS`]: the master's hello, then
/// each request answered in turn. A `-W` request ends that: the connection then stands for
/// the forwarding (holding one of [`MAX_STDIO`] instead), closed when it ends.
async fn connection(
    mut stream: UnixStream,
    slot: tokio::sync::OwnedSemaphorePermit,
    served: Served<'_>,
) -> Result<(), String> {
    let Served {
        terminate,
        stop,
        forwards,
        stdio_slots,
    } = served;
    let mut master = mux::Master::new(std::process::id());
    let mut out = Vec::new();
    mux::hello(&mut out);
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut framer = Framer::default();
    let mut fds = VecDeque::new();
    loop {
        if !read_more(&stream, &mut framer, &mut fds).await? {
            return Ok(());
        }
        while let Some(body) = framer.next_message().map_err(|e| e.to_string())? {
            out.clear();
            let effect = master.handle(&body, &mut out).map_err(|e| e.to_string())?;
            if let Effect::Forward { id, open, request } = &effect {
                // Answered once done; the next request waits, as ssh's master makes it wait.
                let done = forward(forwards, *open, request).await;
                if let Err(e) = &done {
                    warn!(
                        "-O {} {request}: {e}",
                        if *open { "forward" } else { "cancel" }
                    );
                }
                mux::forward_reply(
                    *id,
                    done.as_ref().copied().map_err(String::as_str),
                    &mut out,
                );
            }
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            match effect {
                Effect::None | Effect::Forward { .. } => {}
                Effect::Terminate => {
                    info!("stopping: asked on the control socket (-O exit)");
                    terminate.notify_one();
                }
                Effect::StopListening => stop.notify_one(),
                Effect::StdioForward { id, target } => {
                    // The two bytes that carry the client's standard input and output.
                    while !framer.skip(mux::STDIO_FDS) {
                        if !read_more(&stream, &mut framer, &mut fds).await? {
                            return Ok(());
                        }
                    }
                    let ends = (fds.pop_front(), fds.pop_front());
                    let (Some(input), Some(output)) = ends else {
                        out.clear();
                        mux::stdio_reply(id, Err("did not receive file descriptors"), &mut out);
                        let _ = stream.write_all(&out).await;
                        return Err("a -W request without its descriptors".into());
                    };
                    drop(slot);
                    let Ok(_stdio_slot) = stdio_slots.try_acquire_owned() else {
                        out.clear();
                        let full = format!("{MAX_STDIO} -W forwards run through this master");
                        mux::stdio_reply(id, Err(&full), &mut out);
                        let _ = stream.write_all(&out).await;
                        return Err(full);
                    };
                    return match target {
                        Ok(target) => {
                            stdio_forward(stream, id, &target, input, output, forwards).await
                        }
                        Err(reason) => {
                            out.clear();
                            mux::stdio_reply(id, Err(reason), &mut out);
                            let _ = stream.write_all(&out).await;
                            Err(reason.to_owned())
                        }
                    };
                }
            }
        }
    }
}

/// Reads what the client sent into `framer`, and the descriptors that came with it into
/// `fds`; false at its end. Bounded by [`IDLE`].
async fn read_more(
    stream: &UnixStream,
    framer: &mut Framer,
    fds: &mut VecDeque<OwnedFd>,
) -> Result<bool, String> {
    let mut buf = [0u8; 4096];
    let n = match tokio::time::timeout(IDLE, receive(stream, &mut buf, fds)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("silent for {} s", IDLE.as_secs())),
    };
    if fds.len() > MAX_FDS {
        return Err(format!("{} descriptors sent unasked", fds.len()));
    }
    framer.push(&buf[..n]);
    Ok(n > 0)
}

/// One read from a control connection, with the descriptors it carried (`SCM_RIGHTS`, at
/// most four per read; the kernel closes any beyond). Every read takes them: a plain read
/// would let the kernel drop them.
async fn receive(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> std::io::Result<usize> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    loop {
        stream.readable().await?;
        let read = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = rustix::net::recvmsg(
                stream,
                &mut [std::io::IoSliceMut::new(buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            let mut passed = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    passed.extend(rights);
                }
            }
            Ok((got.bytes, passed))
        });
        match read {
            Ok((n, passed)) => {
                fds.extend(passed);
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// `-W` through this master: a channel to `target` on the current session, then the
/// client's standard input (`input`) to it and it to the client's standard output
/// (`output`), until it ends or the client goes away. The client is answered once the
/// channel is open (or with why not); the connection is closed when the forwarding ends,
/// which is the client's signal to exit, as with ssh's master.
async fn stdio_forward(
    mut stream: UnixStream,
    id: u32,
    target: &crate::tunnel::Destination,
    input: OwnedFd,
    output: OwnedFd,
    forwards: &Forwards,
) -> Result<(), String> {
    let mut out = Vec::new();
    let opened = async {
        let ends = StdioEnds::new(input, output)
            .map_err(|e| format!("cannot use the client's standard input and output: {e}"))?;
        let session = forwards.session().await?;
        let channel = crate::tunnel::open_channel(&session, target, &crate::local::Peer::OURSELVES)
            .await
            .map_err(|e| format!("Session open refused by peer: {e}"))?;
        Ok::<_, String>((ends, session, channel))
    };
    let (mut ends, session, channel) = match opened.await {
        Ok(opened) => opened,
        Err(reason) => {
            warn!("-W {target} through the control socket: {reason}");
            mux::stdio_reply(id, Err(&reason), &mut out);
            let _ = stream.write_all(&out).await;
            return Err(reason);
        }
    };
    mux::stdio_reply(id, Ok(channel.id().0), &mut out);
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    debug!("-W {target} through the control socket: forwarding");
    let server_closed = channel.server_closed();
    let copy = crate::stdio::copy_both(
        &mut ends.input,
        &mut ends.output,
        &channel,
        &channel,
        server_closed,
    );
    // The client only waits; its going away (its end of file) ends the forwarding.
    let client_gone = async {
        let mut buf = [0u8; 64];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let result = tokio::select! {
        r = copy => r.map_err(|e| e.to_string()),
        () = client_gone => Err("the control client went away".to_owned()),
        e = session.ended() => Err(format!("the SSH session ended ({e})")),
    };
    drop(channel);
    drop(ends);
    debug!("-W {target} through the control socket: done");
    result
}

/// A `-W` client's standard input and output, made non-blocking for the master's event
/// loop. What their flags were is put back when this is dropped, however the forwarding
/// ended (the client's terminal or pipe is shared with it and what it runs after).
struct StdioEnds {
    input: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    output: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    /// Dropped last, once both ends are closed.
    _flags: FlagsBack,
}

/// Descriptors' flags as they were, put back when dropped: duplicates to set them through
/// (the flags belong to what the descriptors share).
struct FlagsBack(Vec<(OwnedFd, rustix::fs::OFlags)>);

impl Drop for FlagsBack {
    fn drop(&mut self) {
        for (fd, was) in &self.0 {
            let _ = rustix::fs::fcntl_setfl(fd, *was);
        }
    }
}

impl StdioEnds {
    fn new(input: OwnedFd, output: OwnedFd) -> std::io::Result<Self> {
        use tokio::net::unix::pipe;
        let mut flags = FlagsBack(Vec::with_capacity(2));
        for fd in [&input, &output] {
            flags
                .0
                .push((rustix::io::dup(fd)?, rustix::fs::fcntl_getfl(fd)?));
        }
        // A pipe, socket or terminal is polled; a file (or /dev/null) cannot be, and is
        // read and written as a file.
        let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if pollable(&input) {
            rustix::io::ioctl_fionbio(&input, true)?;
            Box::new(pipe::Receiver::from_owned_fd_unchecked(input)?)
        } else {
            Box::new(tokio::fs::File::from_std(std::fs::File::from(input)))
        };
        let output: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if pollable(&output) {
            rustix::io::ioctl_fionbio(&output, true)?;
            Box::new(pipe::Sender::from_owned_fd_unchecked(output)?)
        } else {
            Box::new(tokio::fs::File::from_std(std::fs::File::from(output)))
        };
        Ok(Self {
            input,
            output,
            _flags: flags,
        })
    }
}

/// Whether `fd` is a pipe, socket or character device other than `/dev/null`'s kind
/// (a terminal): what epoll can wait on.
fn pollable(fd: &OwnedFd) -> bool {
    use rustix::fs::FileType;
    let Ok(stat) = rustix::fs::fstat(fd) else {
        return false;
    };
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo | FileType::Socket => true,
        FileType::CharacterDevice => rustix::termios::isatty(fd),
        _ => false,
    }
}

/// What `-O forward` (`open`) or `-O cancel` does to the master's forwards: for an `-R` on
/// port 0 added, the port the server picked.
async fn forward(
    forwards: &Forwards,
    open: bool,
    request: &ForwardRequest,
) -> Result<Option<u16>, String> {
    match (request.way, open) {
        (ForwardWay::Local, true) => forwards.open(request.spec.clone()).await.map(|()| None),
        (ForwardWay::Local, false) => forwards.cancel(&request.spec).await.map(|()| None),
        (ForwardWay::Remote, true) => forwards.open_remote(&request.spec).await,
        (ForwardWay::Remote, false) => forwards.cancel_remote(&request.spec).await.map(|()| None),
    }
}

/// `-O command`: sends it to the master at `path` and prints the answer on stderr, as ssh
/// does; `-O forward` and `-O cancel` send `forwards`, one request each. The exit status: 0
/// when done, 255 otherwise.
pub fn run_command(
    path: Option<&Path>,
    command: ControlCommand,
    forwards: Vec<ForwardRequest>,
) -> i32 {
    let Some(path) = path else {
        eprintln!("forwarder: no ControlPath specified for \"-O\" command (give -S path)");
        return crate::app::EXIT_FAILURE;
    };
    if matches!(command, ControlCommand::Forward | ControlCommand::Cancel) {
        return run_forwards(path, command == ControlCommand::Forward, forwards);
    }
    match ask(path, command) {
        Ok(Ok(said)) => {
            eprintln!("{said}");
            0
        }
        Ok(Err(refused)) => {
            eprintln!("forwarder: {refused}");
            crate::app::EXIT_FAILURE
        }
        Err(e) => {
            eprintln!("forwarder: {e}");
            crate::app::EXIT_FAILURE
        }
    }
}

/// One request to the master: its answer (`Ok`) or refusal (`Err`), or why there was none.
fn ask(path: &Path, command: ControlCommand) -> Result<Result<String, String>, String> {
    converse(path, mux::Client::new(command))
}

/// A control client's side of one connection, to [`converse`].
trait Conversation {
    /// What it comes to.
    type Outcome;
    /// Its first bytes.
    fn start(&self, out: &mut Vec<u8>);
    /// One body from the master; what to send next goes to `out`.
    fn handle(
        &mut self,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Self::Outcome>, mux::MuxError>;
    /// The outcome when the master closes the connection first, if that is one.
    fn at_close(&self) -> Option<Self::Outcome>;
    /// How long each read and write may take.
    fn timeout(&self) -> Duration {
        CLIENT_TIMEOUT
    }
}

impl Conversation for mux::Client {
    type Outcome = Result<String, String>;
    fn start(&self, out: &mut Vec<u8>) {
        mux::Client::start(self, out);
    }
    fn handle(
        &mut self,
        body: &[u8],
        _: &mut Vec<u8>,
    ) -> Result<Option<Self::Outcome>, mux::MuxError> {
        mux::Client::handle(self, body)
    }
    fn at_close(&self) -> Option<Self::Outcome> {
        self.outcome_at_close().map(Ok)
    }
}

impl Conversation for mux::ForwardClient {
    type Outcome = mux::ForwardOutcome;
    fn start(&self, out: &mut Vec<u8>) {
        mux::ForwardClient::start(self, out);
    }
    fn handle(
        &mut self,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Self::Outcome>, mux::MuxError> {
        mux::ForwardClient::handle(self, body, out)
    }
    fn at_close(&self) -> Option<Self::Outcome> {
        None
    }
    fn timeout(&self) -> Duration {
        FORWARD_TIMEOUT
    }
}

/// Connects to the master at `path` and holds `client`'s side of the conversation, each
/// read and write bounded by its [`Conversation::timeout`].
fn converse<C: Conversation>(path: &Path, mut client: C) -> Result<C::Outcome, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| format!("Control socket connect({}): {e}", path.display()))?;
    let io = |e: std::io::Error| format!("control socket {}: {e}", path.display());
    stream
        .set_read_timeout(Some(client.timeout()))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(client.timeout()))
        .map_err(io)?;
    let mut out = Vec::new();
    client.start(&mut out);
    stream.write_all(&out).map_err(io)?;
    let mut framer = Framer::default();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(body) = framer.next_message().map_err(|e| e.to_string())? {
            out.clear();
            let outcome = client.handle(&body, &mut out).map_err(|e| e.to_string())?;
            stream.write_all(&out).map_err(io)?;
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            return client.at_close().ok_or_else(|| {
                format!(
                    "control socket {}: the master closed the connection without an answer",
                    path.display()
                )
            });
        }
        framer.push(&buf[..n]);
    }
}

/// `-O forward` (`open`) or `-O cancel`: each port the server picked for a `-R` on port 0 on
/// standard output, as ssh prints them; each refusal on stderr.
fn run_forwards(path: &Path, open: bool, forwards: Vec<ForwardRequest>) -> i32 {
    let word = if open { "forward" } else { "cancel" };
    if forwards.is_empty() {
        eprintln!("forwarder: -O {word} needs the forwards to {word}: -L, -R or -D");
        return crate::app::EXIT_FAILURE;
    }
    match converse(path, mux::ForwardClient::new(open, forwards)) {
        Ok(outcome) => {
            for port in &outcome.ports {
                println!("{port}");
            }
            for refused in &outcome.refused {
                eprintln!("forwarder: {refused}");
            }
            if outcome.refused.is_empty() {
                0
            } else {
                crate::app::EXIT_FAILURE
            }
        }
        Err(e) => {
            eprintln!("forwarder: {e}");
            crate::app::EXIT_FAILURE
        }
    }
}

/// How long `-W` through a master waits for the channel to open: the master may wait for
/// its session to come back (`SessionWaitTimeout`, a minute by default) before opening it.
const STDIO_OPEN_TIMEOUT: Duration = Duration::from_secs(90);

/// `-W` through the master at `path`, as ssh's client does when a ControlPath is set:
/// standard input and output are passed to the master, which forwards them over its
/// session, and this waits until it is done. `None` when no master answers there (or the
/// greeting fails): the caller then connects on its own, as ssh does. Otherwise the exit
/// status: 0 once the master is done, 255 when it refused (its reason on stderr).
pub fn stdio_through_master(path: &Path, target: &crate::tunnel::Destination) -> Option<i32> {
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e) => {
            debug!(path = %path.display(), error = %e, "no master on the control socket");
            return None;
        }
    };
    let mut client = mux::StdioClient::new(target.clone());
    let mut framer = Framer::default();
    let greeted = (|| {
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let mut out = Vec::new();
        mux::hello(&mut out);
        stream.write_all(&out)?;
        while !client.greeted() {
            let body = next_body(&mut stream, &mut framer)?;
            client.handle(&body).map_err(std::io::Error::other)?;
        }
        Ok::<_, std::io::Error>(())
    })();
    if let Err(e) = greeted {
        debug!(path = %path.display(), error = %e, "the master's greeting failed");
        return None;
    }
    let failed = |e: std::io::Error| {
        eprintln!("forwarder: control socket {}: {e}", path.display());
        Some(crate::app::EXIT_FAILURE)
    };
    let mut out = Vec::new();
    client.request(&mut out);
    if let Err(e) = stream.write_all(&out).and_then(|()| send_stdio(&stream)) {
        return failed(e);
    }
    let answered = (|| {
        stream.set_read_timeout(Some(STDIO_OPEN_TIMEOUT))?;
        loop {
            let body = next_body(&mut stream, &mut framer)?;
            if let Some(outcome) = client.handle(&body).map_err(std::io::Error::other)? {
                return Ok::<_, std::io::Error>(outcome);
            }
        }
    })();
    match answered {
        Ok(mux::StdioOutcome::Opened) => {}
        Ok(mux::StdioOutcome::Refused(reason)) => {
            eprintln!("forwarder: {reason}");
            return Some(crate::app::EXIT_FAILURE);
        }
        Err(e) => return failed(e),
    }
    debug!(path = %path.display(), "stdio forwarding through the master");
    // The master forwards; it closes the connection when done.
    if let Err(e) = stream.set_read_timeout(None) {
        return failed(e);
    }
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(0),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(0),
            Err(e) => return failed(e),
        }
    }
}

/// The next message body from the master (blocking, bounded by the stream's timeout).
fn next_body(
    stream: &mut std::os::unix::net::UnixStream,
    framer: &mut Framer,
) -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(body) = framer.next_message().map_err(std::io::Error::other)? {
            return Ok(body);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the master closed the connection without an answer",
            ));
        }
        framer.push(&buf[..n]);
    }
}

/// Passes standard input and output to the master, each carried by one byte, as ssh's
/// client passes them.
fn send_stdio(stream: &std::os::unix::net::UnixStream) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd as _;
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    for fd in [stdin.as_fd(), stdout.as_fd()] {
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let sent = rustix::net::sendmsg(
            stream,
            &[std::io::IoSlice::new(&[0])],
            &mut control,
            SendFlags::empty(),
        )?;
        if sent != 1 {
            return Err(std::io::Error::other(
                "could not pass standard input and output",
            ));
        }
    }
    Ok(())
}
