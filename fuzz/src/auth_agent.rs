//! The ssh-agent protocol's codec: frames split off a byte stream, answers and requests
//! decoded, and every listed key turned into an identity.
//!
//! Input: bytes as an agent might send them down the socket, any number of frames.
//!
//! Properties: a frame length over the bound is refused from its four bytes; what decodes
//! encodes to a frame that splits and decodes to the same thing; an identities answer holds
//! at most `MAX_IDENTITIES` keys; `Identity::from_agent` never panics on a listed blob, and
//! what it accepts offers exactly that blob.

use ssh_auth::Identity;
use ssh_auth::agent::{
    AgentRequest, AgentResponse, MAX_FRAME_LEN, MAX_IDENTITIES, frame_length, split_frame,
};

/// Frames looked at per input, so one input costs bounded time.
const MAX_FRAMES: usize = 64;

/// What a run saw, for the seed tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Frames split off.
    pub frames: usize,
    /// Answers that decoded.
    pub answers: usize,
    /// Keys that became identities.
    pub identities: usize,
    /// The stream ended with a refused frame length.
    pub refused_length: bool,
}

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    drive(data);
}

/// The harness.
pub fn drive(data: &[u8]) -> Report {
    let mut report = Report::default();
    if let Some(header) = data.first_chunk::<4>() {
        match frame_length(*header) {
            Ok(n) => assert!(n > 0 && n <= MAX_FRAME_LEN),
            Err(_) => assert!(
                u32::from_be_bytes(*header) as usize > MAX_FRAME_LEN
                    || u32::from_be_bytes(*header) == 0
            ),
        }
    }
    let mut at = data;
    for _ in 0..MAX_FRAMES {
        let (body, rest) = match split_frame(at) {
            Ok(Some(split)) => split,
            Ok(None) => break,
            Err(_) => {
                report.refused_length = true;
                break;
            }
        };
        report.frames += 1;
        at = rest;
        if let Ok(req) = AgentRequest::decode(body) {
            let mut frame = Vec::new();
            req.encode_frame(&mut frame);
            match split_frame(&frame) {
                Ok(Some((again, []))) => assert_eq!(AgentRequest::decode(again).ok(), Some(req)),
                other => panic!("a request encodes to a frame that does not split: {other:?}"),
            }
        }
        let Ok(resp) = AgentResponse::decode(body) else {
            continue;
        };
        report.answers += 1;
        let mut frame = Vec::new();
        resp.encode_frame(&mut frame);
        match split_frame(&frame) {
            Ok(Some((again, []))) => {
                assert_eq!(AgentResponse::decode(again).as_ref(), Ok(&resp));
            }
            other => panic!("an answer encodes to a frame that does not split: {other:?}"),
        }
        if let AgentResponse::Identities(keys) = resp {
            assert!(keys.len() <= MAX_IDENTITIES);
            for key in keys {
                let _ = key.comment_text();
                if let Ok(id) = Identity::from_agent(key.key_blob, "fuzz") {
                    assert_eq!(id.key_blob(), key.key_blob);
                    assert!(id.is_from_agent());
                    report.identities += 1;
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str) -> Report {
        let seeds = crate::seeds::all();
        match seeds
            .iter()
            .find(|s| s.target == "auth_agent" && s.name == name)
        {
            Some(seed) => drive(&seed.data),
            None => panic!("no seed {name}"),
        }
    }

    #[test]
    fn seeds_reach_keys_signatures_and_refusals() {
        let r = report("agent-identities");
        assert_eq!((r.frames, r.identities), (1, 3), "{r:?}");
        let r = report("agent-sign-then-failure");
        assert_eq!((r.frames, r.answers), (2, 2), "{r:?}");
        let r = report("agent-huge-frame");
        assert!(r.refused_length && r.frames == 0, "{r:?}");
        let r = report("agent-huge-count");
        assert!(r.frames == 1 && r.answers == 0, "{r:?}");
    }
}
