//! One type per connection protocol message (RFC 4254), each with an encoder and a decoder
//! that reads every field and rejects trailing bytes.
//!
//! Decoding borrows from the payload and never allocates. Names that only get compared or
//! logged (request names, channel types, host names) stay raw bytes, so an odd name from the
//! server is simply a name we do not know rather than a reason to drop the whole session.
//! Fields the RFC leaves to the request or channel type are kept as raw bytes where we do not
//! act on them (`data`), and decoded field by field where we do (`direct-tcpip`,
//! `forwarded-tcpip`).

use ssh_transport::MessageType;
use ssh_transport::wire::{DecodeError, Reader, Writer};
use ssh_transport::wire_number;

use crate::ConnectionError;

wire_number! {
    /// Why the server would not open a channel (RFC 4254 section 5.1).
    pub struct OpenFailureReason(u32) {
        ADMINISTRATIVELY_PROHIBITED = 1 => "administratively prohibited",
        CONNECT_FAILED = 2 => "connect failed",
        UNKNOWN_CHANNEL_TYPE = 3 => "unknown channel type",
        RESOURCE_SHORTAGE = 4 => "resource shortage",
    }
}

wire_number! {
    /// The kind of data in CHANNEL_EXTENDED_DATA (RFC 4254 section 5.2).
    pub struct ExtendedDataType(u32) {
        STDERR = 1 => "stderr",
    }
}

/// The channel type we open for a local port forward.
pub const DIRECT_TCPIP: &[u8] = b"direct-tcpip";
/// The channel type we open for a local forward to a Unix socket on the server (OpenSSH's
/// `PROTOCOL`, section 2.4).
pub const DIRECT_STREAMLOCAL: &[u8] = b"direct-streamlocal@openssh.com";
/// The channel type a server opens for a remote port forward.
pub const FORWARDED_TCPIP: &[u8] = b"forwarded-tcpip";
/// The channel type a server opens for a remote forward from a Unix socket on the server
/// (OpenSSH's `PROTOCOL`, section 2.4).
pub const FORWARDED_STREAMLOCAL: &[u8] = b"forwarded-streamlocal@openssh.com";
/// The global request that asks the server to listen for a remote port forward.
pub const TCPIP_FORWARD: &[u8] = b"tcpip-forward";
/// The global request that tells the server to stop listening for a remote port forward.
pub const CANCEL_TCPIP_FORWARD: &[u8] = b"cancel-tcpip-forward";
/// The global request that asks the server to listen on a Unix socket for a remote forward.
pub const STREAMLOCAL_FORWARD: &[u8] = b"streamlocal-forward@openssh.com";
/// The global request that tells the server to stop listening on a Unix socket.
pub const CANCEL_STREAMLOCAL_FORWARD: &[u8] = b"cancel-streamlocal-forward@openssh.com";
/// OpenSSH's keepalive global request name.
pub const KEEPALIVE: &[u8] = b"keepalive@openssh.com";
/// The global request in which OpenSSH's sshd lists all its host keys after the login
/// (OpenSSH's `PROTOCOL`, section 2.5).
pub const HOSTKEYS: &[u8] = b"hostkeys-00@openssh.com";
/// The global request that asks the server to prove it holds the private halves of host
/// keys it listed.
pub const HOSTKEYS_PROVE: &[u8] = b"hostkeys-prove-00@openssh.com";

/// A message of the connection protocol with a fixed message number.
pub trait ConnectionMessage<'a>: Sized {
    /// The message number.
    const TYPE: MessageType;

    /// Reads the fields after the message number. [`decode`](Self::decode) checks that
    /// nothing is left after them.
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError>;

    /// Appends the fields after the message number.
    fn encode_fields(&self, out: &mut Vec<u8>);

    /// Appends the whole payload, message number first.
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::TYPE.0);
        self.encode_fields(out);
    }

    /// Decodes a whole payload, message number first.
    fn decode(payload: &'a [u8]) -> Result<Self, ConnectionError> {
        let malformed = |error| ConnectionError::Malformed {
            message: Self::TYPE,
            error,
        };
        let mut r = Reader::new(payload);
        if r.u8().map_err(malformed)? != Self::TYPE.0 {
            return Err(malformed(DecodeError::InvalidValue("message number")));
        }
        let msg = Self::decode_fields(&mut r).map_err(malformed)?;
        r.finish().map_err(malformed)?;
        Ok(msg)
    }
}

