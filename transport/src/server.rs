//! A minimal server-side transport, built from the same codecs as the client, for in-memory
//! tests of this crate and of the layers above. It is not a server product: one host key
//! (Ed25519 or ECDSA), no user-facing policy, and switches to misbehave on purpose.
//!
//! Delayed compression starts the way OpenSSH's server starts it: right after it sends
//! SSH_MSG_USERAUTH_SUCCESS, which a test sends as a payload like any other.

use std::collections::VecDeque;

use p521::ecdsa::signature::hazmat::PrehashSigner as _;
use ring::signature::{self as ring_sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

use crate::cipher::{self, CipherAlgorithm, PacketOpener};
use crate::compress::Compression;
use crate::error::Error;
use crate::hostkey::{PublicKey, SignatureAlgorithm};
use crate::kex::{self, ExtInfo, KexAlgorithm, KexInit, Negotiated, ServerKex, ServerStep};
use crate::mac::{self, MacAlgorithm};
use crate::msg::MessageType;
use crate::packet::{Rx, Tx};
use crate::random::SecureRandom;
use crate::sink::PayloadSink;
use crate::version::{Line, VersionReader};
use crate::wire::Writer;

/// How the test server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Identification line without CR LF.
    pub version: String,
    /// Lines sent before the version line.
    pub banner_lines: Vec<String>,
    /// Kex methods offered.
    pub kex: Vec<KexAlgorithm>,
    /// Ciphers offered.
    pub ciphers: Vec<CipherAlgorithm>,
    /// MACs offered (both directions).
    pub macs: Vec<MacAlgorithm>,
    /// Compression methods offered (both directions).
    pub compression: Vec<Compression>,
    /// The host key's type; the key itself comes from `host_key_seed`.
    pub host_key_type: TestHostKey,
    /// Offer OpenSSH's strict kex.
    pub strict_kex: bool,
    /// Offer and send EXT_INFO with this server-sig-algs list.
    pub server_sig_algs: Option<Vec<String>>,
    /// Seed of the Ed25519 host key.
    pub host_key_seed: [u8; 32],
    /// Send an IGNORE packet before the first KEXINIT (breaks strict kex).
    pub ignore_before_kexinit: bool,
    /// Present this blob as K_S, offering only the certificate algorithm of the host key's
    /// type (sent as given: a test may pass one for another key, or no certificate at all).
    /// Make one with [`CertificateBuilder`].
    pub host_certificate: Option<Vec<u8>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            version: "SSH-2.0-TestServer_1.0".into(),
            banner_lines: Vec::new(),
            kex: KexAlgorithm::ALL.to_vec(),
            ciphers: cipher::ALL.to_vec(),
            macs: mac::ALL.to_vec(),
            compression: Compression::ALL.to_vec(),
            host_key_type: TestHostKey::Ed25519,
            strict_kex: true,
            server_sig_algs: Some(vec![
                "ssh-ed25519".into(),
                "rsa-sha2-512".into(),
                "rsa-sha2-256".into(),
            ]),
            host_key_seed: [0x11; 32],
            ignore_before_kexinit: false,
            host_certificate: None,
        }
    }
}

/// The host key types the test server can sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TestHostKey {
    /// `ssh-ed25519`
    Ed25519,
    /// `ecdsa-sha2-nistp256`
    EcdsaP256,
    /// `ecdsa-sha2-nistp384`
    EcdsaP384,
    /// `ecdsa-sha2-nistp521`
    EcdsaP521,
}

impl TestHostKey {
    /// The host key algorithm it signs with.
    pub fn algorithm(self) -> SignatureAlgorithm {
        match self {
            Self::Ed25519 => SignatureAlgorithm::Ed25519,
            Self::EcdsaP256 => SignatureAlgorithm::EcdsaP256,
            Self::EcdsaP384 => SignatureAlgorithm::EcdsaP384,
            Self::EcdsaP521 => SignatureAlgorithm::EcdsaP521,
        }
    }
}

