//! Key exchange pieces shared by both roles: the transport messages, algorithm negotiation
//! (RFC 4253 section 7.1), the ECDH exchange hash (RFC 5656 section 4, RFC 8731) and key
//! derivation (RFC 4253 section 7.2).

use core::fmt;

use ring::digest;
use zeroize::Zeroizing;

mod curve25519;
pub mod dh;
pub mod ecdh_nist;
pub mod gex;
pub(crate) mod groups;
pub mod hybrid;
mod mlkem;
mod prepared;
mod single;
mod sntrup;

pub use curve25519::{AgreementError, Curve25519, X25519Agreement};
pub use hybrid::Hybrid;
pub use mlkem::MlKem768Kem;
pub use prepared::PreparedKex;
pub use single::SinglePass;
pub use sntrup::Sntrup761Kem;

use crate::cipher::{self, CipherAlgorithm};
use crate::compress::Compression;
use crate::hostkey::HostKeyAlgorithm;
use crate::mac::{self, MacAlgorithm};
use crate::msg::{DisconnectReason, MessageType};
use crate::random::SecureRandom;
use crate::wire::{DecodeError, Reader, Writer};

/// Our pseudo-algorithm asking the server for SSH_MSG_EXT_INFO (RFC 8308).
pub const EXT_INFO_C: &str = "ext-info-c";
/// The server's pseudo-algorithm announcing it sends SSH_MSG_EXT_INFO.
pub const EXT_INFO_S: &str = "ext-info-s";
/// OpenSSH's strict key exchange (the Terrapin countermeasure), client side.
pub const STRICT_KEX_C: &str = "kex-strict-c-v00@openssh.com";
/// OpenSSH's strict key exchange, server side.
pub const STRICT_KEX_S: &str = "kex-strict-s-v00@openssh.com";

/// A key exchange method we implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KexAlgorithm {
    /// `mlkem768x25519-sha256`: ML-KEM-768 with X25519 (draft-ietf-sshm-mlkem-hybrid-kex)
    MlKem768X25519Sha256,
    /// `sntrup761x25519-sha512`: Streamlined NTRU Prime 761 with X25519
    Sntrup761X25519Sha512,
    /// `sntrup761x25519-sha512@openssh.com`, the same method under OpenSSH's original name
    Sntrup761X25519Sha512OpenSsh,
    /// `curve25519-sha256` (RFC 8731)
    Curve25519Sha256,
    /// `curve25519-sha256@libssh.org`, the same method under its original name
    Curve25519Sha256Libssh,
    /// `ecdh-sha2-nistp256` (RFC 5656)
    EcdhNistP256,
    /// `ecdh-sha2-nistp384` (RFC 5656)
    EcdhNistP384,
    /// `ecdh-sha2-nistp521` (RFC 5656)
    EcdhNistP521,
    /// `diffie-hellman-group-exchange-sha256` (RFC 4419)
    DhGexSha256,
    /// `diffie-hellman-group16-sha512` (RFC 8268: 4096-bit MODP group)
    DhGroup16Sha512,
    /// `diffie-hellman-group18-sha512` (RFC 8268: 8192-bit MODP group)
    DhGroup18Sha512,
    /// `diffie-hellman-group14-sha256` (RFC 8268: 2048-bit MODP group)
    DhGroup14Sha256,
}

