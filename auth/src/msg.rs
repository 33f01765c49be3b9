//! The messages of RFC 4252 (and the service request of RFC 4253 section 10), the password
//! method's change request (RFC 4252 section 8) and keyboard-interactive (RFC 4256) as types,
//! each with `encode` (append to a buffer) and `decode` (a whole payload, message number
//! first, trailing bytes rejected). Both directions are here so that test servers share the
//! codec.
//!
//! Message number 60 means three things, depending on the method of the request it answers:
//! PK_OK (publickey), PASSWD_CHANGEREQ (password) or INFO_REQUEST (keyboard-interactive).
//! [`decode_server_message_for`] takes that method; [`decode_server_message`] assumes
//! publickey.

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
/// The method name of password authentication (RFC 4252 section 8).
pub const METHOD_PASSWORD: &str = "password";
/// The method name of keyboard-interactive authentication (RFC 4256).
pub const METHOD_KEYBOARD_INTERACTIVE: &str = "keyboard-interactive";

/// SSH_MSG_USERAUTH_PASSWD_CHANGEREQ, SSH_MSG_USERAUTH_INFO_REQUEST: number 60 again.
const NUMBER_60: MessageType = MessageType::USERAUTH_PK_OK;
/// SSH_MSG_USERAUTH_INFO_RESPONSE (RFC 4256 section 3.4).
pub const USERAUTH_INFO_RESPONSE: MessageType = MessageType(61);

/// More prompts than this in one INFO_REQUEST are refused before anything is allocated; real
/// servers send one or two (OpenSSH's client refuses more than 100).
pub const MAX_INFO_PROMPTS: u32 = 64;

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

/// The method-specific part of a USERAUTH_REQUEST. Its `Debug` output never shows a
/// password.
#[derive(Clone, Copy, PartialEq, Eq)]
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
    /// `password` (RFC 4252 section 8).
    Password {
        /// The password.
        password: &'a str,
        /// The new password, when answering a change request.
        new_password: Option<&'a str>,
    },
    /// `keyboard-interactive` (RFC 4256 section 3.1).
    KeyboardInteractive {
        /// Deprecated; empty.
        language: &'a str,
        /// Hints about which kinds of prompts the client would like; usually empty.
        submethods: &'a str,
    },
    /// Any other method, kept undecoded.
    Other {
        /// The method name.
        name: &'a str,
        /// The fields after the name.
        fields: &'a [u8],
    },
}

impl core::fmt::Debug for AuthMethod<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::PublicKey {
                algorithm,
                key_blob,
                signature,
            } => f
                .debug_struct("PublicKey")
                .field("algorithm", algorithm)
                .field("key_blob_len", &key_blob.len())
                .field("signed", &signature.is_some())
                .finish(),
            Self::Password { new_password, .. } => f
                .debug_struct("Password")
                .field("changing", &new_password.is_some())
                .finish_non_exhaustive(),
            Self::KeyboardInteractive {
                language,
                submethods,
            } => f
                .debug_struct("KeyboardInteractive")
                .field("language", language)
                .field("submethods", submethods)
                .finish(),
            Self::Other { name, fields } => f
                .debug_struct("Other")
                .field("name", name)
                .field("fields_len", &fields.len())
                .finish(),
        }
    }
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
            AuthMethod::Password {
                password,
                new_password,
            } => {
                out.put_str(METHOD_PASSWORD);
                out.put_bool(new_password.is_some());
                out.put_str(password);
                if let Some(new) = new_password {
                    out.put_str(new);
                }
            }
            AuthMethod::KeyboardInteractive {
                language,
                submethods,
            } => {
                out.put_str(METHOD_KEYBOARD_INTERACTIVE);
                out.put_str(language);
                out.put_str(submethods);
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
            METHOD_PASSWORD => {
                let changing = r.bool()?;
                let password = r.utf8()?;
                let new_password = if changing { Some(r.utf8()?) } else { None };
                AuthMethod::Password {
                    password,
                    new_password,
                }
            }
            METHOD_KEYBOARD_INTERACTIVE => AuthMethod::KeyboardInteractive {
                language: r.utf8()?,
                submethods: r.utf8()?,
            },
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

/// SSH_MSG_USERAUTH_PASSWD_CHANGEREQ (60, in answer to a password request): the password
/// has expired and the server wants a new one (RFC 4252 section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserauthPasswdChangereq<'a> {
    /// The server's explanation, meant to be UTF-8; sanitize before showing it.
    pub prompt: &'a [u8],
    /// The language tag, usually empty.
    pub language: &'a [u8],
}