/// SSH_MSG_GLOBAL_REQUEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalRequest<'a> {
    /// The request name, e.g. `keepalive@openssh.com`.
    pub name: &'a [u8],
    /// Whether the sender waits for REQUEST_SUCCESS or REQUEST_FAILURE.
    pub want_reply: bool,
    /// The request-specific fields, undecoded.
    pub data: &'a [u8],
}

impl<'a> ConnectionMessage<'a> for GlobalRequest<'a> {
    const TYPE: MessageType = MessageType::GLOBAL_REQUEST;
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.string()?,
            want_reply: r.bool()?,
            data: r.rest(),
        })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_string(self.name);
        out.put_bool(self.want_reply);
        out.put_raw(self.data);
    }
}

/// SSH_MSG_REQUEST_SUCCESS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestSuccess<'a> {
    /// The response-specific fields, undecoded (empty for a keepalive).
    pub data: &'a [u8],
}

impl<'a> ConnectionMessage<'a> for RequestSuccess<'a> {
    const TYPE: MessageType = MessageType::REQUEST_SUCCESS;
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self { data: r.rest() })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_raw(self.data);
    }
}

/// SSH_MSG_REQUEST_FAILURE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestFailure;

impl<'a> ConnectionMessage<'a> for RequestFailure {
    const TYPE: MessageType = MessageType::REQUEST_FAILURE;
    fn decode_fields(_: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self)
    }
    fn encode_fields(&self, _: &mut Vec<u8>) {}
}

/// The two ends of a TCP connection carried by a `direct-tcpip` or `forwarded-tcpip` channel
/// (RFC 4254 sections 7.1 and 7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpipEndpoints<'a> {
    /// `direct-tcpip`: the host to connect to; `forwarded-tcpip`: the address that was
    /// connected to.
    pub address: &'a [u8],
    /// The port that goes with `address`.
    pub port: u32,
    /// The address the connection came from.
    pub originator_address: &'a [u8],
    /// The port it came from.
    pub originator_port: u32,
}

impl<'a> TcpipEndpoints<'a> {
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            address: r.string()?,
            port: r.u32()?,
            originator_address: r.string()?,
            originator_port: r.u32()?,
        })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_string(self.address);
        out.put_u32(self.port);
        out.put_string(self.originator_address);
        out.put_u32(self.originator_port);
    }
}

/// The channel type of a CHANNEL_OPEN with its type-specific fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenKind<'a> {
    /// `direct-tcpip`: a local port forward (what we open).
    DirectTcpip(TcpipEndpoints<'a>),
    /// `forwarded-tcpip`: a remote port forward (what a server might open).
    ForwardedTcpip(TcpipEndpoints<'a>),
    /// `direct-streamlocal@openssh.com`: a local forward to the Unix socket at this path on
    /// the server (what we open). On the wire the path is followed by a reserved string and
    /// a reserved `uint32`, sent empty and zero and ignored when read.
    DirectStreamlocal {
        /// The socket's path on the server.
        path: &'a [u8],
    },
    /// `forwarded-streamlocal@openssh.com`: a connection to a Unix socket the server listens
    /// on for a remote forward (what a server might open). On the wire the path is followed
    /// by a reserved string, sent empty and ignored when read.
    ForwardedStreamlocal {
        /// The socket's path on the server, as the forward asked for it.
        path: &'a [u8],
    },
    /// Any other type (`session`, `x11`, `auth-agent@openssh.com`, ...), fields undecoded.
    Other {
        /// The channel type.
        channel_type: &'a [u8],
        /// The type-specific fields.
        data: &'a [u8],
    },
}

impl OpenKind<'_> {
    /// The channel type name.
    pub fn channel_type(&self) -> &[u8] {
        match self {
            Self::DirectTcpip(_) => DIRECT_TCPIP,
            Self::ForwardedTcpip(_) => FORWARDED_TCPIP,
            Self::DirectStreamlocal { .. } => DIRECT_STREAMLOCAL,
            Self::ForwardedStreamlocal { .. } => FORWARDED_STREAMLOCAL,
            Self::Other { channel_type, .. } => channel_type,
        }
    }
}

/// SSH_MSG_CHANNEL_OPEN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelOpen<'a> {
    /// The sender's channel number.
    pub sender: u32,
    /// How many bytes the sender lets the other side send.
    pub initial_window: u32,
    /// The largest data message the sender accepts.
    pub max_packet: u32,
    /// The channel type and its fields.
    pub kind: OpenKind<'a>,
}

