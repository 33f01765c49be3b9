//! Seed inputs: a few valid inputs per target, built with the crates' own encoders and the
//! test server, so the fuzzer starts from messages and sessions that get all the way through.
//!
//! They are checked in under `fuzz/seeds/<target>/` (regenerate with
//! `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`); a unit test keeps the
//! files and this generator in step. Key files for `auth_keyfile` are not here: `scripts/fuzz`
//! has the real `ssh-keygen` write them into the corpus when it runs.

use std::time::Instant;

use ssh_auth::msg::{
    SERVICE_USERAUTH, ServerMessage, ServiceAccept, UserauthBanner, UserauthFailure, UserauthPkOk,
    UserauthSuccess,
};
use ssh_connection::msg::{
    ChannelClose, ChannelData, ChannelEof, ChannelOpenConfirmation, ChannelOpenFailure,
    ChannelRequest, ConnectionMessage, ExtendedData, GlobalRequest, RequestFailure, WindowAdjust,
};
use ssh_connection::{ExtendedDataType, OpenFailureReason};
use ssh_transport::cipher;
use ssh_transport::compress::Compression;
use ssh_transport::hostkey::SignatureAlgorithm;
use ssh_transport::kex::{
    DebugMsg, Disconnect, EcdhInit, EcdhReply, ExtInfo, KexAlgorithm, KexInit, Unimplemented,
};
use ssh_transport::packet::Tx;
use ssh_transport::server::{SeededRandom, ServerConfig, ServerTransport};
use ssh_transport::wire::Writer as _;
use ssh_transport::{DisconnectReason, Event, MessageType, PayloadSink};

use crate::fixtures::{self, HOSTS, SIGNED_DATA};
use crate::input::put_payload;
use crate::transport_client::SERVER_VERSION;

/// One seed file.
#[derive(Clone, Debug)]
pub struct Seed {
    /// The fuzz target it is for.
    pub target: &'static str,
    /// Its file name.
    pub name: String,
    /// Its contents.
    pub data: Vec<u8>,
}

/// Every seed, for every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        out.push(Seed {
            target,
            name: name.to_owned(),
            data,
        });
    };
    for (name, data) in deframer() {
        add("transport_deframer", &name, data);
    }
    for (name, data) in messages() {
        add("transport_messages", &name, data);
    }
    for (name, data) in client() {
        add("transport_client", &name, data);
    }
    for (name, data) in auth() {
        add("auth_messages", &name, data);
    }
    for (name, data) in certificates() {
        add("auth_certificate", &name, data);
    }
    for (name, data) in agent() {
        add("auth_agent", &name, data);
    }
    for (name, data) in connection() {
        add("connection_messages", &name, data);
    }
    for (name, data) in crate::connection_messages::seeds() {
        add("connection_messages", &name, data);
    }
    for (name, data) in known_hosts() {
        add("known_hosts", &name, data);
    }
    for (name, data) in crate::krl::seeds() {
        add("krl", &name, data);
    }
    for (name, data) in cli() {
        add("cli_args", &name, data);
    }
    for (name, data) in crate::kex_replies::seeds() {
        add("kex_replies", &name, data);
    }
    for (name, data) in crate::probe_replies::seeds() {
        add("probe_replies", &name, data);
    }
    for (name, data) in crate::ssh_config::seeds() {
        add("ssh_config", &name, data);
    }
    for (name, data) in fleet_files() {
        add("fleet_config", &name, data);
    }
    for (name, data) in crate::kex_guess_file::seeds() {
        add("kex_guess_file", &name, data);
    }
    for (name, data) in crate::socks_handshake::seeds() {
        add("socks_handshake", &name, data);
    }
    for (name, data) in crate::mux_messages::seeds() {
        add("mux_messages", &name, data);
    }
    out
}

fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

fn sample_kexinit(seed: u64, server: bool) -> KexInit {
    let mut rng = SeededRandom::new(seed);
    let mut kex: Vec<String> = KexAlgorithm::ALL.iter().map(|k| k.name().into()).collect();
    kex.push(if server { "ext-info-s" } else { "ext-info-c" }.into());
    kex.push(
        if server {
            "kex-strict-s-v00@openssh.com"
        } else {
            "kex-strict-c-v00@openssh.com"
        }
        .into(),
    );
    KexInit::new(
        &mut rng,
        kex,
        vec!["ssh-ed25519".into(), "rsa-sha2-512".into()],
        cipher::ALL.iter().map(|c| c.name.into()).collect(),
        vec!["hmac-sha2-256-etm@openssh.com".into()],
        vec!["none".into(), "zlib@openssh.com".into()],
    )
}

// ---- transport_deframer ---------------------------------------------------------------------