impl KexAlgorithm {
    /// Every method, in our default preference order: post-quantum hybrids first, then
    /// X25519, then the NIST curves (for FIPS-mode bastions), then finite-field
    /// Diffie-Hellman, strongest group first. There is no SHA-1 method.
    pub const ALL: &'static [Self] = &[
        Self::MlKem768X25519Sha256,
        Self::Sntrup761X25519Sha512,
        Self::Sntrup761X25519Sha512OpenSsh,
        Self::Curve25519Sha256,
        Self::Curve25519Sha256Libssh,
        Self::EcdhNistP256,
        Self::EcdhNistP384,
        Self::EcdhNistP521,
        Self::DhGexSha256,
        Self::DhGroup16Sha512,
        Self::DhGroup18Sha512,
        Self::DhGroup14Sha256,
    ];

    /// The SSH name.
    pub fn name(self) -> &'static str {
        match self {
            Self::MlKem768X25519Sha256 => "mlkem768x25519-sha256",
            Self::Sntrup761X25519Sha512 => "sntrup761x25519-sha512",
            Self::Sntrup761X25519Sha512OpenSsh => "sntrup761x25519-sha512@openssh.com",
            Self::Curve25519Sha256 => "curve25519-sha256",
            Self::Curve25519Sha256Libssh => "curve25519-sha256@libssh.org",
            Self::EcdhNistP256 => "ecdh-sha2-nistp256",
            Self::EcdhNistP384 => "ecdh-sha2-nistp384",
            Self::EcdhNistP521 => "ecdh-sha2-nistp521",
            Self::DhGexSha256 => "diffie-hellman-group-exchange-sha256",
            Self::DhGroup16Sha512 => "diffie-hellman-group16-sha512",
            Self::DhGroup18Sha512 => "diffie-hellman-group18-sha512",
            Self::DhGroup14Sha256 => "diffie-hellman-group14-sha256",
        }
    }

    /// Looks a name up.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// The exchange hash function.
    pub fn hash(self) -> &'static digest::Algorithm {
        match self {
            Self::MlKem768X25519Sha256
            | Self::Curve25519Sha256
            | Self::Curve25519Sha256Libssh
            | Self::EcdhNistP256
            | Self::DhGexSha256
            | Self::DhGroup14Sha256 => &digest::SHA256,
            Self::EcdhNistP384 => &digest::SHA384,
            Self::Sntrup761X25519Sha512
            | Self::Sntrup761X25519Sha512OpenSsh
            | Self::EcdhNistP521
            | Self::DhGroup16Sha512
            | Self::DhGroup18Sha512 => &digest::SHA512,
        }
    }

    /// The client side of one exchange with this method. Group exchange asks for a group
    /// sized for the strongest keys we could derive; [`client_for`](Self::client_for) sizes
    /// it for the ciphers actually negotiated.
    pub fn client(self) -> Box<dyn ClientKex> {
        self.client_with_strength(256)
    }

    /// The client side, sized for the negotiated algorithms (only group exchange uses them:
    /// its preferred group size follows the strength the derived keys need, as OpenSSH's
    /// does: the largest of the cipher's security, block and IV sizes and the MAC key).
    pub fn client_for(self, negotiated: &Negotiated) -> Box<dyn ClientKex> {
        let cipher_need = |c: &CipherAlgorithm| {
            // ChaCha20-Poly1305 takes 64 key bytes but has 256-bit security.
            let key = if c.name.starts_with("chacha20-poly1305") {
                32
            } else {
                c.key_len
            };
            key.max(c.iv_len).max(16)
        };
        let mac_need = |m: Option<&MacAlgorithm>| m.map_or(0, |m| m.key_len);
        let bytes = cipher_need(&negotiated.cipher_c2s)
            .max(cipher_need(&negotiated.cipher_s2c))
            .max(mac_need(negotiated.mac_c2s.as_ref()))
            .max(mac_need(negotiated.mac_s2c.as_ref()));
        self.client_with_strength(u32::try_from(bytes * 8).unwrap_or(256))
    }

    fn client_with_strength(self, strength_bits: u32) -> Box<dyn ClientKex> {
        match self.agreement() {
            Some(a) => Box::new(SinglePass::new(self.hash(), a)),
            None => Box::new(gex::GexClient::new(
                self.hash(),
                gex::preferred_bits(strength_bits),
            )),
        }
    }

    /// The server side, for the in-memory test server.
    pub fn server(self) -> Box<dyn ServerKex> {
        match self.agreement() {
            Some(a) => Box::new(SinglePass::new(self.hash(), a)),
            None => Box::new(gex::GexServer::new(self.hash())),
        }
    }

    /// Whether the client's first message is the whole of its part (everything but group
    /// exchange, which first asks for a group): only such a message can be sent as a guess.
    pub fn is_single_pass(self) -> bool {
        !matches!(self, Self::DhGexSha256)
    }

    /// The method as a one-round-trip [`Agreement`]; `None` for group exchange, which takes
    /// two round trips.
    fn agreement(self) -> Option<Box<dyn Agreement>> {
        let hash = self.hash();
        let bits = dh::exponent_bits(hash);
        Some(match self {
            Self::MlKem768X25519Sha256 => Box::new(Hybrid::<MlKem768Kem>::new(hash)),
            Self::Sntrup761X25519Sha512 | Self::Sntrup761X25519Sha512OpenSsh => {
                Box::new(Hybrid::<Sntrup761Kem>::new(hash))
            }
            Self::Curve25519Sha256 | Self::Curve25519Sha256Libssh => {
                Box::new(X25519Agreement::default())
            }
            Self::EcdhNistP256 => Box::new(ecdh_nist::NistEcdh::<ecdh_nist::P256>::default()),
            Self::EcdhNistP384 => Box::new(ecdh_nist::NistEcdh::<ecdh_nist::P384>::default()),
            Self::EcdhNistP521 => Box::new(ecdh_nist::NistEcdh::<ecdh_nist::P521>::default()),
            Self::DhGroup14Sha256 => Box::new(dh::FixedGroupDh::group14(bits)),
            Self::DhGroup16Sha512 => Box::new(dh::FixedGroupDh::group16(bits)),
            Self::DhGroup18Sha512 => Box::new(dh::FixedGroupDh::group18(bits)),
            Self::DhGexSha256 => return None,
        })
    }
}

