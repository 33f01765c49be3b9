//! Wire numbers as open newtypes: every value survives decoding and prints, known ones by name.

/// Declares an open newtype over an integer with named constants. Unknown values are kept and
/// print as their number, so a peer's new code never turns into a decoding failure.
#[macro_export]
macro_rules! wire_number {
    ($(#[$meta:meta])* $vis:vis struct $name:ident($int:ty) { $($(#[$cmeta:meta])* $konst:ident = $value:expr => $text:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis struct $name(pub $int);

        impl $name {
            $(
                $(#[$cmeta])*
                #[doc = concat!("The value registered as `", $text, "`: ", stringify!($value), ".")]
                pub const $konst: Self = Self($value);
            )*

            /// The registered name of this value, if it has one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}({})", n, self.0),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}", self.0),
                }
            }
        }
    };
}

wire_number! {
    /// An SSH message number (RFC 4250 section 4.1).
    pub struct MessageType(u8) {
        DISCONNECT = 1 => "SSH_MSG_DISCONNECT",
        IGNORE = 2 => "SSH_MSG_IGNORE",
        UNIMPLEMENTED = 3 => "SSH_MSG_UNIMPLEMENTED",
        DEBUG = 4 => "SSH_MSG_DEBUG",
        SERVICE_REQUEST = 5 => "SSH_MSG_SERVICE_REQUEST",
        SERVICE_ACCEPT = 6 => "SSH_MSG_SERVICE_ACCEPT",
        EXT_INFO = 7 => "SSH_MSG_EXT_INFO",
        KEXINIT = 20 => "SSH_MSG_KEXINIT",
        NEWKEYS = 21 => "SSH_MSG_NEWKEYS",
        KEX_ECDH_INIT = 30 => "SSH_MSG_KEX_ECDH_INIT",
        KEX_ECDH_REPLY = 31 => "SSH_MSG_KEX_ECDH_REPLY",
        KEX_DH_GEX_INIT = 32 => "SSH_MSG_KEX_DH_GEX_INIT",
        KEX_DH_GEX_REPLY = 33 => "SSH_MSG_KEX_DH_GEX_REPLY",
        KEX_DH_GEX_REQUEST = 34 => "SSH_MSG_KEX_DH_GEX_REQUEST",
        USERAUTH_REQUEST = 50 => "SSH_MSG_USERAUTH_REQUEST",
        USERAUTH_FAILURE = 51 => "SSH_MSG_USERAUTH_FAILURE",
        USERAUTH_SUCCESS = 52 => "SSH_MSG_USERAUTH_SUCCESS",
        USERAUTH_BANNER = 53 => "SSH_MSG_USERAUTH_BANNER",
        USERAUTH_PK_OK = 60 => "SSH_MSG_USERAUTH_PK_OK",
        GLOBAL_REQUEST = 80 => "SSH_MSG_GLOBAL_REQUEST",
        REQUEST_SUCCESS = 81 => "SSH_MSG_REQUEST_SUCCESS",
        REQUEST_FAILURE = 82 => "SSH_MSG_REQUEST_FAILURE",
        CHANNEL_OPEN = 90 => "SSH_MSG_CHANNEL_OPEN",
        CHANNEL_OPEN_CONFIRMATION = 91 => "SSH_MSG_CHANNEL_OPEN_CONFIRMATION",
        CHANNEL_OPEN_FAILURE = 92 => "SSH_MSG_CHANNEL_OPEN_FAILURE",
        CHANNEL_WINDOW_ADJUST = 93 => "SSH_MSG_CHANNEL_WINDOW_ADJUST",
        CHANNEL_DATA = 94 => "SSH_MSG_CHANNEL_DATA",
        CHANNEL_EXTENDED_DATA = 95 => "SSH_MSG_CHANNEL_EXTENDED_DATA",
        CHANNEL_EOF = 96 => "SSH_MSG_CHANNEL_EOF",
        CHANNEL_CLOSE = 97 => "SSH_MSG_CHANNEL_CLOSE",
        CHANNEL_REQUEST = 98 => "SSH_MSG_CHANNEL_REQUEST",
        CHANNEL_SUCCESS = 99 => "SSH_MSG_CHANNEL_SUCCESS",
        CHANNEL_FAILURE = 100 => "SSH_MSG_CHANNEL_FAILURE",
    }
}

