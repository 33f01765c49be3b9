//! The one-round-trip exchange shared by ECDH, the post-quantum hybrids and the fixed
//! finite-field Diffie-Hellman groups: INIT (30) with the client's value, REPLY (31) with the
//! host key, the server's value and the signature.

use ring::digest;

use super::{
    Agreement, ClientKex, ClientStep, HashPrefix, KexError, KexOutcome, ServerKex, ServerStep,
    hash_mpint, hash_string,
};
use crate::msg::MessageType;
use crate::random::SecureRandom;
use crate::wire::{Reader, Writer};

/// An [`Agreement`] run as INIT/REPLY.
#[derive(Debug)]
pub struct SinglePass<A> {
    hash: &'static digest::Algorithm,
    agreement: A,
    client_public: Option<Vec<u8>>,
}

impl<A: Agreement> SinglePass<A> {
    /// The method with exchange hash `hash`.
    pub fn new(hash: &'static digest::Algorithm, agreement: A) -> Self {
        Self {
            hash,
            agreement,
            client_public: None,
        }
    }

    fn put_value(&self, out: &mut Vec<u8>, v: &[u8]) {
        if self.agreement.values_are_mpints() {
            out.put_mpint(v);
        } else {
            out.put_string(v);
        }
    }

    fn read_value<'a>(&self, r: &mut Reader<'a>) -> Result<&'a [u8], crate::wire::DecodeError> {
        if self.agreement.values_are_mpints() {
            r.mpint_positive()
        } else {
            r.string()
        }
    }

    fn hash_value(&self, ctx: &mut digest::Context, v: &[u8]) {
        if self.agreement.values_are_mpints() {
            hash_mpint(ctx, v);
        } else {
            hash_string(ctx, v);
        }
    }

    fn exchange_hash(
        &self,
        prefix: &HashPrefix<'_>,
        k_s: &[u8],
        q_c: &[u8],
        q_s: &[u8],
        k: &[u8],
    ) -> Vec<u8> {
        let mut ctx = prefix.start(self.hash);
        hash_string(&mut ctx, k_s);
        self.hash_value(&mut ctx, q_c);
        self.hash_value(&mut ctx, q_s);
        ctx.update(k);
        ctx.finish().as_ref().to_vec()
    }
}

const INIT: MessageType = MessageType::KEX_ECDH_INIT;
const REPLY: MessageType = MessageType::KEX_ECDH_REPLY;

impl<A: Agreement> ClientKex for SinglePass<A> {
    fn start(&mut self, rng: &mut dyn SecureRandom) -> Result<Vec<u8>, KexError> {
        let q_c = self.agreement.client_public(rng)?;
        let mut msg = vec![INIT.0];
        self.put_value(&mut msg, &q_c);
        self.client_public = Some(q_c);
        Ok(msg)
    }

    fn handle(
        &mut self,
        payload: &[u8],
        prefix: &HashPrefix<'_>,
        _rng: &mut dyn SecureRandom,
    ) -> Result<ClientStep, KexError> {
        let msg = MessageType::of(payload).unwrap_or(MessageType(0));
        if msg != REPLY {
            return Err(KexError::Unexpected(msg));
        }
        let q_c = self.client_public.take().ok_or(KexError::OutOfOrder)?;
        let decode = |e| KexError::Decode(REPLY, e);
        let mut r = Reader::new(payload.get(1..).unwrap_or_default());
        let host_key = r.string().map_err(decode)?.to_vec();
        let q_s = self.read_value(&mut r).map_err(decode)?.to_vec();
        let signature = r.string().map_err(decode)?.to_vec();
        r.finish().map_err(decode)?;
        let k = self.agreement.client_finish(&q_s)?;
        let h = self.exchange_hash(prefix, &host_key, &q_c, &q_s, &k);
        Ok(ClientStep::Done(KexOutcome {
            host_key,
            signature,
            h,
            k,
        }))
    }
}

impl<A: Agreement> ServerKex for SinglePass<A> {
    fn handle(
        &mut self,
        payload: &[u8],
        prefix: &HashPrefix<'_>,
        host_key: &[u8],
        sign: &mut dyn FnMut(&[u8]) -> Vec<u8>,
        rng: &mut dyn SecureRandom,
    ) -> Result<ServerStep, KexError> {
        let msg = MessageType::of(payload).unwrap_or(MessageType(0));
        if msg != INIT {
            return Err(KexError::Unexpected(msg));
        }
        let decode = |e| KexError::Decode(INIT, e);
        let mut r = Reader::new(payload.get(1..).unwrap_or_default());
        let q_c = self.read_value(&mut r).map_err(decode)?.to_vec();
        r.finish().map_err(decode)?;
        let (q_s, k) = self.agreement.server_respond(&q_c, rng)?;
        let h = self.exchange_hash(prefix, host_key, &q_c, &q_s, &k);
        let signature = sign(&h);
        let mut reply = vec![REPLY.0];
        reply.put_string(host_key);
        self.put_value(&mut reply, &q_s);
        reply.put_string(&signature);
        Ok(ServerStep::Done { reply, h, k })
    }
}
