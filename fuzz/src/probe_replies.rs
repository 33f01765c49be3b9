//! What a database probe reads from the server: `forwarder::probe`'s parsers on arbitrary
//! bytes.
//!
//! Input: the server's byte stream. All of it goes to `classify_first_bytes` and
//! `classify_ssl_answer` (the postgres probe's first read); then it is split into MySQL packets
//! with `mysql_frame` as the mysql probe reads them, the first payload parsed as a greeting
//! and the later ones as answers to a login. Beside no panic: a frame never reaches past the
//! input or past `MAX_PACKET`; every text made from the bytes (what goes into a probe's error
//! message and so into logs and /tunnels) is free of control characters and of bounded
//! length; a greeting's seed comes from the packet; the scramble of a 20-byte seed is 20
//! bytes, and the same twice.

use forwarder::probe::{
    MAX_PACKET, MysqlAuthReply, MysqlFrame, SslAnswer, classify_first_bytes, classify_ssl_answer,
    mysql_frame, mysql_native_scramble, parse_mysql_auth_reply, parse_mysql_error,
    parse_mysql_greeting,
};

/// The longest text a parser may make from hostile bytes (the 300 characters of an error
/// message, each control character shown as an escape of up to 10 characters).
const MAX_TEXT: usize = 4096;

/// At most this many packets per input.
const MAX_PACKETS: usize = 8;

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    check_text(&classify_first_bytes(data));
    match classify_ssl_answer(data) {
        SslAnswer::Tls => assert_eq!(data, b"S"),
        SslAnswer::Plain => assert_eq!(data, b"N"),
        SslAnswer::Other(what) => check_text(&what),
    }

    let mut rest = data;
    for index in 0..MAX_PACKETS {
        let payload = match mysql_frame(rest) {
            MysqlFrame::Complete { len, .. } => {
                assert!(len > 0 && len <= MAX_PACKET, "a frame of {len} bytes");
                assert!(4 + len <= rest.len(), "a frame past the input");
                &rest[4..4 + len]
            }
            MysqlFrame::TooLong(len) => {
                assert!(len == 0 || len > MAX_PACKET, "{len} bytes refused");
                return;
            }
            MysqlFrame::Incomplete => return,
        };
        if index == 0 {
            greeting(payload);
        } else {
            auth_reply(payload);
        }
        if let Some(error) = parse_mysql_error(payload) {
            check_text(&error.to_string());
        }
        rest = &rest[4 + payload.len()..];
    }
}

fn greeting(payload: &[u8]) {
    match parse_mysql_greeting(payload) {
        Ok(greeting) => {
            check_text(&greeting.server_version);
            check_text(&greeting.describe());
            if let Some(plugin) = &greeting.auth_plugin {
                check_text(plugin);
            }
            assert!(
                greeting.seed.len() <= payload.len(),
                "a seed of {} bytes from a {}-byte packet",
                greeting.seed.len(),
                payload.len()
            );
            if let Some(seed) = greeting.seed.get(..20) {
                let scramble = mysql_native_scramble(b"fuzz password", seed);
                assert_eq!(scramble.len(), 20);
                assert_eq!(scramble, mysql_native_scramble(b"fuzz password", seed));
            }
        }
        Err(why) => check_text(&why),
    }
}

fn auth_reply(payload: &[u8]) {
    match parse_mysql_auth_reply(payload) {
        MysqlAuthReply::Ok => assert_eq!(payload.first(), Some(&0)),
        MysqlAuthReply::Error(error) => check_text(&error.to_string()),
        MysqlAuthReply::Switch { plugin, seed } => {
            check_text(&plugin);
            assert!(seed.len() < payload.len());
        }
        MysqlAuthReply::Other(what) => check_text(&what),
    }
}

/// Text that may reach a log line: no control characters, bounded.
fn check_text(text: &str) {
    assert!(
        !text.chars().any(char::is_control),
        "control characters in {text:?}"
    );
    assert!(text.len() <= MAX_TEXT, "{} bytes of text", text.len());
}

/// Seeds: answers of real servers and of things that are not the expected database.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let packet = |seq: u8, payload: &[u8]| {
        let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        out.push(seq);
        out.extend_from_slice(payload);
        out
    };
    // A MariaDB 10.11 greeting as the real server sends it.
    let mut greeting = b"\x0a5.5.5-10.11.19-MariaDB-0+deb12u1\0".to_vec();
    greeting.extend_from_slice(&15u32.to_le_bytes());
    greeting.extend_from_slice(b"BDo#[$?R\0");
    greeting.extend_from_slice(&[0xfe, 0xf7, 0x08, 0x02, 0x00, 0xff, 0x81, 0x15]);
    greeting.extend_from_slice(&[0; 6]);
    greeting.extend_from_slice(&[0x1d, 0, 0, 0]);
    greeting.extend_from_slice(b"^_EwMWM]j!_=\0mysql_native_password\0");
    let greeting = packet(0, &greeting);

    let mut login_ok = greeting.clone();
    login_ok.extend_from_slice(&packet(2, b"\x00\x00\x00\x02\x00\x00\x00"));
    let mut switched = greeting.clone();
    switched.extend_from_slice(&packet(
        2,
        b"\xfemysql_native_password\0ABCDEFGHIJKLMNOPQRST\0",
    ));
    switched.extend_from_slice(&packet(4, b"\x00\x00\x00\x02\x00\x00\x00"));
    let mut denied = greeting.clone();
    denied.extend_from_slice(&packet(
        2,
        b"\xff\x15\x04#28000Access denied for user 'probe'@'10.0.0.5' (using password: YES)",
    ));
    let blocked = packet(
        0,
        b"\xff\x69\x04Host '10.0.0.5' is blocked because of many connection errors",
    );
    let mut pg_error = b"E\0\0\0\0SFATAL\0C0A000\0Munsupported frontend protocol\0\0".to_vec();
    let len = (pg_error.len() - 1) as u32;
    pg_error[1..5].copy_from_slice(&len.to_be_bytes());

    [
        ("mariadb-greeting", greeting),
        ("mariadb-login-ok", login_ok),
        ("mariadb-auth-switch", switched),
        ("mariadb-access-denied", denied),
        ("mariadb-host-blocked", blocked),
        ("postgres-tls", b"S".to_vec()),
        ("postgres-plain", b"N".to_vec()),
        ("postgres-error", pg_error),
        (
            "ssh-banner",
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n".to_vec(),
        ),
        (
            "http",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        ("tls-alert", b"\x15\x03\x03\x00\x02\x02\x46".to_vec()),
    ]
    .into_iter()
    .map(|(name, data)| (format!("probe-{name}"), data))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_seed_is_the_one_a_real_server_sent() {
        let (_, data) = seeds().into_iter().next().unwrap();
        let greeting = parse_mysql_greeting(&data[4..]).unwrap();
        assert_eq!(greeting.seed, b"BDo#[$?R^_EwMWM]j!_=");
        assert_eq!(
            greeting.auth_plugin.as_deref(),
            Some("mysql_native_password")
        );
    }

    #[test]
    fn hostile_inputs_pass() {
        run(b"\xff\xff\xff\x00");
        run(b"\x01\x00\x00\x00\x0a");
        run(&[0x0a, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        run(b"SSH-2.0-\x1b[2J\x07\r\n");
        run(&[b'E', 0, 0, 0, 9, b'M', 0x1b, 0x1b, 0, 0]);
    }
}
