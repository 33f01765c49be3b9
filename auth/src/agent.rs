//! The ssh-agent protocol (draft-miller-ssh-agent, now RFC 9987), client side, as a codec:
//! the caller owns the socket.
//!
//! ```text
//!  AgentRequest::RequestIdentities ──encode_frame──> socket ──> agent
//!  agent ──> socket ──frame_length (bounded)──> body ──AgentResponse::decode──> Identities
//!  AuthEvent::SignRequest ──AgentRequest::Sign { flags: sign_flags(alg) }──> ... ──> SignResponse
//! ```
//!
//! Every frame is `uint32 length, byte type, contents`. A length over [`MAX_FRAME_LEN`] is
//! refused from its four bytes, before anything is allocated, and an identities answer may
//! hold at most [`MAX_IDENTITIES`] keys, each checked against the bytes that remain.

use core::fmt;

use ssh_transport::hostkey::SignatureAlgorithm;
use ssh_transport::text::sanitize;
use ssh_transport::wire::{DecodeError, Reader, Writer as _};

/// Frames longer than this are refused: the agent answers with at most a key list or a
/// signature, far smaller (OpenSSH's agent itself caps messages at 256 KiB).
pub const MAX_FRAME_LEN: usize = 256 * 1024;
/// More keys than this in one answer are refused (OpenSSH's client allows 2048; an agent
/// with more than a thousand keys is broken or hostile).
pub const MAX_IDENTITIES: usize = 1024;
/// Comments are cut to this many characters when shown.
const MAX_COMMENT_CHARS: usize = 256;

ssh_transport::wire_number! {
    /// An agent protocol message number.
    pub struct AgentMessageType(u8) {
        /// SSH_AGENT_FAILURE
        FAILURE = 5 => "SSH_AGENT_FAILURE",
        /// SSH_AGENT_SUCCESS
        SUCCESS = 6 => "SSH_AGENT_SUCCESS",
        /// SSH_AGENTC_REQUEST_IDENTITIES
        REQUEST_IDENTITIES = 11 => "SSH_AGENTC_REQUEST_IDENTITIES",
        /// SSH_AGENT_IDENTITIES_ANSWER
        IDENTITIES_ANSWER = 12 => "SSH_AGENT_IDENTITIES_ANSWER",
        /// SSH_AGENTC_SIGN_REQUEST
        SIGN_REQUEST = 13 => "SSH_AGENTC_SIGN_REQUEST",
        /// SSH_AGENT_SIGN_RESPONSE
        SIGN_RESPONSE = 14 => "SSH_AGENT_SIGN_RESPONSE",
        /// SSH_AGENT_EXTENSION_FAILURE
        EXTENSION_FAILURE = 28 => "SSH_AGENT_EXTENSION_FAILURE",
    }
}

/// Sign-request flag: an RSA signature with SHA-256 (`rsa-sha2-256`).
pub const SSH_AGENT_RSA_SHA2_256: u32 = 2;
/// Sign-request flag: an RSA signature with SHA-512 (`rsa-sha2-512`).
pub const SSH_AGENT_RSA_SHA2_512: u32 = 4;

/// The sign-request flags that ask the agent for `alg`: the RSA SHA-2 flags, else none.
pub fn sign_flags(alg: SignatureAlgorithm) -> u32 {
    match alg {
        SignatureAlgorithm::RsaSha256 => SSH_AGENT_RSA_SHA2_256,
        SignatureAlgorithm::RsaSha512 => SSH_AGENT_RSA_SHA2_512,
        _ => 0,
    }
}

/// What went wrong talking to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentError {
    /// A frame claimed more than [`MAX_FRAME_LEN`] bytes.
    FrameTooLarge {
        /// The length it claimed.
        len: usize,
    },
    /// A frame had no message type.
    EmptyFrame,
    /// An answer did not decode, or held too many keys.
    Malformed(String),
    /// The agent answered with another message than the request calls for.
    Unexpected {
        /// What came.
        got: AgentMessageType,
        /// What was asked.
        request: &'static str,
    },
    /// The agent refused (SSH_AGENT_FAILURE): for a signature, usually because the key
    /// was removed, is locked, or needs a confirmation or a touch that did not come.
    Refused {
        /// What was asked.
        request: &'static str,
    },
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FrameTooLarge { len } => write!(
                f,
                "the agent sent a {len}-byte message, more than the {MAX_FRAME_LEN} allowed; \
                 the agent is broken or is not an ssh-agent"
            ),
            Self::EmptyFrame => f.write_str(
                "the agent sent an empty message; the agent is broken or is not an ssh-agent",
            ),
            Self::Malformed(what) => write!(
                f,
                "the agent's answer is malformed: {what}; the agent is broken or is not an \
                 ssh-agent"
            ),
            Self::Unexpected { got, request } => {
                write!(f, "the agent answered {request} with {got}")
            }
            Self::Refused { request } => write!(
                f,
                "the agent refused {request}; check that the key is still loaded \
                 (ssh-add -l) and that the agent is not locked"
            ),
        }
    }
}

