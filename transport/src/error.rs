//! The transport's one error type, and the one function that maps it to a DISCONNECT code.

use core::fmt;
use std::time::Duration;

use crate::cert::CertError;
use crate::hostkey::KeyError;
use crate::kex::NoCommonAlgorithm;
use crate::msg::{DisconnectReason, MessageType};
use crate::packet::PacketError;
use crate::version::VersionError;
use crate::wire::DecodeError;

/// Everything that ends a transport. After one is returned the transport stays failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The server's identification line was refused.
    Version(VersionError),
    /// The version exchange and first key exchange did not finish in time.
    HandshakeTimeout(Duration),
    /// A key exchange after the first (a rekey, ours or the server's) did not finish in time.
    RekeyTimeout(Duration),
    /// A packet's framing was wrong (length, padding) or its MAC failed.
    Packet(PacketError),
    /// A message did not decode.
    Decode {
        /// Which message.
        message: MessageType,
        /// What was wrong.
        error: DecodeError,
    },
    /// Negotiation found no algorithm both sides accept.
    NoCommonAlgorithm(NoCommonAlgorithm),
    /// The key exchange itself failed (a bad public value, an all-zero shared secret).
    KeyExchange(String),
    /// The server's host key or its signature over the exchange hash is not acceptable.
    HostKey(KeyError),
    /// A certificate host key algorithm was negotiated and K_S is not a usable certificate
    /// (not a certificate, malformed, or its authority's signature does not verify).
    HostCertificate {
        /// The negotiated algorithm.
        algorithm: &'static str,
        /// What is wrong with it.
        error: CertError,
    },
    /// The application refused the server's host key.
    HostKeyRejected(String),
    /// The server presented another host key in a later key exchange.
    HostKeyChangedInRekey {
        /// Fingerprint of the key accepted at connection time.
        first: String,
        /// Fingerprint of the key presented now.
        now: String,
    },
    /// A message arrived that the protocol does not allow at this point.
    UnexpectedMessage {
        /// The message.
        message: MessageType,
        /// What the transport was waiting for.
        expected: &'static str,
    },
    /// A strict key exchange rule was broken (OpenSSH's countermeasure to the Terrapin attack).
    StrictKex(String),
    /// The server sent SSH_MSG_DISCONNECT.
    Disconnected {
        /// Its reason code.
        reason: DisconnectReason,
        /// Its description, sanitized.
        description: String,
    },
    /// The server closed the TCP connection.
    ConnectionLost,
    /// More than this many bytes of our packets waited to be sent: the server stopped
    /// reading while it kept sending (each reply it asks for adds to the pile).
    OutputOverflow(usize),
    /// This side closed the transport.
    Closed,
}

