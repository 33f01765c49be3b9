//! The whole client transport, fed by a hostile server.
//!
//! Input: `control, rest`.
//! - `control & 0x80 == 0`, server bytes: a `ClientTransport` (default config plus the
//!   certificate host key algorithms, seeded generator 0) receives `SSH-2.0-x\r\n` and then
//!   `rest`, in chunks chosen by `control & 0x3f`, accepting any host key (or refusing it when `control & 0x40`);
//!   with `control & 1` the key exchange's work (our key pair, the proof of the reply) is
//!   handed out (`KexWork`), as the fleet has it done elsewhere, and run at once. A
//!   recorded session from the test server is a valid `rest` (see `seeds`), so mutations
//!   reach every state. Afterwards the handshake timeout and EOF are applied.
//! - `control & 0x80 != 0`, a real pair: the client and the crate's test server complete a
//!   handshake, then `rest` is a list of operations: payloads either way, rekeys started by
//!   either side, and bytes of the server's output flipped, inserted or deleted before the
//!   client sees them. `control & 3` picks the cipher, `(control >> 4) & 3` a rekey limit;
//!   its value 3 instead runs AES-CTR with one of four MACs (by `control & 3`) and zlib
//!   compression both ways, rekeying every 4 KiB.
//!
//! Properties: no panic; memory stays bounded (output is drained as a driver would); once
//! `poll_event` fails it keeps failing with the same error; a payload goes up only after the
//! first key exchange and only with a number for the layers above; in the pair, every payload
//! delivered is the next one the other side sent, and an undamaged session delivers all of
//! them and stays up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ssh_transport::cipher;
use ssh_transport::compress::Compression;
use ssh_transport::mac;
use ssh_transport::server::{SeededRandom, ServerConfig, ServerEvent, ServerTransport};
use ssh_transport::{ClientConfig, ClientTransport, Error, Event, PayloadSink};

use crate::input::{Input, chunks};

/// The server identification the harness sends first.
pub const SERVER_VERSION: &str = "SSH-2.0-x";

/// Operations on the pair per input, so one input costs bounded time.
const MAX_OPS: usize = 256;

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(control) = input.byte() else {
        return;
    };
    if control & 0x80 == 0 {
        server_bytes(control, input.rest());
    } else {
        pair(control, &mut input);
    }
}

/// What a pair-mode run did, so tests can tell that the properties were really exercised.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PairReport {
    /// Payloads the client delivered (each checked against what the server sent).
    pub delivered_to_client: usize,
    /// Payloads the server delivered (each checked against what the client sent).
    pub delivered_to_server: usize,
    /// Completed key exchanges on the client, the first included.
    pub client_kex_count: u64,
    /// The client ended in an error.
    pub client_failed: bool,
    /// The session was unaltered, so "everything arrives" was checked at the end.
    pub checked_all_arrived: bool,
}

/// The client the server-bytes mode uses; the seed generator records sessions against the
/// very same one. It offers the certificate host key algorithms after the plain ones, so a
/// server that presents only a certificate takes it down that path too.
pub fn client(now: Instant) -> ClientTransport {
    let mut config = ClientConfig::default();
    let certificates: Vec<_> = config
        .host_key_algorithms
        .iter()
        .map(|a| ssh_transport::hostkey::HostKeyAlgorithm::certificate(a.signature))
        .collect();
    config.host_key_algorithms.extend(certificates);
    ClientTransport::new(config, Box::new(SeededRandom::new(0)), now)
}

/// Follows the client's error state: once `poll_event` fails it must fail the same way.
#[derive(Default)]
struct Sticky(Option<Error>);

impl Sticky {
    fn failed(&self) -> bool {
        self.0.is_some()
    }
}

/// Polls the client until it has nothing more, as a driver does. Payloads go to `payload`.
/// Returns `false` once the client has failed.
fn pump_client(
    client: &mut ClientTransport,
    sticky: &mut Sticky,
    reject_host_key: bool,
    payload: &mut dyn FnMut(&[u8]),
) -> bool {
    loop {
        let established = client.is_established();
        match client.poll_event() {
            Ok(None) => match client.take_kex_work() {
                Some(work) => client.finish_kex_work(work.run()),
                None => return true,
            },
            Ok(Some(Event::VerifyHostKey(_))) => {
                assert!(!established, "host key check after the first key exchange");
                if reject_host_key {
                    client.reject_host_key("refused by the fuzzer".into());
                } else {
                    client.accept_host_key();
                }
            }
            Ok(Some(Event::Established | Event::Rekeyed)) => {
                assert!(client.is_established());
            }
            Ok(Some(Event::Payload { data, .. })) => {
                // `Established` is always polled before any payload that follows it.
                assert!(
                    established,
                    "payload delivered before the first key exchange finished"
                );
                let number = data.first().copied();
                assert!(
                    matches!(number, Some(6 | 50..)),
                    "message number {number:?} went to the layers above"
                );
                payload(data);
            }
            Err(e) => {
                if let Some(first) = &sticky.0 {
                    assert_eq!(&e, first, "the client's error changed");
                }
                assert_eq!(
                    client.error(),
                    Some(&e),
                    "error() disagrees with poll_event"
                );
                match client.poll_event() {
                    Err(again) => assert_eq!(again, e, "the client's error changed"),
                    Ok(ev) => panic!("a failed client produced {ev:?}"),
                }
                sticky.0 = Some(e);
                return false;
            }
        }
    }
}

