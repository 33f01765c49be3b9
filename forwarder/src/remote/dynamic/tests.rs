use super::*;

use crate::socks::{Version, encode_request};

fn parse(words: &str) -> Result<PermitRemoteOpen, String> {
    PermitRemoteOpen::parse(&words.split_whitespace().collect::<Vec<_>>())
}

#[test]
fn permit_remote_open_takes_any_none_or_host_port_entries() {
    assert_eq!(parse("any"), Ok(PermitRemoteOpen::Any));
    assert_eq!(parse("ANY"), Ok(PermitRemoteOpen::Any));
    assert_eq!(parse("none"), Ok(PermitRemoteOpen::None));
    assert_eq!(PermitRemoteOpen::default(), PermitRemoteOpen::Any);
    let list = parse("db.internal:5432 [fd00::5]:* *:3306 10.0.0.7:22").expect("a list");
    assert_eq!(
        list.to_string(),
        "db.internal:5432 [fd00::5]:* *:3306 10.0.0.7:22"
    );
    assert_eq!(parse(&list.to_string()), Ok(list));
    for (bad, why) in [
        ("", "needs any"),
        ("any db:1", "only word"),
        ("db:1 none", "only word"),
        ("db", "not host:port"),
        (":5432", "no host"),
        ("db:0", "not a port"),
        ("db:65536", "not a port"),
        ("db:+1", "not a port"),
        ("db:", "not a port"),
        ("[::1", "without ']'"),
        ("[::1]5432", "no ':port'"),
        ("[]:1", "no host"),
        ("a]b:1", "not a host"),
    ] {
        let e = parse(bad).expect_err(bad);
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}

#[test]
fn permit_remote_open_matches_names_as_text_and_addresses_as_addresses() {
    assert!(PermitRemoteOpen::Any.allows("anything", 1));
    assert!(!PermitRemoteOpen::None.allows("127.0.0.1", 5432));
    let p = parse("db.internal:5432 [::1]:* *:3306").expect("a list");
    assert!(p.allows("db.internal", 5432));
    assert!(p.allows("DB.Internal", 5432), "names compare in any case");
    assert!(!p.allows("db.internal", 5433));
    assert!(!p.allows("db.internal.evil", 5432));
    // Never looked up: the address of the name is not the name.
    assert!(!p.allows("10.0.0.5", 5432));
    assert!(p.allows("::1", 22) && p.allows("0:0::1", 65535));
    assert!(!p.allows("::2", 22));
    assert!(p.allows("anyhost", 3306) && p.allows("10.9.9.9", 3306));
    assert!(!p.allows("anyhost", 3307));
}

#[test]
fn a_failed_connect_is_told_to_the_client_in_socks_terms() {
    use std::io::ErrorKind as K;
    let e = |k: K| io::Error::from(k);
    assert_eq!(
        connect_failure(&e(K::ConnectionRefused)),
        Failure::ConnectionRefused
    );
    assert_eq!(
        connect_failure(&e(K::NetworkUnreachable)),
        Failure::NetworkUnreachable
    );
    assert_eq!(
        connect_failure(&e(K::HostUnreachable)),
        Failure::HostUnreachable
    );
    assert_eq!(
        connect_failure(&io::Error::other(format!(
            "{}Name or service not known",
            super::super::LOOKUP_FAILED
        ))),
        Failure::HostUnreachable
    );
    assert_eq!(connect_failure(&e(K::PermissionDenied)), Failure::General);
}

/// Runs the handshake on one end of an in-memory pipe after `client` was written to the
/// other; returns its result and what it wrote back.
async fn handshake_of(client: &[u8], close: bool) -> (Result<(Request, Vec<u8>), Ended>, Vec<u8>) {
    let (mut ours, mut theirs) = tokio::io::duplex(64 << 10);
    theirs.write_all(client).await.expect("write");
    if close {
        theirs.shutdown().await.expect("shutdown");
    }
    let result = tokio::time::timeout(Duration::from_secs(10), handshake(&mut ours))
        .await
        .expect("the handshake did not end within 10 s");
    drop(ours);
    let mut back = Vec::new();
    theirs.read_to_end(&mut back).await.expect("read back");
    (result, back)
}

#[tokio::test]
async fn a_socks5_client_s_greeting_request_and_first_data_in_one_piece_are_all_kept() {
    let request = Request {
        version: Version::Socks5,
        host: "db.internal".into(),
        port: 5432,
    };
    // The greeting (one method: no authentication), the request, then the client's data.
    let mut sent = vec![5, 1, 0];
    sent.extend_from_slice(&encode_request(&request));
    sent.extend_from_slice(b"first bytes for the database");
    let (result, back) = handshake_of(&sent, false).await;
    let (got, early) = result.expect("a request");
    assert_eq!(got, request);
    assert_eq!(early, b"first bytes for the database");
    // The method choice ("no authentication"), and nothing else until the connect is done.
    assert_eq!(back, [5, 0]);
}

#[tokio::test]
async fn socks4_and_4a_requests_are_read_with_no_reply_before_the_connect() {
    for request in [
        Request {
            version: Version::Socks4,
            host: "127.0.0.1".into(),
            port: 22,
        },
        Request {
            version: Version::Socks4a,
            host: "db.internal".into(),
            port: 3306,
        },
    ] {
        let (result, back) = handshake_of(&encode_request(&request), false).await;
        let (got, early) = result.expect("a request");
        assert_eq!(got, request);
        assert!(early.is_empty() && back.is_empty(), "{early:?} {back:?}");
    }
}

#[tokio::test]
async fn what_is_not_a_request_we_take_ends_the_handshake_with_socks_s_answer() {
    // Not SOCKS at all (an HTTP request): nothing SOCKS could say.
    let (result, back) = handshake_of(b"GET / HTTP/1.1\r\n\r\n", false).await;
    assert!(matches!(result, Err(Ended::Refused(_))), "{result:?}");
    assert!(back.is_empty(), "{back:?}");
    // SOCKS5 BIND (command 2): "command not supported", after the method choice.
    let (result, back) = handshake_of(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 22], false).await;
    assert!(matches!(result, Err(Ended::Refused(_))), "{result:?}");
    assert_eq!(back.get(..2), Some(&[5, 0][..]));
    assert_eq!(back.get(2..4), Some(&[5, 7][..]), "{back:?}");
    // The client leaves halfway through.
    let (result, _) = handshake_of(&[5, 1, 0, 5, 1, 0, 3, 20, b'd'], true).await;
    let e = result.expect_err("a half request");
    assert!(matches!(&e, Ended::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof));
    assert!(
        e.to_string().contains("before its request was complete"),
        "{e}"
    );
}

// A client that sends more than any request can be: refused once the handshake's bound is
// passed, never buffered without end.
#[tokio::test]
async fn an_endless_socks4_user_id_is_refused_at_the_bound() {
    let mut sent = vec![4, 1, 0, 22, 127, 0, 0, 1];
    sent.extend(std::iter::repeat_n(b'u', 8 << 10));
    let (result, back) = handshake_of(&sent, false).await;
    assert!(matches!(result, Err(Ended::Refused(_))), "{result:?}");
    assert_eq!(
        back,
        socks::failure_reply(Version::Socks4, Failure::General)
    );
}
