//! Every key exchange method's client side fed arbitrary server messages: the KEXDH/ECDH and
//! hybrid replies, and group exchange's GROUP and REPLY.
//!
//! Input: `selector, payload*` with each payload a `u16` length and its bytes (see
//! [`Input::payload`]). `selector % ALL.len()` picks the method from `KexAlgorithm::ALL`; the
//! method's `start` runs with a fixed generator, then each payload goes to `handle` until the
//! method errs or finishes. A finished exchange must carry an exchange hash of the method's
//! hash length and a length-prefixed K.

use ssh_transport::kex::{ClientStep, HashPrefix, KexAlgorithm};
use ssh_transport::server::SeededRandom;

use crate::input::{Input, put_payload};

const PREFIX: HashPrefix<'static> = HashPrefix {
    v_c: b"SSH-2.0-fuzz-client",
    v_s: b"SSH-2.0-fuzz-server",
    i_c: b"\x14client kexinit",
    i_s: b"\x14server kexinit",
};

/// At most this many messages per input: group exchange takes two, the rest one.
const MAX_MESSAGES: usize = 4;

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(selector) = input.byte() else {
        return;
    };
    let kex = KexAlgorithm::ALL[usize::from(selector) % KexAlgorithm::ALL.len()];
    let mut method = kex.client();
    let mut rng = SeededRandom::new(1);
    let first = method.start(&mut rng).expect("start never fails");
    assert!(!first.is_empty());
    for _ in 0..MAX_MESSAGES {
        let Some(payload) = input.payload() else {
            return;
        };
        match method.handle(payload, &PREFIX, &mut rng) {
            Ok(ClientStep::Send(next)) => assert!(!next.is_empty(), "{kex}: empty message"),
            Ok(ClientStep::Done(outcome)) => {
                assert_eq!(outcome.h.len(), kex.hash().output_len(), "{kex}");
                let k = &outcome.k[..];
                assert!(k.len() >= 4, "{kex}: K without a length");
                let len = u32::from_be_bytes([k[0], k[1], k[2], k[3]]) as usize;
                assert_eq!(len, k.len() - 4, "{kex}: K's length prefix");
                return;
            }
            Err(_) => return,
        }
    }
}

/// Seeds: for every method, the messages the test server sends in answer to this harness's
/// client, so that the fuzzer starts from exchanges that complete.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let prefix = PREFIX;
    let mut out = Vec::new();
    for (i, &kex) in KexAlgorithm::ALL.iter().enumerate() {
        let mut client = kex.client();
        let mut client_rng = SeededRandom::new(1);
        let mut server = kex.server();
        let mut server_rng = SeededRandom::new(2);
        let mut sign = |_: &[u8]| b"\0\0\0\x0bssh-ed25519\0\0\0\x40signature".to_vec();
        let mut data = vec![i as u8];
        let mut to_server = client.start(&mut client_rng).expect("start");
        loop {
            let step = server
                .handle(&to_server, &prefix, b"host key", &mut sign, &mut server_rng)
                .expect("the test server answers its own client");
            match step {
                ssh_transport::kex::ServerStep::Send(m) => {
                    put_payload(&mut data, &m);
                    match client.handle(&m, &prefix, &mut client_rng).expect("client") {
                        ClientStep::Send(next) => to_server = next,
                        ClientStep::Done(_) => unreachable!("done before the reply"),
                    }
                }
                ssh_transport::kex::ServerStep::Done { reply, .. } => {
                    put_payload(&mut data, &reply);
                    break;
                }
            }
        }
        out.push((kex.name().replace('@', "_at_"), data));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_complete_every_method() {
        let seeds = seeds();
        assert_eq!(seeds.len(), KexAlgorithm::ALL.len());
        for (name, data) in seeds {
            let mut input = Input::new(&data);
            let kex = KexAlgorithm::ALL[usize::from(input.byte().unwrap())];
            let mut method = kex.client();
            let mut rng = SeededRandom::new(1);
            method.start(&mut rng).unwrap();
            let mut done = false;
            while let Some(p) = input.payload() {
                if let ClientStep::Done(o) = method.handle(p, &PREFIX, &mut rng).unwrap() {
                    assert_eq!(o.host_key, b"host key", "{name}");
                    done = true;
                }
            }
            assert!(done, "{name} did not complete");
            run(&data);
        }
    }
}
