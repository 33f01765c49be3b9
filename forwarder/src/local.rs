//! The local end of a forwarded connection, a TCP socket or a Unix socket, and the listeners
//! that accept them (`-L port:...` and `-L /path:...`).
//!
//! A Unix socket listener creates its socket file with the mode `StreamLocalBindMask` leaves
//! (0600 by default: only our user may connect), refuses a path that exists unless
//! `StreamLocalBindUnlink` is set, and removes the file when it stops listening, if the file
//! is still the one it created.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The mode bits `StreamLocalBindMask` clears by default, as in OpenSSH: the socket file is
/// 0600.
pub const DEFAULT_BIND_MASK: u32 = 0o177;

/// The backlog of every listener, TCP or Unix.
const BACKLOG: i32 = 1024;

/// A forwarded connection's local socket.
#[derive(Debug)]
pub enum LocalStream {
    /// Accepted on (or, for `-R`, connected to) a TCP port.
    Tcp(TcpStream),
    /// Accepted on a Unix socket.
    Unix(UnixStream),
}

impl LocalStream {
    /// Writes what the socket takes now, without waiting.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_write(buf),
            Self::Unix(s) => s.try_write(buf),
        }
    }

    /// Writes what the socket takes now of `bufs`, in one system call.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_write_vectored(bufs),
            Self::Unix(s) => s.try_write_vectored(bufs),
        }
    }

    /// Reads what the socket has now into `bufs`, in one system call.
    pub fn try_read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_read_vectored(bufs),
            Self::Unix(s) => s.try_read_vectored(bufs),
        }
    }

    /// Ready once a read may make progress.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(s) => s.poll_read_ready(cx),
            Self::Unix(s) => s.poll_read_ready(cx),
        }
    }

    /// Ready once a write may make progress.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(s) => s.poll_write_ready(cx),
            Self::Unix(s) => s.poll_write_ready(cx),
        }
    }

    /// Sends each write at once (TCP_NODELAY); nothing to do on a Unix socket.
    pub fn set_nodelay(&self) {
        if let Self::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    /// Half-closes the socket: the program on the other end reads its end of file.
    pub fn shutdown_write(&self) {
        let _ = match self {
            Self::Tcp(s) => socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write),
            Self::Unix(s) => socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write),
        };
    }

    /// Makes the socket's close a reset, so the program on the other end sees a failure
    /// rather than a clean end of data that a database driver might take for a complete
    /// answer. A Unix socket has no reset: its close is an end of file there, or a reset
    /// where the program's data was left unread.
    pub fn set_reset_on_close(&self) {
        if let Self::Tcp(s) = self {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
}

/// Who connected: a TCP peer, or a client of a Unix socket listener (which has no address of
/// its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The TCP peer's address.
    Tcp(SocketAddr),
    /// A client of the listener at this path.
    Unix(Arc<Path>),
}