/// What a server-bytes run did, for the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerBytesReport {
    /// Completed key exchanges before the timeout and EOF were applied.
    pub kex_count: u64,
    /// Of those, the ones whose reply was proven elsewhere.
    pub proven_elsewhere: u64,
    /// And the ones whose key pair was made elsewhere.
    pub started_elsewhere: u64,
}

fn server_bytes(control: u8, stream: &[u8]) -> ServerBytesReport {
    let now = Instant::now();
    let mut client = client(now);
    client.set_kex_work_elsewhere(control & 1 != 0);
    let mut sticky = Sticky::default();
    let reject = control & 0x40 != 0;
    let mut all = format!("{SERVER_VERSION}\r\n").into_bytes();
    all.extend_from_slice(stream);
    for chunk in chunks(&all, control & 0x3f) {
        client.handle_input(chunk);
        let alive = pump_client(&mut client, &mut sticky, reject, &mut |_| {});
        let n = client.output().len();
        client.consume_output(n);
        if !alive {
            break;
        }
    }
    let established = client.is_established();
    let report = ServerBytesReport {
        kex_count: client.kex_count(),
        proven_elsewhere: client.kex_work_done(),
        started_elsewhere: client.kex_started_elsewhere(),
    };
    client.handle_timeout(now + Duration::from_secs(31));
    if !sticky.failed() && !established {
        assert!(
            matches!(client.poll_event(), Err(Error::HandshakeTimeout(_))),
            "the handshake timeout did not end an unfinished handshake"
        );
    }
    client.handle_eof();
    assert!(
        client.poll_event().is_err(),
        "the client lives on after EOF"
    );
    report
}

/// The test server and the client, each with the payloads the other sent and has not yet
/// delivered.
struct Pair {
    client: ClientTransport,
    server: ServerTransport,
    sticky: Sticky,
    server_failed: bool,
    server_established: bool,
    /// Payloads the server sent that the client must deliver, in order.
    to_client: VecDeque<Vec<u8>>,
    /// Payloads the client sent that the server must deliver, in order.
    to_server: VecDeque<Vec<u8>>,
    report: PairReport,
}

impl Pair {
    fn new(control: u8) -> Self {
        let now = Instant::now();
        let mut config = ClientConfig::default();
        if let Some(c) = usize::from(control & 3)
            .checked_sub(1)
            .and_then(|i| cipher::ALL.get(i))
        {
            config.ciphers = vec![*c];
        }
        config.rekey_limit = match (control >> 4) & 3 {
            1 | 3 => Some(4096),
            2 => Some(256),
            _ => None,
        };
        if (control >> 4) & 3 == 3 {
            // AES-CTR with a MAC in either mode, and zlib both ways: `control & 3` picks.
            let (c, m) = [
                (cipher::AES128_CTR, mac::HMAC_SHA2_256_ETM),
                (cipher::AES256_CTR, mac::HMAC_SHA2_512),
                (cipher::AES192_CTR, mac::HMAC_SHA1_ETM),
                (cipher::AES128_CTR, mac::HMAC_SHA1),
            ][usize::from(control & 3)];
            config.ciphers = vec![c];
            config.macs = vec![m];
            config.compression = vec![Compression::Zlib];
        }
        let server_config = ServerConfig {
            version: SERVER_VERSION.into(),
            strict_kex: control & 4 == 0,
            server_sig_algs: if control & 8 == 0 {
                ServerConfig::default().server_sig_algs
            } else {
                None
            },
            banner_lines: if control & 0x40 != 0 {
                vec!["a banner line".into(), String::new()]
            } else {
                Vec::new()
            },
            ..ServerConfig::default()
        };
        Self {
            client: ClientTransport::new(config, Box::new(SeededRandom::new(0)), now),
            server: ServerTransport::new(server_config, Box::new(SeededRandom::new(1))),
            sticky: Sticky::default(),
            server_failed: false,
            server_established: false,
            to_client: VecDeque::new(),
            to_server: VecDeque::new(),
            report: PairReport::default(),
        }
    }