impl<'a> ConnectionMessage<'a> for ChannelOpen<'a> {
    const TYPE: MessageType = MessageType::CHANNEL_OPEN;
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let channel_type = r.string()?;
        let sender = r.u32()?;
        let initial_window = r.u32()?;
        let max_packet = r.u32()?;
        let kind = match channel_type {
            DIRECT_TCPIP => OpenKind::DirectTcpip(TcpipEndpoints::decode_fields(r)?),
            FORWARDED_TCPIP => OpenKind::ForwardedTcpip(TcpipEndpoints::decode_fields(r)?),
            DIRECT_STREAMLOCAL => {
                let path = r.string()?;
                let _reserved = r.string()?;
                let _reserved = r.u32()?;
                OpenKind::DirectStreamlocal { path }
            }
            FORWARDED_STREAMLOCAL => {
                let path = r.string()?;
                let _reserved = r.string()?;
                OpenKind::ForwardedStreamlocal { path }
            }
            _ => OpenKind::Other {
                channel_type,
                data: r.rest(),
            },
        };
        Ok(Self {
            sender,
            initial_window,
            max_packet,
            kind,
        })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_string(self.kind.channel_type());
        out.put_u32(self.sender);
        out.put_u32(self.initial_window);
        out.put_u32(self.max_packet);
        match &self.kind {
            OpenKind::DirectTcpip(e) | OpenKind::ForwardedTcpip(e) => e.encode_fields(out),
            OpenKind::DirectStreamlocal { path } => {
                out.put_string(path);
                out.put_string(b"");
                out.put_u32(0);
            }
            OpenKind::ForwardedStreamlocal { path } => {
                out.put_string(path);
                out.put_string(b"");
            }
            OpenKind::Other { data, .. } => out.put_raw(data),
        }
    }
}

/// SSH_MSG_CHANNEL_OPEN_CONFIRMATION. The channel types we open (`direct-tcpip`) define no
/// type-specific fields, so any byte after the maximum packet size is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelOpenConfirmation {
    /// Our channel number.
    pub recipient: u32,
    /// The server's channel number, which our messages on this channel carry.
    pub sender: u32,
    /// How many bytes we may send.
    pub initial_window: u32,
    /// The largest data message the server accepts.
    pub max_packet: u32,
}

impl<'a> ConnectionMessage<'a> for ChannelOpenConfirmation {
    const TYPE: MessageType = MessageType::CHANNEL_OPEN_CONFIRMATION;
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            recipient: r.u32()?,
            sender: r.u32()?,
            initial_window: r.u32()?,
            max_packet: r.u32()?,
        })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_u32(self.recipient);
        out.put_u32(self.sender);
        out.put_u32(self.initial_window);
        out.put_u32(self.max_packet);
    }
}

/// SSH_MSG_CHANNEL_OPEN_FAILURE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelOpenFailure<'a> {
    /// The channel number of the CHANNEL_OPEN being refused.
    pub recipient: u32,
    /// Why.
    pub reason: OpenFailureReason,
    /// Text for a person, from the peer: sanitise before showing it.
    pub description: &'a [u8],
    /// Language tag (RFC 3066) of the description, usually empty.
    pub language: &'a [u8],
}

impl<'a> ConnectionMessage<'a> for ChannelOpenFailure<'a> {
    const TYPE: MessageType = MessageType::CHANNEL_OPEN_FAILURE;
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            recipient: r.u32()?,
            reason: OpenFailureReason(r.u32()?),
            description: r.string()?,
            language: r.string()?,
        })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_u32(self.recipient);
        out.put_u32(self.reason.0);
        out.put_string(self.description);
        out.put_string(self.language);
    }
}

/// SSH_MSG_CHANNEL_WINDOW_ADJUST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowAdjust {
    /// The receiver's channel number.
    pub recipient: u32,
    /// Bytes added to the receiver's window.
    pub bytes: u32,
}

impl<'a> ConnectionMessage<'a> for WindowAdjust {
    const TYPE: MessageType = MessageType::CHANNEL_WINDOW_ADJUST;
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            recipient: r.u32()?,
            bytes: r.u32()?,
        })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_u32(self.recipient);
        out.put_u32(self.bytes);
    }
}

/// SSH_MSG_CHANNEL_DATA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The receiver's channel number.
    pub recipient: u32,
    /// The bytes.
    pub data: &'a [u8],
}