impl<A: Agreement + ?Sized> Agreement for Box<A> {
    fn values_are_mpints(&self) -> bool {
        (**self).values_are_mpints()
    }
    fn client_public(&mut self, rng: &mut dyn SecureRandom) -> Result<Vec<u8>, KexError> {
        (**self).client_public(rng)
    }
    fn client_finish(&mut self, server_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, KexError> {
        (**self).client_finish(server_public)
    }
    fn server_respond(
        &mut self,
        client_public: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), KexError> {
        (**self).server_respond(client_public, rng)
    }
}

/// Why a key exchange method failed. The transport turns it into its `KeyExchange` or
/// `Decode` error.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KexError {
    /// A message did not decode.
    Decode(MessageType, DecodeError),
    /// A kex message other than the one this method expects next.
    Unexpected(MessageType),
    /// A value was unusable: a point not on the curve, a DH value out of range, a zero secret.
    Invalid(String),
    /// The method was driven out of order (a bug in the caller).
    OutOfOrder,
}

impl fmt::Display for KexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(m, e) => write!(f, "malformed {m}: {e}"),
            Self::Unexpected(m) => write!(f, "unexpected {m}"),
            Self::Invalid(why) => f.write_str(why),
            Self::OutOfOrder => f.write_str("key exchange driven out of order"),
        }
    }
}

/// The inputs every exchange hash starts with.
#[derive(Clone, Copy, Debug)]
pub struct HashPrefix<'a> {
    /// Client version line without CR LF.
    pub v_c: &'a [u8],
    /// Server version line without CR LF.
    pub v_s: &'a [u8],
    /// Client KEXINIT payload.
    pub i_c: &'a [u8],
    /// Server KEXINIT payload.
    pub i_s: &'a [u8],
}

impl HashPrefix<'_> {
    /// A hash context that has absorbed V_C, V_S, I_C and I_S, each as a string.
    pub fn start(&self, alg: &'static digest::Algorithm) -> digest::Context {
        let mut ctx = digest::Context::new(alg);
        for v in [self.v_c, self.v_s, self.i_c, self.i_s] {
            hash_string(&mut ctx, v);
        }
        ctx
    }
}

/// Adds `v` to a hash as an SSH string.
pub fn hash_string(ctx: &mut digest::Context, v: &[u8]) {
    ctx.update(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
    ctx.update(v);
}

/// Adds a non-negative integer to a hash as an SSH mpint.
pub fn hash_mpint(ctx: &mut digest::Context, magnitude: &[u8]) {
    let mut v = Vec::with_capacity(magnitude.len() + 5);
    v.put_mpint(magnitude);
    ctx.update(&v);
}

/// What a finished exchange gives the client.
pub struct KexOutcome {
    /// The server's host key blob (K_S).
    pub host_key: Vec<u8>,
    /// The server's signature over `h`.
    pub signature: Vec<u8>,
    /// The exchange hash H.
    pub h: Vec<u8>,
    /// The shared secret K as it enters the hash and the key derivation (an mpint, or a
    /// string for the post-quantum hybrids), length included.
    pub k: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for KexOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KexOutcome(..)")
    }
}

/// The client's next move.
#[derive(Debug)]
pub enum ClientStep {
    /// Send this kex message and wait for the next server message.
    Send(Vec<u8>),
    /// The exchange is complete.
    Done(KexOutcome),
}

/// The client side of one key exchange method: the messages after both KEXINITs and before
/// NEWKEYS.
pub trait ClientKex: Send {
    /// The client's first message (KEX_ECDH_INIT, KEXDH_INIT or KEX_DH_GEX_REQUEST).
    fn start(&mut self, rng: &mut dyn SecureRandom) -> Result<Vec<u8>, KexError>;
    /// One server message (a number in 30..=49).
    fn handle(
        &mut self,
        payload: &[u8],
        prefix: &HashPrefix<'_>,
        rng: &mut dyn SecureRandom,
    ) -> Result<ClientStep, KexError>;
}

/// The server's next move.
pub enum ServerStep {
    /// Send this message and wait for the client's next.
    Send(Vec<u8>),
    /// Send this reply; the exchange is complete with this H and K.
    Done {
        /// The reply message.
        reply: Vec<u8>,
        /// The exchange hash.
        h: Vec<u8>,
        /// The encoded shared secret.
        k: Zeroizing<Vec<u8>>,
    },
}

impl fmt::Debug for ServerStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(_) => f.write_str("ServerStep::Send(..)"),
            Self::Done { .. } => f.write_str("ServerStep::Done(..)"),
        }
    }
}

/// The server side of a method, for in-memory tests. `sign` signs H with the host key and
/// returns the SSH signature blob.
pub trait ServerKex: Send {
    /// One client message.
    fn handle(
        &mut self,
        payload: &[u8],
        prefix: &HashPrefix<'_>,
        host_key: &[u8],
        sign: &mut dyn FnMut(&[u8]) -> Vec<u8>,
        rng: &mut dyn SecureRandom,
    ) -> Result<ServerStep, KexError>;
}