    fn done(&self) -> bool {
        self.sticky.failed() || self.server_failed
    }

    /// Hands `bytes` (the server's output, possibly altered) to the client through
    /// `read_space`, the way the driver reads a socket, and processes them.
    fn deliver_to_client(&mut self, bytes: &[u8]) {
        if self.sticky.failed() {
            return;
        }
        let space = self.client.read_space(bytes.len());
        assert!(
            space.len() >= bytes.len(),
            "read_space gave too little room"
        );
        space[..bytes.len()].copy_from_slice(bytes);
        self.client.commit_input(bytes.len());
        let expected = &mut self.to_client;
        let delivered = &mut self.report.delivered_to_client;
        pump_client(&mut self.client, &mut self.sticky, false, &mut |p| {
            *delivered += 1;
            match expected.pop_front() {
                Some(want) => assert_eq!(
                    p,
                    &want[..],
                    "the client delivered a payload the server did not send"
                ),
                None => panic!("the client delivered {p:?}, which the server never sent"),
            }
        });
    }

    /// Moves all of the client's output to the server and processes it.
    fn client_to_server(&mut self) {
        let out = self.client.output().to_vec();
        self.client.consume_output(out.len());
        if self.server_failed {
            return;
        }
        self.server.handle_input(&out);
        loop {
            match self.server.poll_event() {
                Ok(None) => break,
                Ok(Some(ServerEvent::Established)) => self.server_established = true,
                Ok(Some(ServerEvent::Rekeyed)) => {}
                Ok(Some(ServerEvent::Payload(p))) => {
                    // The client's own DISCONNECT and UNIMPLEMENTED also arrive here.
                    if p.first().is_some_and(|&n| n >= 50) {
                        self.report.delivered_to_server += 1;
                        match self.to_server.pop_front() {
                            Some(want) => assert_eq!(
                                p,
                                &want[..],
                                "the server got a payload the client did not send"
                            ),
                            None => panic!("the server got {p:?}, which the client never sent"),
                        }
                    }
                }
                Err(_) => {
                    self.server_failed = true;
                    break;
                }
            }
        }
    }

    /// Takes the server's pending output.
    fn server_output(&mut self) -> Vec<u8> {
        let out = self.server.output().to_vec();
        self.server.consume_output(out.len());
        out
    }

    /// One full exchange both ways, unaltered.
    fn round(&mut self) {
        let out = self.server_output();
        self.deliver_to_client(&out);
        self.client_to_server();
    }
}

