//! The client side of the SSH connection protocol (RFC 4254) as a sans-IO state machine:
//! `direct-tcpip` channels for local port forwarding, flow control, and keepalives.
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
//!  local socket bytes ─> send_data(id) ─ clamp to the server's window and max packet
//!                          ─> CHANNEL_DATA built in the sink's own buffer ──────────> sink
//!
//!  poll_event ─> Opened | OpenFailed | Data | Eof | SendCapacity | Closed | KeepaliveReply
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
//! The data path does not allocate per packet: received bytes go into a reused per-channel
//! buffer, channel lookup is an index into a table, and outgoing CHANNEL_DATA is encoded
//! straight into the transport's buffer.
#![forbid(unsafe_code)]
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

pub use connection::{ChannelId, Config, Connection, Event, MAX_OUTGOING_DATA};
pub use error::ConnectionError;
pub use msg::{ExtendedDataType, Message, OpenFailureReason, decode};
pub use window::{ReceiveWindow, Window, WindowError};