/// A key agreement with ECDH's message shape (RFC 5656 section 4; RFC 4253 section 8 for
/// finite-field DH): the client sends one public value, the server answers with its host key,
/// its own value and a signature, and H = HASH(V_C || V_S || I_C || I_S || K_S || Q_C || Q_S ||
/// K). [`SinglePass`] turns one into a [`ClientKex`] and a [`ServerKex`].
pub trait Agreement: Send {
    /// Whether the public values travel as mpints (finite-field DH) rather than strings.
    fn values_are_mpints(&self) -> bool {
        false
    }
    /// The client's public value (for mpints: the big-endian magnitude).
    fn client_public(&mut self, rng: &mut dyn SecureRandom) -> Result<Vec<u8>, KexError>;
    /// The shared secret from the server's value, encoded as it enters the hash (mpint or
    /// string, length included).
    fn client_finish(&mut self, server_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, KexError>;
    /// Server side: its public value and the encoded shared secret.
    fn server_respond(
        &mut self,
        client_public: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), KexError>;
}

impl fmt::Display for KexAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// SSH_MSG_KEXINIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KexInit {
    /// Random bytes that make each exchange hash unique.
    pub cookie: [u8; 16],
    /// Key exchange methods (with pseudo-algorithms such as `ext-info-c`).
    pub kex: Vec<String>,
    /// Host key algorithms.
    pub host_key: Vec<String>,
    /// Ciphers client to server.
    pub cipher_c2s: Vec<String>,
    /// Ciphers server to client.
    pub cipher_s2c: Vec<String>,
    /// MACs client to server.
    pub mac_c2s: Vec<String>,
    /// MACs server to client.
    pub mac_s2c: Vec<String>,
    /// Compression client to server.
    pub comp_c2s: Vec<String>,
    /// Compression server to client.
    pub comp_s2c: Vec<String>,
    /// Languages client to server.
    pub lang_c2s: Vec<String>,
    /// Languages server to client.
    pub lang_s2c: Vec<String>,
    /// Whether a guessed key exchange packet follows.
    pub first_kex_packet_follows: bool,
}

/// Bounds on a received KEXINIT so that a hostile one cannot make us hold much.
const MAX_NAMES: usize = 128;

fn names(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let list = r.name_list()?;
    let v: Vec<String> = list.iter().take(MAX_NAMES + 1).map(str::to_owned).collect();
    if v.len() > MAX_NAMES {
        return Err(DecodeError::InvalidValue("name-list with too many names"));
    }
    Ok(v)
}

impl KexInit {
    /// Decodes a KEXINIT payload (message number included).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::KEXINIT)?;
        let msg = Self {
            cookie: r.array()?,
            kex: names(&mut r)?,
            host_key: names(&mut r)?,
            cipher_c2s: names(&mut r)?,
            cipher_s2c: names(&mut r)?,
            mac_c2s: names(&mut r)?,
            mac_s2c: names(&mut r)?,
            comp_c2s: names(&mut r)?,
            comp_s2c: names(&mut r)?,
            lang_c2s: names(&mut r)?,
            lang_s2c: names(&mut r)?,
            first_kex_packet_follows: r.bool()?,
        };
        let _reserved = r.u32()?;
        r.finish()?;
        Ok(msg)
    }

    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::KEXINIT.0);
        out.put_raw(&self.cookie);
        for list in [
            &self.kex,
            &self.host_key,
            &self.cipher_c2s,
            &self.cipher_s2c,
            &self.mac_c2s,
            &self.mac_s2c,
            &self.comp_c2s,
            &self.comp_s2c,
            &self.lang_c2s,
            &self.lang_s2c,
        ] {
            out.put_name_list(list);
        }
        out.put_bool(self.first_kex_packet_follows);
        out.put_u32(0);
    }

    /// A KEXINIT with a fresh cookie and the same lists for both directions.
    pub fn new(
        rng: &mut dyn SecureRandom,
        kex: Vec<String>,
        host_key: Vec<String>,
        ciphers: Vec<String>,
        macs: Vec<String>,
        compression: Vec<String>,
    ) -> Self {
        let mut cookie = [0u8; 16];
        rng.fill(&mut cookie);
        Self {
            cookie,
            kex,
            host_key,
            cipher_c2s: ciphers.clone(),
            cipher_s2c: ciphers,
            mac_c2s: macs.clone(),
            mac_s2c: macs,
            comp_c2s: compression.clone(),
            comp_s2c: compression,
            lang_c2s: Vec::new(),
            lang_s2c: Vec::new(),
            first_kex_packet_follows: false,
        }
    }
}

/// Which list failed to agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoCommonAlgorithm {
    /// What was being negotiated ("key exchange", "host key", "cipher client to server", ...).
    pub what: &'static str,
    /// Our list.
    pub ours: String,
    /// The peer's list.
    pub theirs: String,
}

