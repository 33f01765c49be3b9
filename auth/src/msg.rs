//! The messages of RFC 4252 (and the service request of RFC 4253 section 10) as types, each
//! with `encode` (append to a buffer) and `decode` (a whole payload, message number first,
//! trailing bytes rejected). Both directions are here so that test servers share the codec.

use ssh_transport::MessageType;
use ssh_transport::wire::{DecodeError, NameList, Reader, Writer as _};

use crate::error::AuthError;

/// The service a client asks for before authenticating.
pub const SERVICE_USERAUTH: &str = "ssh-userauth";
/// The service authentication is for.
pub const SERVICE_CONNECTION: &str = "ssh-connection";
/// The method name of public key authentication.
pub const METHOD_PUBLICKEY: &str = "publickey";
/// The method name that asks for no authentication (and learns the allowed methods).
pub const METHOD_NONE: &str = "none";

/// Reads the message number and checks it is `expected`.
fn open(payload: &[u8], expected: MessageType) -> Result<Reader<'_>, DecodeError> {
    let mut r = Reader::new(payload);
    if r.u8()? != expected.0 {
        return Err(DecodeError::InvalidValue("message number"));
    }
    Ok(r)
}

/// SSH_MSG_SERVICE_REQUEST (5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceRequest<'a> {
    /// The service asked for.
    pub service: &'a str,
}

impl<'a> ServiceRequest<'a> {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::SERVICE_REQUEST.0);
        out.put_str(self.service);
    }

    /// Decodes a whole payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = open(payload, MessageType::SERVICE_REQUEST)?;
        let service = r.utf8()?;
        r.finish()?;
        Ok(Self { service })
    }
}

/// SSH_MSG_SERVICE_ACCEPT (6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceAccept<'a> {
    /// The service accepted.
    pub service: &'a str,
}

impl<'a> ServiceAccept<'a> {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::SERVICE_ACCEPT.0);
        out.put_str(self.service);
    }

    /// Decodes a whole payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = open(payload, MessageType::SERVICE_ACCEPT)?;
        let service = r.utf8()?;
        r.finish()?;
        Ok(Self { service })
    }
}

/// The method-specific part of a USERAUTH_REQUEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod<'a> {
    /// `none`: no fields.
    None,
    /// `publickey` (RFC 4252 section 7, RFC 8332).
    PublicKey {
        /// The signature algorithm name, e.g. `rsa-sha2-512`.
        algorithm: &'a str,
        /// The public key blob (its own type name, e.g. `ssh-rsa`, inside).
        key_blob: &'a [u8],
        /// The signature blob; absent in a query that asks the server whether it would
        /// accept the key.
        signature: Option<&'a [u8]>,
    },
    /// Any other method, kept undecoded.
    Other {
        /// The method name.
        name: &'a str,
        /// The fields after the name.
        fields: &'a [u8],
    },
}

/// SSH_MSG_USERAUTH_REQUEST (50).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserauthRequest<'a> {
    /// The user name.
    pub user: &'a str,
    /// The service to start once authenticated (`ssh-connection`).
    pub service: &'a str,
    /// The method and its fields.
    pub method: AuthMethod<'a>,
}

impl<'a> UserauthRequest<'a> {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::USERAUTH_REQUEST.0);
        out.put_str(self.user);
        out.put_str(self.service);
        match self.method {
            AuthMethod::None => out.put_str(METHOD_NONE),
            AuthMethod::PublicKey {
                algorithm,
                key_blob,
                signature,
            } => {
                out.put_str(METHOD_PUBLICKEY);
                out.put_bool(signature.is_some());
                out.put_str(algorithm);
                out.put_string(key_blob);
                if let Some(sig) = signature {
                    out.put_string(sig);
                }
            }
            AuthMethod::Other { name, fields } => {
                out.put_str(name);
                out.put_raw(fields);
            }
        }
    }

    /// Decodes a whole payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = open(payload, MessageType::USERAUTH_REQUEST)?;
        let user = r.utf8()?;
        let service = r.utf8()?;
        let name = r.utf8()?;
        let method = match name {
            METHOD_NONE => AuthMethod::None,
            METHOD_PUBLICKEY => {
                let signed = r.bool()?;
                let algorithm = r.utf8()?;
                let key_blob = r.string()?;
                let signature = if signed { Some(r.string()?) } else { None };
                AuthMethod::PublicKey {
                    algorithm,
                    key_blob,
                    signature,
                }
            }
            _ => AuthMethod::Other {
                name,
                fields: r.rest(),
            },
        };
        r.finish()?;
        Ok(Self {
            user,
            service,
            method,
        })
    }
}