/// A host key pair. The ECDSA keys from ring are random (ring makes its own); the others
/// derive from the configured seed.
enum HostKeyPair {
    Ed25519(Ed25519KeyPair),
    Ring(EcdsaKeyPair, SignatureAlgorithm, &'static str),
    P521(Box<p521::ecdsa::SigningKey>),
}

impl HostKeyPair {
    fn new(kind: TestHostKey, seed: [u8; 32]) -> Option<Self> {
        let ring_ecdsa = |alg: &'static ring_sig::EcdsaSigningAlgorithm, sig, curve| {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).ok()?;
            let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).ok()?;
            Some(Self::Ring(pair, sig, curve))
        };
        match kind {
            TestHostKey::Ed25519 => Ed25519KeyPair::from_seed_unchecked(&seed)
                .ok()
                .map(Self::Ed25519),
            TestHostKey::EcdsaP256 => ring_ecdsa(
                &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                SignatureAlgorithm::EcdsaP256,
                "nistp256",
            ),
            TestHostKey::EcdsaP384 => ring_ecdsa(
                &ring_sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                SignatureAlgorithm::EcdsaP384,
                "nistp384",
            ),
            TestHostKey::EcdsaP521 => {
                // SHA-512 of the seed is below the group order with a 2-byte zero prefix.
                let mut scalar = [0u8; 66];
                let d = ring::digest::digest(&ring::digest::SHA512, &seed);
                scalar.get_mut(2..)?.copy_from_slice(d.as_ref());
                let key = p521::ecdsa::SigningKey::from_slice(&scalar).ok()?;
                Some(Self::P521(Box::new(key)))
            }
        }
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self {
            Self::Ed25519(_) => SignatureAlgorithm::Ed25519,
            Self::Ring(_, alg, _) => *alg,
            Self::P521(_) => SignatureAlgorithm::EcdsaP521,
        }
    }

    fn public_key(&self) -> Option<PublicKey> {
        let ecdsa_blob = |curve: &str, point: &[u8]| {
            let mut blob = Vec::new();
            blob.put_str(&format!("ecdsa-sha2-{curve}"));
            blob.put_str(curve);
            blob.put_string(point);
            PublicKey::from_blob(&blob).ok()
        };
        match self {
            Self::Ed25519(pair) => {
                let pk: [u8; 32] = pair.public_key().as_ref().try_into().ok()?;
                Some(PublicKey::ed25519(&pk))
            }
            Self::Ring(pair, _, curve) => ecdsa_blob(curve, pair.public_key().as_ref()),
            Self::P521(key) => ecdsa_blob("nistp521", &key.verifying_key().to_sec1_bytes()),
        }
    }

    /// The SSH signature blob over `h`.
    fn sign(&self, h: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_str(self.algorithm().name());
        let mut inner = Vec::new();
        match self {
            Self::Ed25519(pair) => inner.extend_from_slice(pair.sign(h).as_ref()),
            Self::Ring(pair, _, _) => {
                let rng = ring::rand::SystemRandom::new();
                if let Ok(sig) = pair.sign(&rng, h) {
                    let (r, s) = sig.as_ref().split_at(sig.as_ref().len() / 2);
                    inner.put_mpint(r);
                    inner.put_mpint(s);
                }
            }
            Self::P521(key) => {
                let digest = ring::digest::digest(&ring::digest::SHA512, h);
                let sig: Result<p521::ecdsa::Signature, _> = key.sign_prehash(digest.as_ref());
                if let Ok(sig) = sig {
                    let (r, s) = sig.split_bytes();
                    inner.put_mpint(&r);
                    inner.put_mpint(&s);
                }
            }
        }
        out.put_string(&inner);
        out
    }
}

/// What the test server has for the test.
#[derive(Debug)]
pub enum ServerEvent<'a> {
    /// The first exchange is done.
    Established,
    /// A later exchange is done.
    Rekeyed,
    /// A payload from the client's upper layers.
    Payload(&'a [u8]),
}