/// What both sides agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Key exchange method.
    pub kex: KexAlgorithm,
    /// Host key algorithm (a plain key or a certificate, and the signature over H).
    pub host_key: HostKeyAlgorithm,
    /// Cipher client to server.
    pub cipher_c2s: CipherAlgorithm,
    /// Cipher server to client.
    pub cipher_s2c: CipherAlgorithm,
    /// MAC client to server; `None` with an AEAD cipher, which authenticates by itself.
    pub mac_c2s: Option<MacAlgorithm>,
    /// MAC server to client; `None` with an AEAD cipher.
    pub mac_s2c: Option<MacAlgorithm>,
    /// Compression client to server.
    pub compression_c2s: Compression,
    /// Compression server to client.
    pub compression_s2c: Compression,
    /// Whether both sides run OpenSSH's strict key exchange.
    pub strict: bool,
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kex {}, host key {}, cipher {}",
            self.kex, self.host_key, self.cipher_c2s.name
        )?;
        if self.cipher_s2c != self.cipher_c2s {
            write!(f, "/{}", self.cipher_s2c.name)?;
        }
        if self.mac_c2s.is_some() || self.mac_s2c.is_some() {
            let name = |m: Option<MacAlgorithm>| m.map_or("(cipher's own)", |m| m.name);
            write!(f, ", MAC {}", name(self.mac_c2s))?;
            if self.mac_s2c != self.mac_c2s {
                write!(f, "/{}", name(self.mac_s2c))?;
            }
        }
        if self.compression_c2s != Compression::None || self.compression_s2c != Compression::None {
            write!(f, ", compression {}", self.compression_c2s)?;
            if self.compression_s2c != self.compression_c2s {
                write!(f, "/{}", self.compression_s2c)?;
            }
        }
        if self.strict {
            f.write_str(", strict kex")?;
        }
        Ok(())
    }
}

fn is_pseudo(name: &str) -> bool {
    name == EXT_INFO_C || name == EXT_INFO_S || name == STRICT_KEX_C || name == STRICT_KEX_S
}

/// The MAC for a direction: none for an AEAD cipher (the lists are not consulted, as in
/// OpenSSH), otherwise the client's first choice the server also offers, never `none`.
fn choose_mac(
    what: &'static str,
    cipher: &CipherAlgorithm,
    client: &[String],
    server: &[String],
) -> Result<Option<MacAlgorithm>, NoCommonAlgorithm> {
    if cipher.aead {
        return Ok(None);
    }
    // `none` is dropped from both lists: a cipher that needs a MAC never runs without one,
    // whatever either side offers.
    let real =
        |l: &[String]| -> Vec<String> { l.iter().filter(|m| *m != "none").cloned().collect() };
    let ours = real(client);
    let name = choose(what, &ours, &real(server)).map_err(|mut e| {
        // Show what the server really offered, `none` included.
        e.theirs = server.join(",");
        e
    })?;
    mac::by_name(name)
        .map(Some)
        .ok_or_else(|| NoCommonAlgorithm {
            what,
            ours: name.to_owned(),
            theirs: "(not implemented here)".into(),
        })
}

fn choose<'a>(
    what: &'static str,
    client: &'a [String],
    server: &[String],
) -> Result<&'a str, NoCommonAlgorithm> {
    client
        .iter()
        .filter(|c| !is_pseudo(c))
        .find(|c| server.contains(c))
        .map(String::as_str)
        .ok_or_else(|| NoCommonAlgorithm {
            what,
            ours: client
                .iter()
                .filter(|c| !is_pseudo(c))
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
            theirs: server.join(","),
        })
}

/// The client's list decides (RFC 4253 7.1). Names we chose are ones we implement, since
/// the client list is ours; the lookups only fail if the lists were built wrong.
pub fn negotiate(
    client: &KexInit,
    server: &KexInit,
    initial: bool,
) -> Result<Negotiated, NoCommonAlgorithm> {
    let unknown = |what: &'static str, name: &str| NoCommonAlgorithm {
        what,
        ours: name.to_owned(),
        theirs: "(not implemented here)".into(),
    };
    let kex_name = choose("key exchange", &client.kex, &server.kex)?;
    let kex = KexAlgorithm::from_name(kex_name).ok_or_else(|| unknown("key exchange", kex_name))?;
    let hk_name = choose("host key", &client.host_key, &server.host_key)?;
    let host_key =
        HostKeyAlgorithm::from_name(hk_name).ok_or_else(|| unknown("host key", hk_name))?;
    let c2s = choose(
        "cipher client to server",
        &client.cipher_c2s,
        &server.cipher_c2s,
    )?;
    let s2c = choose(
        "cipher server to client",
        &client.cipher_s2c,
        &server.cipher_s2c,
    )?;
    let cipher_c2s = cipher::by_name(c2s).ok_or_else(|| unknown("cipher", c2s))?;
    let cipher_s2c = cipher::by_name(s2c).ok_or_else(|| unknown("cipher", s2c))?;
    let mac_c2s = choose_mac(
        "MAC client to server",
        &cipher_c2s,
        &client.mac_c2s,
        &server.mac_c2s,
    )?;
    let mac_s2c = choose_mac(
        "MAC server to client",
        &cipher_s2c,
        &client.mac_s2c,
        &server.mac_s2c,
    )?;
    let comp = |what: &'static str, c: &[String], s: &[String]| {
        let name = choose(what, c, s)?;
        Compression::from_name(name).ok_or_else(|| unknown(what, name))
    };
    let compression_c2s = comp(
        "compression client to server",
        &client.comp_c2s,
        &server.comp_c2s,
    )?;
    let compression_s2c = comp(
        "compression server to client",
        &client.comp_s2c,
        &server.comp_s2c,
    )?;
    let strict = initial
        && client.kex.iter().any(|k| k == STRICT_KEX_C)
        && server.kex.iter().any(|k| k == STRICT_KEX_S);
    Ok(Negotiated {
        kex,
        host_key,
        cipher_c2s,
        cipher_s2c,
        mac_c2s,
        mac_s2c,
        compression_c2s,
        compression_s2c,
        strict,
    })
}