impl std::error::Error for AgentError {}

/// Checks a frame's length field; `Ok(n)` means `n` body bytes follow.
pub fn frame_length(header: [u8; 4]) -> Result<usize, AgentError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(AgentError::FrameTooLarge { len });
    }
    if len == 0 {
        return Err(AgentError::EmptyFrame);
    }
    Ok(len)
}

/// A frame's body and the bytes after the frame.
pub type Split<'a> = (&'a [u8], &'a [u8]);

/// Splits the first whole frame off `buf`: `Ok(Some((body, rest)))`, `Ok(None)` if more bytes
/// are needed, or an error for a bad length.
pub fn split_frame(buf: &[u8]) -> Result<Option<Split<'_>>, AgentError> {
    let Some((header, rest)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = frame_length(*header)?;
    Ok(rest.split_at_checked(len))
}

/// A request to the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentRequest<'a> {
    /// SSH_AGENTC_REQUEST_IDENTITIES: list the keys.
    RequestIdentities,
    /// SSH_AGENTC_SIGN_REQUEST.
    Sign {
        /// The key (or certificate) blob, as listed.
        key_blob: &'a [u8],
        /// What to sign.
        data: &'a [u8],
        /// [`sign_flags`].
        flags: u32,
    },
}

impl<'a> AgentRequest<'a> {
    /// Appends the request with its length prefix, ready to write to the socket.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.put_u32(0);
        match self {
            Self::RequestIdentities => out.put_u8(AgentMessageType::REQUEST_IDENTITIES.0),
            Self::Sign {
                key_blob,
                data,
                flags,
            } => {
                out.put_u8(AgentMessageType::SIGN_REQUEST.0);
                out.put_string(key_blob);
                out.put_string(data);
                out.put_u32(*flags);
            }
        }
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        if let Some(l) = out.get_mut(start..start + 4) {
            l.copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Decodes a frame body (for test agents).
    pub fn decode(body: &'a [u8]) -> Result<Self, AgentError> {
        let mut r = Reader::new(body);
        let kind = AgentMessageType(r.u8().map_err(|_| AgentError::EmptyFrame)?);
        let bad = |e: DecodeError| AgentError::Malformed(format!("{kind}: {e}"));
        let req = match kind {
            AgentMessageType::REQUEST_IDENTITIES => Self::RequestIdentities,
            AgentMessageType::SIGN_REQUEST => Self::Sign {
                key_blob: r.string().map_err(bad)?,
                data: r.string().map_err(bad)?,
                flags: r.u32().map_err(bad)?,
            },
            other => {
                return Err(AgentError::Malformed(format!(
                    "{other} is not a request this client makes"
                )));
            }
        };
        r.finish().map_err(bad)?;
        Ok(req)
    }
}

/// One key the agent holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AgentIdentity<'a> {
    /// The public key or certificate blob.
    pub key_blob: &'a [u8],
    /// The comment (usually the file it was loaded from); sanitize before showing it.
    pub comment: &'a [u8],
}

impl AgentIdentity<'_> {
    /// The comment, safe to show.
    pub fn comment_text(&self) -> String {
        sanitize(self.comment, false, MAX_COMMENT_CHARS)
    }
}

impl fmt::Debug for AgentIdentity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentIdentity")
            .field(
                "key",
                &ssh_transport::hostkey::fingerprint_sha256(self.key_blob),
            )
            .field("comment", &self.comment_text())
            .finish()
    }
}

