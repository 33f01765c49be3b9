//! The crate's one error type.

use core::fmt;

use ssh_transport::DisconnectReason;
use ssh_transport::MessageType;
use ssh_transport::wire::DecodeError;

use crate::ChannelId;
use crate::window::WindowError;

/// What to tell a person after the server broke the protocol.
const RECONNECT: &str = "the session cannot continue; reconnect, and if this happens again \
                         the server (or something between us and it) is not speaking SSH \
                         correctly";

/// Everything that can go wrong in the connection layer.
///
/// Most variants are protocol errors caused by the server: they are fatal, the
/// [`Connection`](crate::Connection) stays failed and returns the same error from every later
/// call, and [`disconnect_reason`](Self::disconnect_reason) says how to disconnect. The
/// variants marked *local* report a mistake in how the connection was called; they change
/// nothing and the connection carries on.
///
/// Channel numbers in these errors are ours (the recipient channel of the server's message),
/// which is what our own logs show.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionError {
    /// A payload with no message number.
    EmptyPayload,
    /// A message outside the connection protocol's range (80 to 127) was passed in.
    NotConnectionMessage(MessageType),
    /// A message could not be decoded.
    Malformed {
        /// Which message.
        message: MessageType,
        /// What was wrong with it.
        error: DecodeError,
    },
    /// A message named a channel number we do not have (never opened, or already closed by
    /// both sides).
    UnknownChannel {
        /// Which message.
        message: MessageType,
        /// The channel number it named.
        channel: u32,
    },
    /// A message other than the open confirmation or failure came for a channel whose open
    /// is not confirmed yet: one we opened that the server has not answered, or one the
    /// server opened that we have not answered (the server does not even know our number for
    /// it).
    NotYetConfirmed {
        /// Which message.
        message: MessageType,
        /// The channel number it named.
        channel: u32,
    },
    /// An OPEN_CONFIRMATION or OPEN_FAILURE for a channel that is not waiting for one: we did
    /// not open it (the server did, and the answer is ours to give), or the server already
    /// answered.
    UnexpectedOpenReply {
        /// Which message.
        message: MessageType,
        /// The channel number it named.
        channel: u32,
    },
    /// The server confirmed a channel with a maximum packet size of zero, on which nothing
    /// could ever be sent.
    ZeroMaxPacket {
        /// Our channel number.
        channel: u32,
    },
    /// A message came for a channel after the server had sent EOF on it (data, or a second EOF).
    AfterEof {
        /// Which message.
        message: MessageType,
        /// Our channel number.
        channel: u32,
    },
    /// A message came for a channel after the server had sent CLOSE on it.
    AfterClose {
        /// Which message.
        message: MessageType,
        /// Our channel number.
        channel: u32,
    },
    /// A WINDOW_ADJUST would take the server's window past 2^32-1 (RFC 4254 section 5.2).
    WindowOverflow {
        /// Our channel number.
        channel: u32,
        /// The window before the adjustment.
        window: u32,
        /// The adjustment.
        add: u32,
    },
    /// The server sent more data than our window allowed.
    WindowExceeded {
        /// Our channel number.
        channel: u32,
        /// Bytes the window still allowed.
        window: u32,
        /// Bytes that came.
        len: usize,
    },
    /// The server sent a data message larger than the maximum packet size we announced.
    PacketTooLarge {
        /// Our channel number.
        channel: u32,
        /// Bytes of data in the message.
        len: usize,
        /// Our maximum.
        max: u32,
    },
    /// A REQUEST_SUCCESS or REQUEST_FAILURE came when none of our global requests was waiting
    /// for an answer.
    UnexpectedRequestReply {
        /// Which message.
        message: MessageType,
    },
    /// *Local*: every channel number is in use.
    TooManyChannels,
    /// *Local*: the channel number is not in use (never returned by `open_direct_tcpip`, or
    /// already reported `Closed` or `OpenFailed`).
    NoSuchChannel(ChannelId),
    /// *Local*: `confirm_forwarded` named a channel that is not a `forwarded-tcpip` channel
    /// waiting for our answer (one we opened, one already confirmed or refused, or a number
    /// not in use).
    NotPending(ChannelId),
}

impl ConnectionError {
    pub(crate) fn window(channel: u32, error: WindowError) -> Self {
        match error {
            WindowError::Overflow { window, add } => Self::WindowOverflow {
                channel,
                window,
                add,
            },
            WindowError::Exceeded { window, len } => Self::WindowExceeded {
                channel,
                window,
                len,
            },
        }
    }