impl<'a> ConnectionMessage<'a> for ChannelData<'a> {
    const TYPE: MessageType = MessageType::CHANNEL_DATA;
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            recipient: r.u32()?,
            data: r.string()?,
        })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_u32(self.recipient);
        out.put_string(self.data);
    }
}

/// SSH_MSG_CHANNEL_EXTENDED_DATA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedData<'a> {
    /// The receiver's channel number.
    pub recipient: u32,
    /// What kind of data.
    pub data_type: ExtendedDataType,
    /// The bytes.
    pub data: &'a [u8],
}

impl<'a> ConnectionMessage<'a> for ExtendedData<'a> {
    const TYPE: MessageType = MessageType::CHANNEL_EXTENDED_DATA;
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            recipient: r.u32()?,
            data_type: ExtendedDataType(r.u32()?),
            data: r.string()?,
        })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_u32(self.recipient);
        out.put_u32(self.data_type.0);
        out.put_string(self.data);
    }
}

/// Declares a message whose only field is the recipient channel.
macro_rules! recipient_only {
    ($(#[$meta:meta])* $name:ident = $konst:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            /// The receiver's channel number.
            pub recipient: u32,
        }

        impl<'a> ConnectionMessage<'a> for $name {
            const TYPE: MessageType = MessageType::$konst;
            fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
                Ok(Self { recipient: r.u32()? })
            }
            fn encode_fields(&self, out: &mut Vec<u8>) {
                out.put_u32(self.recipient);
            }
        }
    };
}

recipient_only! {
    /// SSH_MSG_CHANNEL_EOF: the sender will send no more data on the channel.
    ChannelEof = CHANNEL_EOF
}
recipient_only! {
    /// SSH_MSG_CHANNEL_CLOSE: the sender will send nothing more on the channel.
    ChannelClose = CHANNEL_CLOSE
}
recipient_only! {
    /// SSH_MSG_CHANNEL_SUCCESS: a channel request succeeded.
    ChannelSuccess = CHANNEL_SUCCESS
}
recipient_only! {
    /// SSH_MSG_CHANNEL_FAILURE: a channel request failed or was not understood.
    ChannelFailure = CHANNEL_FAILURE
}

/// SSH_MSG_CHANNEL_REQUEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRequest<'a> {
    /// The receiver's channel number.
    pub recipient: u32,
    /// The request type, e.g. `exit-status`.
    pub request_type: &'a [u8],
    /// Whether the sender waits for CHANNEL_SUCCESS or CHANNEL_FAILURE.
    pub want_reply: bool,
    /// The type-specific fields, undecoded.
    pub data: &'a [u8],
}

impl<'a> ConnectionMessage<'a> for ChannelRequest<'a> {
    const TYPE: MessageType = MessageType::CHANNEL_REQUEST;
    fn decode_fields(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            recipient: r.u32()?,
            request_type: r.string()?,
            want_reply: r.bool()?,
            data: r.rest(),
        })
    }
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_u32(self.recipient);
        out.put_string(self.request_type);
        out.put_bool(self.want_reply);
        out.put_raw(self.data);
    }
}