/// Key exchange methods reuse 30 and 31 under other names; the table above can print only
/// one name per number, so these are plain aliases.
impl MessageType {
    /// SSH_MSG_KEXDH_INIT (RFC 4253 section 8): the same number as KEX_ECDH_INIT.
    pub const KEXDH_INIT: Self = Self(30);
    /// SSH_MSG_KEXDH_REPLY: the same number as KEX_ECDH_REPLY.
    pub const KEXDH_REPLY: Self = Self(31);
    /// SSH_MSG_KEX_DH_GEX_GROUP (RFC 4419): the same number as KEX_ECDH_REPLY.
    pub const KEX_DH_GEX_GROUP: Self = Self(31);
}

impl MessageType {
    /// Messages of the transport layer proper (RFC 4253 and 4250): 1 to 49.
    pub fn is_transport(self) -> bool {
        (1..=49).contains(&self.0)
    }

    /// Key exchange messages (20 to 49), which only the transport may send while keys change.
    pub fn is_kex(self) -> bool {
        (20..=49).contains(&self.0)
    }

    /// User authentication messages: 50 to 79.
    pub fn is_userauth(self) -> bool {
        (50..=79).contains(&self.0)
    }

    /// Connection protocol messages: 80 to 127.
    pub fn is_connection(self) -> bool {
        (80..=127).contains(&self.0)
    }

    /// The message number of a payload, if it has one.
    pub fn of(payload: &[u8]) -> Option<Self> {
        payload.first().map(|&b| Self(b))
    }
}

wire_number! {
    /// A reason code of SSH_MSG_DISCONNECT (RFC 4250 section 4.2.2).
    pub struct DisconnectReason(u32) {
        HOST_NOT_ALLOWED_TO_CONNECT = 1 => "host not allowed to connect",
        PROTOCOL_ERROR = 2 => "protocol error",
        KEY_EXCHANGE_FAILED = 3 => "key exchange failed",
        RESERVED = 4 => "reserved",
        MAC_ERROR = 5 => "MAC error",
        COMPRESSION_ERROR = 6 => "compression error",
        SERVICE_NOT_AVAILABLE = 7 => "service not available",
        PROTOCOL_VERSION_NOT_SUPPORTED = 8 => "protocol version not supported",
        HOST_KEY_NOT_VERIFIABLE = 9 => "host key not verifiable",
        CONNECTION_LOST = 10 => "connection lost",
        BY_APPLICATION = 11 => "disconnected by application",
        TOO_MANY_CONNECTIONS = 12 => "too many connections",
        AUTH_CANCELLED_BY_USER = 13 => "auth cancelled by user",
        NO_MORE_AUTH_METHODS_AVAILABLE = 14 => "no more auth methods available",
        ILLEGAL_USER_NAME = 15 => "illegal user name",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_numbers_survive_and_print() {
        assert_eq!(MessageType(200).to_string(), "200");
        assert_eq!(format!("{:?}", MessageType(200)), "MessageType(200)");
        assert_eq!(MessageType::KEXINIT.to_string(), "SSH_MSG_KEXINIT");
        assert_eq!(DisconnectReason(99).name(), None);
        assert_eq!(DisconnectReason::MAC_ERROR.to_string(), "MAC error");
    }

    #[test]
    fn ranges() {
        assert!(MessageType::NEWKEYS.is_kex());
        assert!(!MessageType::EXT_INFO.is_kex());
        assert!(MessageType::USERAUTH_PK_OK.is_userauth());
        assert!(MessageType::CHANNEL_FAILURE.is_connection());
        assert!(!MessageType(128).is_connection());
    }
}