/// An answer from the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentResponse<'a> {
    /// SSH_AGENT_FAILURE (or SSH_AGENT_EXTENSION_FAILURE).
    Failure,
    /// SSH_AGENT_SUCCESS.
    Success,
    /// SSH_AGENT_IDENTITIES_ANSWER.
    Identities(Vec<AgentIdentity<'a>>),
    /// SSH_AGENT_SIGN_RESPONSE: a whole SSH signature blob.
    Signature(&'a [u8]),
    /// Any other message, kept as its number.
    Other(AgentMessageType),
}

impl<'a> AgentResponse<'a> {
    /// Decodes a frame body (the bytes after the length) wholly.
    pub fn decode(body: &'a [u8]) -> Result<Self, AgentError> {
        let mut r = Reader::new(body);
        let kind = AgentMessageType(r.u8().map_err(|_| AgentError::EmptyFrame)?);
        let bad = |e: DecodeError| AgentError::Malformed(format!("{kind}: {e}"));
        let resp = match kind {
            AgentMessageType::FAILURE | AgentMessageType::EXTENSION_FAILURE => Self::Failure,
            AgentMessageType::SUCCESS => Self::Success,
            AgentMessageType::IDENTITIES_ANSWER => {
                let count = r.u32().map_err(bad)? as usize;
                // Each key takes at least its two length fields: a count the bytes cannot
                // hold is refused before the list is allocated.
                if count > MAX_IDENTITIES || count > r.remaining() / 8 {
                    return Err(AgentError::Malformed(format!(
                        "it claims {count} keys, more than the {} it can hold (at most \
                         {MAX_IDENTITIES} are accepted)",
                        (r.remaining() / 8).min(MAX_IDENTITIES)
                    )));
                }
                let mut keys = Vec::with_capacity(count);
                for _ in 0..count {
                    let key_blob = r.string().map_err(bad)?;
                    let comment = r.string().map_err(bad)?;
                    keys.push(AgentIdentity { key_blob, comment });
                }
                Self::Identities(keys)
            }
            AgentMessageType::SIGN_RESPONSE => Self::Signature(r.string().map_err(bad)?),
            other => {
                r.rest();
                Self::Other(other)
            }
        };
        r.finish().map_err(bad)?;
        Ok(resp)
    }

    /// Appends the answer with its length prefix (for test agents).
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.put_u32(0);
        match self {
            Self::Failure => out.put_u8(AgentMessageType::FAILURE.0),
            Self::Success => out.put_u8(AgentMessageType::SUCCESS.0),
            Self::Identities(keys) => {
                out.put_u8(AgentMessageType::IDENTITIES_ANSWER.0);
                out.put_u32(u32::try_from(keys.len()).unwrap_or(u32::MAX));
                for k in keys {
                    out.put_string(k.key_blob);
                    out.put_string(k.comment);
                }
            }
            Self::Signature(sig) => {
                out.put_u8(AgentMessageType::SIGN_RESPONSE.0);
                out.put_string(sig);
            }
            Self::Other(kind) => out.put_u8(kind.0),
        }
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        if let Some(l) = out.get_mut(start..start + 4) {
            l.copy_from_slice(&len.to_be_bytes());
        }
    }

    /// The keys, from the answer to [`AgentRequest::RequestIdentities`].
    pub fn into_identities(self) -> Result<Vec<AgentIdentity<'a>>, AgentError> {
        match self {
            Self::Identities(keys) => Ok(keys),
            Self::Failure => Err(AgentError::Refused {
                request: "the request for its keys",
            }),
            other => Err(AgentError::Unexpected {
                got: other.message_type(),
                request: "the request for its keys",
            }),
        }
    }

    /// The signature blob, from the answer to [`AgentRequest::Sign`]. The caller should
    /// still check that it is of the algorithm asked for (old agents ignore the flags).
    pub fn into_signature(self) -> Result<&'a [u8], AgentError> {
        match self {
            Self::Signature(sig) => Ok(sig),
            Self::Failure => Err(AgentError::Refused { request: "to sign" }),
            other => Err(AgentError::Unexpected {
                got: other.message_type(),
                request: "a signature request",
            }),
        }
    }

    fn message_type(&self) -> AgentMessageType {
        match self {
            Self::Failure => AgentMessageType::FAILURE,
            Self::Success => AgentMessageType::SUCCESS,
            Self::Identities(_) => AgentMessageType::IDENTITIES_ANSWER,
            Self::Signature(_) => AgentMessageType::SIGN_RESPONSE,
            Self::Other(k) => *k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_body(frame: &[u8]) -> &[u8] {
        let (body, rest) = split_frame(frame).unwrap().unwrap();
        assert!(rest.is_empty());
        body
    }

    #[test]
    fn requests_match_the_draft_layout() {
        let mut v = Vec::new();
        AgentRequest::RequestIdentities.encode_frame(&mut v);
        assert_eq!(v, [0, 0, 0, 1, 11]);
        let mut v = Vec::new();
        AgentRequest::Sign {
            key_blob: b"KEY",
            data: b"DATA",
            flags: SSH_AGENT_RSA_SHA2_512,
        }
        .encode_frame(&mut v);
        assert_eq!(
            v,
            [
                0, 0, 0, 20, 13, 0, 0, 0, 3, b'K', b'E', b'Y', 0, 0, 0, 4, b'D', b'A', b'T', b'A',
                0, 0, 0, 4
            ]
        );
        assert_eq!(sign_flags(SignatureAlgorithm::RsaSha256), 2);
        assert_eq!(sign_flags(SignatureAlgorithm::RsaSha1), 0);
        assert_eq!(sign_flags(SignatureAlgorithm::Ed25519), 0);
    }

    #[test]
    fn a_huge_frame_is_refused_from_its_length() {
        assert_eq!(
            split_frame(&[0x7f, 0xff, 0xff, 0xff, 12]),
            Err(AgentError::FrameTooLarge { len: 0x7fff_ffff })
        );
        let just_over = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
        assert!(frame_length(just_over).is_err());
        let at_limit = u32::try_from(MAX_FRAME_LEN).unwrap().to_be_bytes();
        assert_eq!(frame_length(at_limit), Ok(MAX_FRAME_LEN));
        assert_eq!(frame_length([0; 4]), Err(AgentError::EmptyFrame));
        assert_eq!(split_frame(&[0, 0, 0, 5, 12, 0]), Ok(None));
        assert_eq!(split_frame(&[0, 0]), Ok(None));
    }

    #[test]
    fn identity_counts_the_bytes_cannot_hold_are_refused() {
        // Claims a million keys in a few bytes: refused before any allocation.
        let body = [12, 0, 0x0f, 0x42, 0x40, 0, 0, 0, 0];
        let err = AgentResponse::decode(&body).unwrap_err();
        assert!(err.to_string().contains("claims 1000000 keys"), "{err}");
        // More than MAX_IDENTITIES, even with the bytes for them.
        let keys: Vec<AgentIdentity<'_>> = (0..=MAX_IDENTITIES)
            .map(|_| AgentIdentity {
                key_blob: b"k",
                comment: b"",
            })
            .collect();
        let mut frame = Vec::new();
        AgentResponse::Identities(keys).encode_frame(&mut frame);
        assert!(AgentResponse::decode(frame_body(&frame)).is_err());
        // A count one larger than the keys present is truncation.
        let mut frame = Vec::new();
        AgentResponse::Identities(vec![AgentIdentity {
            key_blob: b"key",
            comment: b"c",
        }])
        .encode_frame(&mut frame);
        let mut body = frame_body(&frame).to_vec();
        body[4] = 2;
        body.extend_from_slice(&[0; 8]);
        body.truncate(body.len() - 1);
        assert!(AgentResponse::decode(&body).is_err());
    }

    #[test]
    fn answers_turn_into_results_with_clear_errors() {
        let sig = AgentResponse::Signature(b"SIG");
        assert_eq!(sig.into_signature(), Ok(&b"SIG"[..]));
        let err = AgentResponse::Failure.into_signature().unwrap_err();
        assert!(
            err.to_string().contains("the agent refused to sign"),
            "{err}"
        );
        let err = AgentResponse::Success.into_identities().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the agent answered the request for its keys with SSH_AGENT_SUCCESS"
        );
        assert_eq!(
            AgentResponse::decode(&[28]).unwrap(),
            AgentResponse::Failure,
            "extension failure is a failure"
        );
        assert_eq!(
            AgentResponse::decode(&[99, 1, 2]).unwrap(),
            AgentResponse::Other(AgentMessageType(99))
        );
        assert!(AgentResponse::decode(&[5, 0]).is_err(), "trailing byte");
        assert!(AgentResponse::decode(&[]).is_err());
    }

    #[test]
    fn comments_are_sanitized_for_display() {
        let id = AgentIdentity {
            key_blob: b"k",
            comment: b"me@host\x1b[31m",
        };
        assert_eq!(id.comment_text(), "me@host\\x1b[31m");
        assert!(format!("{id:?}").contains("SHA256:"));
    }

    proptest! {
        #[test]
        fn responses_round_trip(
            keys in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(any::<u8>(), 0..20)),
                0..6,
            ),
            sig in proptest::collection::vec(any::<u8>(), 0..80),
            kind in 0u8..4,
        ) {
            let resp = match kind {
                0 => AgentResponse::Failure,
                1 => AgentResponse::Success,
                2 => AgentResponse::Identities(
                    keys.iter().map(|(k, c)| AgentIdentity { key_blob: k, comment: c }).collect(),
                ),
                _ => AgentResponse::Signature(&sig),
            };
            let mut frame = Vec::new();
            resp.encode_frame(&mut frame);
            prop_assert_eq!(AgentResponse::decode(frame_body(&frame))?, resp);
        }

        #[test]
        fn requests_round_trip(
            blob in proptest::collection::vec(any::<u8>(), 0..40),
            data in proptest::collection::vec(any::<u8>(), 0..80),
            flags in any::<u32>(),
            sign in any::<bool>(),
        ) {
            let req = if sign {
                AgentRequest::Sign { key_blob: &blob, data: &data, flags }
            } else {
                AgentRequest::RequestIdentities
            };
            let mut frame = Vec::new();
            req.encode_frame(&mut frame);
            prop_assert_eq!(AgentRequest::decode(frame_body(&frame))?, req);
        }

        #[test]
        fn arbitrary_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut at = &data[..];
            while let Ok(Some((body, rest))) = split_frame(at) {
                let _ = AgentResponse::decode(body);
                let _ = AgentRequest::decode(body);
                at = rest;
            }
            let _ = AgentResponse::decode(&data);
        }
    }
}