/// Any connection protocol message, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// SSH_MSG_GLOBAL_REQUEST.
    GlobalRequest(GlobalRequest<'a>),
    /// SSH_MSG_REQUEST_SUCCESS.
    RequestSuccess(RequestSuccess<'a>),
    /// SSH_MSG_REQUEST_FAILURE.
    RequestFailure(RequestFailure),
    /// SSH_MSG_CHANNEL_OPEN.
    ChannelOpen(ChannelOpen<'a>),
    /// SSH_MSG_CHANNEL_OPEN_CONFIRMATION.
    ChannelOpenConfirmation(ChannelOpenConfirmation),
    /// SSH_MSG_CHANNEL_OPEN_FAILURE.
    ChannelOpenFailure(ChannelOpenFailure<'a>),
    /// SSH_MSG_CHANNEL_WINDOW_ADJUST.
    WindowAdjust(WindowAdjust),
    /// SSH_MSG_CHANNEL_DATA.
    Data(ChannelData<'a>),
    /// SSH_MSG_CHANNEL_EXTENDED_DATA.
    ExtendedData(ExtendedData<'a>),
    /// SSH_MSG_CHANNEL_EOF.
    Eof(ChannelEof),
    /// SSH_MSG_CHANNEL_CLOSE.
    Close(ChannelClose),
    /// SSH_MSG_CHANNEL_REQUEST.
    ChannelRequest(ChannelRequest<'a>),
    /// SSH_MSG_CHANNEL_SUCCESS.
    ChannelSuccess(ChannelSuccess),
    /// SSH_MSG_CHANNEL_FAILURE.
    ChannelFailure(ChannelFailure),
    /// A number in the connection protocol's range (80 to 127) that RFC 4254 does not assign.
    /// RFC 4253 section 11.4 wants SSH_MSG_UNIMPLEMENTED in reply.
    Unassigned {
        /// The message number.
        message: MessageType,
        /// Everything after it.
        body: &'a [u8],
    },
}

impl<'a> Message<'a> {
    /// Decodes one connection protocol payload (message number first), reading every field
    /// and rejecting trailing bytes. Numbers outside 80 to 127 are an error: they belong to
    /// another layer.
    pub fn decode(payload: &'a [u8]) -> Result<Self, ConnectionError> {
        let message = MessageType::of(payload).ok_or(ConnectionError::EmptyPayload)?;
        Ok(match message {
            MessageType::GLOBAL_REQUEST => Self::GlobalRequest(GlobalRequest::decode(payload)?),
            MessageType::REQUEST_SUCCESS => Self::RequestSuccess(RequestSuccess::decode(payload)?),
            MessageType::REQUEST_FAILURE => Self::RequestFailure(RequestFailure::decode(payload)?),
            MessageType::CHANNEL_OPEN => Self::ChannelOpen(ChannelOpen::decode(payload)?),
            MessageType::CHANNEL_OPEN_CONFIRMATION => {
                Self::ChannelOpenConfirmation(ChannelOpenConfirmation::decode(payload)?)
            }
            MessageType::CHANNEL_OPEN_FAILURE => {
                Self::ChannelOpenFailure(ChannelOpenFailure::decode(payload)?)
            }
            MessageType::CHANNEL_WINDOW_ADJUST => {
                Self::WindowAdjust(WindowAdjust::decode(payload)?)
            }
            MessageType::CHANNEL_DATA => Self::Data(ChannelData::decode(payload)?),
            MessageType::CHANNEL_EXTENDED_DATA => {
                Self::ExtendedData(ExtendedData::decode(payload)?)
            }
            MessageType::CHANNEL_EOF => Self::Eof(ChannelEof::decode(payload)?),
            MessageType::CHANNEL_CLOSE => Self::Close(ChannelClose::decode(payload)?),
            MessageType::CHANNEL_REQUEST => Self::ChannelRequest(ChannelRequest::decode(payload)?),
            MessageType::CHANNEL_SUCCESS => Self::ChannelSuccess(ChannelSuccess::decode(payload)?),
            MessageType::CHANNEL_FAILURE => Self::ChannelFailure(ChannelFailure::decode(payload)?),
            m if m.is_connection() => Self::Unassigned {
                message: m,
                body: payload.get(1..).unwrap_or_default(),
            },
            m => return Err(ConnectionError::NotConnectionMessage(m)),
        })
    }

    /// The message number.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::GlobalRequest(_) => GlobalRequest::TYPE,
            Self::RequestSuccess(_) => RequestSuccess::TYPE,
            Self::RequestFailure(_) => RequestFailure::TYPE,
            Self::ChannelOpen(_) => ChannelOpen::TYPE,
            Self::ChannelOpenConfirmation(_) => ChannelOpenConfirmation::TYPE,
            Self::ChannelOpenFailure(_) => ChannelOpenFailure::TYPE,
            Self::WindowAdjust(_) => WindowAdjust::TYPE,
            Self::Data(_) => ChannelData::TYPE,
            Self::ExtendedData(_) => ExtendedData::TYPE,
            Self::Eof(_) => ChannelEof::TYPE,
            Self::Close(_) => ChannelClose::TYPE,
            Self::ChannelRequest(_) => ChannelRequest::TYPE,
            Self::ChannelSuccess(_) => ChannelSuccess::TYPE,
            Self::ChannelFailure(_) => ChannelFailure::TYPE,
            Self::Unassigned { message, .. } => *message,
        }
    }

    /// Appends the payload, message number first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::GlobalRequest(m) => m.encode(out),
            Self::RequestSuccess(m) => m.encode(out),
            Self::RequestFailure(m) => m.encode(out),
            Self::ChannelOpen(m) => m.encode(out),
            Self::ChannelOpenConfirmation(m) => m.encode(out),
            Self::ChannelOpenFailure(m) => m.encode(out),
            Self::WindowAdjust(m) => m.encode(out),
            Self::Data(m) => m.encode(out),
            Self::ExtendedData(m) => m.encode(out),
            Self::Eof(m) => m.encode(out),
            Self::Close(m) => m.encode(out),
            Self::ChannelRequest(m) => m.encode(out),
            Self::ChannelSuccess(m) => m.encode(out),
            Self::ChannelFailure(m) => m.encode(out),
            Self::Unassigned { message, body } => {
                out.put_u8(message.0);
                out.put_raw(body);
            }
        }
    }
}

/// Decodes one server payload of the connection protocol; the entry point for fuzzing the
/// message parsers. Same as [`Message::decode`].
pub fn decode(payload: &[u8]) -> Result<Message<'_>, ConnectionError> {
    Message::decode(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn encoded<'a, M: ConnectionMessage<'a>>(m: &M) -> Vec<u8> {
        let mut v = Vec::new();
        m.encode(&mut v);
        v
    }

    /// Encodes, decodes with [`decode`] (which calls the typed decoder), compares, and checks
    /// that re-encoding gives the same bytes.
    fn round_trip<'a, M>(m: M, wrap: fn(M) -> Message<'a>) -> Result<(), TestCaseError>
    where
        M: ConnectionMessage<'a> + PartialEq + core::fmt::Debug + Copy,
    {
        let wire = encoded(&m);
        let generic = decode(&wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(generic.message_type(), M::TYPE);
        let mut again_wire = Vec::new();
        generic.encode(&mut again_wire);
        prop_assert_eq!(&again_wire, &wire);
        prop_assert_eq!(generic, wrap(m));
        Ok(())
    }

    fn rejects_trailing_and_truncation(wire: &[u8], has_rest_field: bool) {
        let mut longer = wire.to_vec();
        longer.push(0);
        if !has_rest_field {
            assert!(
                matches!(
                    decode(&longer),
                    Err(ConnectionError::Malformed {
                        error: DecodeError::TrailingBytes,
                        ..
                    })
                ),
                "{longer:?}"
            );
        }
        for cut in 1..wire.len() {
            let short = wire.get(..cut).unwrap_or_default();
            if has_rest_field {
                // Cutting into the trailing raw field still decodes; cutting a fixed field
                // must not panic either way.
                let _ = decode(short);
            } else {
                assert!(decode(short).is_err(), "cut at {cut} of {wire:?}");
            }
        }
    }

    #[test]
    fn fixed_messages_reject_trailing_bytes_and_truncation() {
        let cases: Vec<Vec<u8>> = vec![
            encoded(&RequestFailure),
            encoded(&ChannelOpenConfirmation {
                recipient: 1,
                sender: 2,
                initial_window: 3,
                max_packet: 4,
            }),
            encoded(&ChannelOpenFailure {
                recipient: 1,
                reason: OpenFailureReason::CONNECT_FAILED,
                description: b"no",
                language: b"",
            }),
            encoded(&WindowAdjust {
                recipient: 1,
                bytes: 2,
            }),
            encoded(&ChannelData {
                recipient: 1,
                data: b"abc",
            }),
            encoded(&ExtendedData {
                recipient: 1,
                data_type: ExtendedDataType::STDERR,
                data: b"abc",
            }),
            encoded(&ChannelEof { recipient: 1 }),
            encoded(&ChannelClose { recipient: 1 }),
            encoded(&ChannelSuccess { recipient: 1 }),
            encoded(&ChannelFailure { recipient: 1 }),
            encoded(&ChannelOpen {
                sender: 1,
                initial_window: 2,
                max_packet: 3,
                kind: OpenKind::ForwardedTcpip(TcpipEndpoints {
                    address: b"a",
                    port: 1,
                    originator_address: b"b",
                    originator_port: 2,
                }),
            }),
        ];
        for wire in cases {
            rejects_trailing_and_truncation(&wire, false);
        }
        for wire in [
            encoded(&GlobalRequest {
                name: b"x",
                want_reply: true,
                data: b"",
            }),
            encoded(&ChannelRequest {
                recipient: 1,
                request_type: b"x",
                want_reply: false,
                data: b"",
            }),
        ] {
            rejects_trailing_and_truncation(&wire, true);
        }
    }

    #[test]
    fn direct_tcpip_open_matches_rfc_layout() {
        let wire = encoded(&ChannelOpen {
            sender: 5,
            initial_window: 0x0020_0000,
            max_packet: 0x8000,
            kind: OpenKind::DirectTcpip(TcpipEndpoints {
                address: b"db",
                port: 5432,
                originator_address: b"::1",
                originator_port: 40000,
            }),
        });
        let mut expected = vec![90, 0, 0, 0, 12];
        expected.extend_from_slice(b"direct-tcpip");
        expected.extend_from_slice(&[0, 0, 0, 5, 0, 0x20, 0, 0, 0, 0, 0x80, 0]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'd', b'b', 0, 0, 0x15, 0x38]);
        expected.extend_from_slice(&[0, 0, 0, 3, b':', b':', b'1', 0, 0, 0x9c, 0x40]);
        assert_eq!(wire, expected);
    }

    #[test]
    fn direct_streamlocal_open_matches_openssh_layout() {
        let open = ChannelOpen {
            sender: 5,
            initial_window: 0x0020_0000,
            max_packet: 0x8000,
            kind: OpenKind::DirectStreamlocal { path: b"/run/s" },
        };
        let wire = encoded(&open);
        let mut expected = vec![90, 0, 0, 0, 30];
        expected.extend_from_slice(b"direct-streamlocal@openssh.com");
        expected.extend_from_slice(&[0, 0, 0, 5, 0, 0x20, 0, 0, 0, 0, 0x80, 0]);
        expected.extend_from_slice(&[0, 0, 0, 6]);
        expected.extend_from_slice(b"/run/s");
        // The reserved string (empty) and the reserved uint32.
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(wire, expected);
        assert_eq!(ChannelOpen::decode(&wire), Ok(open));
        rejects_trailing_and_truncation(&wire, false);
    }

    #[test]
    fn forwarded_streamlocal_open_matches_openssh_layout() {
        let open = ChannelOpen {
            sender: 7,
            initial_window: 0x0020_0000,
            max_packet: 0x8000,
            kind: OpenKind::ForwardedStreamlocal { path: b"/tmp/f" },
        };
        let wire = encoded(&open);
        let mut expected = vec![90, 0, 0, 0, 33];
        expected.extend_from_slice(b"forwarded-streamlocal@openssh.com");
        expected.extend_from_slice(&[0, 0, 0, 7, 0, 0x20, 0, 0, 0, 0, 0x80, 0]);
        expected.extend_from_slice(&[0, 0, 0, 6]);
        expected.extend_from_slice(b"/tmp/f");
        // The reserved string, empty; unlike direct-streamlocal, no reserved uint32.
        expected.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(wire, expected);
        assert_eq!(ChannelOpen::decode(&wire), Ok(open));
        rejects_trailing_and_truncation(&wire, false);
    }

    #[test]
    fn channel_data_matches_rfc_layout() {
        let wire = encoded(&ChannelData {
            recipient: 0x0102_0304,
            data: b"hi",
        });
        assert_eq!(wire, [94, 1, 2, 3, 4, 0, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn numbers_outside_the_connection_range_are_refused() {
        assert_eq!(decode(&[]), Err(ConnectionError::EmptyPayload));
        assert_eq!(
            decode(&[52]),
            Err(ConnectionError::NotConnectionMessage(
                MessageType::USERAUTH_SUCCESS
            ))
        );
        assert_eq!(
            decode(&[128, 1]),
            Err(ConnectionError::NotConnectionMessage(MessageType(128)))
        );
        assert_eq!(
            decode(&[85, 1, 2]),
            Ok(Message::Unassigned {
                message: MessageType(85),
                body: &[1, 2]
            })
        );
    }

    #[test]
    fn typed_decoder_checks_the_message_number() {
        let wire = encoded(&ChannelEof { recipient: 1 });
        assert!(ChannelClose::decode(&wire).is_err());
        assert!(ChannelEof::decode(&wire).is_ok());
    }

    #[test]
    fn oversized_string_length_is_refused_without_allocating() {
        let wire = [94, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1];
        assert_eq!(
            decode(&wire),
            Err(ConnectionError::Malformed {
                message: MessageType::CHANNEL_DATA,
                error: DecodeError::Truncated
            })
        );
    }

    #[test]
    fn reason_codes_print_by_name() {
        assert_eq!(
            OpenFailureReason::ADMINISTRATIVELY_PROHIBITED.to_string(),
            "administratively prohibited"
        );
        assert_eq!(OpenFailureReason(77).to_string(), "77");
        assert_eq!(ExtendedDataType::STDERR.name(), Some("stderr"));
    }

    fn other_channel_type() -> impl Strategy<Value = Vec<u8>> {
        bytes(20).prop_filter("typed channel types decode differently", |t| {
            t != DIRECT_TCPIP && t != FORWARDED_TCPIP
        })
    }

    proptest! {
        #[test]
        fn global_request_round_trips(name in bytes(40), want_reply in any::<bool>(), data in bytes(40)) {
            round_trip(GlobalRequest { name: &name, want_reply, data: &data }, Message::GlobalRequest)?;
        }

        #[test]
        fn request_success_round_trips(data in bytes(40)) {
            round_trip(RequestSuccess { data: &data }, Message::RequestSuccess)?;
        }

        #[test]
        fn request_failure_round_trips(_x in 0..1u8) {
            round_trip(RequestFailure, Message::RequestFailure)?;
        }

        #[test]
        fn channel_open_round_trips(sender in any::<u32>(), initial_window in any::<u32>(), max_packet in any::<u32>(),
                                    which in 0..3u8, a in bytes(30), b in bytes(30), p in any::<u32>(), q in any::<u32>(),
                                    other in other_channel_type()) {
            let e = TcpipEndpoints { address: &a, port: p, originator_address: &b, originator_port: q };
            let kind = match which {
                0 => OpenKind::DirectTcpip(e),
                1 => OpenKind::ForwardedTcpip(e),
                _ => OpenKind::Other { channel_type: &other, data: &a },
            };
            round_trip(ChannelOpen { sender, initial_window, max_packet, kind }, Message::ChannelOpen)?;
        }

        #[test]
        fn channel_open_confirmation_round_trips(recipient in any::<u32>(), sender in any::<u32>(),
                                                 initial_window in any::<u32>(), max_packet in any::<u32>()) {
            round_trip(ChannelOpenConfirmation { recipient, sender, initial_window, max_packet },
                       Message::ChannelOpenConfirmation)?;
        }

        #[test]
        fn channel_open_failure_round_trips(recipient in any::<u32>(), reason in any::<u32>(),
                                            description in bytes(60), language in bytes(10)) {
            round_trip(ChannelOpenFailure { recipient, reason: OpenFailureReason(reason),
                                            description: &description, language: &language },
                       Message::ChannelOpenFailure)?;
        }

        #[test]
        fn window_adjust_round_trips(recipient in any::<u32>(), bytes in any::<u32>()) {
            round_trip(WindowAdjust { recipient, bytes }, Message::WindowAdjust)?;
        }

        #[test]
        fn channel_data_round_trips(recipient in any::<u32>(), data in bytes(300)) {
            round_trip(ChannelData { recipient, data: &data }, Message::Data)?;
        }

        #[test]
        fn extended_data_round_trips(recipient in any::<u32>(), t in any::<u32>(), data in bytes(300)) {
            round_trip(ExtendedData { recipient, data_type: ExtendedDataType(t), data: &data }, Message::ExtendedData)?;
        }

        #[test]
        fn recipient_only_messages_round_trip(recipient in any::<u32>()) {
            round_trip(ChannelEof { recipient }, Message::Eof)?;
            round_trip(ChannelClose { recipient }, Message::Close)?;
            round_trip(ChannelSuccess { recipient }, Message::ChannelSuccess)?;
            round_trip(ChannelFailure { recipient }, Message::ChannelFailure)?;
        }

        #[test]
        fn channel_request_round_trips(recipient in any::<u32>(), request_type in bytes(30),
                                       want_reply in any::<bool>(), data in bytes(40)) {
            round_trip(ChannelRequest { recipient, request_type: &request_type, want_reply, data: &data },
                       Message::ChannelRequest)?;
        }

        #[test]
        fn unassigned_round_trips(n in 80u8..=127, body in bytes(30)) {
            prop_assume!(MessageType(n).name().is_none());
            let mut wire = vec![n];
            wire.extend_from_slice(&body);
            let m = decode(&wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(m, Message::Unassigned { message: MessageType(n), body: &body });
            let mut again = Vec::new();
            m.encode(&mut again);
            prop_assert_eq!(again, wire);
        }

        #[test]
        fn decode_never_panics(data in bytes(80)) {
            let _ = decode(&data);
        }

        #[test]
        fn decode_never_panics_on_connection_numbers(n in 80u8..=100, data in bytes(60)) {
            let mut wire = vec![n];
            wire.extend_from_slice(&data);
            if let Ok(m) = decode(&wire) {
                // Whatever decodes re-encodes to something that decodes to the same message.
                let mut again = Vec::new();
                m.encode(&mut again);
                prop_assert_eq!(decode(&again).ok(), Some(m));
            }
        }
    }
}