fn deframer() -> Vec<(String, Vec<u8>)> {
    use crate::transport_deframer::{COMPRESSED, FLIP, FRAMED, PROTECTIONS, READ_SPACE};
    let mut out = Vec::new();
    let kexinit = encoded(|b| sample_kexinit(3, true).encode(b));
    let payloads: Vec<Vec<u8>> = vec![
        kexinit.clone(),
        vec![MessageType::IGNORE.0, 0, 0, 0, 3, b'a', b'b', b'c'],
        vec![94, 0, 0, 0, 0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'],
        vec![MessageType::NEWKEYS.0],
    ];
    for (bits, protection) in PROTECTIONS.iter().enumerate() {
        let bits = bits as u8;
        let name = protection.map_or("plain".to_owned(), |(c, m)| {
            let c = c.name.split('@').next().unwrap_or(c.name);
            match m {
                Some(m) => format!("{c}-{}", m.name.split('@').next().unwrap_or(m.name)),
                None => c.to_owned(),
            }
        });
        for compressed in [false, true] {
            let (name, bits) = if compressed {
                (format!("{name}-zlib"), bits | COMPRESSED)
            } else {
                (name.clone(), bits)
            };
            // Raw: packets sealed (and compressed) under the harness's fixed keys, so they open.
            let mut tx = Tx::default();
            if let Some(p) = protection {
                tx.set_sealer(crate::transport_deframer::sealer(p));
            }
            if compressed {
                tx.set_compression(Compression::Zlib, true);
            }
            let mut rng = SeededRandom::new(9);
            for p in &payloads {
                tx.frame(&mut rng, &mut |b| b.extend_from_slice(p));
            }
            for (chunking, suffix) in [(0u8, "whole"), (2, "small-chunks"), (0x1d, "ragged")] {
                if compressed && chunking != 0x1d {
                    continue;
                }
                let mut seed = vec![bits, chunking];
                seed.extend_from_slice(tx.output());
                out.push((format!("raw-{name}-{suffix}"), seed));
            }
            if !compressed {
                let mut seed = vec![bits | READ_SPACE, 3];
                seed.extend_from_slice(tx.output());
                out.push((format!("raw-{name}-read-space"), seed));
            }

            // Framed: payloads for the harness to seal, then with one byte flipped.
            let mut list = Vec::new();
            list.push(0u8); // not the big-payload marker
            for p in &payloads {
                put_payload(&mut list, p);
            }
            put_payload(&mut list, b"");
            let mut seed = vec![bits | FRAMED, 1];
            seed.extend_from_slice(&list);
            out.push((format!("framed-{name}"), seed));
            let mut seed = vec![bits | FRAMED | FLIP, 4, 0, 40, 0x20];
            seed.extend_from_slice(&list);
            out.push((format!("framed-{name}-flipped"), seed));
        }
    }
    out.push(("framed-limits".into(), vec![FRAMED | 1, 0, 0xff]));
    out.push((
        "framed-limits-zlib".into(),
        vec![FRAMED | COMPRESSED | 4, 0, 0xff],
    ));
    // A plaintext packet whose payload is a zlib bomb: 1 MiB of one byte, about 1 KiB
    // compressed.
    let mut deflater = ssh_transport::compress::Deflater::default();
    deflater.new_keys(Compression::Zlib, true);
    let mut bomb = Vec::new();
    deflater.compress(&vec![0x5e; 1 << 20], &mut bomb);
    let mut bomb_tx = Tx::default();
    bomb_tx.frame(&mut SeededRandom::new(9), &mut |b| {
        b.extend_from_slice(&bomb)
    });
    let mut seed = vec![COMPRESSED, 0];
    seed.extend_from_slice(bomb_tx.output());
    out.push(("raw-plain-zlib-bomb".into(), seed));
    out
}

// ---- transport_messages ---------------------------------------------------------------------

fn selector(name: &str) -> u8 {
    crate::transport_messages::PARSERS
        .iter()
        .position(|p| *p == name)
        .map_or(0, |i| i as u8)
}

fn alg_index(alg: SignatureAlgorithm) -> u8 {
    SignatureAlgorithm::ALL
        .iter()
        .position(|a| *a == alg)
        .map_or(0, |i| i as u8)
}

fn ecdsa_blob(curve: &str, point_len: usize) -> Vec<u8> {
    let mut point = vec![0x11; point_len];
    point[0] = 4;
    encoded(|b| {
        b.put_str(&format!("ecdsa-sha2-{curve}"));
        b.put_str(curve);
        b.put_string(&point);
    })
}

fn messages() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // Message seeds: the selector, then the payload without its number (the harness adds
    // it back), and once whole with the 0x80 bit.
    let mut msg = |name: &str, file: &str, payload: Vec<u8>| {
        let s = selector(name);
        let mut seed = vec![s];
        seed.extend_from_slice(payload.get(1..).unwrap_or_default());
        out.push((file.to_owned(), seed));
        let mut whole = vec![s | 0x80];
        whole.extend_from_slice(&payload);
        out.push((format!("{file}-whole"), whole));
    };
    msg(
        "KexInit",
        "kexinit-server",
        encoded(|b| sample_kexinit(1, true).encode(b)),
    );
    msg(
        "KexInit",
        "kexinit-client",
        encoded(|b| sample_kexinit(2, false).encode(b)),
    );
    let server = ServerTransport::new(ServerConfig::default(), Box::new(SeededRandom::new(5)));
    let host_key = server.host_public_key();
    let ed = fixtures::ed25519(1);
    let signature = ed
        .sign(SignatureAlgorithm::Ed25519, SIGNED_DATA)
        .unwrap_or_default();
    msg(
        "EcdhInit",
        "ecdh-init",
        encoded(|b| EcdhInit { q_c: vec![9; 32] }.encode(b)),
    );
    msg(
        "EcdhReply",
        "ecdh-reply",
        encoded(|b| {
            EcdhReply {
                host_key: host_key.blob().to_vec(),
                q_s: vec![7; 32],
                signature: signature.clone(),
            }
            .encode(b)
        }),
    );
    msg(
        "Disconnect",
        "disconnect",
        encoded(|b| {
            Disconnect {
                reason: DisconnectReason::BY_APPLICATION,
                description: b"bye \x1b[31mred\x1b[0m \xe2\x80\xae".to_vec(),
            }
            .encode(b)
        }),
    );
    msg(
        "DebugMsg",
        "debug",
        encoded(|b| {
            DebugMsg {
                always_display: true,
                message: b"debug\r\nline".to_vec(),
            }
            .encode(b)
        }),
    );
    msg(
        "Unimplemented",
        "unimplemented",
        encoded(|b| Unimplemented { seq: 7 }.encode(b)),
    );
    msg(
        "ExtInfo",
        "ext-info",
        encoded(|b| {
            ExtInfo {
                extensions: vec![
                    (
                        "server-sig-algs".into(),
                        b"ssh-ed25519,rsa-sha2-512,rsa-sha2-256".to_vec(),
                    ),
                    ("publickey-hostbound@openssh.com".into(), b"0".to_vec()),
                ],
            }
            .encode(b)
        }),
    );

    let rsa = fixtures::rsa();
    let blobs: Vec<(&str, Vec<u8>)> = vec![
        ("ed25519", ed.public_key().blob().to_vec()),
        ("rsa", rsa.public_key().blob().to_vec()),
        ("ecdsa-p256", ecdsa_blob("nistp256", 65)),
        ("ecdsa-p384", ecdsa_blob("nistp384", 97)),
    ];
    for (name, blob) in &blobs {
        let mut seed = vec![selector("PublicKey::from_blob")];
        seed.extend_from_slice(blob);
        out.push((format!("blob-{name}"), seed));
    }

    let mut verify = |file: &str, alg: SignatureAlgorithm, blob: &[u8], sig: &[u8]| {
        let mut seed = vec![selector("PublicKey::verify"), alg_index(alg)];
        seed.extend_from_slice(&(blob.len() as u16).to_be_bytes());
        seed.extend_from_slice(blob);
        seed.extend_from_slice(sig);
        out.push((file.to_owned(), seed));
    };
    verify(
        "verify-ed25519",
        SignatureAlgorithm::Ed25519,
        ed.public_key().blob(),
        &signature,
    );
    for alg in [SignatureAlgorithm::RsaSha256, SignatureAlgorithm::RsaSha512] {
        let sig = rsa.sign(alg, SIGNED_DATA).unwrap_or_default();
        verify(
            &format!("verify-{}", alg.name()),
            alg,
            rsa.public_key().blob(),
            &sig,
        );
    }
    let ecdsa_sig = |alg: &str, len: usize| {
        encoded(|b| {
            b.put_str(alg);
            b.put_string(&encoded(|inner| {
                inner.put_mpint(&vec![0x42; len]);
                inner.put_mpint(&vec![0x24; len]);
            }));
        })
    };
    verify(
        "verify-ecdsa-p256",
        SignatureAlgorithm::EcdsaP256,
        &blobs[2].1,
        &ecdsa_sig("ecdsa-sha2-nistp256", 32),
    );
    verify(
        "verify-ecdsa-p384",
        SignatureAlgorithm::EcdsaP384,
        &blobs[3].1,
        &ecdsa_sig("ecdsa-sha2-nistp384", 48),
    );

    let version = selector("VersionReader");
    for (file, chunking, text) in [
        (
            "version-openssh",
            0u8,
            &b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n"[..],
        ),
        (
            "version-after-banner",
            2,
            b"Welcome\r\nauthorized use only\nSSH-2.0-dropbear_2022.83\r\n",
        ),
        ("version-1.99", 1, b"SSH-1.99-Cisco-1.25\r\n"),
        ("version-protocol-1", 0, b"SSH-1.5-old\r\n"),
        ("version-no-newline", 3, b"SSH-2.0-partial"),
    ] {
        let mut seed = vec![version, chunking];
        seed.extend_from_slice(text);
        out.push((file.into(), seed));
    }
    let mut seed = vec![selector("text::sanitize"), 41];
    seed.extend_from_slice("tab\there\r\nesc\x1b]0;title\x07 \u{202e}bidi é".as_bytes());
    out.push(("sanitize".into(), seed));
    out
}