/// Whether the peer's guessed first kex packet must be ignored: it guessed wrong when its
/// first kex or host key algorithm is not what was negotiated (OpenSSH compares both lists'
/// first entries, which is the same test for a well-formed guess).
pub fn guess_was_wrong(client: &KexInit, server: &KexInit) -> bool {
    client.kex.first() != server.kex.first() || client.host_key.first() != server.host_key.first()
}

/// SSH_MSG_KEX_ECDH_INIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcdhInit {
    /// The client's ephemeral public key.
    pub q_c: Vec<u8>,
}

impl EcdhInit {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::KEX_ECDH_INIT)?;
        let q_c = r.string()?.to_vec();
        r.finish()?;
        Ok(Self { q_c })
    }
    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::KEX_ECDH_INIT.0);
        out.put_string(&self.q_c);
    }
}

/// SSH_MSG_KEX_ECDH_REPLY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcdhReply {
    /// The server's host key blob.
    pub host_key: Vec<u8>,
    /// The server's ephemeral public key.
    pub q_s: Vec<u8>,
    /// The signature over the exchange hash.
    pub signature: Vec<u8>,
}

impl EcdhReply {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::KEX_ECDH_REPLY)?;
        let host_key = r.string()?.to_vec();
        let q_s = r.string()?.to_vec();
        let signature = r.string()?.to_vec();
        r.finish()?;
        Ok(Self {
            host_key,
            q_s,
            signature,
        })
    }
    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::KEX_ECDH_REPLY.0);
        out.put_string(&self.host_key);
        out.put_string(&self.q_s);
        out.put_string(&self.signature);
    }
}

/// SSH_MSG_DISCONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code.
    pub reason: DisconnectReason,
    /// Description, as sent (sanitize before showing).
    pub description: Vec<u8>,
}

impl Disconnect {
    /// Decodes the payload; the language tag is read and ignored.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::DISCONNECT)?;
        let reason = DisconnectReason(r.u32()?);
        let description = r.string()?.to_vec();
        // Some implementations omit the language tag; accept that.
        if !r.is_empty() {
            r.string()?;
        }
        r.finish()?;
        Ok(Self {
            reason,
            description,
        })
    }
    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::DISCONNECT.0);
        out.put_u32(self.reason.0);
        out.put_string(&self.description);
        out.put_str("");
    }
}

/// SSH_MSG_DEBUG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugMsg {
    /// Whether the sender wants it shown.
    pub always_display: bool,
    /// The text (sanitize before showing).
    pub message: Vec<u8>,
}

impl DebugMsg {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::DEBUG)?;
        let always_display = r.bool()?;
        let message = r.string()?.to_vec();
        if !r.is_empty() {
            r.string()?;
        }
        r.finish()?;
        Ok(Self {
            always_display,
            message,
        })
    }
    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::DEBUG.0);
        out.put_bool(self.always_display);
        out.put_string(&self.message);
        out.put_str("");
    }
}

/// SSH_MSG_UNIMPLEMENTED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unimplemented {
    /// Sequence number of the packet that was not understood.
    pub seq: u32,
}

impl Unimplemented {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::UNIMPLEMENTED)?;
        let seq = r.u32()?;
        r.finish()?;
        Ok(Self { seq })
    }
    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::UNIMPLEMENTED.0);
        out.put_u32(self.seq);
    }
}

/// SSH_MSG_EXT_INFO (RFC 8308).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtInfo {
    /// Extension names and values.
    pub extensions: Vec<(String, Vec<u8>)>,
}

const MAX_EXTENSIONS: u32 = 64;

impl ExtInfo {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::EXT_INFO)?;
        let count = r.u32()?;
        if count > MAX_EXTENSIONS {
            return Err(DecodeError::InvalidValue("extension count"));
        }
        let mut extensions = Vec::new();
        for _ in 0..count {
            let name = r.utf8()?.to_owned();
            let value = r.string()?.to_vec();
            extensions.push((name, value));
        }
        r.finish()?;
        Ok(Self { extensions })
    }

    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::EXT_INFO.0);
        out.put_u32(u32::try_from(self.extensions.len()).unwrap_or(u32::MAX));
        for (name, value) in &self.extensions {
            out.put_str(name);
            out.put_string(value);
        }
    }

    /// The `server-sig-algs` extension's names, if present and well formed.
    pub fn server_sig_algs(&self) -> Option<Result<Vec<String>, DecodeError>> {
        let (_, value) = self
            .extensions
            .iter()
            .find(|(n, _)| n == "server-sig-algs")?;
        Some(
            crate::wire::NameList::parse(value)
                .map(|l| l.iter().take(MAX_NAMES).map(str::to_owned).collect()),
        )
    }
}