impl<'a> UserauthPasswdChangereq<'a> {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(NUMBER_60.0);
        out.put_string(self.prompt);
        out.put_string(self.language);
    }

    /// Decodes a whole payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = open(payload, NUMBER_60)?;
        let prompt = r.string()?;
        let language = r.string()?;
        r.finish()?;
        Ok(Self { prompt, language })
    }
}

/// The prompts of an INFO_REQUEST, checked when decoded and read again, without allocating,
/// by [`InfoPrompts::iter`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InfoPrompts<'a> {
    count: u32,
    /// `count` times `string prompt, boolean echo`.
    raw: &'a [u8],
}

/// One keyboard-interactive prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoPrompt<'a> {
    /// The text to show, meant to be UTF-8; sanitize before showing it.
    pub prompt: &'a [u8],
    /// Whether the answer may be shown as it is typed.
    pub echo: bool,
}

impl<'a> InfoPrompts<'a> {
    /// Encodes `prompts` (at most [`MAX_INFO_PROMPTS`] are kept) into `storage`, for test
    /// servers and round trips.
    pub fn build(prompts: &[InfoPrompt<'_>], storage: &'a mut Vec<u8>) -> Self {
        storage.clear();
        let mut count = 0u32;
        for p in prompts.iter().take(MAX_INFO_PROMPTS as usize) {
            storage.put_string(p.prompt);
            storage.put_bool(p.echo);
            count += 1;
        }
        Self {
            count,
            raw: storage,
        }
    }

    /// How many prompts there are.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether there are none (the server only shows its name and instruction).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The prompts in order.
    pub fn iter(&self) -> impl Iterator<Item = InfoPrompt<'a>> + 'a {
        let mut r = Reader::new(self.raw);
        core::iter::from_fn(move || {
            let prompt = r.string().ok()?;
            let echo = r.bool().ok()?;
            Some(InfoPrompt { prompt, echo })
        })
    }

    /// Reads `count` prompts from `r`, refusing more than [`MAX_INFO_PROMPTS`] before
    /// reading any.
    fn read(r: &mut Reader<'a>, count: u32) -> Result<Self, DecodeError> {
        if count > MAX_INFO_PROMPTS {
            return Err(DecodeError::InvalidValue("number of prompts"));
        }
        let before = r.clone();
        for _ in 0..count {
            r.string()?;
            r.bool()?;
        }
        let used = before.remaining() - r.remaining();
        let raw = before.clone().bytes(used)?;
        Ok(Self { count, raw })
    }
}

impl core::fmt::Debug for InfoPrompts<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// SSH_MSG_USERAUTH_INFO_REQUEST (60, in answer to a keyboard-interactive request; RFC 4256
/// section 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserauthInfoRequest<'a> {
    /// A title for the prompts, often empty; sanitize before showing it.
    pub name: &'a [u8],
    /// Instructions, often empty; sanitize before showing them.
    pub instruction: &'a [u8],
    /// Deprecated language tag.
    pub language: &'a [u8],
    /// The questions.
    pub prompts: InfoPrompts<'a>,
}

impl<'a> UserauthInfoRequest<'a> {
    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(NUMBER_60.0);
        out.put_string(self.name);
        out.put_string(self.instruction);
        out.put_string(self.language);
        out.put_u32(self.prompts.count);
        out.put_raw(self.prompts.raw);
    }

    /// Decodes a whole payload; more than [`MAX_INFO_PROMPTS`] prompts are refused.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = open(payload, NUMBER_60)?;
        let name = r.string()?;
        let instruction = r.string()?;
        let language = r.string()?;
        let count = r.u32()?;
        let prompts = InfoPrompts::read(&mut r, count)?;
        r.finish()?;
        Ok(Self {
            name,
            instruction,
            language,
            prompts,
        })
    }
}

/// SSH_MSG_USERAUTH_INFO_RESPONSE (61): the client's answers, one per prompt, in order
/// (RFC 4256 section 3.4). Its `Debug` output never shows the answers.
#[derive(Clone, PartialEq, Eq)]
pub struct UserauthInfoResponse<'a> {
    /// The answers.
    pub responses: Vec<&'a str>,
}

impl core::fmt::Debug for UserauthInfoResponse<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UserauthInfoResponse")
            .field("responses", &self.responses.len())
            .finish()
    }
}