enum Kex {
    Idle,
    ExpectKexInit {
        ours: KexInit,
        ours_bytes: Vec<u8>,
    },
    ExpectKexMessage {
        ours_bytes: Vec<u8>,
        theirs_bytes: Vec<u8>,
        negotiated: Negotiated,
        method: Box<dyn ServerKex>,
    },
    ExpectNewKeys {
        opener: Box<dyn PacketOpener>,
        compression: Compression,
    },
}

/// The server side of one connection.
pub struct ServerTransport {
    config: ServerConfig,
    host_key: HostKeyPair,
    rng: Box<dyn SecureRandom>,
    rx: Rx,
    tx: Tx,
    version: Option<VersionReader>,
    client_version: Vec<u8>,
    kex: Kex,
    strict: bool,
    established: bool,
    session_id: Option<Vec<u8>>,
    queued: Vec<Vec<u8>>,
    events: VecDeque<bool>,
    error: Option<Error>,
    /// Whether USERAUTH_SUCCESS was sent (delayed compression may run).
    authenticated: bool,
    /// How many key exchanges completed.
    pub kex_count: u64,
    /// The client's KEXINIT said a guessed first message follows, and the guess was wrong:
    /// that message is skipped (RFC 4253 section 7.1).
    skip_guess: bool,
    /// Guessed first messages this server took, and skipped.
    pub guesses: (u32, u32),
    /// Every key exchange method message (30 to 49) the client sent that this server ran,
    /// in order.
    pub client_kex_messages: Vec<Vec<u8>>,
}

impl core::fmt::Debug for ServerTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerTransport")
            .field("established", &self.established)
            .finish()
    }
}

impl ServerTransport {
    /// A server that has queued its banner, version line and KEXINIT.
    pub fn new(config: ServerConfig, rng: Box<dyn SecureRandom>) -> Self {
        let host_key = HostKeyPair::new(config.host_key_type, config.host_key_seed)
            .unwrap_or_else(|| unreachable!("test host keys are always valid"));
        let mut s = Self {
            config,
            host_key,
            rng,
            rx: Rx::default(),
            tx: Tx::default(),
            version: Some(VersionReader::default()),
            client_version: Vec::new(),
            kex: Kex::Idle,
            strict: false,
            established: false,
            session_id: None,
            queued: Vec::new(),
            events: VecDeque::new(),
            error: None,
            authenticated: false,
            kex_count: 0,
            skip_guess: false,
            guesses: (0, 0),
            client_kex_messages: Vec::new(),
        };
        for line in s.config.banner_lines.clone() {
            s.tx.raw(format!("{line}\r\n").as_bytes());
        }
        let v = format!("{}\r\n", s.config.version);
        s.tx.raw(v.as_bytes());
        if s.config.ignore_before_kexinit {
            s.tx.frame(s.rng.as_mut(), &mut |b| {
                b.put_u8(MessageType::IGNORE.0);
                b.put_str("");
            });
        }
        s.start_kex();
        s
    }

    /// The server's host public key.
    pub fn host_public_key(&self) -> PublicKey {
        self.host_key
            .public_key()
            .unwrap_or_else(|| unreachable!("test host keys always encode"))
    }

    /// Test hook: sends `bytes` as one packet's payload exactly as given, bypassing (and from
    /// then on switching off) compression, to play a peer whose compressed stream is hostile.
    pub fn send_raw_payload(&mut self, bytes: &[u8]) {
        self.tx
            .set_compression(Compression::None, self.authenticated);
        self.tx
            .frame(self.rng.as_mut(), &mut |b| b.extend_from_slice(bytes));
    }

    /// Whether the server compresses what it sends now, and inflates what it receives.
    pub fn is_compressing(&self) -> (bool, bool) {
        (self.tx.is_compressing(), self.rx.is_compressing())
    }

