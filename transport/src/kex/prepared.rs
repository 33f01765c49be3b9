//! A client's first key exchange message made ahead of time.
//!
//! The client's part of a key exchange starts with a fresh key pair, and for some methods
//! that is the most expensive step of the whole handshake: an sntrup761 key pair takes
//! about 11 ms of CPU, where the rest of the client's exchange takes about 2. A transport
//! runs on the thread that carries its connection, and in a process with many sessions on
//! few threads that is the thread that carries other sessions' packets too. So the
//! application may make the key pair elsewhere (another thread, before the TCP connection
//! is up, or after one exchange for the next) and hand it to the transport
//! ([`ClientTransport::with_prepared_kex`], [`ClientTransport::offer_prepared_kex`]).
//!
//! A prepared exchange is used at most once, and only for the method it was made for; an
//! exchange that needs another method makes its own key pair as before. Its private half is
//! wiped when it is dropped, used or not, as every key exchange secret is.
//!
//! [`ClientTransport::with_prepared_kex`]: crate::ClientTransport::with_prepared_kex
//! [`ClientTransport::offer_prepared_kex`]: crate::ClientTransport::offer_prepared_kex

use core::fmt;

use super::{ClientKex, KexAlgorithm, KexError};
use crate::random::SecureRandom;

/// The client's side of one key exchange, its first message already made.
pub struct PreparedKex {
    algorithm: KexAlgorithm,
    method: Box<dyn ClientKex>,
    message: Vec<u8>,
}

impl PreparedKex {
    /// Makes the key pair and first message of `algorithm` with randomness from `rng`.
    /// Group exchange cannot be prepared (its first message is a request for a group; its key
    /// pair depends on the answer), nor can a method whose key generation fails.
    pub fn new(algorithm: KexAlgorithm, rng: &mut dyn SecureRandom) -> Result<Self, KexError> {
        if !algorithm.is_single_pass() {
            return Err(KexError::Invalid(format!(
                "{} cannot be prepared: its key pair depends on the server's group",
                algorithm.name()
            )));
        }
        let mut method = algorithm.client();
        let message = method.start(rng)?;
        Ok(Self {
            algorithm,
            method,
            message,
        })
    }

    /// The method it was made for.
    pub fn algorithm(&self) -> KexAlgorithm {
        self.algorithm
    }

    /// The exchange and its first message, when it was made for `algorithm`. Both names of
    /// sntrup761x25519 (and of curve25519) are one computation, but a prepared exchange is
    /// only handed out for the name it was made for: the application makes it for the name
    /// it expects to be negotiated.
    pub(crate) fn take_for(
        slot: &mut Option<Self>,
        algorithm: KexAlgorithm,
    ) -> Option<(Box<dyn ClientKex>, Vec<u8>)> {
        match slot.take() {
            Some(p) if p.algorithm == algorithm => Some((p.method, p.message)),
            // Made for another method: dropped (and its secret wiped) rather than held on
            // for an exchange that will not come.
            _ => None,
        }
    }
}

impl fmt::Debug for PreparedKex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedKex")
            .field("algorithm", &self.algorithm.name())
            .field("message_len", &self.message.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u8);
    impl SecureRandom for Counter {
        fn fill(&mut self, d: &mut [u8]) {
            for b in d {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    #[test]
    fn every_single_pass_method_can_be_prepared_and_group_exchange_cannot() {
        for &alg in KexAlgorithm::ALL {
            let prepared = PreparedKex::new(alg, &mut Counter(0));
            if alg.is_single_pass() {
                let p = prepared.unwrap();
                assert_eq!(p.algorithm(), alg);
                // The message is what the method itself sends first, from the same bytes.
                let mut direct = alg.client();
                assert_eq!(p.message, direct.start(&mut Counter(0)).unwrap(), "{alg:?}");
            } else {
                let e = prepared.unwrap_err().to_string();
                assert!(e.contains("cannot be prepared"), "{e}");
            }
        }
    }

    #[test]
    fn a_prepared_exchange_is_handed_out_once_and_only_for_its_method() {
        let made = || PreparedKex::new(KexAlgorithm::Curve25519Sha256, &mut Counter(7)).ok();
        let mut slot = made();
        assert!(PreparedKex::take_for(&mut slot, KexAlgorithm::Curve25519Sha256).is_some());
        assert!(slot.is_none());
        assert!(PreparedKex::take_for(&mut slot, KexAlgorithm::Curve25519Sha256).is_none());

        // Another method's name, even the same computation's other name, gets nothing, and
        // the mismatched exchange is not kept.
        let mut slot = made();
        assert!(PreparedKex::take_for(&mut slot, KexAlgorithm::Curve25519Sha256Libssh).is_none());
        assert!(slot.is_none());
    }

    #[test]
    fn debug_shows_no_secret() {
        let p = PreparedKex::new(KexAlgorithm::Curve25519Sha256, &mut Counter(1)).unwrap();
        let shown = format!("{p:?}");
        assert!(shown.contains("curve25519-sha256"), "{shown}");
        assert!(shown.contains("message_len: 37"), "{shown}");
    }
}
