//! `diffie-hellman-group-exchange-sha256` (RFC 4419): the server chooses the group.
//!
//! ```text
//!  client                                        server
//!  KEX_DH_GEX_REQUEST (34): min, n, max  ──>
//!                                          <──   KEX_DH_GEX_GROUP (31): p, g
//!  check min <= bits(p) <= max, p odd, 1 < g < p-1
//!  KEX_DH_GEX_INIT (32): e = g^x         ──>
//!                                          <──   KEX_DH_GEX_REPLY (33): K_S, f, signature
//!  check 1 < f < p-1, K = f^x
//!  H = HASH(V_C || V_S || I_C || I_S || K_S || min || n || max || p || g || e || f || K)
//! ```
//!
//! The sizes are OpenSSH's: at least 2048 bits, at most 8192, and a preferred size from the
//! strength of the negotiated ciphers.

use ring::digest;
use zeroize::Zeroizing;

use super::dh::{self, Group, Secret};
use super::{
    ClientKex, ClientStep, HashPrefix, KexError, KexOutcome, ServerKex, ServerStep, expect_type,
    groups, hash_mpint, hash_string,
};
use crate::msg::MessageType;
use crate::random::SecureRandom;
use crate::wire::{DecodeError, Reader, Writer};

/// The smallest group we accept (OpenSSH's DH_GRP_MIN).
pub const MIN_BITS: u32 = 2048;
/// The largest group we accept (OpenSSH's DH_GRP_MAX).
pub const MAX_BITS: u32 = dh::MAX_MODULUS_BITS;

/// The group size to ask for, given the symmetric strength in bits the keys need (OpenSSH's
/// estimate, after NIST SP 800-57: 2048 bits for 112, 3072 for 128, 7680 for 192, else 8192).
pub fn preferred_bits(strength_bits: u32) -> u32 {
    match strength_bits {
        0..=112 => 2048,
        113..=128 => 3072,
        129..=192 => 7680,
        _ => 8192,
    }
}

/// SSH_MSG_KEX_DH_GEX_REQUEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GexRequest {
    /// Smallest acceptable modulus, in bits.
    pub min: u32,
    /// Preferred modulus size.
    pub n: u32,
    /// Largest acceptable modulus.
    pub max: u32,
}

impl GexRequest {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::KEX_DH_GEX_REQUEST)?;
        let m = Self {
            min: r.u32()?,
            n: r.u32()?,
            max: r.u32()?,
        };
        r.finish()?;
        Ok(m)
    }
    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::KEX_DH_GEX_REQUEST.0);
        out.put_u32(self.min);
        out.put_u32(self.n);
        out.put_u32(self.max);
    }
}

/// SSH_MSG_KEX_DH_GEX_GROUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GexGroup {
    /// The safe prime's magnitude.
    pub p: Vec<u8>,
    /// The generator's magnitude.
    pub g: Vec<u8>,
}

impl GexGroup {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::KEX_DH_GEX_GROUP)?;
        let p = r.mpint_positive()?.to_vec();
        let g = r.mpint_positive()?.to_vec();
        r.finish()?;
        Ok(Self { p, g })
    }
    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::KEX_DH_GEX_GROUP.0);
        out.put_mpint(&self.p);
        out.put_mpint(&self.g);
    }
}

/// SSH_MSG_KEX_DH_GEX_REPLY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GexReply {
    /// The server's host key blob.
    pub host_key: Vec<u8>,
    /// f's magnitude.
    pub f: Vec<u8>,
    /// The signature over H.
    pub signature: Vec<u8>,
}

impl GexReply {
    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        expect_type(&mut r, MessageType::KEX_DH_GEX_REPLY)?;
        let host_key = r.string()?.to_vec();
        let f = r.mpint_positive()?.to_vec();
        let signature = r.string()?.to_vec();
        r.finish()?;
        Ok(Self {
            host_key,
            f,
            signature,
        })
    }
    /// Encodes the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(MessageType::KEX_DH_GEX_REPLY.0);
        out.put_string(&self.host_key);
        out.put_mpint(&self.f);
        out.put_string(&self.signature);
    }
}