    /// The session identifier.
    pub fn session_id(&self) -> Option<&[u8]> {
        self.session_id.as_deref()
    }

    /// Bytes for the client.
    pub fn output(&self) -> &[u8] {
        self.tx.output()
    }

    /// Marks `n` output bytes as delivered.
    pub fn consume_output(&mut self, n: usize) {
        self.tx.consume(n);
    }

    /// Bytes from the client.
    pub fn handle_input(&mut self, data: &[u8]) {
        self.rx.append(data);
    }

    /// Starts a key exchange now.
    pub fn rekey(&mut self) {
        if matches!(self.kex, Kex::Idle) && self.established {
            self.start_kex();
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Result<Option<ServerEvent<'_>>, Error> {
        let range = loop {
            if let Some(e) = &self.error {
                return Err(e.clone());
            }
            if let Some(first) = self.events.pop_front() {
                return Ok(Some(if first {
                    ServerEvent::Established
                } else {
                    ServerEvent::Rekeyed
                }));
            }
            if let Some(reader) = &mut self.version {
                match reader.read(self.rx.unconsumed()) {
                    Ok(None) => return Ok(None),
                    Ok(Some(Line::Banner(_, n))) => self.rx.consume_raw(n),
                    Ok(Some(Line::Version(v, n))) => {
                        self.client_version = v.to_vec();
                        self.rx.consume_raw(n);
                        self.version = None;
                    }
                    Err(e) => self.error = Some(e.into()),
                }
                continue;
            }
            let r = match self.rx.next_packet() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.error = Some(e.into());
                    continue;
                }
            };
            let payload = self.rx.payload(&r).to_vec();
            let msg = MessageType::of(&payload).unwrap_or(MessageType(0));
            if self.skip_guess && msg.is_kex() && msg != MessageType::KEXINIT {
                self.skip_guess = false;
                self.guesses.1 += 1;
                continue;
            }
            if msg.is_kex() {
                if msg.0 >= 30 {
                    self.client_kex_messages.push(payload.clone());
                }
                if let Err(e) = self.handle_kex(msg, &payload) {
                    self.error = Some(e);
                }
                continue;
            }
            if msg == MessageType::IGNORE || msg == MessageType::DEBUG {
                continue;
            }
            // From the client's KEXINIT to its NEWKEYS only transport messages may come
            // (RFC 4253 section 7.1): Dropbear ends the connection otherwise, as this does.
            if matches!(
                self.kex,
                Kex::ExpectKexMessage { .. } | Kex::ExpectNewKeys { .. }
            ) {
                self.error = Some(Error::UnexpectedMessage {
                    message: msg,
                    expected: "only key exchange messages from the client until its NEWKEYS",
                });
                continue;
            }
            break r;
        };
        Ok(Some(ServerEvent::Payload(self.rx.payload(&range))))
    }

    fn handle_kex(&mut self, msg: MessageType, payload: &[u8]) -> Result<(), Error> {
        let unexpected = |expected| Error::UnexpectedMessage {
            message: msg,
            expected,
        };
        let decode = |error| Error::Decode {
            message: msg,
            error,
        };
        match (core::mem::replace(&mut self.kex, Kex::Idle), msg) {
            (Kex::Idle, MessageType::KEXINIT) => {
                self.start_kex();
                return self.handle_kex(msg, payload);
            }
            (Kex::ExpectKexInit { ours, ours_bytes }, MessageType::KEXINIT) => {
                let theirs = KexInit::decode(payload).map_err(decode)?;
                let negotiated = kex::negotiate(&theirs, &ours, !self.established)?;
                if !self.established {
                    self.strict = negotiated.strict;
                }
                if theirs.first_kex_packet_follows {
                    if kex::guess_was_wrong(&theirs, &ours) {
                        self.skip_guess = true;
                    } else {
                        self.guesses.0 += 1;
                    }
                }
                let method = negotiated.kex.server();
                self.kex = Kex::ExpectKexMessage {
                    ours_bytes,
                    theirs_bytes: payload.to_vec(),
                    negotiated,
                    method,
                };
            }
            (
                Kex::ExpectKexMessage {
                    ours_bytes,
                    theirs_bytes,
                    negotiated: n,
                    mut method,
                },
                m,
            ) if m != MessageType::KEXINIT && m != MessageType::NEWKEYS => {
                let k_s = match &self.config.host_certificate {
                    Some(cert) => cert.clone(),
                    None => self.host_public_key().blob().to_vec(),
                };
                let prefix = kex::HashPrefix {
                    v_c: &self.client_version,
                    v_s: self.config.version.as_bytes(),
                    i_c: &theirs_bytes,
                    i_s: &ours_bytes,
                };
                let host_key = &self.host_key;
                let mut sign = |h: &[u8]| host_key.sign(h);
                let step = method
                    .handle(payload, &prefix, &k_s, &mut sign, self.rng.as_mut())
                    .map_err(|e| Error::KeyExchange(e.to_string()))?;
                let (reply, h, k) = match step {
                    ServerStep::Send(next) => {
                        self.tx
                            .frame(self.rng.as_mut(), &mut |b| b.extend_from_slice(&next));
                        self.kex = Kex::ExpectKexMessage {
                            ours_bytes,
                            theirs_bytes,
                            negotiated: n,
                            method,
                        };
                        return Ok(());
                    }
                    ServerStep::Done { reply, h, k } => (reply, h, k),
                };
                self.tx
                    .frame(self.rng.as_mut(), &mut |b| b.extend_from_slice(&reply));
                let session_id = self.session_id.get_or_insert_with(|| h.clone()).clone();
                let (c2s, s2c) = kex::derive_directions(&n, &k, &h, &session_id);
                self.tx
                    .frame(self.rng.as_mut(), &mut |b| b.push(MessageType::NEWKEYS.0));
                let sealer = n
                    .cipher_s2c
                    .sealer_with_mac(&s2c.key, &s2c.iv, s2c.mac(n.mac_s2c))
                    .ok_or_else(|| Error::KeyExchange("key length".into()))?;
                self.tx.set_sealer(sealer);
                self.tx
                    .set_compression(n.compression_s2c, self.authenticated);
                if self.strict {
                    self.tx.seq = 0;
                }
                if !self.established
                    && let Some(algs) = &self.config.server_sig_algs
                {
                    {
                        let info = ExtInfo {
                            extensions: vec![(
                                "server-sig-algs".into(),
                                algs.join(",").into_bytes(),
                            )],
                        };
                        self.tx.frame(self.rng.as_mut(), &mut |b| info.encode(b));
                    }
                }
                for p in core::mem::take(&mut self.queued) {
                    self.frame_payload(&p);
                }
                let opener = n
                    .cipher_c2s
                    .opener_with_mac(&c2s.key, &c2s.iv, c2s.mac(n.mac_c2s))
                    .ok_or_else(|| Error::KeyExchange("key length".into()))?;
                self.kex = Kex::ExpectNewKeys {
                    opener,
                    compression: n.compression_c2s,
                };
            }
            (
                Kex::ExpectNewKeys {
                    opener,
                    compression,
                },
                MessageType::NEWKEYS,
            ) => {
                self.rx.set_opener(opener);
                self.rx.set_compression(compression, self.authenticated);
                if self.strict {
                    self.rx.seq = 0;
                }
                self.kex_count += 1;
                self.events.push_back(!self.established);
                self.established = true;
            }
            (state, _) => {
                let expected = match &state {
                    Kex::Idle => "no kex message",
                    Kex::ExpectKexInit { .. } => "KEXINIT",
                    Kex::ExpectKexMessage { .. } => "the key exchange method's message",
                    Kex::ExpectNewKeys { .. } => "NEWKEYS",
                };
                self.kex = state;
                return Err(unexpected(expected));
            }
        }
        Ok(())
    }

    fn start_kex(&mut self) {
        let mut kex: Vec<String> = self
            .config
            .kex
            .iter()
            .map(|k| k.name().to_owned())
            .collect();
        if !self.established {
            if self.config.server_sig_algs.is_some() {
                kex.push(kex::EXT_INFO_S.into());
            }
            if self.config.strict_kex {
                kex.push(kex::STRICT_KEX_S.into());
            }
        }
        let ciphers = self
            .config
            .ciphers
            .iter()
            .map(|c| c.name.to_owned())
            .collect();
        let names = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect();
        let ours = KexInit::new(
            self.rng.as_mut(),
            kex,
            vec![
                if self.config.host_certificate.is_some() {
                    crate::cert::certificate_algorithm_name(self.host_key.algorithm())
                } else {
                    self.host_key.algorithm().name()
                }
                .into(),
            ],
            ciphers,
            names(self.config.macs.iter().map(|m| m.name).collect()),
            names(self.config.compression.iter().map(|c| c.name()).collect()),
        );
        let mut ours_bytes = Vec::new();
        ours.encode(&mut ours_bytes);
        self.tx
            .frame(self.rng.as_mut(), &mut |b| b.extend_from_slice(&ours_bytes));
        self.kex = Kex::ExpectKexInit { ours, ours_bytes };
    }
}