impl<'a> UserauthInfoResponse<'a> {
    /// Appends the payload of `responses` without collecting them first.
    pub fn encode_from(responses: &[impl AsRef<str>], out: &mut Vec<u8>) {
        out.put_u8(USERAUTH_INFO_RESPONSE.0);
        out.put_u32(u32::try_from(responses.len()).unwrap_or(u32::MAX));
        for r in responses {
            out.put_str(r.as_ref());
        }
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        Self::encode_from(&self.responses, out);
    }

    /// Decodes a whole payload (for test servers); more than [`MAX_INFO_PROMPTS`] answers
    /// are refused.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = open(payload, USERAUTH_INFO_RESPONSE)?;
        let count = r.u32()?;
        if count > MAX_INFO_PROMPTS {
            return Err(DecodeError::InvalidValue("number of responses"));
        }
        let mut responses = Vec::with_capacity(count as usize);
        for _ in 0..count {
            responses.push(r.utf8()?);
        }
        r.finish()?;
        Ok(Self { responses })
    }
}

/// Which method the request in flight used: it decides what message number 60 means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MethodInFlight {
    /// publickey (or none): 60 is PK_OK.
    #[default]
    PublicKey,
    /// password: 60 is PASSWD_CHANGEREQ.
    Password,
    /// keyboard-interactive: 60 is INFO_REQUEST.
    KeyboardInteractive,
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
    /// USERAUTH_PK_OK (60, publickey).
    PkOk(UserauthPkOk<'a>),
    /// USERAUTH_PASSWD_CHANGEREQ (60, password).
    PasswdChangereq(UserauthPasswdChangereq<'a>),
    /// USERAUTH_INFO_REQUEST (60, keyboard-interactive).
    InfoRequest(UserauthInfoRequest<'a>),
}

impl ServerMessage<'_> {
    /// The message number.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::ServiceAccept(_) => MessageType::SERVICE_ACCEPT,
            Self::Failure(_) => MessageType::USERAUTH_FAILURE,
            Self::Success(_) => MessageType::USERAUTH_SUCCESS,
            Self::Banner(_) => MessageType::USERAUTH_BANNER,
            Self::PkOk(_) | Self::PasswdChangereq(_) | Self::InfoRequest(_) => NUMBER_60,
        }
    }

    /// The message's name and number, for error text.
    pub fn describe(&self) -> String {
        match self {
            Self::PasswdChangereq(_) => "SSH_MSG_USERAUTH_PASSWD_CHANGEREQ (60)".into(),
            Self::InfoRequest(_) => "SSH_MSG_USERAUTH_INFO_REQUEST (60)".into(),
            other => describe(other.message_type()),
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
            Self::PasswdChangereq(m) => m.encode(out),
            Self::InfoRequest(m) => m.encode(out),
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
/// wholly, before anything acts on it, taking message 60 as PK_OK. This is the entry point to
/// fuzz.
pub fn decode_server_message(payload: &[u8]) -> Result<ServerMessage<'_>, AuthError> {
    decode_server_message_for(payload, MethodInFlight::PublicKey)
}

/// Like [`decode_server_message`], with message 60 decoded as what it means for `method`.
pub fn decode_server_message_for(
    payload: &[u8],
    method: MethodInFlight,
) -> Result<ServerMessage<'_>, AuthError> {
    let kind = MessageType::of(payload).ok_or_else(|| {
        AuthError::Protocol("an empty message was passed to authentication".into())
    })?;
    let name = match (kind, method) {
        (NUMBER_60, MethodInFlight::Password) => "SSH_MSG_USERAUTH_PASSWD_CHANGEREQ (60)".into(),
        (NUMBER_60, MethodInFlight::KeyboardInteractive) => {
            "SSH_MSG_USERAUTH_INFO_REQUEST (60)".into()
        }
        _ => describe(kind),
    };
    let malformed = |e: DecodeError| AuthError::Protocol(format!("malformed {name}: {e}"));
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
        NUMBER_60 => match method {
            MethodInFlight::PublicKey => {
                ServerMessage::PkOk(UserauthPkOk::decode(payload).map_err(malformed)?)
            }
            MethodInFlight::Password => ServerMessage::PasswdChangereq(
                UserauthPasswdChangereq::decode(payload).map_err(malformed)?,
            ),
            MethodInFlight::KeyboardInteractive => {
                ServerMessage::InfoRequest(UserauthInfoRequest::decode(payload).map_err(malformed)?)
            }
        },
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
    fn info_request_with_a_huge_prompt_count_is_refused_before_reading() {
        let mut v = vec![60];
        for field in [&b"name"[..], b"", b""] {
            v.put_string(field);
        }
        v.put_u32(u32::MAX);
        let err = decode_server_message_for(&v, MethodInFlight::KeyboardInteractive).unwrap_err();
        assert!(
            err.to_string().contains(
                "malformed SSH_MSG_USERAUTH_INFO_REQUEST (60): invalid number of prompts"
            ),
            "{err}"
        );
        // Just over the limit is refused too, even with every prompt present.
        let mut v = vec![60];
        for field in [&b""[..], b"", b""] {
            v.put_string(field);
        }
        v.put_u32(MAX_INFO_PROMPTS + 1);
        for _ in 0..=MAX_INFO_PROMPTS {
            v.put_string(b"Password: ");
            v.put_bool(false);
        }
        assert!(UserauthInfoRequest::decode(&v).is_err());
        // A count larger than the prompts present is truncation, not a panic.
        let mut v = vec![60];
        for field in [&b""[..], b"", b""] {
            v.put_string(field);
        }
        v.put_u32(3);
        v.put_string(b"one");
        v.put_bool(false);
        assert_eq!(UserauthInfoRequest::decode(&v), Err(DecodeError::Truncated));
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let req = UserauthRequest {
            user: "u",
            service: SERVICE_CONNECTION,
            method: AuthMethod::Password {
                password: "hunter2",
                new_password: Some("hunter3"),
            },
        };
        let text = format!("{req:?}");
        assert!(!text.contains("hunter"), "{text}");
        assert!(text.contains("changing: true"), "{text}");
        let answers = UserauthInfoResponse {
            responses: vec!["123456"],
        };
        assert!(!format!("{answers:?}").contains("123456"));
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
            sig in proptest::option::of(bytes()), kind in 0u8..5, other in "[a-z]{1,8}",
            fields in bytes(), new_password in proptest::option::of(text()),
        ) {
            let method = match kind {
                0 => AuthMethod::None,
                1 => AuthMethod::PublicKey { algorithm: &alg, key_blob: &blob, signature: sig.as_deref() },
                2 => AuthMethod::Password { password: &alg, new_password: new_password.as_deref() },
                3 => AuthMethod::KeyboardInteractive { language: &user, submethods: &service },
                _ => {
                    let name = if ["none", "publickey", "password"].contains(&other.as_str()) {
                        "hostbased"
                    } else {
                        other.as_str()
                    };
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
        fn number_60_round_trips_as_each_meaning(
            prompt in bytes(), lang in bytes(), name in bytes(), instruction in bytes(),
            prompts in proptest::collection::vec((bytes(), any::<bool>()), 0..6),
        ) {
            let m = ServerMessage::PasswdChangereq(UserauthPasswdChangereq { prompt: &prompt, language: &lang });
            let mut v = Vec::new();
            m.encode(&mut v);
            prop_assert_eq!(decode_server_message_for(&v, MethodInFlight::Password).ok(), Some(m));

            let list: Vec<InfoPrompt<'_>> =
                prompts.iter().map(|(p, e)| InfoPrompt { prompt: p, echo: *e }).collect();
            let mut storage = Vec::new();
            let req = UserauthInfoRequest {
                name: &name,
                instruction: &instruction,
                language: &lang,
                prompts: InfoPrompts::build(&list, &mut storage),
            };
            let mut v = Vec::new();
            req.encode(&mut v);
            let decoded = decode_server_message_for(&v, MethodInFlight::KeyboardInteractive);
            prop_assert_eq!(decoded.clone().ok(), Some(ServerMessage::InfoRequest(req)));
            let Ok(ServerMessage::InfoRequest(back)) = decoded else { unreachable!() };
            prop_assert_eq!(back.prompts.iter().collect::<Vec<_>>(), list);
            prop_assert_eq!(back.prompts.len() as usize, prompts.len());
            v.push(1);
            prop_assert!(decode_server_message_for(&v, MethodInFlight::KeyboardInteractive).is_err());
        }

        #[test]
        fn info_response_round_trips(answers in proptest::collection::vec(text(), 0..8)) {
            let responses: Vec<&str> = answers.iter().map(String::as_str).collect();
            let msg = UserauthInfoResponse { responses };
            let mut v = Vec::new();
            msg.encode(&mut v);
            prop_assert_eq!(v.first(), Some(&61));
            prop_assert_eq!(UserauthInfoResponse::decode(&v)?, msg);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_server_message(&data);
            let _ = decode_server_message_for(&data, MethodInFlight::Password);
            let _ = decode_server_message_for(&data, MethodInFlight::KeyboardInteractive);
            let _ = UserauthRequest::decode(&data);
            let _ = ServiceRequest::decode(&data);
            let _ = UserauthInfoResponse::decode(&data);
        }
    }
}