pub(crate) fn expect_type(r: &mut Reader<'_>, t: MessageType) -> Result<(), DecodeError> {
    if r.u8()? == t.0 {
        Ok(())
    } else {
        Err(DecodeError::InvalidValue("message number"))
    }
}

/// Derives `len` bytes of key material for `letter` ('A'..='F').
pub fn derive_key(
    alg: &'static digest::Algorithm,
    k: &[u8],
    h: &[u8],
    letter: u8,
    session_id: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + alg.output_len()));
    let mut ctx = digest::Context::new(alg);
    ctx.update(k);
    ctx.update(h);
    ctx.update(&[letter]);
    ctx.update(session_id);
    out.extend_from_slice(ctx.finish().as_ref());
    while out.len() < len {
        let mut ctx = digest::Context::new(alg);
        ctx.update(k);
        ctx.update(h);
        ctx.update(&out);
        out.extend_from_slice(ctx.finish().as_ref());
    }
    out.truncate(len);
    out
}

/// The key material for one direction.
pub struct DirectionKeys {
    /// Cipher key.
    pub key: Zeroizing<Vec<u8>>,
    /// Cipher IV.
    pub iv: Zeroizing<Vec<u8>>,
    /// Integrity (MAC) key; empty with an AEAD cipher.
    pub mac_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectionKeys(..)")
    }
}

impl DirectionKeys {
    /// The MAC and its key, as [`CipherAlgorithm::sealer_with_mac`] takes them.
    pub fn mac(&self, mac: Option<MacAlgorithm>) -> Option<(MacAlgorithm, &[u8])> {
        mac.map(|m| (m, &self.mac_key[..]))
    }
}