impl ServerTransport {
    /// Frames one payload; after USERAUTH_SUCCESS, delayed compression starts both ways, as
    /// OpenSSH's server starts it once that message is on its way.
    fn frame_payload(&mut self, p: &[u8]) {
        self.tx
            .frame(self.rng.as_mut(), &mut |b| b.extend_from_slice(p));
        if p.first() == Some(&MessageType::USERAUTH_SUCCESS.0) && !self.authenticated {
            self.authenticated = true;
            self.tx.start_delayed_compression();
            self.rx.start_delayed_compression();
        }
    }
}

impl PayloadSink for ServerTransport {
    fn send_with(&mut self, build: &mut dyn FnMut(&mut Vec<u8>)) {
        let mut p = Vec::new();
        build(&mut p);
        if matches!(self.kex, Kex::Idle | Kex::ExpectNewKeys { .. }) {
            self.frame_payload(&p);
        } else {
            self.queued.push(p);
        }
    }
}

/// Builds OpenSSH certificates (PROTOCOL.certkeys) for tests, signed by an Ed25519
/// authority made from a seed, or by any signer.
#[derive(Clone, Debug)]
pub struct CertificateBuilder {
    /// The certified plain key's blob.
    pub key: Vec<u8>,
    /// `SSH_CERT_TYPE_USER` (1) or `SSH_CERT_TYPE_HOST` (2).
    pub cert_type: u32,
    /// Serial number.
    pub serial: u64,
    /// Key id.
    pub key_id: String,
    /// Principals (host names for a host certificate).
    pub principals: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub valid_after: u64,
    /// End of validity (exclusive).
    pub valid_before: u64,
    /// Critical options, `(name, data)`, in name order.
    pub critical_options: Vec<(String, Vec<u8>)>,
    /// Extensions, `(name, data)`, in name order.
    pub extensions: Vec<(String, Vec<u8>)>,
}