    /// Whether the connection is now failed for good (every protocol error) rather than
    /// having refused one call (the local errors).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Self::TooManyChannels | Self::NoSuchChannel(_) | Self::NotPending(_)
        )
    }

    /// The reason code to send in SSH_MSG_DISCONNECT for a fatal error; `None` for local ones.
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        self.is_fatal().then_some(DisconnectReason::PROTOCOL_ERROR)
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyPayload => write!(f, "the server sent an empty message; {RECONNECT}"),
            Self::NotConnectionMessage(m) => write!(
                f,
                "message {m} is not a connection protocol message and should not have been \
                 passed to the connection layer; this is a bug in the program, please report it"
            ),
            Self::Malformed { message, error } => {
                write!(
                    f,
                    "the server sent a malformed {message}: {error}; {RECONNECT}"
                )
            }
            Self::UnknownChannel { message, channel } => write!(
                f,
                "the server sent {message} for channel {channel}, which is not open; {RECONNECT}"
            ),
            Self::NotYetConfirmed { message, channel } => write!(
                f,
                "the server sent {message} for channel {channel} before the channel's open was \
                 confirmed; {RECONNECT}"
            ),
            Self::UnexpectedOpenReply { message, channel } => write!(
                f,
                "the server sent {message} for channel {channel}, which was not waiting to be \
                 opened; {RECONNECT}"
            ),
            Self::ZeroMaxPacket { channel } => write!(
                f,
                "the server opened channel {channel} with a maximum packet size of 0, so nothing \
                 could be sent on it; {RECONNECT}"
            ),
            Self::AfterEof { message, channel } => write!(
                f,
                "the server sent {message} for channel {channel} after it had sent EOF on that \
                 channel; {RECONNECT}"
            ),
            Self::AfterClose { message, channel } => write!(
                f,
                "the server sent {message} for channel {channel} after it had closed that \
                 channel; {RECONNECT}"
            ),
            Self::WindowOverflow {
                channel,
                window,
                add,
            } => write!(
                f,
                "the server grew the window of channel {channel} from {window} by {add} bytes, \
                 past the limit of 2^32-1; {RECONNECT}"
            ),
            Self::WindowExceeded {
                channel,
                window,
                len,
            } => write!(
                f,
                "the server sent {len} bytes on channel {channel} when its window allowed only \
                 {window}; {RECONNECT}"
            ),
            Self::PacketTooLarge { channel, len, max } => write!(
                f,
                "the server sent {len} bytes in one message on channel {channel}, more than the \
                 maximum packet size of {max} we announced; {RECONNECT}"
            ),
            Self::UnexpectedRequestReply { message } => write!(
                f,
                "the server sent {message} but no global request was waiting for an answer; \
                 {RECONNECT}"
            ),
            Self::TooManyChannels => f.write_str(
                "every channel number is in use; close some tunnels or spread them over more \
                 SSH sessions",
            ),
            Self::NoSuchChannel(id) => write!(
                f,
                "channel {} is not open (never opened, or already closed); this is a bug in \
                 the program, please report it",
                id.0
            ),
            Self::NotPending(id) => write!(
                f,
                "channel {} is not a forwarded channel waiting to be confirmed (it is ours, \
                 already answered, or not in use); this is a bug in the program, please report it",
                id.0
            ),
        }
    }
}

impl std::error::Error for ConnectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Malformed { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_errors_map_to_protocol_error() {
        let e = ConnectionError::AfterClose {
            message: MessageType::CHANNEL_DATA,
            channel: 3,
        };
        assert!(e.is_fatal());
        assert_eq!(
            e.disconnect_reason(),
            Some(DisconnectReason::PROTOCOL_ERROR)
        );
        assert_eq!(ConnectionError::TooManyChannels.disconnect_reason(), None);
        assert!(!ConnectionError::NoSuchChannel(ChannelId(1)).is_fatal());
        assert!(!ConnectionError::NotPending(ChannelId(1)).is_fatal());
        assert_eq!(
            ConnectionError::NotPending(ChannelId(1)).disconnect_reason(),
            None
        );
    }

    #[test]
    fn messages_name_the_message_and_channel() {
        let e = ConnectionError::WindowExceeded {
            channel: 7,
            window: 10,
            len: 20,
        };
        let text = e.to_string();
        assert!(text.contains("channel 7"), "{text}");
        assert!(text.contains("20 bytes"), "{text}");
        assert!(text.contains("reconnect"), "{text}");
        let m = ConnectionError::Malformed {
            message: MessageType::CHANNEL_DATA,
            error: DecodeError::TrailingBytes,
        };
        assert!(m.to_string().contains("SSH_MSG_CHANNEL_DATA"));
        assert!(std::error::Error::source(&m).is_some());
    }

    #[test]
    fn window_errors_keep_their_numbers() {
        assert_eq!(
            ConnectionError::window(
                4,
                WindowError::Overflow {
                    window: 9,
                    add: u32::MAX
                }
            ),
            ConnectionError::WindowOverflow {
                channel: 4,
                window: 9,
                add: u32::MAX
            }
        );
    }
}