/// The bytes a publickey signature covers (RFC 4252 section 7): the session identifier, then
/// the request itself up to the signature.
pub fn publickey_signed_data(
    session_id: &[u8],
    user: &str,
    service: &str,
    algorithm: &str,
    key_blob: &[u8],
) -> Vec<u8> {
    let mut data = Vec::with_capacity(
        session_id.len() + user.len() + service.len() + algorithm.len() + key_blob.len() + 64,
    );
    data.put_string(session_id);
    data.put_u8(MessageType::USERAUTH_REQUEST.0);
    data.put_str(user);
    data.put_str(service);
    data.put_str(METHOD_PUBLICKEY);
    data.put_bool(true);
    data.put_str(algorithm);
    data.put_string(key_blob);
    data
}

/// SSH_MSG_USERAUTH_FAILURE (51).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserauthFailure<'a> {
    /// Methods that may continue.
    pub methods: NameList<'a>,
    /// Whether the request that failed was in fact accepted, with more methods required.
    pub partial_success: bool,
}

impl<'a> UserauthFailure<'a> {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::USERAUTH_FAILURE.0);
        out.put_str(self.methods.as_str());
        out.put_bool(self.partial_success);
    }

    /// Decodes a whole payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = open(payload, MessageType::USERAUTH_FAILURE)?;
        let methods = r.name_list()?;
        let partial_success = r.bool()?;
        r.finish()?;
        Ok(Self {
            methods,
            partial_success,
        })
    }
}

/// SSH_MSG_USERAUTH_SUCCESS (52): no fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserauthSuccess;

impl UserauthSuccess {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::USERAUTH_SUCCESS.0);
    }

    /// Decodes a whole payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        open(payload, MessageType::USERAUTH_SUCCESS)?.finish()?;
        Ok(Self)
    }
}

/// SSH_MSG_USERAUTH_BANNER (53). The text is kept as bytes: it is the server's, and is only
/// shown after [`ssh_transport::text::sanitize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserauthBanner<'a> {
    /// The message, meant to be UTF-8.
    pub message: &'a [u8],
    /// The language tag (RFC 3066), usually empty.
    pub language: &'a [u8],
}

impl<'a> UserauthBanner<'a> {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::USERAUTH_BANNER.0);
        out.put_string(self.message);
        out.put_string(self.language);
    }

    /// Decodes a whole payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = open(payload, MessageType::USERAUTH_BANNER)?;
        let message = r.string()?;
        let language = r.string()?;
        r.finish()?;
        Ok(Self { message, language })
    }
}

/// SSH_MSG_USERAUTH_PK_OK (60): the server would accept this key. Number 60 means other
/// things for other methods; this crate only uses publickey, so it decodes it as this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserauthPkOk<'a> {
    /// The algorithm from the query.
    pub algorithm: &'a str,
    /// The key blob from the query.
    pub key_blob: &'a [u8],
}

impl<'a> UserauthPkOk<'a> {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::USERAUTH_PK_OK.0);
        out.put_str(self.algorithm);
        out.put_string(self.key_blob);
    }

    /// Decodes a whole payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = open(payload, MessageType::USERAUTH_PK_OK)?;
        let algorithm = r.utf8()?;
        let key_blob = r.string()?;
        r.finish()?;
        Ok(Self {
            algorithm,
            key_blob,
        })
    }
}

/// Every message a server may send to the authentication layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMessage<'a> {
    /// SERVICE_ACCEPT (6).
    ServiceAccept(ServiceAccept<'a>),
    /// USERAUTH_FAILURE (51).
    Failure(UserauthFailure<'a>),
    /// USERAUTH_SUCCESS (52).
    Success(UserauthSuccess),
    /// USERAUTH_BANNER (53).
    Banner(UserauthBanner<'a>),
    /// USERAUTH_PK_OK (60).
    PkOk(UserauthPkOk<'a>),
}

impl ServerMessage<'_> {
    /// The message number.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::ServiceAccept(_) => MessageType::SERVICE_ACCEPT,
            Self::Failure(_) => MessageType::USERAUTH_FAILURE,
            Self::Success(_) => MessageType::USERAUTH_SUCCESS,
            Self::Banner(_) => MessageType::USERAUTH_BANNER,
            Self::PkOk(_) => MessageType::USERAUTH_PK_OK,
        }
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::ServiceAccept(m) => m.encode(out),
            Self::Failure(m) => m.encode(out),
            Self::Success(m) => m.encode(out),
            Self::Banner(m) => m.encode(out),
            Self::PkOk(m) => m.encode(out),
        }
    }
}

/// A message number for error text: its name and number, or the number alone.
pub(crate) fn describe(kind: MessageType) -> String {
    match kind.name() {
        Some(name) => format!("{name} ({})", kind.0),
        None => format!("message number {}", kind.0),
    }
}