impl CertificateBuilder {
    /// A host certificate for `key` (a plain key blob) naming `principals`, valid forever.
    pub fn host(key: &[u8], principals: &[&str]) -> Self {
        Self {
            key: key.to_vec(),
            cert_type: crate::cert::CERT_TYPE_HOST,
            serial: 7,
            key_id: "test host".into(),
            principals: principals.iter().map(|p| (*p).to_owned()).collect(),
            valid_after: 0,
            valid_before: u64::MAX,
            critical_options: Vec::new(),
            extensions: Vec::new(),
        }
    }

    /// Everything the authority signs, its key `ca_key` included.
    pub fn to_be_signed(&self, ca_key: &[u8]) -> Vec<u8> {
        let mut r = crate::wire::Reader::new(&self.key);
        let name = r.utf8().unwrap_or_default();
        let key_type = crate::hostkey::KeyType::from_name(name);
        let mut out = Vec::new();
        out.put_str(key_type.map_or("unknown-cert-v01@openssh.com", |k| {
            crate::cert::certificate_type_name(k)
        }));
        out.put_string(&[0x42; 32]);
        out.extend_from_slice(
            self.key
                .get(self.key.len() - r.remaining()..)
                .unwrap_or_default(),
        );
        out.put_u64(self.serial);
        out.put_u32(self.cert_type);
        out.put_str(&self.key_id);
        let mut principals = Vec::new();
        for p in &self.principals {
            principals.put_str(p);
        }
        out.put_string(&principals);
        out.put_u64(self.valid_after);
        out.put_u64(self.valid_before);
        let options = |list: &[(String, Vec<u8>)]| {
            let mut v = Vec::new();
            for (name, data) in list {
                v.put_str(name);
                v.put_string(data);
            }
            v
        };
        out.put_string(&options(&self.critical_options));
        out.put_string(&options(&self.extensions));
        out.put_string(&[]);
        out.put_string(ca_key);
        out
    }

