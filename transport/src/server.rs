//! A minimal server-side transport, built from the same codecs as the client, for in-memory
//! tests of this crate and of the layers above. It is not a server product: one Ed25519 host
//! key, no user-facing policy, and switches to misbehave on purpose.

use std::collections::VecDeque;

use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::cipher::{self, CipherAlgorithm, PacketOpener};
use crate::error::Error;
use crate::hostkey::{PublicKey, SignatureAlgorithm};
use crate::kex::{self, ExtInfo, KexAlgorithm, KexInit, Negotiated, ServerKex, ServerStep};
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
    /// Offer OpenSSH's strict kex.
    pub strict_kex: bool,
    /// Offer and send EXT_INFO with this server-sig-algs list.
    pub server_sig_algs: Option<Vec<String>>,
    /// Seed of the Ed25519 host key.
    pub host_key_seed: [u8; 32],
    /// Send an IGNORE packet before the first KEXINIT (breaks strict kex).
    pub ignore_before_kexinit: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            version: "SSH-2.0-TestServer_1.0".into(),
            banner_lines: Vec::new(),
            kex: KexAlgorithm::ALL.to_vec(),
            ciphers: cipher::ALL.to_vec(),
            strict_kex: true,
            server_sig_algs: Some(vec![
                "ssh-ed25519".into(),
                "rsa-sha2-512".into(),
                "rsa-sha2-256".into(),
            ]),
            host_key_seed: [0x11; 32],
            ignore_before_kexinit: false,
        }
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
    },
}

/// The server side of one connection.
pub struct ServerTransport {
    config: ServerConfig,
    host_key: Ed25519KeyPair,
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
    /// How many key exchanges completed.
    pub kex_count: u64,
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
        let host_key = Ed25519KeyPair::from_seed_unchecked(&config.host_key_seed)
            .unwrap_or_else(|_| unreachable!("any 32-byte seed is a valid Ed25519 key"));
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
            kex_count: 0,
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
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.host_key.public_key().as_ref());
        PublicKey::ed25519(&pk)
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
            let payload = self.rx.payload(&r.payload).to_vec();
            let msg = MessageType::of(&payload).unwrap_or(MessageType(0));
            if msg.is_kex() {
                if let Err(e) = self.handle_kex(msg, &payload) {
                    self.error = Some(e);
                }
                continue;
            }
            if msg == MessageType::IGNORE || msg == MessageType::DEBUG {
                continue;
            }
            break r.payload;
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
                let k_s = self.host_public_key().blob().to_vec();
                let prefix = kex::HashPrefix {
                    v_c: &self.client_version,
                    v_s: self.config.version.as_bytes(),
                    i_c: &theirs_bytes,
                    i_s: &ours_bytes,
                };
                let host_key = &self.host_key;
                let mut sign = |h: &[u8]| {
                    let mut signature = Vec::new();
                    signature.put_str(SignatureAlgorithm::Ed25519.name());
                    signature.put_string(host_key.sign(h).as_ref());
                    signature
                };
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
                    .sealer(&s2c.key, &s2c.iv)
                    .ok_or_else(|| Error::KeyExchange("key length".into()))?;
                self.tx.set_sealer(sealer);
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
                    self.tx
                        .frame(self.rng.as_mut(), &mut |b| b.extend_from_slice(&p));
                }
                let opener = n
                    .cipher_c2s
                    .opener(&c2s.key, &c2s.iv)
                    .ok_or_else(|| Error::KeyExchange("key length".into()))?;
                self.kex = Kex::ExpectNewKeys { opener };
            }
            (Kex::ExpectNewKeys { opener }, MessageType::NEWKEYS) => {
                self.rx.set_opener(opener);
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
        let ours = KexInit::new(
            self.rng.as_mut(),
            kex,
            vec![SignatureAlgorithm::Ed25519.name().into()],
            ciphers,
            vec!["hmac-sha2-256".into()],
        );
        let mut ours_bytes = Vec::new();
        ours.encode(&mut ours_bytes);
        self.tx
            .frame(self.rng.as_mut(), &mut |b| b.extend_from_slice(&ours_bytes));
        self.kex = Kex::ExpectKexInit { ours, ours_bytes };
    }
}

impl PayloadSink for ServerTransport {
    fn send_with(&mut self, build: &mut dyn FnMut(&mut Vec<u8>)) {
        if matches!(self.kex, Kex::Idle | Kex::ExpectNewKeys { .. }) {
            self.tx.frame(self.rng.as_mut(), build);
        } else {
            let mut p = Vec::new();
            build(&mut p);
            self.queued.push(p);
        }
    }
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
        self.host_key = Ed25519KeyPair::from_seed_unchecked(&seed)
            .unwrap_or_else(|_| unreachable!("any 32-byte seed is a valid Ed25519 key"));
    }
}