/// Decodes any payload the session router hands to authentication (message 6 and 50..=79),
/// wholly, before anything acts on it. This is the entry point to fuzz.
pub fn decode_server_message(payload: &[u8]) -> Result<ServerMessage<'_>, AuthError> {
    let kind = MessageType::of(payload).ok_or_else(|| {
        AuthError::Protocol("an empty message was passed to authentication".into())
    })?;
    let malformed =
        |e: DecodeError| AuthError::Protocol(format!("malformed {}: {e}", describe(kind)));
    Ok(match kind {
        MessageType::SERVICE_ACCEPT => {
            ServerMessage::ServiceAccept(ServiceAccept::decode(payload).map_err(malformed)?)
        }
        MessageType::USERAUTH_FAILURE => {
            ServerMessage::Failure(UserauthFailure::decode(payload).map_err(malformed)?)
        }
        MessageType::USERAUTH_SUCCESS => {
            ServerMessage::Success(UserauthSuccess::decode(payload).map_err(malformed)?)
        }
        MessageType::USERAUTH_BANNER => {
            ServerMessage::Banner(UserauthBanner::decode(payload).map_err(malformed)?)
        }
        MessageType::USERAUTH_PK_OK => {
            ServerMessage::PkOk(UserauthPkOk::decode(payload).map_err(malformed)?)
        }
        other => {
            return Err(AuthError::Protocol(format!(
                "{} is not a message a server sends to a client during authentication",
                describe(other)
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..80)
    }

    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,20}"
    }

    fn names() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-z0-9@.-]{1,12}", 0..5).prop_map(|v| v.join(","))
    }

    #[test]
    fn signed_data_matches_rfc4252_layout() {
        let data = publickey_signed_data(b"SID", "u", "ssh-connection", "rsa-sha2-256", b"KEY");
        let mut expected = Vec::new();
        expected.put_string(b"SID");
        expected.put_u8(50);
        expected.put_str("u");
        expected.put_str("ssh-connection");
        expected.put_str("publickey");
        expected.put_bool(true);
        expected.put_str("rsa-sha2-256");
        expected.put_string(b"KEY");
        assert_eq!(data, expected);
    }

    #[test]
    fn wrong_number_and_trailing_bytes_are_refused() {
        let mut v = Vec::new();
        UserauthSuccess.encode(&mut v);
        assert_eq!(
            UserauthFailure::decode(&v),
            Err(DecodeError::InvalidValue("message number"))
        );
        v.push(0);
        assert_eq!(UserauthSuccess::decode(&v), Err(DecodeError::TrailingBytes));
        assert!(matches!(
            decode_server_message(&v),
            Err(AuthError::Protocol(m)) if m.contains("SSH_MSG_USERAUTH_SUCCESS")
        ));
        assert!(matches!(
            decode_server_message(&[61]),
            Err(AuthError::Protocol(m)) if m.contains("message number 61")
        ));
        assert!(decode_server_message(&[]).is_err());
    }

    proptest! {
        #[test]
        fn service_messages_round_trip(s in text()) {
            let mut v = Vec::new();
            ServiceRequest { service: &s }.encode(&mut v);
            prop_assert_eq!(ServiceRequest::decode(&v)?, ServiceRequest { service: &s });
            let mut v = Vec::new();
            ServiceAccept { service: &s }.encode(&mut v);
            prop_assert_eq!(ServiceAccept::decode(&v)?, ServiceAccept { service: &s });
            prop_assert_eq!(
                decode_server_message(&v).ok(),
                Some(ServerMessage::ServiceAccept(ServiceAccept { service: &s }))
            );
        }

        #[test]
        fn userauth_request_round_trips(
            user in text(), service in text(), alg in text(), blob in bytes(),
            sig in proptest::option::of(bytes()), kind in 0u8..3, other in "[a-z]{1,8}",
            fields in bytes(),
        ) {
            let method = match kind {
                0 => AuthMethod::None,
                1 => AuthMethod::PublicKey { algorithm: &alg, key_blob: &blob, signature: sig.as_deref() },
                _ => {
                    let name = if other == "none" || other == "publickey" { "password" } else { other.as_str() };
                    AuthMethod::Other { name, fields: &fields }
                }
            };
            let req = UserauthRequest { user: &user, service: &service, method };
            let mut v = Vec::new();
            req.encode(&mut v);
            prop_assert_eq!(UserauthRequest::decode(&v)?, req);
        }

        #[test]
        fn server_messages_round_trip(
            methods in names(), partial in any::<bool>(), msg in bytes(), lang in bytes(),
            alg in text(), blob in bytes(), kind in 0u8..4,
        ) {
            let list = NameList::parse(methods.as_bytes())?;
            let m = match kind {
                0 => ServerMessage::Failure(UserauthFailure { methods: list, partial_success: partial }),
                1 => ServerMessage::Success(UserauthSuccess),
                2 => ServerMessage::Banner(UserauthBanner { message: &msg, language: &lang }),
                _ => ServerMessage::PkOk(UserauthPkOk { algorithm: &alg, key_blob: &blob }),
            };
            let mut v = Vec::new();
            m.encode(&mut v);
            prop_assert_eq!(decode_server_message(&v).ok(), Some(m));
            prop_assert_eq!(MessageType::of(&v), Some(m.message_type()));
            // One byte more is always refused.
            v.push(0);
            prop_assert!(decode_server_message(&v).is_err());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_server_message(&data);
            let _ = UserauthRequest::decode(&data);
            let _ = ServiceRequest::decode(&data);
        }
    }
}