/// Derives both directions' keys (IV c2s 'A', s2c 'B', key c2s 'C', s2c 'D', integrity c2s
/// 'E', s2c 'F').
pub fn derive_directions(
    n: &Negotiated,
    k: &[u8],
    h: &[u8],
    session_id: &[u8],
) -> (DirectionKeys, DirectionKeys) {
    let alg = n.kex.hash();
    let mac_len = |m: Option<MacAlgorithm>| m.map_or(0, |m| m.key_len);
    let c2s = DirectionKeys {
        iv: derive_key(alg, k, h, b'A', session_id, n.cipher_c2s.iv_len),
        key: derive_key(alg, k, h, b'C', session_id, n.cipher_c2s.key_len),
        mac_key: derive_key(alg, k, h, b'E', session_id, mac_len(n.mac_c2s)),
    };
    let s2c = DirectionKeys {
        iv: derive_key(alg, k, h, b'B', session_id, n.cipher_s2c.iv_len),
        key: derive_key(alg, k, h, b'D', session_id, n.cipher_s2c.key_len),
        mac_key: derive_key(alg, k, h, b'F', session_id, mac_len(n.mac_s2c)),
    };
    (c2s, s2c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names_strategy() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec("[a-z0-9@.-]{1,20}", 0..5)
    }

    proptest! {
        #[test]
        fn kexinit_round_trips(cookie in any::<[u8; 16]>(), lists in proptest::collection::vec(names_strategy(), 10), follows in any::<bool>()) {
            let m = KexInit {
                cookie,
                kex: lists[0].clone(), host_key: lists[1].clone(),
                cipher_c2s: lists[2].clone(), cipher_s2c: lists[3].clone(),
                mac_c2s: lists[4].clone(), mac_s2c: lists[5].clone(),
                comp_c2s: lists[6].clone(), comp_s2c: lists[7].clone(),
                lang_c2s: lists[8].clone(), lang_s2c: lists[9].clone(),
                first_kex_packet_follows: follows,
            };
            let mut buf = Vec::new();
            m.encode(&mut buf);
            prop_assert_eq!(KexInit::decode(&buf), Ok(m));
            buf.push(0);
            prop_assert_eq!(KexInit::decode(&buf), Err(DecodeError::TrailingBytes));
        }

        #[test]
        fn small_messages_round_trip(a in proptest::collection::vec(any::<u8>(), 0..80),
                                     b in proptest::collection::vec(any::<u8>(), 0..80),
                                     c in proptest::collection::vec(any::<u8>(), 0..80),
                                     n in any::<u32>(), flag in any::<bool>()) {
            let mut buf = Vec::new();
            let m = EcdhInit { q_c: a.clone() };
            m.encode(&mut buf);
            prop_assert_eq!(EcdhInit::decode(&buf), Ok(m));
            buf.clear();
            let m = EcdhReply { host_key: a.clone(), q_s: b.clone(), signature: c };
            m.encode(&mut buf);
            prop_assert_eq!(EcdhReply::decode(&buf), Ok(m));
            buf.clear();
            let m = Disconnect { reason: DisconnectReason(n), description: b.clone() };
            m.encode(&mut buf);
            prop_assert_eq!(Disconnect::decode(&buf), Ok(m));
            buf.clear();
            let m = DebugMsg { always_display: flag, message: a.clone() };
            m.encode(&mut buf);
            prop_assert_eq!(DebugMsg::decode(&buf), Ok(m));
            buf.clear();
            let m = Unimplemented { seq: n };
            m.encode(&mut buf);
            prop_assert_eq!(Unimplemented::decode(&buf), Ok(m));
            buf.clear();
            let m = ExtInfo { extensions: vec![("server-sig-algs".into(), b"rsa-sha2-256".to_vec()), ("x".into(), b)] };
            m.encode(&mut buf);
            prop_assert_eq!(ExtInfo::decode(&buf), Ok(m));
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = KexInit::decode(&data);
            let _ = EcdhReply::decode(&data);
            let _ = ExtInfo::decode(&data);
            let _ = Disconnect::decode(&data);
            let _ = DebugMsg::decode(&data);
        }
    }

    fn kexinit(kex: &[&str], hk: &[&str], ciphers: &[&str]) -> KexInit {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        KexInit {
            cookie: [0; 16],
            kex: s(kex),
            host_key: s(hk),
            cipher_c2s: s(ciphers),
            cipher_s2c: s(ciphers),
            mac_c2s: vec![],
            mac_s2c: vec![],
            comp_c2s: s(&["none"]),
            comp_s2c: s(&["none"]),
            lang_c2s: vec![],
            lang_s2c: vec![],
            first_kex_packet_follows: false,
        }
    }

    #[test]
    fn client_preference_wins_and_pseudo_algorithms_are_never_chosen() {
        let c = kexinit(
            &[
                EXT_INFO_C,
                "curve25519-sha256",
                "curve25519-sha256@libssh.org",
                STRICT_KEX_C,
            ],
            &["ssh-ed25519", "rsa-sha2-512"],
            &["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"],
        );
        let s = kexinit(
            &[
                "curve25519-sha256@libssh.org",
                "curve25519-sha256",
                EXT_INFO_C,
                STRICT_KEX_S,
            ],
            &["rsa-sha2-512", "ssh-ed25519"],
            &["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"],
        );
        let n = negotiate(&c, &s, true).unwrap();
        assert_eq!(n.kex, KexAlgorithm::Curve25519Sha256);
        assert_eq!(
            n.host_key,
            crate::hostkey::SignatureAlgorithm::Ed25519.into()
        );
        assert_eq!(n.cipher_c2s, cipher::CHACHA20_POLY1305);
        assert!(n.strict);
        assert!(!negotiate(&c, &s, false).unwrap().strict);
    }

    #[test]
    fn no_common_algorithm_names_both_lists() {
        let c = kexinit(
            &["curve25519-sha256", EXT_INFO_C],
            &["ssh-ed25519"],
            &["aes128-gcm@openssh.com"],
        );
        let s = kexinit(
            &["diffie-hellman-group14-sha256", EXT_INFO_C],
            &["ssh-ed25519"],
            &["aes128-gcm@openssh.com"],
        );
        let e = negotiate(&c, &s, true).unwrap_err();
        assert_eq!(e.what, "key exchange");
        assert_eq!(e.ours, "curve25519-sha256");
        assert_eq!(e.theirs, "diffie-hellman-group14-sha256,ext-info-c");
    }

    #[test]
    fn x25519_rfc7748_vector_and_zero_secret() {
        struct Fixed([u8; 32]);
        impl SecureRandom for Fixed {
            fn fill(&mut self, d: &mut [u8]) {
                d.copy_from_slice(&self.0);
            }
        }
        // RFC 7748 section 6.1.
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let a_priv: [u8; 32] =
            hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .try_into()
                .unwrap();
        let b_pub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let a = Curve25519::generate(&mut Fixed(a_priv));
        assert_eq!(
            a.public.to_vec(),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let k = a.agree(&b_pub).unwrap();
        let mut expect = vec![0, 0, 0, 32];
        expect.extend(hex(
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
        ));
        assert_eq!(&k[..], &expect[..]);
        assert_eq!(a.agree(&[0u8; 32]), Err(AgreementError::ZeroSharedSecret));
        assert_eq!(a.agree(&[1u8; 31]), Err(AgreementError::BadPublicKey));
    }

    #[test]
    fn derive_key_extends_beyond_one_hash() {
        let k = derive_key(&digest::SHA256, b"K", b"H", b'C', b"S", 64);
        assert_eq!(k.len(), 64);
        let first = digest::digest(&digest::SHA256, b"KHCS");
        assert_eq!(&k[..32], first.as_ref());
        let mut cat = b"KH".to_vec();
        cat.extend_from_slice(first.as_ref());
        assert_eq!(&k[32..], digest::digest(&digest::SHA256, &cat).as_ref());
    }
}