// ---- transport_client -----------------------------------------------------------------------

/// Records what the test server sends to the harness's own client over a whole session:
/// handshake, a few payloads, a rekey, more payloads. Fed back to the same seeded client it
/// replays exactly, encrypted packets included.
fn recorded_session(config: ServerConfig, rekey: bool) -> Vec<u8> {
    let mut client = crate::transport_client::client(Instant::now());
    let mut server = ServerTransport::new(config, Box::new(SeededRandom::new(1)));
    let mut recorded = Vec::new();
    let exchange = |client: &mut ssh_transport::ClientTransport,
                    server: &mut ServerTransport,
                    recorded: &mut Vec<u8>| {
        for _ in 0..6 {
            let out = server.output().to_vec();
            server.consume_output(out.len());
            recorded.extend_from_slice(&out);
            client.handle_input(&out);
            loop {
                match client.poll_event() {
                    Ok(Some(Event::VerifyHostKey(_))) => client.accept_host_key(),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let back = client.output().to_vec();
            client.consume_output(back.len());
            server.handle_input(&back);
            while let Ok(Some(_)) = server.poll_event() {}
        }
    };
    exchange(&mut client, &mut server, &mut recorded);
    let payloads: Vec<Vec<u8>> = vec![
        encoded(|b| {
            ServiceAccept {
                service: SERVICE_USERAUTH,
            }
            .encode(b)
        }),
        encoded(|b| UserauthSuccess.encode(b)),
        encoded(|b| {
            ChannelData {
                recipient: 0,
                data: b"select 1",
            }
            .encode(b)
        }),
        vec![MessageType::IGNORE.0, 0, 0, 0, 0],
    ];
    for p in &payloads {
        server.send_with(&mut |b| b.extend_from_slice(p));
    }
    exchange(&mut client, &mut server, &mut recorded);
    if rekey {
        server.rekey();
        exchange(&mut client, &mut server, &mut recorded);
        for p in &payloads {
            server.send_with(&mut |b| b.extend_from_slice(p));
        }
        exchange(&mut client, &mut server, &mut recorded);
    }
    let line = format!("{SERVER_VERSION}\r\n");
    recorded
        .strip_prefix(line.as_bytes())
        .map(<[u8]>::to_vec)
        .unwrap_or(recorded)
}

/// A host certificate for the test server's own host key, so that a recorded session takes
/// the client through a certificate host key algorithm.
fn test_server_host_certificate(config: &ServerConfig) -> Vec<u8> {
    let server = ServerTransport::new(config.clone(), Box::new(SeededRandom::new(1)));
    ssh_transport::server::CertificateBuilder::host(
        server.host_public_key().blob(),
        &["bastion.example.com"],
    )
    .sign_ed25519(fixtures::CA_SEED)
}

fn client() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let base = ServerConfig {
        version: SERVER_VERSION.into(),
        ..ServerConfig::default()
    };
    let sessions = [
        ("session", base.clone(), true),
        (
            "session-chacha",
            ServerConfig {
                ciphers: vec![cipher::CHACHA20_POLY1305],
                ..base.clone()
            },
            true,
        ),
        (
            "session-aes256-not-strict",
            ServerConfig {
                ciphers: vec![cipher::AES256_GCM],
                strict_kex: false,
                server_sig_algs: None,
                ..base.clone()
            },
            false,
        ),
        (
            "session-ignore-first",
            ServerConfig {
                strict_kex: false,
                ignore_before_kexinit: true,
                ..base.clone()
            },
            false,
        ),
        (
            "session-host-certificate",
            ServerConfig {
                host_certificate: Some(test_server_host_certificate(&base)),
                ..base.clone()
            },
            true,
        ),
    ];
    for (name, config, rekey) in sessions {
        let stream = recorded_session(config, rekey);
        for (control, how) in [(0u8, "whole"), (3, "chunks"), (0x12, "small-chunks")] {
            let mut seed = vec![control];
            seed.extend_from_slice(&stream);
            out.push((format!("{name}-{how}"), seed));
        }
    }
    let stream = recorded_session(base, false);
    let mut seed = vec![0x40];
    seed.extend_from_slice(&stream);
    out.push(("session-host-key-refused".into(), seed));

    // Pair mode: operations after a real handshake.
    let data = encoded(|b| {
        ChannelData {
            recipient: 0,
            data: b"0123456789",
        }
        .encode(b)
    });
    let mut ops = vec![4, data.len() as u8];
    ops.extend_from_slice(&data);
    ops.extend_from_slice(&[0, 5, 3, 94, 1, 2, 0]);
    let mut rekeys = ops.clone();
    rekeys.extend_from_slice(&[6, 0, 4, 2, 80, 1, 0, 7, 0, 5, 2, 90, 9, 0]);
    let mut flipped = ops.clone();
    flipped.extend_from_slice(&[4, 3, 94, 1, 2, 1, 0, 20, 0x40]);
    let mut inserted = ops.clone();
    inserted.extend_from_slice(&[4, 3, 94, 1, 2, 2, 0, 3, 3, 0, 0, 0]);
    let mut deleted = ops.clone();
    // The deletion leaves the client waiting; the next packet shows the damage.
    deleted.extend_from_slice(&[4, 3, 94, 1, 2, 3, 0, 9, 1, 4, 3, 94, 5, 6, 0]);
    let mut split = ops.clone();
    split.extend_from_slice(&[4, 3, 94, 1, 2, 8, 0, 7, 5, 1, 60, 0]);
    for (name, control, ops) in [
        ("pair", 0x80u8, ops),
        ("pair-rekeys", 0x80 | 0x10, rekeys.clone()),
        ("pair-rekeys-chacha", 0x80 | 3 | 4, rekeys.clone()),
        ("pair-rekeys-ctr-etm-zlib", 0x80 | 0x30, rekeys.clone()),
        ("pair-rekeys-ctr-sha1-zlib", 0x80 | 0x30 | 3, rekeys),
        ("pair-flipped", 0x81, flipped),
        ("pair-inserted", 0x82 | 8, inserted),
        ("pair-deleted", 0x80 | 0x20, deleted),
        ("pair-split", 0x80 | 0x40, split),
    ] {
        let mut seed = vec![control];
        seed.extend_from_slice(&ops);
        out.push((name.into(), seed));
    }
    out
}

// ---- auth_messages ----------------------------------------------------------------------------

fn auth() -> Vec<(String, Vec<u8>)> {
    let failure = |methods: &'static str, partial: bool| {
        encoded(|b| {
            ServerMessage::Failure(UserauthFailure {
                methods: ssh_transport::wire::NameList::parse(methods.as_bytes())
                    .unwrap_or_else(|_| unreachable!("a valid name-list")),
                partial_success: partial,
            })
            .encode(b)
        })
    };
    let success = encoded(|b| UserauthSuccess.encode(b));
    let banner = encoded(|b| {
        UserauthBanner {
            message: b"Authorized use only.\r\n\x1b[2J",
            language: b"",
        }
        .encode(b)
    });
    let pk_ok = encoded(|b| {
        UserauthPkOk {
            algorithm: "ssh-ed25519",
            key_blob: fixtures::ed25519(7).public_key().blob(),
        }
        .encode(b)
    });
    let info_request = |prompts: &[(&str, bool)], count: Option<u32>| {
        encoded(|b| {
            b.put_u8(60);
            b.put_string(b"");
            b.put_string(b"");
            b.put_string(b"");
            b.put_u32(count.unwrap_or(u32::try_from(prompts.len()).unwrap_or(0)));
            for (p, echo) in prompts {
                b.put_str(p);
                b.put_bool(*echo);
            }
        })
    };
    let agent_pk_ok = encoded(|b| {
        UserauthPkOk {
            algorithm: "ssh-ed25519",
            key_blob: fixtures::ed25519(9).public_key().blob(),
        }
        .encode(b)
    });
    // Flags: 1 RSA, 2 second Ed25519, 4/8 server-sig-algs, 16 an agent key, 32 a
    // certificate, 64 the harness gives a password and answers.
    let cases: Vec<(&str, u8, Vec<Vec<u8>>)> = vec![
        ("success", 0, vec![success.clone()]),
        ("banner-success", 4, vec![banner.clone(), success.clone()]),
        (
            "refused",
            1 | 2 | 8,
            vec![
                failure("publickey,password", false),
                failure("publickey", false),
                failure("publickey", false),
                failure("publickey", false),
                failure("publickey", false),
            ],
        ),
        (
            "partial",
            2 | 4,
            vec![failure("publickey", true), success.clone()],
        ),
        (
            "no-publickey",
            12 | 64,
            vec![
                failure("password,keyboard-interactive", false),
                info_request(&[("Password: ", false)], None),
                success.clone(),
            ],
        ),
        ("pk-ok", 0, vec![pk_ok]),
        ("success-then-more", 0, vec![success.clone(), banner]),
        (
            "agent",
            16,
            vec![failure("publickey", false), agent_pk_ok, success.clone()],
        ),
        ("certificate", 32, vec![success.clone()]),
        (
            "partial-password",
            64,
            vec![failure("password", true), success.clone()],
        ),
        (
            "password-declined",
            0,
            vec![failure("password", false), failure("password", false)],
        ),
        (
            "kbd-huge-count",
            64,
            vec![
                failure("keyboard-interactive", false),
                info_request(&[("Code: ", true)], Some(u32::MAX)),
            ],
        ),
    ];
    cases
        .into_iter()
        .map(|(name, flags, payloads)| {
            let mut seed = vec![flags];
            for p in &payloads {
                put_payload(&mut seed, p);
            }
            (format!("auth-{name}"), seed)
        })
        .collect()
}