impl Error {
    /// The code to send in SSH_MSG_DISCONNECT for this error, or `None` when nothing should
    /// be sent (the peer already left, or it was the peer that disconnected).
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        Some(match self {
            Self::Version(VersionError::Protocol1(_) | VersionError::UnsupportedVersion(_)) => {
                DisconnectReason::PROTOCOL_VERSION_NOT_SUPPORTED
            }
            Self::Version(_) | Self::Decode { .. } | Self::UnexpectedMessage { .. } => {
                DisconnectReason::PROTOCOL_ERROR
            }
            Self::StrictKex(_) => DisconnectReason::PROTOCOL_ERROR,
            Self::Packet(PacketError::Integrity) => DisconnectReason::MAC_ERROR,
            Self::Packet(PacketError::Decompress(_)) => DisconnectReason::COMPRESSION_ERROR,
            Self::Packet(_) => DisconnectReason::PROTOCOL_ERROR,
            Self::NoCommonAlgorithm(_) | Self::KeyExchange(_) => {
                DisconnectReason::KEY_EXCHANGE_FAILED
            }
            Self::HostKey(_)
            | Self::HostCertificate { .. }
            | Self::HostKeyRejected(_)
            | Self::HostKeyChangedInRekey { .. } => DisconnectReason::HOST_KEY_NOT_VERIFIABLE,
            Self::HandshakeTimeout(_) | Self::RekeyTimeout(_) | Self::Closed => {
                DisconnectReason::BY_APPLICATION
            }
            // A DISCONNECT would only wait behind the rest.
            Self::Disconnected { .. } | Self::ConnectionLost | Self::OutputOverflow(_) => {
                return None;
            }
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version(e) => e.fmt(f),
            Self::HandshakeTimeout(d) => write!(
                f,
                "the SSH handshake did not finish within {} s; the server is silent or very slow \
                 (raise ConnectTimeout if it is just slow)",
                d.as_secs()
            ),
            Self::RekeyTimeout(d) => write!(
                f,
                "the server did not finish a key re-exchange within {} s (ConnectTimeout); \
                 channel data waits for it, so the session is ended to be started afresh",
                d.as_secs()
            ),
            Self::Packet(PacketError::TooLong(n)) => write!(
                f,
                "the server sent a packet of {n} bytes, over the 256 KiB limit; the connection \
                 is corrupt or the server is hostile"
            ),
            Self::Packet(PacketError::BadLength(n)) => {
                write!(f, "the server sent a packet with an invalid length ({n})")
            }
            Self::Packet(PacketError::BadPadding(n)) => {
                write!(
                    f,
                    "the server sent a packet with invalid padding ({n} bytes)"
                )
            }
            Self::Packet(PacketError::Integrity) => f.write_str(
                "a packet from the server failed its integrity check (MAC error): the data was \
                 altered on the way or the connection is corrupt",
            ),
            Self::Packet(PacketError::EmptyPayload) => {
                f.write_str("the server sent a packet with an empty payload")
            }
            Self::Packet(PacketError::Decompress(e)) => write!(
                f,
                "the server sent a packet that does not decompress: {e}; the connection is \
                 corrupt or the server is hostile (connecting without compression avoids this)"
            ),
            Self::Decode { message, error } => {
                write!(f, "malformed {message} from the server: {error}")
            }
            Self::NoCommonAlgorithm(e) => write!(
                f,
                "no {} algorithm in common with the server: we offer {}; the server offers {}",
                e.what,
                if e.ours.is_empty() {
                    "(nothing)"
                } else {
                    &e.ours
                },
                if e.theirs.is_empty() {
                    "(nothing)"
                } else {
                    &e.theirs
                },
            ),
            Self::KeyExchange(why) => write!(f, "key exchange failed: {why}"),
            Self::HostKey(e) => write!(f, "the server's host key is not acceptable: {e}"),
            Self::HostCertificate { algorithm, error } => {
                write!(
                    f,
                    "the server's host certificate (host key algorithm {algorithm}) is not \
                     usable: "
                )?;
                match error {
                    CertError::Malformed(what) => f.write_str(what)?,
                    CertError::UnsupportedType(name) => {
                        write!(f, "certificates of type {name} are not supported")?;
                    }
                    CertError::BadSignature { ca, why } => write!(
                        f,
                        "its certificate authority's signature (by {ca}) is not valid: {why}"
                    )?,
                    other => write!(f, "{other}")?,
                }
                f.write_str(
                    "; the server is misconfigured or someone is intercepting the connection",
                )
            }
            Self::HostKeyRejected(why) => f.write_str(why),
            Self::HostKeyChangedInRekey { first, now } => write!(
                f,
                "the server presented a different host key when re-keying ({now}, was {first}); \
                 disconnecting"
            ),
            Self::UnexpectedMessage { message, expected } => {
                write!(
                    f,
                    "protocol error: the server sent {message} while we expected {expected}"
                )
            }
            Self::StrictKex(why) => write!(f, "strict key exchange violated: {why}"),
            Self::Disconnected {
                reason,
                description,
            } => write!(f, "the server disconnected ({reason}): {description}"),
            Self::ConnectionLost => f.write_str("the server closed the connection"),
            Self::OutputOverflow(limit) => write!(
                f,
                "the server stopped reading: over {} MiB of our packets waited to be sent while \
                 it kept sending",
                limit >> 20
            ),
            Self::Closed => f.write_str("the connection was closed"),
        }
    }
}

impl std::error::Error for Error {}

impl From<PacketError> for Error {
    fn from(e: PacketError) -> Self {
        Self::Packet(e)
    }
}

impl From<VersionError> for Error {
    fn from(e: VersionError) -> Self {
        Self::Version(e)
    }
}

impl From<NoCommonAlgorithm> for Error {
    fn from(e: NoCommonAlgorithm) -> Self {
        Self::NoCommonAlgorithm(e)
    }
}