    /// The certificate, signed by `sign` (which returns a whole SSH signature blob) for the
    /// authority's key `ca_key`.
    pub fn sign_with(&self, ca_key: &[u8], sign: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut out = self.to_be_signed(ca_key);
        let signature = sign(&out);
        out.put_string(&signature);
        out
    }

    /// The certificate signed by the Ed25519 authority made from `ca_seed`
    /// ([`ed25519_ca_key`] is its public key).
    pub fn sign_ed25519(&self, ca_seed: [u8; 32]) -> Vec<u8> {
        let Ok(pair) = Ed25519KeyPair::from_seed_unchecked(&ca_seed) else {
            return Vec::new();
        };
        let pk: [u8; 32] = pair.public_key().as_ref().try_into().unwrap_or([0; 32]);
        let ca = PublicKey::ed25519(&pk);
        self.sign_with(ca.blob(), |data| {
            let mut sig = Vec::new();
            sig.put_str("ssh-ed25519");
            sig.put_string(pair.sign(data).as_ref());
            sig
        })
    }
}

/// The public key of the Ed25519 authority [`CertificateBuilder::sign_ed25519`] makes from
/// `seed`.
pub fn ed25519_ca_key(seed: [u8; 32]) -> PublicKey {
    let pk = Ed25519KeyPair::from_seed_unchecked(&seed)
        .ok()
        .and_then(|p| <[u8; 32]>::try_from(p.public_key().as_ref()).ok())
        .unwrap_or([0; 32]);
    PublicKey::ed25519(&pk)
}

/// A deterministic generator for tests: SHA-256 over a seed and a counter. Not for real use.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    seed: [u8; 32],
    counter: u64,
}

impl SeededRandom {
    /// A generator from a seed number.
    pub fn new(seed: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_be_bytes());
        Self {
            seed: s,
            counter: 0,
        }
    }
}

impl SecureRandom for SeededRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(&self.seed);
            ctx.update(&self.counter.to_be_bytes());
            self.counter += 1;
            let d = ctx.finish();
            chunk.copy_from_slice(d.as_ref().get(..chunk.len()).unwrap_or_default());
        }
    }
}

impl ServerTransport {
    /// Test hook: a different host key for the next key exchange.
    pub fn replace_host_key(&mut self, seed: [u8; 32]) {
        self.config.host_key_seed = seed;
        self.host_key = HostKeyPair::new(self.config.host_key_type, seed)
            .unwrap_or_else(|| unreachable!("test host keys are always valid"));
    }
}

impl ServerTransport {
    /// Test hook: present another certificate (or none) from the next key exchange on.
    pub fn replace_host_certificate(&mut self, certificate: Option<Vec<u8>>) {
        self.config.host_certificate = certificate;
    }
}