// ---- auth_certificate -------------------------------------------------------------------------

fn certificates() -> Vec<(String, Vec<u8>)> {
    let files = [
        (
            "ed25519",
            include_str!("../../auth/testdata/certs/ed25519-cert.pub"),
        ),
        (
            "rsa",
            include_str!("../../auth/testdata/certs/rsa2048-cert.pub"),
        ),
        (
            "ecdsa",
            include_str!("../../auth/testdata/certs/ecdsa-p256-cert.pub"),
        ),
        (
            "noforward",
            include_str!("../../auth/testdata/certs/ed25519-noforward-cert.pub"),
        ),
    ];
    let mut out = Vec::new();
    for (name, line) in files {
        let cert = ssh_auth::Certificate::from_openssh_line(line)
            .unwrap_or_else(|e| unreachable!("a fixture certificate parses: {e}"));
        let mut seed = vec![0];
        seed.extend_from_slice(cert.blob());
        out.push((format!("cert-blob-{name}"), seed));
        let mut seed = vec![1];
        seed.extend_from_slice(line.as_bytes());
        out.push((format!("cert-line-{name}"), seed));
    }
    out
}

// ---- auth_agent -------------------------------------------------------------------------------

fn agent() -> Vec<(String, Vec<u8>)> {
    use ssh_auth::agent::{AgentIdentity, AgentResponse};
    let rsa = fixtures::rsa();
    let ed = fixtures::ed25519(9);
    let cert_line = include_str!("../../auth/testdata/certs/ed25519-cert.pub");
    let cert = ssh_auth::Certificate::from_openssh_line(cert_line)
        .unwrap_or_else(|e| unreachable!("the fixture certificate parses: {e}"));
    let frame = |r: AgentResponse<'_>| encoded(|b| r.encode_frame(b));
    let identities = frame(AgentResponse::Identities(vec![
        AgentIdentity {
            key_blob: rsa.public_key().blob(),
            comment: b"rsa@laptop",
        },
        AgentIdentity {
            key_blob: ed.public_key().blob(),
            comment: b"ed25519@laptop",
        },
        AgentIdentity {
            key_blob: cert.blob(),
            comment: b"certificate",
        },
    ]));
    let signature = ed
        .sign(SignatureAlgorithm::Ed25519, SIGNED_DATA)
        .unwrap_or_else(|e| unreachable!("the fixture signs: {e}"));
    let mut sign_then_failure = frame(AgentResponse::Signature(&signature));
    sign_then_failure.extend_from_slice(&frame(AgentResponse::Failure));
    vec![
        ("agent-identities".into(), identities),
        ("agent-sign-then-failure".into(), sign_then_failure),
        ("agent-huge-frame".into(), vec![0x7f, 0xff, 0xff, 0xff, 12]),
        (
            "agent-huge-count".into(),
            vec![0, 0, 0, 9, 12, 0, 0x0f, 0x42, 0x40, 0, 0, 0, 0],
        ),
    ]
}