/// Pair mode on its own: `control` as in [`run`] (the 0x80 bit is implied), then the
/// operations.
pub fn pair(control: u8, input: &mut Input<'_>) -> PairReport {
    let mut p = Pair::new(control);
    for _ in 0..8 {
        p.round();
        if p.client.is_established() && p.server_established {
            break;
        }
    }
    assert!(
        p.client.is_established() && p.server_established && !p.done(),
        "the client and the test server did not complete a handshake: {:?}",
        p.client.error()
    );

    // Whether every byte went through unaltered and the server only sent payloads the
    // client must deliver: then everything must arrive.
    let mut clean = true;
    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS && !p.done() {
        ops += 1;
        let Some(op) = input.byte() else { break };
        match op % 9 {
            0 => {
                let out = p.server_output();
                p.deliver_to_client(&out);
            }
            1 => {
                let at = usize::from(input.u16().unwrap_or(0));
                let mask = input.byte().unwrap_or(0) | 1;
                let mut out = p.server_output();
                if !out.is_empty() {
                    let i = at % out.len();
                    out[i] ^= mask;
                    clean = false;
                }
                p.deliver_to_client(&out);
            }
            2 => {
                let at = usize::from(input.u16().unwrap_or(0));
                let n = usize::from(input.byte().unwrap_or(0) % 16) + 1;
                let extra = input.bytes(n);
                let mut out = p.server_output();
                let i = at % (out.len() + 1);
                out.splice(i..i, extra.iter().copied());
                clean &= extra.is_empty();
                p.deliver_to_client(&out);
            }
            3 => {
                let at = usize::from(input.u16().unwrap_or(0));
                let n = usize::from(input.byte().unwrap_or(0) % 16) + 1;
                let mut out = p.server_output();
                if !out.is_empty() {
                    let i = at % out.len();
                    out.drain(i..(i + n).min(out.len()));
                    clean = false;
                }
                p.deliver_to_client(&out);
            }
            4 => {
                let len = usize::from(input.byte().unwrap_or(0));
                let payload = input.bytes(len).to_vec();
                if let Some(&number) = payload.first() {
                    if matches!(number, 6 | 50..) {
                        p.to_client.push_back(payload.clone());
                    } else {
                        clean = false;
                    }
                    p.server.send_with(&mut |b| b.extend_from_slice(&payload));
                }
            }
            5 => {
                let len = usize::from(input.byte().unwrap_or(0));
                let mut payload = input.bytes(len).to_vec();
                if let Some(first) = payload.first_mut() {
                    *first = 50 + *first % 206;
                    if p.client.error().is_none() {
                        p.to_server.push_back(payload.clone());
                    }
                    p.client.send_with(&mut |b| b.extend_from_slice(&payload));
                }
            }
            6 => p.server.rekey(),
            7 => p.client.rekey(),
            _ => {
                // Part of the output now, the rest with a later operation: packets split
                // across reads, with more traffic in between.
                let pending = p.server.output().len();
                let n = usize::from(input.u16().unwrap_or(0)) % (pending + 1);
                let part = p.server.output().get(..n).unwrap_or_default().to_vec();
                p.server.consume_output(n);
                p.deliver_to_client(&part);
            }
        }
        p.client_to_server();
    }

    if clean && !p.done() {
        for _ in 0..8 {
            p.round();
        }
        assert!(
            !p.done(),
            "an unaltered session failed: client {:?}",
            p.client.error()
        );
        assert!(
            p.to_client.is_empty(),
            "{} payloads from the server were never delivered",
            p.to_client.len()
        );
        assert!(
            p.to_server.is_empty(),
            "{} payloads from the client were never delivered",
            p.to_server.len()
        );
        p.report.checked_all_arrived = true;
    }
    p.report.client_kex_count = p.client.kex_count();
    p.report.client_failed = p.sticky.failed();
    p.report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str) -> PairReport {
        let seeds = crate::seeds::all();
        let Some(seed) = seeds
            .iter()
            .find(|s| s.target == "transport_client" && s.name == name)
        else {
            panic!("no seed {name}");
        };
        let mut input = Input::new(&seed.data);
        let control = input.byte().unwrap_or(0);
        pair(control, &mut input)
    }

    #[test]
    fn recorded_sessions_replay_with_the_key_exchange_work_in_line_or_elsewhere() {
        let seeds = crate::seeds::all();
        let recorded: Vec<_> = seeds
            .iter()
            .filter(|s| s.target == "transport_client" && s.name.starts_with("session-"))
            .filter(|s| !s.name.contains("refused"))
            .collect();
        assert!(recorded.len() >= 15, "{} recorded sessions", recorded.len());
        let mut elsewhere = 0;
        for seed in recorded {
            let (control, stream) = seed.data.split_first().expect("a control byte");
            let r = server_bytes(*control, stream);
            assert!(r.kex_count >= 1, "{}: {r:?}", seed.name);
            if control & 1 != 0 {
                assert_eq!(r.proven_elsewhere, r.kex_count, "{}", seed.name);
                assert_eq!(r.started_elsewhere, r.kex_count, "{}", seed.name);
                elsewhere += 1;
            } else {
                assert_eq!((r.proven_elsewhere, r.started_elsewhere), (0, 0), "{}", seed.name);
            }
        }
        assert!(elsewhere >= 5, "{elsewhere} seeds prove their replies elsewhere");
    }

    #[test]
    fn an_unaltered_session_delivers_everything_both_ways() {
        let r = report("pair");
        assert!(r.checked_all_arrived && !r.client_failed, "{r:?}");
        assert_eq!((r.delivered_to_client, r.delivered_to_server), (1, 1));
    }

    #[test]
    fn rekeys_from_either_side_keep_every_payload() {
        for name in [
            "pair-rekeys",
            "pair-rekeys-chacha",
            "pair-rekeys-ctr-etm-zlib",
            "pair-rekeys-ctr-sha1-zlib",
        ] {
            let r = report(name);
            assert!(r.checked_all_arrived && !r.client_failed, "{name}: {r:?}");
            assert!(r.client_kex_count >= 3, "{name}: {r:?}");
            assert_eq!(
                (r.delivered_to_client, r.delivered_to_server),
                (2, 2),
                "{name}"
            );
        }
    }

    #[test]
    fn altered_bytes_end_the_session_without_delivering_them() {
        for name in ["pair-flipped", "pair-inserted", "pair-deleted"] {
            let r = report(name);
            assert!(r.client_failed && !r.checked_all_arrived, "{name}: {r:?}");
            assert_eq!(
                r.delivered_to_client, 1,
                "{name}: only the payload before the damage"
            );
        }
    }

    #[test]
    fn a_packet_split_across_reads_still_arrives() {
        let r = report("pair-split");
        assert!(r.checked_all_arrived && !r.client_failed, "{r:?}");
        assert_eq!(r.delivered_to_client, 2);
    }
}
