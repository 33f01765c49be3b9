//! The client side of the SSH connection protocol (RFC 4254) as a sans-IO state machine:
//! `direct-tcpip` channels for local port forwarding (and OpenSSH's
//! `direct-streamlocal@openssh.com` ones, to a Unix socket), `tcpip-forward` requests and the
//! `forwarded-tcpip` channels of remote port forwarding (and OpenSSH's
//! `streamlocal-forward@openssh.com`, from a Unix socket on the server), flow control, and
//! keepalives.
//!
//! ```text
//!  server payloads (80..=127, decrypted by the transport)
//!    │
//!    ▼
//!  handle_payload ─> decode whole message ─> channel table (Vec indexed by ChannelId)
//!    │                                        │ CHANNEL_DATA: state, max packet and window checked
//!    │                                        ▼
//!    │                                  per-channel buffer ─> received(id) ─> driver writes socket
//!    │                                                                            │
//!    │                     WINDOW_ADJUST (at half the window) <─ consume(id, n) <─┘
//!    ▼
//!  replies: CLOSE, REQUEST_FAILURE, CHANNEL_FAILURE, OPEN_FAILURE ──────────────────> sink
//!
//!  server's forwarded-tcpip open ─> pending (nothing sent) ─> driver connects to the target
//!     connected ─> confirm_forwarded ─> OPEN_CONFIRMATION ──────────────────────────> sink
//!     failed ─> refuse_forwarded ─> OPEN_FAILURE ───────────────────────────────────> sink
//!
//!  local socket bytes ─> send_data(id) ─ clamp to the server's window and max packet
//!                          ─> CHANNEL_DATA built in the sink's own buffer ──────────> sink
//!
//!  poll_event ─> Opened | OpenFailed | Data | Eof | SendCapacity | Closed | KeepaliveReply
//!               | ForwardGranted | ForwardRefused | ForwardedOpenRequest | Unimplemented
//! ```
//!
//! The crate has no sockets, no clock and no tasks. A driver feeds it the payloads the
//! transport hands up, passes in a [`PayloadSink`](ssh_transport::PayloadSink) that the
//! outgoing messages go into, and after each call drains [`Connection::poll_event`].
//!
//! Memory is bounded by configuration, not by the server: each channel holds at most its
//! receive window of unconsumed data ([`Config::initial_window`]), and a server that sends
//! more, or sends on a channel it closed, gets a [`ConnectionError`], never a bigger buffer.
//! After the first such error the connection stays failed.
//!
//! # Driving it
//!
//! - [`Event::Opened`]: start reading the local socket; pass what it reads to
//!   [`Connection::send_data`], which takes at most [`Connection::send_capacity`] bytes. When it
//!   takes less than offered, keep the rest and wait for [`Event::SendCapacity`].
//! - [`Event::Data`]: write [`Connection::received`] to the local socket and report each write
//!   with [`Connection::consume`], which is what re-opens the server's window.
//! - Local socket read EOF: [`Connection::send_eof`]. Local socket error or gone:
//!   [`Connection::close`].
//! - [`Event::Eof`]: once `received` is drained, shut down the local socket's write side.
//! - [`Event::Closed`] / [`Event::OpenFailed`]: drop the local socket; the id is free. Every
//!   id (ours, or a pending or confirmed one the server opened) ends with exactly one of the
//!   two, and only after it has been polled can a new channel get the same id.
//! - Any bytes from the server: [`Connection::heard_from_server`]. A keepalive policy sends
//!   [`Connection::send_keepalive`] after a quiet interval and gives up when
//!   [`Connection::outstanding_keepalives`] reaches its limit; [`Event::KeepaliveReply`] is
//!   for the log.
//! - Remote forwards: [`Connection::request_tcpip_forward`] (or
//!   [`Connection::request_streamlocal_forward`], a Unix socket on the server), answered by
//!   [`Event::ForwardGranted`] (with the port the server listens on) or
//!   [`Event::ForwardRefused`]. Replies to global requests are matched to keepalives and
//!   forwards in the order the requests went. For each connection the server accepts there it
//!   opens a `forwarded-tcpip` channel, reported as [`Event::ForwardedOpenRequest`] and left
//!   *pending*: nothing is sent and the server may send nothing on it. Connect to the
//!   forward's target, then [`Connection::confirm_forwarded`] (OPEN_CONFIRMATION with our
//!   window; from then on the channel is like an opened one), or, if the connect fails,
//!   [`Connection::refuse_forwarded`] (OPEN_FAILURE; OpenSSH sends CONNECT_FAILED with the
//!   system's error text). This is the order OpenSSH's client answers in, so a target that
//!   never answers costs a channel number, not a receive window the server may fill.
//!   [`Connection::close`] on a pending channel refuses it. Pending channels count against
//!   [`MAX_SERVER_CHANNELS`] like confirmed ones. Channels the server opens for anything else
//!   (no such granted forward, `session`, `x11`, agent) are refused with OPEN_FAILURE,
//!   administratively prohibited.
//! - [`Event::Unimplemented`]: have the transport send SSH_MSG_UNIMPLEMENTED for that packet.
//! - An error from [`Connection::handle_payload`]: disconnect with
//!   [`ConnectionError::disconnect_reason`].
//!
//! ```
//! use ssh_connection::{Config, Connection, Event};
//!
//! let mut conn = Connection::new(Config::default());
//! let mut out: Vec<Vec<u8>> = Vec::new(); // the transport's PayloadSink in real use
//! let id = conn.open_direct_tcpip("db.internal", 5432, "127.0.0.1", 50000, &mut out)?;
//! // The server confirms: its channel 9, a 64 KiB window, 32 KiB packets.
//! let mut confirm = vec![91];
//! for n in [id.0, 9, 65536, 32768] {
//!     confirm.extend_from_slice(&n.to_be_bytes());
//! }
//! conn.handle_payload(&confirm, &mut out)?;
//! assert_eq!(conn.poll_event(), Some(Event::Opened(id)));
//! assert_eq!(conn.send_data(id, b"SELECT 1", &mut out)?, 8);
//! assert_eq!(out.last().map(|p| p[0]), Some(94)); // SSH_MSG_CHANNEL_DATA
//! # Ok::<(), ssh_connection::ConnectionError>(())
//! ```
//!
//! The data path does not allocate per packet: received bytes go into a reused per-channel
//! buffer, channel lookup is an index into a table, and outgoing CHANNEL_DATA is encoded
//! straight into the transport's buffer.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod buffer;
mod connection;
mod error;
pub mod msg;
pub mod window;

pub use connection::{
    ChannelId, Config, Connection, Event, ForwardListen, MAX_HOST_KEYS, MAX_OUTGOING_DATA,
    MAX_SERVER_CHANNELS,
};
pub use error::ConnectionError;
pub use msg::{ExtendedDataType, Message, OpenFailureReason, decode};
pub use window::{ReceiveWindow, Window, WindowError};