impl Peer {
    /// The peer of channels forwarder opens for itself (probes, checks): 127.0.0.1 port 0.
    pub const OURSELVES: Peer = Peer::Tcp(SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        0,
    )));

    /// The originator address and port a channel open reports to the server. A Unix socket
    /// client has none: like OpenSSH, we report 127.0.0.1 and 65535, which servers that check
    /// these fields accept.
    pub fn originator(&self) -> (String, u16) {
        match self {
            Self::Tcp(a) => (a.ip().to_string(), a.port()),
            Self::Unix(_) => ("127.0.0.1".to_owned(), 65535),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A listening socket of a forward.
#[derive(Debug)]
pub enum Listener {
    /// A TCP port on one address.
    Tcp(TcpListener),
    /// A Unix socket; its file goes when the listener does.
    Unix(UnixListener, SocketFile),
}

impl From<TcpStream> for LocalStream {
    fn from(s: TcpStream) -> Self {
        Self::Tcp(s)
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Self {
        Self::Tcp(a)
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Self::Tcp(l)
    }
}

impl Listener {
    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(LocalStream, Peer)> {
        match self {
            Self::Tcp(l) => {
                let (s, a) = l.accept().await?;
                Ok((LocalStream::Tcp(s), Peer::Tcp(a)))
            }
            Self::Unix(l, file) => {
                let (s, _) = l.accept().await?;
                Ok((LocalStream::Unix(s), Peer::Unix(file.path.clone())))
            }
        }
    }

    /// Where it listens, for logs: `127.0.0.1:15432` or the socket's path.
    pub fn label(&self) -> String {
        match self {
            Self::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
            Self::Unix(_, file) => file.path.display().to_string(),
        }
    }

    /// The TCP address it listens on; `None` for a Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }
}

/// The socket file a Unix listener created: removed when this is dropped, if the path still
/// names that file (another process may have replaced it meanwhile).
#[derive(Debug)]
pub struct SocketFile {
    path: Arc<Path>,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && m.dev() == self.dev
            && m.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why a Unix socket listener could not be made, with the path in the message.
fn path_error(path: &Path, what: &str, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

/// Listens on a Unix socket at `path` whose file has the mode `mask` leaves of 0777
/// (`StreamLocalBindMask`). An existing file at `path` is refused, unless `unlink` is set
/// (`StreamLocalBindUnlink`) and it is a socket, which is then removed first. The mode is
/// set before the socket listens, so no connection is taken under another mode.
pub fn listen_unix(path: &Path, mask: u32, unlink: bool) -> io::Result<Listener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    if unlink {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(|e| path_error(path, "removing it", &e))?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{}: exists and is not a socket; StreamLocalBindUnlink removes only sockets",
                        path.display()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(path_error(path, "looking at it", &e)),
        }
    }
    let addr = SockAddr::unix(path).map_err(|e| path_error(path, "not a socket path", &e))?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{}: the file exists (StreamLocalBindUnlink=yes removes a stale socket first)",
                    path.display()
                ),
            )
        } else {
            path_error(path, "binding", &e)
        }
    })?;
    let meta = std::fs::symlink_metadata(path);
    let file = match &meta {
        Ok(m) => SocketFile {
            path: Arc::from(path),
            dev: m.dev(),
            ino: m.ino(),
        },
        Err(e) => return Err(path_error(path, "reading it after binding", e)),
    };
    // From here on `file` removes the socket file if anything fails.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777 & !mask))
        .map_err(|e| path_error(path, "setting its mode", &e))?;
    socket.listen(BACKLOG)?;
    let listener = UnixListener::from_std(std::os::unix::net::UnixListener::from(
        std::os::fd::OwnedFd::from(socket),
    ))?;
    Ok(Listener::Unix(listener, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[tokio::test]
    async fn a_unix_listener_makes_its_file_0600_and_removes_it_when_dropped() {
        let d = dir();
        let path = d.path().join("s.sock");
        let l = listen_unix(&path, DEFAULT_BIND_MASK, false).expect("listen");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let client = tokio::spawn({
            let path = path.clone();
            async move { UnixStream::connect(&path).await }
        });
        let (stream, peer) = l.accept().await.expect("accept");
        assert!(matches!(stream, LocalStream::Unix(_)));
        assert_eq!(peer.to_string(), format!("unix:{}", path.display()));
        assert_eq!(peer.originator(), ("127.0.0.1".to_owned(), 65535));
        client.await.expect("join").expect("connect");
        assert_eq!(l.label(), path.display().to_string());
        drop(l);
        assert!(
            !path.exists(),
            "the socket file is removed with the listener"
        );
    }

    #[tokio::test]
    async fn the_mask_decides_the_mode() {
        let d = dir();
        let path = d.path().join("g.sock");
        let _l = listen_unix(&path, 0o117, false).expect("listen");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
    }

    #[tokio::test]
    async fn an_existing_path_is_refused_unless_unlink_and_a_socket() {
        let d = dir();
        let path = d.path().join("s.sock");
        let first = listen_unix(&path, DEFAULT_BIND_MASK, false).expect("listen");
        // A stale socket: the file outlives its listener when the process is killed.
        std::mem::forget(first);
        let e = listen_unix(&path, DEFAULT_BIND_MASK, false).expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("StreamLocalBindUnlink"), "{e}");
        let again = listen_unix(&path, DEFAULT_BIND_MASK, true).expect("unlink and listen");
        drop(again);
        assert!(!path.exists());

        let plain = d.path().join("notes.txt");
        std::fs::write(&plain, b"keep me").expect("write");
        let e = listen_unix(&plain, DEFAULT_BIND_MASK, true).expect_err("not a socket");
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&plain).expect("read"), b"keep me");
        let e = listen_unix(&plain, DEFAULT_BIND_MASK, false).expect_err("exists");
        assert!(e.to_string().contains(&plain.display().to_string()), "{e}");
        assert_eq!(std::fs::read(&plain).expect("read"), b"keep me");
    }

    #[tokio::test]
    async fn a_replaced_socket_file_is_left_to_its_new_owner() {
        let d = dir();
        let path = d.path().join("s.sock");
        let old = listen_unix(&path, DEFAULT_BIND_MASK, false).expect("listen");
        let new = listen_unix(&path, DEFAULT_BIND_MASK, true).expect("take over");
        drop(old);
        assert!(
            path.exists(),
            "the old listener must not remove the new one's file"
        );
        drop(new);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_missing_directory_names_the_path() {
        let d = dir();
        let path = d.path().join("no/such/dir/s.sock");
        let e = listen_unix(&path, DEFAULT_BIND_MASK, false).expect_err("no dir");
        assert!(e.to_string().contains("no/such/dir/s.sock"), "{e}");
    }
}