/// Decodes the single mpint of SSH_MSG_KEX_DH_GEX_INIT.
fn decode_init(payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut r = Reader::new(payload);
    expect_type(&mut r, MessageType::KEX_DH_GEX_INIT)?;
    let e = r.mpint_positive()?.to_vec();
    r.finish()?;
    Ok(e)
}

#[allow(clippy::too_many_arguments)]
fn exchange_hash(
    alg: &'static digest::Algorithm,
    prefix: &HashPrefix<'_>,
    k_s: &[u8],
    req: &GexRequest,
    group: &Group,
    e: &[u8],
    f: &[u8],
    k: &[u8],
) -> Vec<u8> {
    let mut ctx = prefix.start(alg);
    hash_string(&mut ctx, k_s);
    for v in [req.min, req.n, req.max] {
        ctx.update(&v.to_be_bytes());
    }
    hash_mpint(&mut ctx, group.p());
    hash_mpint(&mut ctx, group.g());
    hash_mpint(&mut ctx, e);
    hash_mpint(&mut ctx, f);
    ctx.update(k);
    ctx.finish().as_ref().to_vec()
}

enum ClientState {
    Start,
    ExpectGroup,
    ExpectReply {
        group: Box<Group>,
        x: Secret,
        e: Vec<u8>,
    },
    Finished,
}

/// The client side of group exchange.
pub struct GexClient {
    hash: &'static digest::Algorithm,
    request: GexRequest,
    state: ClientState,
}

impl core::fmt::Debug for GexClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GexClient")
            .field("request", &self.request)
            .finish()
    }
}

impl GexClient {
    /// Asks for a group of `preferred` bits (clamped to [`MIN_BITS`]..=[`MAX_BITS`]).
    pub fn new(hash: &'static digest::Algorithm, preferred: u32) -> Self {
        Self {
            hash,
            request: GexRequest {
                min: MIN_BITS,
                n: preferred.clamp(MIN_BITS, MAX_BITS),
                max: MAX_BITS,
            },
            state: ClientState::Start,
        }
    }

    fn on_group(
        &mut self,
        payload: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<ClientStep, KexError> {
        let msg = GexGroup::decode(payload)
            .map_err(|e| KexError::Decode(MessageType::KEX_DH_GEX_GROUP, e))?;
        let bits = dh::bit_length(&msg.p);
        if bits < self.request.min || bits > self.request.max {
            return Err(KexError::Invalid(format!(
                "the server's group-exchange modulus has {bits} bits, outside the {}..={} we \
                 asked for",
                self.request.min, self.request.max
            )));
        }
        let group = Group::new(&msg.p, &msg.g)?;
        let (x, e) = group.keypair(rng, dh::exponent_bits(self.hash))?;
        let mut init = vec![MessageType::KEX_DH_GEX_INIT.0];
        init.put_mpint(&e);
        self.state = ClientState::ExpectReply {
            group: Box::new(group),
            x,
            e,
        };
        Ok(ClientStep::Send(init))
    }
}

impl ClientKex for GexClient {
    fn start(&mut self, _rng: &mut dyn SecureRandom) -> Result<Vec<u8>, KexError> {
        if !matches!(self.state, ClientState::Start) {
            return Err(KexError::OutOfOrder);
        }
        let mut out = Vec::with_capacity(13);
        self.request.encode(&mut out);
        self.state = ClientState::ExpectGroup;
        Ok(out)
    }

    fn handle(
        &mut self,
        payload: &[u8],
        prefix: &HashPrefix<'_>,
        rng: &mut dyn SecureRandom,
    ) -> Result<ClientStep, KexError> {
        let msg = MessageType::of(payload).unwrap_or(MessageType(0));
        match (
            core::mem::replace(&mut self.state, ClientState::Finished),
            msg,
        ) {
            (ClientState::ExpectGroup, MessageType::KEX_DH_GEX_GROUP) => {
                self.on_group(payload, rng)
            }
            (ClientState::ExpectReply { group, x, e }, MessageType::KEX_DH_GEX_REPLY) => {
                let reply = GexReply::decode(payload)
                    .map_err(|err| KexError::Decode(MessageType::KEX_DH_GEX_REPLY, err))?;
                let f = group.check_public(&reply.f)?;
                let k = group.shared(&x, &f);
                let h = exchange_hash(
                    self.hash,
                    prefix,
                    &reply.host_key,
                    &self.request,
                    &group,
                    &e,
                    &reply.f,
                    &k,
                );
                Ok(ClientStep::Done(KexOutcome {
                    host_key: reply.host_key,
                    signature: reply.signature,
                    h,
                    k,
                }))
            }
            (ClientState::Start, _) => Err(KexError::OutOfOrder),
            _ => Err(KexError::Unexpected(msg)),
        }
    }
}

enum ServerState {
    ExpectRequest,
    ExpectInit {
        request: GexRequest,
        group: Box<Group>,
    },
    Finished,
}

/// The server side, for the in-memory test server: answers with the RFC 3526 group closest
/// to the request, as OpenSSH's `choose_dh` picks from its moduli file.
pub struct GexServer {
    hash: &'static digest::Algorithm,
    state: ServerState,
}

impl core::fmt::Debug for GexServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("GexServer(..)")
    }
}