// ---- connection_messages ----------------------------------------------------------------------

/// Builds `connection_messages` inputs operation by operation.
#[derive(Default)]
struct ConnOps(Vec<u8>);

impl ConnOps {
    fn server(&mut self, payload: &[u8]) -> &mut Self {
        self.0.push(0);
        put_payload(&mut self.0, payload);
        self
    }
    fn consume(&mut self, id: u8, n: u16) -> &mut Self {
        self.0.extend_from_slice(&[1, id]);
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    fn send(&mut self, id: u8, n: u16) -> &mut Self {
        self.0.extend_from_slice(&[2, id]);
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    fn eof(&mut self, id: u8) -> &mut Self {
        self.0.extend_from_slice(&[3, id]);
        self
    }
    fn close(&mut self, id: u8) -> &mut Self {
        self.0.extend_from_slice(&[4, id]);
        self
    }
    fn keepalive(&mut self) -> &mut Self {
        self.0.push(5);
        self
    }
    fn open(&mut self) -> &mut Self {
        self.0.push(6);
        self
    }
    fn poll(&mut self) -> &mut Self {
        self.0.push(7);
        self
    }
    /// The input: `small` picks the small window, `channels` are opened first.
    fn input(&self, small: bool, channels: u8) -> Vec<u8> {
        let mut seed = vec![u8::from(small) | (channels << 1)];
        seed.extend_from_slice(&self.0);
        seed
    }
}

fn connection() -> Vec<(String, Vec<u8>)> {
    fn msg<'a, M: ConnectionMessage<'a>>(m: M) -> Vec<u8> {
        encoded(|b| m.encode(b))
    }
    let confirm = |recipient: u32, window: u32| {
        msg(ChannelOpenConfirmation {
            recipient,
            sender: 100 + recipient,
            initial_window: window,
            max_packet: 512,
        })
    };
    let mut out = Vec::new();

    // Open, data both ways, window, EOF both ways, CLOSE both ways, then the id again.
    let mut ops = ConnOps::default();
    ops.server(&confirm(0, 2048))
        .server(&confirm(1, 0))
        .server(&msg(ChannelData {
            recipient: 0,
            data: b"row 1\n",
        }))
        .poll()
        .consume(0, 6)
        .send(1, 16)
        .server(&msg(WindowAdjust {
            recipient: 1,
            bytes: 4096,
        }))
        .send(1, 600)
        .poll()
        .server(&msg(ExtendedData {
            recipient: 0,
            data_type: ExtendedDataType(1),
            data: b"stderr",
        }))
        .server(&msg(ChannelEof { recipient: 0 }))
        .eof(0)
        .poll()
        .server(&msg(ChannelClose { recipient: 0 }))
        .poll()
        .open()
        .poll();
    out.push(("conn-lifecycle".to_owned(), ops.input(true, 2)));

    // A refused open, requests from the server, a keepalive, an unassigned number.
    let mut ops = ConnOps::default();
    ops.server(&msg(ChannelOpenFailure {
        recipient: 0,
        reason: OpenFailureReason::CONNECT_FAILED,
        description: b"connect failed: \x1b[1mNo route",
        language: b"",
    }))
    .poll()
    .open()
    .server(&confirm(1, 65536))
    .server(&msg(GlobalRequest {
        name: b"hostkeys-00@openssh.com",
        want_reply: true,
        data: b"",
    }))
    .server(&msg(ChannelRequest {
        recipient: 1,
        request_type: b"exit-status",
        want_reply: true,
        data: &[0, 0, 0, 0],
    }))
    .keepalive()
    .server(&msg(RequestFailure))
    .server(&[120, 1, 2, 3])
    .close(1)
    .poll()
    .server(&msg(ChannelClose { recipient: 1 }))
    .poll();
    out.push(("conn-refusals".to_owned(), ops.input(false, 2)));

    // A window overrun: more data than the small window allows.
    let mut ops = ConnOps::default();
    ops.server(&confirm(0, 1024));
    let chunk = vec![b'x'; 1024];
    for _ in 0..5 {
        ops.server(&msg(ChannelData {
            recipient: 0,
            data: &chunk,
        }));
    }
    ops.consume(0, 4096);
    out.push(("conn-window".to_owned(), ops.input(true, 1)));
    out
}

// ---- known_hosts --------------------------------------------------------------------------

fn known_hosts() -> Vec<(String, Vec<u8>)> {
    let keys = fixtures::host_keys();
    let [a, b, rsa] = keys;
    let (host, port) = HOSTS[0];
    let (ip, ip_port) = HOSTS[1];
    let plain = format!(
        "# comment line\n\
         {host},192.0.2.1 {}\n\
         [{ip}]:{ip_port} {} a comment\n\
         *.example.com,!evil.example.com {}\n\
         \n\
         @revoked * {}\n\
         @cert-authority *.internal {}\n\
         db?.internal ssh-dss AAAAB3NzaC1kc3MAAACBAP\n\
         broken line without a key\n\
         ::1 sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIA==\n",
        a.to_openssh_line(),
        rsa.to_openssh_line(),
        b.to_openssh_line(),
        b.to_openssh_line(),
        a.to_openssh_line(),
    );
    let hashed = [
        forwarder::known_hosts::entry_line(host, port, a, true, &[1; 20]),
        forwarder::known_hosts::entry_line(ip, ip_port, rsa, true, &[2; 20]),
        forwarder::known_hosts::entry_line("Db.Internal", 2200, b, false, &[3; 20]),
    ]
    .join("\n");
    let crlf = plain.replace('\n', "\r\n");
    let changed = format!(
        "{host} {}\n{host} {}\n",
        b.to_openssh_line(),
        rsa.to_openssh_line()
    );
    // Host certificates: the fixture's authority for some hosts (one by a pattern), another
    // for one, the authority revoked for one, the certificate's own key revoked for another.
    let ca = fixtures::certificate_authority();
    let certificates = format!(
        "@cert-authority bastion.example.com,*.internal {}\n\
         @cert-authority [10.0.0.5]:2222 {}\n\
         @revoked [db.internal]:2200 {}\n\
         @revoked ::1 {}\n\
         @cert-authority ::1 {}\n",
        ca.to_openssh_line(),
        a.to_openssh_line(),
        ca.to_openssh_line(),
        b.to_openssh_line(),
        ca.to_openssh_line(),
    );
    vec![
        ("plain".into(), plain.into_bytes()),
        ("certificates".into(), certificates.into_bytes()),
        ("hashed".into(), hashed.into_bytes()),
        ("crlf".into(), crlf.into_bytes()),
        ("changed".into(), changed.into_bytes()),
    ]
}

// ---- cli_args -----------------------------------------------------------------------------

fn cli() -> Vec<(String, Vec<u8>)> {
    let lines: &[(&str, &[&str])] = &[
        (
            "basic",
            &[
                "-N",
                "-L",
                "15432:db.internal:5432",
                "analytics@bastion.example.com",
            ],
        ),
        (
            "many",
            &[
                "-N",
                "-p",
                "2222",
                "-i",
                "~/.ssh/id_rsa",
                "-i",
                "%d/.ssh/id_ed25519",
                "-L",
                "[::1]:8080:[2001:db8::5]:80",
                "-L",
                "*:3306:mysql:3306",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "UserKnownHostsFile ~/.ssh/kh /tmp/kh2",
                "-o",
                "ServerAliveInterval=15",
                "-vvv",
                "-4",
                "-g",
                "-C",
                "bastion",
            ],
        ),
        (
            "ssh-url",
            &[
                "-oHostName=%h.example.com",
                "-oLocalForward=15439 redshift:5439",
                "-c",
                "aes128-gcm@openssh.com",
                "-oRekeyLimit=1G 1h",
                "ssh://deploy@10.1.2.3:2200",
            ],
        ),
        (
            "clustered",
            &["-NgqL5432:db:5432", "-l", "u", "-p22", "host"],
        ),
        (
            "unix-sockets",
            &[
                "-L",
                "15432:/var/run/postgresql/.s.PGSQL.5432",
                "-L",
                "/tmp/pg.sock:db:5432",
                "-L",
                "[/tmp/a:b.sock]:[/run/x:y.sock]",
                "-oStreamLocalBindMask=0117",
                "-oStreamLocalBindUnlink=yes",
                "-R",
                "8022:/run/app.sock",
                "-R",
                "/run/bastion/fwd.sock:127.0.0.1:5432",
                "-R",
                "[/run/a:b.sock]:/run/here.sock",
                "bastion",
            ],
        ),
        (
            "dynamic",
            &[
                "-D",
                "1080",
                "-D",
                "[::1]:1081",
                "-D",
                "*:1082",
                "-D",
                "/tmp/socks.sock",
                "-oDynamicForward=localhost:1083",
                "bastion",
            ],
        ),
        (
            "bind-address",
            &[
                "-b",
                "203.0.113.7",
                "-oBindAddress=egress.example",
                "-B",
                "eth1",
                "-J",
                "jump",
                "-L",
                "1:h:2",
                "bastion",
            ],
        ),
        (
            "known-hosts-command",
            &[
                "-oKnownHostsCommand=/usr/local/bin/hostkeys \"%H %I\" %t:%f %K %d/%h:%p 5%%",
                "-fNG",
                "-E",
                "/tmp/forwarder.log",
                "-oForkAfterAuthentication=no",
                "-J",
                "jump",
                "bastion",
            ],
        ),
        (
            "control-persist-stdio",
            &[
                "-oControlMaster=auto",
                "-S",
                "~/.ssh/cm-%C",
                "-oControlPersist=1h30m",
                "-W",
                "%h:%p",
                "-oControlPersist=yes",
                "bastion",
            ],
        ),
        (
            "remote-dynamic",
            &[
                "-R",
                "1080",
                "-R",
                "[::1]:0",
                "-R",
                "/tmp/rsocks.sock",
                "-oRemoteForward=localhost:1081",
                "-oPermitRemoteOpen=db.internal:5432 [fd00::5]:* *:3306",
                "bastion",
            ],
        ),
        ("help", &["--help"]),
        ("version", &["-V"]),
        ("missing-host", &["-L", "1:h:2"]),
        ("bad-option", &["-o", "NoSuchOption=yes", "-X", "host"]),
        (
            "algorithm-lists",
            &[
                "-o",
                "Ciphers=^aes256-ctr",
                "-m",
                "+hmac-sha1*",
                "-o",
                "KexAlgorithms=-sntrup*,ecdh-sha2-nistp???",
                "-o",
                "HostKeyAlgorithms=+ssh-rsa",
                "-o",
                "PubkeyAcceptedAlgorithms=rsa-sha2-512",
                "-o",
                "PreferredAuthentications=password,publickey",
                "-C",
                "h",
            ],
        ),
        (
            "keygen",
            &[
                "keygen",
                "-t",
                "ed25519",
                "--permit-open",
                "db.internal:5432",
                "-f",
                "/tmp/k",
            ],
        ),
    ];
    lines
        .iter()
        .map(|(name, args)| (format!("cli-{name}"), args.join("\0").into_bytes()))
        .collect()
}

// ---- fleet_config -------------------------------------------------------------------------

fn fleet_files() -> Vec<(String, Vec<u8>)> {
    let files: &[(&str, &str)] = &[
        (
            "documented",
            r#"[admin]
listen = "127.0.0.1:9180"
drain_timeout = "30s"
probe_interval = "60s"
handshakes_per_bastion = 4

[admin.bastion_handshakes]
"bastion.acme.example" = 2
"[2001:db8::1]:2222" = 8

[defaults]
user = "sigmacomputing"
identity_file = "/etc/forwarder/id_rsa"
known_hosts = "/etc/forwarder/known_hosts"

[[tunnel]]
name = "acme-pg"
bastion = "bastion.acme.example"
local = "127.0.0.1:15432"
remote = "db.internal:5432"
probe = "postgres"
share_session = true
options = { Ciphers = "aes256-gcm@openssh.com", ServerAliveInterval = "10" }
"#,
        ),
        (
            "two",
            r#"[defaults]
identity_file = ["~/.ssh/id_ed25519", "/k/id_rsa"]
known_hosts = ["/a", "/b"]
options = { ServerAliveCountMax = 2, Compression = true, RekeyLimit = "1G 1h" }

[[tunnel]]
name = "mysql"
bastion = "ops@[fd00::1]:2222"
local = "[::1]:13306"
remote = "[fd00::5]:3306"
probe = "mysql"
probe_user = "probe"
probe_password_file = "/p"
share_session = false

[[tunnel]]
name = "redshift"
bastion = "b.example:22"
local = "localhost:15439"
remote = "cluster.redshift.amazonaws.com:5439"
probe = "none"
"#,
        ),
        (
            "remote",
            r#"[defaults]
bastion = "ops@b.example:2222"
known_hosts = "/k"

[[tunnel]]
name = "pg"
local = "127.0.0.1:15432"
remote = "db:5432"

[[tunnel]]
name = "callback"
kind = "remote"
bastion_listen = "0"
target = "127.0.0.1:8080"

[[tunnel]]
name = "webhook"
kind = "remote"
bastion_listen = "[::1]:8022"
target = "[fd00::5]:443"
jump = ["j@jump:22"]

[[tunnel]]
name = "socket-callback"
kind = "remote"
bastion_listen = "/run/fwd/app.sock"
target = "/run/here.sock"
"#,
        ),
        (
            "duplicate",
            "[[tunnel]]\nname = \"a\"\nbastion = \"b\"\nlocal = \"127.0.0.1:1\"\nremote = \"r:1\"\n[[tunnel]]\nname = \"a\"\nbastion = \"b\"\nlocal = \"127.0.0.1:2\"\nremote = \"r:1\"\n",
        ),
        (
            "unix-sockets",
            r#"[defaults]
bastion = "ops@b.example"
known_hosts = "/k"

[[tunnel]]
name = "socket-in"
local = "/run/forwarder/pg.sock"
remote = "db:5432"
options = { StreamLocalBindMask = "0117", StreamLocalBindUnlink = "yes" }

[[tunnel]]
name = "socket-out"
local = "127.0.0.1:15432"
remote = "/var/run/postgresql/.s.PGSQL.5432"
probe = "postgres"

[[tunnel]]
name = "both"
local = "/run/forwarder/c:x.sock"
remote = "/run/mysqld/mysqld.sock"
"#,
        ),
        (
            "socket-tokens",
            r#"[defaults]
bastion = "ops@b.example"
known_hosts = "/k"

[[tunnel]]
name = "tokens"
local = "/run/fwd/%u-%%.sock"
remote = "/run/mysqld/mysql%d.sock"

[[tunnel]]
name = "back"
kind = "remote"
bastion_listen = "/run/app/%r.sock"
target = "/srv%d/app.sock"
"#,
        ),
        (
            "socks",
            r#"[defaults]
bastion = "ops@b.example"
known_hosts = "/k"
probe = "postgres"

[[tunnel]]
name = "pg"
local = "127.0.0.1:15432"
remote = "db:5432"

[[tunnel]]
name = "proxy"
kind = "socks"
local = "127.0.0.1:11080"

[[tunnel]]
name = "proxy6"
kind = "socks"
local = "[::1]:11081"

[[tunnel]]
name = "proxy-socket"
kind = "socks"
local = "/run/forwarder/socks.sock"
options = { StreamLocalBindMask = "0177" }
"#,
        ),
    ];
    files
        .iter()
        .map(|(n, t)| ((*n).to_owned(), t.as_bytes().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_seed_runs_through_its_target_without_a_panic() {
        let seeds = all();
        for (target, run) in crate::TARGETS {
            let mine: Vec<&Seed> = seeds.iter().filter(|s| s.target == *target).collect();
            if *target != "auth_keyfile" {
                assert!(mine.len() >= 3, "{target} has only {} seeds", mine.len());
            }
            for s in mine {
                run(&s.data);
            }
        }
    }

    #[test]
    fn checked_in_seeds_match_the_generator() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        for s in all() {
            let path = dir.join(s.target).join(&s.name);
            let on_disk = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run the write_seeds example", path.display()));
            assert!(
                on_disk == s.data,
                "{} is stale; run the write_seeds example",
                path.display()
            );
        }
    }

    #[test]
    fn recorded_sessions_take_the_client_to_the_payloads() {
        let plain = ServerConfig {
            version: SERVER_VERSION.into(),
            ..ServerConfig::default()
        };
        let certified = ServerConfig {
            host_certificate: Some(test_server_host_certificate(&plain)),
            ..plain.clone()
        };
        for (config, certificate) in [(plain, false), (certified, true)] {
            let stream = recorded_session(config, true);
            let mut client = crate::transport_client::client(Instant::now());
            client.handle_input(format!("{SERVER_VERSION}\r\n").as_bytes());
            client.handle_input(&stream);
            let mut payloads = Vec::new();
            loop {
                match client.poll_event() {
                    Ok(Some(Event::VerifyHostKey(_))) => client.accept_host_key(),
                    Ok(Some(Event::Payload { data, .. })) => payloads.push(data.to_vec()),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => panic!("the replayed session failed: {e}"),
                }
            }
            assert!(client.is_established());
            assert_eq!(client.kex_count(), 2, "the rekey was replayed too");
            assert_eq!(
                payloads.len(),
                6,
                "three payloads before and after the rekey"
            );
            assert_eq!(client.host_certificate().is_some(), certificate);
            assert_eq!(
                client.negotiated().map(|n| n.host_key.certificate),
                Some(certificate)
            );
        }
    }
}