impl GexServer {
    /// A server hashing with `hash`.
    pub fn new(hash: &'static digest::Algorithm) -> Self {
        Self {
            hash,
            state: ServerState::ExpectRequest,
        }
    }
}

/// The smallest RFC 3526 group of at least `n` bits within `max`, else the largest within
/// `min..=max`.
pub(crate) fn choose_group(req: &GexRequest) -> Option<&'static [u8]> {
    let all: [&'static [u8]; 5] = [
        &groups::GROUP14,
        &groups::GROUP15,
        &groups::GROUP16,
        &groups::GROUP17,
        &groups::GROUP18,
    ];
    let bits = |p: &[u8]| u32::try_from(p.len() * 8).unwrap_or(u32::MAX);
    all.iter()
        .copied()
        .find(|p| bits(p) >= req.n && bits(p) <= req.max)
        .or_else(|| {
            all.iter()
                .rev()
                .copied()
                .find(|p| bits(p) >= req.min && bits(p) <= req.max)
        })
}

impl ServerKex for GexServer {
    fn handle(
        &mut self,
        payload: &[u8],
        prefix: &HashPrefix<'_>,
        host_key: &[u8],
        sign: &mut dyn FnMut(&[u8]) -> Vec<u8>,
        rng: &mut dyn SecureRandom,
    ) -> Result<ServerStep, KexError> {
        let msg = MessageType::of(payload).unwrap_or(MessageType(0));
        match (
            core::mem::replace(&mut self.state, ServerState::Finished),
            msg,
        ) {
            (ServerState::ExpectRequest, MessageType::KEX_DH_GEX_REQUEST) => {
                let request = GexRequest::decode(payload)
                    .map_err(|e| KexError::Decode(MessageType::KEX_DH_GEX_REQUEST, e))?;
                if request.min > request.n || request.n > request.max {
                    return Err(KexError::Invalid(format!(
                        "group-exchange request sizes out of order: {request:?}"
                    )));
                }
                let p = choose_group(&request).ok_or_else(|| {
                    KexError::Invalid(format!("no group within the requested sizes {request:?}"))
                })?;
                let group = Group::rfc3526(p);
                let mut out = Vec::new();
                GexGroup {
                    p: group.p().to_vec(),
                    g: group.g().to_vec(),
                }
                .encode(&mut out);
                self.state = ServerState::ExpectInit {
                    request,
                    group: Box::new(group),
                };
                Ok(ServerStep::Send(out))
            }
            (ServerState::ExpectInit { request, group }, MessageType::KEX_DH_GEX_INIT) => {
                let e_bytes = decode_init(payload)
                    .map_err(|e| KexError::Decode(MessageType::KEX_DH_GEX_INIT, e))?;
                let e = group.check_public(&e_bytes)?;
                let (y, f) = group.keypair(rng, dh::exponent_bits(self.hash))?;
                let k: Zeroizing<Vec<u8>> = group.shared(&y, &e);
                let h = exchange_hash(
                    self.hash, prefix, host_key, &request, &group, &e_bytes, &f, &k,
                );
                let signature = sign(&h);
                let mut reply = Vec::new();
                GexReply {
                    host_key: host_key.to_vec(),
                    f,
                    signature,
                }
                .encode(&mut reply);
                Ok(ServerStep::Done { reply, h, k })
            }
            _ => Err(KexError::Unexpected(msg)),
        }
    }
}
